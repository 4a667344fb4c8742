use std::time::Duration;

use async_trait::async_trait;

use crate::connectors::sql::canonical::SqlKind;
use crate::connectors::sql::reader::Readout;
use futures::TryStreamExt;
use serde_json::Value;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, Column, Row, SqlitePool, TypeInfo, ValueRef};

use crate::config::{Child, SourceConfig};
use crate::connectors::sql::{chunks_of, classify, quote_ident, relation, split_statements};
use crate::connectors::{
    ConnectorError, ListedTable, RowStream, Scan, Shape, Source, Split, Subset,
};
use crate::model::{Record, SourceRow};

pub struct SqliteSource {
    pool: SqlitePool,
    /// What `ferry verify` reads.
    readout: Readout<sqlx::Sqlite>,
    system: String,
    object: String,
    relation: String,
    key: Vec<String>,
    cfg_table: Option<String>,
    cfg_query: Option<String>,
}

impl SqliteSource {
    pub fn new(cfg: &SourceConfig) -> Result<Self, ConnectorError> {
        let url = cfg.url.as_deref().unwrap_or_default();
        let system = super::system(url);
        let pool = super::pool(url, &system, true)?;
        let (relation, object) = relation(cfg);
        let readout = Readout::relation(&pool, SqlKind::Sqlite, &system, &relation, &object);
        Ok(SqliteSource {
            readout,
            pool,
            system,
            object,
            relation,
            key: cfg.key.clone(),
            cfg_table: cfg.table.clone(),
            cfg_query: cfg.query.clone(),
        })
    }
}

impl SqliteSource {
    /// ` WHERE …` selecting `subset`, its values bound into `args`.
    fn subset_clause(
        &self,
        subset: &Subset,
        args: &mut SqliteArguments<'_>,
    ) -> Result<String, ConnectorError> {
        let (clause, values) = subset.where_clause(&self.key, &mut |n, _| format!("${}", n + 1));
        for value in values {
            bind_value(args, value)
                .map_err(|e| ConnectorError::failed(&self.system, &self.object, e))?;
        }
        Ok(clause)
    }
}

#[async_trait]
impl Source for SqliteSource {
    fn checksum(&self) -> Option<&dyn crate::connectors::checksum::Checksum> {
        Some(&self.readout)
    }

    async fn split(&self, subset: &Subset, rows: u64) -> Result<Option<Split>, ConnectorError> {
        if self.cfg_table.is_none() {
            // A query would be run again for every chunk.
            return Ok(None);
        }
        let mut args = SqliteArguments::default();
        let tail = self.subset_clause(subset, &mut args)?;
        let (boundaries, count) =
            split_statements(&self.relation, &tail, &self.key, rows, "json_array({})");
        let err = |e| classify(e, &self.system, &self.object);
        let found: Vec<String> = sqlx::query_scalar_with(&boundaries, args.clone())
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        let count: i64 = sqlx::query_scalar_with(&count, args)
            .fetch_one(&self.pool)
            .await
            .map_err(err)?;
        chunks_of(&found, count, rows, &self.system, &self.object).map(Some)
    }

    async fn max_cursor(&self, column: &str) -> Result<Option<String>, ConnectorError> {
        let sql = format!(
            "SELECT max(s.{c}) AS {c} FROM ({}) AS s",
            self.relation,
            c = quote_ident(column)
        );
        let row = sqlx::query(&sql)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| classify(e, &self.system, &self.object))?;
        Ok(record_of(&row)
            .get(column)
            .filter(|v| !v.is_null())
            .map(ToString::to_string))
    }

    fn describe(&self) -> String {
        format!("{} {}", self.system, self.object)
    }

    async fn scan(&self, scan: Scan<'_>) -> Result<RowStream, ConnectorError> {
        let mut args = SqliteArguments::default();
        let mut cursor_column = None;
        let sql = match scan {
            Scan::All => format!("SELECT * FROM ({}) AS s", self.relation),
            Scan::NullCursor { column } => format!(
                "SELECT * FROM ({}) AS s WHERE s.{} IS NULL",
                self.relation,
                quote_ident(column)
            ),
            Scan::Subset(subset) => {
                let clause = self.subset_clause(subset, &mut args)?;
                format!("SELECT * FROM ({}) AS s{clause}", self.relation)
            }
            Scan::Since { column, from, lag } => {
                cursor_column = Some(column.to_string());
                let c = quote_ident(column);
                match from {
                    None => format!(
                        "SELECT * FROM ({}) AS s WHERE s.{c} IS NOT NULL ORDER BY s.{c}",
                        self.relation
                    ),
                    Some(from) => {
                        bind_cursor(&mut args, from, lag)
                            .map_err(|e| ConnectorError::failed(&self.system, &self.object, e))?;
                        format!(
                            "SELECT * FROM ({}) AS s WHERE s.{c} >= $1 ORDER BY s.{c}",
                            self.relation
                        )
                    }
                }
            }
        };
        let pool = self.pool.clone();
        let system = self.system.clone();
        let object = self.object.clone();
        let stream = async_stream::try_stream! {
            let mut rows = sqlx::query_with(&sql, args).fetch(&pool);
            while let Some(row) = rows.try_next().await.map_err(|e| classify(e, &system, &object))? {
                let data = record_of(&row);
                let cursor = cursor_column.as_ref().and_then(|c| data.get(c)).map(|v| v.to_string());
                yield SourceRow::new(data, cursor);
            }
        };
        Ok(Box::pin(stream))
    }

    async fn list_tables(&self) -> Result<Option<Vec<ListedTable>>, ConnectorError> {
        super::schema::list(&self.pool)
            .await
            .map(Some)
            .map_err(|e| classify(e, &self.system, &self.object))
    }

    async fn schema(&self) -> Result<Shape, ConnectorError> {
        let shape = match (&self.cfg_table, &self.cfg_query) {
            (Some(table), _) => super::schema::table(&self.pool, table).await,
            (None, Some(query)) => super::schema::query(&self.pool, query).await,
            (None, None) => Ok(Shape::Schemaless),
        };
        shape.map_err(|e| classify(e, &self.system, &self.object))
    }

    async fn children(
        &self,
        child: &Child,
        parents: &[Value],
    ) -> Result<Vec<Record>, ConnectorError> {
        let sql = format!(
            "SELECT * FROM ({}) AS c",
            child.batched("IN (SELECT value FROM json_each($1))")
        );
        let parents = serde_json::to_string(parents)
            .map_err(|e| ConnectorError::failed(&self.system, &self.object, e))?;
        let rows = sqlx::query(&sql)
            .bind(parents)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| {
                classify(
                    e,
                    &self.system,
                    &format!("children query of {}", self.object),
                )
            })?;
        Ok(rows.iter().map(record_of).collect())
    }
}

/// Binds a stored cursor (the JSON text of the value) with its SQLite type,
/// moved back by `lag` when it is a timestamp in text form.
fn bind_cursor(args: &mut SqliteArguments<'_>, stored: &str, lag: Duration) -> Result<(), String> {
    let value: Value = serde_json::from_str(stored)
        .map_err(|e| format!("stored cursor `{stored}` is unreadable: {e}"))?;
    match value {
        Value::String(s) => args
            .add(shift_timestamp(&s, lag).unwrap_or(s))
            .map_err(|e| e.to_string()),
        other => bind_value(args, other),
    }
}

/// A number binds as a number, so that it compares with an INTEGER or
/// REAL column by value.
fn bind_value(args: &mut SqliteArguments<'_>, value: Value) -> Result<(), String> {
    let r = match value {
        Value::Number(n) => match n.as_i64() {
            Some(i) => args.add(i),
            None => args.add(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => args.add(s),
        other => args.add(other.to_string()),
    };
    r.map_err(|e| e.to_string())
}

/// `text` minus `lag` in the same layout, when `text` is a timestamp.
fn shift_timestamp(text: &str, lag: Duration) -> Option<String> {
    if lag.is_zero() {
        return None;
    }
    let lag = chrono::Duration::from_std(lag).ok()?;
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some((t - lag).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, text.ends_with('Z')));
    }
    for layout in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, layout) {
            return Some((t - lag).format(layout).to_string());
        }
    }
    None
}

/// A row as JSON, each value by its storage class.
pub(super) fn record_of(row: &SqliteRow) -> Record {
    let mut rec = Record::new();
    for (i, col) in row.columns().iter().enumerate() {
        let v = match row.try_get_raw(i) {
            Ok(raw) if raw.is_null() => Value::Null,
            Ok(raw) => match raw.type_info().name() {
                "INTEGER" => row
                    .try_get::<i64, _>(i)
                    .map(Value::from)
                    .unwrap_or(Value::Null),
                "REAL" => row
                    .try_get::<f64, _>(i)
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
                "BLOB" => row
                    .try_get::<Vec<u8>, _>(i)
                    .map(|b| Value::String(hex(&b)))
                    .unwrap_or(Value::Null),
                _ => row
                    .try_get::<String, _>(i)
                    .map(Value::String)
                    .unwrap_or(Value::Null),
            },
            Err(_) => Value::Null,
        };
        rec.insert(col.name().to_string(), v);
    }
    rec
}

/// Bytes as PostgreSQL writes bytea in JSON, `\x` and lowercase hex: one
/// form for binary values from every SQL source (docs/types.md).
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("\\x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_text_timestamps_in_their_own_layout() {
        let five = Duration::from_secs(5);
        assert_eq!(
            shift_timestamp("2026-01-01 00:00:02", five).unwrap(),
            "2025-12-31 23:59:57"
        );
        assert_eq!(
            shift_timestamp("2026-01-01T10:00:05.250", five).unwrap(),
            "2026-01-01T10:00:00.250"
        );
        assert_eq!(
            shift_timestamp("2026-01-01T10:00:05+01:00", five).unwrap(),
            "2026-01-01T10:00:00+01:00"
        );
        assert_eq!(shift_timestamp("v42", five), None);
    }
}
