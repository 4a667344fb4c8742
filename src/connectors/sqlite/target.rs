use std::str::FromStr;

use async_trait::async_trait;

use crate::connectors::sql::canonical::SqlKind;
use crate::connectors::sql::reader::Readout;
use serde_json::Value;
use sqlx::SqlitePool;

use crate::config::TargetConfig;
use crate::connectors::sql::{
    classify, execute_batch, key_stream, quote_ident, quote_qualified, Dialect, WriteSql,
};
use crate::connectors::{
    ConnectorError, KeyStream, SchemaChange, Shape, Target, WriteBatch, WriteRules, Written,
};

pub struct SqliteTarget {
    pool: SqlitePool,
    /// What `ferry verify` reads.
    readout: Readout<sqlx::Sqlite>,
    system: String,
    object: String,
    sql: WriteSql,
    create_table: bool,
    created: tokio::sync::OnceCell<()>,
    /// The last key this process allocated: workers share the target.
    allocated: tokio::sync::Mutex<i64>,
    /// The database file (None: in memory), which only a write creates.
    file: Option<std::path::PathBuf>,
}

impl SqliteTarget {
    pub fn new(cfg: &TargetConfig, rules: WriteRules) -> Result<Self, ConnectorError> {
        let url = cfg.url.as_deref().unwrap_or_default();
        let system = super::system(url);
        let pool = super::pool(url, &system, false)?;
        let file = sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .ok()
            .map(|o| o.get_filename().to_path_buf())
            .filter(|f| !f.as_os_str().is_empty() && f.as_os_str() != ":memory:");
        let readout = Readout::table(&pool, SqlKind::Sqlite, &system, &rules.table);
        Ok(SqliteTarget {
            readout,
            file,
            pool,
            system,
            object: format!("table {}", rules.table),
            sql: WriteSql::new(rules, Dialect::Sqlite),
            create_table: cfg.create,
            created: tokio::sync::OnceCell::new(),
            allocated: tokio::sync::Mutex::new(0),
        })
    }

    /// `create = true` and a source without a schema (a broker, an API):
    /// the table with untyped columns (SQLite keeps each value as given)
    /// and the key as primary key, if it is missing. (A table source's
    /// columns and types make the table before the run writes.)
    async fn ensure_table(&self, batch: &WriteBatch<'_>) -> Result<(), ConnectorError> {
        let rules = self.sql.rules();
        let mut cols = rules.key.clone();
        let extra = batch
            .upsert_fields()
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

    /// The batch's upserted rows as the SQLite source reads them (the
    /// transaction holds the write lock: nobody changes them meanwhile).
    async fn read_rows(
        &self,
        tx: &mut sqlx::SqliteConnection,
        batch: &WriteBatch<'_>,
    ) -> Result<Vec<crate::model::Record>, ConnectorError> {
        let rows = sqlx::query(&self.sql.read_back(false))
            .bind(batch.upserts_json())
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(super::source::record_of).collect())
    }

    fn err(&self, e: sqlx::Error) -> ConnectorError {
        classify(e, &self.system, &self.object)
    }
}

#[async_trait]
impl Target for SqliteTarget {
    fn checksum(&self) -> Option<&dyn crate::connectors::checksum::Checksum> {
        Some(&self.readout)
    }

    fn describe(&self) -> String {
        format!("{} {}", self.system, self.object)
    }

    async fn current_rows(
        &self,
        batch: &WriteBatch<'_>,
    ) -> Result<Option<Vec<crate::model::Record>>, ConnectorError> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.err(e))?;
        Ok(Some(self.read_rows(&mut conn, batch).await?))
    }

    async fn write(&self, batch: &WriteBatch<'_>) -> Result<Written, ConnectorError> {
        if self.create_table {
            self.created
                .get_or_try_init(|| self.ensure_table(batch))
                .await?;
        }
        self.sql
            .load_columns(|| async { self.schema().await })
            .await?;
        // IMMEDIATE: take the write lock up front instead of failing to upgrade.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.err(e))?;
        let read_back = batch.read_back && batch.upsert_count() > 0;
        let rows_before = match read_back {
            true => self.read_rows(&mut tx, batch).await?,
            false => Vec::new(),
        };
        let mut written = execute_batch::<sqlx::Sqlite>(&mut tx, &self.sql, batch)
            .await
            .map_err(|e| self.err(e))?;
        if read_back {
            written.rows_before = rows_before;
            written.rows = self.read_rows(&mut tx, batch).await?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(written)
    }

    /// After the largest key in the table, as SQLite gives an integer
    /// primary key without AUTOINCREMENT, and after every key taken before
    /// (`floor`, and this process's own): those may not be written yet.
    async fn allocate_keys(
        &self,
        n: usize,
        floor: i64,
    ) -> Result<Option<Vec<Value>>, ConnectorError> {
        let rules = self.sql.rules();
        let column = quote_ident(rules.key.first().map(String::as_str).unwrap_or_default());
        let sql = format!(
            "SELECT CAST(COALESCE(MAX({column}), 0) AS INTEGER) FROM {}",
            quote_qualified(&rules.table)
        );
        let mut last = self.allocated.lock().await;
        let largest: i64 = sqlx::query_scalar(&sql)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        let first = largest.max(*last).max(floor) + 1;
        *last = first + n as i64 - 1;
        Ok(Some((first..=*last).map(Value::from).collect()))
    }

    fn reports_images(&self) -> bool {
        true
    }

    fn reads_json_rows(&self) -> bool {
        true
    }

    async fn keys(&self) -> Result<Option<KeyStream>, ConnectorError> {
        Ok(Some(key_stream(
            self.pool.clone(),
            self.sql.keys(),
            self.system.clone(),
            self.object.clone(),
        )))
    }

    fn has_columns(&self) -> bool {
        true
    }

    async fn schema(&self) -> Result<Shape, ConnectorError> {
        // Connecting would create the file: a plan must leave none behind.
        if self.file.as_ref().is_some_and(|f| !f.exists()) {
            return Ok(Shape::Missing);
        }
        super::schema::table(&self.pool, &self.sql.rules().table)
            .await
            .map_err(|e| self.err(e))
    }

    fn schema_statements(&self, change: &SchemaChange) -> Result<Vec<String>, ConnectorError> {
        Ok(super::schema::statements(&self.sql.rules().table, change))
    }

    async fn change_schema(&self, change: &SchemaChange) -> Result<(), ConnectorError> {
        // SQLite has no `ADD COLUMN IF NOT EXISTS`.
        if let SchemaChange::AddColumn(column) = change {
            if let Shape::Table(table) = self.schema().await? {
                if table.column(&column.name).is_some() {
                    return Ok(());
                }
            }
        }
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.err(e))?;
        for statement in self.schema_statements(change)? {
            sqlx::query(&statement)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }
}
