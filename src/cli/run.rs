//! Commands that run jobs: run --once, plan, migrate.
use std::collections::BTreeSet;
use std::io::IsTerminal;

use super::{
    load_config, load_jobs, open_store, select_jobs, state_url, Cli, ExitCode, OutputFormat,
};
use crate::config::Config;
use crate::connectors::Subset;
use crate::detect::DetectOptions;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use tokio_util::sync::CancellationToken;

use crate::progress::Progress;
use crate::runner::{self, JobRun, RunOptions, Trigger};
use crate::schedule::{Daemon, Received, Signals};
use crate::state::StateError;
use crate::state::Store;

pub async fn migrate(cli: &Cli) -> ExitCode {
    let config = load_config(cli).ok();
    let url = state_url(cli, config.as_ref());
    match open_store(&url, config.as_ref()).await {
        Ok(store) => {
            out!("state store {} is up to date", crate::redact::url(&url));
            store.close().await;
            ExitCode::Ok
        }
        Err(code) => code,
    }
}

/// `run --once` (and `resync`, with the part of the source to resend).
pub async fn once(
    cli: &Cli,
    signals: Signals,
    names: &[String],
    detect: DetectOptions,
    resync: Option<Arc<Subset>>,
    pushgateway: Option<&str>,
) -> ExitCode {
    let (config, order) = match selected(cli, names).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let metrics = crate::metrics::install();
    for name in &order {
        crate::metrics::register_job(name);
    }
    let gateway = pushgateway
        .map(str::to_string)
        .or_else(|| config.engine.pushgateway.clone());
    let store = match open_store(&state_url(cli, Some(&config)), Some(&config)).await {
        Ok(s) => s,
        Err(code) => {
            if let Some(g) = &gateway {
                crate::push::push(g, &crate::push::group(&order), &metrics).await;
            }
            return code;
        }
    };
    let owner = runner::instance_id();
    let shutdown = CancellationToken::new();
    let stop_signal = signals.drain_on_stop(shutdown.clone());
    let trigger = match resync {
        Some(_) => Trigger::Resync,
        None => Trigger::Once,
    };
    let mut opts = RunOptions::new(trigger, detect, shutdown.clone());
    opts.retention = config.engine.retention;
    opts.resync = resync;
    let mut runs = Vec::new();
    for name in &order {
        if shutdown.is_cancelled() {
            break;
        }
        let mut job_opts = opts.clone();
        job_opts.progress = Default::default();
        let bar = progress_bar(name, &job_opts.progress);
        let run = runner::run_job(&config.jobs[name], &store, &owner, job_opts).await;
        if let Some((bar, ticker)) = bar {
            ticker.abort();
            bar.finish_and_clear();
        }
        report_errors(&run);
        runs.push(run);
    }
    store.close().await;
    let stopped_by = stop_signal.get().copied();
    match cli.output {
        OutputFormat::Json => super::inspect::print_json(&serde_json::json!({
            "stopped_by": stopped_by.map(signal_name),
            "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => print_summary(&runs, stopped_by),
    }
    if let Some(g) = &gateway {
        crate::push::push(g, &crate::push::group(&order), &metrics).await;
    }
    match stopped_by {
        Some(signal) => signal.exit_code(),
        None => exit_code(&runs),
    }
}

fn signal_name(signal: Received) -> &'static str {
    match signal {
        Received::Interrupt => "SIGINT",
        Received::Terminate => "SIGTERM",
        Received::RunAll => "SIGUSR1",
        Received::Reload => "SIGHUP",
    }
}

/// One run as `run --once --output json` and `plan --output json` print it.
pub(super) fn run_json(r: &JobRun) -> serde_json::Value {
    let d = &r.detect;
    serde_json::json!({
        "job": r.job,
        "run_id": r.run_id,
        "outcome": r.outcome.as_str(),
        "exit_code": r.exit_code().code(),
        "seconds": r.elapsed.as_secs_f64(),
        "scanned": d.scanned,
        "read_whole": d.read_whole,
        "read_hashes": d.read_hashes,
        "changed": d.changed(),
        "inserts": d.inserts,
        "updates": d.updates,
        "deletes": d.deletes,
        "unchanged": d.unchanged,
        "refused_deletes": r.refused_deletes(),
        "synced": r.sync.synced,
        "failed": r.failed(),
        "skipped": r.sync.skipped,
        "superseded": r.sync.superseded,
        "writes": r.sync.writes,
        "conflicts": r.sync.conflicts,
        "left_unchanged": r.sync.unchanged,
        "mirrored": r.sync.mirrored,
        "left_queued_items": r.left.open_items,
        "queue": {
            "pending": r.left.pending, "running": r.left.running,
            "failed": r.left.failed, "dead": r.left.dead,
        },
        "busy_holder": r.busy.as_ref().map(|h| serde_json::json!({
            "host": h.host, "pid": h.pid, "since": h.since, "expires_at": h.expires_at,
        })),
        "schema_changes": r.schema_changes,
        "keys": d.samples,
        "rewrite": r.rewrite,
        "snapshot": d.snapshot_plan.map(|(chunks, rows)| serde_json::json!({"chunks": chunks, "rows": rows})),
        "message": r.error.as_ref().map(|e| e.to_string()).or_else(|| r.explanation()),
    })
}

/// A spinner with the run's counters, when stderr is a terminal; plain
/// output (the summary) otherwise.
fn progress_bar(
    job: &str,
    progress: &Arc<Progress>,
) -> Option<(ProgressBar, tokio::task::JoinHandle<()>)> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    // A constant, valid template: parsing cannot fail.
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} [{elapsed}]")
            .expect("valid template"),
    );
    bar.set_prefix(job.to_string());
    let (shown, progress) = (bar.clone(), progress.clone());
    let ticker = tokio::spawn(async move {
        loop {
            shown.set_message(progress.message(shown.elapsed()));
            shown.tick();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Some((bar, ticker))
}

/// `ferry run`: the daemon.
pub async fn daemon(cli: &Cli, signals: Signals, grace: Duration) -> ExitCode {
    let config = match load_jobs(cli).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let store = match open_store(&state_url(cli, Some(&config)), Some(&config)).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let metrics = crate::metrics::install();
    Daemon::new(config, store, metrics)
        .run(signals, grace)
        .await
}

/// `ferry trigger JOB...`: ask the daemons on this state store to run jobs now.
pub async fn trigger(
    cli: &Cli,
    signals: Signals,
    names: &[String],
    wait: bool,
    timeout: Option<Duration>,
) -> ExitCode {
    let config = match load_jobs(cli).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    if names.is_empty() {
        let jobs: Vec<&str> = config.jobs.keys().map(String::as_str).collect();
        eprintln!(
            "ferry: name the job(s) to trigger; jobs: {}",
            jobs.join(", ")
        );
        return ExitCode::Usage;
    }
    if let Err(code) = select_jobs(&config, names) {
        return code;
    }
    let store = match open_store(&state_url(cli, Some(&config)), Some(&config)).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let stop = CancellationToken::new();
    let stopped_by = signals.drain_on_stop(stop.clone());
    let waiting = request_and_wait(&store, names, wait, &stop);
    let code = match timeout {
        Some(limit) => match tokio::time::timeout(limit, waiting).await {
            Ok(result) => result,
            Err(_) => {
                eprintln!(
                    "ferry: still waiting after {}; the runs go on in the daemon (ferry status)",
                    humantime::format_duration(limit)
                );
                Ok(ExitCode::Unavailable)
            }
        },
        None => waiting.await,
    }
    .unwrap_or_else(|e| {
        eprintln!("ferry: {e}");
        ExitCode::Unavailable
    });
    store.close().await;
    match stopped_by.get() {
        Some(signal) => signal.exit_code(),
        None => code,
    }
}

/// No daemon is running on this state store: nobody would answer a trigger.
const NO_DAEMON: &str =
    "no daemon is running on this state store; start `ferry run`, or use `ferry run --once JOB`";

async fn request_and_wait(
    store: &Store,
    names: &[String],
    wait: bool,
    stop: &CancellationToken,
) -> Result<ExitCode, StateError> {
    if store.live_daemons().await?.is_empty() {
        eprintln!("ferry: {NO_DAEMON}");
        return Ok(ExitCode::Unavailable);
    }
    let mut requests = Vec::new();
    for name in names {
        let id = store.request_trigger(name).await?;
        out!("requested a run of {name} (request {id})");
        requests.push(id);
    }
    let mut codes = Vec::new();
    for id in requests.into_iter().filter(|_| wait) {
        loop {
            let status = store.trigger_status(id).await?;
            match status {
                Some(s) if s.state == "done" => {
                    out!("{}: {}", s.job, s.outcome.as_deref().unwrap_or("done"));
                    if let Some(message) = s.message.filter(|_| s.exit_code != Some(0)) {
                        eprintln!("ferry: {}: {message}", s.job);
                    }
                    codes.push(match s.exit_code {
                        Some(0) => ExitCode::Ok,
                        Some(75) => ExitCode::Unavailable,
                        Some(78) => ExitCode::Config,
                        _ => ExitCode::Failed,
                    });
                    break;
                }
                // Not picked up yet, and the daemons went away meanwhile.
                Some(s) if s.state == "pending" && store.live_daemons().await?.is_empty() => {
                    eprintln!("ferry: {}: {NO_DAEMON}", s.job);
                    codes.push(ExitCode::Unavailable);
                    break;
                }
                _ => {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(ExitCode::worst(codes)),
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
    }
    Ok(ExitCode::worst(codes))
}

/// `plan` (and `resync --dry-run`, with the part of the source to resend).
pub async fn plan(
    cli: &Cli,
    names: &[String],
    detect: DetectOptions,
    resync: Option<Arc<Subset>>,
) -> ExitCode {
    let (config, order) = match selected(cli, names).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let store = match open_for_reading(&state_url(cli, Some(&config)), Some(&config)).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut opts = RunOptions::new(Trigger::Manual, detect, CancellationToken::new());
    opts.resync = resync;
    let text = cli.output == OutputFormat::Text;
    if text {
        out!(
            "{:<24} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "JOB",
            "SCANNED",
            "INSERT",
            "UPDATE",
            "DELETE",
            "UNCHANGED"
        );
    }
    let (mut runs, mut plans) = (Vec::new(), Vec::new());
    for name in &order {
        let mut job_opts = opts.clone();
        job_opts.progress = Default::default();
        let job = &config.jobs[name];
        let run = runner::run_job(job, &store, "plan", job_opts).await;
        let d = &run.detect;
        let field_changes = update_field_changes(job, &d.samples.update_items).await;
        if text {
            print_plan(&run, &field_changes);
        }
        report_errors(&run);
        let mut json = run_json(&run);
        json["update_fields"] = serde_json::Value::Object(
            field_changes
                .iter()
                .map(|(key, changes)| (key.clone(), serde_json::json!(changes)))
                .collect(),
        );
        plans.push(json);
        runs.push(run);
    }
    store.close().await;
    if !text {
        super::inspect::print_json(&serde_json::json!({
            "plans": plans,
        }));
    }
    exit_code(&runs)
}

/// One job's line of `ferry plan`, with the schema changes, the rewrite,
/// the sampled keys and what the sampled updates change.
fn print_plan(run: &runner::JobRun, field_changes: &[(String, Vec<crate::sync::FieldChange>)]) {
    let d = &run.detect;
    out!(
        "{:<24} {:>10} {:>10} {:>10} {:>10} {:>10}",
        run.job,
        d.scanned,
        d.inserts,
        d.updates,
        d.deletes,
        d.unchanged
    );
    for change in &run.schema_changes {
        out!(
            "  would {}: {}",
            change.sentence(false),
            change.statements.join("; ")
        );
    }
    if run.rewrite {
        out!("  would write every row again: the job's fields or rules changed since its rows were written");
    }
    if let Some((chunks, rows)) = d.snapshot_plan {
        out!("  would read {rows} row(s) of the source in {chunks} chunk task(s)");
    }
    let s = &d.samples;
    for (kind, keys, total) in [
        ("insert", &s.inserts, d.inserts),
        ("update", &s.updates, d.updates),
        ("delete", &s.deletes, d.deletes),
    ] {
        if !keys.is_empty() {
            let more = total.saturating_sub(keys.len() as u64);
            let more = if more > 0 {
                format!(" … and {more} more")
            } else {
                String::new()
            };
            out!("  {kind} {}{more}", keys.join(" "));
        }
    }
    for (key, changes) in field_changes {
        let list: Vec<String> = changes
            .iter()
            .map(|c| format!("{}: {} → {}", c.field, c.now, c.after))
            .collect();
        match list.is_empty() {
            true => out!("    {key}: no mapped field differs from the target's row"),
            false => out!("    {key}: {}", list.join(", ")),
        }
    }
}

/// What the sampled updates would change in the target's rows, by key;
/// empty when the target cannot read its rows (it says why at debug level).
async fn update_field_changes(
    job: &crate::config::Job,
    items: &[(String, crate::model::Item)],
) -> Vec<(String, Vec<crate::sync::FieldChange>)> {
    if items.is_empty() {
        return vec![];
    }
    let read = match crate::connectors::target(job) {
        Ok(target) => crate::sync::field_changes(job, target.as_ref(), items).await,
        Err(e) => Err(e),
    };
    match read {
        Ok(changes) => changes.unwrap_or_default(),
        Err(e) => {
            tracing::info!(job = %job.name, "the target's rows could not be read to show what updates change: {e}");
            vec![]
        }
    }
}

/// The state store without creating or migrating anything: a plan writes
/// nothing. A SQLite store that does not exist yet reads as empty.
async fn open_for_reading(url: &str, config: Option<&Config>) -> Result<Store, ExitCode> {
    let missing_sqlite = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|p| p.split('?').next().unwrap_or(p))
        .is_some_and(|p| !std::path::Path::new(p).exists());
    if missing_sqlite {
        return open_store("sqlite::memory:", None).await;
    }
    let store = Store::open_within(url, super::state_connect_timeout(config))
        .await
        .map_err(super::state_failed)?;
    // A store no run has set up yet holds nothing: plan against an empty one.
    if !store.has_tables().await.map_err(super::state_failed)? {
        store.close().await;
        return open_store("sqlite::memory:", None).await;
    }
    Ok(store)
}

/// The configuration, and the names of the selected jobs (all when none) in
/// run order: jobs named in another's `after` run first.
async fn selected(cli: &Cli, names: &[String]) -> Result<(Config, Vec<String>), ExitCode> {
    let config = load_jobs(cli).await?;
    let jobs = select_jobs(&config, names)?;
    let wanted: BTreeSet<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    let mut order: Vec<String> = Vec::with_capacity(jobs.len());
    // Config validation rejects `after` cycles, so every pass places a job.
    while order.len() < jobs.len() {
        for job in &jobs {
            let placed = |n: &str| order.iter().any(|o| o == n);
            let ready = job
                .after
                .iter()
                .all(|a| placed(a) || !wanted.contains(a.as_str()));
            if ready && !placed(&job.name) {
                order.push(job.name.clone());
            }
        }
    }
    Ok((config, order))
}

pub(super) fn report_errors(run: &JobRun) {
    if let Some(e) = &run.error {
        eprintln!("error: job {}: {e}", run.job);
    } else if let Some(e) = &run.sync.first_error {
        eprintln!("error: job {}: target {e}", run.job);
    }
    if run.left.failed + run.left.dead > 0 {
        eprintln!(
            "error: job {}: {} task(s) awaiting a retry and {} dead in the queue (ferry tasks --job {})",
            run.job, run.left.failed, run.left.dead, run.job
        );
    }
    if let Some(msg) = &run.detect.first_invalid {
        eprintln!(
            "error: job {}: {} objects skipped; {msg}",
            run.job, run.detect.invalid
        );
    }
}

pub(super) fn print_summary(runs: &[JobRun], stopped_by: Option<Received>) {
    let interactive = std::io::stdout().is_terminal();
    if interactive {
        out!();
    }
    out!(
        "{:<24} {:<9} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10} {:>8} {:>9} {:>8}",
        "JOB",
        "OUTCOME",
        "SCANNED",
        "CHANGED",
        "SYNCED",
        "FAILED",
        "TIME",
        "SUPERSEDED",
        "WRITES",
        "CONFLICTS",
        "SKIPPED"
    );
    for r in runs {
        out!(
            "{:<24} {:<9} {:>10} {:>10} {:>10} {:>10} {:>8.2}s {:>10} {:>8} {:>9} {:>8}",
            r.job,
            r.outcome.as_str(),
            r.detect.scanned,
            r.detect.changed(),
            r.sync.synced,
            r.failed(),
            r.elapsed.as_secs_f64(),
            r.sync.superseded,
            r.sync.writes,
            r.sync.conflicts,
            r.sync.skipped
        );
    }
    if let Some(signal) = stopped_by {
        out!(
            "stopped by {}: tasks in flight finished, nothing was lost; what is left stays queued for the next run",
            signal_name(signal)
        );
    }
    for line in runs.iter().filter_map(JobRun::explanation) {
        out!("{line}");
    }
    for r in runs.iter().filter(|r| r.sync.skipped > 0) {
        out!(
            "{}: {} delete(s) skipped: deletes = \"ignore\" keeps them from the target",
            r.job,
            r.sync.skipped
        );
    }
    for r in runs.iter().filter(|r| r.sync.unchanged > 0) {
        out!(
            "{}: {} item(s) left the target row as it was (nothing to change)",
            r.job,
            r.sync.unchanged
        );
    }
    for r in runs.iter().filter(|r| r.sync.mirrored > 0) {
        out!(
            "{}: mirror removed {} target row(s) whose key the source does not have",
            r.job,
            r.sync.mirrored
        );
    }
}

pub(super) fn exit_code(runs: &[JobRun]) -> ExitCode {
    ExitCode::worst(runs.iter().map(JobRun::exit_code))
}
