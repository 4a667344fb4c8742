//! Commands that run jobs: run --once, plan, migrate.
use std::collections::BTreeSet;
use std::io::IsTerminal;

use super::{load_config, open_store, select_jobs, state_url, Cli, ExitCode};
use crate::config::Config;
use crate::detect::DetectOptions;
use crate::runner::{self, JobRun, Outcome, RunOptions, Trigger};
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

pub async fn once(cli: &Cli, names: &[String], full: bool, allow_mass_delete: bool) -> ExitCode {
    let (config, order) = match selected(cli, names) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let store = match open_store(&state_url(cli, Some(&config))).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let owner = runner::instance_id();
    let opts = RunOptions {
        trigger: Trigger::Once,
        detect: DetectOptions {
            full,
            allow_mass_delete,
            dry_run: false,
        },
    };
    let mut runs = Vec::new();
    for name in &order {
        let run = runner::run_job(&config.jobs[name], &store, &owner, opts).await;
        report_errors(&run);
        runs.push(run);
    }
    store.close().await;
    print_summary(&runs);
    exit_code(&runs)
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
    let opts = RunOptions {
        trigger: Trigger::Manual,
        detect: DetectOptions {
            dry_run: true,
            ..Default::default()
        },
    };
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "JOB", "SCANNED", "INSERT", "UPDATE", "DELETE", "UNCHANGED"
    );
    let mut runs = Vec::new();
    for name in &order {
        let run = runner::run_job(&config.jobs[name], &store, "plan", opts).await;
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
        "{:<24} {:<9} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "JOB", "OUTCOME", "SCANNED", "CHANGED", "SYNCED", "FAILED", "TIME"
    );
    for r in runs {
        println!(
            "{:<24} {:<9} {:>10} {:>10} {:>10} {:>10} {:>8.2}s",
            r.job,
            r.outcome.as_str(),
            r.detect.scanned,
            r.detect.changed(),
            r.sync.synced,
            r.failed(),
            r.elapsed.as_secs_f64()
        );
    }
}

/// 75 when a system was unreachable (retry later), 1 when items or runs
/// failed, 0 when everything synced.
fn exit_code(runs: &[JobRun]) -> ExitCode {
    if runs
        .iter()
        .any(|r| r.error.as_ref().is_some_and(|e| e.is_unreachable()))
    {
        ExitCode::Unavailable
    } else if runs
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Failed | Outcome::Partial))
    {
        ExitCode::Failed
    } else {
        ExitCode::Ok
    }
}
