//! `ferry check`: the configuration, and with `--connect` the systems: the
//! schema stage of every job, as a dry run (docs/types.md).
use super::inspect::print_json;
use super::{load_config, state_url, Cli, ExitCode, OutputFormat};
use crate::schema::{self, SchemaError};
use crate::state::Store;

pub async fn check(cli: &Cli, connect: bool) -> ExitCode {
    let mut config = match load_config(cli) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if !connect {
        out!(
            "ok: {} job(s), {} schedule(s) in {}",
            config.jobs.len(),
            config.schedules.len(),
            cli.config.display()
        );
        return ExitCode::Ok;
    }
    crate::schema::expand::expand(&mut config).await;
    // The last run's columns tell new and retyped ones; without a state
    // store every job is checked as if it never ran.
    let url = state_url(cli, Some(&config));
    let store = Store::open_within(&url, config.engine.connect_timeout)
        .await
        .ok();
    let mut code = ExitCode::Ok;
    let mut reports = Vec::new();
    for job in config.jobs.values() {
        let (problems, notes, changes, job_code) =
            match schema::prepare(job, store.as_ref(), true).await {
                Ok(prepared) => (vec![], prepared.notes, prepared.changes, ExitCode::Ok),
                Err(SchemaError::Refused { problems, .. }) => {
                    (problems, vec![], vec![], ExitCode::Config)
                }
                Err(e) => {
                    let unreachable = e.connector().is_some_and(|c| c.is_unreachable());
                    let code = if unreachable {
                        ExitCode::Unavailable
                    } else if e.connector().is_some_and(|c| c.is_refused()) {
                        ExitCode::Config
                    } else {
                        ExitCode::Failed
                    };
                    (vec![e.to_string()], vec![], vec![], code)
                }
            };
        code = ExitCode::worst([code, job_code]);
        if cli.output == OutputFormat::Text {
            if problems.is_empty() {
                out!(
                    "ok: job {}: the fields fit the source and target columns",
                    job.name
                );
            }
            for problem in &problems {
                out!("error: job {}: {problem}", job.name);
            }
            for note in &notes {
                out!("note: job {}: {note}", job.name);
            }
            for change in &changes {
                out!("plan: job {}: {}", job.name, change.detail);
                for statement in &change.statements {
                    out!("      {statement};");
                }
            }
        }
        reports.push(serde_json::json!({
            "job": job.name,
            "ok": problems.is_empty(),
            "problems": problems,
            "notes": notes,
            "changes": changes,
        }));
    }
    if cli.output == OutputFormat::Json {
        print_json(&serde_json::json!({ "ok": code == ExitCode::Ok, "jobs": reports }));
    }
    code
}
