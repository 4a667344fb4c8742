//! Commands that read: check, jobs, status, tasks.
use chrono::{TimeZone, Utc};

use super::{load_config, open_store, state_url, Cli, ExitCode, TasksAction};
use crate::config::Config;
use crate::state::TaskState;

pub fn check(cli: &Cli) -> ExitCode {
    match load_config(cli) {
        Ok(config) => {
            println!(
                "ok: {} job(s), {} schedule(s) in {}",
                config.jobs.len(),
                config.schedules.len(),
                cli.config.display()
            );
            ExitCode::Ok
        }
        Err(code) => code,
    }
}

pub fn jobs(cli: &Cli) -> ExitCode {
    let config = match load_config(cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    println!(
        "{:<24} {:<40} {:<8} {:<24} NEXT",
        "JOB", "SOURCE → TARGET", "DETECT", "SCHEDULE"
    );
    for job in config.jobs.values() {
        let flow = format!(
            "{} → {}",
            describe_source(&config, &job.name),
            describe_target(&config, &job.name)
        );
        let (schedule, next) = match config.schedules.get(&job.name) {
            Some(s) => {
                let next: Vec<String> = s
                    .upcoming(Utc::now(), 3)
                    .iter()
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S %Z").to_string())
                    .collect();
                (
                    format!("{} ({})", s.expression, s.timezone),
                    next.join(", "),
                )
            }
            None => ("-".to_string(), "on trigger or run --once".to_string()),
        };
        println!(
            "{:<24} {:<40} {:<8} {:<24} {}",
            job.name,
            flow,
            job.detect.name(),
            schedule,
            next
        );
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

fn describe_target(config: &Config, job: &str) -> String {
    let t = &config.jobs[job].target;
    format!("{}:{}", t.kind, t.table.clone().unwrap_or_default())
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(|m| Utc.timestamp_millis_opt(m).single())
        .map_or("-".to_string(), |t| {
            t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
        })
}

pub async fn status(cli: &Cli, only: Option<&str>) -> ExitCode {
    let config = match load_config(cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let names: Vec<String> = match only {
        Some(j) => vec![j.to_string()],
        None => config.jobs.keys().cloned().collect(),
    };
    let jobs = match super::select_jobs(&config, &names) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let store = match open_store(&state_url(cli, Some(&config))).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    for job in jobs {
        let result = async {
            let (last, last_success, conflicts) = store.last_run(&job.name).await?;
            let id_map = match job.generated_key() {
                Some(_) => Some(store.id_map_size(&job.name).await?),
                None => None,
            };
            let queue = store.queue_counts(&job.name).await?;
            let watermark = store.watermark(&job.name).await?;
            let present = store.live_count(&job.name).await?;
            let paused = store.is_paused(&job.name).await?;
            Ok::<_, crate::state::StateError>((
                (last, conflicts, id_map),
                last_success,
                queue,
                watermark,
                present,
                paused,
            ))
        }
        .await;
        let ((last, conflicts, id_map), last_success, q, watermark, present, paused) = match result
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("ferry: {e}");
                return ExitCode::Unavailable;
            }
        };
        println!(
            "{}{}",
            job.name,
            if paused {
                " (paused: nothing is sent)"
            } else {
                ""
            }
        );
        match last {
            Some(r) => {
                println!(
                    "  last run     #{} ({}) started {}: {} — scanned {}, changed {}, synced {}, failed {}, conflicts {}",
                    r.id,
                    r.trigger,
                    time(Some(r.started_at)),
                    r.outcome.as_deref().unwrap_or("running"),
                    r.counts.scanned,
                    r.counts.changed,
                    r.counts.synced,
                    r.counts.failed,
                    r.counts.conflicts
                );
                if let Some(e) = r.error {
                    println!("  last error   {e}");
                }
            }
            None => println!("  last run     never"),
        }
        println!("  last success {}", time(last_success));
        println!("  watermark    {}", watermark.as_deref().unwrap_or("-"));
        println!("  objects      {present} in the ledger");
        if let Some(n) = id_map {
            println!("  id map       {n} source key(s) translated to the target's own keys");
        }
        println!("  conflicts    {conflicts} in all runs (fields both sides changed; the owner rules decided)");
        println!(
            "  queue        pending {}, running {}, failed {}, dead {}",
            q.pending, q.running, q.failed, q.dead
        );
        if q.dead > 0 {
            println!(
                "  dead tasks   {} (inspect with `ferry tasks --job {} --state dead`)",
                q.dead, job.name
            );
        }
    }
    store.close().await;
    ExitCode::Ok
}

pub async fn tasks(
    cli: &Cli,
    job: Option<&str>,
    state: Option<&str>,
    limit: i64,
    action: Option<&TasksAction>,
) -> ExitCode {
    let config = load_config(cli).ok();
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
    let store = match open_store(&state_url(cli, config.as_ref())).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let code = match action {
        Some(TasksAction::Retry { ids, dead, job }) => {
            if ids.is_empty() && !dead {
                eprintln!("ferry: name task ids, or --dead for every dead task");
                ExitCode::Usage
            } else {
                done(store.retry_tasks(ids, job.as_deref()).await, |n| {
                    println!("{n} task(s) queued again")
                })
            }
        }
        Some(TasksAction::Discard { ids, yes }) => {
            if !yes {
                eprintln!("ferry: discarding loses the tasks' items; add --yes to confirm");
                ExitCode::Usage
            } else {
                done(store.discard_tasks(ids).await, |n| {
                    println!("{n} task(s) discarded")
                })
            }
        }
        Some(TasksAction::Show { id }) => match store.task(*id).await {
            Ok(Some(t)) => {
                let items: serde_json::Value =
                    t.items.as_deref().map_or(serde_json::Value::Null, |s| {
                        serde_json::from_str(s).unwrap_or(serde_json::Value::Null)
                    });
                let out = serde_json::json!({
                    "id": t.id, "job": t.job, "run_id": t.run_id, "state": t.state,
                    "attempts": t.attempts, "item_count": t.item_count,
                    "created_at": time(Some(t.created_at)), "run_after": time(Some(t.run_after)),
                    "last_error": t.last_error, "items": items,
                });
                // A json! value always pretty-prints.
                println!(
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
        },
        None => match store.tasks(job, state, limit).await {
            Ok(list) => {
                println!(
                    "{:>8} {:<24} {:>6} {:<8} {:>6} {:>8}  {:<23}  ERROR",
                    "ID", "JOB", "RUN", "STATE", "ITEMS", "ATTEMPTS", "CREATED"
                );
                for t in list {
                    println!(
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
        },
    };
    store.close().await;
    code
}

pub async fn pause(cli: &Cli, job: &str, paused: bool) -> ExitCode {
    let config = match load_config(cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(code) = super::select_jobs(&config, &[job.to_string()]) {
        return code;
    }
    let store = match open_store(&state_url(cli, Some(&config))).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let code = done(store.set_paused(job, paused).await, |()| {
        if paused {
            println!("{job} paused: changes are still detected and queued, nothing is sent");
        } else {
            println!("{job} resumed");
        }
    });
    store.close().await;
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
