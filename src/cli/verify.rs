//! `ferry verify [JOB...] [--keys LO..HI] [--output json]`: exit 0 when
//! every job's target matches its source, 1 when one differs, 75 when a
//! system cannot be reached, 78 when a job cannot be verified as configured.
use super::{load_jobs, Cli, ExitCode, OutputFormat};
use crate::connectors::KeyRange;
use crate::verify::{self, Kind, Outcome, VerifyError};

pub async fn verify(cli: &Cli, names: &[String], keys: Option<&str>) -> ExitCode {
    let config = match load_jobs(cli).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let jobs = match super::select_jobs(&config, names) {
        Ok(jobs) => jobs,
        Err(code) => return code,
    };
    let mut codes = Vec::new();
    let mut reports = Vec::new();
    for job in jobs {
        let range = match keys
            .map(|k| KeyRange::parse(k, job.source.key.len()))
            .transpose()
        {
            Ok(range) => range,
            Err(why) => {
                eprintln!("ferry: verify {}: --keys {why}", job.name);
                return ExitCode::Usage;
            }
        };
        match verify::verify(job, range.as_ref()).await {
            Ok(outcome) => {
                codes.push(match outcome.drifted() {
                    true => ExitCode::Failed,
                    false => ExitCode::Ok,
                });
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
    if cli.output == OutputFormat::Json {
        out!("{}", serde_json::json!({ "jobs": reports }));
    }
    ExitCode::worst(codes)
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
                true => d.key.clone(),
                false => format!("{} ({})", d.key, d.fields.join(", ")),
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
