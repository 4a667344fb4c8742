//! The per-key ledger (what was detected and what was synced, by content hash
//! and version), watermarks, and the one transaction that enqueues changes.
use std::collections::HashMap;

use sqlx::{Any, Row, Transaction};

use super::queue::Synced;
use super::{args, json_param, Backend, Bind, Kind, StateError, Store};
use crate::model::{now_millis, parse_hash, Item, Op};

/// What the ledger knows about one key.
#[derive(Debug, Clone, Copy)]
pub struct LedgerEntry {
    pub detected_hash: i64,
    pub detected_version: i64,
    pub synced_version: Option<i64>,
    pub deleted: bool,
    /// The hash the source's database computed of the row detected last
    /// (the diff's pushdown); None when unknown.
    pub source_hash: Option<i64>,
}

impl LedgerEntry {
    /// A change of the key is detected and not yet synced: a task holds it.
    pub fn queued(&self) -> bool {
        self.synced_version < Some(self.detected_version)
    }
}

/// An entry with what ferry last wrote for its key (the `written` JSON of
/// [`Synced`]).
pub type WrittenEntry = (LedgerEntry, Option<String>);

/// What an item of a key may carry of its entry (see [`Item::prior`]):
/// nothing while another change of the key is queued (that change's settle
/// rewrites it first) or when the ledger did not know the key.
pub fn carried_prior(found: Option<&WrittenEntry>) -> Option<Option<String>> {
    match found {
        Some((entry, written)) if !entry.queued() => Some(written.clone()),
        _ => None,
    }
}

/// One detection step, committed atomically: the changes become one task,
/// the ledger learns their hashes, and the watermark advances.
#[derive(Debug, Default)]
pub struct DetectedBatch {
    /// Changes; their `version` is assigned on commit.
    pub items: Vec<Item>,
    /// Ledger text of each item's key, parallel to `items`.
    pub keys: Vec<String>,
    pub watermark: Option<String>,
    /// Whether an item replaces a version of its key that is still queued:
    /// `Some` when detection read the ledger, `None` when the commit must
    /// find out. Older open tasks of the job are then marked to be checked
    /// for superseded items before they write.
    pub supersedes: Option<bool>,
    /// No key of the batch is in the ledger as far as detection knows: the
    /// job's ledger was empty when this detection began. The ledger insert
    /// then goes without a conflict check (on PostgreSQL a speculative
    /// insertion per row, 40% of the insert's time) and is retried with one
    /// should a key be there after all (a source that repeats a key).
    pub keys_unseen: bool,
    /// The diff's pushdown keeps the job's range digests itself; any other
    /// detection forgets them (see `state::digests`).
    pub keeps_digests: bool,
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

    /// Ledger entries for `keys` (ledger text form) with what ferry last
    /// wrote for each; keys never seen are absent.
    pub async fn ledger_written(
        &self,
        job: &str,
        keys: &[String],
    ) -> Result<HashMap<String, WrittenEntry>, StateError> {
        let mut out = HashMap::with_capacity(keys.len());
        if keys.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT key, detected_hash, detected_version, synced_version, deleted, source_hash, {} FROM ferry_ledger \
             WHERE job = $1 AND key IN {}",
            self.hex_of("written"),
            self.json_strings(2)
        );
        let mut a = args();
        a.push(job.to_string());
        a.push(json_param(&keys));
        let rows = sqlx::query_with(&sql, a)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        for r in rows {
            out.insert(
                r.get::<String, _>(0),
                (entry_of(&r, 1), r.get::<Option<String>, _>(6)),
            );
        }
        Ok(out)
    }

    /// Whether ferry recorded what it wrote for any key of `job`: until it
    /// has, no write can meet a conflict and sync skips the lookups.
    pub async fn ledger_has_written(&self, job: &str) -> Result<bool, StateError> {
        let mut a = args();
        a.push(job.to_string());
        let row = sqlx::query_with(
            "SELECT count(*) FROM (SELECT 1 FROM ferry_ledger WHERE job = $1 AND written IS NOT NULL LIMIT 1) AS any_key",
            a,
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.get::<i64, _>(0) > 0)
    }

    /// Whether the ledger knows any key of `job` (a first run needs no lookups).
    pub async fn ledger_is_empty(&self, job: &str) -> Result<bool, StateError> {
        let mut a = args();
        a.push(job.to_string());
        let row = sqlx::query_with(
            "SELECT count(*) FROM (SELECT 1 FROM ferry_ledger WHERE job = $1 LIMIT 1) AS any_key",
            a,
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.get::<i64, _>(0) == 0)
    }

    /// Fresh planner statistics for the ledger (PostgreSQL; SQLite's plans
    /// do not depend on them). A ledger that grew from nothing within one
    /// run is planned as nearly empty until autovacuum next analyzes it, up
    /// to a minute later: a diff right after walked 1M keys through an
    /// on-disk sort (0.95 s) instead of the key index (0.47 s). Waits at
    /// most two seconds for a lock (autovacuum or another replica at work).
    pub async fn refresh_ledger_statistics(&self) -> Result<(), StateError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        for statement in ["SET LOCAL lock_timeout = '2s'", "ANALYZE ferry_ledger"] {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
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

    /// Commits one detection step in a single transaction: versions for the
    /// items, one pending task holding them, the ledger, the watermark.
    /// Returns the task id, if there were changes.
    pub async fn commit_detected(
        &self,
        job: &str,
        run_id: i64,
        batch: &mut DetectedBatch,
    ) -> Result<Option<i64>, StateError> {
        match self.commit_detected_once(job, run_id, batch).await {
            // The transaction rolled back whole; the retry checks every key.
            Err(e) if batch.keys_unseen && e.is_unique_violation() => {
                batch.keys_unseen = false;
                self.commit_detected_once(job, run_id, batch).await
            }
            done => done,
        }
    }

    async fn commit_detected_once(
        &self,
        job: &str,
        run_id: i64,
        batch: &mut DetectedBatch,
    ) -> Result<Option<i64>, StateError> {
        let now = now_millis();
        let mut tx = self.write_tx().await?;
        let mut task_id = None;
        if !batch.items.is_empty() {
            let new_task = self
                .enqueue(&mut tx, job, run_id, &mut batch.items, now)
                .await?;
            task_id = Some(new_task);
            self.record_detected(&mut tx, job, batch, new_task).await?;
        }
        if let Some(w) = &batch.watermark {
            self.set_watermark(&mut tx, job, w, now).await?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(task_id)
    }

    pub(super) async fn set_watermark(
        &self,
        tx: &mut Transaction<'static, Any>,
        job: &str,
        cursor: &str,
        now: i64,
    ) -> Result<(), StateError> {
        let mut a = args();
        a.push(job.to_string());
        a.push(cursor.to_string());
        a.push(now);
        sqlx::query_with(
            "INSERT INTO ferry_watermarks (job, cursor, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (job) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
            a,
        )
        .execute(&mut **tx)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The batch's changes as the keys' latest detected ones. When a key was
    /// known, older tasks are marked to check for superseded items first.
    pub(super) async fn record_detected(
        &self,
        tx: &mut Transaction<'static, Any>,
        job: &str,
        batch: &mut DetectedBatch,
        new_task: i64,
    ) -> Result<(), StateError> {
        if !batch.keeps_digests {
            self.forget_digests_in(tx, job).await?;
        }
        let rows: Vec<(&String, i64, i64, i64, Option<i64>)> = batch
            .items
            .iter()
            .zip(&batch.keys)
            .map(|(item, key)| {
                (
                    key,
                    parse_hash(&item.hash),
                    item.version,
                    i64::from(item.op == Op::Delete),
                    item.source_hash,
                )
            })
            .collect();
        let insert = format!(
            "INSERT INTO ferry_ledger (job, key, detected_hash, detected_version, deleted, source_hash) \
             SELECT $1, key, hash, version, deleted, source_hash FROM {} AS x",
            self.json_rows(
                2,
                &[
                    ("key", Kind::Text),
                    ("hash", Kind::Int),
                    ("version", Kind::Int),
                    ("deleted", Kind::Int),
                    ("source_hash", Kind::Int)
                ]
            )
        );
        let select = format!("{insert} WHERE true ON CONFLICT (job, key) ");
        let rows = json_param(&rows);
        let ledger_args = || {
            let mut a = args();
            a.push(job.to_string());
            a.push(rows.clone());
            a
        };
        // Without a lookup, a plain insert tells whether any key was known.
        let mut known_keys = true;
        if batch.supersedes.is_none() {
            let insert_new = match batch.keys_unseen {
                true => insert,
                false => format!("{select}DO NOTHING"),
            };
            let inserted = sqlx::query_with(&insert_new, ledger_args())
                .execute(&mut **tx)
                .await
                .map_err(|e| self.err(e))?
                .rows_affected();
            known_keys = inserted < batch.items.len() as u64;
            batch.supersedes = Some(known_keys);
        }
        // Older tasks before ledger rows: the order a settling worker
        // takes them in (its task, then the ledger), so the two never
        // wait on each other in a cycle.
        if batch.supersedes == Some(true) {
            self.mark_older_stale(tx, job, new_task).await?;
        }
        if known_keys {
            let upsert = format!(
                "{select}DO UPDATE SET {SYNCED_HASH_KEPT}, detected_hash = excluded.detected_hash, \
                 detected_version = excluded.detected_version, deleted = excluded.deleted, \
                 source_hash = excluded.source_hash"
            );
            sqlx::query_with(&upsert, ledger_args())
                .execute(&mut **tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// The ledger learns what the target holds; a version never moves back.
    /// Detection wrote each key's entry, so an update finds them all; an
    /// upsert runs only for what it did not change (an entry gone since, or
    /// a newer version already recorded), as its conflict check costs
    /// PostgreSQL a sixth more per row than the update's join.
    pub(super) async fn record_synced(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        job: &str,
        synced: &[Synced],
    ) -> Result<(), StateError> {
        if synced.is_empty() {
            return Ok(());
        }
        let rows = self.json_rows(2, SYNCED_COLUMNS);
        // Materialized: else SQLite puts the ledger in the outer loop and
        // scans every key of the job for each statement.
        let update = format!(
            "WITH x AS MATERIALIZED {rows} \
             UPDATE ferry_ledger SET synced_hash = {SYNCED_HASH_OF_X}, synced_version = x.version, written = x.written, discarded = 0 FROM x \
             WHERE ferry_ledger.job = $1 AND ferry_ledger.key = x.key \
             AND (ferry_ledger.synced_version IS NULL OR ferry_ledger.synced_version < x.version)"
        );
        let upsert = format!(
            "INSERT INTO ferry_ledger (job, key, detected_hash, detected_version, synced_version, written) \
             SELECT $1, key, hash, version, version, written FROM {rows} AS x WHERE true \
             ON CONFLICT (job, key) DO UPDATE SET synced_hash = {SYNCED_HASH_OF_EXCLUDED}, synced_version = excluded.synced_version, written = excluded.written, discarded = 0 \
             WHERE ferry_ledger.synced_version IS NULL OR ferry_ledger.synced_version < excluded.synced_version"
        );
        let rows = synced_rows(synced);
        for sql in [update, upsert] {
            let mut a = args();
            a.push(job.to_string());
            a.push(rows.clone());
            let changed = sqlx::query_with(&sql, a)
                .execute(&mut **tx)
                .await
                .map_err(|e| self.err(e))?
                .rows_affected();
            if changed == synced.len() as u64 {
                break;
            }
            // The upsert may add live keys the digests do not count.
            self.forget_digests_in(tx, job).await?;
        }
        Ok(())
    }

    /// Records the source's hash of keys whose rows detection read and found
    /// unchanged: (key, the entry's `detected_hash` then, source hash). An
    /// entry detected again since (another hash) is left as it is.
    pub async fn record_source_hashes(
        &self,
        job: &str,
        known: &[(String, i64, i64)],
    ) -> Result<(), StateError> {
        if known.is_empty() {
            return Ok(());
        }
        let rows = self.json_rows(
            2,
            &[
                ("key", Kind::Text),
                ("detected", Kind::Int),
                ("hash", Kind::Int),
            ],
        );
        // Materialized: else SQLite scans every key of the job per statement.
        let sql = format!(
            "WITH x AS MATERIALIZED {rows} \
             UPDATE ferry_ledger SET source_hash = x.hash FROM x \
             WHERE ferry_ledger.job = $1 AND ferry_ledger.key = x.key AND ferry_ledger.detected_hash = x.detected"
        );
        let mut a = args();
        a.push(job.to_string());
        a.push(json_param(&known));
        sqlx::query_with(&sql, a)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Deletes that reached the target leave nothing to remember: their
    /// entries go, a thousand at a time.
    pub(super) async fn purge_settled_deletes(&self) -> Result<u64, StateError> {
        let mut total = 0;
        for _ in 0..100 {
            let n = sqlx::query(
                "DELETE FROM ferry_ledger WHERE (job, key) IN (SELECT job, key FROM ferry_ledger \
                 WHERE deleted = 1 AND synced_version = detected_version LIMIT 1000)",
            )
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?
            .rows_affected();
            total += n;
            if n < 1000 {
                break;
            }
        }
        Ok(total)
    }
}

// `synced_hash` is NULL where it equals `detected_hash` (most keys: every
// key whose last detected change is synced), which saves the ledger 8 bytes
// a key. A key whose `synced_version` is NULL was never synced. So whatever
// changes `detected_hash` of a key synced under a NULL `synced_hash` first
// writes the old value out (SYNCED_HASH_KEPT), and a reader takes a NULL
// `synced_hash` of a synced key as its `detected_hash`.

/// Keeps a key's synced hash across a change of its `detected_hash` (an
/// assignment of ON CONFLICT DO UPDATE, where columns are the old row's).
pub(super) const SYNCED_HASH_KEPT: &str = "synced_hash = CASE WHEN ferry_ledger.synced_hash IS NULL \
     AND ferry_ledger.synced_version IS NOT NULL THEN ferry_ledger.detected_hash ELSE ferry_ledger.synced_hash END";

/// The synced hash of a settled row `x.hash`: NULL when it is the key's detected hash.
const SYNCED_HASH_OF_X: &str =
    "CASE WHEN x.hash = ferry_ledger.detected_hash THEN NULL ELSE x.hash END";

/// As [`SYNCED_HASH_OF_X`] where the settled hash is the insert's `detected_hash`.
const SYNCED_HASH_OF_EXCLUDED: &str =
    "CASE WHEN excluded.detected_hash = ferry_ledger.detected_hash \
     THEN NULL ELSE excluded.detected_hash END";

/// The columns of [`synced_rows`], for `json_rows`.
pub(super) const SYNCED_COLUMNS: &[(&str, Kind)] = &[
    ("key", Kind::Text),
    ("hash", Kind::Int),
    ("version", Kind::Int),
    ("written", Kind::Hex),
    ("source_hash", Kind::Int),
];

/// (key, hash, version, written, source hash): one of [`SYNCED_COLUMNS`].
type SyncedRow<'a> = (&'a str, i64, i64, Option<&'a str>, Option<i64>);

/// Synced items as one JSON parameter of [`SYNCED_COLUMNS`] rows.
pub(super) fn synced_rows(synced: &[Synced]) -> String {
    let rows: Vec<SyncedRow> = synced
        .iter()
        .map(|s| {
            let written = s.written.as_deref();
            (s.key.as_str(), s.hash, s.version, written, s.source_hash)
        })
        .collect();
    json_param(&rows)
}

/// A ledger entry from the columns `detected_hash, detected_version,
/// synced_version, deleted, source_hash` starting at `first`.
pub(super) fn entry_of(r: &sqlx::any::AnyRow, first: usize) -> LedgerEntry {
    LedgerEntry {
        detected_hash: r.get(first),
        detected_version: r.get(first + 1),
        synced_version: r.get(first + 2),
        deleted: r.get::<i64, _>(first + 3) != 0,
        source_hash: r.get(first + 4),
    }
}

impl Store {
    /// Records in `job`'s ledger what another job just wrote into its
    /// source: rows with these content hashes are ferry's own writes, which
    /// `job`'s detection then finds unchanged instead of sending them back.
    /// `present`: (key, hash now, hash before the write; None: no row then);
    /// an entry changes only where `job` had seen the row as it was before.
    /// `deleted` keys are gone for the same reason.
    pub async fn mark_echo(
        &self,
        job: &str,
        present: &[(String, i64, Option<i64>)],
        deleted: &[String],
    ) -> Result<(), StateError> {
        if present.is_empty() && deleted.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        self.forget_digests_in(&mut tx, job).await?;
        if !present.is_empty() {
            let rows = self.json_rows(
                2,
                &[
                    ("key", Kind::Text),
                    ("hash", Kind::Int),
                    ("prior", Kind::Int),
                ],
            );
            let new_rows = format!(
                "INSERT INTO ferry_ledger (job, key, detected_hash, detected_version, synced_hash, synced_version) \
                 SELECT $1, key, hash, 0, hash, 0 FROM {rows} AS x WHERE x.prior IS NULL \
                 ON CONFLICT (job, key) DO UPDATE SET detected_hash = excluded.detected_hash, synced_hash = excluded.synced_hash, deleted = 0, \
                 source_hash = NULL WHERE ferry_ledger.deleted = 1"
            );
            // Materialized: else SQLite scans every key of the job per statement.
            let seen_rows = format!(
                "WITH x AS MATERIALIZED {rows} \
                 UPDATE ferry_ledger SET detected_hash = x.hash, synced_hash = x.hash, source_hash = NULL FROM x \
                 WHERE ferry_ledger.job = $1 AND ferry_ledger.key = x.key AND ferry_ledger.detected_hash = x.prior AND ferry_ledger.deleted = 0"
            );
            for sql in [new_rows, seen_rows] {
                let mut a = args();
                a.push(job.to_string());
                a.push(json_param(&present));
                sqlx::query_with(&sql, a)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
        }
        if !deleted.is_empty() {
            let sql = format!(
                "UPDATE ferry_ledger SET deleted = 1 WHERE job = $1 AND key IN {}",
                self.json_strings(2)
            );
            let mut a = args();
            a.push(job.to_string());
            a.push(json_param(&deleted));
            sqlx::query_with(&sql, a)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }
}
