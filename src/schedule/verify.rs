//! Scheduled verification (`verify = "<cron>"` in a job's schedule): the
//! daemon runs `ferry verify` for the job under the job's lease, so never
//! beside a run of the job in any process, and exports what it found.
use chrono::{DateTime, Utc};
use tokio::task::JoinSet;

use super::{Daemon, Finished, Work};
use crate::config::Job;
use crate::runner::{self, Trigger};
use crate::state::Store;

/// The name a job's verify ticks are claimed under (job names are
/// `[a-z0-9_]+`, so it is no job's).
pub fn tick_name(job: &str) -> String {
    format!("{job}.verify")
}

pub async fn scheduled(job: &Job, store: &Store, owner: &str) {
    match runner::verify_job(job, store, owner).await {
        Ok(Some(Ok(outcome))) => {
            crate::metrics::verified(
                &job.name,
                &crate::metrics::Verified {
                    equal: outcome.equal,
                    missing: if outcome.missing_allowed {
                        0
                    } else {
                        outcome.missing
                    },
                    extra: if outcome.extra_allowed {
                        0
                    } else {
                        outcome.extra
                    },
                    different: outcome.different,
                    seconds: outcome.seconds,
                },
            );
            match outcome.drifted() {
                true => tracing::warn!(
                    job = %job.name,
                    missing = outcome.missing,
                    extra = outcome.extra,
                    different = outcome.different,
                    "verify: the target differs from the source (`ferry verify {} --repair` repairs it)",
                    job.name
                ),
                false => {
                    tracing::info!(job = %job.name, rows = outcome.source_rows, seconds = outcome.seconds, "verify: equal")
                }
            }
        }
        Ok(Some(Err(e))) => tracing::error!(job = %job.name, "verify failed: {e}"),
        Ok(None) => {
            tracing::info!(job = %job.name, "verify skipped: the job is running in another process")
        }
        Err(e) => tracing::error!(job = %job.name, "verify could not take the job lease: {e}"),
    }
}

impl Daemon {
    /// A due verify tick of `job`: claimed once across replicas, run unless
    /// the job is busy here (its lease keeps it apart from runs elsewhere).
    pub(super) async fn verify_at(
        &self,
        runs: &mut JoinSet<Finished>,
        job: &str,
        name: &str,
        tick: DateTime<Utc>,
    ) {
        if self.is_running(job) {
            tracing::info!(job = %job, tick = %tick, "running; verify skipped");
            return;
        }
        match self
            .store
            .claim_tick(name, tick.timestamp_millis(), &self.owner)
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(job = %job, "cannot claim verify tick {tick}: {e}");
                return;
            }
        }
        let Some(job_cfg) = self.config().jobs.get(job).cloned() else {
            return;
        };
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.to_string());
        let (store, owner) = (self.store.clone(), self.owner.clone());
        let slots = self.run_slots.clone();
        let limit = self.config().engine.max_concurrent_runs;
        runs.spawn(async move {
            let _slot = slots.wait(&job_cfg.name, limit).await;
            scheduled(&job_cfg, &store, &owner).await;
            Finished {
                work: Work::Verified(job_cfg.name.clone()),
                requests: Vec::new(),
                trigger: Trigger::Schedule,
            }
        });
    }
}
