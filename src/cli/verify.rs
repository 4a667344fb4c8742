//! `ferry verify [JOB...] [--keys LO..HI] [--repair] [--output json]`:
//! exit 0 when every job's target matches its source (after the repair,
//! with `--repair`), 1 when one differs, 75 when a system cannot be
//! reached, 78 when a job cannot be verified as configured.
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{load_jobs, open_store, run, state_url, Cli, ExitCode, OutputFormat};
use crate::config::{Config, Job};
use crate::connectors::KeyRange;
use crate::runner::{self, RunOptions, Trigger};
use crate::verify::{self, Kind, Outcome, Part, VerifyError};

/// Compare each job's target with its source, trusting only the two
/// databases: exit 0 when they match, 1 when rows are missing, extra or
/// different.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Only rows matching this SQL predicate, evaluated in both tables
    /// (name columns both have).
    #[arg(long = "where", value_name = "PREDICATE")]
    predicate: Option<String>,
    /// Only keys from LO to HI, both included (as `resync --keys`).
    #[arg(long, value_name = "LO..HI")]
    keys: Option<String>,
    /// Resend the rows found missing or different and delete the extra
    /// ones (under the job's rules, through the normal lane), then verify
    /// again.
    #[arg(long)]
    repair: bool,
    /// Jobs to verify (all when none).
    jobs: Vec<String>,
}

pub async fn verify(cli: &Cli, asked: &VerifyArgs) -> ExitCode {
    let names = &asked.jobs;
    let config = match load_jobs(cli).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let jobs = match super::select_jobs(&config, names) {
        Ok(jobs) => jobs,
        Err(code) => return code,
    };
    // The id maps of jobs whose rows pair through them.
    let store = match jobs.iter().any(|j| verify::needs_state(j)) {
        true => match open_store(&state_url(cli, Some(&config)), Some(&config)).await {
            Ok(store) => Some(store),
            Err(code) => return code,
        },
        false => None,
    };
    let mut codes = Vec::new();
    let mut reports = Vec::new();
    for job in jobs {
        let range = match asked
            .keys
            .as_deref()
            .map(|k| KeyRange::parse(k, job.source.key.len()))
            .transpose()
        {
            Ok(range) => range,
            Err(why) => {
                eprintln!("ferry: verify {}: --keys {why}", job.name);
                return ExitCode::Usage;
            }
        };
        let part = Part {
            keys: range.as_ref(),
            predicate: asked.predicate.as_deref(),
        };
        match verify::verify(job, part, store.as_ref()).await {
            Ok(outcome) if asked.repair && outcome.drifted() => {
                if cli.output == OutputFormat::Text {
                    print_text(&outcome);
                }
                let (code, report) = repaired(cli, &config, job, outcome, part).await;
                codes.push(code);
                reports.push(report);
            }
            Ok(outcome) => {
                codes.push(verdict(&outcome));
                if cli.output == OutputFormat::Text {
                    print_text(&outcome);
                }
                reports.push(serde_json::json!({ "job": job.name, "result": outcome }));
            }
            Err(e) => {
                let code = exit_code(&e);
                codes.push(code);
                match cli.output {
                    OutputFormat::Text => out!("error: job {}: {e}", job.name),
                    OutputFormat::Json => reports.push(serde_json::json!({
                        "job": job.name,
                        "error": e.to_string(),
                        "exit_code": code.code(),
                    })),
                }
                eprintln!("ferry: verify {}: {e}", job.name);
            }
        }
    }
    if let Some(store) = store {
        store.close().await;
    }
    if cli.output == OutputFormat::Json {
        out!("{}", serde_json::json!({ "jobs": reports }));
    }
    ExitCode::worst(codes)
}

fn verdict(outcome: &Outcome) -> ExitCode {
    match outcome.drifted() {
        true => ExitCode::Failed,
        false => ExitCode::Ok,
    }
}

/// Repairs what `before` found through a resync of its keys, then
/// verifies again: the exit code is the second verify's (or the run's,
/// when it failed), the report holds all three.
async fn repaired(
    cli: &Cli,
    config: &Config,
    job: &Job,
    before: Outcome,
    part: Part<'_>,
) -> (ExitCode, serde_json::Value) {
    let mut report = serde_json::json!({ "job": job.name, "result": before });
    let fix = match verify::repair(job, &before) {
        Ok(fix) => fix,
        Err(why) => {
            eprintln!("ferry: verify --repair {}: {why}", job.name);
            report["repair_error"] = why.into();
            return (ExitCode::Failed, report);
        }
    };
    if !before.unmapped.is_empty() {
        eprintln!(
            "ferry: verify --repair {}: {} target row(s) the source lacks are not in the id map, so ferry never wrote them and does not delete them (target keys {}): delete them in the target if they do not belong there",
            job.name,
            before.unmapped.len(),
            before.unmapped.iter().take(verify::FIRST).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let store = match open_store(&state_url(cli, Some(config)), Some(config)).await {
        Ok(store) => store,
        Err(code) => return (code, report),
    };
    let held: Vec<(String, i64, Option<i64>)> =
        fix.held.iter().map(|k| (k.clone(), 0, None)).collect();
    let noted = async {
        store.ensure_job(&job.name).await?;
        store.mark_echo(&job.name, &held, &[]).await
    };
    if let Err(e) = noted.await {
        store.close().await;
        return (super::state_failed(e), report);
    }
    let mut opts = RunOptions::new(
        Trigger::Resync,
        crate::detect::DetectOptions::default(),
        CancellationToken::new(),
    );
    opts.resync = Some(Arc::new(fix.subset));
    let fixed = runner::run_job(job, &store, &runner::instance_id(), opts).await;
    run::report_errors(&fixed);
    let runs = [fixed];
    let run_code = run::exit_code(&runs);
    match cli.output {
        OutputFormat::Text => run::print_summary(&runs, None),
        OutputFormat::Json => report["repair"] = run::run_json(&runs[0]),
    }
    let after = verify::verify(job, part, Some(&store)).await;
    store.close().await;
    match after {
        Ok(after) => {
            let code = ExitCode::worst([run_code, verdict(&after)]);
            if cli.output == OutputFormat::Text {
                out!("after the repair:");
                print_text(&after);
            }
            report["after"] = serde_json::to_value(&after).unwrap_or_default();
            (code, report)
        }
        Err(e) => {
            eprintln!("ferry: verify {} after the repair: {e}", job.name);
            report["error"] = e.to_string().into();
            (exit_code(&e), report)
        }
    }
}

fn exit_code(e: &VerifyError) -> ExitCode {
    match e {
        VerifyError::Refused(_) => ExitCode::Config,
        e if e.connector().is_some_and(|c| c.is_unreachable()) => ExitCode::Unavailable,
        e if e.connector().is_some_and(|c| c.is_refused()) => ExitCode::Config,
        _ => ExitCode::Failed,
    }
}

fn print_text(o: &Outcome) {
    let verdict = match o.drifted() {
        true => "DIFFERENT",
        false => "EQUAL",
    };
    let allowed = |n: u64, allowed: bool| match (n, allowed) {
        (0, _) | (_, false) => String::new(),
        (_, true) => " (allowed by the job's rules)".to_string(),
    };
    out!(
        "{verdict}: job {}: {} source row(s), {} target row(s) in {:.2} s",
        o.job,
        o.source_rows,
        o.target_rows,
        o.seconds
    );
    out!(
        "  equal {}, missing in target {}{}, extra in target {}{}, different {}",
        o.equal,
        o.missing,
        allowed(o.missing, o.missing_allowed),
        o.extra,
        allowed(o.extra, o.extra_allowed),
        o.different
    );
    if !o.fields.is_empty() {
        let fields: Vec<String> = o.fields.iter().map(|(f, n)| format!("{f} ({n})")).collect();
        out!("  fields that differ: {}", fields.join(", "));
    }
    for kind in [Kind::Missing, Kind::Extra, Kind::Different] {
        let keys: Vec<String> = o
            .first
            .iter()
            .filter(|d| d.kind == kind)
            .map(|d| match d.fields.is_empty() {
                true => d.shown_key(),
                false => format!("{} ({})", d.shown_key(), d.fields.join(", ")),
            })
            .collect();
        if !keys.is_empty() {
            let label = match kind {
                Kind::Missing => "missing",
                Kind::Extra => "extra",
                Kind::Different => "different",
            };
            out!("  {label}: {}", keys.join(", "));
        }
    }
    for note in &o.not_compared {
        out!("  not compared: {note}");
    }
}
