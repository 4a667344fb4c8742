//! Scheduled ticks (each claimed once across every daemon on the store) and
//! trigger requests (`ferry trigger`, `POST /trigger/<job>`).
use std::time::Duration;

use sqlx::Row;

use super::{args, Backend, Bind, StateError, Store};
use crate::model::now_millis;

#[derive(Debug, Clone)]
pub struct TriggerRequest {
    pub id: i64,
    pub job: String,
}

#[derive(Debug, Clone)]
pub struct TriggerStatus {
    pub job: String,
    pub state: String,
    pub outcome: Option<String>,
    pub exit_code: Option<i64>,
    /// What the run said when it was not a success (its error, or why it
    /// was paused, busy or stopped).
    pub message: Option<String>,
}

impl Store {
    /// Claims the tick `(job, scheduled_for)` for `holder`; false when
    /// another daemon already has it.
    pub async fn claim_tick(
        &self,
        job: &str,
        scheduled_for_ms: i64,
        holder: &str,
    ) -> Result<bool, StateError> {
        let mut a = args();
        a.push(job.to_string());
        a.push(scheduled_for_ms);
        a.push(holder.to_string());
        a.push(now_millis());
        let r = sqlx::query_with(
            "INSERT INTO ferry_ticks (job, scheduled_for, holder, claimed_at) VALUES ($1, $2, $3, $4) ON CONFLICT (job, scheduled_for) DO NOTHING",
            a,
        )
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(r.rows_affected() == 1)
    }

    /// The latest tick of `job` any daemon claimed.
    pub async fn last_tick(&self, job: &str) -> Result<Option<i64>, StateError> {
        let mut a = args();
        a.push(job.to_string());
        let row = sqlx::query_with(
            "SELECT max(scheduled_for) FROM ferry_ticks WHERE job = $1",
            a,
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.get(0))
    }

    /// Forgets ticks claimed before `age` ago, keeping each job's latest (it
    /// tells a restarted daemon which ticks it missed).
    pub async fn purge_ticks(&self, age: Duration) -> Result<u64, StateError> {
        let mut a = args();
        a.push(now_millis() - age.as_millis() as i64);
        let r = sqlx::query_with(
            "DELETE FROM ferry_ticks WHERE claimed_at < $1 AND scheduled_for < \
             (SELECT max(t.scheduled_for) FROM ferry_ticks AS t WHERE t.job = ferry_ticks.job)",
            a,
        )
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(r.rows_affected())
    }

    /// Records a request to run `job` now; any daemon on this store picks it up.
    pub async fn request_trigger(&self, job: &str) -> Result<i64, StateError> {
        let mut a = args();
        a.push(job.to_string());
        a.push(now_millis());
        let row = sqlx::query_with("INSERT INTO ferry_triggers (job, requested_at, state) VALUES ($1, $2, 'pending') RETURNING id", a)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.get(0))
    }

    /// Takes pending trigger requests for this daemon.
    pub async fn claim_triggers(
        &self,
        holder: &str,
        limit: i64,
    ) -> Result<Vec<TriggerRequest>, StateError> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE ferry_triggers SET state = 'running', holder = $1 WHERE id IN \
             (SELECT id FROM ferry_triggers WHERE state = 'pending' ORDER BY id LIMIT $2{lock}) RETURNING id, job"
        );
        let mut a = args();
        a.push(holder.to_string());
        a.push(limit);
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query_with(&sql, a)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .map(|r| TriggerRequest {
                id: r.get(0),
                job: r.get(1),
            })
            .collect())
    }

    pub async fn finish_trigger(
        &self,
        id: i64,
        run_id: Option<i64>,
        outcome: &str,
        exit_code: i32,
    ) -> Result<(), StateError> {
        let mut a = args();
        a.push(run_id);
        a.push(outcome.to_string());
        a.push(i64::from(exit_code));
        a.push(now_millis());
        a.push(id);
        sqlx::query_with(
            "UPDATE ferry_triggers SET state = 'done', run_id = $1, outcome = $2, exit_code = $3, finished_at = $4 WHERE id = $5",
            a,
        )
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub async fn trigger_status(&self, id: i64) -> Result<Option<TriggerStatus>, StateError> {
        let mut a = args();
        a.push(id);
        let row = sqlx::query_with(
            "SELECT t.job, t.state, t.outcome, t.exit_code, r.error FROM ferry_triggers AS t \
             LEFT JOIN ferry_runs AS r ON r.id = t.run_id WHERE t.id = $1",
            a,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.map(|r| TriggerStatus {
            job: r.get(0),
            state: r.get(1),
            outcome: r.get(2),
            exit_code: r.get(3),
            message: r.get(4),
        }))
    }
}
