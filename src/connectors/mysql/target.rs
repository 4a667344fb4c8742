use crate::connectors::shared_pool::{self, Role};
use async_trait::async_trait;

use crate::connectors::sql::canonical::SqlKind;
use crate::connectors::sql::reader::Readout;
use serde_json::Value;
use sqlx::mysql::MySqlArguments;
use sqlx::{Arguments, MySqlPool};

use crate::config::{Mode, TargetConfig};
use crate::connectors::sql::{
    assignments, classify, columns_of, key_stream, quote_ident, quote_qualified,
};
use crate::connectors::{
    Column, ColumnType, ConnectorError, KeyStream, SchemaChange, Shape, Target, WriteBatch,
    WriteRules, Written,
};
use crate::model::Record;
use crate::rules::{Condition, DeleteAs};

/// Placeholders one statement may carry.
const MAX_PLACEHOLDERS: usize = 65_535;

pub struct MysqlTarget {
    pool: MySqlPool,
    /// What `ferry verify` reads.
    readout: Readout<sqlx::MySql>,
    system: String,
    object: String,
    table: String,
    rules: WriteRules,
    /// The binary columns, read before the first write: their values
    /// travel as `\\x…` hex and are bound as bytes.
    binary: tokio::sync::OnceCell<Vec<String>>,
}

impl MysqlTarget {
    pub fn new(cfg: &TargetConfig, rules: WriteRules) -> Result<Self, ConnectorError> {
        let url = cfg.url.as_deref().unwrap_or_default();
        let system = super::system(url);
        let pool = shared_pool::pool(url, Role::Write, cfg.pool_size, 8, |max| {
            super::pool(url, &system, max)
        })?;
        let readout = Readout::table(&pool, SqlKind::Mysql, &system, &rules.table);
        Ok(MysqlTarget {
            readout,
            pool,
            system,
            object: format!("table {}", rules.table),
            table: quote_qualified(&rules.table),
            rules,
            binary: tokio::sync::OnceCell::new(),
        })
    }

    fn err(&self, e: sqlx::Error) -> ConnectorError {
        classify(e, &self.system, &self.object)
    }

    fn key_list(&self) -> String {
        list(&self.rules.key)
    }

    /// `ON DUPLICATE KEY UPDATE` assignments by owner. MySQL applies them in
    /// order and a later one reads the columns as already updated, so the
    /// change-time column of `newest` comes last, after every field it decides.
    fn on_duplicate(&self, cols: &[String]) -> String {
        let incoming = |c: &str| format!("VALUES({})", quote_ident(c));
        let newer = self.rules.updated_at.as_deref().map(|u| {
            let q = quote_ident(u);
            format!("({q} IS NULL OR {} > {q})", incoming(u))
        });
        // The plan puts the change-time column last.
        let mut sets: Vec<String> = self
            .rules
            .update_fields(cols)
            .into_iter()
            .map(|(c, condition)| {
                let q = quote_ident(c);
                let value = match (condition, &newer) {
                    (Condition::IfNewer, Some(newer)) => {
                        format!("IF({newer}, {}, {q})", incoming(c))
                    }
                    (Condition::Always | Condition::IfNewer, _) => incoming(c),
                    (Condition::WhereEmpty, _) => format!("COALESCE({q}, {})", incoming(c)),
                };
                format!("{q} = {value}")
            })
            .collect();
        if let Some(sd) = self.rules.undelete() {
            sets.push(format!("{} = NULL", quote_ident(sd)));
        }
        if sets.is_empty() {
            // Nothing ferry may change: leave the row as it is.
            let k = quote_ident(&self.rules.key[0]);
            sets.push(format!("{k} = {k}"));
        }
        sets.join(", ")
    }

    /// The statements for a chunk of upserts, each with its arguments.
    fn upserts(
        &self,
        rows: &[&Record],
        cols: &[String],
    ) -> Result<(String, MySqlArguments), ConnectorError> {
        let mut args = MySqlArguments::default();
        let binary: Vec<bool> = cols
            .iter()
            .map(|c| self.binary.get().is_some_and(|b| b.contains(c)))
            .collect();
        for r in rows {
            for (c, binary) in cols.iter().zip(&binary) {
                let value = r.get(c).unwrap_or(&Value::Null);
                match value.as_str().and_then(|s| s.strip_prefix("\\x")) {
                    Some(hex) if *binary => {
                        args.add(unhex(hex).ok_or_else(|| ConnectorError::Rejected {
                            system: self.system.clone(),
                            object: self.object.clone(),
                            detail: format!("column `{c}`: `\\x{hex}` is not hex-encoded bytes"),
                        })?)
                    }
                    _ => bind(&mut args, value),
                }
                .map_err(|e| self.bind_error(e))?;
            }
        }
        let one = format!("({})", vec!["?"; cols.len()].join(", "));
        let values = vec![one.as_str(); rows.len()].join(", ");
        let t = &self.table;
        let sql = match self.rules.mode {
            Mode::Update => {
                // A derived table of the rows, joined on the key.
                let first = format!(
                    "SELECT {}",
                    cols.iter()
                        .map(|c| format!("? AS {}", quote_ident(c)))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let rest = format!(" UNION ALL SELECT {}", vec!["?"; cols.len()].join(", "));
                let derived = format!("{first}{}", rest.repeat(rows.len().saturating_sub(1)));
                let on = self
                    .rules
                    .key
                    .iter()
                    .map(|k| format!("ferry_t.{q} = x.{q}", q = quote_ident(k)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                let sets = assignments(&self.rules, cols, "ferry_t", "x");
                if sets.is_empty() {
                    return Ok((String::new(), args));
                }
                let sets = sets
                    .iter()
                    .map(|(c, v)| format!("ferry_t.{c} = {v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("UPDATE {t} AS ferry_t JOIN ({derived}) AS x ON {on} SET {sets}")
            }
            Mode::Insert => {
                let k = quote_ident(&self.rules.key[0]);
                format!(
                    "INSERT INTO {t} ({}) VALUES {values} ON DUPLICATE KEY UPDATE {k} = {k}",
                    list(cols)
                )
            }
            Mode::Upsert | Mode::Mirror => format!(
                "INSERT INTO {t} ({}) VALUES {values} ON DUPLICATE KEY UPDATE {}",
                list(cols),
                self.on_duplicate(cols)
            ),
        };
        Ok((sql, args))
    }

    fn deletes(
        &self,
        keys: &[&Record],
    ) -> Result<Option<(String, MySqlArguments)>, ConnectorError> {
        let mut args = MySqlArguments::default();
        for r in keys {
            for k in &self.rules.key {
                bind(&mut args, r.get(k).unwrap_or(&Value::Null))
                    .map_err(|e| self.bind_error(e))?;
            }
        }
        let one = format!("({})", vec!["?"; self.rules.key.len()].join(", "));
        let matching = format!(
            "({}) IN ({})",
            self.key_list(),
            vec![one.as_str(); keys.len()].join(", ")
        );
        let t = &self.table;
        Ok(match self.rules.delete_as() {
            DeleteAs::Keep => None,
            DeleteAs::Remove => Some((format!("DELETE FROM {t} WHERE {matching}"), args)),
            DeleteAs::MarkDeleted(sd) => {
                let sd = quote_ident(sd);
                Some((
                    format!("UPDATE {t} SET {sd} = NOW(6) WHERE {matching} AND {sd} IS NULL"),
                    args,
                ))
            }
        })
    }

    fn bind_error(&self, e: sqlx::error::BoxDynError) -> ConnectorError {
        ConnectorError::Rejected {
            system: self.system.clone(),
            object: self.object.clone(),
            detail: e.to_string(),
        }
    }
}

fn list(cols: &[String]) -> String {
    cols.iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Binds a JSON value as the MySQL value it stands for; numbers beyond
/// 64 bits and decimals go as their exact text, which the server converts.
fn bind(args: &mut MySqlArguments, v: &Value) -> Result<(), sqlx::error::BoxDynError> {
    match v {
        Value::Null => args.add(Option::<String>::None),
        Value::Bool(b) => args.add(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => args.add(i),
            None => args.add(n.to_string()),
        },
        Value::String(s) => args.add(mysql_time(s).unwrap_or_else(|| s.clone())),
        other => args.add(other.to_string()),
    }
}

/// Bytes from lowercase or uppercase hex digits; None when not hex.
fn unhex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// An RFC 3339 time with an offset (how PostgreSQL renders `timestamptz`)
/// in the form MySQL's DATETIME and TIMESTAMP columns take: UTC, no offset
/// (sessions run in UTC).
fn mysql_time(s: &str) -> Option<String> {
    if s.len() < 20 || s.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    Some(t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string())
}

#[async_trait]
impl Target for MysqlTarget {
    fn checksum(&self) -> Option<&dyn crate::connectors::checksum::Checksum> {
        Some(&self.readout)
    }

    fn describe(&self) -> String {
        format!("{} {}", self.system, self.object)
    }

    async fn write(&self, batch: &WriteBatch<'_>) -> Result<Written, ConnectorError> {
        self.binary
            .get_or_try_init(|| async {
                Ok::<_, ConnectorError>(match self.schema().await? {
                    Shape::Table(table) => table
                        .columns
                        .into_iter()
                        .filter(|c| c.ty == ColumnType::Bytes)
                        .map(|c| c.name)
                        .collect(),
                    Shape::Missing | Shape::Schemaless => vec![],
                })
            })
            .await?;
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        if !batch.upserts.is_empty() {
            let cols = columns_of(&batch.upserts);
            let mut cols: Vec<String> = cols
                .into_iter()
                .filter(|c| self.rules.undelete() != Some(c.as_str()))
                .collect();
            cols.retain(|c| !self.rules.children.iter().any(|child| &child.name == c));
            for chunk in batch
                .upserts
                .chunks((MAX_PLACEHOLDERS / cols.len().max(1)).max(1))
            {
                let (sql, args) = self.upserts(chunk, &cols)?;
                if sql.is_empty() {
                    continue;
                }
                sqlx::query_with(&sql, args)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
        }
        if !batch.deletes.is_empty() {
            for chunk in batch
                .deletes
                .chunks((MAX_PLACEHOLDERS / self.rules.key.len().max(1)).max(1))
            {
                if let Some((sql, args)) = self.deletes(chunk)? {
                    sqlx::query_with(&sql, args)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.err(e))?;
                }
            }
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(Written::default())
    }

    async fn keys(&self) -> Result<Option<KeyStream>, ConnectorError> {
        Ok(Some(key_stream(
            self.pool.clone(),
            format!(
                "SELECT CAST(JSON_ARRAY({}) AS CHAR) FROM {}",
                self.key_list(),
                self.table
            ),
            self.system.clone(),
            self.object.clone(),
        )))
    }

    fn has_columns(&self) -> bool {
        true
    }

    async fn schema(&self) -> Result<Shape, ConnectorError> {
        super::schema::table(&self.pool, &self.rules.table)
            .await
            .map_err(|e| self.err(e))
    }

    fn schema_statements(&self, change: &SchemaChange) -> Result<Vec<String>, ConnectorError> {
        Ok(super::schema::statements(&self.rules.table, change))
    }

    /// DDL commits by itself in MySQL: each statement is made safe to
    /// repeat instead (`IF NOT EXISTS`; a column modified twice the same way).
    async fn change_schema(&self, change: &SchemaChange) -> Result<(), ConnectorError> {
        for statement in self.schema_statements(change)? {
            sqlx::query(&statement)
                .execute(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Times with an offset are written as UTC DATETIMEs (the sessions run
    /// in UTC), which keeps the instant.
    fn holds(&self, target: &Column, source: &Column) -> Result<(), String> {
        match (&source.ty, &target.ty) {
            (ColumnType::TimestampTz(a), ColumnType::Timestamp(b)) if b >= a => Ok(()),
            _ => target.ty.holds(&source.ty),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn offset_times_become_utc_datetimes() {
        assert_eq!(
            super::mysql_time("2026-01-01T10:00:01.5+02:00").as_deref(),
            Some("2026-01-01 08:00:01.500000")
        );
        assert_eq!(super::mysql_time("2026-01-01"), None);
        assert_eq!(super::mysql_time("not a time at all, really"), None);
    }
}
