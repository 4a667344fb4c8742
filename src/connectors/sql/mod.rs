//! Helpers shared by the SQL connectors: identifier quoting and error classification.
pub mod canonical;
mod execute;
mod outbox;
pub mod reader;
mod split;
mod write;

pub use execute::*;
pub use outbox::*;
pub use split::*;
pub use write::*;

use std::collections::HashMap;

use super::{
    ChildTable, Column, ColumnType, ConnectorError, Images, Shape, WriteBatch, WriteRules, Written,
};
use crate::config::registry::{Abilities, Reads, SourceSpec, TargetSpec, Writes};
use crate::config::Mode;
use crate::model::Record;
use crate::rules::{Condition, DeleteAs};

/// `"a"."b"` from `a.b`: every identifier from config is quoted, never spliced raw.
pub fn quote_qualified(name: &str) -> String {
    name.split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

/// `expr` divided by `width`, rounded down (an integer division rounds
/// towards zero, which would put -1 and 1 in one bucket).
pub fn floor_div(expr: &str, width: i64, mysql: bool) -> String {
    let div = if mysql { "DIV" } else { "/" };
    format!(
        "CASE WHEN {expr} >= 0 THEN {expr} {div} {width} ELSE ({expr} + 1) {div} {width} - 1 END"
    )
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The name [`quote_ident`] quoted.
fn unquote(quoted: &str) -> String {
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .map_or_else(|| quoted.to_string(), |q| q.replace("\"\"", "\""))
}

/// The `[source]` keys of a SQL source, beyond `type`, `key` and
/// `connect_timeout`.
pub const SOURCE_KEYS: &[&str] = &["url", "table", "query", "tables", "where"];
/// The `[target]` keys of a SQL target, beside those.
pub const TARGET_KEYS: &[&str] = &["url", "table", "mode", "updated_at", "create"];

/// A SQL source: any strategy on a table or query; `outbox_table` when it
/// can delete the rows of an outbox table it has read.
pub const fn table_source(outbox_table: bool) -> SourceSpec {
    SourceSpec {
        reads: Reads::Table,
        outbox_table,
        keys: SOURCE_KEYS,
        options: None,
    }
}

/// A SQL target: rows of a table, written under the owner rules.
pub const fn table_target(keys: &'static [&'static str], abilities: Abilities) -> TargetSpec {
    TargetSpec {
        writes: Writes::Table,
        keys,
        options: None,
        abilities,
    }
}

/// `CREATE TABLE IF NOT EXISTS` with `columns`, each typed by `type_of`
/// (the target dialect's type map), and `key` as the primary key.
pub fn create_table(
    table: &str,
    columns: &[Column],
    key: &[String],
    type_of: impl Fn(&Column) -> String,
) -> String {
    let defs: Vec<String> = columns
        .iter()
        .map(|c| {
            let not_null = if key.contains(&c.name) {
                " NOT NULL"
            } else {
                ""
            };
            format!("{} {}{not_null}", quote_ident(&c.name), type_of(c)).replace("  ", " ")
        })
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))",
        quote_qualified(table),
        defs.join(", "),
        quoted_list(key)
    )
}

/// The `SELECT` that yields a SQL source's rows, and its name for messages:
/// the columns the job reads ([`SourceConfig::columns`], all when unset).
pub fn relation(cfg: &crate::config::SourceConfig) -> (String, String) {
    let projection = cfg
        .columns
        .as_ref()
        .map_or_else(|| "*".to_string(), |columns| quoted_list(columns));
    match (&cfg.table, &cfg.query) {
        (Some(t), _) => {
            let filter = cfg
                .filter
                .as_ref()
                .map(|w| format!(" WHERE {w}"))
                .unwrap_or_default();
            (
                format!("SELECT {projection} FROM {}{filter}", quote_qualified(t)),
                format!("table {t}"),
            )
        }
        (None, Some(q)) if cfg.columns.is_some() => (
            format!(
                "SELECT {projection} FROM ({}) AS ferry_q",
                q.trim().trim_end_matches(';')
            ),
            "query".to_string(),
        ),
        (None, Some(q)) => (
            q.trim().trim_end_matches(';').to_string(),
            "query".to_string(),
        ),
        // Config validation requires `table` or `query` on SQL sources.
        (None, None) => (String::new(), "query".to_string()),
    }
}

/// Objects a server rendered as JSON text, one per row (`row_to_json`,
/// `JSON_OBJECT`).
pub fn records_of_json(
    rows: &[String],
    system: &str,
    object: &str,
) -> Result<Vec<Record>, ConnectorError> {
    rows.iter()
        .map(|json| {
            serde_json::from_str(json).map_err(|e| ConnectorError::failed(system, object, e))
        })
        .collect()
}

/// Maps a sqlx error to what the engine needs to decide: retry later (unreachable,
/// transient), a missing object, data the target refused, or another failure.
pub fn classify(err: sqlx::Error, system: &str, object: &str) -> ConnectorError {
    let (system, object) = (system.to_string(), object.to_string());
    let db = match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => {
            return ConnectorError::Unreachable {
                system,
                detail: first_line(&err.to_string()),
            };
        }
        sqlx::Error::Database(db) => db,
        _ => {
            return ConnectorError::Failed {
                system,
                object,
                detail: first_line(&err.to_string()),
            }
        }
    };
    let code = db.code().map(|c| c.to_string()).unwrap_or_default();
    // `ferry_t` is ferry's alias of the target table in its statements:
    // the user knows the column, not the alias.
    let detail = first_line(db.message()).replace("ferry_t.", "");
    if crate::sql_error::refuses_access(db.as_ref()) {
        return ConnectorError::Refused { system, detail };
    }
    // SQLite's extended result codes keep the primary code in the low byte.
    let sqlite = code.parse::<i32>().ok().map(|c| c & 0xff);
    // Connection failures, shutdowns, too many connections: the system
    // cannot be used now; nothing was written.
    if code.starts_with("08") || code.starts_with("57P") || code == "53300" || sqlite == Some(14) {
        ConnectorError::Unreachable { system, detail }
    } else if matches!(code.as_str(), "40001" | "40P01" | "55P03" | "57014")
        || matches!(sqlite, Some(5 | 6))
    {
        ConnectorError::Transient {
            system,
            object,
            detail,
        }
    } else if code == "42P01"
        || code == "3F000"
        || code == "42S02"
        || detail.starts_with("no such table")
    {
        ConnectorError::MissingObject {
            system,
            object,
            detail,
        }
    } else if code.starts_with("22")
        || code.starts_with("23")
        || code == "42804"
        || matches!(sqlite, Some(19 | 20))
    {
        ConnectorError::Rejected {
            system,
            object,
            detail,
        }
    } else {
        ConnectorError::Failed {
            system,
            object,
            detail,
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// The target columns a batch writes: every field of every record, in first-seen order.
pub fn columns_of(records: &[&Record]) -> Vec<String> {
    let mut cols: Vec<String> = Vec::new();
    for r in records {
        for k in r.keys() {
            if !cols.iter().any(|c| c == k) {
                cols.push(k.clone());
            }
        }
    }
    cols
}

/// A batch as one JSON array parameter.
pub fn to_json(records: &[&Record]) -> String {
    // A slice of JSON maps always serialises.
    serde_json::to_string(records).expect("records serialise")
}

#[cfg(test)]
mod tests {
    #[test]
    fn quotes_each_part_and_escapes_quotes() {
        assert_eq!(
            super::quote_qualified("public.cust\"omers"),
            "\"public\".\"cust\"\"omers\""
        );
    }
}
