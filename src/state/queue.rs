//! The durable task queue: claim with a fenced lease, complete or fail.
use std::time::Duration;

use sqlx::Row;

use super::{args, json_param, Backend, Bind, Kind, StateError, Store};
use crate::model::{now_millis, Item};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Pending,
    Running,
    Failed,
    Dead,
    Done,
}

impl TaskState {
    pub const ALL: [TaskState; 5] = [
        TaskState::Pending,
        TaskState::Running,
        TaskState::Failed,
        TaskState::Dead,
        TaskState::Done,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Failed => "failed",
            TaskState::Dead => "dead",
            TaskState::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A task this worker holds; `token` fences every later write to it.
#[derive(Debug)]
pub struct ClaimedTask {
    pub id: i64,
    pub job: String,
    pub token: i64,
    pub attempts: i64,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, Default)]
pub struct QueueCounts {
    pub pending: i64,
    pub running: i64,
    pub failed: i64,
    pub dead: i64,
    pub done: i64,
    pub oldest_pending_ms: Option<i64>,
}

impl QueueCounts {
    /// Tasks not yet delivered (pending, running or awaiting retry).
    pub fn open(&self) -> i64 {
        self.pending + self.running + self.failed
    }
}

#[derive(Debug, Clone)]
pub struct TaskInfo {
    pub id: i64,
    pub job: String,
    pub run_id: i64,
    pub state: String,
    pub item_count: i64,
    pub attempts: i64,
    pub created_at: i64,
    pub run_after: i64,
    pub last_error: Option<String>,
    pub items: Option<String>,
}

impl Store {
    /// Claims the oldest claimable task of `job`: pending, failed and due, or
    /// running under a lease that expired (its holder died). Each claim bumps
    /// the fencing token and counts an attempt.
    pub async fn claim(
        &self,
        job: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedTask>, StateError> {
        let now = now_millis();
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE ferry_tasks SET state = 'running', lease_owner = $1, lease_token = lease_token + 1, \
             lease_expires_at = $2, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM ferry_tasks WHERE job = $3 AND \
               ((state IN ('pending', 'failed') AND run_after <= $4) OR (state = 'running' AND lease_expires_at < $4)) \
               ORDER BY id LIMIT 1{lock}) \
             RETURNING id, lease_token, attempts, items"
        );
        let mut a = args();
        a.push(owner.to_string());
        a.push(now + lease.as_millis() as i64);
        a.push(job.to_string());
        a.push(now);
        let mut tx = self.write_tx().await?;
        let row = sqlx::query_with(&sql, a)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        let Some(row) = row else { return Ok(None) };
        let id: i64 = row.get(0);
        let payload: Option<String> = row.get(3);
        let items = serde_json::from_str(payload.as_deref().unwrap_or("[]")).map_err(|e| {
            StateError::Corrupt {
                url: self.url.clone(),
                detail: format!("task {id} holds unreadable items: {e}"),
            }
        })?;
        Ok(Some(ClaimedTask {
            id,
            job: job.to_string(),
            token: row.get(1),
            attempts: row.get(2),
            items,
        }))
    }

    /// Extends a held task's lease; false when the task was taken over.
    pub async fn renew_task(
        &self,
        task: &ClaimedTask,
        lease: Duration,
    ) -> Result<bool, StateError> {
        let mut a = args();
        a.push(now_millis() + lease.as_millis() as i64);
        a.push(task.id);
        a.push(task.token);
        let r = sqlx::query_with("UPDATE ferry_tasks SET lease_expires_at = $1 WHERE id = $2 AND lease_token = $3 AND state = 'running'", a)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(r.rows_affected() == 1)
    }

    /// Marks the task done and records in the ledger what was written, in one
    /// transaction. `synced` is (ledger key, hash, version) of each item the
    /// target now holds. False, and nothing written, when the lease was lost.
    pub async fn complete(
        &self,
        task: &ClaimedTask,
        synced: &[(String, i64, i64)],
    ) -> Result<bool, StateError> {
        let mut tx = self.write_tx().await?;
        let mut a = args();
        a.push(now_millis());
        a.push(task.id);
        a.push(task.token);
        let r = sqlx::query_with(
            "UPDATE ferry_tasks SET state = 'done', items = NULL, finished_at = $1, lease_owner = NULL, last_error = NULL \
             WHERE id = $2 AND lease_token = $3 AND state = 'running'",
            a,
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        if r.rows_affected() != 1 {
            tx.rollback().await.map_err(|e| self.err(e))?;
            return Ok(false);
        }
        if !synced.is_empty() {
            let sql = format!(
                "INSERT INTO ferry_ledger (job, key, detected_hash, detected_version, synced_hash, synced_version) \
                 SELECT $1, key, hash, version, hash, version FROM {} AS x WHERE true \
                 ON CONFLICT (job, key) DO UPDATE SET synced_hash = excluded.synced_hash, synced_version = excluded.synced_version \
                 WHERE ferry_ledger.synced_version IS NULL OR ferry_ledger.synced_version < excluded.synced_version",
                self.json_rows(2, &[("key", Kind::Text), ("hash", Kind::Int), ("version", Kind::Int)])
            );
            let mut a = args();
            a.push(task.job.clone());
            a.push(json_param(&synced));
            sqlx::query_with(&sql, a)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(true)
    }

    /// Puts a held task back: `failed` to retry at `retry_at_ms`, or `dead`.
    /// False when the lease was lost (another worker owns the task now).
    pub async fn fail(
        &self,
        task: &ClaimedTask,
        error: &str,
        retry_at_ms: Option<i64>,
    ) -> Result<bool, StateError> {
        let state = if retry_at_ms.is_some() {
            "failed"
        } else {
            "dead"
        };
        let mut a = args();
        a.push(state.to_string());
        a.push(retry_at_ms.unwrap_or_else(now_millis));
        a.push(error.to_string());
        a.push(task.id);
        a.push(task.token);
        let r = sqlx::query_with(
            "UPDATE ferry_tasks SET state = $1, run_after = $2, last_error = $3, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $4 AND lease_token = $5 AND state = 'running'",
            a,
        )
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(r.rows_affected() == 1)
    }

    /// Gives a held task back untouched, without counting the attempt (used
    /// when the target is unreachable: the task did not fail, it never ran).
    pub async fn release(
        &self,
        task: &ClaimedTask,
        retry_at_ms: i64,
        error: &str,
    ) -> Result<bool, StateError> {
        let mut a = args();
        a.push(retry_at_ms);
        a.push(error.to_string());
        a.push(task.id);
        a.push(task.token);
        let r = sqlx::query_with(
            "UPDATE ferry_tasks SET state = 'failed', attempts = attempts - 1, run_after = $1, last_error = $2, \
             lease_owner = NULL, lease_expires_at = NULL WHERE id = $3 AND lease_token = $4 AND state = 'running'",
            a,
        )
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn queue_counts(&self, job: &str) -> Result<QueueCounts, StateError> {
        let mut a = args();
        a.push(job.to_string());
        let rows = sqlx::query_with(
            "SELECT state, count(*), min(created_at) FROM ferry_tasks WHERE job = $1 GROUP BY state",
            a,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let mut c = QueueCounts::default();
        for r in rows {
            let n: i64 = r.get(1);
            match TaskState::parse(&r.get::<String, _>(0)) {
                Some(TaskState::Pending) => {
                    c.pending = n;
                    c.oldest_pending_ms = r.get(2);
                }
                Some(TaskState::Running) => c.running = n,
                Some(TaskState::Failed) => c.failed = n,
                Some(TaskState::Dead) => c.dead = n,
                Some(TaskState::Done) => c.done = n,
                None => {}
            }
        }
        Ok(c)
    }

    /// Tasks, newest first, optionally of one job and/or state.
    pub async fn tasks(
        &self,
        job: Option<&str>,
        state: Option<TaskState>,
        limit: i64,
    ) -> Result<Vec<TaskInfo>, StateError> {
        let mut a = args();
        let mut conds = Vec::new();
        if let Some(j) = job {
            a.push(j.to_string());
            conds.push(format!("job = ${}", conds.len() + 1));
        }
        if let Some(s) = state {
            a.push(s.as_str().to_string());
            conds.push(format!("state = ${}", conds.len() + 1));
        }
        a.push(limit);
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let sql = format!(
            "SELECT id, job, run_id, state, item_count, attempts, created_at, run_after, last_error, CAST(NULL AS TEXT) \
             FROM ferry_tasks {filter} ORDER BY id DESC LIMIT ${}",
            conds.len() + 1
        );
        let rows = sqlx::query_with(&sql, a)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(task_info).collect())
    }

    pub async fn task(&self, id: i64) -> Result<Option<TaskInfo>, StateError> {
        let mut a = args();
        a.push(id);
        let row = sqlx::query_with(
            "SELECT id, job, run_id, state, item_count, attempts, created_at, run_after, last_error, items FROM ferry_tasks WHERE id = $1",
            a,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.as_ref().map(task_info))
    }

    /// Forgets finished tasks older than `age` (their items were already cleared).
    pub async fn purge_done(&self, age: Duration) -> Result<u64, StateError> {
        let mut a = args();
        a.push(now_millis() - age.as_millis() as i64);
        let r = sqlx::query_with(
            "DELETE FROM ferry_tasks WHERE state = 'done' AND finished_at < $1",
            a,
        )
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(r.rows_affected())
    }
}

fn task_info(r: &sqlx::any::AnyRow) -> TaskInfo {
    TaskInfo {
        id: r.get(0),
        job: r.get(1),
        run_id: r.get(2),
        state: r.get(3),
        item_count: r.get(4),
        attempts: r.get(5),
        created_at: r.get(6),
        run_after: r.get(7),
        last_error: r.get(8),
        items: r.get(9),
    }
}
