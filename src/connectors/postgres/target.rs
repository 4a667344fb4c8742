use async_trait::async_trait;
use sqlx::PgPool;

use crate::config::{Deletes, Mode, TargetConfig};
use crate::connectors::sql::{
    assignments, classify, columns_of, quote_ident, quote_qualified, to_json,
};
use crate::connectors::{ConnectorError, Target, WriteBatch, WriteRules};

pub struct PostgresTarget {
    pool: PgPool,
    system: String,
    object: String,
    table: String,
    rules: WriteRules,
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
            table: quote_qualified(&rules.table),
            rules,
        })
    }

    fn key_match(&self, left: &str, right: &str) -> String {
        self.rules
            .key
            .iter()
            .map(|k| format!("{left}.{q} = {right}.{q}", q = quote_ident(k)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    fn upsert_sql(&self, cols: &[String]) -> String {
        let t = &self.table;
        let list = cols
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = format!("json_populate_recordset(NULL::{t}, $1::json)");
        match self.rules.mode {
            Mode::Update => {
                let sets = assignments(&self.rules, cols, "t", "x");
                if sets.is_empty() {
                    return "SELECT 1".to_string();
                }
                format!(
                    "UPDATE {t} AS t SET {} FROM {rows} AS x WHERE {}",
                    sets.join(", "),
                    self.key_match("t", "x")
                )
            }
            Mode::Insert => {
                format!("INSERT INTO {t} ({list}) SELECT {list} FROM {rows} ON CONFLICT DO NOTHING")
            }
            Mode::Upsert | Mode::Mirror => {
                let keys = self
                    .rules
                    .key
                    .iter()
                    .map(|k| quote_ident(k))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sets = assignments(&self.rules, cols, "ferry_t", "EXCLUDED");
                let action = if sets.is_empty() {
                    "NOTHING".to_string()
                } else {
                    format!("UPDATE SET {}", sets.join(", "))
                };
                format!("INSERT INTO {t} AS ferry_t ({list}) SELECT {list} FROM {rows} ON CONFLICT ({keys}) DO {action}")
            }
        }
    }

    fn delete_sql(&self) -> Option<String> {
        let t = &self.table;
        let rows = format!("json_populate_recordset(NULL::{t}, $1::json)");
        match self.rules.deletes {
            Deletes::Ignore => None,
            Deletes::Propagate => Some(format!(
                "DELETE FROM {t} AS t USING {rows} AS x WHERE {}",
                self.key_match("t", "x")
            )),
            Deletes::Soft => {
                let sd = quote_ident(self.rules.soft_delete.as_deref().unwrap_or("deleted_at"));
                Some(format!(
                    "UPDATE {t} AS t SET {sd} = now() FROM {rows} AS x WHERE {} AND t.{sd} IS NULL",
                    self.key_match("t", "x")
                ))
            }
        }
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

    async fn write(&self, batch: &WriteBatch) -> Result<(), ConnectorError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        if !batch.upserts.is_empty() {
            let mut cols = columns_of(&batch.upserts);
            if self.rules.deletes == Deletes::Soft {
                cols.retain(|c| Some(c) != self.rules.soft_delete.as_ref());
            }
            sqlx::query(&self.upsert_sql(&cols))
                .bind(to_json(&batch.upserts))
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        if !batch.deletes.is_empty() {
            if let Some(sql) = self.delete_sql() {
                sqlx::query(&sql)
                    .bind(to_json(&batch.deletes))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().await.map_err(|e| self.err(e))
    }
}
