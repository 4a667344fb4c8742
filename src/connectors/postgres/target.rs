use crate::connectors::shared_pool::{self, Role};
use async_trait::async_trait;

use crate::connectors::sql::canonical::SqlKind;
use crate::connectors::sql::reader::Readout;
use sqlx::PgPool;

use crate::config::{Mode, TargetConfig};
use serde_json::Value;

use crate::connectors::sql::{
    classify, execute_batch, key_stream, quote_qualified, read_images, Dialect, WriteSql,
};
use crate::connectors::{
    ConnectorError, Images, KeyStream, SchemaChange, Shape, Target, WriteBatch, WriteRules, Written,
};

pub struct PostgresTarget {
    pool: PgPool,
    /// What `ferry verify` reads.
    readout: Readout<sqlx::Postgres>,
    system: String,
    object: String,
    sql: WriteSql,
}

impl PostgresTarget {
    pub fn new(cfg: &TargetConfig, rules: WriteRules) -> Result<Self, ConnectorError> {
        let url = cfg.url.as_deref().unwrap_or_default();
        let system = super::system(url);
        let pool = shared_pool::pool(url, Role::Write, cfg.pool_size, 8, |max| {
            super::pool(url, &system, max)
        })?;
        let readout = Readout::table(&pool, SqlKind::Postgres, &system, &rules.table);
        Ok(PostgresTarget {
            readout,
            pool,
            system,
            object: format!("table {}", rules.table),
            sql: WriteSql::new(rules, Dialect::Postgres),
        })
    }

    /// The batch's upserted rows as the PostgreSQL source reads them.
    async fn read_rows(
        &self,
        tx: &mut sqlx::PgConnection,
        batch: &WriteBatch<'_>,
        lock: bool,
    ) -> Result<Vec<crate::model::Record>, ConnectorError> {
        let rows: Vec<String> = sqlx::query_scalar(&self.sql.read_back(lock))
            .bind(batch.upserts_json())
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|json| serde_json::from_str(json))
            .collect::<Result<_, _>>()
            .map_err(|e| ConnectorError::failed(&self.system, &self.object, e))
    }

    fn err(&self, e: sqlx::Error) -> ConnectorError {
        classify(e, &self.system, &self.object)
    }

    /// New rows by `COPY` (see `copy_in.rs`), with their images read back
    /// by key when asked; None, and nothing written, when the batch is for
    /// the statement: a column COPY would read otherwise, a child table, or
    /// a row the table holds already (a unique violation).
    async fn copy_new(&self, batch: &WriteBatch<'_>) -> Result<Option<Written>, ConnectorError> {
        let rules = self.sql.rules();
        if !rules.children.is_empty() {
            return Ok(None);
        }
        let table = quote_qualified(&rules.table);
        let columns = self.sql.upsert_columns(batch);
        let Some(copy) = super::copy_in::render(&table, batch, &columns, &rules.key, |name| {
            self.sql.column(name).map(|c| c.ty.clone())
        }) else {
            return Ok(None);
        };
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let copied = async {
            let mut into = tx.copy_in_raw(&copy.statement).await?;
            into.send(copy.data).await?;
            into.finish().await
        }
        .await;
        if let Err(e) = copied {
            let refused = self.err(e);
            tracing::debug!(
                "COPY of new rows refused, written by the statement instead: {refused}"
            );
            // The COPY's transaction rolls back as it drops.
            return Ok(None);
        }
        let mut written = Written::default();
        if batch.images {
            let fields: Vec<String> = columns
                .into_iter()
                .filter(|c| !rules.key.contains(c))
                .collect();
            let by_range = match &copy.int_keys {
                Some(keys) => {
                    super::copy_images::by_key_range(&mut tx, &table, &rules.key[0], &fields, keys)
                        .await
                        .map_err(|e| self.err(e))?
                }
                None => None,
            };
            let read = match by_range {
                Some(read) => read,
                None => {
                    let query = self.sql.images_of_inserted(&fields);
                    read_images::<sqlx::Postgres>(&mut tx, &query, &copy.keys)
                        .await
                        .map_err(|e| self.err(e))?
                        .into_iter()
                        .map(|(incoming, _)| incoming)
                        .collect()
                }
            };
            written.images = read
                .into_iter()
                .map(|incoming| Images {
                    after: rules.inserts_new_rows().then(|| incoming.clone()),
                    incoming,
                    before: None,
                })
                .collect();
            written.fields = fields;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(Some(written))
    }
}

#[async_trait]
impl Target for PostgresTarget {
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
        Ok(Some(self.read_rows(&mut conn, batch, false).await?))
    }

    async fn write(&self, batch: &WriteBatch<'_>) -> Result<Written, ConnectorError> {
        self.sql
            .load_columns(|| async { self.schema().await })
            .await?;
        if batch.insert_new && !batch.read_back && self.sql.rules().mode != Mode::Update {
            if let Some(written) = self.copy_new(batch).await? {
                return Ok(written);
            }
        }
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let read_back = batch.read_back && batch.upsert_count() > 0;
        let rows_before = match read_back {
            true => self.read_rows(&mut tx, batch, true).await?,
            false => Vec::new(),
        };
        let mut written = execute_batch::<sqlx::Postgres>(&mut tx, &self.sql, batch)
            .await
            .map_err(|e| self.err(e))?;
        if read_back {
            written.rows_before = rows_before;
            written.rows = self.read_rows(&mut tx, batch, false).await?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(written)
    }

    /// From the key column's sequence: keys no other writer gets (the
    /// sequence never goes back, so `floor` is already behind it).
    async fn allocate_keys(
        &self,
        n: usize,
        _floor: i64,
    ) -> Result<Option<Vec<Value>>, ConnectorError> {
        let rules = self.sql.rules();
        let column = rules.key.first().map(String::as_str).unwrap_or_default();
        let ids: Vec<Option<i64>> = sqlx::query_scalar(
            "SELECT nextval(pg_get_serial_sequence($1, $2)) FROM generate_series(1, $3)",
        )
        .bind(quote_qualified(&rules.table))
        .bind(column)
        .bind(n as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        ids.into_iter()
            .map(|id| id.map(Value::from))
            .collect::<Option<Vec<Value>>>()
            .map(Some)
            .ok_or_else(|| {
                ConnectorError::failed(
                    &self.system,
                    &self.object,
                    format!("key column `{column}` has no sequence (serial or identity), so ferry cannot give new rows their key"),
                )
            })
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
        super::schema::table(&self.pool, &self.sql.rules().table)
            .await
            .map_err(|e| self.err(e))
    }

    fn schema_statements(&self, change: &SchemaChange) -> Result<Vec<String>, ConnectorError> {
        Ok(super::schema::statements(&self.sql.rules().table, change))
    }

    async fn change_schema(&self, change: &SchemaChange) -> Result<(), ConnectorError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        for statement in self.schema_statements(change)? {
            sqlx::query(&statement)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }
}
