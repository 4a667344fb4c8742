//! One claimed task: superseded items dropped, the rest written in bulk, a
//! refused batch split in halves until each refused item stands alone.
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;

use super::identity::{Identity, IdentityError, Resolution};
use super::{backoff, conflicts, Mapping, Shared};
use crate::config::{EchoPartner, Job};
use crate::connectors::{ConnectorError, Images, Target, WriteBatch, Written};
use crate::model::{content_hash, key_of, key_text, now_millis, parse_hash, Item, Op, Record};
use crate::state::{ClaimedTask, Settlement, StateError, Store, Synced};

/// How a job's objects become target rows: fields, and keys translated.
pub(super) struct Shape {
    pub mapping: Mapping,
    pub identity: Identity,
    /// Conflict bookkeeping: an updating job whose target reports images.
    pub track: bool,
    /// The ledger holds what ferry wrote for some key of the job: conflicts
    /// are possible, so each task looks its keys up.
    pub prior_writes: bool,
    /// Reverse jobs that read the target table (see [`Job::echo`]).
    pub echo: Vec<EchoPartner>,
    /// Writes need the target's rows as they were (see
    /// [`conflicts::first_writes_need_before`]); an initial sync of
    /// source-owned fields skips looking them up.
    pub need_before: bool,
    /// Upserts go to the target as their queued JSON (see
    /// [`Target::reads_json_rows`]): nothing on the way changes them.
    pub json_rows: bool,
}

/// A live item's target row.
pub(super) enum Row<'a> {
    Record(Record),
    /// The object's queued JSON, written as it is ([`Shape::json_rows`]).
    Json(&'a RawValue),
}

impl Row<'_> {
    /// The row's fields; None for a JSON row, which only jobs without key
    /// translation have (see [`Shape::json_rows`]).
    pub fn record(&self) -> Option<&Record> {
        match self {
            Row::Record(r) => Some(r),
            Row::Json(_) => None,
        }
    }

    pub fn record_mut(&mut self) -> Option<&mut Record> {
        match self {
            Row::Record(r) => Some(r),
            Row::Json(_) => None,
        }
    }
}

enum Fate {
    /// With the fields and images the target reported, when asked.
    Written(Option<(Arc<[String]>, Images)>),
    Rejected(String),
    Retry,
}

pub(super) async fn sync_task(
    job: &Job,
    target: &dyn Target,
    store: &Store,
    shape: &Shape,
    task: ClaimedTask,
    shared: &Shared,
    lease: Duration,
) -> Result<(), StateError> {
    crate::fault::point("before-write");
    // A worker paused past its lease must not write over what the worker
    // that reclaimed the task wrote since.
    let Some(stale_check) = store.renew_task(&task, lease).await? else {
        tracing::warn!(job = %job.name, task = task.id, "lease lost before writing; the task belongs to another worker now");
        return Ok(());
    };
    let keys: Vec<String> = task.items.iter().map(|i| key_text(&i.key)).collect();
    // Only a task that a later detection marked can hold superseded items,
    // and they must be known before writing; the others look keys up only
    // to check for conflicts after the write, and do so while it runs, and
    // only the upserts' keys whose last write detection did not carry.
    let track = shape.track;
    let uncarried: Vec<String> = match !stale_check && shape.prior_writes {
        true => task
            .items
            .iter()
            .zip(&keys)
            .filter(|(item, _)| item.op == Op::Upsert && item.prior.is_none())
            .map(|(_, key)| key.clone())
            .collect(),
        false => Vec::new(),
    };
    let read_beside_write = !uncarried.is_empty();
    let ledger = if stale_check {
        store.ledger_written(&job.name, &keys).await?
    } else {
        Default::default()
    };
    let mut live: Vec<(usize, Op, Row<'_>)> = Vec::with_capacity(task.items.len());
    let (mut superseded, mut unreadable) = (0u64, Vec::new());
    for (i, (item, key)) in task.items.iter().zip(&keys).enumerate() {
        // A newer change of this key was detected after this one: it carries
        // the newer data, so writing this one would be a stale overwrite.
        if ledger
            .get(key)
            .is_some_and(|(e, _)| e.detected_version > item.version)
        {
            superseded += 1;
            continue;
        }
        let row = match (item.op, &item.data) {
            (Op::Upsert, Some(json)) if shape.json_rows => Row::Json(json),
            (Op::Upsert, _) => match item.record() {
                Ok(record) => Row::Record(shape.mapping.upsert(record)),
                Err(e) => {
                    unreadable.push((i, format!("the queued object is not a JSON object: {e}")));
                    continue;
                }
            },
            (Op::Delete, _) => Row::Record(shape.mapping.delete(&item.key)),
        };
        live.push((i, item.op, row));
    }

    // Keys the target generates, and references to other jobs' objects.
    let (mut waiting, mut nothing, mut translation_error) = (Vec::new(), Vec::new(), None);
    if shape.identity.is_active() {
        match shape
            .identity
            .resolve(target, store, &mut live, &keys)
            .await
        {
            Ok(resolutions) => {
                let mut ready = Vec::with_capacity(live.len());
                for (entry, resolution) in live.into_iter().zip(resolutions) {
                    match resolution {
                        Resolution::Ready => ready.push(entry),
                        Resolution::Wait(why) => waiting.push((entry.0, why)),
                        Resolution::Nothing => nothing.push(entry.0),
                    }
                }
                live = ready;
            }
            Err(IdentityError::State(e)) => return Err(e),
            Err(IdentityError::Target(e)) => translation_error = Some(e),
        }
    }

    let started = std::time::Instant::now();
    let options = WriteOptions {
        images: track,
        before: shape.need_before,
        read_back: !shape.echo.is_empty(),
    };
    let write = async {
        match translation_error {
            Some(e) => (
                live.iter().map(|_| Fate::Retry).collect(),
                Some(e),
                false,
                RowsAround::default(),
            ),
            None => write_isolating(job, target, store, &task, &live, options, shared, lease).await,
        }
    };
    let ((fates, error, wrote_any, rows), ledger) = if read_beside_write {
        // Should the read fail after the write succeeded, the task fails as
        // a failed settle does: reclaimed after its lease and written again,
        // which keyed upserts make harmless.
        let (written, ledger) = tokio::join!(write, store.ledger_written(&job.name, &uncarried));
        (written, ledger?)
    } else {
        (write.await, ledger)
    };
    crate::metrics::batch_duration(&job.name, "sync", started.elapsed());
    // The target holds the batch; the queue does not know yet.
    crate::fault::point("after-write");
    let error = error.map(|e| e.map_detail(|d| job.locate_in_message(d)));

    let mut settlement = Settlement::default();
    let exhausted = task.attempts >= i64::from(job.batch.max_attempts);
    let (mut written_by_op, mut rejected, mut retried) = ([0u64; 2], 0u64, 0u64);
    let (mut conflicts, mut unchanged) = (0u64, 0u64);
    // By key, for the run's FAILED count: settled (synced or dead) or not.
    let (mut retry_keys, mut dead_keys): (Vec<&str>, Vec<&str>) = (vec![], vec![]);
    for ((i, op, _), fate) in live.iter().zip(&fates) {
        let item = &task.items[*i];
        match fate {
            Fate::Written(images) => {
                let prior = match ledger.get(&keys[*i]) {
                    Some((_, written)) => written.as_deref(),
                    None => item.prior.as_ref().and_then(Option::as_deref),
                };
                let assessed = images
                    .as_ref()
                    .map(|(fields, images)| conflicts::assess(fields, prior, images))
                    .unwrap_or_default();
                if assessed.conflicts > 0 {
                    tracing::info!(job = %job.name, key = %keys[*i], fields = assessed.conflicts, "conflict: the target and the source both changed the object since ferry last wrote it; the owner rules decided");
                }
                conflicts += assessed.conflicts;
                unchanged += u64::from(assessed.unchanged);
                settlement.synced.push(Synced {
                    key: keys[*i].clone(),
                    hash: parse_hash(&item.hash),
                    version: item.version,
                    written: assessed.written,
                });
                written_by_op[usize::from(*op == Op::Delete)] += 1;
            }
            Fate::Rejected(message) => {
                rejected += 1;
                dead_keys.push(&keys[*i]);
                settlement.dead.push(Item {
                    error: Some(message.clone()),
                    ..item.clone()
                });
            }
            Fate::Retry if exhausted => {
                let message = error
                    .as_ref()
                    .map(|e| format!("{e} (gave up after {} attempts)", task.attempts));
                dead_keys.push(&keys[*i]);
                settlement.dead.push(Item {
                    error: message,
                    ..item.clone()
                });
            }
            Fate::Retry => {
                retried += 1;
                retry_keys.push(&keys[*i]);
                settlement.retry.push(Item {
                    error: error.as_ref().map(|e| e.to_string()),
                    ..item.clone()
                });
            }
        }
    }
    for (i, why) in unreadable {
        rejected += 1;
        dead_keys.push(&keys[i]);
        settlement.dead.push(Item {
            error: Some(why),
            ..task.items[i].clone()
        });
    }
    for i in nothing {
        let item = &task.items[i];
        settlement.synced.push(Synced {
            key: keys[i].clone(),
            hash: parse_hash(&item.hash),
            version: item.version,
            written: None,
        });
    }
    if let Some((i, why)) = waiting.first() {
        tracing::warn!(job = %job.name, task = task.id, waiting = waiting.len(), "{} item(s) wait for a referenced object, first {}: {why}", waiting.len(), keys[*i]);
    }
    for (i, why) in waiting {
        let item = &task.items[i];
        if exhausted {
            dead_keys.push(&keys[i]);
            settlement.dead.push(Item {
                error: Some(format!("{why} (gave up after {} attempts)", task.attempts)),
                ..item.clone()
            });
        } else {
            retried += 1;
            retry_keys.push(&keys[i]);
            settlement.retry.push(Item {
                error: Some(why),
                ..item.clone()
            });
        }
    }
    // Unreachable, or refusing our credentials: the attempt does not count.
    let unreachable = error.as_ref().is_some_and(|e| e.stops_run());
    if !settlement.retry.is_empty() {
        settlement.retry_at_ms = now_millis() + backoff(job, task.attempts).as_millis() as i64;
        settlement.retry_error = error
            .as_ref()
            .map(|e| e.to_string())
            .or_else(|| settlement.retry.first().and_then(|i| i.error.clone()));
    }
    if unreachable && !wrote_any {
        // The target was never reached: the attempt does not count, no
        // other worker of this run claims anything more, and the task is due
        // at once, so that the next run meets the same answer (75 or 78
        // every time) instead of finding only a task waiting out a backoff.
        shared.stop.store(true, Ordering::Relaxed);
        store
            .release(
                &task,
                now_millis(),
                settlement.retry_error.as_deref().unwrap_or_default(),
            )
            .await?;
    } else if !store.settle(&task, &settlement).await? {
        tracing::warn!(job = %job.name, task = task.id, "task was taken over by another worker after its lease expired; its result is discarded");
        return Ok(());
    }

    if !shape.echo.is_empty() {
        let deleted: Vec<&Record> = live
            .iter()
            .zip(&fates)
            .filter(|((_, op, _), fate)| *op == Op::Delete && matches!(fate, Fate::Written(_)))
            .filter_map(|((_, _, row), _)| row.record())
            .collect();
        mark_echo(store, &shape.echo, &rows, &deleted).await?;
    }

    let dead = settlement.dead.len() as u64;
    // `deletes = "ignore"`: the target was not touched; the ledger still
    // records the delete as handled, but the item was skipped, not synced.
    let ignored_deletes = if job.rules.deletes == crate::config::Deletes::Ignore {
        std::mem::take(&mut written_by_op[1])
    } else {
        0
    };
    let synced = settlement.synced.len() as u64 - ignored_deletes;
    shared.synced.fetch_add(synced, Ordering::Relaxed);
    shared.skipped.fetch_add(ignored_deletes, Ordering::Relaxed);
    shared.progress.synced(synced);
    crate::metrics::items_skipped(&job.name, ignored_deletes, unchanged);
    shared.superseded.fetch_add(superseded, Ordering::Relaxed);
    shared.conflicts.fetch_add(conflicts, Ordering::Relaxed);
    shared.unchanged.fetch_add(unchanged, Ordering::Relaxed);
    crate::metrics::conflicts(&job.name, conflicts);
    shared.track_retries(
        retry_keys.into_iter(),
        (settlement.synced.iter().map(|s| s.key.as_str())).chain(dead_keys),
    );
    shared.dead.fetch_add(dead, Ordering::Relaxed);
    crate::metrics::items_synced(&job.name, written_by_op[0], written_by_op[1]);
    crate::metrics::items_failed(&job.name, retried, rejected, dead);
    crate::metrics::items_superseded(&job.name, superseded);
    if let Some(e) = &error {
        shared.note_error(e);
        if unreachable && !wrote_any {
            // Released above: the attempt was given back, as the message says.
            tracing::warn!(job = %job.name, task = task.id, attempts = task.attempts - 1, retrying = retried, "sync stopped, attempt not counted: {e}");
        } else {
            tracing::warn!(job = %job.name, task = task.id, attempt = task.attempts, retrying = retried, dead, "sync failed: {e}");
        }
        if unreachable {
            shared.stop.store(true, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Writes `live` in one call; when the target refuses the batch, writes each
/// half again, down to single items, so exactly the refused items are
/// rejected. Any other failure leaves the items of that call to retry (all
/// that are left, when the target is unreachable). Returns each item's fate,
/// the first non-refusal error, and whether anything was written.
#[allow(clippy::too_many_arguments)]
async fn write_isolating(
    job: &Job,
    target: &dyn Target,
    store: &Store,
    task: &ClaimedTask,
    live: &[(usize, Op, Row<'_>)],
    options: WriteOptions,
    shared: &Shared,
    lease: Duration,
) -> (Vec<Fate>, Option<ConnectorError>, bool, RowsAround) {
    let mut rows = RowsAround::default();
    let mut fates: Vec<Fate> = live.iter().map(|_| Fate::Retry).collect();
    let mut error: Option<ConnectorError> = None;
    let mut wrote_any = false;
    // Ranges of `live` still to write; split in halves when refused.
    let mut pending: Vec<Range<usize>> = Vec::new();
    if !live.is_empty() {
        pending.push(0..live.len());
    }
    while let Some(range) = pending.pop() {
        let mut batch = WriteBatch {
            images: options.images,
            skip_before: !options.before,
            read_back: options.read_back,
            ..Default::default()
        };
        for (i, op, row) in &live[range.clone()] {
            let item = &task.items[*i];
            // Only upserts are ever JSON rows.
            match row {
                Row::Json(json) => {
                    batch.upsert_json.push(json);
                    batch.upsert_items.push(item);
                }
                Row::Record(record) if *op == Op::Upsert => {
                    batch.upserts.push(record);
                    batch.upsert_items.push(item);
                }
                Row::Record(record) => {
                    batch.deletes.push(record);
                    batch.delete_items.push(item);
                }
            }
        }
        shared.writes.fetch_add(1, Ordering::Relaxed);
        match with_heartbeat(store, task, lease, target.write(&batch)).await {
            Ok(mut written) => {
                wrote_any = true;
                rows.before.append(&mut written.rows_before);
                rows.after.append(&mut written.rows);
                // The batch's order: its upserts, then its deletes.
                let order: Vec<usize> = range
                    .clone()
                    .filter(|i| live[*i].1 == Op::Upsert)
                    .chain(range.clone().filter(|i| live[*i].1 == Op::Delete))
                    .collect();
                let refused = std::mem::take(&mut written.rejected);
                let mut images = per_upsert(written);
                for i in range {
                    fates[i] = Fate::Written(match live[i].1 {
                        Op::Upsert => images.next().flatten(),
                        Op::Delete => None,
                    });
                }
                for (at, why) in refused {
                    if let Some(&i) = order.get(at) {
                        fates[i] = Fate::Rejected(why);
                    }
                }
            }
            Err(e) if e.is_rejection() && range.len() > 1 => {
                let mid = range.start + range.len() / 2;
                pending.push(mid..range.end);
                pending.push(range.start..mid);
            }
            Err(e) if e.is_rejection() => {
                // The user reads a refusal against their job file.
                let e = e.map_detail(|d| job.locate_in_message(d));
                fates[range.start] = Fate::Rejected(e.to_string());
                shared.note_error(&e);
            }
            Err(e) => {
                let stop = e.stops_run();
                error.get_or_insert(e);
                if stop {
                    break;
                }
            }
        }
    }
    (fates, error, wrote_any, rows)
}

/// The upserted rows as a source of the target table reads them, before
/// and after the writes (for echo suppression).
#[derive(Debug, Default)]
struct RowsAround {
    before: Vec<Record>,
    after: Vec<Record>,
}

#[derive(Debug, Clone, Copy)]
struct WriteOptions {
    images: bool,
    before: bool,
    read_back: bool,
}

/// Marks what this task wrote in the ledgers of the jobs that read the
/// target table back, so they do not send ferry's own writes back: each row
/// as it is now, where the partner had seen the row as it was before the
/// write (otherwise it holds someone else's change the partner must still
/// carry); `deleted`: target keys removed.
async fn mark_echo(
    store: &Store,
    partners: &[EchoPartner],
    rows: &RowsAround,
    deleted: &[&Record],
) -> Result<(), StateError> {
    for partner in partners {
        let key_of = |r: &Record| key_of(r, &partner.key).ok().map(|k| key_text(&k));
        // The partner hashes the columns it reads, in the table's order.
        let hash = |r: &Record| match &partner.columns {
            Some(columns) => {
                let mut read = r.clone();
                read.retain(|name, _| columns.contains(name));
                content_hash(&read)
            }
            None => content_hash(r),
        };
        let before: std::collections::HashMap<String, i64> = rows
            .before
            .iter()
            .filter_map(|r| Some((key_of(r)?, hash(r))))
            .collect();
        let present: Vec<(String, i64, Option<i64>)> = rows
            .after
            .iter()
            .filter_map(|r| {
                let key = key_of(r)?;
                let prior = before.get(&key).copied();
                Some((key, hash(r), prior))
            })
            .collect();
        let gone: Vec<String> = deleted.iter().filter_map(|r| key_of(r)).collect();
        store.mark_echo(&partner.job, &present, &gone).await?;
    }
    Ok(())
}

/// A write's images in the order of its upserts, each with the fields they
/// cover; None for each when the target reported none.
fn per_upsert(written: Written) -> impl Iterator<Item = Option<(Arc<[String]>, Images)>> {
    let fields: Arc<[String]> = written.fields.into();
    let reported = !written.images.is_empty();
    written
        .images
        .into_iter()
        .map(move |images| Some((fields.clone(), images)))
        .chain(std::iter::repeat_with(|| None).take_while(move |_| !reported))
}

/// Runs `write` while renewing the task's lease, so a long write is not
/// mistaken for a crashed worker.
async fn with_heartbeat<F>(
    store: &Store,
    task: &ClaimedTask,
    lease: Duration,
    write: F,
) -> Result<Written, ConnectorError>
where
    F: std::future::Future<Output = Result<Written, ConnectorError>>,
{
    tokio::pin!(write);
    let mut tick = tokio::time::interval(lease / 3);
    tick.tick().await;
    loop {
        tokio::select! {
            r = &mut write => return r,
            _ = tick.tick() => {
                if let Err(e) = store.renew_task(task, lease).await {
                    tracing::warn!(task = task.id, "could not renew the task lease: {e}");
                }
            }
        }
    }
}
