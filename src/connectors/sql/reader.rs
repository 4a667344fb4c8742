//! Text queries for a verify, in one transaction of any SQL driver: a
//! repeatable-read snapshot when asked (`SET TRANSACTION` on PostgreSQL;
//! MySQL's InnoDB and SQLite take their snapshot at the first read of a
//! transaction).
use async_trait::async_trait;
use futures::TryStreamExt;
use serde_json::Value;
use sqlx::{Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Transaction, Type};

use super::canonical::SqlKind;
use super::classify;
use crate::connectors::checksum::{Checksum, TextReader};
use crate::connectors::ConnectorError;

pub struct Reader<DB: Database> {
    tx: Transaction<'static, DB>,
    system: String,
    object: String,
}

impl<DB: Database> Reader<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    /// A transaction, `first` its first statements.
    pub async fn open(
        pool: &Pool<DB>,
        first: &[&str],
        system: &str,
        object: &str,
    ) -> Result<Reader<DB>, ConnectorError> {
        let err = |e| classify(e, system, object);
        let mut tx = pool.begin().await.map_err(err)?;
        for statement in first {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        Ok(Reader {
            tx,
            system: system.to_string(),
            object: object.to_string(),
        })
    }
}

/// A bound value as text: every placeholder casts or compares it as its
/// column's type.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[async_trait]
impl<DB: Database> TextReader for Reader<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'r> String: Decode<'r, DB>,
    String: Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    async fn each_row(
        &mut self,
        sql: &str,
        binds: &[Value],
        each: &mut (dyn FnMut(Vec<Option<String>>) -> Result<(), ConnectorError> + Send),
    ) -> Result<(), ConnectorError> {
        let (system, object) = (self.system.clone(), self.object.clone());
        let err = |e| classify(e, &system, &object);
        let mut query = sqlx::query::<DB>(sql);
        for value in binds {
            query = query.bind(text_of(value));
        }
        let mut rows = query.fetch(&mut *self.tx);
        while let Some(row) = rows.try_next().await.map_err(err)? {
            let mut texts = Vec::with_capacity(row.len());
            for i in 0..row.len() {
                texts.push(row.try_get::<Option<String>, _>(i).map_err(err)?);
            }
            each(texts)?;
        }
        Ok(())
    }
}

/// A SQL table or query as `ferry verify` reads it: what each SQL
/// connector hands out as its [`Checksum`].
pub struct Readout<DB: Database> {
    pool: Pool<DB>,
    kind: SqlKind,
    /// The `SELECT` of the rows compared.
    relation: String,
    system: String,
    object: String,
}

impl<DB: Database> Readout<DB> {
    /// A target's table (`table` as configured, quoted here).
    pub fn table(pool: &Pool<DB>, kind: SqlKind, system: &str, table: &str) -> Readout<DB> {
        Readout {
            pool: pool.clone(),
            kind,
            relation: format!("SELECT * FROM {}", super::quote_qualified(table)),
            system: system.to_string(),
            object: format!("table {table}"),
        }
    }

    /// A source's `SELECT` (with the job's `where`), named `object`.
    pub fn relation(
        pool: &Pool<DB>,
        kind: SqlKind,
        system: &str,
        relation: &str,
        object: &str,
    ) -> Readout<DB> {
        Readout {
            pool: pool.clone(),
            kind,
            relation: relation.to_string(),
            system: system.to_string(),
            object: object.to_string(),
        }
    }
}

#[async_trait]
impl<DB: Database> Checksum for Readout<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'r> String: Decode<'r, DB>,
    String: Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    fn kind(&self) -> SqlKind {
        self.kind
    }

    fn relation(&self) -> String {
        self.relation.clone()
    }

    fn describe(&self) -> String {
        format!("{} {}", self.system, self.object)
    }

    async fn reader(&self, consistent: bool) -> Result<Box<dyn TextReader>, ConnectorError> {
        let mut first = Vec::new();
        if self.kind == SqlKind::Postgres {
            if consistent {
                first.push("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
            }
            // The canonical texts are these settings' (`sql::canonical`);
            // the bucket sums group 4096 keys, which the planner would
            // sort for, guessing a group per row; a JIT compile costs
            // more than it saves on one pass.
            first.extend([
                "SET LOCAL DateStyle = ISO",
                "SET LOCAL IntervalStyle = postgres",
                "SET LOCAL extra_float_digits = 1",
                "SET LOCAL enable_sort = off",
                "SET LOCAL jit = off",
            ]);
        }
        let reader = Reader::open(&self.pool, &first, &self.system, &self.object).await?;
        Ok(Box::new(reader))
    }
}
