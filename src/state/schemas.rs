//! What each job's source looked like at its last run, and the schema
//! changes ferry made to its target (`ferry status` lists them).
use sqlx::Row;

use super::{args, Bind, StateError, Store};
use crate::model::now_millis;

/// One schema change ferry made, as `ferry status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SchemaChangeInfo {
    pub at: i64,
    /// `column_added`, `type_widened`, `table_created`.
    pub change: String,
    pub detail: String,
}

impl Store {
    /// The job's source schema as the last run recorded it (JSON, read
    /// by the schema stage); None before its first run.
    pub async fn job_schema(&self, job: &str) -> Result<Option<String>, StateError> {
        let mut a = args();
        a.push(job.to_string());
        let row = sqlx::query_with("SELECT columns FROM ferry_job_schemas WHERE job = $1", a)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Records the job's source schema, with the changes made to reach it.
    pub async fn save_job_schema(
        &self,
        job: &str,
        columns: &str,
        changes: &[(String, String)],
    ) -> Result<(), StateError> {
        let now = now_millis();
        let mut tx = self.write_tx().await?;
        let mut a = args();
        a.push(job.to_string());
        a.push(columns.to_string());
        a.push(now);
        sqlx::query_with(
            "INSERT INTO ferry_job_schemas (job, columns, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (job) DO UPDATE SET columns = excluded.columns, updated_at = excluded.updated_at",
            a,
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        for (change, detail) in changes {
            let mut a = args();
            a.push(job.to_string());
            a.push(now);
            a.push(change.clone());
            a.push(detail.clone());
            sqlx::query_with(
                "INSERT INTO ferry_schema_changes (job, at, change, detail) VALUES ($1, $2, $3, $4)",
                a,
            )
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// The job's schema changes, newest first.
    pub async fn schema_changes(&self, job: &str) -> Result<Vec<SchemaChangeInfo>, StateError> {
        let mut a = args();
        a.push(job.to_string());
        let rows = sqlx::query_with(
            "SELECT at, change, detail FROM ferry_schema_changes WHERE job = $1 ORDER BY at DESC LIMIT 50",
            a,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| SchemaChangeInfo {
                at: r.get(0),
                change: r.get(1),
                detail: r.get(2),
            })
            .collect())
    }
}
