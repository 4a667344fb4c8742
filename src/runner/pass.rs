//! One pass of a run: the schema stage, then detection (under the job
//! lease) and the drain of the queue, side by side.
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::chunks::SourceChunks;
use super::lease::{with_job_lease, Leased};
use super::{JobRun, RunError, RunOptions};
use crate::config::{Detect, Job, Mode};
use crate::connectors::{self, ConnectorError, Subset};
use crate::detect::{self, DetectError, DetectReport, Detection};
use crate::schema::{self, SchemaError};
use crate::state::Store;
use crate::sync;

/// The schema stage of a run: the job as this run executes it. When the
/// source cannot be reached, the stage cannot run: the job then drains
/// what earlier runs queued (with the fields they added), and detection
/// reports the source's error.
pub(super) async fn prepare_schema(
    job: &Job,
    store: &Store,
    run: &mut JobRun,
) -> Result<(Job, Option<ConnectorError>), RunError> {
    let reached = crate::reach::system(
        &job.source.kind,
        &job.source.url,
        "source",
        job.source.connect_timeout,
    )
    .await;
    let failed = match reached {
        Ok(()) => match schema::prepare(job, Some(store), false).await {
            Ok(prepared) => {
                run.schema_changes = prepared.changes;
                run.rewrite = prepared.rewrite;
                return Ok((prepared.job, None));
            }
            Err(SchemaError::Source(e)) if e.is_unreachable() => e,
            Err(e) => return Err(e.into()),
        },
        Err(e) => e,
    };
    Ok((schema::with_added_fields(job, store).await?, Some(failed)))
}

/// Detection is one runner's at a time (the job lease): two detections could
/// advance the watermark past each other's uncommitted reads. Draining is
/// everyone's: tasks are claimed one by one under fenced leases, so a run
/// that finds the lease taken skips detection and helps drain.
async fn detect_exclusively(
    job: &Job,
    store: &Store,
    owner: &str,
    run_id: i64,
    opts: &RunOptions,
    pass: Pass<'_>,
) -> Result<Leased<DetectReport>, RunError> {
    let report = with_job_lease(job, store, owner, pass.lease_wait, async {
        crate::fault::point("detecting");
        // The run's schema stage probed the source already; what it found
        // unreachable is reported here.
        if let Some(e) = pass.source_down {
            return Err(DetectError::Source(e.clone()).into());
        }
        let source = connectors::source(job).map_err(DetectError::Source)?;
        let detection = Detection {
            job,
            source: source.as_ref(),
            store,
            run_id,
            opts: opts.detect,
            subset: opts.resync.as_deref(),
            progress: &opts.progress,
        };
        if let Some(report) = snapshot_lane(detection, opts).await? {
            return Ok(report);
        }
        let repair = Repair::start(job, store, run_id, opts).await?;
        if repair.snapshot.is_some() {
            crate::fault::point("repair-recorded");
        }
        let report = detect::detect(Detection {
            job,
            source: source.as_ref(),
            store,
            run_id,
            opts: opts.detect,
            subset: repair.subset(opts),
            progress: &opts.progress,
        })
        .await;
        repair.finish(store, &report).await?;
        Ok(report?)
    })
    .await?;
    if let Leased::Held(holder) = &report {
        tracing::info!(job = %job.name, "another process is detecting changes of this job ({holder}); this run only drains the queue");
    }
    Ok(report)
}

/// The snapshot lane, where it applies: a chunked snapshot in progress is
/// continued (its deletes queued once its chunks are done) instead of
/// detecting changes; a repair or a first run of a source that splits
/// itself is started as one. None: detection goes on as usual.
async fn snapshot_lane(
    d: Detection<'_>,
    opts: &RunOptions,
) -> Result<Option<DetectReport>, RunError> {
    let job = d.job;
    if job.detect == Detect::Outbox {
        return Ok(None);
    }
    let whole = Subset::default();
    let asked = match opts.resync.as_deref() {
        Some(subset) => Some(subset),
        None if opts.detect.repair => Some(&whole),
        None => None,
    };
    let mut finished = None;
    match d.store.open_snapshot(&job.name).await? {
        Some(open) if open.lane.as_deref() == Some("chunks") => {
            let (mut report, done) = detect::snapshot::proceed(d, &open, asked.is_some()).await?;
            if !done || asked.is_none() {
                report.snapshot_open = !done;
                return Ok(Some(report));
            }
            // Its deletes are queued; the repair asked for now starts.
            finished = Some(report);
        }
        Some(_) => return Ok(None),
        None => {}
    }
    let first_run = asked.is_none()
        && !opts.detect.full
        && d.store.ledger_is_empty(&job.name).await?
        && d.store.watermark(&job.name).await?.is_none();
    let Some(subset) = asked.or(first_run.then_some(&whole)) else {
        return Ok(None);
    };
    // A source that cannot split: the repair queues items (its summary
    // leaves out what a finished snapshot's deletes queued just now).
    let Some(started) = detect::snapshot::start(d, subset, first_run).await? else {
        return Ok(None);
    };
    let (inserts, updates) = match first_run {
        true => (started.rows, 0),
        false => (0, started.rows),
    };
    // Rows count as scanned once a chunk has read them.
    let mut report = DetectReport {
        inserts,
        updates,
        tasks: started.chunks as u64,
        snapshot_open: true,
        snapshot_counted: true,
        ..DetectReport::default()
    };
    if let Some(earlier) = finished {
        report.absorb(earlier);
    }
    Ok(Some(report))
}

/// A repair (`ferry resync`, `run --once --full`) recorded before it reads
/// the source, or one an earlier process did not finish, which this run
/// does instead of detecting changes.
struct Repair {
    snapshot: Option<i64>,
    resumed: Option<Subset>,
}

impl Repair {
    async fn start(
        job: &Job,
        store: &Store,
        run_id: i64,
        opts: &RunOptions,
    ) -> Result<Repair, RunError> {
        let whole = Subset::default();
        let asked = match (opts.resync.as_deref(), opts.detect.repair) {
            (Some(subset), _) => Some(subset),
            (None, true) if job.detect != Detect::Outbox => Some(&whole),
            (None, _) => None,
        };
        if let Some(subset) = asked {
            let scope = serde_json::to_string(subset).map_err(|e| corrupt(job, e))?;
            let id = store.start_snapshot(&job.name, run_id, &scope).await?;
            return Ok(Repair {
                snapshot: Some(id),
                resumed: None,
            });
        }
        let Some(open) = store.open_snapshot(&job.name).await? else {
            return Ok(Repair {
                snapshot: None,
                resumed: None,
            });
        };
        if job.detect == Detect::Outbox {
            // The job reads changes now, not objects: nothing to re-read.
            store.finish_snapshot(open.id, "dropped").await?;
            return Ok(Repair {
                snapshot: None,
                resumed: None,
            });
        }
        let subset: Subset = serde_json::from_str(&open.scope).map_err(|e| corrupt(job, e))?;
        let started = chrono::DateTime::from_timestamp_millis(open.started_at)
            .map_or_else(|| open.started_at.to_string(), |t| t.to_rfc3339());
        tracing::warn!(job = %job.name, "a resync of {subset} did not finish (started {started}): this run does it again instead of detecting changes");
        Ok(Repair {
            snapshot: Some(open.id),
            resumed: Some(subset),
        })
    }

    fn subset<'a>(&'a self, opts: &'a RunOptions) -> Option<&'a Subset> {
        self.resumed.as_ref().or(opts.resync.as_deref())
    }

    /// Done once its changes are queued; refused when the delete guard
    /// stopped it, failed when the source refused it (a predicate in
    /// error): running either again would end the same way. Left open, to
    /// run again, when a system could not be reached.
    async fn finish(
        &self,
        store: &Store,
        report: &Result<DetectReport, DetectError>,
    ) -> Result<(), RunError> {
        let Some(id) = self.snapshot else {
            return Ok(());
        };
        let outcome = match report {
            Ok(_) => "done",
            Err(DetectError::MassDelete { .. } | DetectError::EmptySource { .. }) => "refused",
            Err(DetectError::Source(e)) if !e.is_unreachable() => "failed",
            Err(_) => return Ok(()),
        };
        store.finish_snapshot(id, outcome).await?;
        Ok(())
    }
}

fn corrupt(job: &Job, e: serde_json::Error) -> RunError {
    RunError::State(crate::state::StateError::Corrupt {
        url: "ferry_snapshots".to_string(),
        detail: format!("job {}: a resync's scope is unreadable: {e}", job.name),
    })
}

/// How one detect-and-drain pass of a run goes.
#[derive(Clone, Copy)]
pub(super) struct Pass<'a> {
    /// How long to wait for the job lease before only draining.
    pub lease_wait: Duration,
    /// The source could not be reached by the schema stage: detection
    /// reports this, the drain goes on.
    pub source_down: Option<&'a ConnectorError>,
}

pub(super) async fn detect_and_sync(
    job: &Job,
    store: &Store,
    owner: &str,
    run_id: i64,
    opts: &RunOptions,
    run: &mut JobRun,
    pass: Pass<'_>,
) -> Result<(), RunError> {
    if let Err(e) = store.purge(opts.retention.tasks, opts.retention.runs).await {
        tracing::warn!("could not prune old tasks and runs: {e}");
    }
    // Detection and sync overlap: workers claim each task as soon as its
    // chunk is committed, and stop once detection is over and the queue is
    // empty. (Fault injection at the boundary runs them one after the other.)
    let detected = CancellationToken::new();
    let detect = async {
        let report = detect_exclusively(job, store, owner, run_id, opts, pass).await;
        if report.is_ok() {
            crate::fault::point("after-enqueue");
        }
        detected.cancel();
        report
    };
    let drain = async {
        if !crate::fault::pipelined() {
            detected.cancelled().await;
        }
        crate::reach::system(
            &job.target.kind,
            &job.target.url,
            "target",
            job.target.connect_timeout,
        )
        .await
        .map_err(RunError::Target)?;
        let target: Arc<dyn connectors::Target> =
            Arc::from(connectors::target(job).map_err(RunError::Target)?);
        // Snapshot chunk tasks are read from the source, when it answers.
        let chunks: Option<Arc<dyn sync::ChunkReader>> = match pass.source_down {
            None if job.detect != Detect::Outbox => match SourceChunks::open(job) {
                Ok(reader) => Some(Arc::new(reader)),
                Err(e) => {
                    tracing::warn!(job = %job.name, "snapshot chunks are left to a later run: {e}");
                    None
                }
            },
            _ => None,
        };
        let report = sync::drain(
            job,
            target.clone(),
            sync::Drain {
                store,
                owner,
                shutdown: &opts.shutdown,
                progress: &opts.progress,
                detected: &detected,
                chunks,
            },
        )
        .await?;
        target.finish().await.map_err(RunError::Target)?;
        Ok::<_, RunError>(report)
    };
    let (detected_report, synced) = tokio::join!(detect, drain);
    // Whatever failed, the other half's report is kept for the summary.
    let synced = synced.map(|report| run.sync = report);
    match detected_report? {
        Leased::Done(report) => run.detect = report,
        Leased::Held(holder) => run.busy = Some(holder),
    }
    synced?;
    if let Some(first) = run.sync.first_error.as_ref().filter(|e| e.stops_run()) {
        return Err(RunError::Target(first.clone()));
    }
    // A mirror removes what the source never had, once everything it did
    // have (and every delete it reported) has reached the target.
    let clean = run.sync.first_error.is_none()
        && run.sync.retrying + run.sync.dead == 0
        && !opts.shutdown.is_cancelled();
    if job.target.mode == Mode::Mirror && !run.detect_skipped() && !run.sync.paused && clean {
        let target = connectors::target(job).map_err(RunError::Target)?;
        let allow = opts.detect.allow_mass_delete;
        let pruned = with_job_lease(job, store, owner, Duration::ZERO, async {
            Ok(sync::prune(job, store, target.as_ref(), allow).await?)
        })
        .await?;
        if let Leased::Done(pruned) = pruned {
            run.sync.mirrored = pruned;
        }
    }
    Ok(())
}
