//! Sync: claims queued tasks, drops superseded items, maps fields, writes each
//! task through the [`Target`] in one bulk call, and records the outcome and
//! the ledger in the state store. Meets detection only through the store.
mod mapping;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use mapping::Mapping;

use crate::config::Job;
use crate::connectors::{ConnectorError, Target, WriteBatch};
use crate::model::{key_text, now_millis, parse_hash, Op};
use crate::state::{ClaimedTask, StateError, Store};

/// How long a claimed task is ours without a heartbeat; a crashed worker's
/// task is reclaimed after this. The heartbeat renews at a third of it.
pub const TASK_LEASE: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct SyncReport {
    pub synced: u64,
    pub superseded: u64,
    /// Items whose task failed and waits for a retry.
    pub retrying: u64,
    /// Items whose task went dead (attempts exhausted).
    pub dead: u64,
    /// The first target error, for the run summary.
    pub first_error: Option<ConnectorError>,
    /// Set when the target could not be reached; draining stopped.
    pub unreachable: bool,
}

#[derive(Default)]
struct Shared {
    synced: AtomicU64,
    superseded: AtomicU64,
    retrying: AtomicU64,
    dead: AtomicU64,
    stop: AtomicBool,
    first_error: Mutex<Option<ConnectorError>>,
}

/// Claims and syncs this job's due tasks with `[batch] concurrency` workers
/// until none is claimable (or the target is unreachable).
/// Stops claiming when `shutdown` is cancelled; tasks in flight finish.
pub async fn drain(
    job: &Job,
    target: Arc<dyn Target>,
    store: &Store,
    owner: &str,
    shutdown: &CancellationToken,
) -> Result<SyncReport, StateError> {
    let shared = Arc::new(Shared::default());
    let mapping = Arc::new(Mapping::new(job));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..job.batch.concurrency {
        let (job, target, store, owner, shared, mapping) = (
            job.clone(),
            target.clone(),
            store.clone(),
            owner.to_string(),
            shared.clone(),
            mapping.clone(),
        );
        let shutdown = shutdown.clone();
        workers.spawn(async move {
            while !shared.stop.load(Ordering::Relaxed) && !shutdown.is_cancelled() {
                let Some(task) = store.claim(&job.name, &owner, TASK_LEASE).await? else { break };
                let span = tracing::info_span!("task", job = %job.name, task = task.id, attempt = task.attempts);
                sync_task(&job, target.as_ref(), &store, &mapping, task, &shared).instrument(span).await?;
            }
            Ok::<(), StateError>(())
        });
    }
    let mut result = Ok(());
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shared.stop.store(true, Ordering::Relaxed);
                result = Err(e);
            }
            Err(panic) => std::panic::resume_unwind(panic.into_panic()),
        }
    }
    result?;
    let first_error = shared
        .first_error
        .lock()
        .map(|mut e| e.take())
        .unwrap_or(None);
    Ok(SyncReport {
        synced: shared.synced.load(Ordering::Relaxed),
        superseded: shared.superseded.load(Ordering::Relaxed),
        retrying: shared.retrying.load(Ordering::Relaxed),
        dead: shared.dead.load(Ordering::Relaxed),
        unreachable: first_error.as_ref().is_some_and(|e| e.is_unreachable()),
        first_error,
    })
}

async fn sync_task(
    job: &Job,
    target: &dyn Target,
    store: &Store,
    mapping: &Mapping,
    task: ClaimedTask,
    shared: &Shared,
) -> Result<(), StateError> {
    let keys: Vec<String> = task.items.iter().map(|i| key_text(&i.key)).collect();
    let ledger = store.ledger(&job.name, &keys).await?;

    let mut batch = WriteBatch::default();
    let mut written = Vec::with_capacity(task.items.len());
    let mut superseded = 0u64;
    for (item, key) in task.items.iter().zip(keys) {
        // A newer change of this key was detected after this one: it carries
        // the newer data, so writing this one would be a stale overwrite.
        if ledger
            .get(&key)
            .is_some_and(|e| e.detected_version > item.version)
        {
            superseded += 1;
            continue;
        }
        match item.op {
            Op::Upsert => batch.upserts.push(mapping.upsert(&item.data)),
            Op::Delete => batch.deletes.push(mapping.delete(&item.key)),
        }
        written.push((key, parse_hash(&item.hash), item.version));
    }

    let result = if batch.upserts.is_empty() && batch.deletes.is_empty() {
        Ok(())
    } else {
        with_heartbeat(store, &task, target.write(&batch)).await
    };
    match result {
        Ok(()) => {
            if store.complete(&task, &written).await? {
                shared
                    .synced
                    .fetch_add(written.len() as u64, Ordering::Relaxed);
                shared.superseded.fetch_add(superseded, Ordering::Relaxed);
            } else {
                tracing::warn!(job = %job.name, task = task.id, "task was taken over by another worker after its lease expired; its result is discarded");
            }
        }
        Err(e) => {
            let n = task.items.len() as u64;
            let message = e.to_string();
            if e.is_unreachable() {
                shared.stop.store(true, Ordering::Relaxed);
                store
                    .release(
                        &task,
                        now_millis() + backoff(job, 1).as_millis() as i64,
                        &message,
                    )
                    .await?;
                shared.retrying.fetch_add(n, Ordering::Relaxed);
            } else if task.attempts >= i64::from(job.batch.max_attempts) {
                store.fail(&task, &message, None).await?;
                shared.dead.fetch_add(n, Ordering::Relaxed);
            } else {
                let retry_at = now_millis() + backoff(job, task.attempts).as_millis() as i64;
                store.fail(&task, &message, Some(retry_at)).await?;
                shared.retrying.fetch_add(n, Ordering::Relaxed);
            }
            tracing::warn!(job = %job.name, task = task.id, attempt = task.attempts, "sync failed: {message}");
            if let Ok(mut first) = shared.first_error.lock() {
                first.get_or_insert(e);
            }
        }
    }
    Ok(())
}

/// Runs `write` while renewing the task's lease, so a long write is not
/// mistaken for a crashed worker.
async fn with_heartbeat<F>(
    store: &Store,
    task: &ClaimedTask,
    write: F,
) -> Result<(), ConnectorError>
where
    F: std::future::Future<Output = Result<(), ConnectorError>>,
{
    tokio::pin!(write);
    let mut tick = tokio::time::interval(TASK_LEASE / 3);
    tick.tick().await;
    loop {
        tokio::select! {
            r = &mut write => return r,
            _ = tick.tick() => {
                if let Err(e) = store.renew_task(task, TASK_LEASE).await {
                    tracing::warn!(task = task.id, "could not renew the task lease: {e}");
                }
            }
        }
    }
}

/// Exponential backoff with jitter: half the delay fixed, half random, capped.
pub fn backoff(job: &Job, attempt: i64) -> Duration {
    let exp = attempt.clamp(1, 31) as u32 - 1;
    let base = job
        .batch
        .backoff_initial
        .saturating_mul(2u32.saturating_pow(exp))
        .min(job.batch.backoff_max);
    let half = base / 2;
    half + rand::thread_rng().gen_range(Duration::ZERO..=half)
}
