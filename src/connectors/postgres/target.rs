use async_trait::async_trait;
use sqlx::PgPool;

use crate::config::TargetConfig;
use crate::connectors::sql::{classify, execute_batch, key_stream, Dialect, WriteSql};
use crate::connectors::{ConnectorError, KeyStream, Target, WriteBatch, WriteRules, Written};

pub struct PostgresTarget {
    pool: PgPool,
    system: String,
    object: String,
    sql: WriteSql,
}

impl PostgresTarget {
    pub fn new(cfg: &TargetConfig, rules: WriteRules) -> Result<Self, ConnectorError> {
        let url = cfg.url.as_deref().unwrap_or_default();
        let system = super::system(url);
        let pool = super::pool(url, &system, 8)?;
        Ok(PostgresTarget {
            pool,
            system,
            object: format!("table {}", rules.table),
            sql: WriteSql::new(rules, Dialect::Postgres),
        })
    }

    fn err(&self, e: sqlx::Error) -> ConnectorError {
        classify(e, &self.system, &self.object)
    }
}

#[async_trait]
impl Target for PostgresTarget {
    fn describe(&self) -> String {
        format!("{} {}", self.system, self.object)
    }

    async fn write(&self, batch: &WriteBatch<'_>) -> Result<Written, ConnectorError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let written = execute_batch::<sqlx::Postgres>(&mut tx, &self.sql, batch)
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
