use async_trait::async_trait;
use sqlx::SqlitePool;

use super::json_path;
use crate::config::{Deletes, Mode, TargetConfig};
use crate::connectors::sql::{
    assignments, classify, columns_of, quote_ident, quote_qualified, to_json,
};
use crate::connectors::{ConnectorError, Target, WriteBatch, WriteRules};

pub struct SqliteTarget {
    pool: SqlitePool,
    system: String,
    object: String,
    table: String,
    rules: WriteRules,
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
            table: quote_qualified(&rules.table),
            rules,
            create_table: cfg.create_table,
            created: tokio::sync::OnceCell::new(),
        })
    }

    /// `SELECT json_extract(value, '$."a"') AS "a", … FROM json_each($1)`.
    fn rows(cols: &[String]) -> String {
        let exprs = cols
            .iter()
            .map(|c| {
                format!(
                    "json_extract(value, {}) AS {}",
                    json_path(c),
                    quote_ident(c)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!("SELECT {exprs} FROM json_each($1)")
    }

    fn keys_in(&self, rows: &str) -> String {
        let keys = self
            .rules
            .key
            .iter()
            .map(|k| quote_ident(k))
            .collect::<Vec<_>>()
            .join(", ");
        format!("({keys}) IN (SELECT {keys} FROM ({rows}))")
    }

    fn upsert_sql(&self, cols: &[String]) -> String {
        let t = &self.table;
        let list = cols
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = Self::rows(cols);
        match self.rules.mode {
            Mode::Update => {
                let sets = assignments(&self.rules, cols, t, "x");
                if sets.is_empty() {
                    return "SELECT $1".to_string();
                }
                let on = self.rules.key.iter().map(|k| format!("{t}.{q} = x.{q}", q = quote_ident(k))).collect::<Vec<_>>().join(" AND ");
                format!("UPDATE {t} SET {} FROM ({rows}) AS x WHERE {on}", sets.join(", "))
            }
            // `WHERE true` keeps SQLite from reading ON CONFLICT as a join clause.
            Mode::Insert => format!("INSERT INTO {t} ({list}) SELECT {list} FROM ({rows}) WHERE true ON CONFLICT DO NOTHING"),
            Mode::Upsert | Mode::Mirror => {
                let keys = self.rules.key.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ");
                let sets = assignments(&self.rules, cols, t, "excluded");
                let action = if sets.is_empty() { "NOTHING".to_string() } else { format!("UPDATE SET {}", sets.join(", ")) };
                format!("INSERT INTO {t} ({list}) SELECT {list} FROM ({rows}) WHERE true ON CONFLICT ({keys}) DO {action}")
            }
        }
    }

    fn delete_sql(&self) -> Option<String> {
        let t = &self.table;
        let rows = Self::rows(&self.rules.key);
        match self.rules.deletes {
            Deletes::Ignore => None,
            Deletes::Propagate => Some(format!("DELETE FROM {t} WHERE {}", self.keys_in(&rows))),
            Deletes::Soft => {
                let sd = quote_ident(self.rules.soft_delete.as_deref().unwrap_or("deleted_at"));
                Some(format!(
                    "UPDATE {t} SET {sd} = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE {} AND {sd} IS NULL",
                    self.keys_in(&rows)
                ))
            }
        }
    }

    /// `create_table = true`: the table with untyped columns (SQLite keeps
    /// each value as given) and the key as primary key, if it is missing.
    async fn ensure_table(&self, batch: &WriteBatch) -> Result<(), ConnectorError> {
        let mut cols = self.rules.key.clone();
        for c in columns_of(&batch.upserts) {
            if !cols.contains(&c) {
                cols.push(c);
            }
        }
        if let Some(sd) = &self.rules.soft_delete {
            if !cols.contains(sd) {
                cols.push(sd.clone());
            }
        }
        let list = cols
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let keys = self
            .rules
            .key
            .iter()
            .map(|k| quote_ident(k))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} ({list}, PRIMARY KEY ({keys}))",
            self.table
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

    async fn write(&self, batch: &WriteBatch) -> Result<(), ConnectorError> {
        if self.create_table {
            self.created
                .get_or_try_init(|| self.ensure_table(batch))
                .await?;
        }
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.err(e))?;
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
