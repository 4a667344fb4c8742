//! Helpers shared by the SQL connectors: identifier quoting and error classification.
use super::{ConnectorError, WriteBatch, WriteRules};
use crate::config::{Deletes, Mode, Owner};
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

/// The `SELECT` that yields a SQL source's rows, and its name for messages.
pub fn relation(cfg: &crate::config::SourceConfig) -> (String, String) {
    match (&cfg.table, &cfg.query) {
        (Some(t), _) => {
            let filter = cfg
                .filter
                .as_ref()
                .map(|w| format!(" WHERE {w}"))
                .unwrap_or_default();
            (
                format!("SELECT * FROM {}{filter}", quote_qualified(t)),
                format!("table {t}"),
            )
        }
        (None, Some(q)) => (
            q.trim().trim_end_matches(';').to_string(),
            "query".to_string(),
        ),
        // Config validation requires `table` or `query` on SQL sources.
        (None, None) => (String::new(), "query".to_string()),
    }
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
    let detail = first_line(db.message());
    // SQLite's extended result codes keep the primary code in the low byte.
    let sqlite = code.parse::<i32>().ok().map(|c| c & 0xff);
    // Connection failures, shutdowns, too many connections, and refused
    // credentials (28xxx): the system cannot be used now; nothing was written.
    if code.starts_with("08")
        || code.starts_with("57P")
        || code.starts_with("28")
        || code == "53300"
        || sqlite == Some(14)
    {
        ConnectorError::Unreachable { system, detail }
    } else if matches!(code.as_str(), "40001" | "40P01" | "55P03" | "57014")
        || matches!(sqlite, Some(5 | 6))
    {
        ConnectorError::Transient {
            system,
            object,
            detail,
        }
    } else if code == "42P01" || code == "3F000" || detail.starts_with("no such table") {
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

/// `SET` assignments for an existing row, by each field's owner: source-owned
/// fields take the incoming value, `fill` only where the target's is NULL,
/// target-owned fields are never overwritten, `newest` fields only when the
/// incoming change time is later than the row's `updated_at` (which then
/// keeps the later of the two). A soft-deleted row comes back. Every
/// expression reads the row as it was before the statement.
pub fn assignments(
    rules: &WriteRules,
    cols: &[String],
    existing: &str,
    incoming: &str,
) -> Vec<String> {
    let newer = rules.updated_at.as_deref().map(|u| {
        let u = quote_ident(u);
        format!("({existing}.{u} IS NULL OR {incoming}.{u} > {existing}.{u})")
    });
    let mut sets: Vec<String> = cols
        .iter()
        .filter(|c| !rules.key.contains(c))
        .filter_map(|c| {
            let q = quote_ident(c);
            let if_newer = |newer: &str| {
                format!("{q} = CASE WHEN {newer} THEN {incoming}.{q} ELSE {existing}.{q} END")
            };
            match (rules.owner(c), &newer) {
                (_, Some(newer)) if rules.updated_at.as_ref() == Some(c) => Some(if_newer(newer)),
                (Owner::Newest, Some(newer)) => Some(if_newer(newer)),
                (Owner::Source | Owner::Newest, _) => Some(format!("{q} = {incoming}.{q}")),
                (Owner::Fill, _) => Some(format!("{q} = COALESCE({existing}.{q}, {incoming}.{q})")),
                (Owner::Target, _) => None,
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
pub fn to_json(records: &[&Record]) -> String {
    // A slice of JSON maps always serialises.
    serde_json::to_string(records).expect("records serialise")
}

/// The SQL targets' dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// Builds a SQL target's statements under the job's write rules. Every
/// statement takes a whole batch as one JSON array parameter (`$1`), so a
/// task of any size is one round trip per statement.
#[derive(Debug, Clone)]
pub struct WriteSql {
    /// Quoted, possibly schema-qualified.
    table: String,
    rules: WriteRules,
    dialect: Dialect,
}

impl WriteSql {
    pub fn new(rules: WriteRules, dialect: Dialect) -> WriteSql {
        WriteSql {
            table: quote_qualified(&rules.table),
            rules,
            dialect,
        }
    }

    pub fn rules(&self) -> &WriteRules {
        &self.rules
    }

    /// The statements for one batch, each with the records it binds.
    pub fn statements<'b>(&self, batch: &'b WriteBatch<'_>) -> Vec<(String, &'b [&'b Record])> {
        let mut out = Vec::with_capacity(2);
        if !batch.upserts.is_empty() {
            let mut cols = columns_of(&batch.upserts);
            if self.rules.deletes == Deletes::Soft {
                cols.retain(|c| Some(c) != self.rules.soft_delete.as_ref());
            }
            if let Some(sql) = self.upsert(&cols) {
                out.push((sql, batch.upserts.as_slice()));
            }
        }
        if !batch.deletes.is_empty() {
            if let Some(sql) = self.delete() {
                out.push((sql, batch.deletes.as_slice()));
            }
        }
        out
    }

    /// The batch's rows as a subquery with columns `cols`, typed by the target.
    fn rows(&self, cols: &[String]) -> String {
        let list = cols
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        match self.dialect {
            Dialect::Postgres => format!(
                "(SELECT {list} FROM json_populate_recordset(NULL::{}, $1::json))",
                self.table
            ),
            Dialect::Sqlite => {
                let exprs = cols
                    .iter()
                    .map(|c| {
                        format!(
                            "json_extract(value, '$.\"{}\"') AS {}",
                            c.replace('\'', "''").replace('"', "\\\""),
                            quote_ident(c)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("(SELECT {exprs} FROM json_each($1))")
            }
        }
    }

    fn now(&self) -> &'static str {
        match self.dialect {
            Dialect::Postgres => "now()",
            Dialect::Sqlite => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        }
    }

    fn key_list(&self) -> String {
        self.rules
            .key
            .iter()
            .map(|k| quote_ident(k))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every row's key as one JSON array (text), for [`key_stream`].
    pub fn keys(&self) -> String {
        let array = match self.dialect {
            Dialect::Postgres => "json_build_array",
            Dialect::Sqlite => "json_array",
        };
        format!(
            "SELECT CAST({array}({}) AS TEXT) FROM {}",
            self.key_list(),
            self.table
        )
    }

    /// Insert, update or upsert by `mode`; None when there is nothing to write.
    fn upsert(&self, cols: &[String]) -> Option<String> {
        let t = &self.table;
        let list = cols
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = self.rows(cols);
        // `WHERE true` keeps SQLite from reading ON CONFLICT as a join clause.
        Some(match self.rules.mode {
            Mode::Update => {
                let sets = assignments(&self.rules, cols, "ferry_t", "x");
                if sets.is_empty() {
                    return None;
                }
                let on = self.rules.key.iter().map(|k| format!("ferry_t.{q} = x.{q}", q = quote_ident(k))).collect::<Vec<_>>().join(" AND ");
                format!("UPDATE {t} AS ferry_t SET {} FROM {rows} AS x WHERE {on}", sets.join(", "))
            }
            Mode::Insert => format!("INSERT INTO {t} ({list}) SELECT {list} FROM {rows} AS x WHERE true ON CONFLICT DO NOTHING"),
            Mode::Upsert | Mode::Mirror => {
                let sets = assignments(&self.rules, cols, "ferry_t", "excluded");
                let action = if sets.is_empty() { "NOTHING".to_string() } else { format!("UPDATE SET {}", sets.join(", ")) };
                format!("INSERT INTO {t} AS ferry_t ({list}) SELECT {list} FROM {rows} AS x WHERE true ON CONFLICT ({}) DO {action}", self.key_list())
            }
        })
    }

    fn delete(&self) -> Option<String> {
        let t = &self.table;
        let keys = self.key_list();
        let matching = format!(
            "({keys}) IN (SELECT {keys} FROM {} AS x)",
            self.rows(&self.rules.key)
        );
        match self.rules.deletes {
            Deletes::Ignore => None,
            Deletes::Propagate => Some(format!("DELETE FROM {t} WHERE {matching}")),
            Deletes::Soft => {
                let sd = quote_ident(self.rules.soft_delete.as_deref().unwrap_or("deleted_at"));
                Some(format!(
                    "UPDATE {t} SET {sd} = {} WHERE {matching} AND {sd} IS NULL",
                    self.now()
                ))
            }
        }
    }
}

/// Runs a batch's statements on one connection (the caller's transaction).
pub async fn execute_batch<DB>(
    conn: &mut DB::Connection,
    sql: &WriteSql,
    batch: &WriteBatch<'_>,
) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    for (statement, records) in sql.statements(batch) {
        sqlx::query::<DB>(&statement)
            .bind(to_json(records))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Streams the rows of [`WriteSql::keys`] from a pool of either SQL target.
pub fn key_stream<DB>(
    pool: sqlx::Pool<DB>,
    sql: String,
    system: String,
    object: String,
) -> crate::connectors::KeyStream
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    String: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    Box::pin(async_stream::try_stream! {
        let mut rows = sqlx::query_scalar::<DB, String>(&sql).fetch(&pool);
        while let Some(text) = futures::TryStreamExt::try_next(&mut rows)
            .await
            .map_err(|e| classify(e, &system, &object))?
        {
            let key: Vec<serde_json::Value> = serde_json::from_str(&text)
                .map_err(|e| ConnectorError::failed(&system, &object, e))?;
            yield key;
        }
    })
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
