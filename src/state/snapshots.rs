//! Repairs in flight: a resync or `--full` run is recorded before it reads
//! the source and marked finished once its changes are queued, so that one
//! a process did not finish is run again by the job's next run.
use sqlx::Row;

use super::{args, Bind, StateError, Store};
use crate::model::now_millis;

/// A repair that has not finished.
#[derive(Debug, Clone)]
pub struct OpenSnapshot {
    pub id: i64,
    /// The part of the source, as the run recorded it (JSON).
    pub scope: String,
    pub started_at: i64,
    /// `chunks`: split into chunk tasks (the snapshot lane); None: a
    /// repair whose changes are queued as items.
    pub lane: Option<String>,
    /// Every version the snapshot's chunks wrote is above it.
    pub version_floor: Option<i64>,
    /// Rows of the scope when it was split.
    pub rows: Option<i64>,
}

impl Store {
    pub async fn start_snapshot(
        &self,
        job: &str,
        run_id: i64,
        scope: &str,
    ) -> Result<i64, StateError> {
        let mut a = args();
        a.push(job.to_string());
        a.push(scope.to_string());
        a.push(now_millis());
        a.push(run_id);
        let row = sqlx::query_with(
            "INSERT INTO ferry_snapshots (job, scope, started_at, run_id) VALUES ($1, $2, $3, $4) RETURNING id",
            a,
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.get(0))
    }

    /// `outcome`: `done` (its changes are queued) or `refused` (the delete
    /// guard stopped it: running it again would be refused again).
    pub async fn finish_snapshot(&self, id: i64, outcome: &str) -> Result<(), StateError> {
        let mut a = args();
        a.push(now_millis());
        a.push(outcome.to_string());
        a.push(id);
        sqlx::query_with(
            "UPDATE ferry_snapshots SET finished_at = $1, outcome = $2 WHERE id = $3",
            a,
        )
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The job's oldest unfinished repair.
    pub async fn open_snapshot(&self, job: &str) -> Result<Option<OpenSnapshot>, StateError> {
        let mut a = args();
        a.push(job.to_string());
        let row = sqlx::query_with(
            "SELECT id, scope, started_at, lane, version_floor, rows FROM ferry_snapshots WHERE job = $1 AND finished_at IS NULL ORDER BY id LIMIT 1",
            a,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.map(|r| OpenSnapshot {
            id: r.get(0),
            scope: r.get(1),
            started_at: r.get(2),
            lane: r.get(3),
            version_floor: r.get(4),
            rows: r.get(5),
        }))
    }
}
