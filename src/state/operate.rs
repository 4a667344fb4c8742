//! What operators read of the queue and do to it: counts by state, task
//! listings, retrying and discarding tasks, pausing a job. The workers'
//! protocol (claim, renew, settle) is in `queue.rs`.
use sqlx::{Any, Row, Transaction};

use super::{args, json_param, placeholders, Bind, Kind, StateError, Store, TaskState};
use crate::model::{now_millis, Item};

/// The content hash a discarded key that was never written gets: no object
/// hashes to it (xxh3 would, once in 2^64), so the next diff sees a change.
const NEVER_WRITTEN_HASH: i64 = 0;

#[derive(Debug, Clone, Default)]
pub struct QueueCounts {
    pub pending: i64,
    pub running: i64,
    pub failed: i64,
    pub dead: i64,
    pub done: i64,
    pub oldest_pending_ms: Option<i64>,
    /// Items in the open tasks (pending, running, awaiting retry): not sent yet.
    pub open_items: i64,
}

impl QueueCounts {
    /// One state's row, from column `first`: state, tasks, oldest
    /// `created_at`, items.
    pub(super) fn add(&mut self, r: &sqlx::any::AnyRow, first: usize) {
        let n: i64 = r.get(first + 1);
        let state = TaskState::parse(&r.get::<String, _>(first));
        if matches!(
            state,
            Some(TaskState::Pending | TaskState::Running | TaskState::Failed)
        ) {
            self.open_items += r.get::<i64, _>(first + 3);
        }
        match state {
            Some(TaskState::Pending) => {
                self.pending = n;
                self.oldest_pending_ms = r.get(first + 2);
            }
            Some(TaskState::Running) => self.running = n,
            Some(TaskState::Failed) => self.failed = n,
            Some(TaskState::Dead) => self.dead = n,
            Some(TaskState::Done) => self.done = n,
            None => {}
        }
    }

    /// Tasks by state, as the `ferry_queue_tasks` gauge labels them.
    pub fn by_state(&self) -> [(&'static str, i64); 4] {
        [
            ("pending", self.pending),
            ("running", self.running),
            ("failed", self.failed),
            ("dead", self.dead),
        ]
    }

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
    pub async fn queue_counts(&self, job: &str) -> Result<QueueCounts, StateError> {
        let mut a = args();
        a.push(job.to_string());
        let rows = sqlx::query_with(
            "SELECT state, count(*), min(created_at), CAST(COALESCE(sum(item_count), 0) AS BIGINT) FROM ferry_tasks WHERE job = $1 GROUP BY state",
            a,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let mut c = QueueCounts::default();
        for r in rows {
            c.add(&r, 0);
        }
        Ok(c)
    }

    /// Whether any task of `job` is running (in any process).
    pub async fn has_running(&self, job: &str) -> Result<bool, StateError> {
        let mut a = args();
        a.push(job.to_string());
        let row = sqlx::query_with(
            "SELECT 1 FROM ferry_tasks WHERE job = $1 AND state = 'running' LIMIT 1",
            a,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.is_some())
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
            "SELECT id, job, run_id, state, item_count, attempts, created_at, run_after, last_error, items \
             FROM ferry_tasks LEFT JOIN ferry_task_items ON task_id = id WHERE id = $1",
            a,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.as_ref().map(task_info))
    }

    /// Puts failed or dead tasks back in the queue, due now, with their
    /// attempts reset. `ids` empty: every dead task (of `job`, if given).
    /// Returns the ids queued again.
    pub async fn retry_tasks(
        &self,
        ids: &[i64],
        job: Option<&str>,
    ) -> Result<Vec<i64>, StateError> {
        let mut a = args();
        a.push(now_millis());
        let filter = if ids.is_empty() {
            match job {
                Some(j) => {
                    a.push(j.to_string());
                    "state = 'dead' AND job = $2".to_string()
                }
                None => "state = 'dead'".to_string(),
            }
        } else {
            for id in ids {
                a.push(*id);
            }
            format!(
                "state IN ('dead', 'failed') AND id IN ({})",
                placeholders(2, ids.len())
            )
        };
        let sql = format!("UPDATE ferry_tasks SET state = 'pending', attempts = 0, run_after = $1, last_error = NULL, stale_check = 1 WHERE {filter} RETURNING id");
        let rows = sqlx::query_with(&sql, a)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Deletes tasks that are not running, items and all, and returns their
    /// ids. Discarding gives up on those attempts, not on the objects: the
    /// ledger entry of each discarded item whose change is still the key's
    /// latest goes back to what was last written to the target (a key never
    /// written gets a hash no object has), so a diff finds it changed again,
    /// and is flagged `discarded` until a later change of the key is synced.
    pub async fn discard_tasks(&self, ids: &[i64]) -> Result<Vec<i64>, StateError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut a = args();
        for id in ids {
            a.push(*id);
        }
        let sql = format!(
            "DELETE FROM ferry_tasks WHERE state <> 'running' AND chunk IS NULL AND id IN ({}) RETURNING id, job",
            placeholders(1, ids.len())
        );
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query_with(&sql, a)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let gone: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        for (id, job) in &gone {
            self.reset_discarded(&mut tx, *id, job).await?;
        }
        let gone: Vec<i64> = gone.into_iter().map(|(id, _)| id).collect();
        self.drop_items(&mut tx, &gone).await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(gone)
    }

    /// The ledger side of discarding task `id` (see [`Store::discard_tasks`]).
    async fn reset_discarded(
        &self,
        tx: &mut Transaction<'_, Any>,
        id: i64,
        job: &str,
    ) -> Result<(), StateError> {
        let mut a = args();
        a.push(id);
        let items: Option<String> =
            sqlx::query_scalar_with("SELECT items FROM ferry_task_items WHERE task_id = $1", a)
                .fetch_optional(&mut **tx)
                .await
                .map_err(|e| self.err(e))?;
        let Some(items) = items else { return Ok(()) };
        self.forget_digests_in(tx, job).await?;
        let items: Vec<Item> = serde_json::from_str(&items).map_err(|e| StateError::Corrupt {
            url: self.url.clone(),
            detail: format!("items of task {id}: {e}"),
        })?;
        let keys: Vec<(String, i64)> = items
            .iter()
            .map(|i| (crate::model::key_text(&i.key), i.version))
            .collect();
        let sql = format!(
            "WITH x AS MATERIALIZED {rows} \
             UPDATE ferry_ledger SET detected_hash = CASE WHEN synced_hash IS NOT NULL THEN synced_hash \
             WHEN synced_version IS NOT NULL THEN detected_hash ELSE {NEVER_WRITTEN_HASH} END, \
             synced_version = COALESCE(synced_version, detected_version), \
             detected_version = COALESCE(synced_version, detected_version), deleted = 0, discarded = 1, source_hash = NULL FROM x \
             WHERE ferry_ledger.job = $1 AND ferry_ledger.key = x.key AND ferry_ledger.detected_version = x.version",
            rows = self.json_rows(2, &[("key", Kind::Text), ("version", Kind::Int)])
        );
        let mut a = args();
        a.push(job.to_string());
        a.push(json_param(&keys));
        sqlx::query_with(&sql, a)
            .execute(&mut **tx)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Keys of `job` whose last change was discarded and not synced since.
    pub async fn discarded_count(&self, job: &str) -> Result<i64, StateError> {
        let mut a = args();
        a.push(job.to_string());
        sqlx::query_scalar_with(
            "SELECT count(*) FROM ferry_ledger WHERE job = $1 AND discarded = 1",
            a,
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))
    }

    pub async fn set_paused(&self, job: &str, paused: bool) -> Result<(), StateError> {
        self.ensure_job(job).await?;
        let mut a = args();
        a.push(i64::from(paused));
        a.push(job.to_string());
        sqlx::query_with("UPDATE ferry_jobs SET paused = $1 WHERE job = $2", a)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub async fn is_paused(&self, job: &str) -> Result<bool, StateError> {
        let mut a = args();
        a.push(job.to_string());
        let row = sqlx::query_with("SELECT paused FROM ferry_jobs WHERE job = $1", a)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.is_some_and(|r| r.get::<i64, _>(0) != 0))
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
