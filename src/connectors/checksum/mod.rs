//! A table's rows as `ferry verify` compares them: each row's key and
//! compared fields as canonical texts ([`sql::canonical`]), a 64-bit hash of
//! them, and per bucket of keys a count and a sum of hashes. A server that
//! can hash computes all of it in SQL, so that no row leaves it unless its
//! bucket differs; SQLite's rows (and rows whose texts ferry must finish)
//! are hashed here, with the same function over the same bytes.
//!
//! [`sql::canonical`]: super::sql::canonical
use async_trait::async_trait;
use md5::{Digest as _, Md5};
use serde_json::Value;

use super::sql::canonical::{self, Canon, Finish, SqlKind};
use super::{Column, ConnectorError, KeyRange, Subset};

mod buckets;
mod finish;
mod objects;
pub use buckets::IntBuckets;
pub use finish::finish_text;
pub use objects::Objects;

/// How a system reads its rows for a verify.
#[async_trait]
pub trait Checksum: Send + Sync {
    fn kind(&self) -> SqlKind;
    /// The `SELECT` of the rows compared (a source's with the job's filter).
    fn relation(&self) -> String;
    fn describe(&self) -> String;
    /// A reader; `consistent`: every query sees one snapshot of the database.
    async fn reader(&self, consistent: bool) -> Result<Box<dyn TextReader>, ConnectorError>;
}

/// Runs queries whose every column is text.
#[async_trait]
pub trait TextReader: Send {
    /// Runs `sql`, binding `binds` (the n-th as [`Checksum`]'s kind
    /// placeholders it, see [`placeholder`]), and hands each row to `each`.
    async fn each_row(
        &mut self,
        sql: &str,
        binds: &[Value],
        each: &mut (dyn FnMut(Vec<Option<String>>) -> Result<(), ConnectorError> + Send),
    ) -> Result<(), ConnectorError>;
}

/// The n-th (0-based) bound value compared with `column`.
pub fn placeholder(kind: SqlKind, n: usize, column: &Column) -> String {
    match kind {
        SqlKind::Postgres => format!("CAST(${} AS {})", n + 1, column.declared),
        _ => "?".to_string(),
    }
}

/// What one side compares, in its own column names and types.
#[derive(Debug, Clone)]
pub struct Side {
    pub key: Vec<Column>,
    pub fields: Vec<Column>,
    /// Parallel to `fields`: an `owner = "fill"` field, which the target
    /// may hold a value of its own in. It is compared by presence only: its
    /// text is `X` or NULL, and only a target NULL where the source has a
    /// value differs (the re-check decides; see `verify`).
    pub filled: Vec<bool>,
    /// SQL over the relation's columns (soft-deleted rows left out).
    pub filter: Option<String>,
}

/// The part of both tables compared: keys in a range, rows matching a
/// predicate (SQL over columns both tables have).
#[derive(Debug, Clone, Copy, Default)]
pub struct Part<'a> {
    pub keys: Option<&'a KeyRange>,
    pub predicate: Option<&'a str>,
}

/// How both sides hash: the same on each.
#[derive(Debug, Clone, Copy)]
pub struct Hashing {
    pub buckets: u32,
    /// Both sides are PostgreSQL servers: `hashtextextended` on each.
    pub pg_native: bool,
    /// Both sides are PostgreSQL 14 or later, and every compared column has
    /// the same type on both: each row is hashed by `hash_record_extended`,
    /// each value by its type's own hash (equal values hash alike: `1.50`
    /// and `1.5`, `char(n)` with or without its blanks), no text rendered.
    pub pg_record: bool,
    /// Both sides are the same kind of database.
    pub alike: bool,
    /// The key is one integer column on both sides: its buckets are ranges
    /// of it (cheaper than hashing its text, and a differing bucket is read
    /// by an index).
    pub int_key: Option<IntBuckets>,
    /// Rows pair by keys that differ (through an id map): a row's hash
    /// covers its fields only.
    pub keyless: bool,
}

impl Hashing {
    /// A row's hash, as [`Session`] computes it in the server.
    pub fn row_hash(&self, key: &str, fields: &[Option<String>]) -> i64 {
        match self.keyless {
            true => md5_60(&joined(fields)),
            false => row_hash(key, fields),
        }
    }
}

/// One bucket: how many rows, and the sum of their hashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest {
    pub rows: u64,
    pub sum: i128,
}

/// A side's rows, read through one reader.
pub struct Session {
    reader: Box<dyn TextReader>,
    kind: SqlKind,
    relation: String,
    key: Vec<Canon>,
    fields: Vec<Canon>,
    hashing: Hashing,
    /// The key's columns then the fields', as the row `s`'s (for
    /// [`Hashing::pg_record`]; the first, for [`Hashing::int_key`]).
    columns: Vec<String>,
    /// ` WHERE …` with its bound values.
    clause: String,
    binds: Vec<Value>,
    system: String,
}

impl Session {
    pub async fn open(
        system: &dyn Checksum,
        side: &Side,
        part: &Part<'_>,
        hashing: Hashing,
        consistent: bool,
    ) -> Result<Session, ConnectorError> {
        let kind = system.kind();
        let canon = |c: &Column| canonical::canon(kind, &c.name, &c.ty, hashing.alike);
        let field_canon = |(c, filled): (&Column, &bool)| match filled {
            true => canonical::presence(kind, &c.name),
            false => canon(c),
        };
        let key_names: Vec<String> = side.key.iter().map(|c| c.name.clone()).collect();
        let subset = Subset {
            keys: part.keys.cloned(),
            predicate: part.predicate.map(str::to_string),
            ..Subset::default()
        };
        let (mut clause, binds) = subset.where_clause(&key_names, &mut |n, name| {
            let column = side.key.iter().find(|c| c.name == name);
            // Each placeholder names one of `key_names`, all in `side.key`.
            placeholder(kind, n, column.expect("a key column"))
        });
        if let Some(filter) = &side.filter {
            clause = match clause.is_empty() {
                true => format!(" WHERE {filter}"),
                false => format!("{clause} AND {filter}"),
            };
        }
        Ok(Session {
            reader: system.reader(consistent).await?,
            kind,
            relation: system.relation(),
            key: side.key.iter().map(canon).collect(),
            fields: side
                .fields
                .iter()
                .zip(&side.filled)
                .map(field_canon)
                .collect(),
            hashing,
            columns: side
                .key
                .iter()
                .map(|c| (c, &false))
                .chain(side.fields.iter().zip(&side.filled))
                .map(|(c, filled)| {
                    let column = format!("s.{}", super::sql::quote_ident(&c.name));
                    match filled {
                        true => format!("({column} IS NOT NULL)"),
                        false => column,
                    }
                })
                .collect(),
            clause,
            binds,
            system: system.describe(),
        })
    }

    /// The first key column, as the row `s`'s (a key column is never a
    /// presence, so it is the column itself).
    fn key_column(&self) -> &str {
        self.columns.first().map_or("", String::as_str)
    }

    /// Whether the server hashes this side's rows.
    pub fn pushed_down(&self) -> bool {
        self.kind.hashes()
            && self
                .key
                .iter()
                .chain(&self.fields)
                .all(|c| c.finish == Finish::None)
    }

    fn texts_sql(&self) -> (String, String) {
        let exprs = |cs: &[Canon]| cs.iter().map(|c| c.expr.clone()).collect::<Vec<_>>();
        let key = exprs(&self.key);
        let fields = exprs(&self.fields);
        let key_text = canonical::joined_sql(
            self.kind,
            &key.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let fields_text = canonical::joined_sql(
            self.kind,
            &fields.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let row_text = match self.hashing.keyless {
            true => fields_text,
            false => canonical::concat_sql(
                self.kind,
                &canonical::concat_sql(
                    self.kind,
                    &key_text,
                    canonical::key_separator_sql(self.kind),
                ),
                &fields_text,
            ),
        };
        (key_text, row_text)
    }

    /// The bucket of the row `s`, in the server.
    fn bucket_sql(&self, key_text: &str) -> String {
        let key_hash = match (self.hashing.int_key, self.hashing.pg_record) {
            (Some(ranges), _) => {
                return ranges.sql(
                    self.key_column(),
                    self.hashing.buckets,
                    self.kind == SqlKind::Mysql,
                )
            }
            (None, true) => record_hash(&self.columns[..self.key.len()]),
            (None, false) => canonical::hash_sql(self.kind, key_text, self.hashing.pg_native),
        };
        canonical::bucket_sql(&key_hash, self.hashing.buckets)
    }

    /// A condition an index can use to read only the buckets `only` (a key
    /// of ranges); None: each row's bucket is computed.
    fn ranges(&self, only: Option<&[u32]>) -> Option<String> {
        let ranges = self.hashing.int_key?;
        Some(ranges.ranges_sql(self.key_column(), only?, self.hashing.buckets))
    }

    /// The ranges of `only`, or the whole part, as ` WHERE …`.
    fn clause_within(&self, only: Option<&[u32]>) -> String {
        match (self.ranges(only), self.clause.is_empty()) {
            (None, _) => self.clause.clone(),
            (Some(r), true) => format!(" WHERE {r}"),
            (Some(r), false) => format!("{} AND {r}", self.clause),
        }
    }

    /// The smallest and largest key (a one-column integer key), as the
    /// reader sees the part compared; None when there are no rows.
    pub async fn key_span(&mut self) -> Result<Option<(i64, i64)>, ConnectorError> {
        let sql = format!(
            "SELECT {}, {} FROM ({}) AS s{}",
            self.as_text(&format!("MIN({})", self.key_column())),
            self.as_text(&format!("MAX({})", self.key_column())),
            self.relation,
            self.clause
        );
        let mut span = None;
        let binds = std::mem::take(&mut self.binds);
        let result = self
            .reader
            .each_row(&sql, &binds, &mut |row| {
                let bound = |i: usize| row.get(i).cloned().flatten()?.parse::<i64>().ok();
                span = bound(0).zip(bound(1));
                Ok(())
            })
            .await;
        self.binds = binds;
        result.map(|()| span)
    }

    /// Buckets by ranges of the key from now on (see [`Hashing::int_key`]).
    pub fn bucket_by(&mut self, ranges: IntBuckets) {
        self.hashing.int_key = Some(ranges);
    }

    /// `SELECT key_text, bucket, row_hash FROM …` computed in the server,
    /// of the rows of the buckets `only` where an index can tell them.
    fn hashed_sql(&self, only: Option<&[u32]>) -> String {
        let (key_text, row_text) = self.texts_sql();
        let hashed = match self.hashing.keyless {
            true => &self.columns[self.key.len()..],
            false => &self.columns[..],
        };
        let row_hash = match self.hashing.pg_record && !hashed.is_empty() {
            true => record_hash(hashed),
            false => canonical::hash_sql(self.kind, &row_text, self.hashing.pg_native),
        };
        format!(
            "SELECT {key_text} AS k, {} AS b, {row_hash} AS h FROM ({}) AS s{}",
            self.bucket_sql(&key_text),
            self.relation,
            self.clause_within(only)
        )
    }

    fn buckets_filter(only: Option<&[u32]>) -> String {
        match only {
            None => String::new(),
            Some(list) => {
                let list: Vec<String> = list.iter().map(u32::to_string).collect();
                format!(" WHERE t.b IN ({})", list.join(", "))
            }
        }
    }

    /// Each bucket's rows and hash sum (`buckets` entries).
    pub async fn digests(&mut self) -> Result<Vec<Digest>, ConnectorError> {
        let mut digests = vec![Digest::default(); self.hashing.buckets as usize];
        if !self.pushed_down() {
            self.each_hashed(None, &mut |_, bucket, hash| {
                let d = &mut digests[bucket as usize];
                d.rows += 1;
                d.sum += i128::from(hash);
            })
            .await?;
            return Ok(digests);
        }
        let sql = format!(
            "SELECT {}, {}, {} FROM ({}) AS t GROUP BY t.b",
            self.as_text("t.b"),
            self.as_text("COUNT(*)"),
            self.as_text("SUM(t.h)"),
            self.hashed_sql(None)
        );
        let system = self.system.clone();
        let binds = std::mem::take(&mut self.binds);
        let result = self
            .reader
            .each_row(&sql, &binds, &mut |row| {
                let bucket: usize = number(&system, row.first())?;
                let rows: u64 = number(&system, row.get(1))?;
                let sum: i128 = number(&system, row.get(2))?;
                match digests.get_mut(bucket) {
                    Some(d) => *d = Digest { rows, sum },
                    None => return Err(bad(&system, "a bucket out of range")),
                }
                Ok(())
            })
            .await;
        self.binds = binds;
        result.map(|()| digests)
    }

    /// Each row of the buckets `only` (all when None): its key text, bucket
    /// and hash.
    pub async fn each_hashed(
        &mut self,
        only: Option<&[u32]>,
        each: &mut (dyn FnMut(String, u32, i64) + Send),
    ) -> Result<(), ConnectorError> {
        let system = self.system.clone();
        let binds = std::mem::take(&mut self.binds);
        let result = if self.pushed_down() {
            let sql = format!(
                "SELECT t.k, {}, {} FROM ({}) AS t{}",
                self.as_text("t.b"),
                self.as_text("t.h"),
                self.hashed_sql(only),
                Self::buckets_filter(only)
            );
            self.reader
                .each_row(&sql, &binds, &mut |row| {
                    let key = row.first().cloned().flatten().unwrap_or_default();
                    let bucket: u32 = number(&system, row.get(1))?;
                    let hash: i64 = number(&system, row.get(2))?;
                    each(key, bucket, hash);
                    Ok(())
                })
                .await
        } else {
            let hashing = self.hashing;
            let finish = self.finishes();
            let key_width = self.key.len();
            let sql = self.texts_query(only);
            self.reader
                .each_row(&sql, &binds, &mut |row| {
                    let (key, fields) = finished(&system, row, &finish, key_width)?;
                    let bucket = bucket_of(&key, hashing);
                    if only.is_none_or(|o| o.binary_search(&bucket).is_ok()) {
                        let hash = hashing.row_hash(&key, &fields);
                        each(key, bucket, hash);
                    }
                    Ok(())
                })
                .await
        };
        self.binds = binds;
        result
    }

    /// Each row of the buckets `only` (sorted; all when None): its key
    /// text and each compared field's canonical text.
    pub async fn each_row(
        &mut self,
        only: Option<&[u32]>,
        each: &mut (dyn FnMut(String, Vec<Option<String>>) + Send),
    ) -> Result<(), ConnectorError> {
        let system = self.system.clone();
        let binds = std::mem::take(&mut self.binds);
        let finish = self.finishes();
        let key_width = self.key.len();
        let hashing = self.hashing;
        let in_server = self.pushed_down();
        let mut sql = self.texts_query(only);
        if let (Some(only), true, None) = (only, in_server, self.ranges(only)) {
            let (key_text, _) = self.texts_sql();
            let bucket = self.bucket_sql(&key_text);
            let list: Vec<String> = only.iter().map(u32::to_string).collect();
            let joiner = if self.clause.is_empty() {
                " WHERE"
            } else {
                " AND"
            };
            sql = format!("{sql}{joiner} {bucket} IN ({})", list.join(", "));
        }
        let result = self
            .reader
            .each_row(&sql, &binds, &mut |row| {
                let (key, fields) = finished(&system, row, &finish, key_width)?;
                let within = |only: &[u32]| only.binary_search(&bucket_of(&key, hashing)).is_ok();
                if in_server || only.is_none_or(within) {
                    each(key, fields);
                }
                Ok(())
            })
            .await;
        self.binds = binds;
        result
    }

    fn as_text(&self, e: &str) -> String {
        match self.kind {
            SqlKind::Mysql => format!("CAST({e} AS CHAR)"),
            SqlKind::Sqlite | SqlKind::Objects => format!("CAST({e} AS TEXT)"),
            SqlKind::Postgres => format!("({e})::text"),
        }
    }

    fn finishes(&self) -> Vec<Finish> {
        self.key
            .iter()
            .chain(&self.fields)
            .map(|c| c.finish)
            .collect()
    }

    /// `SELECT` of every key and field text, unhashed.
    /// (Of the rows of the buckets `only` where an index can tell them.)
    fn texts_query(&self, only: Option<&[u32]>) -> String {
        let exprs: Vec<&str> = self
            .key
            .iter()
            .chain(&self.fields)
            .map(|c| c.expr.as_str())
            .collect();
        format!(
            "SELECT {} FROM ({}) AS s{}",
            exprs.join(", "),
            self.relation,
            self.clause_within(only)
        )
    }
}

/// PostgreSQL's hash of a row of `columns`, each value by its type's hash.
fn record_hash(columns: &[String]) -> String {
    format!("hash_record_extended(ROW({}), 0)", columns.join(", "))
}

fn bad(system: &str, what: &str) -> ConnectorError {
    ConnectorError::failed(system, "verify", what)
}

fn number<T: std::str::FromStr>(
    system: &str,
    v: Option<&Option<String>>,
) -> Result<T, ConnectorError> {
    v.and_then(|v| v.as_deref())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            bad(
                system,
                "the server returned a count or hash that is not a number",
            )
        })
}

/// The key text and field texts of one row, finished.
fn finished(
    system: &str,
    row: Vec<Option<String>>,
    finish: &[Finish],
    key_width: usize,
) -> Result<(String, Vec<Option<String>>), ConnectorError> {
    let mut texts = Vec::with_capacity(row.len());
    for (value, how) in row.into_iter().zip(finish) {
        texts.push(match value {
            None => None,
            Some(v) => Some(finish_text(&v, *how).map_err(|why| bad(system, &why))?),
        });
    }
    let fields = texts.split_off(key_width);
    Ok((joined(&texts), fields))
}

/// Values joined as [`canonical::joined_sql`] joins them in SQL.
pub fn joined(parts: &[Option<String>]) -> String {
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('\x1f');
        }
        match part {
            Some(text) => out.push_str(text),
            None => out.push('\x1e'),
        }
    }
    out
}

/// The key's parts, as [`joined`] joined them.
pub fn key_parts(key: &str) -> Vec<Option<String>> {
    key.split('\x1f')
        .map(|p| (p != "\x1e").then(|| p.to_string()))
        .collect()
}

/// `md5`'s first 60 bits, as the servers compute them ([`canonical::hash_sql`]).
pub fn md5_60(text: &str) -> i64 {
    let digest = Md5::digest(text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 15 hex digits: the first 60 bits, so always below 2^60.
    (u64::from_be_bytes(first) >> 4) as i64
}

/// A key's bucket, as [`Session`] computes it in the server.
pub fn bucket_of(key: &str, hashing: Hashing) -> u32 {
    let buckets = i64::from(hashing.buckets);
    let hash = match (hashing.int_key, key.parse::<i64>()) {
        (Some(ranges), Ok(value)) => return ranges.bucket(value, hashing.buckets),
        // A key that is not an integer equals no row of the other side:
        // any bucket will do.
        _ => md5_60(key),
    };
    hash.rem_euclid(buckets) as u32
}

pub fn row_hash(key: &str, fields: &[Option<String>]) -> i64 {
    md5_60(&format!("{key}\x1d{}", joined(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_60_is_the_first_fifteen_hex_digits() {
        // md5("abc") = 900150983cd24fb0d6963f7d28e17f72
        assert_eq!(md5_60("abc"), 0x900150983cd24fb);
        assert_eq!(
            key_parts(&joined(&[Some("a".into()), None])),
            vec![Some("a".into()), None]
        );
    }
}
