//! Helpers shared by the SQL connectors: identifier quoting and error classification.
use super::{ConnectorError, WriteRules};
use crate::config::{Deletes, Owner};
use crate::model::Record;

/// `"a"."b"` from `a.b`: every identifier from config is quoted, never spliced raw.
pub fn quote_qualified(name: &str) -> String {
    name.split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Maps a sqlx error to what the engine needs to decide: retry later (unreachable),
/// a missing object, data the target refused, or another failure.
pub fn classify(err: sqlx::Error, system: &str, object: &str) -> ConnectorError {
    let system_s = system.to_string();
    let object_s = object.to_string();
    match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => ConnectorError::Unreachable {
            system: system_s,
            detail: first_line(&err.to_string()),
        },
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let detail = first_line(db.message());
            let sqlite_code = code.parse::<i32>().ok();
            if code.starts_with("08")
                || code.starts_with("57P")
                || code == "53300"
                || sqlite_code.is_some_and(|c| c & 0xff == 14)
            {
                ConnectorError::Unreachable {
                    system: system_s,
                    detail,
                }
            } else if code == "42P01" || code == "3F000" || detail.starts_with("no such table") {
                ConnectorError::MissingObject {
                    system: system_s,
                    object: object_s,
                    detail,
                }
            } else if code.starts_with("22")
                || code.starts_with("23")
                || code == "42804"
                || sqlite_code.is_some_and(|c| c & 0xff == 19 || c & 0xff == 20)
            {
                ConnectorError::Rejected {
                    system: system_s,
                    object: object_s,
                    detail,
                }
            } else {
                ConnectorError::Failed {
                    system: system_s,
                    object: object_s,
                    detail,
                }
            }
        }
        _ => ConnectorError::Failed {
            system: system_s,
            object: object_s,
            detail: first_line(&err.to_string()),
        },
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// The target columns a batch writes: every field of every record, in first-seen order.
pub fn columns_of(records: &[Record]) -> Vec<String> {
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

/// `SET` assignments for an existing row, by each field's owner: source-owned
/// fields take the incoming value, `fill` only where the target's is NULL,
/// target-owned fields are never overwritten. A soft-deleted row comes back.
pub fn assignments(
    rules: &WriteRules,
    cols: &[String],
    existing: &str,
    incoming: &str,
) -> Vec<String> {
    let mut sets: Vec<String> = cols
        .iter()
        .filter(|c| !rules.key.contains(c))
        .filter_map(|c| {
            let q = quote_ident(c);
            match rules.owner(c) {
                Owner::Source | Owner::Newest => Some(format!("{q} = {incoming}.{q}")),
                Owner::Fill => Some(format!("{q} = COALESCE({existing}.{q}, {incoming}.{q})")),
                Owner::Target => None,
            }
        })
        .collect();
    if rules.deletes == Deletes::Soft {
        if let Some(sd) = &rules.soft_delete {
            sets.push(format!("{} = NULL", quote_ident(sd)));
        }
    }
    sets
}

/// A batch as one JSON array parameter.
pub fn to_json(records: &[Record]) -> String {
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
