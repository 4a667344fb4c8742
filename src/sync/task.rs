//! One claimed task, in steps: superseded items dropped, rows shaped and
//! keys translated, the rest written (see `write`), the outcome settled in
//! the queue, then counted.
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::identity::{Identity, IdentityError, Resolution};
use super::row::{Live, Row};
use super::write::{write_isolating, Fate, Outcome, RowsAround, WriteOptions};
use super::{backoff, conflicts, Mapping, Shared};
use crate::config::{EchoPartner, Job};
use crate::connectors::Target;
use crate::model::{content_hash, key_of, key_text, now_millis, parse_hash, Item, Op, Record};
use crate::state::{ClaimedTask, Settlement, StateError, Store, Synced, WrittenEntry};

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

/// What every step of a task works with.
#[derive(Clone, Copy)]
pub(super) struct Worker<'a> {
    pub job: &'a Job,
    pub target: &'a dyn Target,
    pub store: &'a Store,
    pub shared: &'a Shared,
    pub lease: Duration,
}

/// The ledger entries a task looked up: (entry, what ferry last wrote).
type Ledger = HashMap<String, WrittenEntry>;

/// The task's items sorted before the write.
struct Sorted<'t> {
    live: Vec<Live<'t>>,
    superseded: u64,
    /// Items that cannot become a row, with why.
    unreadable: Vec<(usize, String)>,
    /// Items waiting for a referenced object, with why.
    waiting: Vec<(usize, String)>,
    /// Deletes of objects the target never got.
    nothing: Vec<usize>,
}

/// What a task's settlement counts, for the run and the metrics.
#[derive(Default)]
struct Tally<'k> {
    written_by_op: [u64; 2],
    rejected: u64,
    retried: u64,
    conflicts: u64,
    unchanged: u64,
    superseded: u64,
    /// By key, for the run's FAILED count: not settled yet, or dead.
    retry_keys: Vec<&'k str>,
    dead_keys: Vec<&'k str>,
}

pub(super) async fn sync_task(
    worker: Worker<'_>,
    shape: &Shape,
    task: ClaimedTask,
) -> Result<(), StateError> {
    let Worker { job, store, .. } = worker;
    crate::fault::point("before-write");
    // A worker paused past its lease must not write over what the worker
    // that reclaimed the task wrote since.
    let Some(stale_check) = store.renew_task(&task, worker.lease).await? else {
        tracing::warn!(job = %job.name, task = task.id, "lease lost before writing; the task belongs to another worker now");
        return Ok(());
    };
    let keys = keys_of(&task);
    let mut attempt = attempt(worker, shape, &task, &keys, stale_check, false).await?;
    if !finish(worker, &task, &attempt.settlement, &attempt.outcome).await? {
        tracing::warn!(job = %job.name, task = task.id, "task was taken over by another worker after its lease expired; its result is discarded");
        return Ok(());
    }
    attempt.conclude(worker, shape, &task).await
}

/// Each item's key in its ledger text.
pub(super) fn keys_of(task: &ClaimedTask) -> Vec<String> {
    task.items.iter().map(|i| key_text(&i.key)).collect()
}

/// One write of a task's items, up to what the queue is to be told.
pub(super) struct Attempt<'t, 'k> {
    sorted: Sorted<'t>,
    pub outcome: Outcome,
    pub settlement: Settlement,
    tally: Tally<'k>,
}

impl Attempt<'_, '_> {
    /// The target was never reached, or refused nothing and took nothing:
    /// every item waits for a retry.
    pub fn nothing_written(&self) -> bool {
        never_reached(&self.outcome)
            || (self.settlement.synced.is_empty()
                && self.settlement.dead.is_empty()
                && !self.settlement.retry.is_empty())
    }

    /// After the settle: the echo marks and the counters.
    pub async fn conclude(
        &mut self,
        worker: Worker<'_>,
        shape: &Shape,
        task: &ClaimedTask,
    ) -> Result<(), StateError> {
        if !shape.echo.is_empty() {
            mark_written_echo(worker.store, shape, &self.sorted.live, &self.outcome).await?;
        }
        count(
            worker,
            task,
            &self.settlement,
            &mut self.tally,
            &self.outcome,
        );
        Ok(())
    }
}

/// Sorts, translates and writes the task's items (`keys`: their ledger
/// text), and decides each one's fate.
pub(super) async fn attempt<'t, 'k>(
    worker: Worker<'_>,
    shape: &Shape,
    task: &'t ClaimedTask,
    keys: &'k [String],
    stale_check: bool,
    insert_new: bool,
) -> Result<Attempt<'t, 'k>, StateError> {
    let Worker { job, store, .. } = worker;
    // Only a task that a later detection marked can hold superseded items,
    // and they must be known before writing; the others look keys up only
    // to check for conflicts after the write, and do so while it runs, and
    // only the upserts' keys whose last write detection did not carry.
    let uncarried: Vec<String> = match !stale_check && shape.prior_writes {
        true => task
            .items
            .iter()
            .zip(keys)
            .filter(|(item, _)| item.op == Op::Upsert && item.prior.is_none())
            .map(|(_, key)| key.clone())
            .collect(),
        false => Vec::new(),
    };
    let ledger = if stale_check {
        store.ledger_written(&job.name, keys).await?
    } else {
        Default::default()
    };
    let mut sorted = sort_items(shape, task, keys, &ledger);
    let translation_error = match translate(worker, shape, keys, &mut sorted).await {
        Ok(()) => None,
        Err(IdentityError::State(e)) => return Err(e),
        Err(IdentityError::Target(e)) => Some(e),
    };

    let started = std::time::Instant::now();
    let options = WriteOptions {
        images: shape.track,
        before: shape.need_before,
        read_back: !shape.echo.is_empty(),
        insert_new,
    };
    let write = async {
        match translation_error {
            Some(e) => Outcome::not_written(sorted.live.len(), e),
            None => write_isolating(&worker, task, &sorted.live, options).await,
        }
    };
    let (mut outcome, ledger) = if uncarried.is_empty() {
        (write.await, ledger)
    } else {
        // Should the read fail after the write succeeded, the task fails as
        // a failed settle does: reclaimed after its lease and written again,
        // which keyed upserts make harmless.
        let (outcome, ledger) = tokio::join!(write, store.ledger_written(&job.name, &uncarried));
        (outcome, ledger?)
    };
    crate::metrics::batch_duration(&job.name, "sync", started.elapsed());
    // The target holds the batch; the queue does not know yet.
    crate::fault::point("after-write");
    outcome.error = outcome
        .error
        .map(|e| e.map_detail(|d| job.locate_in_message(d)));

    let (settlement, tally) = settlement(job, task, keys, &ledger, &sorted, &outcome);
    Ok(Attempt {
        sorted,
        outcome,
        settlement,
        tally,
    })
}

/// Drops the items a newer detected change supersedes and shapes the rest
/// into target rows.
fn sort_items<'t>(
    shape: &Shape,
    task: &'t ClaimedTask,
    keys: &[String],
    ledger: &Ledger,
) -> Sorted<'t> {
    let mut sorted = Sorted {
        live: Vec::with_capacity(task.items.len()),
        superseded: 0,
        unreadable: Vec::new(),
        waiting: Vec::new(),
        nothing: Vec::new(),
    };
    for (i, (item, key)) in task.items.iter().zip(keys).enumerate() {
        // A newer change of this key was detected after this one: it carries
        // the newer data, so writing this one would be a stale overwrite.
        if ledger
            .get(key)
            .is_some_and(|(e, _)| e.detected_version > item.version)
        {
            sorted.superseded += 1;
            continue;
        }
        let row = match (item.op, &item.data) {
            (Op::Upsert, Some(json)) if shape.json_rows => Row::Json(json),
            (Op::Upsert, _) => match item.record() {
                Ok(record) => Row::Record(shape.mapping.upsert(record)),
                Err(e) => {
                    let why = format!("the queued object is not a JSON object: {e}");
                    sorted.unreadable.push((i, why));
                    continue;
                }
            },
            (Op::Delete, _) => Row::Record(shape.mapping.delete(&item.key)),
        };
        sorted.live.push((i, item.op, row));
    }
    sorted
}

/// Keys the target generates, and references to other jobs' objects: the
/// items that cannot be written yet leave `live`.
async fn translate(
    worker: Worker<'_>,
    shape: &Shape,
    keys: &[String],
    sorted: &mut Sorted<'_>,
) -> Result<(), IdentityError> {
    if !shape.identity.is_active() {
        return Ok(());
    }
    let resolutions = shape
        .identity
        .resolve(worker.target, worker.store, &mut sorted.live, keys)
        .await?;
    let live = std::mem::take(&mut sorted.live);
    for (entry, resolution) in live.into_iter().zip(resolutions) {
        match resolution {
            Resolution::Ready => sorted.live.push(entry),
            Resolution::Wait(why) => sorted.waiting.push((entry.0, why)),
            Resolution::Nothing => sorted.nothing.push(entry.0),
        }
    }
    Ok(())
}

/// What the queue and the ledger are told: each item synced, retried or
/// dead, with what the write reported about conflicts.
fn settlement<'k>(
    job: &Job,
    task: &ClaimedTask,
    keys: &'k [String],
    ledger: &Ledger,
    sorted: &Sorted<'_>,
    outcome: &Outcome,
) -> (Settlement, Tally<'k>) {
    let mut settlement = Settlement::default();
    let mut tally = Tally {
        superseded: sorted.superseded,
        ..Tally::default()
    };
    let exhausted = task.attempts >= i64::from(job.batch.max_attempts);
    let gave_up = |why: &str| format!("{why} (gave up after {} attempts)", task.attempts);
    let error = outcome.error.as_ref().map(ToString::to_string);
    for ((i, op, _), fate) in sorted.live.iter().zip(&outcome.fates) {
        let (i, item) = (*i, &task.items[*i]);
        match fate {
            Fate::Written(images) => {
                let prior = match ledger.get(&keys[i]) {
                    Some((_, written)) => written.as_deref(),
                    None => item.prior.as_ref().and_then(Option::as_deref),
                };
                let assessed = images
                    .as_ref()
                    .map(|(fields, images)| conflicts::assess(fields, prior, images))
                    .unwrap_or_default();
                if assessed.conflicts > 0 {
                    tracing::info!(job = %job.name, key = %keys[i], fields = assessed.conflicts, "conflict: the target and the source both changed the object since ferry last wrote it; the owner rules decided");
                }
                tally.conflicts += assessed.conflicts;
                tally.unchanged += u64::from(assessed.unchanged);
                settlement
                    .synced
                    .push(synced(&keys[i], item, assessed.written));
                tally.written_by_op[usize::from(*op == Op::Delete)] += 1;
            }
            Fate::Rejected(message) => {
                tally.rejected += 1;
                tally.dead_keys.push(&keys[i]);
                settlement
                    .dead
                    .push(with_error(item, Some(message.clone())));
            }
            Fate::Retry if exhausted => {
                tally.dead_keys.push(&keys[i]);
                let message = error.as_deref().map(gave_up);
                settlement.dead.push(with_error(item, message));
            }
            Fate::Retry => {
                tally.retried += 1;
                tally.retry_keys.push(&keys[i]);
                settlement.retry.push(with_error(item, error.clone()));
            }
        }
    }
    for (i, why) in &sorted.unreadable {
        tally.rejected += 1;
        tally.dead_keys.push(&keys[*i]);
        settlement
            .dead
            .push(with_error(&task.items[*i], Some(why.clone())));
    }
    for &i in &sorted.nothing {
        settlement
            .synced
            .push(synced(&keys[i], &task.items[i], None));
    }
    if let Some((i, why)) = sorted.waiting.first() {
        let waiting = sorted.waiting.len();
        tracing::warn!(job = %job.name, task = task.id, waiting, "{waiting} item(s) wait for a referenced object, first {}: {why}", keys[*i]);
    }
    for (i, why) in &sorted.waiting {
        let (i, why) = (*i, why.clone());
        if exhausted {
            tally.dead_keys.push(&keys[i]);
            settlement
                .dead
                .push(with_error(&task.items[i], Some(gave_up(&why))));
        } else {
            tally.retried += 1;
            tally.retry_keys.push(&keys[i]);
            settlement.retry.push(with_error(&task.items[i], Some(why)));
        }
    }
    if !settlement.retry.is_empty() {
        settlement.retry_at_ms = now_millis() + backoff(job, task.attempts).as_millis() as i64;
        settlement.retry_error =
            error.or_else(|| settlement.retry.first().and_then(|i| i.error.clone()));
    }
    (settlement, tally)
}

fn synced(key: &str, item: &Item, written: Option<String>) -> Synced {
    Synced {
        key: key.to_string(),
        hash: parse_hash(&item.hash),
        version: item.version,
        written,
        source_hash: item.source_hash,
    }
}

fn with_error(item: &Item, error: Option<String>) -> Item {
    Item {
        error,
        ..item.clone()
    }
}

/// The target was never reached (unreachable, or refusing our credentials).
fn never_reached(outcome: &Outcome) -> bool {
    !outcome.wrote_any && outcome.error.as_ref().is_some_and(|e| e.stops_run())
}

/// Settles the task in the queue; false when another worker holds it now.
async fn finish(
    worker: Worker<'_>,
    task: &ClaimedTask,
    settlement: &Settlement,
    outcome: &Outcome,
) -> Result<bool, StateError> {
    if !never_reached(outcome) {
        return worker.store.settle(task, settlement).await;
    }
    // The attempt does not count, no other worker of this run claims
    // anything more, and the task is due at once, so that the next run meets
    // the same answer (75 or 78 every time) instead of finding only a task
    // waiting out a backoff.
    worker.shared.stop.store(true, Ordering::Relaxed);
    let why = settlement.retry_error.as_deref().unwrap_or_default();
    worker.store.release(task, now_millis(), why).await?;
    Ok(true)
}

/// The run's counters, the metrics and the log of a settled task.
fn count(
    worker: Worker<'_>,
    task: &ClaimedTask,
    settlement: &Settlement,
    tally: &mut Tally<'_>,
    outcome: &Outcome,
) {
    let Worker { job, shared, .. } = worker;
    let dead = settlement.dead.len() as u64;
    // `deletes = "ignore"`: the target was not touched; the ledger still
    // records the delete as handled, but the item was skipped, not synced.
    let ignored_deletes = if crate::rules::keeps_deleted_rows(job) {
        std::mem::take(&mut tally.written_by_op[1])
    } else {
        0
    };
    let synced = settlement.synced.len() as u64 - ignored_deletes;
    shared.synced.fetch_add(synced, Ordering::Relaxed);
    shared.skipped.fetch_add(ignored_deletes, Ordering::Relaxed);
    shared.progress.synced(synced);
    crate::metrics::items_skipped(&job.name, ignored_deletes, tally.unchanged);
    shared
        .superseded
        .fetch_add(tally.superseded, Ordering::Relaxed);
    shared
        .conflicts
        .fetch_add(tally.conflicts, Ordering::Relaxed);
    shared
        .unchanged
        .fetch_add(tally.unchanged, Ordering::Relaxed);
    crate::metrics::conflicts(&job.name, tally.conflicts);
    let settled = settlement.synced.iter().map(|s| s.key.as_str());
    shared.track_retries(
        std::mem::take(&mut tally.retry_keys).into_iter(),
        settled.chain(std::mem::take(&mut tally.dead_keys)),
    );
    shared.dead.fetch_add(dead, Ordering::Relaxed);
    crate::metrics::items_synced(&job.name, tally.written_by_op[0], tally.written_by_op[1]);
    crate::metrics::items_failed(&job.name, tally.retried, tally.rejected, dead);
    crate::metrics::items_superseded(&job.name, tally.superseded);
    let Some(e) = &outcome.error else {
        return;
    };
    shared.note_error(e);
    let retrying = tally.retried;
    if never_reached(outcome) {
        // Released: the attempt was given back, as the message says.
        tracing::warn!(job = %job.name, task = task.id, attempts = task.attempts - 1, retrying, "sync stopped, attempt not counted: {e}");
    } else {
        tracing::warn!(job = %job.name, task = task.id, attempt = task.attempts, retrying, dead, "sync failed: {e}");
    }
    if e.stops_run() {
        shared.stop.store(true, Ordering::Relaxed);
    }
}

/// The written rows and deletes, for the jobs that read the target back.
async fn mark_written_echo(
    store: &Store,
    shape: &Shape,
    sorted_live: &[Live<'_>],
    outcome: &Outcome,
) -> Result<(), StateError> {
    let deleted: Vec<&Record> = sorted_live
        .iter()
        .zip(&outcome.fates)
        .filter(|((_, op, _), fate)| *op == Op::Delete && matches!(fate, Fate::Written(_)))
        .filter_map(|((_, _, row), _)| row.record())
        .collect();
    mark_echo(store, &shape.echo, &outcome.rows, &deleted).await
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
