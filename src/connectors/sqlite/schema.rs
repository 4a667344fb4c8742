//! SQLite's catalog (`pragma_table_info`) and the DDL of schema changes,
//! by type affinity (docs/types.md): wide decimals go to TEXT columns,
//! where their digits stay exact.
use sqlx::SqlitePool;

use crate::connectors::columns::{Column, ColumnType, ListedTable, Shape, TableSchema};
use crate::connectors::sql::{create_table, quote_ident, quote_qualified};
use crate::connectors::SchemaChange;

/// `schema.table` or `table` as pragma arguments.
fn parts(table: &str) -> (&str, &str) {
    match table.split_once('.') {
        Some((schema, table)) => (schema, table),
        None => ("main", table),
    }
}

pub async fn table(pool: &SqlitePool, table: &str) -> Result<Shape, sqlx::Error> {
    let (schema, name) = parts(table);
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT name, type, pk FROM pragma_table_info($1, $2) ORDER BY cid")
            .bind(name)
            .bind(schema)
            .fetch_all(pool)
            .await?;
    if rows.is_empty() {
        return Ok(Shape::Missing);
    }
    let mut primary: Vec<(i64, String)> = rows
        .iter()
        .filter(|(_, _, pk)| *pk > 0)
        .map(|(name, _, pk)| (*pk, name.clone()))
        .collect();
    primary.sort();
    Ok(Shape::Table(TableSchema {
        columns: rows
            .into_iter()
            .map(|(name, declared, _)| Column::sqlite(name, declared))
            .collect(),
        primary_key: primary.into_iter().map(|(_, name)| name).collect(),
    }))
}

/// Every table of the main database (SQLite's own left out), with its
/// primary key.
pub async fn list(pool: &SqlitePool) -> Result<Vec<ListedTable>, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for name in names {
        let primary_key = match table(pool, &name).await? {
            Shape::Table(t) => t.primary_key,
            _ => vec![],
        };
        out.push(ListedTable {
            name: format!("main.{name}"),
            primary_key,
        });
    }
    Ok(out)
}

/// The columns a query returns, typed by the declared type of the table
/// column each comes from (none for an expression).
pub async fn query(pool: &SqlitePool, query: &str) -> Result<Shape, sqlx::Error> {
    use sqlx::{Column as _, Executor, Statement, TypeInfo};
    let described = format!("SELECT * FROM ({query}) AS s");
    let statement = pool.prepare(&described).await?;
    Ok(Shape::Table(TableSchema {
        columns: statement
            .columns()
            .iter()
            .map(|c| {
                let declared = match c.type_info().name() {
                    "NULL" => String::new(),
                    name => name.to_string(),
                };
                Column::sqlite(c.name().to_string(), declared)
            })
            .collect(),
        primary_key: vec![],
    }))
}

/// The SQLite type a source column gets in a created table.
pub fn type_of(column: &Column) -> String {
    if column.system == "sqlite" {
        return column.declared.clone();
    }
    match &column.ty {
        ColumnType::Bool => "BOOLEAN".into(),
        ColumnType::Int(_) => "INTEGER".into(),
        ColumnType::Decimal(Some((p, 0))) if *p <= 18 => "INTEGER".into(),
        ColumnType::Decimal(Some((p, _))) if *p <= 15 => "NUMERIC".into(),
        // More digits than a double keeps: text keeps them all.
        ColumnType::Decimal(_) => "TEXT".into(),
        ColumnType::Float(_) => "REAL".into(),
        ColumnType::Bytes => "BLOB".into(),
        ColumnType::SqliteNumeric => "NUMERIC".into(),
        ColumnType::Any => String::new(),
        _ => "TEXT".into(),
    }
}

pub fn statements(table: &str, change: &SchemaChange) -> Vec<String> {
    let t = quote_qualified(table);
    let def = |c: &Column| {
        format!("{} {}", quote_ident(&c.name), type_of(c))
            .trim_end()
            .to_string()
    };
    match change {
        SchemaChange::CreateTable { columns, key } => {
            vec![create_table(table, columns, key, type_of)]
        }
        SchemaChange::AddColumn(c) => vec![format!("ALTER TABLE {t} ADD COLUMN {}", def(c))],
        // SQLite stores any value in any column: a wider source type
        // needs no change of the declared one.
        SchemaChange::WidenColumn(_) => vec![],
    }
}
