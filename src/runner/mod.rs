//! One run of one job: take the job's lease, detect, drain the queue, record
//! the run. Used by `run --once` (and later the daemon) and by `plan`. The
//! outcomes and exit codes are documented in `docs/commands.md`.
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod chunks;
mod lease;
mod pass;

pub use lease::job_lease;
use pass::{detect_and_sync, prepare_schema, Pass};

use crate::config::{Job, Retention};
use crate::connectors::{self, ConnectorError};
use crate::detect::{self, DetectError, DetectOptions, DetectReport, Detection};
use crate::exit::ExitCode;
use crate::progress::Progress;
use crate::schema::{self, Applied, SchemaError};
use crate::state::{QueueCounts, RunCounts, StateError, Store};
use crate::sync::{self, SyncReport};

/// How long a run that found the job busy waits for the job lease before it
/// detects in its second pass (after it helped drain the queue).
const SECOND_PASS_LEASE_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    Signal,
    Manual,
    Once,
    Resync,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Signal => "signal",
            Trigger::Manual => "manual",
            Trigger::Once => "once",
            Trigger::Resync => "resync",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything detected was synced, and nothing of the job is left queued.
    Success,
    /// The run finished, but items failed (dead or awaiting retry).
    Partial,
    /// The job is paused: its changes wait unsent.
    Paused,
    /// Another process holds the job's lease and was detecting its changes:
    /// this run only helped drain the queue.
    Busy,
    /// Stopped by SIGTERM/SIGINT before it was done; what is left stays queued.
    Stopped,
    /// The run could not finish.
    Failed,
}

impl Outcome {
    /// As recorded with the run, shown by `status` and in the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Partial => "partial",
            Outcome::Paused => "paused",
            Outcome::Busy => "busy",
            Outcome::Stopped => "stopped",
            Outcome::Failed => "failed",
        }
    }

    /// The `outcome` label of `ferry_runs_total`: success, partial or
    /// failed only (dashboards and alerts know those). A paused, busy or
    /// stopped run finished without everything synced: partial.
    pub fn metric_label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failed => "failed",
            _ => "partial",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("source {0}")]
    Detect(#[from] DetectError),
    #[error("target {0}")]
    Target(ConnectorError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("target {0}")]
    Mirror(#[from] sync::MirrorError),
}

/// The system a run failed on, when one did.
enum FailedSystem<'a> {
    Connector(&'a ConnectorError),
    State(&'a StateError),
}

impl RunError {
    fn failed_system(&self) -> Option<FailedSystem<'_>> {
        match self {
            RunError::Detect(DetectError::Source(e))
            | RunError::Schema(SchemaError::Source(e) | SchemaError::Target(e))
            | RunError::Target(e)
            | RunError::Mirror(sync::MirrorError::Target(e)) => Some(FailedSystem::Connector(e)),
            RunError::Detect(DetectError::State(e))
            | RunError::Schema(SchemaError::State(e))
            | RunError::State(e)
            | RunError::Mirror(sync::MirrorError::State(e)) => Some(FailedSystem::State(e)),
            _ => None,
        }
    }

    /// A system refused our credentials or has no such database: only a
    /// change of configuration helps (exit 78).
    pub fn is_refused(&self) -> bool {
        if matches!(self, RunError::Schema(SchemaError::Refused { .. })) {
            return true;
        }
        match self.failed_system() {
            Some(FailedSystem::Connector(e)) => e.is_refused(),
            Some(FailedSystem::State(e)) => e.is_refused(),
            None => false,
        }
    }

    /// A system could not be reached: nothing was lost, retry later.
    pub fn is_unreachable(&self) -> bool {
        match self.failed_system() {
            Some(FailedSystem::Connector(e)) => e.is_unreachable(),
            Some(FailedSystem::State(e)) => e.is_unreachable(),
            None => false,
        }
    }
}

#[derive(Debug)]
pub struct JobRun {
    pub job: String,
    /// The run's row in the state store (none for a dry run or a skipped one).
    pub run_id: Option<i64>,
    pub outcome: Outcome,
    pub detect: DetectReport,
    pub sync: SyncReport,
    pub elapsed: Duration,
    pub error: Option<RunError>,
    /// Who held the job's lease when this run wanted to detect: another
    /// process was detecting this job's changes, and this run only drained.
    pub busy: Option<crate::state::LeaseHolder>,
    /// The job's queue when the run ended.
    pub left: QueueCounts,
    /// Changes the schema stage made to the target (a dry run: would make).
    pub schema_changes: Vec<Applied>,
    /// The job's fields or rules changed since its rows were written: this
    /// run wrote (a plan: would write) every row again.
    pub rewrite: bool,
}

impl JobRun {
    /// Another process was detecting this job's changes; this run only drained.
    pub fn detect_skipped(&self) -> bool {
        self.busy.is_some()
    }

    /// A run that failed midway lost its reports with the error: what the
    /// progress counters saw (objects scanned, changes committed to the
    /// queue, items synced) is what it did, and its summary says so.
    fn count_progress(&mut self, progress: &Progress) {
        let (scanned, changed, synced) = progress.get();
        self.detect.scanned = self.detect.scanned.max(scanned);
        if self.detect.changed() < changed {
            self.detect.unclassified = changed - self.detect.changed();
        }
        self.sync.synced = self.sync.synced.max(synced);
    }

    /// Rows that snapshot chunk tasks wrote in this run were scanned; those
    /// of a snapshot this run did not start (one a killed run left) are
    /// changes of unknown kind besides.
    fn count_snapshot_rows(&mut self) {
        self.detect.scanned += self.sync.snapshot_rows;
        self.detect.read_whole += self.sync.snapshot_rows;
        if !self.detect.snapshot_counted {
            self.detect.unclassified += self.sync.snapshot_rows;
        }
    }

    /// Deletes a diff refused to enqueue (max_delete_ratio, an empty source).
    pub fn refused_deletes(&self) -> Option<u64> {
        match &self.error {
            Some(RunError::Detect(DetectError::MassDelete { deletes, .. })) => Some(*deletes),
            Some(RunError::Detect(DetectError::EmptySource { present })) => Some(*present),
            _ => None,
        }
    }

    /// Items that did not reach the target in this run.
    pub fn failed(&self) -> u64 {
        self.sync.retrying + self.sync.dead + self.detect.invalid
    }

    /// 75 when a system was unreachable or the job was busy in another
    /// process (retry later), 1 when the run failed, left items failed or
    /// found the job paused, else 0. (A stopped run's exit code is the
    /// signal's, chosen by the command.)
    pub fn exit_code(&self) -> ExitCode {
        if self.error.as_ref().is_some_and(RunError::is_refused) {
            ExitCode::Config
        } else if self.error.as_ref().is_some_and(|e| e.is_unreachable())
            || self.outcome == Outcome::Busy
        {
            ExitCode::Unavailable
        } else if self.outcome == Outcome::Success {
            ExitCode::Ok
        } else {
            ExitCode::Failed
        }
    }

    /// Why the run is not a success, in a sentence, when the outcome alone
    /// does not say it (paused, busy, stopped).
    pub fn explanation(&self) -> Option<String> {
        let left = self.left.open_items;
        match self.outcome {
            Outcome::Paused => Some(format!(
                "job {} is paused: {left} item(s) wait unsent (ferry resume {})",
                self.job, self.job
            )),
            Outcome::Busy => Some(match &self.busy {
                Some(holder) => format!(
                    "job {}: detection skipped, the job runs in another process ({holder}); {left} item(s) left queued or running; run again later",
                    self.job
                ),
                None => format!(
                    "job {}: {left} item(s) queued or running in another process; run again later",
                    self.job
                ),
            }),
            Outcome::Stopped => Some(format!(
                "job {}: stopped before it was done; {left} item(s) left queued for the next run",
                self.job
            )),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub trigger: Trigger,
    pub detect: DetectOptions,
    /// The schedule tick this run is for, recorded with the run.
    pub scheduled_for: Option<i64>,
    /// Cancelled on SIGTERM/SIGINT: stop claiming tasks, finish the ones in flight.
    pub shutdown: CancellationToken,
    pub retention: Retention,
    /// Counters for a progress bar, when someone watches.
    pub progress: Arc<Progress>,
    /// `ferry resync`: re-read and resend this part of the source instead
    /// of detecting changes.
    pub resync: Option<Arc<crate::connectors::Subset>>,
}

impl RunOptions {
    pub fn new(trigger: Trigger, detect: DetectOptions, shutdown: CancellationToken) -> RunOptions {
        RunOptions {
            trigger,
            detect,
            scheduled_for: None,
            shutdown,
            retention: Retention::default(),
            progress: Arc::new(Progress::default()),
            resync: None,
        }
    }
}

/// A dry run (`ferry plan`): the schema stage and detection, nothing
/// queued, no run recorded.
async fn plan_run(
    job: &Job,
    store: &Store,
    opts: &RunOptions,
    run: &mut JobRun,
) -> Result<(), RunError> {
    let prepared = schema::prepare(job, Some(store), true).await?;
    run.schema_changes = prepared.changes;
    run.rewrite = prepared.rewrite;
    let job = &prepared.job;
    let source = connectors::source(job).map_err(DetectError::Source)?;
    let detection = Detection {
        job,
        source: source.as_ref(),
        store,
        run_id: 0,
        opts: DetectOptions {
            full: opts.detect.full || prepared.rewrite,
            ..opts.detect
        },
        subset: opts.resync.as_deref(),
        progress: &opts.progress,
    };
    run.detect = detect::detect(detection).await?;
    // A repair, or a first run, would read the source in chunk tasks.
    let whole = crate::connectors::Subset::default();
    let snapshot = match opts.resync.as_deref() {
        Some(subset) => Some(subset),
        None if opts.detect.repair || store.ledger_is_empty(&job.name).await? => Some(&whole),
        None => None,
    };
    if let Some(subset) = snapshot {
        if let Some(plan) = detect::snapshot::preview(detection, subset).await? {
            run.detect.snapshot_plan = Some((plan.chunks as u64, plan.rows));
        }
    }
    run.outcome = Outcome::Success;
    Ok(())
}

/// What a recorded run came to, from its result and what is left queued.
fn outcome(run: &JobRun, result: &Result<(), RunError>, opts: &RunOptions) -> Outcome {
    match result {
        Err(_) => Outcome::Failed,
        Ok(()) if opts.shutdown.is_cancelled() && run.left.open() > 0 => Outcome::Stopped,
        Ok(()) if run.sync.paused => Outcome::Paused,
        Ok(()) if run.failed() > 0 || run.left.failed + run.left.dead > 0 => Outcome::Partial,
        Ok(()) if run.detect_skipped() => Outcome::Busy,
        // Queued by another process after this one's drain ended.
        Ok(()) if run.left.pending + run.left.running > 0 => Outcome::Busy,
        Ok(()) if opts.shutdown.is_cancelled() => Outcome::Stopped,
        Ok(()) => Outcome::Success,
    }
}

/// The pass after a snapshot's chunks are done: its deletes, then the
/// snapshot is closed. Skipped while chunks are left (another process's,
/// or failed ones waiting for a retry).
async fn finish_snapshot(
    job: &Job,
    store: &Store,
    owner: &str,
    run_id: i64,
    opts: &RunOptions,
    run: &mut JobRun,
    pass: Pass<'_>,
) -> Result<(), RunError> {
    let Some(open) = store.open_snapshot(&job.name).await? else {
        return Ok(());
    };
    if store.chunk_counts(open.id).await?.open > 0 {
        return Ok(());
    }
    // The repair this run was asked for is the snapshot being finished.
    let mut finishing = opts.clone();
    finishing.resync = None;
    finishing.detect.repair = false;
    let first = std::mem::take(&mut run.detect);
    let drained = std::mem::take(&mut run.sync);
    let result = detect_and_sync(job, store, owner, run_id, &finishing, run, pass).await;
    run.sync.absorb(drained);
    run.detect.absorb(first);
    result
}

/// Process-wide identity of this runner: a random id, never a host or pod
/// name (a restarted pod keeps its name and would look alive).
/// `ferry verify` of `job` under the job's lease, so never beside a run of
/// it in any process. None: another process holds the lease.
pub async fn verify_job(
    job: &Job,
    store: &Store,
    owner: &str,
) -> Result<Option<Result<crate::verify::Outcome, crate::verify::VerifyError>>, RunError> {
    let verified = lease::with_job_lease(job, store, owner, Duration::ZERO, async {
        Ok(crate::verify::verify(job, crate::verify::Part::default(), Some(store)).await)
    })
    .await?;
    Ok(match verified {
        lease::Leased::Done(outcome) => Some(outcome),
        lease::Leased::Held(_) => None,
    })
}

pub fn instance_id() -> String {
    format!("ferry-{}", uuid::Uuid::new_v4())
}

/// One run, inside a `run` span carrying the job, the trigger and (once
/// known) the run id, so every log line of the run can be found together.
pub async fn run_job(job: &Job, store: &Store, owner: &str, opts: RunOptions) -> JobRun {
    let span = tracing::info_span!("run", job = %job.name, trigger = opts.trigger.as_str(), run_id = tracing::field::Empty);
    run_job_in_span(job, store, owner, opts)
        .instrument(span)
        .await
}

async fn run_job_in_span(job: &Job, store: &Store, owner: &str, opts: RunOptions) -> JobRun {
    let started = Instant::now();
    let mut run = JobRun {
        job: job.name.clone(),
        run_id: None,
        outcome: Outcome::Failed,
        detect: DetectReport::default(),
        sync: SyncReport::default(),
        elapsed: Duration::ZERO,
        error: None,
        busy: None,
        left: QueueCounts::default(),
        schema_changes: Vec::new(),
        rewrite: false,
    };
    if !opts.detect.dry_run {
        crate::metrics::job_running(&job.name, true);
    }
    if let Err(e) = run_leased(job, store, owner, &opts, &mut run).await {
        run.count_progress(&opts.progress);
        run.outcome = Outcome::Failed;
        run.error = Some(e);
    }
    run.elapsed = started.elapsed();
    if !opts.detect.dry_run {
        crate::metrics::job_running(&job.name, false);
        if run.run_id.is_some() {
            crate::metrics::queue(&job.name, run.left.by_state(), run.left.oldest_pending_ms);
        }
        crate::metrics::run_finished(
            &job.name,
            opts.trigger.as_str(),
            run.outcome.metric_label(),
            run.elapsed.as_secs_f64(),
        );
    }
    run
}

async fn run_leased(
    job: &Job,
    store: &Store,
    owner: &str,
    opts: &RunOptions,
    run: &mut JobRun,
) -> Result<(), RunError> {
    if job.source.tables.is_some() {
        return Err(schema::expand::unexpanded(job).await.into());
    }
    if opts.detect.dry_run {
        return plan_run(job, store, opts, run).await;
    }
    store.ensure_job(&job.name).await?;
    let run_id = store
        .start_run(&job.name, opts.trigger.as_str(), opts.scheduled_for)
        .await?;
    run.run_id = Some(run_id);
    tracing::Span::current().record("run_id", run_id);
    let mut rewriting = opts.clone();
    let result = match prepare_schema(job, store, run).await {
        Ok((job, unreachable)) => {
            let job = &job;
            // New fields or rules: every row again, under them.
            let opts = if run.rewrite {
                tracing::warn!(job = %job.name, "the job's fields or rules changed since its rows were written: this run writes every row again under the new ones");
                rewriting.detect.full = true;
                &rewriting
            } else {
                opts
            };
            let first = Pass {
                lease_wait: Duration::ZERO,
                source_down: unreachable.as_ref(),
            };
            let mut result = detect_and_sync(job, store, owner, run_id, opts, run, first).await;
            // The holder of the lease has often finished detecting by the time this
            // run has helped drain its queue: then this run detects after all,
            // waiting a moment for a detection that is about to end (another run
            // like this one, in its own second pass).
            if result.is_ok() && run.detect_skipped() && !opts.shutdown.is_cancelled() {
                let drained = std::mem::take(&mut run.sync);
                run.busy = None;
                let second = Pass {
                    lease_wait: SECOND_PASS_LEASE_WAIT,
                    ..first
                };
                result = detect_and_sync(job, store, owner, run_id, opts, run, second).await;
                run.sync.absorb(drained);
            }
            // A snapshot whose chunks the drain finished: a last pass queues
            // its deletes and closes it.
            if result.is_ok() && run.detect.snapshot_open && !opts.shutdown.is_cancelled() {
                // Another process that shared the chunks may be closing the
                // snapshot itself: wait a moment for its lease.
                let last = Pass {
                    lease_wait: SECOND_PASS_LEASE_WAIT,
                    ..first
                };
                result = finish_snapshot(job, store, owner, run_id, opts, run, last).await;
            }
            // Every row is queued under the new rules: later runs compare
            // with them. (A failed or skipped detection rewrites next run;
            // so does a resync, which resent only its part.)
            if run.rewrite && result.is_ok() && !run.detect_skipped() && opts.resync.is_none() {
                if let Err(e) = schema::record_rewritten(job, store).await {
                    tracing::warn!(job = %job.name, "could not record the job's new rules; the next run writes every row again: {e}");
                }
            }
            result
        }
        Err(e) => Err(e),
    };
    // A failed run counts what its progress counters saw, chunks' rows too.
    match result.is_err() {
        true => run.count_progress(&opts.progress),
        false => run.count_snapshot_rows(),
    }
    let counts = RunCounts {
        scanned: run.detect.scanned as i64,
        changed: run.detect.changed() as i64,
        synced: run.sync.synced as i64,
        failed: run.failed() as i64,
        conflicts: run.sync.conflicts as i64,
    };
    // What is left decides too: items of earlier runs still awaiting a retry,
    // or dead, mean this job is not in sync.
    match store.queue_counts(&job.name).await {
        Ok(left) => run.left = left,
        Err(e) => tracing::warn!(job = %job.name, "cannot read what is left in the queue: {e}"),
    }
    run.outcome = outcome(run, &result, opts);
    let message = result
        .as_ref()
        .err()
        .map(|e| e.to_string())
        .or_else(|| run.sync.first_error.as_ref().map(|e| e.to_string()))
        .or_else(|| run.explanation());
    store
        .finish_run(run_id, run.outcome.as_str(), &counts, message.as_deref())
        .await?;
    result
}
