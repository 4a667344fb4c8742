//! A task's write: the live items in one call to the target, a refused
//! batch split in halves until each refused item stands alone, the task's
//! lease renewed while the target works.
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::row::{Live, Row};
use super::task::Worker;
use crate::connectors::{ConnectorError, Images, WriteBatch, Written};
use crate::model::{Op, Record};
use crate::state::{ClaimedTask, Store};

/// What became of one live item.
pub(super) enum Fate {
    /// With the fields and images the target reported, when asked.
    Written(Option<(Arc<[String]>, Images)>),
    Rejected(String),
    Retry,
}

/// What a task's write did: each live item's fate, the first error that
/// was not a refusal of one item, whether anything reached the target, and
/// the rows around the write.
pub(super) struct Outcome {
    pub fates: Vec<Fate>,
    pub error: Option<ConnectorError>,
    pub wrote_any: bool,
    pub rows: RowsAround,
}

impl Outcome {
    /// Nothing was attempted: every item is retried for `error`.
    pub fn not_written(live: usize, error: ConnectorError) -> Outcome {
        Outcome {
            fates: (0..live).map(|_| Fate::Retry).collect(),
            error: Some(error),
            wrote_any: false,
            rows: RowsAround::default(),
        }
    }
}

/// Writes `live` in one call; when the target refuses the batch, writes each
/// half again, down to single items, so exactly the refused items are
/// rejected. Any other failure leaves the items of that call to retry (all
/// that are left, when the target is unreachable). Returns each item's fate,
/// the first non-refusal error, and whether anything was written.
pub(super) async fn write_isolating(
    worker: &Worker<'_>,
    task: &ClaimedTask,
    live: &[Live<'_>],
    options: WriteOptions,
) -> Outcome {
    let Worker {
        job,
        target,
        store,
        shared,
        lease,
    } = *worker;
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
            insert_new: options.insert_new,
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
    Outcome {
        fates,
        error,
        wrote_any,
        rows,
    }
}

/// The upserted rows as a source of the target table reads them, before
/// and after the writes (for echo suppression).
#[derive(Debug, Default)]
pub(super) struct RowsAround {
    pub before: Vec<Record>,
    pub after: Vec<Record>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct WriteOptions {
    pub images: bool,
    pub before: bool,
    pub read_back: bool,
    /// A first run's snapshot: the rows are new (see `WriteBatch::insert_new`).
    pub insert_new: bool,
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
