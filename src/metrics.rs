//! Prometheus metrics through the `metrics` facade. The names are a contract
//! dashboards and alerts rely on, each documented in `docs/metrics.md`
//! (`tests/docs.rs` holds the two together); the per-job label is `sync_job` (Prometheus
//! owns `job`). Every
//! series a job has is registered at 0 when the job is loaded, so dashboards
//! and alerts see it before the first event. Label values are only job names
//! and fixed enums, never keys, errors or URLs.
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Run durations: 10 ms … 1 h.
const RUN_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// One batch (detect a chunk, or write a task): 1 ms … 5 min.
const BATCH_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

const TRIGGERS: [&str; 5] = ["schedule", "signal", "manual", "once", "resync"];
const OUTCOMES: [&str; 3] = ["success", "partial", "failed"];
const OPS: [&str; 2] = ["upsert", "delete"];
const FAILURES: [&str; 3] = ["retry", "reject", "dead"];
/// The `result` label of `ferry_snapshot_chunks_total`.
pub const CHUNK_RESULTS: [&str; 3] = ["ok", "retry", "dead"];
const STAGES: [&str; 2] = ["detect", "sync"];
const SKIP_REASONS: [&str; 2] = ["ignored_delete", "unchanged"];
pub const QUEUE_STATES: [&str; 4] = ["pending", "running", "failed", "dead"];

/// Installs the global recorder once per process and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("ferry_run_duration_seconds".to_string()),
                    RUN_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("ferry_batch_duration_seconds".to_string()),
                        BATCH_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("ferry_verify_duration_seconds".to_string()),
                        RUN_BUCKETS,
                    )
                })
                // Static, well-formed buckets: building cannot fail.
                .expect("valid buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Only this function installs a recorder, and only once.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            gauge!("ferry_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

fn describe() {
    describe_verify();
    describe_counter!(
        "ferry_runs_total",
        "Runs of a job, by what started them and how they ended."
    );
    describe_histogram!(
        "ferry_run_duration_seconds",
        Unit::Seconds,
        "Wall time of a run: detect and drain."
    );
    describe_counter!(
        "ferry_objects_scanned_total",
        "Objects read from the source by detection."
    );
    describe_counter!(
        "ferry_changes_detected_total",
        "Changes detected and queued, by operation."
    );
    describe_counter!(
        "ferry_tasks_enqueued_total",
        "Queue tasks created by detection."
    );
    describe_counter!(
        "ferry_items_synced_total",
        "Items written to the target, by operation."
    );
    describe_counter!(
        "ferry_items_failed_total",
        "Items that failed: retry (transient), reject (refused by the target), dead (given up)."
    );
    describe_counter!(
        "ferry_items_skipped_total",
        "Items not written: ignored_delete (deletes = \"ignore\"), unchanged (the target row already held them; also counted as synced)."
    );
    describe_counter!(
        "ferry_schema_changes_total",
        "Changes ferry made to a target table because the source's columns changed: column_added, type_widened."
    );
    describe_counter!(
        "ferry_snapshot_chunks_total",
        "Chunk tasks of snapshots (first runs, --full, resync), by result: ok, retry (read again later), dead (attempts spent)."
    );
    describe_counter!(
        "ferry_snapshot_rows_total",
        "Rows written by snapshot chunk tasks."
    );
    describe_counter!(
        "ferry_items_superseded_total",
        "Items dropped because a newer version of their key was detected."
    );
    describe_counter!(
        "ferry_conflicts_total",
        "Fields both sides changed since ferry's last write; the owner rule decided."
    );
    describe_histogram!(
        "ferry_batch_duration_seconds",
        Unit::Seconds,
        "Time to detect one chunk or to write one task."
    );
    describe_gauge!("ferry_queue_tasks", "Queue tasks by state.");
    describe_gauge!(
        "ferry_queue_oldest_pending_timestamp_seconds",
        "Creation time of the oldest pending task (0: none)."
    );
    describe_gauge!(
        "ferry_last_success_timestamp_seconds",
        "End of the job's last successful run."
    );
    describe_gauge!("ferry_job_paused", "1 while the job is paused.");
    describe_gauge!(
        "ferry_job_running",
        "1 while a run of the job is in progress in this process."
    );
    describe_counter!(
        "ferry_config_reloads_total",
        "SIGHUP configuration reloads, by result."
    );
    describe_gauge!(
        "ferry_config_last_reload_successful",
        "1 if the last reload was accepted."
    );
    describe_gauge!(
        "ferry_config_last_reload_success_timestamp_seconds",
        "Time of the last accepted (re)load."
    );
    describe_gauge!(
        "ferry_build_info",
        "Always 1; the version label tells the build."
    );
}

fn describe_verify() {
    describe_gauge!(
        "ferry_verify_rows",
        "Rows of the job's last verify, by result: equal, missing, extra, different (missing and extra only where the job's rules do not allow them)."
    );
    describe_gauge!(
        "ferry_verify_last_run_timestamp_seconds",
        "When the job's last verify finished."
    );
    describe_histogram!(
        "ferry_verify_duration_seconds",
        Unit::Seconds,
        "Wall time of each verify."
    );
}

/// Registers every series of a job at 0.
pub fn register_job(job: &str) {
    let j = || job.to_string();
    for trigger in TRIGGERS {
        for outcome in OUTCOMES {
            counter!("ferry_runs_total", "sync_job" => j(), "trigger" => trigger, "outcome" => outcome).absolute(0);
        }
    }
    let _ = histogram!("ferry_run_duration_seconds", "sync_job" => j());
    counter!("ferry_objects_scanned_total", "sync_job" => j()).absolute(0);
    counter!("ferry_tasks_enqueued_total", "sync_job" => j()).absolute(0);
    counter!("ferry_items_superseded_total", "sync_job" => j()).absolute(0);
    counter!("ferry_conflicts_total", "sync_job" => j()).absolute(0);
    for op in OPS {
        counter!("ferry_changes_detected_total", "sync_job" => j(), "op" => op).absolute(0);
        counter!("ferry_items_synced_total", "sync_job" => j(), "op" => op).absolute(0);
    }
    for result in FAILURES {
        counter!("ferry_items_failed_total", "sync_job" => j(), "result" => result).absolute(0);
    }
    for reason in SKIP_REASONS {
        counter!("ferry_items_skipped_total", "sync_job" => j(), "reason" => reason).absolute(0);
    }
    for result in CHUNK_RESULTS {
        counter!("ferry_snapshot_chunks_total", "sync_job" => j(), "result" => result).absolute(0);
    }
    counter!("ferry_snapshot_rows_total", "sync_job" => j()).absolute(0);
    for change in SCHEMA_CHANGES {
        counter!("ferry_schema_changes_total", "sync_job" => j(), "change" => change).absolute(0);
    }
    for stage in STAGES {
        let _ = histogram!("ferry_batch_duration_seconds", "sync_job" => j(), "stage" => stage);
    }
    for state in QUEUE_STATES {
        gauge!("ferry_queue_tasks", "sync_job" => j(), "state" => state).set(0.0);
    }
    gauge!("ferry_queue_oldest_pending_timestamp_seconds", "sync_job" => j()).set(0.0);
    gauge!("ferry_last_success_timestamp_seconds", "sync_job" => j()).set(0.0);
    gauge!("ferry_job_paused", "sync_job" => j()).set(0.0);
    gauge!("ferry_job_running", "sync_job" => j()).set(0.0);
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

pub fn job_running(job: &str, running: bool) {
    gauge!("ferry_job_running", "sync_job" => job.to_string()).set(flag(running));
}

pub fn job_paused(job: &str, paused: bool) {
    gauge!("ferry_job_paused", "sync_job" => job.to_string()).set(flag(paused));
}

pub fn run_finished(job: &str, trigger: &str, outcome: &str, seconds: f64) {
    counter!("ferry_runs_total", "sync_job" => job.to_string(), "trigger" => trigger.to_string(), "outcome" => outcome.to_string()).increment(1);
    histogram!("ferry_run_duration_seconds", "sync_job" => job.to_string()).record(seconds);
    if outcome == "success" {
        gauge!("ferry_last_success_timestamp_seconds", "sync_job" => job.to_string())
            .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
    }
}

/// What one verify found (see [`verified`]).
pub struct Verified {
    pub equal: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    pub seconds: f64,
}

pub const VERIFY_RESULTS: [&str; 4] = ["equal", "missing", "extra", "different"];

/// Registers a scheduled verify's series at 0 (never verified yet: the
/// last-run time is 0).
pub fn register_verify(job: &str) {
    for result in VERIFY_RESULTS {
        gauge!("ferry_verify_rows", "sync_job" => job.to_string(), "result" => result).set(0.0);
    }
    gauge!("ferry_verify_last_run_timestamp_seconds", "sync_job" => job.to_string()).set(0.0);
    let _ = histogram!("ferry_verify_duration_seconds", "sync_job" => job.to_string());
}

/// A verify of `job` finished.
pub fn verified(job: &str, v: &Verified) {
    let counts = [v.equal, v.missing, v.extra, v.different];
    for (result, n) in VERIFY_RESULTS.into_iter().zip(counts) {
        gauge!("ferry_verify_rows", "sync_job" => job.to_string(), "result" => result)
            .set(n as f64);
    }
    gauge!("ferry_verify_last_run_timestamp_seconds", "sync_job" => job.to_string())
        .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
    histogram!("ferry_verify_duration_seconds", "sync_job" => job.to_string()).record(v.seconds);
}

/// The end of the job's last successful run, as the state store remembers
/// it (a restarted daemon does not start from "never").
pub fn last_success(job: &str, finished_ms: i64) {
    gauge!("ferry_last_success_timestamp_seconds", "sync_job" => job.to_string())
        .set(finished_ms as f64 / 1000.0);
}

/// One attempt of a snapshot's chunk task ended: `result` is one of
/// [`CHUNK_RESULTS`]; `rows` it wrote.
pub fn snapshot_chunk(job: &str, result: &'static str, rows: u64) {
    counter!("ferry_snapshot_chunks_total", "sync_job" => job.to_string(), "result" => result)
        .increment(1);
    counter!("ferry_snapshot_rows_total", "sync_job" => job.to_string()).increment(rows);
}

/// A snapshot queued `chunks` chunk tasks for `rows` rows of the source:
/// changes detected and tasks enqueued, as a detection's are counted.
pub fn snapshot_planned(job: &str, rows: u64, chunks: u64) {
    counter!("ferry_changes_detected_total", "sync_job" => job.to_string(), "op" => "upsert")
        .increment(rows);
    counter!("ferry_tasks_enqueued_total", "sync_job" => job.to_string()).increment(chunks);
}

pub fn objects_scanned(job: &str, n: u64) {
    counter!("ferry_objects_scanned_total", "sync_job" => job.to_string()).increment(n);
}

/// One detection chunk committed.
pub fn chunk_detected(
    job: &str,
    scanned: u64,
    upserts: u64,
    deletes: u64,
    task: bool,
    elapsed: Duration,
) {
    objects_scanned(job, scanned);
    counter!("ferry_changes_detected_total", "sync_job" => job.to_string(), "op" => "upsert")
        .increment(upserts);
    counter!("ferry_changes_detected_total", "sync_job" => job.to_string(), "op" => "delete")
        .increment(deletes);
    counter!("ferry_tasks_enqueued_total", "sync_job" => job.to_string())
        .increment(u64::from(task));
    batch_duration(job, "detect", elapsed);
}

pub fn batch_duration(job: &str, stage: &'static str, elapsed: Duration) {
    histogram!("ferry_batch_duration_seconds", "sync_job" => job.to_string(), "stage" => stage)
        .record(elapsed.as_secs_f64());
}

pub fn items_synced(job: &str, upserts: u64, deletes: u64) {
    counter!("ferry_items_synced_total", "sync_job" => job.to_string(), "op" => "upsert")
        .increment(upserts);
    counter!("ferry_items_synced_total", "sync_job" => job.to_string(), "op" => "delete")
        .increment(deletes);
}

pub fn items_failed(job: &str, retry: u64, reject: u64, dead: u64) {
    for (result, n) in [("retry", retry), ("reject", reject), ("dead", dead)] {
        counter!("ferry_items_failed_total", "sync_job" => job.to_string(), "result" => result)
            .increment(n);
    }
}

/// Items not written: deletes `deletes = "ignore"` kept from the target,
/// and written items that left the target row as it was (those also count
/// as synced: the target holds them).
pub fn items_skipped(job: &str, ignored_deletes: u64, unchanged: u64) {
    for (reason, n) in [
        ("ignored_delete", ignored_deletes),
        ("unchanged", unchanged),
    ] {
        counter!("ferry_items_skipped_total", "sync_job" => job.to_string(), "reason" => reason)
            .increment(n);
    }
}

/// Label values of `ferry_schema_changes_total`.
pub const SCHEMA_CHANGES: [&str; 2] = ["column_added", "type_widened"];

pub fn schema_changed(job: &str, change: &'static str) {
    counter!("ferry_schema_changes_total", "sync_job" => job.to_string(), "change" => change)
        .increment(1);
}

pub fn items_superseded(job: &str, n: u64) {
    counter!("ferry_items_superseded_total", "sync_job" => job.to_string()).increment(n);
}

/// The queue of a job as the state store has it now: tasks by state
/// (`pending`, `running`, `failed`, `dead`) and the oldest pending one's
/// due time (unix ms).
pub fn queue(job: &str, tasks: [(&'static str, i64); 4], oldest_pending_ms: Option<i64>) {
    for (state, n) in tasks {
        gauge!("ferry_queue_tasks", "sync_job" => job.to_string(), "state" => state).set(n as f64);
    }
    let oldest = oldest_pending_ms.map_or(0.0, |ms| ms as f64 / 1000.0);
    gauge!("ferry_queue_oldest_pending_timestamp_seconds", "sync_job" => job.to_string())
        .set(oldest);
}

/// A SIGHUP reload: accepted or rejected.
pub fn config_reload(ok: bool) {
    counter!("ferry_config_reloads_total", "result" => if ok { "ok" } else { "rejected" })
        .increment(1);
    gauge!("ferry_config_last_reload_successful").set(flag(ok));
    if ok {
        gauge!("ferry_config_last_reload_success_timestamp_seconds")
            .set(chrono::Utc::now().timestamp() as f64);
    }
}

/// The reload series at their start values, for a process that just loaded its config.
pub fn register_config() {
    for result in ["ok", "rejected"] {
        counter!("ferry_config_reloads_total", "result" => result).absolute(0);
    }
    gauge!("ferry_config_last_reload_successful").set(1.0);
    gauge!("ferry_config_last_reload_success_timestamp_seconds")
        .set(chrono::Utc::now().timestamp() as f64);
}

pub fn conflicts(job: &str, n: u64) {
    counter!("ferry_conflicts_total", "sync_job" => job.to_string()).increment(n);
}
