//! The per-key ledger (what was detected and what was synced, by content hash
//! and version), watermarks, and the one transaction that enqueues changes.
use std::collections::HashMap;

use sqlx::Row;

use super::{args, placeholders, Bind, StateError, Store};
use crate::model::{now_millis, Item};

/// Rows per multi-row statement: well inside both backends' parameter limits.
const CHUNK: usize = 500;

/// What the ledger knows about one key.
#[derive(Debug, Clone, Copy)]
pub struct LedgerEntry {
    pub detected_hash: i64,
    pub detected_version: i64,
    pub synced_version: Option<i64>,
    pub deleted: bool,
}

/// A key a diff scan saw unchanged: only its `seen_run` moves.
#[derive(Debug, Clone)]
pub struct SeenKey(pub String);

/// One detection step, committed atomically: the changes become one task,
/// the ledger learns their hashes, and the watermark advances.
#[derive(Debug, Default)]
pub struct DetectedBatch {
    /// Changes; their `version` is assigned on commit.
    pub items: Vec<Item>,
    /// Ledger text of each item's key, parallel to `items`.
    pub keys: Vec<String>,
    /// Unchanged keys a diff scan saw (marked with the run id).
    pub seen: Vec<SeenKey>,
    pub watermark: Option<String>,
}

impl Store {
    pub async fn ensure_job(&self, job: &str) -> Result<(), StateError> {
        let mut a = args();
        a.push(job.to_string());
        sqlx::query_with(
            "INSERT INTO ferry_jobs (job) VALUES ($1) ON CONFLICT (job) DO NOTHING",
            a,
        )
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub async fn watermark(&self, job: &str) -> Result<Option<String>, StateError> {
        let mut a = args();
        a.push(job.to_string());
        let row = sqlx::query_with("SELECT cursor FROM ferry_watermarks WHERE job = $1", a)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Ledger entries for `keys` (ledger text form); keys never seen are absent.
    pub async fn ledger(
        &self,
        job: &str,
        keys: &[String],
    ) -> Result<HashMap<String, LedgerEntry>, StateError> {
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(CHUNK) {
            let sql = format!(
                "SELECT key, detected_hash, detected_version, synced_version, deleted FROM ferry_ledger WHERE job = $1 AND key IN ({})",
                placeholders(2, chunk.len())
            );
            let mut a = args();
            a.push(job.to_string());
            for k in chunk {
                a.push(k.clone());
            }
            let rows = sqlx::query_with(&sql, a)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
            for r in rows {
                out.insert(
                    r.get::<String, _>(0),
                    LedgerEntry {
                        detected_hash: r.get(1),
                        detected_version: r.get(2),
                        synced_version: r.get(3),
                        deleted: r.get::<i64, _>(4) != 0,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Keys the ledger holds as present.
    pub async fn live_count(&self, job: &str) -> Result<i64, StateError> {
        let mut a = args();
        a.push(job.to_string());
        let row = sqlx::query_with(
            "SELECT count(*) FROM ferry_ledger WHERE job = $1 AND deleted = 0",
            a,
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.get::<i64, _>(0))
    }

    /// Present keys that run `run_id` did not see, after `after` in key order.
    pub async fn unseen_keys(
        &self,
        job: &str,
        run_id: i64,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        let mut a = args();
        a.push(job.to_string());
        a.push(run_id);
        a.push(after.to_string());
        a.push(limit as i64);
        let rows = sqlx::query_with(
            "SELECT key FROM ferry_ledger WHERE job = $1 AND deleted = 0 AND (seen_run IS NULL OR seen_run <> $2) AND key > $3 ORDER BY key LIMIT $4",
            a,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(rows.into_iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// Commits one detection step in a single transaction: versions for the
    /// items, one pending task holding them, the ledger, the watermark.
    /// Returns the task id, if there were changes.
    pub async fn commit_detected(
        &self,
        job: &str,
        run_id: i64,
        batch: &mut DetectedBatch,
    ) -> Result<Option<i64>, StateError> {
        let now = now_millis();
        let mut tx = self.write_tx().await?;
        let mut task_id = None;
        if !batch.items.is_empty() {
            let mut a = args();
            a.push(batch.items.len() as i64);
            a.push(job.to_string());
            let row = sqlx::query_with("UPDATE ferry_jobs SET next_version = next_version + $1 WHERE job = $2 RETURNING next_version", a)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            let last: i64 = row.get(0);
            let first = last - batch.items.len() as i64 + 1;
            for (i, item) in batch.items.iter_mut().enumerate() {
                item.version = first + i as i64;
            }
            // Items are plain JSON values; serialising them cannot fail.
            let payload = serde_json::to_string(&batch.items).expect("items serialise");
            let mut a = args();
            a.push(job.to_string());
            a.push(run_id);
            a.push(batch.items.len() as i64);
            a.push(payload);
            a.push(now);
            let row = sqlx::query_with(
                "INSERT INTO ferry_tasks (job, run_id, state, item_count, items, created_at, run_after) VALUES ($1, $2, 'pending', $3, $4, $5, $5) RETURNING id",
                a,
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
            task_id = Some(row.get::<i64, _>(0));

            for (items, keys) in batch.items.chunks(CHUNK).zip(batch.keys.chunks(CHUNK)) {
                let values = (0..items.len())
                    .map(|i| {
                        let b = 3 + i * 4;
                        format!("($1, ${b}, ${}, ${}, $2, ${})", b + 1, b + 2, b + 3)
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "INSERT INTO ferry_ledger (job, key, detected_hash, detected_version, seen_run, deleted) VALUES {values} \
                     ON CONFLICT (job, key) DO UPDATE SET detected_hash = excluded.detected_hash, \
                     detected_version = excluded.detected_version, seen_run = excluded.seen_run, deleted = excluded.deleted"
                );
                let mut a = args();
                a.push(job.to_string());
                a.push(run_id);
                for (item, key) in items.iter().zip(keys) {
                    a.push(key.clone());
                    a.push(crate::model::parse_hash(&item.hash));
                    a.push(item.version);
                    a.push(i64::from(item.op == crate::model::Op::Delete));
                }
                sqlx::query_with(&sql, a)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
        }
        for chunk in batch.seen.chunks(CHUNK) {
            let sql = format!(
                "UPDATE ferry_ledger SET seen_run = $1 WHERE job = $2 AND key IN ({})",
                placeholders(3, chunk.len())
            );
            let mut a = args();
            a.push(run_id);
            a.push(job.to_string());
            for k in chunk {
                a.push(k.0.clone());
            }
            sqlx::query_with(&sql, a)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        if let Some(w) = &batch.watermark {
            let mut a = args();
            a.push(job.to_string());
            a.push(w.clone());
            a.push(now);
            sqlx::query_with(
                "INSERT INTO ferry_watermarks (job, cursor, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (job) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                a,
            )
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(task_id)
    }
}
