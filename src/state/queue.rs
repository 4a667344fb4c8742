//! The durable task queue: claim with a fenced lease, complete or fail
//! (what is durable when, for users: `docs/guarantees.md`).
use std::collections::HashMap;
use std::time::Duration;

use sqlx::{Any, Row, Transaction};

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
    pub run_id: i64,
    pub job: String,
    pub token: i64,
    pub attempts: i64,
    pub items: Vec<Item>,
    /// A chunk task of a snapshot: the part of the source it re-reads (a
    /// [`Subset`] as JSON), and its snapshot. Its items are read then.
    ///
    /// [`Subset`]: crate::connectors::Subset
    pub chunk: Option<String>,
    pub snapshot_id: Option<i64>,
}

/// The fate of one task's items after a sync attempt (see [`Store::settle`]).
#[derive(Debug, Default)]
pub struct Settlement {
    /// Each item the target now holds.
    pub synced: Vec<Synced>,
    /// Items that go dead, each with its `error`.
    pub dead: Vec<Item>,
    /// Items to try again at `retry_at_ms`.
    pub retry: Vec<Item>,
    pub retry_at_ms: i64,
    pub retry_error: Option<String>,
}

/// An item the target now holds, for the ledger.
#[derive(Debug, Clone)]
pub struct Synced {
    /// Ledger text of the key.
    pub key: String,
    pub hash: i64,
    pub version: i64,
    /// What ferry wrote, per target field: hashes of the value sent and of
    /// the value the target held after the write, as hex text
    /// (`sync::conflicts` encodes it; the ledger keeps the bytes it spells).
    /// None: unknown (the target cannot read back), or deleted.
    pub written: Option<String>,
    /// The source's hash of the row (a snapshot's chunk records it).
    pub source_hash: Option<i64>,
}

fn first_error(items: &[Item]) -> Option<String> {
    items.iter().find_map(|i| i.error.clone())
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
        Ok(self.claim_tasks(job, owner, lease, 1, false).await?.pop())
    }

    /// Claims the oldest claimable task of `job` as [`Store::claim`] does,
    /// a snapshot's chunk task included.
    pub async fn claim_or_chunk(
        &self,
        job: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedTask>, StateError> {
        Ok(self.claim_tasks(job, owner, lease, 1, true).await?.pop())
    }

    /// Claims up to `limit` tasks of `job` in one statement, oldest first (as
    /// [`Store::claim`]); for workers whose tasks are small.
    pub async fn claim_batch(
        &self,
        job: &str,
        owner: &str,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedTask>, StateError> {
        self.claim_tasks(job, owner, lease, limit, false).await
    }

    async fn claim_tasks(
        &self,
        job: &str,
        owner: &str,
        lease: Duration,
        limit: usize,
        chunks: bool,
    ) -> Result<Vec<ClaimedTask>, StateError> {
        let now = now_millis();
        let kinds = match chunks {
            true => "",
            false => " AND chunk IS NULL",
        };
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE ferry_tasks SET state = 'running', lease_owner = $1, lease_token = lease_token + 1, \
             lease_expires_at = $2, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM ferry_tasks WHERE job = $3 AND state IN ('pending', 'failed', 'running') AND \
               ((state <> 'running' AND run_after <= $4) OR (state = 'running' AND lease_expires_at < $4)){kinds} \
               ORDER BY id LIMIT $5{lock}) \
             RETURNING id, lease_token, attempts, run_id, chunk, snapshot_id"
        );
        let mut a = args();
        a.push(owner.to_string());
        a.push(now + lease.as_millis() as i64);
        a.push(job.to_string());
        a.push(now);
        a.push(limit as i64);
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query_with(&sql, a)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let mut payloads = self.items_of(&mut tx, &ids).await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        let mut tasks = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.get(0);
            let payload = payloads.remove(&id);
            let items = serde_json::from_str(payload.as_deref().unwrap_or("[]")).map_err(|e| {
                StateError::Corrupt {
                    url: self.url.clone(),
                    detail: format!("task {id} holds unreadable items: {e}"),
                }
            })?;
            tasks.push(ClaimedTask {
                id,
                run_id: row.get(3),
                job: job.to_string(),
                token: row.get(1),
                attempts: row.get(2),
                items,
                chunk: row.get(4),
                snapshot_id: row.get(5),
            });
        }
        // RETURNING gives no order; claims are handed out oldest first.
        tasks.sort_by_key(|t| t.id);
        Ok(tasks)
    }

    /// Extends a held task's lease. `None` when the task was taken over, else
    /// whether a later detection may have superseded some of its items.
    pub async fn renew_task(
        &self,
        task: &ClaimedTask,
        lease: Duration,
    ) -> Result<Option<bool>, StateError> {
        let mut a = args();
        a.push(now_millis() + lease.as_millis() as i64);
        a.push(task.id);
        a.push(task.token);
        let row = sqlx::query_with("UPDATE ferry_tasks SET lease_expires_at = $1 WHERE id = $2 AND lease_token = $3 AND state = 'running' RETURNING stale_check", a)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.map(|r| r.get::<i64, _>(0) != 0))
    }

    /// Records what became of a held task's items, in one transaction: the
    /// ledger learns what the target now holds; items to retry stay in this
    /// task (`failed`, due at `retry_at_ms`); dead items keep their payload
    /// and error (in this task when nothing else remains, else in a new dead
    /// task). False, and nothing written, when the lease was lost.
    pub async fn settle(&self, task: &ClaimedTask, s: &Settlement) -> Result<bool, StateError> {
        let now = now_millis();
        let (state, items, count, error, run_after) = if !s.retry.is_empty() {
            (
                "failed",
                Some(json_param(&s.retry)),
                s.retry.len(),
                s.retry_error.clone(),
                s.retry_at_ms,
            )
        } else if !s.dead.is_empty() && s.synced.is_empty() {
            (
                "dead",
                Some(json_param(&s.dead)),
                s.dead.len(),
                first_error(&s.dead),
                now,
            )
        } else {
            ("done", None, s.synced.len(), None, now)
        };
        let mut tx = self.write_tx().await?;
        let mut a = args();
        a.push(state.to_string());
        a.push(count as i64);
        a.push(error);
        a.push(run_after);
        a.push(now);
        a.push(task.id);
        a.push(task.token);
        let r = sqlx::query_with(
            "UPDATE ferry_tasks SET state = $1, item_count = $2, last_error = $3, run_after = $4, \
             finished_at = CASE WHEN $1 = 'done' THEN $5 ELSE NULL END, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $6 AND lease_token = $7 AND state = 'running'",
            a,
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        if r.rows_affected() != 1 {
            tx.rollback().await.map_err(|e| self.err(e))?;
            return Ok(false);
        }
        match items {
            Some(items) => self.put_items(&mut tx, task.id, items).await?,
            None => self.drop_items(&mut tx, &[task.id]).await?,
        }
        if !s.dead.is_empty() && state != "dead" {
            let mut a = args();
            a.push(task.job.clone());
            a.push(task.run_id);
            a.push(s.dead.len() as i64);
            a.push(task.attempts);
            a.push(now);
            a.push(first_error(&s.dead));
            let row = sqlx::query_with(
                "INSERT INTO ferry_tasks (job, run_id, state, item_count, attempts, created_at, run_after, last_error) \
                 VALUES ($1, $2, 'dead', $3, $4, $5, $5, $6) RETURNING id",
                a,
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
            self.put_items(&mut tx, row.get(0), json_param(&s.dead))
                .await?;
        }
        self.record_synced(&mut tx, &task.job, &s.synced).await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(true)
    }

    /// Completes held tasks whose every item the target now holds, in one
    /// transaction (`synced`: their items, as in [`Settlement::synced`]).
    /// Returns the ids completed; a task taken over meanwhile is left alone.
    pub async fn complete_batch(
        &self,
        job: &str,
        tasks: &[ClaimedTask],
        synced: &[Synced],
    ) -> Result<Vec<i64>, StateError> {
        let now = now_millis();
        let fences: Vec<(i64, i64)> = tasks.iter().map(|t| (t.id, t.token)).collect();
        let sql = format!(
            "UPDATE ferry_tasks SET state = 'done', item_count = 0, last_error = NULL, \
             run_after = $1, finished_at = $1, lease_owner = NULL, lease_expires_at = NULL \
             WHERE state = 'running' AND (id, lease_token) IN (SELECT id, token FROM {} AS f) RETURNING id",
            self.json_rows(2, &[("id", Kind::Int), ("token", Kind::Int)])
        );
        let mut tx = self.write_tx().await?;
        let mut a = args();
        a.push(now);
        a.push(json_param(&fences));
        let rows = sqlx::query_with(&sql, a)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let done: Vec<i64> = rows.into_iter().map(|r| r.get::<i64, _>(0)).collect();
        self.drop_items(&mut tx, &done).await?;
        self.record_synced(&mut tx, job, synced).await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(done)
    }

    /// Records items that can never be synced (a malformed message) as one
    /// dead task of `run_id`, each with its `error`.
    pub async fn enqueue_dead(
        &self,
        job: &str,
        run_id: i64,
        items: &[Item],
    ) -> Result<(), StateError> {
        if items.is_empty() {
            return Ok(());
        }
        let now = now_millis();
        let mut a = args();
        a.push(job.to_string());
        a.push(run_id);
        a.push(items.len() as i64);
        a.push(now);
        a.push(first_error(items));
        let mut tx = self.write_tx().await?;
        let row = sqlx::query_with(
            "INSERT INTO ferry_tasks (job, run_id, state, item_count, attempts, created_at, run_after, last_error) \
             VALUES ($1, $2, 'dead', $3, 0, $4, $4, $5) RETURNING id",
            a,
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        self.put_items(&mut tx, row.get(0), json_param(&items))
            .await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(())
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

    /// Forgets finished tasks older than `age` (their items were already
    /// cleared), finished runs older than `runs_age`, and ledger rows of
    /// deletes already synced — in batches of 1000, so it never holds a lock long.
    pub async fn purge(&self, age: Duration, runs_age: Duration) -> Result<u64, StateError> {
        let tasks_before = now_millis() - age.as_millis() as i64;
        let runs_before = now_millis() - runs_age.as_millis() as i64;
        let statements = [
            ("DELETE FROM ferry_tasks WHERE id IN (SELECT id FROM ferry_tasks WHERE state = 'done' AND finished_at < $1 LIMIT 1000)", tasks_before),
            ("DELETE FROM ferry_runs WHERE id IN (SELECT id FROM ferry_runs WHERE finished_at < $1 LIMIT 1000)", runs_before),
        ];
        let mut total = 0;
        let mut tasks_purged = 0;
        for (sql, before) in statements {
            for _ in 0..100 {
                let mut a = args();
                a.push(before);
                let n = sqlx::query_with(sql, a)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.err(e))?
                    .rows_affected();
                total += n;
                if sql.contains("ferry_tasks") {
                    tasks_purged += n;
                }
                if n < 1000 {
                    break;
                }
            }
        }
        // Finished tasks leave dead row versions behind; under churn the
        // table would grow until autovacuum's next visit.
        if tasks_purged > 0 && self.backend == Backend::Postgres {
            sqlx::raw_sql("VACUUM ferry_tasks, ferry_task_items")
                .execute(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        }
        total += self.purge_settled_deletes().await?;
        Ok(total)
    }

    /// The items (JSON text) of each of the tasks `ids` that holds some.
    async fn items_of(
        &self,
        tx: &mut Transaction<'_, Any>,
        ids: &[i64],
    ) -> Result<HashMap<i64, String>, StateError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let (ids, a) = self.task_ids(ids);
        let sql = format!("SELECT task_id, items FROM ferry_task_items WHERE task_id IN {ids}");
        let rows = sqlx::query_with(&sql, a)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// A subquery of the task ids `ids`, bound as one parameter (`$1`), and
    /// its arguments.
    fn task_ids(&self, ids: &[i64]) -> (String, sqlx::any::AnyArguments<'static>) {
        let subquery = format!(
            "(SELECT id FROM {} AS x)",
            self.json_rows(1, &[("id", Kind::Int)])
        );
        let mut a = args();
        a.push(json_param(&ids.iter().map(|id| [id]).collect::<Vec<_>>()));
        (subquery, a)
    }

    /// Stores a task's items, replacing those it held.
    /// A new pending task holding `items`, each given the job's next
    /// version, in the caller's transaction.
    pub(super) async fn enqueue(
        &self,
        tx: &mut Transaction<'static, Any>,
        job: &str,
        run_id: i64,
        items: &mut [Item],
        now: i64,
    ) -> Result<i64, StateError> {
        let mut a = args();
        a.push(items.len() as i64);
        a.push(job.to_string());
        let row = sqlx::query_with("UPDATE ferry_jobs SET next_version = next_version + $1 WHERE job = $2 RETURNING next_version", a)
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| self.err(e))?;
        let last: i64 = row.get(0);
        let first = last - items.len() as i64 + 1;
        for (i, item) in items.iter_mut().enumerate() {
            item.version = first + i as i64;
        }
        // Items are plain JSON values; serialising them cannot fail.
        let payload = serde_json::to_string(&items).expect("items serialise");
        let mut a = args();
        a.push(job.to_string());
        a.push(run_id);
        a.push(items.len() as i64);
        a.push(now);
        let row = sqlx::query_with(
            "INSERT INTO ferry_tasks (job, run_id, state, item_count, created_at, run_after, stale_check) VALUES ($1, $2, 'pending', $3, $4, $4, 0) RETURNING id",
            a,
        )
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| self.err(e))?;
        let task: i64 = row.get(0);
        self.put_items(tx, task, payload).await?;
        Ok(task)
    }

    /// The job's open tasks older than `task` may hold items a newer
    /// detection superseded: they check before writing.
    pub(super) async fn mark_older_stale(
        &self,
        tx: &mut Transaction<'static, Any>,
        job: &str,
        task: i64,
    ) -> Result<(), StateError> {
        let mut a = args();
        a.push(job.to_string());
        a.push(task);
        sqlx::query_with(
            "UPDATE ferry_tasks SET stale_check = 1 WHERE job = $1 AND id < $2 AND state IN ('pending', 'running', 'failed')",
            a,
        )
        .execute(&mut **tx)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(super) async fn put_items(
        &self,
        tx: &mut Transaction<'_, Any>,
        task_id: i64,
        items: String,
    ) -> Result<(), StateError> {
        let mut a = args();
        a.push(task_id);
        a.push(items);
        sqlx::query_with(
            "INSERT INTO ferry_task_items (task_id, items) VALUES ($1, $2) \
             ON CONFLICT (task_id) DO UPDATE SET items = excluded.items",
            a,
        )
        .execute(&mut **tx)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forgets the items of the tasks `ids` (done or discarded).
    pub(super) async fn drop_items(
        &self,
        tx: &mut Transaction<'_, Any>,
        ids: &[i64],
    ) -> Result<(), StateError> {
        if ids.is_empty() {
            return Ok(());
        }
        let (ids, a) = self.task_ids(ids);
        let sql = format!("DELETE FROM ferry_task_items WHERE task_id IN {ids}");
        sqlx::query_with(&sql, a)
            .execute(&mut **tx)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
