//! One row per run of a job: when, why, how it ended, and its counts.
use sqlx::Row;

use super::{args, Bind, StateError, Store};
use crate::model::now_millis;

#[derive(Debug, Clone, Default)]
pub struct RunCounts {
    pub scanned: i64,
    pub changed: i64,
    pub synced: i64,
    pub failed: i64,
    /// Fields both sides changed since ferry last wrote them.
    pub conflicts: i64,
}

#[derive(Debug, Clone)]
pub struct RunInfo {
    pub id: i64,
    pub job: String,
    pub trigger: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub outcome: Option<String>,
    pub counts: RunCounts,
    pub error: Option<String>,
}

impl Store {
    pub async fn start_run(
        &self,
        job: &str,
        trigger: &str,
        scheduled_for_ms: Option<i64>,
    ) -> Result<i64, StateError> {
        let mut a = args();
        a.push(job.to_string());
        a.push(trigger.to_string());
        a.push(now_millis());
        a.push(scheduled_for_ms);
        let row = sqlx::query_with(
            "INSERT INTO ferry_runs (job, trigger, started_at, scheduled_for) VALUES ($1, $2, $3, $4) RETURNING id",
            a,
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.get(0))
    }

    pub async fn finish_run(
        &self,
        id: i64,
        outcome: &str,
        c: &RunCounts,
        error: Option<&str>,
    ) -> Result<(), StateError> {
        let mut a = args();
        a.push(now_millis());
        a.push(outcome.to_string());
        a.push(c.scanned);
        a.push(c.changed);
        a.push(c.synced);
        a.push(c.failed);
        a.push(error.map(str::to_string));
        a.push(id);
        a.push(c.conflicts);
        sqlx::query_with(
            "UPDATE ferry_runs SET finished_at = $1, outcome = $2, scanned = $3, changed = $4, synced = $5, failed = $6, error = $7, conflicts = $9 WHERE id = $8",
            a,
        )
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The latest run of `job`, its latest successful one's finish time, and
    /// the conflicts of all its runs.
    pub async fn last_run(
        &self,
        job: &str,
    ) -> Result<(Option<RunInfo>, Option<i64>, i64), StateError> {
        let mut a = args();
        a.push(job.to_string());
        let row = sqlx::query_with(
            &format!(
                "SELECT {RUN_COLUMNS} FROM ferry_runs WHERE job = $1 ORDER BY id DESC LIMIT 1"
            ),
            a,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let last = row.as_ref().map(run_info);
        let mut a = args();
        a.push(job.to_string());
        let row = sqlx::query_with(
            "SELECT max(CASE WHEN outcome = 'success' THEN finished_at END), CAST(COALESCE(sum(conflicts), 0) AS BIGINT) \
             FROM ferry_runs WHERE job = $1",
            a,
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok((last, row.get(0), row.get(1)))
    }
}

/// The columns [`run_info`] reads, in its order.
pub(super) const RUN_COLUMNS: &str =
    "id, job, trigger, started_at, finished_at, outcome, scanned, changed, synced, failed, error, conflicts";

pub(super) fn run_info(r: &sqlx::any::AnyRow) -> RunInfo {
    RunInfo {
        id: r.get(0),
        job: r.get(1),
        trigger: r.get(2),
        started_at: r.get(3),
        finished_at: r.get(4),
        outcome: r.get(5),
        counts: RunCounts {
            scanned: r.get(6),
            changed: r.get(7),
            synced: r.get(8),
            failed: r.get(9),
            conflicts: r.get(11),
        },
        error: r.get(10),
    }
}
