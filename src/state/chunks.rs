//! The snapshot lane's half of the queue: a snapshot's chunk tasks, created
//! with its record in one transaction, and what a chunk's writes leave in
//! the ledger (each key as detected and synced at once, in bulk).
use sqlx::Row;

use super::ledger::{synced_rows, SYNCED_COLUMNS};
use super::queue::{ClaimedTask, Settlement, Synced};
use super::{args, json_param, Bind, DetectedBatch, IntegerKeys, Kind, StateError, Store};
use crate::model::{key_text, now_millis, Item};

/// A snapshot about to start: what `start_chunked_snapshot` records.
#[derive(Debug)]
pub struct NewSnapshot<'a> {
    pub job: &'a str,
    pub run_id: i64,
    /// The part of the source, as JSON (a `Subset`).
    pub scope: &'a str,
    /// Each chunk task's part of the source, as JSON, with its expected rows.
    pub chunks: Vec<(String, i64)>,
    pub rows: i64,
    /// A cursor job's first run: the cursor's largest value now, where its
    /// incremental runs start (recorded as the job's watermark).
    pub watermark: Option<String>,
    /// The job's first run: its rows are new to the target.
    pub first_run: bool,
}

/// How far a snapshot's chunk tasks are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkCounts {
    /// Pending, running, or failed and waiting for a retry.
    pub open: i64,
    pub dead: i64,
    pub done: i64,
    /// Rows written by the done chunks.
    pub rows_done: i64,
}

impl Store {
    /// Records a snapshot and enqueues its chunk tasks in one transaction,
    /// before anything is read: a killed snapshot resumes with the chunks
    /// left. Older open tasks of the job check for superseded items before
    /// they write. Returns the snapshot's id.
    pub async fn start_chunked_snapshot(&self, s: &NewSnapshot<'_>) -> Result<i64, StateError> {
        let now = now_millis();
        let mut tx = self.write_tx().await?;
        let mut a = args();
        a.push(s.job.to_string());
        let floor: i64 = sqlx::query_with("SELECT next_version FROM ferry_jobs WHERE job = $1", a)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.err(e))?
            .get(0);
        let mut a = args();
        a.push(s.job.to_string());
        a.push(s.scope.to_string());
        a.push(now);
        a.push(s.run_id);
        a.push(s.watermark.clone());
        a.push(floor);
        a.push(s.chunks.len() as i64);
        a.push(s.rows);
        a.push(i64::from(s.first_run));
        let id: i64 = sqlx::query_with(
            "INSERT INTO ferry_snapshots (job, scope, started_at, run_id, lane, watermark, version_floor, chunks, rows, first_run) \
             VALUES ($1, $2, $3, $4, 'chunks', $5, $6, $7, $8, $9) RETURNING id",
            a,
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| self.err(e))?
        .get(0);
        let sql = format!(
            "INSERT INTO ferry_tasks (job, run_id, state, item_count, created_at, run_after, stale_check, chunk, snapshot_id) \
             SELECT $1, $2, 'pending', x.rows, $3, $3, 0, x.chunk, $4 FROM {} AS x ORDER BY x.n",
            self.json_rows(5, &[("n", Kind::Int), ("chunk", Kind::Text), ("rows", Kind::Int)])
        );
        let rows: Vec<(usize, &str, i64)> = s
            .chunks
            .iter()
            .enumerate()
            .map(|(n, (chunk, rows))| (n, chunk.as_str(), *rows))
            .collect();
        let mut a = args();
        a.push(s.job.to_string());
        a.push(s.run_id);
        a.push(now);
        a.push(id);
        a.push(json_param(&rows));
        sqlx::query_with(&sql, a)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let mut a = args();
        a.push(s.job.to_string());
        a.push(id);
        sqlx::query_with(
            "UPDATE ferry_tasks SET stale_check = 1 WHERE job = $1 AND (snapshot_id IS NULL OR snapshot_id <> $2) \
             AND state IN ('pending', 'running', 'failed')",
            a,
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        if let Some(w) = &s.watermark {
            self.set_watermark(&mut tx, s.job, w, now).await?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(id)
    }

    /// `n` new versions of the job for one part of a chunk, the first
    /// returned: above every change detected before, so the part's rows
    /// supersede them.
    pub async fn allocate_versions(&self, job: &str, n: u64) -> Result<i64, StateError> {
        let mut a = args();
        a.push(n as i64);
        a.push(job.to_string());
        let row = sqlx::query_with(
            "UPDATE ferry_jobs SET next_version = next_version + $1 WHERE job = $2 RETURNING next_version",
            a,
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.get::<i64, _>(0) - n as i64 + 1)
    }

    /// Records what one part of a held chunk task came to, in one
    /// transaction fenced by the chunk's lease token (extended by `lease_ms`):
    /// the ledger learns each synced key as detected and synced; items to
    /// retry become a failed item task, dead items a dead one, each key
    /// recorded as detected. False, and nothing written, when the lease
    /// was lost.
    pub async fn settle_chunk_part(
        &self,
        chunk: &ClaimedTask,
        s: &Settlement,
        lease_ms: i64,
        new_keys: bool,
    ) -> Result<bool, StateError> {
        let now = now_millis();
        let mut tx = self.write_tx().await?;
        let mut a = args();
        a.push(now + lease_ms);
        a.push(chunk.id);
        a.push(chunk.token);
        let held = sqlx::query_with(
            "UPDATE ferry_tasks SET lease_expires_at = $1 WHERE id = $2 AND lease_token = $3 AND state = 'running'",
            a,
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?
        .rows_affected();
        if held != 1 {
            tx.rollback().await.map_err(|e| self.err(e))?;
            return Ok(false);
        }
        self.record_snapshot_synced(&mut tx, &chunk.job, &s.synced, new_keys)
            .await?;
        for (state, items, run_after, error) in [
            ("dead", &s.dead, now, None),
            ("failed", &s.retry, s.retry_at_ms, s.retry_error.clone()),
        ] {
            if items.is_empty() {
                continue;
            }
            let error = error.or_else(|| items.iter().find_map(|i| i.error.clone()));
            let mut a = args();
            a.push(chunk.job.clone());
            a.push(chunk.run_id);
            a.push(state.to_string());
            a.push(items.len() as i64);
            a.push(chunk.attempts);
            a.push(now);
            a.push(run_after);
            a.push(error);
            let task: i64 = sqlx::query_with(
                "INSERT INTO ferry_tasks (job, run_id, state, item_count, attempts, created_at, run_after, last_error) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                a,
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.err(e))?
            .get(0);
            self.put_items(&mut tx, task, json_param(items)).await?;
            let mut batch = queued(items);
            self.record_detected(&mut tx, &chunk.job, &mut batch, task)
                .await?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(true)
    }

    /// Each key as detected and synced at its chunk's version; an entry at
    /// a later version (a newer attempt's) is left alone. `new_keys`: the
    /// ledger most likely lacks every key (a first run's snapshot), so a
    /// plain insert is tried first, under a savepoint: on PostgreSQL it
    /// costs the server 40% of the upsert (no speculative insertion); a key
    /// there already (the chunk ran before) rolls it back, and the upsert
    /// runs.
    async fn record_snapshot_synced(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        job: &str,
        synced: &[Synced],
        new_keys: bool,
    ) -> Result<(), StateError> {
        if synced.is_empty() {
            return Ok(());
        }
        self.forget_digests_in(tx, job).await?;
        let insert = format!(
            "INSERT INTO ferry_ledger (job, key, detected_hash, detected_version, synced_hash, synced_version, written, deleted, source_hash) \
             SELECT $1, key, hash, version, NULL, version, written, 0, source_hash FROM {} AS x WHERE true",
            self.json_rows(2, SYNCED_COLUMNS)
        );
        let rows = synced_rows(synced);
        let bound = || {
            let mut a = args();
            a.push(job.to_string());
            a.push(rows.clone());
            a
        };
        if new_keys {
            let mut savepoint = sqlx::Acquire::begin(&mut **tx)
                .await
                .map_err(|e| self.err(e))?;
            match sqlx::query_with(&insert, bound())
                .execute(&mut *savepoint)
                .await
            {
                Ok(_) => return savepoint.commit().await.map_err(|e| self.err(e)),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    savepoint.rollback().await.map_err(|e| self.err(e))?;
                }
                Err(e) => return Err(self.err(e)),
            }
        }
        let upsert = format!(
            "{insert} ON CONFLICT (job, key) DO UPDATE SET detected_hash = excluded.detected_hash, \
             detected_version = excluded.detected_version, synced_hash = excluded.synced_hash, \
             synced_version = excluded.synced_version, written = excluded.written, deleted = 0, discarded = 0, \
             source_hash = excluded.source_hash WHERE ferry_ledger.detected_version <= excluded.detected_version"
        );
        sqlx::query_with(&upsert, bound())
            .execute(&mut **tx)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A held chunk task whose every part is settled: done, counting
    /// `rows`. False when another worker holds it now.
    pub async fn complete_chunk(&self, chunk: &ClaimedTask, rows: u64) -> Result<bool, StateError> {
        let now = now_millis();
        let mut a = args();
        a.push(rows as i64);
        a.push(now);
        a.push(chunk.id);
        a.push(chunk.token);
        let r = sqlx::query_with(
            "UPDATE ferry_tasks SET state = 'done', item_count = $1, last_error = NULL, finished_at = $2, \
             lease_owner = NULL, lease_expires_at = NULL WHERE id = $3 AND lease_token = $4 AND state = 'running'",
            a,
        )
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(r.rows_affected() == 1)
    }

    /// A held chunk task that failed: read again from `retry_at_ms`, or
    /// `dead` once its attempts are spent. What its settled parts wrote stays.
    pub async fn fail_chunk(
        &self,
        chunk: &ClaimedTask,
        retry_at_ms: i64,
        error: &str,
        dead: bool,
    ) -> Result<bool, StateError> {
        let mut a = args();
        a.push(if dead { "dead" } else { "failed" }.to_string());
        a.push(retry_at_ms);
        a.push(error.to_string());
        a.push(chunk.id);
        a.push(chunk.token);
        let r = sqlx::query_with(
            "UPDATE ferry_tasks SET state = $1, run_after = $2, last_error = $3, lease_owner = NULL, \
             lease_expires_at = NULL WHERE id = $4 AND lease_token = $5 AND state = 'running'",
            a,
        )
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(r.rows_affected() == 1)
    }

    /// Whether the snapshot is its job's first run.
    pub async fn snapshot_is_first_run(&self, snapshot_id: i64) -> Result<bool, StateError> {
        let mut a = args();
        a.push(snapshot_id);
        let first: Option<i64> =
            sqlx::query_scalar_with("SELECT first_run FROM ferry_snapshots WHERE id = $1", a)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        Ok(first == Some(1))
    }

    /// The snapshot's chunk tasks by how far they are.
    pub async fn chunk_counts(&self, snapshot_id: i64) -> Result<ChunkCounts, StateError> {
        let mut a = args();
        a.push(snapshot_id);
        let rows = sqlx::query_with(
            "SELECT state, count(*), CAST(coalesce(sum(item_count), 0) AS BIGINT) FROM ferry_tasks \
             WHERE snapshot_id = $1 AND chunk IS NOT NULL GROUP BY state",
            a,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let mut counts = ChunkCounts::default();
        for r in rows {
            let n: i64 = r.get(1);
            match r.get::<String, _>(0).as_str() {
                "done" => {
                    counts.done += n;
                    counts.rows_done += r.get::<i64, _>(2);
                }
                "dead" => counts.dead += n,
                _ => counts.open += n,
            }
        }
        Ok(counts)
    }

    /// Live ledger keys of `job` that no chunk of the snapshot whose
    /// versions are above `floor` wrote or queued: the source lacked them.
    /// `within`: only integer keys in that range (and keys of other kinds).
    pub async fn keys_not_seen_since(
        &self,
        job: &str,
        floor: i64,
        within: Option<IntegerKeys>,
    ) -> Result<Vec<String>, StateError> {
        let mut a = args();
        a.push(job.to_string());
        a.push(floor);
        let filter = match within {
            Some(range) => {
                a.push(range.lo);
                a.push(range.hi);
                IntegerKeys::filter(self.backend, 3, 4)
            }
            None => String::new(),
        };
        let sql = format!(
            "SELECT key FROM ferry_ledger WHERE job = $1 AND deleted = 0 AND detected_version <= $2{filter} ORDER BY key"
        );
        let rows = sqlx::query_with(&sql, a)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

/// Items about to be queued by a chunk, as a detection records them.
fn queued(items: &[Item]) -> DetectedBatch {
    DetectedBatch {
        items: items.to_vec(),
        keys: items.iter().map(|i| key_text(&i.key)).collect(),
        supersedes: Some(true),
        ..Default::default()
    }
}
