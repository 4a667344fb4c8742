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

pub async fn status(cli: &Cli, only: Option<&str>) -> ExitCode {
    let config = match load_jobs_offline(cli).await {
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
    let store = match open_store(&state_url(cli, Some(&config)), Some(&config)).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = async {
        use futures::{StreamExt, TryStreamExt};
        let daemons = store.live_daemons().await?;
        // Several jobs at a time: each is a dozen small queries, and with
        // 500 jobs one after another took 1.2 s (bench/scale.sh).
        let statuses: Vec<JobStatus> = futures::stream::iter(jobs)
            .map(|job| job_status(&store, job))
            .buffered(STATUS_QUERIES_AT_ONCE)
            .try_collect()
            .await?;
        Ok::<_, crate::state::StateError>((daemons, statuses))
    }
    .await;
    store.close().await;
    let (daemons, statuses) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferry: {e}");
            return ExitCode::Unavailable;
        }
    };
    if cli.output == OutputFormat::Json {
        print_json(&serde_json::json!({
            "daemons": daemons.iter().map(|d| serde_json::json!({
                "instance": d.instance, "host": d.host, "pid": d.pid, "version": d.version,
                "started_at": iso(Some(d.started_at)), "heartbeat_at": iso(Some(d.heartbeat_at)),
            })).collect::<Vec<_>>(),
            "jobs": statuses.iter().map(JobStatus::json).collect::<Vec<_>>(),
        }));
        return ExitCode::Ok;
    }
    if daemons.is_empty() {
        out!("daemons      none running on this state store (`ferry trigger` needs one)");
    }
    for d in &daemons {
        out!(
            "daemon       {} pid {} (ferry {}) started {}, last heartbeat {}",
            d.host,
            d.pid,
            d.version,
            time(Some(d.started_at)),
            time(Some(d.heartbeat_at))
        );
    }
    for s in &statuses {
        s.print();
    }
    ExitCode::Ok
}

/// Jobs whose status is read at once; the state store's pool (4 on
/// SQLite, 10 on PostgreSQL) bounds the connections.
const STATUS_QUERIES_AT_ONCE: usize = 8;

/// What `ferry status` knows of one job.
struct JobStatus {
    job: String,
    paused: bool,
    last: Option<crate::state::RunInfo>,
    last_success: Option<i64>,
    conflicts: i64,
    id_map: Option<i64>,
    queue: crate::state::QueueCounts,
    watermark: Option<String>,
    present: i64,
    discarded: i64,
    schema_changes: Vec<crate::state::SchemaChangeInfo>,
    /// A snapshot or resync that did not finish: the next run does it, or
    /// another process is doing it now.
    pending_resync: Option<super::pending::PendingSnapshot>,
}

async fn job_status(
    store: &crate::state::Store,
    job: &crate::config::Job,
) -> Result<JobStatus, crate::state::StateError> {
    let (last, last_success, conflicts) = store.last_run(&job.name).await?;
    let id_map = match job.generated_key() {
        Some(_) => Some(store.id_map_size(&job.name).await?),
        None => None,
    };
    Ok(JobStatus {
        job: job.name.clone(),
        paused: store.is_paused(&job.name).await?,
        last,
        last_success,
        conflicts,
        id_map,
        queue: store.queue_counts(&job.name).await?,
        watermark: store.watermark(&job.name).await?,
        present: store.live_count(&job.name).await?,
        discarded: store.discarded_count(&job.name).await?,
        schema_changes: store.schema_changes(&job.name).await?,
        pending_resync: super::pending::pending_snapshot(store, &job.name).await?,
    })
}

impl JobStatus {
    fn json(&self) -> serde_json::Value {
        let q = &self.queue;
        serde_json::json!({
            "job": self.job,
            "paused": self.paused,
            "last_run": self.last.as_ref().map(|r| serde_json::json!({
                "id": r.id, "trigger": r.trigger, "started_at": iso(Some(r.started_at)),
                "finished_at": iso(r.finished_at), "outcome": r.outcome,
                "scanned": r.counts.scanned, "changed": r.counts.changed, "synced": r.counts.synced,
                "failed": r.counts.failed, "conflicts": r.counts.conflicts, "message": r.error,
            })),
            "last_success_at": iso(self.last_success),
            "watermark": self.watermark,
            "ledger_objects": self.present,
            "id_map_size": self.id_map,
            "conflicts_total": self.conflicts,
            "discarded_keys": self.discarded,
            "pending_resync": self.pending_resync.as_ref().map(super::pending::PendingSnapshot::json),
            "schema_changes": self.schema_changes.iter().map(|c| serde_json::json!({
                "at": iso(Some(c.at)), "change": c.change, "detail": c.detail,
            })).collect::<Vec<_>>(),
            "queue": {
                "pending": q.pending, "running": q.running, "failed": q.failed, "dead": q.dead,
                "open_items": q.open_items,
            },
        })
    }

    fn print(&self) {
        let q = &self.queue;
        out!(
            "{}{}",
            self.job,
            if self.paused {
                " (paused: nothing is sent)"
            } else {
                ""
            }
        );
        match &self.last {
            Some(r) => {
                out!(
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
                if let Some(e) = &r.error {
                    out!("  last error   {e}");
                }
            }
            None => out!("  last run     never"),
        }
        out!("  last success {}", time(self.last_success));
        out!(
            "  watermark    {}",
            self.watermark.as_deref().unwrap_or("-")
        );
        out!("  objects      {} in the ledger", self.present);
        if let Some(n) = self.id_map {
            out!("  id map       {n} source key(s) translated to the target's own keys");
        }
        out!(
            "  conflicts    {} in all runs (fields both sides changed; the owner rules decided)",
            self.conflicts
        );
        out!(
            "  queue        pending {}, running {}, failed {}, dead {} ({} item(s) not sent yet)",
            q.pending,
            q.running,
            q.failed,
            q.dead,
            q.open_items
        );
        if q.dead > 0 {
            out!(
                "  dead tasks   {} (inspect with `ferry tasks --job {} --state dead`)",
                q.dead,
                self.job
            );
        }
        if self.discarded > 0 {
            out!(
                "  out of sync  {} key(s) whose last change was discarded: the target keeps what was last written until the key changes again (a diff job resends them on its next run; `ferry run --once --full {}` repairs now)",
                self.discarded,
                self.job
            );
        }
        if let Some(pending) = &self.pending_resync {
            pending.print();
        }
        for change in &self.schema_changes {
            out!(
                "  schema       {} {}: {}",
                time(Some(change.at)),
                change.change,
                change.detail
            );
        }
    }
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
