//! The id map of a job whose target generates its own keys: the target key
//! each source key got, recorded before the row is written.
use std::collections::HashMap;

use futures::TryStreamExt;
use sqlx::Row;

use super::{args, json_param, Backend, Bind, Kind, StateError, Store};

impl Store {
    /// The target keys (ledger text form) of those of `source_keys` the map holds.
    pub async fn id_map(
        &self,
        job: &str,
        source_keys: &[String],
    ) -> Result<HashMap<String, String>, StateError> {
        self.id_pairs(job, ("source_key", "target_key"), source_keys)
            .await
    }

    /// The source keys (ledger text form) of those of `target_keys` the
    /// map holds, keyed by target key.
    pub async fn id_map_reverse(
        &self,
        job: &str,
        target_keys: &[String],
    ) -> Result<HashMap<String, String>, StateError> {
        self.id_pairs(job, ("target_key", "source_key"), target_keys)
            .await
    }

    /// `to` of each of `keys` found in column `from`, keyed by it.
    async fn id_pairs(
        &self,
        job: &str,
        (from, to): (&str, &str),
        keys: &[String],
    ) -> Result<HashMap<String, String>, StateError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = format!(
            "SELECT {from}, {to} FROM ferry_idmap WHERE job = $1 AND {from} IN {}",
            self.json_strings(2)
        );
        let mut a = args();
        a.push(job.to_string());
        a.push(json_param(&keys));
        let rows = sqlx::query_with(&sql, a)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
            .collect())
    }

    /// Hands every (source key, target key) pair of the job's map to
    /// `each`, in no particular order; stops at `each`'s first error.
    pub async fn each_id<E: From<StateError>>(
        &self,
        job: &str,
        each: &mut (dyn FnMut(String, String) -> Result<(), E> + Send),
    ) -> Result<(), E> {
        if self.backend == Backend::Sqlite {
            return self.each_id_paged(job, each).await;
        }
        let mut a = args();
        a.push(job.to_string());
        let mut rows = sqlx::query_with(
            "SELECT source_key, target_key FROM ferry_idmap WHERE job = $1",
            a,
        )
        .fetch(&self.pool);
        while let Some(row) = rows.try_next().await.map_err(|e| self.err(e))? {
            each(row.get::<String, _>(0), row.get::<String, _>(1))?;
        }
        Ok(())
    }

    /// SQLite: pages of keys, each one JSON row (sqlx hands SQLite rows
    /// across threads one by one, which costs more than reading them).
    async fn each_id_paged<E: From<StateError>>(
        &self,
        job: &str,
        each: &mut (dyn FnMut(String, String) -> Result<(), E> + Send),
    ) -> Result<(), E> {
        const PAGE: i64 = 20_000;
        let sql = "SELECT json_group_array(json_array(source_key, target_key)) \
                   FROM (SELECT source_key, target_key FROM ferry_idmap \
                         WHERE job = $1 AND source_key > $2 ORDER BY source_key LIMIT $3)";
        let mut after = String::new();
        loop {
            let mut a = args();
            a.push(job.to_string());
            a.push(after.clone());
            a.push(PAGE);
            let row = sqlx::query_with(sql, a)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
            let page: Vec<(String, String)> = serde_json::from_str(&row.get::<String, _>(0))
                .map_err(|e| StateError::Corrupt {
                    url: self.url.clone(),
                    detail: format!("job {job}: id map page unreadable: {e}"),
                })?;
            let full = page.len() as i64 == PAGE;
            // The page's greatest key, whatever order the aggregate gave.
            let last = page.iter().map(|(s, _)| s).max().cloned();
            for (source, target) in page {
                each(source, target)?;
            }
            match (full, last) {
                (true, Some(last)) => after = last,
                _ => return Ok(()),
            }
        }
    }

    /// Records (source key, target key) pairs; a source key already mapped
    /// keeps its target key (another worker recorded it first).
    pub async fn record_ids(
        &self,
        job: &str,
        pairs: &[(String, String)],
    ) -> Result<(), StateError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO ferry_idmap (job, source_key, target_key) SELECT $1, source_key, target_key FROM {} AS x \
             WHERE true ON CONFLICT (job, source_key) DO NOTHING",
            self.json_rows(2, &[("source_key", Kind::Text), ("target_key", Kind::Text)])
        );
        let mut a = args();
        a.push(job.to_string());
        a.push(json_param(&pairs));
        let mut tx = self.write_tx().await?;
        sqlx::query_with(&sql, a)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// The largest target key the job's id map holds (0: none); generated
    /// keys are integers, kept as the one-element JSON array `[n]`.
    pub async fn id_map_max(&self, job: &str) -> Result<i64, StateError> {
        let mut a = args();
        a.push(job.to_string());
        let row = sqlx::query_with(
            "SELECT CAST(COALESCE(max(CAST(substr(target_key, 2, length(target_key) - 2) AS BIGINT)), 0) AS BIGINT) \
             FROM ferry_idmap WHERE job = $1",
            a,
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.get::<i64, _>(0))
    }

    /// How many source keys the job's id map holds.
    pub async fn id_map_size(&self, job: &str) -> Result<i64, StateError> {
        let mut a = args();
        a.push(job.to_string());
        let row = sqlx::query_with("SELECT count(*) FROM ferry_idmap WHERE job = $1", a)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.get::<i64, _>(0))
    }
}
