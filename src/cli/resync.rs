//! `ferry resync JOB [--where PREDICATE] [--keys LO..HI] [--dry-run]`.
use std::sync::Arc;

use super::{load_jobs, run, Cli, ExitCode};
use crate::config::registry::Reads;
use crate::config::{Detect, Job};
use crate::connectors::{KeyRange, Subset};
use crate::detect::DetectOptions;
use crate::schedule::Signals;

/// What the command line asks to resend.
pub struct Part<'a> {
    pub predicate: Option<&'a str>,
    pub keys: Option<&'a str>,
    pub dry_run: bool,
    pub limit: usize,
    pub allow_mass_delete: bool,
}

pub async fn resync(cli: &Cli, signals: Signals, name: &str, part: Part<'_>) -> ExitCode {
    // Whole-schema jobs expanded, so that one table's job can be named.
    let config = match load_jobs(cli).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Ok(jobs) = super::select_jobs(&config, &[name.to_string()]) else {
        return ExitCode::Usage;
    };
    let subset = match subset(jobs[0], &part) {
        Ok(s) => s,
        Err(why) => {
            eprintln!("ferry: resync {name}: {why}");
            return ExitCode::Usage;
        }
    };
    let names = [name.to_string()];
    let resync = Some(Arc::new(subset));
    if part.dry_run {
        let detect = DetectOptions {
            dry_run: true,
            sample: part.limit,
            allow_mass_delete: part.allow_mass_delete,
            ..Default::default()
        };
        return run::plan(cli, &names, detect, resync).await;
    }
    let detect = DetectOptions {
        allow_mass_delete: part.allow_mass_delete,
        ..Default::default()
    };
    run::once(cli, signals, &names, detect, resync, None).await
}

/// The part of `job`'s source the command line names, or why it cannot
/// be re-read that way.
fn subset(job: &Job, part: &Part<'_>) -> Result<Subset, String> {
    let reads = crate::connectors::REGISTRY
        .source(&job.source.kind)
        .map(|s| s.reads);
    if reads == Some(Reads::Queue) || job.detect == Detect::Outbox {
        return Err(
            "its source holds changes (an outbox or a queue), not the objects themselves: there is nothing to re-read"
                .to_string(),
        );
    }
    if part.predicate.is_some() && reads != Some(Reads::Table) {
        return Err(format!(
            "--where is SQL, and its {} source is not: resync it by --keys, or whole",
            job.source.kind
        ));
    }
    if job.source.tables.is_some() {
        return Err("it reads a whole schema (`tables`): resync one of its tables' jobs (`ferry jobs` lists them)".to_string());
    }
    let keys = part
        .keys
        .map(|text| KeyRange::parse(text, job.source.key.len()).map_err(|e| format!("--keys {e}")))
        .transpose()?;
    Ok(Subset {
        predicate: part.predicate.map(str::to_string),
        keys,
        chunk: None,
        listed: None,
    })
}
