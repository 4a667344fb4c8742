//! Commands that read: check, jobs, status, tasks.
use chrono::{TimeZone, Utc};

use super::{load_jobs_offline, open_store, state_url, Cli, ExitCode, OutputFormat, TasksAction};
use crate::config::Config;
use crate::state::TaskState;

pub async fn jobs(cli: &Cli) -> ExitCode {
    let config = match load_jobs_offline(cli).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut listed = Vec::new();
    for job in config.jobs.values() {
        let schedule = config.schedules.get(&job.name);
        let next: Vec<chrono::DateTime<chrono_tz::Tz>> =
            schedule.map_or_else(Vec::new, |s| s.upcoming(Utc::now(), 3));
        listed.push(serde_json::json!({
            "job": job.name,
            "source": describe_source(&config, &job.name),
            "target": describe_target(&config, &job.name),
            "strategy": job.detect.name(),
            "schedule": schedule.map(|s| s.expression.clone()),
            "timezone": schedule.map(|s| s.timezone.to_string()),
            "next_fire_times": next.iter().map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
            "after": job.after,
            "unset_variables": unset_variables(job),
        }));
        if cli.output == OutputFormat::Json {
            continue;
        }
        if listed.len() == 1 {
            out!(
                "{:<24} {:<40} {:<8} {:<24} NEXT",
                "JOB",
                "SOURCE → TARGET",
                "DETECT",
                "SCHEDULE"
            );
        }
        let (schedule, next) = match schedule {
            Some(s) => (
                format!("{} ({})", s.expression, s.timezone),
                next.iter()
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S %Z").to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            None => ("-".to_string(), "on trigger or run --once".to_string()),
        };
        out!(
            "{:<24} {:<40} {:<8} {:<24} {}",
            job.name,
            format!(
                "{} → {}",
                describe_source(&config, &job.name),
                describe_target(&config, &job.name)
            ),
            job.detect.name(),
            schedule,
            next
        );
    }
    if cli.output == OutputFormat::Json {
        print_json(&serde_json::json!({ "jobs": listed, "skipped_tables": config.skipped }));
    } else {
        for job in config.jobs.values() {
            let unset = unset_variables(job);
            if !unset.is_empty() {
                out!(
                    "note: job {} uses environment variable(s) not set here: {} (runs need them; `ferry check` names where)",
                    job.name,
                    unset.join(", ")
                );
            }
        }
        for skipped in &config.skipped {
            out!(
                "skipped: job {} does not sync table {}: {}",
                skipped.job,
                skipped.table,
                skipped.reason
            );
        }
    }
    ExitCode::Ok
}

fn describe_source(config: &Config, job: &str) -> String {
    let s = &config.jobs[job].source;
    let what = s
        .table
        .clone()
        .or_else(|| {
            s.path
                .as_ref()
                .and_then(|p| p.file_name())
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "query".into());
    format!("{}:{what}", s.kind)
}

/// The `${VAR}`s a job's URLs still hold: variables unset in this
/// environment (see `config::load_offline`).
fn unset_variables(job: &crate::config::Job) -> Vec<String> {
    let mut names = Vec::new();
    for url in [&job.source.url, &job.target.url].into_iter().flatten() {
        let mut rest = url.as_str();
        while let Some(start) = rest.find("${") {
            let Some(end) = rest[start..].find('}') else {
                break;
            };
            let name = rest[start..start + end + 1].to_string();
            if !names.contains(&name) {
                names.push(name);
            }
            rest = &rest[start + end + 1..];
        }
    }
    names
}

fn describe_target(config: &Config, job: &str) -> String {
    let t = &config.jobs[job].target;
    format!("{}:{}", t.kind, t.table.clone().unwrap_or_default())
}

pub(super) fn time(ms: Option<i64>) -> String {
    ms.map_or("-".to_string(), crate::model::utc_text)
}

/// A unix-millisecond time as RFC 3339 (UTC), for JSON output; null when absent.
pub(super) fn iso(ms: Option<i64>) -> Option<String> {
    ms.and_then(|m| Utc.timestamp_millis_opt(m).single())
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// One JSON document on stdout.
pub(super) fn print_json(value: &serde_json::Value) {
    // Serialising a serde_json::Value cannot fail.
    out!(
        "{}",
        serde_json::to_string_pretty(value).expect("json value")
    );
}

pub async fn tasks(
    cli: &Cli,
    job: Option<&str>,
    state: Option<&str>,
    limit: i64,
    action: Option<&TasksAction>,
) -> ExitCode {
    let config = super::load_config_offline(cli).ok();
    let state = match state.map(|s| (s, TaskState::parse(s))) {
        Some((s, None)) => {
            eprintln!(
                "ferry: unknown task state `{s}`; expected pending, running, failed, dead or done"
            );
            return ExitCode::Usage;
        }
        Some((_, parsed)) => parsed,
        None => None,
    };
    let store = match open_store(&state_url(cli, config.as_ref()), config.as_ref()).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let code = match action {
        Some(TasksAction::Retry { ids, dead, job }) => {
            if ids.is_empty() && !dead {
                eprintln!("ferry: name task ids, or --dead for every dead task");
                ExitCode::Usage
            } else {
                match store.retry_tasks(ids, job.as_deref()).await {
                    Ok(retried) => {
                        out!("{} task(s) queued again", retried.len());
                        refused(&store, ids, &retried, "retried").await
                    }
                    Err(e) => {
                        eprintln!("ferry: {e}");
                        ExitCode::Unavailable
                    }
                }
            }
        }
        Some(TasksAction::Discard { ids, yes }) => {
            if !yes {
                eprintln!("ferry: discarding gives up on the tasks' items; add --yes to confirm");
                ExitCode::Usage
            } else {
                match store.discard_tasks(ids).await {
                    Ok(discarded) => {
                        out!("{} task(s) discarded; their keys are marked out of sync until their next change (a diff run sends them again)", discarded.len());
                        refused(&store, ids, &discarded, "discarded").await
                    }
                    Err(e) => {
                        eprintln!("ferry: {e}");
                        ExitCode::Unavailable
                    }
                }
            }
        }
        Some(TasksAction::Show { id }) => show_task(&store, *id).await,
        None => list_tasks(cli, &store, job, state, limit).await,
    };
    store.close().await;
    code
}

/// `ferry tasks show ID`: one task with its items, as JSON.
async fn show_task(store: &crate::state::Store, id: i64) -> ExitCode {
    match store.task(id).await {
        Ok(Some(t)) => {
            let items: serde_json::Value =
                t.items.as_deref().map_or(serde_json::Value::Null, |s| {
                    serde_json::from_str(s).unwrap_or(serde_json::Value::Null)
                });
            let out = serde_json::json!({
                "id": t.id, "job": t.job, "run_id": t.run_id, "state": t.state,
                "attempts": t.attempts, "item_count": t.item_count,
                "created_at": iso(Some(t.created_at)), "run_after": iso(Some(t.run_after)),
                "last_error": t.last_error, "items": items,
            });
            // A json! value always pretty-prints.
            out!(
                "{}",
                serde_json::to_string_pretty(&out).expect("json value")
            );
            ExitCode::Ok
        }
        Ok(None) => {
            eprintln!("ferry: no task {id}");
            ExitCode::Failed
        }
        Err(e) => {
            eprintln!("ferry: {e}");
            ExitCode::Unavailable
        }
    }
}

/// `ferry tasks`: the newest tasks, a line each or as JSON.
async fn list_tasks(
    cli: &Cli,
    store: &crate::state::Store,
    job: Option<&str>,
    state: Option<TaskState>,
    limit: i64,
) -> ExitCode {
    match store.tasks(job, state, limit).await {
        Ok(list) if cli.output == OutputFormat::Json => {
            print_json(&serde_json::json!({
                "tasks": list.iter().map(|t| serde_json::json!({
                    "id": t.id, "job": t.job, "run_id": t.run_id, "state": t.state,
                    "item_count": t.item_count, "attempts": t.attempts,
                    "created_at": iso(Some(t.created_at)), "run_after": iso(Some(t.run_after)),
                    "last_error": t.last_error,
                })).collect::<Vec<_>>(),
            }));
            ExitCode::Ok
        }
        Ok(list) => {
            out!(
                "{:>8} {:<24} {:>6} {:<8} {:>6} {:>8}  {:<23}  ERROR",
                "ID",
                "JOB",
                "RUN",
                "STATE",
                "ITEMS",
                "ATTEMPTS",
                "CREATED"
            );
            for t in list {
                out!(
                    "{:>8} {:<24} {:>6} {:<8} {:>6} {:>8}  {:<23}  {}",
                    t.id,
                    t.job,
                    t.run_id,
                    t.state,
                    t.item_count,
                    t.attempts,
                    time(Some(t.created_at)),
                    t.last_error.unwrap_or_default()
                );
            }
            ExitCode::Ok
        }
        Err(e) => {
            eprintln!("ferry: {e}");
            ExitCode::Unavailable
        }
    }
}

pub async fn pause(cli: &Cli, job: &str, paused: bool) -> ExitCode {
    let config = match load_jobs_offline(cli).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(code) = super::select_jobs(&config, &[job.to_string()]) {
        return code;
    }
    let store = match open_store(&state_url(cli, Some(&config)), Some(&config)).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let code = done(store.set_paused(job, paused).await, |()| {
        if paused {
            out!("{job} paused: changes are still detected and queued, nothing is sent");
        } else {
            out!("{job} resumed");
        }
    });
    store.close().await;
    code
}

/// Names each of `asked` that is not in `acted` and why (`verb`: retried,
/// discarded): exit 1 if any, else 0.
async fn refused(
    store: &crate::state::Store,
    asked: &[i64],
    acted: &[i64],
    verb: &str,
) -> ExitCode {
    let mut code = ExitCode::Ok;
    for id in asked.iter().filter(|id| !acted.contains(id)) {
        code = ExitCode::Failed;
        let why = match store.task(*id).await {
            Ok(None) => "there is no such task".to_string(),
            Ok(Some(t)) => match t.state.as_str() {
                "done" => "it is done: its items reached the target".to_string(),
                "pending" => "it is pending: it is queued already".to_string(),
                "running" => "it is running: a worker holds it (wait for it to end)".to_string(),
                other => format!("it is {other}"),
            },
            Err(e) => format!("cannot read it: {e}"),
        };
        eprintln!("ferry: task {id} not {verb}: {why}");
    }
    code
}

/// Prints what a state-store call returned, or its error: exit 0 or 75.
fn done<T>(result: Result<T, crate::state::StateError>, print: impl FnOnce(T)) -> ExitCode {
    match result {
        Ok(value) => {
            print(value);
            ExitCode::Ok
        }
        Err(e) => {
            eprintln!("ferry: {e}");
            ExitCode::Unavailable
        }
    }
}
