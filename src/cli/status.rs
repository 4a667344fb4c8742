//! `ferry status`: live daemons, and per job its last run and outcome, last
//! success, watermark, ledger size, queue depth, dead tasks, discarded
//! keys, schema changes and any snapshot in progress.
use super::inspect::{iso, print_json, time};
use super::{load_jobs_offline, open_store, state_url, Cli, ExitCode, OutputFormat};
use crate::state::JobFacts;

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
        // Every job's: what is read per table for all jobs at once, the
        // rest several jobs at a time (500 jobs one after another, a dozen
        // queries each, took 1.2 s in bench/scale.sh).
        let fleet = match only {
            None => Some(store.fleet_facts().await?),
            Some(_) => None,
        };
        let statuses: Vec<JobStatus> = futures::stream::iter(jobs)
            .map(|job| {
                let known = fleet
                    .as_ref()
                    .map(|f| f.get(&job.name).cloned().unwrap_or_default());
                job_status(&store, job, known)
            })
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
    known: Option<JobFacts>,
) -> Result<JobStatus, crate::state::StateError> {
    let name = job.name.as_str();
    let facts = async {
        match known {
            Some(facts) => Ok(facts),
            None => facts_of(store, name).await,
        }
    };
    let id_map = async {
        match job.generated_key() {
            Some(_) => store.id_map_size(name).await.map(Some),
            None => Ok(None),
        }
    };
    let (facts, id_map, schema_changes, pending_resync) = tokio::try_join!(
        facts,
        id_map,
        store.schema_changes(name),
        super::pending::pending_snapshot(store, name),
    )?;
    Ok(JobStatus {
        job: job.name.clone(),
        paused: facts.paused,
        last: facts.last,
        last_success: facts.last_success,
        conflicts: facts.conflicts,
        id_map,
        queue: facts.queue,
        watermark: facts.watermark,
        present: facts.present,
        discarded: facts.discarded,
        schema_changes,
        pending_resync,
    })
}

/// One job's [`JobFacts`], read for it alone (`ferry status JOB`).
async fn facts_of(
    store: &crate::state::Store,
    name: &str,
) -> Result<JobFacts, crate::state::StateError> {
    // Independent reads, side by side on the store's pool.
    let ((last, last_success, conflicts), paused, queue, watermark, present, discarded) = tokio::try_join!(
        store.last_run(name),
        store.is_paused(name),
        store.queue_counts(name),
        store.watermark(name),
        store.live_count(name),
        store.discarded_count(name),
    )?;
    Ok(JobFacts {
        paused,
        last,
        last_success,
        conflicts,
        queue,
        watermark,
        present,
        discarded,
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
