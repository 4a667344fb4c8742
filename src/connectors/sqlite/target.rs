use async_trait::async_trait;
use sqlx::SqlitePool;

use crate::config::TargetConfig;
use crate::connectors::sql::{
    classify, columns_of, execute_batch, key_stream, quote_ident, quote_qualified, Dialect,
    WriteSql,
};
use crate::connectors::{ConnectorError, KeyStream, Target, WriteBatch, WriteRules, Written};

pub struct SqliteTarget {
    pool: SqlitePool,
    system: String,
    object: String,
    sql: WriteSql,
    create_table: bool,
    created: tokio::sync::OnceCell<()>,
}

impl SqliteTarget {
    pub fn new(cfg: &TargetConfig, rules: WriteRules) -> Result<Self, ConnectorError> {
        let url = cfg.url.as_deref().unwrap_or_default();
        let system = super::system(url);
        let pool = super::pool(url, &system, false)?;
        Ok(SqliteTarget {
            pool,
            system,
            object: format!("table {}", rules.table),
            sql: WriteSql::new(rules, Dialect::Sqlite),
            create_table: cfg.create_table,
            created: tokio::sync::OnceCell::new(),
        })
    }

    /// `create_table = true`: the table with untyped columns (SQLite keeps
    /// each value as given) and the key as primary key, if it is missing.
    async fn ensure_table(&self, batch: &WriteBatch<'_>) -> Result<(), ConnectorError> {
        let rules = self.sql.rules();
        let mut cols = rules.key.clone();
        let extra = columns_of(&batch.upserts)
            .into_iter()
            .chain(rules.soft_delete.clone());
        for c in extra {
            if !cols.contains(&c) {
                cols.push(c);
            }
        }
        let list = cols
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let keys = rules
            .key
            .iter()
            .map(|k| quote_ident(k))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} ({list}, PRIMARY KEY ({keys}))",
            quote_qualified(&rules.table)
        );
        sqlx::query(&sql)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn err(&self, e: sqlx::Error) -> ConnectorError {
        classify(e, &self.system, &self.object)
    }
}

#[async_trait]
impl Target for SqliteTarget {
    fn describe(&self) -> String {
        format!("{} {}", self.system, self.object)
    }

    async fn write(&self, batch: &WriteBatch<'_>) -> Result<Written, ConnectorError> {
        if self.create_table {
            self.created
                .get_or_try_init(|| self.ensure_table(batch))
                .await?;
        }
        // IMMEDIATE: take the write lock up front instead of failing to upgrade.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.err(e))?;
        let written = execute_batch::<sqlx::Sqlite>(&mut tx, &self.sql, batch)
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(written)
    }

    async fn keys(&self) -> Result<Option<KeyStream>, ConnectorError> {
        Ok(Some(key_stream(
            self.pool.clone(),
            self.sql.keys(),
            self.system.clone(),
            self.object.clone(),
        )))
    }
}
