//! The per-key ledger (what was detected and what was synced, by content hash
//! and version), watermarks, and the one transaction that enqueues changes.
use std::collections::HashMap;

use futures::stream::{BoxStream, TryStreamExt};
use sqlx::Row;

use super::{args, json_param, Backend, Bind, Kind, StateError, Store};
use crate::model::{now_millis, parse_hash, Item, Op};

/// Where a ledger walk's reader sends its pages.
type PageSender = tokio::sync::mpsc::Sender<Result<Vec<(String, LedgerEntry)>, StateError>>;

/// What the ledger knows about one key.
#[derive(Debug, Clone, Copy)]
pub struct LedgerEntry {
    pub detected_hash: i64,
    pub detected_version: i64,
    pub synced_version: Option<i64>,
    pub deleted: bool,
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
            "SELECT key, detected_hash, detected_version, synced_version, deleted, written FROM ferry_ledger \
             WHERE job = $1 AND key IN {}",
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
                (entry_of(&r, 1), r.get::<Option<String>, _>(5)),
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

    /// Every ledger entry of `job` in bytewise key order: the order of the
    /// diff strategy's sorted scan. A task of its own reads (and decodes) the
    /// next page while the caller merges this one: the walk is half of a
    /// diff's time after the scan, and on its own it waited for the reads.
    pub fn ledger_in_key_order(
        &self,
        job: &str,
        page_size: usize,
    ) -> BoxStream<'static, Result<(String, LedgerEntry), StateError>> {
        let (pages, mut next) = tokio::sync::mpsc::channel(1);
        let store = self.clone();
        let job = job.to_string();
        tokio::spawn(async move {
            match store.backend {
                Backend::Postgres => store.stream_ledger_pages(job, page_size, pages).await,
                Backend::Sqlite => store.read_ledger_pages(job, page_size, pages).await,
            }
        });
        Box::pin(async_stream::try_stream! {
            while let Some(page) = next.recv().await {
                for entry in page? {
                    yield entry;
                }
            }
        })
    }

    /// PostgreSQL: one query, cut into pages. Keyset pages would each be
    /// planned from statistics that lag behind a freshly filled ledger: a
    /// bitmap scan and sort of every remaining key per page, 230 ms a page
    /// at 1M keys.
    async fn stream_ledger_pages(self, job: String, page_size: usize, pages: PageSender) {
        let mut a = args();
        a.push(job);
        let mut rows = sqlx::query_with(
            "SELECT key, detected_hash, detected_version, synced_version, deleted FROM ferry_ledger WHERE job = $1 ORDER BY key",
            a,
        )
        .fetch(&self.pool);
        let mut page = Vec::with_capacity(page_size);
        loop {
            match rows.try_next().await {
                Ok(Some(row)) => page.push((row.get::<String, _>(0), entry_of(&row, 1))),
                Ok(None) => break,
                Err(e) => {
                    let _ = pages.send(Err(self.err(e))).await;
                    return;
                }
            }
            if page.len() == page_size {
                let full = std::mem::replace(&mut page, Vec::with_capacity(page_size));
                if pages.send(Ok(full)).await.is_err() {
                    return;
                }
            }
        }
        let _ = pages.send(Ok(page)).await;
    }

    /// SQLite: keyset pages, so that no read transaction stays open across
    /// the diff's commits (an in-memory store has a single connection). A
    /// page is one JSON row: sqlx hands every SQLite row across threads one
    /// by one, which cost more than reading it.
    async fn read_ledger_pages(self, job: String, page_size: usize, pages: PageSender) {
        // The aggregate takes the rows in the subquery's key order: a
        // subquery with a LIMIT is not flattened into the aggregate, so it
        // hands them over in order. An `ORDER BY` inside the aggregate would
        // sort every page again (half of the statement's time);
        // [`LedgerWalk`] fails the run should a page ever come out of order.
        let sql = "SELECT json_group_array(json_array(key, detected_hash, detected_version, synced_version, deleted)) \
                   FROM (SELECT key, detected_hash, detected_version, synced_version, deleted FROM ferry_ledger \
                         WHERE job = $1 AND key > $2 ORDER BY key LIMIT $3)";
        let mut after = String::new();
        loop {
            let mut a = args();
            a.push(job.clone());
            a.push(after.clone());
            a.push(page_size as i64);
            let page = match sqlx::query_with(sql, a).fetch_one(&self.pool).await {
                Ok(row) => self.ledger_page(&job, &row.get::<String, _>(0)),
                Err(e) => Err(self.err(e)),
            };
            // The page's greatest key, not its last: paging stays right
            // whatever order the aggregate gave.
            let last = match &page {
                Ok(entries) if entries.len() == page_size => {
                    entries.iter().map(|(key, _)| key).max().cloned()
                }
                _ => None,
            };
            if pages.send(page).await.is_err() {
                return;
            }
            match last {
                Some(key) => after = key,
                None => return,
            }
        }
    }

    fn ledger_page(&self, job: &str, json: &str) -> Result<Vec<(String, LedgerEntry)>, StateError> {
        type Page = Vec<(String, i64, i64, Option<i64>, i64)>;
        let page: Page = serde_json::from_str(json).map_err(|e| StateError::Corrupt {
            url: self.url.clone(),
            detail: format!("job {job}: ledger page unreadable: {e}"),
        })?;
        Ok(page
            .into_iter()
            .map(
                |(key, detected_hash, detected_version, synced_version, deleted)| {
                    (
                        key,
                        LedgerEntry {
                            detected_hash,
                            detected_version,
                            synced_version,
                            deleted: deleted != 0,
                        },
                    )
                },
            )
            .collect())
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
            a.push(now);
            let row = sqlx::query_with(
                "INSERT INTO ferry_tasks (job, run_id, state, item_count, created_at, run_after, stale_check) VALUES ($1, $2, 'pending', $3, $4, $4, 0) RETURNING id",
                a,
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
            let new_task: i64 = row.get(0);
            self.put_items(&mut tx, new_task, payload).await?;
            task_id = Some(new_task);

            let rows: Vec<(&String, i64, i64, i64)> = batch
                .items
                .iter()
                .zip(&batch.keys)
                .map(|(item, key)| {
                    (
                        key,
                        parse_hash(&item.hash),
                        item.version,
                        i64::from(item.op == Op::Delete),
                    )
                })
                .collect();
            let insert = format!(
                "INSERT INTO ferry_ledger (job, key, detected_hash, detected_version, deleted) \
                 SELECT $1, key, hash, version, deleted FROM {} AS x",
                self.json_rows(
                    2,
                    &[
                        ("key", Kind::Text),
                        ("hash", Kind::Int),
                        ("version", Kind::Int),
                        ("deleted", Kind::Int)
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
                    .execute(&mut *tx)
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
                let mut a = args();
                a.push(job.to_string());
                a.push(new_task);
                sqlx::query_with(
                    "UPDATE ferry_tasks SET stale_check = 1 WHERE job = $1 AND id < $2 AND state IN ('pending', 'running', 'failed')",
                    a,
                )
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            }
            if known_keys {
                let upsert = format!(
                    "{select}DO UPDATE SET detected_hash = excluded.detected_hash, \
                     detected_version = excluded.detected_version, deleted = excluded.deleted"
                );
                sqlx::query_with(&upsert, ledger_args())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
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

/// A ledger entry from the columns `detected_hash, detected_version,
/// synced_version, deleted` starting at `first`.
fn entry_of(r: &sqlx::any::AnyRow, first: usize) -> LedgerEntry {
    LedgerEntry {
        detected_hash: r.get(first),
        detected_version: r.get(first + 1),
        synced_version: r.get(first + 2),
        deleted: r.get::<i64, _>(first + 3) != 0,
    }
}

/// A job's ledger in key order, checked to be in the order Rust sorts keys
/// in ([`crate::sort`]): a ledger in another collation would make a merge
/// turn unchanged objects into deletes.
pub struct LedgerWalk<'a> {
    job: &'a str,
    entries: BoxStream<'a, Result<(String, LedgerEntry), StateError>>,
    previous: String,
}

impl Store {
    pub fn ledger_walk<'a>(&'a self, job: &'a str, page_size: usize) -> LedgerWalk<'a> {
        LedgerWalk {
            job,
            entries: self.ledger_in_key_order(job, page_size),
            previous: String::new(),
        }
    }
}

impl LedgerWalk<'_> {
    pub async fn next(&mut self) -> Result<Option<(String, LedgerEntry)>, StateError> {
        let Some((key, entry)) = self.entries.try_next().await? else {
            return Ok(None);
        };
        if key <= self.previous {
            return Err(StateError::Corrupt {
                url: "ledger".to_string(),
                detail: format!(
                    "job {}: ledger keys are not in bytewise order (`{}` before `{key}`); is migration 0006 applied?",
                    self.job, self.previous
                ),
            });
        }
        self.previous.clone_from(&key);
        Ok(Some((key, entry)))
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
                 ON CONFLICT (job, key) DO UPDATE SET detected_hash = excluded.detected_hash, synced_hash = excluded.synced_hash, deleted = 0 \
                 WHERE ferry_ledger.deleted = 1"
            );
            // Materialized: else SQLite scans every key of the job per statement.
            let seen_rows = format!(
                "WITH x AS MATERIALIZED {rows} \
                 UPDATE ferry_ledger SET detected_hash = x.hash, synced_hash = x.hash FROM x \
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
