//! Sync: claims queued tasks, drops superseded items, maps fields, writes each
//! task through the [`Target`] in bulk — splitting a batch the target refuses
//! until the refused items are isolated — and records every item's fate and
//! the ledger in the state store. Meets detection only through the store.
mod chunk;
mod conflicts;
mod identity;
mod mapping;
mod mirror;
mod predict;
mod preview;
mod row;
mod task;
mod write;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use chunk::{ChunkReader, ChunkRow, ChunkRows};
pub use mapping::Mapping;
pub use mirror::{prune, MirrorError};
pub use predict::{predict, Predicted, DELETION_TIME};
pub use preview::{field_changes, FieldChange};

use crate::config::Job;
use crate::connectors::{ConnectorError, Target};
use crate::progress::Progress;
use crate::state::{StateError, Store};

/// How long a claimed task is ours without a heartbeat (30 s; the tests
/// shorten it with `FERRY_TASK_LEASE`): a crashed worker's task is reclaimed
/// after this. The heartbeat renews at a third of it.
pub fn task_lease() -> Duration {
    crate::fault::lease("FERRY_TASK_LEASE", Duration::from_secs(30))
}

#[derive(Debug, Default)]
pub struct SyncReport {
    pub synced: u64,
    pub superseded: u64,
    /// Objects (keys) whose last attempt in this run failed and that wait
    /// for a retry: a key tried three times counts once.
    pub retrying: u64,
    /// Items that went dead (rejected, or attempts exhausted).
    pub dead: u64,
    /// Write calls made to the target (more than tasks when batches were split).
    pub writes: u64,
    /// The first target error, for the run summary.
    pub first_error: Option<ConnectorError>,
    /// The job is paused: changes stay queued, nothing was sent.
    pub paused: bool,
    /// `mode = "mirror"`: target rows removed because the source never had
    /// their key.
    pub mirrored: u64,
    /// Fields that both the target and the source changed since ferry last
    /// wrote them (the owner rules decided each).
    pub conflicts: u64,
    /// Written items that left the target row as it was.
    pub unchanged: u64,
    /// Deletes that `deletes = "ignore"` kept from the target.
    pub skipped: u64,
    /// Rows that snapshot chunk tasks re-read and wrote (also in `synced`).
    pub snapshot_rows: u64,
}

impl SyncReport {
    /// Adds an earlier drain's counts to this one's (a run that drained twice).
    pub fn absorb(&mut self, earlier: SyncReport) {
        self.synced += earlier.synced;
        self.superseded += earlier.superseded;
        self.retrying += earlier.retrying;
        self.dead += earlier.dead;
        self.writes += earlier.writes;
        self.conflicts += earlier.conflicts;
        self.unchanged += earlier.unchanged;
        self.skipped += earlier.skipped;
        self.snapshot_rows += earlier.snapshot_rows;
        self.mirrored += earlier.mirrored;
        self.paused |= earlier.paused;
        if self.first_error.is_none() {
            self.first_error = earlier.first_error;
        }
    }
}

#[derive(Default)]
struct Shared {
    synced: AtomicU64,
    superseded: AtomicU64,
    /// The keys whose latest attempt of this drain failed and will be
    /// retried; a later attempt that settles them takes them out.
    retrying: Mutex<HashSet<String>>,
    dead: AtomicU64,
    writes: AtomicU64,
    conflicts: AtomicU64,
    unchanged: AtomicU64,
    skipped: AtomicU64,
    snapshot_rows: AtomicU64,
    stop: AtomicBool,
    first_error: Mutex<Option<ConnectorError>>,
    progress: Arc<Progress>,
}

impl Shared {
    /// A task's outcome: keys to retry, and keys that are settled (synced
    /// or dead), so that FAILED counts objects, not attempts.
    fn track_retries<'k>(
        &self,
        retry: impl Iterator<Item = &'k str>,
        settled: impl Iterator<Item = &'k str>,
    ) {
        // A poisoned lock means a worker panicked, which ends the drain.
        if let Ok(mut keys) = self.retrying.lock() {
            for key in settled {
                keys.remove(key);
            }
            keys.extend(retry.map(str::to_string));
        }
    }

    /// What the drain did, once its workers are done.
    fn report(&self) -> SyncReport {
        let shared = self;
        let first_error = shared
            .first_error
            .lock()
            .map(|mut e| e.take())
            .unwrap_or(None);
        SyncReport {
            synced: shared.synced.load(Ordering::Relaxed),
            superseded: shared.superseded.load(Ordering::Relaxed),
            retrying: shared.retrying.lock().map_or(0, |k| k.len() as u64),
            dead: shared.dead.load(Ordering::Relaxed),
            writes: shared.writes.load(Ordering::Relaxed),
            first_error,
            paused: false,
            mirrored: 0,
            conflicts: shared.conflicts.load(Ordering::Relaxed),
            unchanged: shared.unchanged.load(Ordering::Relaxed),
            skipped: shared.skipped.load(Ordering::Relaxed),
            snapshot_rows: shared.snapshot_rows.load(Ordering::Relaxed),
        }
    }

    fn note_error(&self, e: &ConnectorError) {
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| e.clone());
        }
    }
}

/// Where a drain's workers are and what they may take.
pub struct Drain<'a> {
    pub store: &'a Store,
    pub owner: &'a str,
    pub shutdown: &'a CancellationToken,
    pub progress: &'a Arc<Progress>,
    /// Cancelled once detection is over.
    pub detected: &'a CancellationToken,
    /// Reads snapshot chunk tasks: without it, the drain leaves them to
    /// another (a run whose source is down).
    pub chunks: Option<Arc<dyn ChunkReader>>,
}

/// Claims and syncs this job's due tasks with `[batch] concurrency` workers
/// until `detected` is cancelled (detection is over) and none is claimable,
/// the target is unreachable, or `shutdown` is cancelled (tasks in flight
/// finish). A paused job sends nothing.
pub async fn drain(
    job: &Job,
    target: Arc<dyn Target>,
    d: Drain<'_>,
) -> Result<SyncReport, StateError> {
    let Drain {
        store,
        owner,
        shutdown,
        progress,
        detected,
        chunks,
    } = d;
    let paused = store.is_paused(&job.name).await?;
    crate::metrics::job_paused(&job.name, paused);
    if paused {
        tracing::info!(job = %job.name, "paused: changes stay queued, nothing is sent (ferry resume {})", job.name);
        return Ok(SyncReport {
            paused: true,
            ..Default::default()
        });
    }
    let shared = Arc::new(Shared {
        progress: progress.clone(),
        ..Default::default()
    });
    // Read once per drain: an initial sync (nothing written yet) then skips
    // the ledger lookup of every key.
    let track = conflicts::tracked(job) && target.reports_images();
    let prior_writes = track && store.ledger_has_written(&job.name).await?;
    let (mapping, identity) = (Mapping::new(job), identity::Identity::new(job));
    // Key translation and child sets need the fields; so do targets that
    // compose their own rows (documents, MySQL statements).
    let json_rows = target.reads_json_rows()
        && mapping.keeps_objects()
        && !identity.is_active()
        && job.children.is_empty();
    let mapping = Arc::new(task::Shape {
        mapping,
        identity,
        track,
        prior_writes,
        echo: job.echo.clone(),
        need_before: prior_writes || conflicts::first_writes_need_before(job),
        json_rows,
    });
    let lease = task_lease();
    let mut workers = tokio::task::JoinSet::new();
    // Chunk tasks are taken by at most `[snapshot] parallelism` workers at a time.
    let chunk_slots = Arc::new(tokio::sync::Semaphore::new(job.snapshot.parallelism));
    let count = match chunks {
        Some(_) => job.batch.concurrency.max(job.snapshot.parallelism),
        None => job.batch.concurrency,
    };
    for _ in 0..count {
        let crew = Crew {
            job: job.clone(),
            target: target.clone(),
            store: store.clone(),
            owner: owner.to_string(),
            shared: shared.clone(),
            shape: mapping.clone(),
            shutdown: shutdown.clone(),
            detected: detected.clone(),
            chunks: chunks.clone(),
            chunk_slots: chunk_slots.clone(),
            lease,
        };
        workers.spawn(crew.work());
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
    Ok(shared.report())
}

/// What each worker of a drain holds.
struct Crew {
    job: Job,
    target: Arc<dyn Target>,
    store: Store,
    owner: String,
    shared: Arc<Shared>,
    shape: Arc<task::Shape>,
    shutdown: CancellationToken,
    detected: CancellationToken,
    chunks: Option<Arc<dyn ChunkReader>>,
    chunk_slots: Arc<tokio::sync::Semaphore>,
    lease: Duration,
}

impl Crew {
    /// Claims and syncs tasks until the drain is over (see [`drain`]).
    async fn work(self) -> Result<(), StateError> {
        let Crew {
            job,
            store,
            owner,
            shared,
            shutdown,
            detected,
            chunks,
            lease,
            ..
        } = &self;
        while !shared.stop.load(Ordering::Relaxed) && !shutdown.is_cancelled() {
            // Read before claiming: once detection is over, an empty
            // claim means the queue is drained for good.
            let detection_over = detected.is_cancelled();
            let slot = match chunks {
                Some(_) => self.chunk_slots.clone().try_acquire_owned().ok(),
                None => None,
            };
            let claimed = match slot {
                Some(_) => store.claim_or_chunk(&job.name, owner, *lease).await?,
                None => store.claim(&job.name, owner, *lease).await?,
            };
            let Some(claimed) = claimed else {
                // Tasks of the job still running elsewhere (another
                // process's, or one whose holder died: its lease
                // expires and it is claimed here) are waited for, so a
                // drain ends only when nothing of the job is in flight.
                if detection_over && !store.has_running(&job.name).await? {
                    break;
                }
                let wait = match detection_over {
                    true => Duration::from_millis(100),
                    false => Duration::from_millis(20),
                };
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = detected.cancelled(), if !detection_over => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            };
            let span = tracing::info_span!("task", job = %job.name, task = claimed.id, attempt = claimed.attempts);
            let worker = task::Worker {
                job,
                target: self.target.as_ref(),
                store,
                shared,
                lease: *lease,
            };
            match (&claimed.chunk, chunks) {
                (Some(_), Some(reader)) => {
                    chunk::sync_chunk(worker, &self.shape, claimed, reader.as_ref(), shutdown)
                        .instrument(span)
                        .await?;
                }
                _ => {
                    drop(slot);
                    task::sync_task(worker, &self.shape, claimed)
                        .instrument(span)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// Exponential backoff with full jitter, the exponent capped: a delay drawn
/// uniformly from zero to `initial × 2^(attempt-1)`, at most `max`.
pub fn backoff(job: &Job, attempt: i64) -> Duration {
    let exp = attempt.clamp(1, 31) as u32 - 1;
    let ceiling = job
        .batch
        .backoff_initial
        .saturating_mul(2u32.saturating_pow(exp))
        .min(job.batch.backoff_max);
    rand::thread_rng().gen_range(Duration::ZERO..=ceiling)
}
