//! Reading a job's whole ledger in key order, a page ahead of the caller:
//! the other half of a diff, beside the sorted scan.
use futures::stream::{BoxStream, TryStreamExt};
use sqlx::Row;

use super::ledger::{entry_of, LedgerEntry};
use super::{args, Backend, Bind, StateError, Store};

/// Integer keys from `lo` to `hi` (both included): a walk with it leaves
/// out the keys whose one value is an integer outside them, in the state
/// store, and keeps every other key (text, fractions, composites), which
/// only the caller can place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntegerKeys {
    pub lo: i64,
    pub hi: i64,
}

impl IntegerKeys {
    /// ` AND …` keeping the ledger keys whose one integer lies within
    /// `$lo..=$hi` (placeholders `lo`, `hi`), and every key it cannot
    /// place. A CASE, as PostgreSQL may evaluate an OR's operands in any
    /// order (only an integer's digits reach the cast, which is exact: a
    /// numeric); matching the text costs half of reading it as jsonb.
    /// SQLite's json_extract gives an integer exactly.
    pub(super) fn filter(backend: Backend, lo: usize, hi: usize) -> String {
        match backend {
            Backend::Postgres => format!(" AND CASE WHEN key ~ '^\\[-?[0-9]+\\]$' THEN substr(key, 2, length(key) - 2)::numeric BETWEEN ${lo} AND ${hi} ELSE true END"),
            Backend::Sqlite => format!(" AND CASE WHEN json_array_length(key) = 1 AND json_type(key, '$[0]') = 'integer' THEN json_extract(key, '$[0]') BETWEEN ${lo} AND ${hi} ELSE 1 END"),
        }
    }
}

/// Where a ledger walk's reader sends its pages.
type PageSender = tokio::sync::mpsc::Sender<Result<Vec<(String, LedgerEntry)>, StateError>>;

impl Store {
    /// Every ledger entry of `job` in bytewise key order: the order of the
    /// diff strategy's sorted scan. A task of its own reads (and decodes) the
    /// next page while the caller merges this one: the walk is half of a
    /// diff's time after the scan, and on its own it waited for the reads.
    pub fn ledger_in_key_order(
        &self,
        job: &str,
        page_size: usize,
    ) -> BoxStream<'static, Result<(String, LedgerEntry), StateError>> {
        self.ledger_in_key_order_within(job, page_size, None)
    }

    /// [`Store::ledger_in_key_order`], integer keys limited to `within`.
    pub fn ledger_in_key_order_within(
        &self,
        job: &str,
        page_size: usize,
        within: Option<IntegerKeys>,
    ) -> BoxStream<'static, Result<(String, LedgerEntry), StateError>> {
        let (pages, mut next) = tokio::sync::mpsc::channel(1);
        let store = self.clone();
        let job = job.to_string();
        tokio::spawn(async move {
            match store.backend {
                Backend::Postgres => {
                    store
                        .stream_ledger_pages(job, page_size, within, pages)
                        .await
                }
                Backend::Sqlite => store.read_ledger_pages(job, page_size, within, pages).await,
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
    async fn stream_ledger_pages(
        self,
        job: String,
        page_size: usize,
        within: Option<IntegerKeys>,
        pages: PageSender,
    ) {
        let mut a = args();
        a.push(job);
        let (lo, hi) = within.map_or((i64::MIN, i64::MAX), |w| (w.lo, w.hi));
        a.push(lo);
        a.push(hi);
        let filter = match within {
            Some(_) => IntegerKeys::filter(Backend::Postgres, 2, 3),
            None => " AND $2::bigint <= $3::bigint".to_string(),
        };
        let sql = format!(
            "SELECT key, detected_hash, detected_version, synced_version, deleted, source_hash FROM ferry_ledger WHERE job = $1{filter} ORDER BY key"
        );
        let mut rows = sqlx::query_with(&sql, a).fetch(&self.pool);
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
    async fn read_ledger_pages(
        self,
        job: String,
        page_size: usize,
        within: Option<IntegerKeys>,
        pages: PageSender,
    ) {
        // The aggregate takes the rows in the subquery's key order: a
        // subquery with a LIMIT is not flattened into the aggregate, so it
        // hands them over in order. An `ORDER BY` inside the aggregate would
        // sort every page again (half of the statement's time);
        // [`LedgerWalk`] fails the run should a page ever come out of order.
        let filter = match within {
            Some(_) => IntegerKeys::filter(Backend::Sqlite, 4, 5),
            None => " AND $4 <= $5".to_string(),
        };
        let (lo, hi) = within.map_or((i64::MIN, i64::MAX), |w| (w.lo, w.hi));
        let sql = format!(
            "SELECT json_group_array(json_array(key, detected_hash, detected_version, synced_version, deleted, source_hash)) \
             FROM (SELECT key, detected_hash, detected_version, synced_version, deleted, source_hash FROM ferry_ledger \
                   WHERE job = $1 AND key > $2{filter} ORDER BY key LIMIT $3)"
        );
        let mut after = String::new();
        loop {
            let mut a = args();
            a.push(job.clone());
            a.push(after.clone());
            a.push(page_size as i64);
            a.push(lo);
            a.push(hi);
            let page = match sqlx::query_with(&sql, a).fetch_one(&self.pool).await {
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
        type Page = Vec<(String, i64, i64, Option<i64>, i64, Option<i64>)>;
        let page: Page = serde_json::from_str(json).map_err(|e| StateError::Corrupt {
            url: self.url.clone(),
            detail: format!("job {job}: ledger page unreadable: {e}"),
        })?;
        Ok(page
            .into_iter()
            .map(
                |(key, detected_hash, detected_version, synced_version, deleted, source_hash)| {
                    (
                        key,
                        LedgerEntry {
                            detected_hash,
                            detected_version,
                            synced_version,
                            deleted: deleted != 0,
                            source_hash,
                        },
                    )
                },
            )
            .collect())
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
    pub fn ledger_walk<'a>(
        &'a self,
        job: &'a str,
        page_size: usize,
        within: Option<IntegerKeys>,
    ) -> LedgerWalk<'a> {
        LedgerWalk {
            job,
            entries: self.ledger_in_key_order_within(job, page_size, within),
            previous: String::new(),
        }
    }
}

impl Store {
    /// The entries of `keys` (in bytewise order) that the ledger holds, in
    /// that order, looked up a page at a time: a walk of a narrow key range
    /// that costs the range, not the ledger.
    pub fn ledger_walk_keys<'a>(
        &'a self,
        job: &'a str,
        keys: Vec<String>,
        page_size: usize,
    ) -> LedgerWalk<'a> {
        let store = self.clone();
        let owned_job = job.to_string();
        let entries = Box::pin(async_stream::try_stream! {
            for page in keys.chunks(page_size.max(1)) {
                let found = store.ledger_written(&owned_job, page).await?;
                for key in page {
                    if let Some((entry, _)) = found.get(key) {
                        yield (key.clone(), *entry);
                    }
                }
            }
        });
        LedgerWalk {
            job,
            entries,
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
