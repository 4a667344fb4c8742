//! Prometheus metrics through the `metrics` facade. Names are the contract in
//! DESIGN.md; the per-job label is `sync_job` (Prometheus owns `job`). Every
//! series a job has is registered at 0 when the job is loaded.
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Run durations: 10 ms … 1 h.
const RUN_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Installs the global recorder once per process and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".to_string()),
                    RUN_BUCKETS,
                )
                // Static, well-formed buckets: building cannot fail.
                .expect("valid buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Only this function installs a recorder, and only once.
            let _ = metrics::set_global_recorder(recorder);
            metrics::gauge!("ferry_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

/// Registers a job's series at 0, so dashboards see them before any event.
pub fn register_job(job: &str) {
    let job = job.to_string();
    metrics::gauge!("ferry_job_running", "sync_job" => job.clone()).set(0.0);
    metrics::gauge!("ferry_job_paused", "sync_job" => job).set(0.0);
}

pub fn job_running(job: &str, running: bool) {
    metrics::gauge!("ferry_job_running", "sync_job" => job.to_string()).set(if running {
        1.0
    } else {
        0.0
    });
}

pub fn run_finished(job: &str, trigger: &str, outcome: &str, seconds: f64) {
    metrics::counter!("ferry_runs_total", "sync_job" => job.to_string(), "trigger" => trigger.to_string(), "outcome" => outcome.to_string()).increment(1);
    metrics::histogram!("ferry_run_duration_seconds", "sync_job" => job.to_string())
        .record(seconds);
}

/// A SIGHUP reload: accepted or rejected.
pub fn config_reload(ok: bool) {
    metrics::counter!("ferry_config_reloads_total", "result" => if ok { "ok" } else { "rejected" })
        .increment(1);
    metrics::gauge!("ferry_config_last_reload_successful").set(if ok { 1.0 } else { 0.0 });
    if ok {
        metrics::gauge!("ferry_config_last_reload_success_timestamp_seconds")
            .set(chrono::Utc::now().timestamp() as f64);
    }
}

/// The reload series at their start values, for a daemon that just loaded its config.
pub fn register_config() {
    for result in ["ok", "rejected"] {
        metrics::counter!("ferry_config_reloads_total", "result" => result).absolute(0);
    }
    metrics::gauge!("ferry_config_last_reload_successful").set(1.0);
    metrics::gauge!("ferry_config_last_reload_success_timestamp_seconds")
        .set(chrono::Utc::now().timestamp() as f64);
}

pub fn job_paused(job: &str, paused: bool) {
    metrics::gauge!("ferry_job_paused", "sync_job" => job.to_string()).set(if paused {
        1.0
    } else {
        0.0
    });
}

pub fn batch_duration(job: &str, stage: &'static str, elapsed: std::time::Duration) {
    metrics::histogram!("ferry_batch_duration_seconds", "sync_job" => job.to_string(), "stage" => stage).record(elapsed.as_secs_f64());
}

pub fn items_synced(job: &str, upserts: u64, deletes: u64) {
    metrics::counter!("ferry_items_synced_total", "sync_job" => job.to_string(), "op" => "upsert")
        .increment(upserts);
    metrics::counter!("ferry_items_synced_total", "sync_job" => job.to_string(), "op" => "delete")
        .increment(deletes);
}

pub fn items_failed(job: &str, retry: u64, reject: u64, dead: u64) {
    for (result, n) in [("retry", retry), ("reject", reject), ("dead", dead)] {
        metrics::counter!("ferry_items_failed_total", "sync_job" => job.to_string(), "result" => result).increment(n);
    }
}

pub fn items_superseded(job: &str, n: u64) {
    metrics::counter!("ferry_items_superseded_total", "sync_job" => job.to_string()).increment(n);
}
