//! MySQL's and MariaDB's catalog (`information_schema`) and the DDL of
//! schema changes (docs/types.md).
use sqlx::MySqlPool;

use crate::connectors::columns::{Column, ColumnType, ListedTable, Shape, TableSchema};
use crate::connectors::sql::{create_table, quote_ident, quote_qualified};
use crate::connectors::SchemaChange;

/// `db.table` or `table` (in the connection's database).
fn parts(table: &str) -> (Option<&str>, &str) {
    match table.split_once('.') {
        Some((db, table)) => (Some(db), table),
        None => (None, table),
    }
}

pub async fn table(pool: &MySqlPool, table: &str) -> Result<Shape, sqlx::Error> {
    let (db, name) = parts(table);
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(COLUMN_TYPE AS CHAR) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
    )
    .bind(db)
    .bind(name)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok(Shape::Missing);
    }
    let primary_key: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.KEY_COLUMN_USAGE \
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
         ORDER BY ORDINAL_POSITION",
    )
    .bind(db)
    .bind(name)
    .fetch_all(pool)
    .await?;
    // MariaDB's JSON is LONGTEXT with a `json_valid` check (MySQL's is a type).
    let checks: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(CHECK_CLAUSE AS CHAR) FROM information_schema.CHECK_CONSTRAINTS \
         WHERE CONSTRAINT_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
    )
    .bind(db)
    .bind(name)
    .fetch_all(pool)
    .await?;
    // Quoted as the session's sql_mode quotes (ANSI_QUOTES: "j").
    let json = |column: &str| {
        checks.contains(&format!("json_valid(`{column}`)"))
            || checks.contains(&format!("json_valid(\"{column}\")"))
    };
    Ok(Shape::Table(TableSchema {
        columns: rows
            .into_iter()
            .map(|(name, declared)| match json(&name) {
                true => Column::mysql(name, "json".to_string()),
                false => Column::mysql(name, declared),
            })
            .collect(),
        primary_key,
    }))
}

/// Every base table of the connection's database, with its primary key.
pub async fn list(pool: &MySqlPool) -> Result<Vec<ListedTable>, sqlx::Error> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT CAST(t.TABLE_SCHEMA AS CHAR), CAST(t.TABLE_NAME AS CHAR), \
           CAST((SELECT JSON_ARRAYAGG(k.COLUMN_NAME) FROM (SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE k \
              WHERE k.TABLE_SCHEMA = t.TABLE_SCHEMA AND k.TABLE_NAME = t.TABLE_NAME AND k.CONSTRAINT_NAME = 'PRIMARY' \
              ORDER BY k.ORDINAL_POSITION) AS k) AS CHAR) \
         FROM information_schema.TABLES t WHERE t.TABLE_SCHEMA = DATABASE() AND t.TABLE_TYPE = 'BASE TABLE' \
         ORDER BY t.TABLE_NAME",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(db, table, key)| ListedTable {
            name: format!("{db}.{table}"),
            primary_key: key
                .and_then(|k| serde_json::from_str(&k).ok())
                .unwrap_or_default(),
        })
        .collect())
}

/// The columns a query returns, as the server describes them.
pub async fn query(pool: &MySqlPool, query: &str) -> Result<Shape, sqlx::Error> {
    use sqlx::{Column as _, Executor, TypeInfo};
    let described = format!("SELECT * FROM ({query}) AS s");
    let description = pool.describe(&described).await?;
    Ok(Shape::Table(TableSchema {
        columns: description
            .columns()
            .iter()
            .map(|c| Column::mysql(c.name().to_string(), c.type_info().name().to_lowercase()))
            .collect(),
        primary_key: vec![],
    }))
}

/// The MySQL/MariaDB type a source column gets in a created or altered table.
pub fn type_of(column: &Column) -> String {
    if column.system == "mysql" {
        return column.declared.clone();
    }
    match &column.ty {
        ColumnType::Bool => "BOOLEAN".into(),
        ColumnType::Int(1) => "TINYINT".into(),
        ColumnType::Int(2) => "SMALLINT".into(),
        ColumnType::Int(3) => "MEDIUMINT".into(),
        ColumnType::Int(4) => "INT".into(),
        ColumnType::Int(_) => "BIGINT".into(),
        ColumnType::Decimal(Some((p, s))) if *p <= 65 && *s <= 30 => format!("DECIMAL({p},{s})"),
        ColumnType::Decimal(_) | ColumnType::SqliteNumeric => "DECIMAL(65,30)".into(),
        ColumnType::Float(4) => "FLOAT".into(),
        ColumnType::Float(_) => "DOUBLE".into(),
        ColumnType::Text(Some(n)) if *n <= 16_383 => format!("VARCHAR({n})"),
        ColumnType::Char(n) if *n <= 255 => format!("CHAR({n})"),
        ColumnType::Bytes => "LONGBLOB".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::Time(p) => format!("TIME({})", p.min(&6)),
        ColumnType::Timestamp(p) | ColumnType::TimestampTz(p) => {
            format!("DATETIME({})", p.min(&6))
        }
        ColumnType::Uuid => "CHAR(36)".into(),
        ColumnType::Json => "JSON".into(),
        _ => "LONGTEXT".into(),
    }
}

/// The DDL of `change`; each statement is safe to repeat.
pub fn statements(table: &str, change: &SchemaChange) -> Vec<String> {
    let t = quote_qualified(table);
    match change {
        SchemaChange::CreateTable { columns, key } => {
            vec![create_table(table, columns, key, |c| key_type(c, key))]
        }
        SchemaChange::AddColumn(c) => vec![format!(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {} {}",
            quote_ident(&c.name),
            type_of(c)
        )],
        SchemaChange::WidenColumn(c) => vec![format!(
            "ALTER TABLE {t} MODIFY COLUMN {} {}",
            quote_ident(&c.name),
            type_of(c)
        )],
    }
}

/// A key column cannot be a TEXT or BLOB without a prefix length: an
/// unbounded text key becomes VARCHAR(255).
fn key_type(column: &Column, key: &[String]) -> String {
    use ColumnType as T;
    match (key.contains(&column.name), &column.ty) {
        (true, T::Bytes) => "VARBINARY(255)".into(),
        (true, T::Text(None) | T::Json | T::Any | T::Other(_) | T::Interval) => {
            "VARCHAR(255)".into()
        }
        _ => type_of(column),
    }
}
