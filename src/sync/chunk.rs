//! A snapshot's chunk task: its part of the source re-read (through the
//! [`ChunkReader`] the runner hands the drain), written to the target part
//! by part as a task's items are, each part settled in the ledger in bulk
//! under the chunk's lease. A chunk that fails is read again later, whole:
//! what its settled parts wrote is rewritten, idempotently by key.
use std::collections::HashMap;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;

use super::backoff;
use super::task::{attempt, keys_of, Shape, Worker};
use crate::connectors::ConnectorError;
use crate::model::{key_text, now_millis, Item};
use crate::state::{ClaimedTask, StateError};

/// One row of a chunk, as the reader made it.
pub enum ChunkRow {
    /// An upsert of the object (its version is the chunk's).
    Item(Item),
    /// A row that cannot become an item (a key column without a value), and why.
    Invalid(String),
}

pub type ChunkRows = BoxStream<'static, Result<ChunkRow, ConnectorError>>;

/// Reads a chunk task's part of the source (`chunk`: the task's JSON).
#[async_trait]
pub trait ChunkReader: Send + Sync {
    async fn read(&self, chunk: &str) -> Result<ChunkRows, ConnectorError>;
}

/// How a chunk's attempt ended, for its task and the counters.
enum Ended {
    Done(u64),
    /// The source or the target failed: the chunk is read again later.
    Failed(ConnectorError),
    /// Another worker holds the chunk now.
    Lost,
    /// The process is stopping: the chunk is given back, to be read again.
    Stopped,
}

pub(super) async fn sync_chunk(
    worker: Worker<'_>,
    shape: &Shape,
    chunk: ClaimedTask,
    reader: &dyn ChunkReader,
    shutdown: &CancellationToken,
) -> Result<(), StateError> {
    let Worker { job, store, .. } = worker;
    crate::fault::point("chunk-claimed");
    let insert_new = match chunk.snapshot_id {
        Some(id) => store.snapshot_is_first_run(id).await?,
        None => false,
    };
    let ended = match reader
        .read(chunk.chunk.as_deref().unwrap_or_default())
        .await
    {
        Ok(rows) => write_parts(worker, shape, &chunk, rows, shutdown, insert_new).await?,
        Err(e) => Ended::Failed(e),
    };
    match ended {
        Ended::Done(rows) => {
            if store.complete_chunk(&chunk, rows).await? {
                crate::metrics::snapshot_chunk(&job.name, "ok", rows);
            }
            crate::fault::point("chunk-done");
        }
        Ended::Failed(e) if e.stops_run() => {
            // A system that could not be reached, or refuses us: the chunk
            // did not fail, it could not run; the attempt is given back, as
            // a task's is, and the next run meets the same answer at once.
            let why = e.to_string();
            if store.release(&chunk, now_millis(), &why).await? {
                crate::metrics::snapshot_chunk(&job.name, "retry", 0);
                tracing::warn!(job = %job.name, task = chunk.id, "snapshot chunk stopped, attempt not counted: {why}");
            }
            worker.shared.note_error(&e);
            worker.shared.stop.store(true, Ordering::Relaxed);
        }
        Ended::Failed(e) => {
            let exhausted = chunk.attempts >= i64::from(job.batch.max_attempts);
            let retry_at = now_millis() + backoff(job, chunk.attempts).as_millis() as i64;
            let why = e.to_string();
            if store.fail_chunk(&chunk, retry_at, &why, exhausted).await? {
                let result = if exhausted { "dead" } else { "retry" };
                crate::metrics::snapshot_chunk(&job.name, result, 0);
                tracing::warn!(job = %job.name, task = chunk.id, attempt = chunk.attempts, "snapshot chunk failed ({result}): {why}");
            }
            worker.shared.note_error(&e);
        }
        Ended::Stopped => {
            store
                .release(&chunk, now_millis(), "stopped before it was done")
                .await?;
        }
        Ended::Lost => {
            tracing::warn!(job = %job.name, task = chunk.id, "snapshot chunk taken over by another worker after its lease expired; its result is discarded");
        }
    }
    Ok(())
}

/// Reads the chunk's rows and writes them `[batch] size` at a time, each
/// part's items under versions of their own (documents carry them as ids).
async fn write_parts(
    worker: Worker<'_>,
    shape: &Shape,
    chunk: &ClaimedTask,
    mut rows: ChunkRows,
    shutdown: &CancellationToken,
    insert_new: bool,
) -> Result<Ended, StateError> {
    let job = worker.job;
    let part_rows = job.batch.size;
    let mut total = 0;
    loop {
        if shutdown.is_cancelled() {
            return Ok(Ended::Stopped);
        }
        // Later rows with the same key win: one item per key per part.
        let mut part: HashMap<String, Item> = HashMap::with_capacity(part_rows);
        let mut order = Vec::with_capacity(part_rows);
        let mut ended = false;
        while part.len() < part_rows {
            match rows.try_next().await {
                Ok(Some(ChunkRow::Item(item))) => {
                    let key = key_text(&item.key);
                    if part.insert(key.clone(), item).is_none() {
                        order.push(key);
                    }
                }
                Ok(Some(ChunkRow::Invalid(why))) => {
                    worker.shared.dead.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(job = %job.name, task = chunk.id, "{why}");
                }
                Ok(None) => {
                    ended = true;
                    break;
                }
                Err(e) => return Ok(Ended::Failed(e)),
            }
        }
        if !order.is_empty() {
            let mut items = order
                .into_iter()
                .filter_map(|key| part.remove(&key))
                .collect::<Vec<_>>();
            let n = items.len() as u64;
            let first = worker.store.allocate_versions(&job.name, n).await?;
            for (i, item) in items.iter_mut().enumerate() {
                item.version = first + i as i64;
            }
            let part = ClaimedTask {
                id: chunk.id,
                run_id: chunk.run_id,
                job: chunk.job.clone(),
                token: chunk.token,
                attempts: chunk.attempts,
                items,
                chunk: None,
                snapshot_id: chunk.snapshot_id,
            };
            let keys = keys_of(&part);
            let mut attempt = attempt(worker, shape, &part, &keys, false, insert_new).await?;
            if attempt.nothing_written() {
                let e = attempt.outcome.error.take().unwrap_or_else(|| {
                    ConnectorError::failed(
                        &worker.target.describe(),
                        "snapshot",
                        "nothing was written",
                    )
                });
                return Ok(Ended::Failed(e));
            }
            let lease = worker.lease.as_millis() as i64;
            if !worker
                .store
                .settle_chunk_part(chunk, &attempt.settlement, lease, insert_new)
                .await?
            {
                return Ok(Ended::Lost);
            }
            crate::fault::point("chunk-part-settled");
            attempt.conclude(worker, shape, &part).await?;
            worker.shared.progress.scanned(n, n);
            crate::metrics::objects_scanned(&job.name, n);
            worker.shared.snapshot_rows.fetch_add(n, Ordering::Relaxed);
            total += n;
        }
        if ended {
            return Ok(Ended::Done(total));
        }
    }
}
