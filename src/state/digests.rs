//! Range digests: per bucket of a job's integer keys, the count and sum of
//! the source hashes the ledger holds there, so that a diff skips every
//! bucket whose source answers with the same two numbers. They describe the
//! ledger only while the diff's pushdown alone writes it: every other
//! write to the job's ledger (a cursor or full-scan detection, a snapshot's
//! chunk, an echo mark, a discard) forgets them in its own transaction.
use std::collections::BTreeMap;

use sqlx::{Any, Row, Transaction};

use super::{args, json_param, Bind, Kind, StateError, Store};

/// A job's digests: the bucket width and each bucket's (rows, sum).
#[derive(Debug, Default)]
pub struct RangeDigests {
    pub width: Option<i64>,
    pub buckets: BTreeMap<i64, (i64, i64)>,
    /// The job's last diff found most buckets changed.
    pub mostly_changed: bool,
}

impl Store {
    pub async fn range_digests(&self, job: &str) -> Result<RangeDigests, StateError> {
        let mut a = args();
        a.push(job.to_string());
        let rows = sqlx::query_with(
            "SELECT bucket, width, rows, sum FROM ferry_range_digests WHERE job = $1",
            a,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let mut a = args();
        a.push(job.to_string());
        let mostly_changed: Option<i64> = sqlx::query_scalar_with(
            "SELECT digests_mostly_changed FROM ferry_jobs WHERE job = $1",
            a,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let mut digests = RangeDigests {
            mostly_changed: mostly_changed.unwrap_or(0) != 0,
            ..RangeDigests::default()
        };
        for r in rows {
            digests.width = Some(r.get(1));
            digests.buckets.insert(r.get(0), (r.get(2), r.get(3)));
        }
        Ok(digests)
    }

    /// Forgets the digests of `buckets` (all of the job's when None), before
    /// a diff reads their rows: should it stop half-way, they are read again.
    pub async fn forget_range_digests(
        &self,
        job: &str,
        buckets: Option<&[i64]>,
    ) -> Result<(), StateError> {
        let mut a = args();
        a.push(job.to_string());
        let sql = match buckets {
            None => "DELETE FROM ferry_range_digests WHERE job = $1".to_string(),
            Some(list) => {
                a.push(json_param(&list));
                format!(
                    "DELETE FROM ferry_range_digests WHERE job = $1 AND bucket IN (SELECT b FROM {} AS x)",
                    self.json_rows(2, &[("b", Kind::Int)])
                )
            }
        };
        sqlx::query_with(&sql, a)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records buckets' digests, (bucket, rows, sum) each, once their keys
    /// are all in the ledger, and whether most buckets had changed.
    pub async fn save_range_digests(
        &self,
        job: &str,
        width: i64,
        digests: &[(i64, i64, i64)],
        mostly_changed: bool,
    ) -> Result<(), StateError> {
        let mut tx = self.write_tx().await?;
        let mut a = args();
        a.push(i64::from(mostly_changed));
        a.push(job.to_string());
        sqlx::query_with(
            "UPDATE ferry_jobs SET digests_mostly_changed = $1 WHERE job = $2",
            a,
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        for rows in digests.chunks(5000) {
            let sql = format!(
                "INSERT INTO ferry_range_digests (job, bucket, width, rows, sum) \
                 SELECT $1, bucket, $3, rows, sum FROM {} AS x WHERE true \
                 ON CONFLICT (job, bucket) DO UPDATE SET width = excluded.width, rows = excluded.rows, sum = excluded.sum",
                self.json_rows(2, &[("bucket", Kind::Int), ("rows", Kind::Int), ("sum", Kind::Int)])
            );
            let mut a = args();
            a.push(job.to_string());
            a.push(json_param(&rows));
            a.push(width);
            sqlx::query_with(&sql, a)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// Forgets the job's digests inside a transaction that writes its
    /// ledger otherwise than the diff's pushdown does.
    pub(super) async fn forget_digests_in(
        &self,
        tx: &mut Transaction<'_, Any>,
        job: &str,
    ) -> Result<(), StateError> {
        let mut a = args();
        a.push(job.to_string());
        sqlx::query_with("DELETE FROM ferry_range_digests WHERE job = $1", a)
            .execute(&mut **tx)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
