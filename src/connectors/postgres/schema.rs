//! PostgreSQL's catalog: the columns of a table or a query, and the DDL of
//! schema changes (types from the source kept as declared when the source
//! is PostgreSQL too, mapped otherwise: docs/types.md).
use sqlx::{Column as _, Executor, PgPool, Statement, TypeInfo};

use crate::connectors::columns::{Column, ColumnType, ListedTable, Shape, TableSchema};
use crate::connectors::sql::{create_table, quote_ident, quote_qualified};
use crate::connectors::SchemaChange;

/// The table's columns in order and its primary key; Missing when there is
/// no such table.
pub async fn table(pool: &PgPool, table: &str) -> Result<Shape, sqlx::Error> {
    let name = quote_qualified(table);
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&name)
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(Shape::Missing);
    }
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
         FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
    )
    .bind(&name)
    .fetch_all(pool)
    .await?;
    let primary_key: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = to_regclass($1) AND i.indisprimary \
         ORDER BY array_position(i.indkey::int2[], a.attnum)",
    )
    .bind(&name)
    .fetch_all(pool)
    .await?;
    Ok(Shape::Table(TableSchema {
        columns: columns
            .into_iter()
            .map(|(name, declared)| Column::postgres(name, declared))
            .collect(),
        primary_key,
    }))
}

/// Every ordinary or partitioned table outside the system schemas, with
/// its primary key in key order.
pub async fn list(pool: &PgPool) -> Result<Vec<ListedTable>, sqlx::Error> {
    let rows: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT n.nspname || '.' || c.relname, \
           coalesce((SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum)) \
              FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
              WHERE i.indrelid = c.oid AND i.indisprimary), '{}') \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' \
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, primary_key)| ListedTable { name, primary_key })
        .collect())
}

/// The columns a query returns, as the server describes them (types
/// without their modifiers).
pub async fn query(pool: &PgPool, query: &str) -> Result<Shape, sqlx::Error> {
    let described = format!("SELECT * FROM ({query}) AS s");
    let statement = pool.prepare(&described).await?;
    Ok(Shape::Table(TableSchema {
        columns: statement
            .columns()
            .iter()
            .map(|c| Column::postgres(c.name().to_string(), c.type_info().name().to_lowercase()))
            .collect(),
        primary_key: vec![],
    }))
}

/// The PostgreSQL type a source column gets in a created or altered table.
pub fn type_of(column: &Column) -> String {
    if column.system == "postgres" {
        return column.declared.clone();
    }
    match &column.ty {
        ColumnType::Bool => "boolean".into(),
        ColumnType::Int(1 | 2) => "smallint".into(),
        ColumnType::Int(3 | 4) => "integer".into(),
        ColumnType::Int(_) => "bigint".into(),
        ColumnType::Decimal(Some((p, s))) if *p <= 1000 => format!("numeric({p},{s})"),
        ColumnType::Decimal(_) | ColumnType::SqliteNumeric => "numeric".into(),
        ColumnType::Float(4) => "real".into(),
        ColumnType::Float(_) => "double precision".into(),
        ColumnType::Text(Some(n)) => format!("varchar({n})"),
        ColumnType::Char(n) => format!("char({n})"),
        ColumnType::Bytes => "bytea".into(),
        ColumnType::Date => "date".into(),
        ColumnType::Time(p) => format!("time({p})"),
        ColumnType::Timestamp(p) => format!("timestamp({p})"),
        ColumnType::TimestampTz(p) => format!("timestamptz({p})"),
        ColumnType::Interval => "interval".into(),
        ColumnType::Uuid => "uuid".into(),
        ColumnType::Json => "jsonb".into(),
        ColumnType::Text(None) | ColumnType::Any | ColumnType::Other(_) => "text".into(),
    }
}

/// The DDL of `change` on `table`; each statement is safe to repeat.
pub fn statements(table: &str, change: &SchemaChange) -> Vec<String> {
    let t = quote_qualified(table);
    match change {
        SchemaChange::CreateTable { columns, key } => {
            vec![create_table(table, columns, key, type_of)]
        }
        SchemaChange::AddColumn(c) => vec![format!(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {} {}",
            quote_ident(&c.name),
            type_of(c)
        )],
        SchemaChange::WidenColumn(c) => vec![format!(
            "ALTER TABLE {t} ALTER COLUMN {} TYPE {}",
            quote_ident(&c.name),
            type_of(c)
        )],
    }
}
