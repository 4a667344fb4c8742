//! Commands that run jobs: run --once, plan, migrate.
use std::collections::BTreeSet;
use std::io::IsTerminal;

use super::{load_config, open_store, select_jobs, state_url, Cli, ExitCode};
use crate::config::Config;
use crate::detect::DetectOptions;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use tokio_util::sync::CancellationToken;

use crate::progress::Progress;
use crate::runner::{self, JobRun, RunOptions, Trigger};
use crate::schedule::{Daemon, Signals};
use crate::state::StateError;
use crate::state::Store;

pub async fn migrate(cli: &Cli) -> ExitCode {
    let config = load_config(cli).ok();
    let url = state_url(cli, config.as_ref());
    match open_store(&url).await {
        Ok(store) => {
            println!("state store {} is up to date", crate::redact::url(&url));
            store.close().await;
            ExitCode::Ok
        }
        Err(code) => code,
    }
}

pub async fn once(
    cli: &Cli,
    signals: Signals,
    names: &[String],
    full: bool,
    allow_mass_delete: bool,
    pushgateway: Option<&str>,
) -> ExitCode {
    let (config, order) = match selected(cli, names) {
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
    let store = match open_store(&state_url(cli, Some(&config))).await {
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
    let detect = DetectOptions {
        full,
        allow_mass_delete,
        dry_run: false,
    };
    let mut opts = RunOptions::new(Trigger::Once, detect, shutdown.clone());
    opts.retention = config.engine.retention;
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
    print_summary(&runs);
    if let Some(g) = &gateway {
        crate::push::push(g, &crate::push::group(&order), &metrics).await;
    }
    match stop_signal.get() {
        Some(signal) => signal.exit_code(),
        None => exit_code(&runs),
    }
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
            let (scanned, changed, synced) = progress.get();
            shown.set_message(format!(
                "{scanned} scanned, {changed} changed, {synced} synced"
            ));
            shown.tick();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Some((bar, ticker))
}

/// `ferry run`: the daemon.
pub async fn daemon(cli: &Cli, signals: Signals, grace: Duration) -> ExitCode {
    let config = match load_config(cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let store = match open_store(&state_url(cli, Some(&config))).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let metrics = crate::metrics::install();
    Daemon::new(config, store, metrics)
        .run(signals, grace)
        .await
}

/// `ferry trigger JOB...`: ask the daemons on this state store to run jobs now.
pub async fn trigger(cli: &Cli, names: &[String], wait: bool) -> ExitCode {
    let config = match load_config(cli) {
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
    let store = match open_store(&state_url(cli, Some(&config))).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let code = request_and_wait(&store, names, wait)
        .await
        .unwrap_or_else(|e| {
            eprintln!("ferry: {e}");
            ExitCode::Unavailable
        });
    store.close().await;
    code
}

async fn request_and_wait(
    store: &Store,
    names: &[String],
    wait: bool,
) -> Result<ExitCode, StateError> {
    let mut requests = Vec::new();
    for name in names {
        let id = store.request_trigger(name).await?;
        println!("requested a run of {name} (request {id})");
        requests.push(id);
    }
    let mut codes = Vec::new();
    for id in requests.into_iter().filter(|_| wait) {
        loop {
            match store.trigger_status(id).await? {
                Some(s) if s.state == "done" => {
                    println!("{}: {}", s.job, s.outcome.as_deref().unwrap_or("done"));
                    codes.push(match s.exit_code {
                        Some(0) => ExitCode::Ok,
                        Some(75) => ExitCode::Unavailable,
                        _ => ExitCode::Failed,
                    });
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    Ok(ExitCode::worst(codes))
}

pub async fn plan(cli: &Cli, names: &[String]) -> ExitCode {
    let (config, order) = match selected(cli, names) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let store = match open_for_reading(&state_url(cli, Some(&config))).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let detect = DetectOptions {
        dry_run: true,
        ..Default::default()
    };
    let opts = RunOptions::new(Trigger::Manual, detect, CancellationToken::new());
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "JOB", "SCANNED", "INSERT", "UPDATE", "DELETE", "UNCHANGED"
    );
    let mut runs = Vec::new();
    for name in &order {
        let run = runner::run_job(&config.jobs[name], &store, "plan", opts.clone()).await;
        let d = &run.detect;
        println!(
            "{:<24} {:>10} {:>10} {:>10} {:>10} {:>10}",
            run.job, d.scanned, d.inserts, d.updates, d.deletes, d.unchanged
        );
        report_errors(&run);
        runs.push(run);
    }
    store.close().await;
    exit_code(&runs)
}

/// The state store without creating or migrating anything: a plan writes
/// nothing. A SQLite store that does not exist yet reads as empty.
async fn open_for_reading(url: &str) -> Result<Store, ExitCode> {
    let missing_sqlite = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|p| p.split('?').next().unwrap_or(p))
        .is_some_and(|p| !std::path::Path::new(p).exists());
    if missing_sqlite {
        return open_store("sqlite::memory:").await;
    }
    Store::open(url).await.map_err(|e| {
        eprintln!("ferry: {e}");
        ExitCode::Unavailable
    })
}

/// The configuration, and the names of the selected jobs (all when none) in
/// run order: jobs named in another's `after` run first.
fn selected(cli: &Cli, names: &[String]) -> Result<(Config, Vec<String>), ExitCode> {
    let config = load_config(cli)?;
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

fn report_errors(run: &JobRun) {
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

fn print_summary(runs: &[JobRun]) {
    let interactive = std::io::stdout().is_terminal();
    if interactive {
        println!();
    }
    println!(
        "{:<24} {:<9} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10} {:>8} {:>9}",
        "JOB",
        "OUTCOME",
        "SCANNED",
        "CHANGED",
        "SYNCED",
        "FAILED",
        "TIME",
        "SUPERSEDED",
        "WRITES",
        "CONFLICTS"
    );
    for r in runs {
        println!(
            "{:<24} {:<9} {:>10} {:>10} {:>10} {:>10} {:>8.2}s {:>10} {:>8} {:>9}",
            r.job,
            r.outcome.as_str(),
            r.detect.scanned,
            r.detect.changed(),
            r.sync.synced,
            r.failed(),
            r.elapsed.as_secs_f64(),
            r.sync.superseded,
            r.sync.writes,
            r.sync.conflicts
        );
    }
    for r in runs.iter().filter(|r| r.sync.unchanged > 0) {
        println!(
            "{}: {} item(s) left the target row as it was (nothing to change)",
            r.job, r.sync.unchanged
        );
    }
    for r in runs.iter().filter(|r| r.sync.mirrored > 0) {
        println!(
            "{}: mirror removed {} target row(s) whose key the source does not have",
            r.job, r.sync.mirrored
        );
    }
}

fn exit_code(runs: &[JobRun]) -> ExitCode {
    ExitCode::worst(runs.iter().map(JobRun::exit_code))
}
