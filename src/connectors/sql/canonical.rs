//! The canonical text of a column's value, rendered in each SQL kind, so
//! that an equal value reads the same from PostgreSQL, MySQL/MariaDB and
//! SQLite (`ferry verify` hashes these texts). Where a kind cannot render
//! the canonical form itself (floats and JSON across kinds, SQLite's dynamic
//! values and date texts), it renders a raw text and ferry finishes it
//! ([`Finish`], applied by `connectors::checksum`).
//!
//! Canonical forms: integers and decimals in plain digits without trailing
//! fractional zeros; booleans `1`/`0`; dates `YYYY-MM-DD`; times
//! `HH:MM:SS.ffffff`; timestamps `YYYY-MM-DD HH:MM:SS.ffffff` (UTC for
//! zoned ones); bytes lowercase hex; UUIDs lowercase; floats as
//! PostgreSQL's shortest form; JSON compact with keys sorted; other text as
//! stored (`char(n)` without its padding).
use super::quote_ident;
use crate::connectors::ColumnType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlKind {
    Postgres,
    Mysql,
    Sqlite,
    /// Not SQL: the objects a source reads (a file), each field's text
    /// rendered and finished by ferry (`checksum::objects`).
    Objects,
}

impl SqlKind {
    /// Whether the server can hash rows itself (SQLite has no hash function).
    pub fn hashes(self) -> bool {
        matches!(self, SqlKind::Postgres | SqlKind::Mysql)
    }
}

/// What ferry does to the text a kind rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The text is canonical already.
    None,
    /// A float's text (any notation) becomes PostgreSQL's shortest form.
    Float,
    /// A decimal: plain digits, trailing fractional zeros dropped; a text
    /// prefixed `r` is a float value kept in a decimal column.
    Number,
    Json,
    Date,
    Time,
    /// A timestamp text with or without an offset, to UTC.
    Timestamp,
    /// Bytes as hex, or as the `\x…` text a JSON rendering gave them.
    Bytes,
    /// `true`, `t`, `1` (any case) → `1`; `false`, `f`, `0` → `0`.
    Bool,
    Lower,
    /// Without trailing blanks (`char(n)`).
    Rtrim,
    /// `X` for any value (a presence, see [`presence`]).
    Present,
}

/// One column's text: the SQL expression over the row aliased `s`, and what
/// ferry finishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canon {
    pub expr: String,
    pub finish: Finish,
}

/// The canonical text of column `name` of type `ty`. `alike`: the other side
/// is the same kind of database, so its own renderings of floats and JSON
/// compare as they are.
pub fn canon(kind: SqlKind, name: &str, ty: &ColumnType, alike: bool) -> Canon {
    let c = format!("s.{}", quote_ident(name));
    match kind {
        SqlKind::Postgres => postgres(&c, ty, alike),
        SqlKind::Mysql => mysql(&c, ty, alike),
        SqlKind::Sqlite => sqlite(&c, ty),
        // The field's name: what the objects' reader takes from each object.
        SqlKind::Objects => finished(name.to_string(), object(ty)),
    }
}

/// The presence of a value in column `name`: `X`, or NULL (a `fill`
/// field, compared by presence).
pub fn presence(kind: SqlKind, name: &str) -> Canon {
    match kind {
        SqlKind::Objects => finished(name.to_string(), Finish::Present),
        _ => done(format!(
            "CASE WHEN s.{} IS NOT NULL THEN 'X' END",
            quote_ident(name)
        )),
    }
}

/// How ferry finishes a field of an object typed `ty` (by the column of
/// the other side): JSON gives text, numbers, booleans.
fn object(ty: &ColumnType) -> Finish {
    match ty {
        ColumnType::Bool => Finish::Bool,
        ColumnType::Int(_)
        | ColumnType::Decimal(_)
        | ColumnType::SqliteNumeric
        | ColumnType::Any => Finish::Number,
        ColumnType::Float(_) => Finish::Float,
        ColumnType::Bytes => Finish::Bytes,
        ColumnType::Date => Finish::Date,
        ColumnType::Time(_) => Finish::Time,
        ColumnType::Timestamp(_) | ColumnType::TimestampTz(_) => Finish::Timestamp,
        ColumnType::Json => Finish::Json,
        ColumnType::Uuid => Finish::Lower,
        ColumnType::Char(_) => Finish::Rtrim,
        _ => Finish::None,
    }
}

fn done(expr: String) -> Canon {
    Canon {
        expr,
        finish: Finish::None,
    }
}

fn finished(expr: String, finish: Finish) -> Canon {
    Canon { expr, finish }
}

fn postgres(c: &str, ty: &ColumnType, alike: bool) -> Canon {
    match ty {
        ColumnType::Bool => done(format!("CASE WHEN {c} THEN '1' WHEN NOT {c} THEN '0' END")),
        ColumnType::Decimal(_) => done(format!("trim_scale({c})::text")),
        ColumnType::Float(_) if alike => done(format!("{c}::text")),
        ColumnType::Float(_) => finished(format!("{c}::text"), Finish::Float),
        ColumnType::Bytes => done(format!("encode({c}, 'hex')")),
        // The reader's transaction sets `DateStyle = ISO`: the text forms
        // are the canonical ones, and cost half of `to_char`'s.
        ColumnType::TimestampTz(_) => done(format!("({c} AT TIME ZONE 'UTC')::text")),
        ColumnType::Char(_) => done(format!("rtrim({c}::text, ' ')")),
        ColumnType::Json if alike => done(format!("{c}::jsonb::text")),
        ColumnType::Json => finished(format!("{c}::text"), Finish::Json),
        _ => done(format!("{c}::text")),
    }
}

fn mysql(c: &str, ty: &ColumnType, alike: bool) -> Canon {
    let text = |e: String| format!("CONVERT({e} USING utf8mb4)");
    match ty {
        ColumnType::Bool | ColumnType::Int(_) => done(text(format!("CAST({c} AS CHAR)"))),
        ColumnType::Decimal(Some((_, 0))) => done(text(format!("CAST({c} AS CHAR)"))),
        ColumnType::Decimal(_) => done(text(format!(
            "CASE WHEN LOCATE('.', CAST({c} AS CHAR)) > 0 THEN TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM CAST({c} AS CHAR))) ELSE CAST({c} AS CHAR) END"
        ))),
        ColumnType::Float(_) if alike => done(text(format!("CAST({c} AS CHAR)"))),
        ColumnType::Float(_) => finished(text(format!("CAST({c} AS CHAR)")), Finish::Float),
        ColumnType::Bytes => done(text(format!("LOWER(HEX({c}))"))),
        ColumnType::Date => done(text(format!("DATE_FORMAT({c}, '%Y-%m-%d')"))),
        ColumnType::Time(_) => done(text(trimmed_fraction(format!(
            "TIME_FORMAT({c}, '%H:%i:%s.%f')"
        )))),
        // The session's time zone is UTC (see the reader), so a TIMESTAMP
        // column renders in UTC as a zoned value should.
        ColumnType::Timestamp(_) | ColumnType::TimestampTz(_) => done(text(trimmed_fraction(
            format!("DATE_FORMAT({c}, '%Y-%m-%d %H:%i:%s.%f')"),
        ))),
        ColumnType::Uuid => done(text(format!("LOWER({c})"))),
        ColumnType::Char(_) => done(text(format!("TRIM(TRAILING ' ' FROM {c})"))),
        ColumnType::Json if alike => done(text(format!("CAST({c} AS CHAR)"))),
        ColumnType::Json => finished(text(format!("CAST({c} AS CHAR)")), Finish::Json),
        _ => done(text(format!("CAST({c} AS CHAR)"))),
    }
}

/// `…:SS.ffffff` without the fraction's trailing zeros (nor its point when
/// they are all zeros), as PostgreSQL prints times.
fn trimmed_fraction(e: String) -> String {
    format!("TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {e}))")
}

fn sqlite(c: &str, ty: &ColumnType) -> Canon {
    let real_or_text = format!(
        "CASE typeof({c}) WHEN 'real' THEN 'r' || printf('%!.17g', {c}) ELSE CAST({c} AS TEXT) END"
    );
    match ty {
        ColumnType::Bool => done(format!(
            "CASE WHEN {c} IN (1, '1', 't', 'true') THEN '1' WHEN {c} IN (0, '0', 'f', 'false') THEN '0' ELSE CAST({c} AS TEXT) END"
        )),
        ColumnType::Int(_) => finished(real_or_text, Finish::Number),
        ColumnType::Decimal(_) | ColumnType::SqliteNumeric | ColumnType::Any => {
            finished(real_or_text, Finish::Number)
        }
        ColumnType::Float(_) => finished(
            format!("CASE WHEN {c} IS NOT NULL THEN printf('%!.17g', {c}) END"),
            Finish::Float,
        ),
        ColumnType::Bytes => finished(
            format!("CASE typeof({c}) WHEN 'blob' THEN lower(hex({c})) ELSE CAST({c} AS TEXT) END"),
            Finish::Bytes,
        ),
        ColumnType::Date => finished(format!("CAST({c} AS TEXT)"), Finish::Date),
        ColumnType::Time(_) => finished(format!("CAST({c} AS TEXT)"), Finish::Time),
        ColumnType::Timestamp(_) | ColumnType::TimestampTz(_) => {
            finished(format!("CAST({c} AS TEXT)"), Finish::Timestamp)
        }
        ColumnType::Uuid => done(format!("lower({c})")),
        ColumnType::Char(_) => done(format!("rtrim(CAST({c} AS TEXT), ' ')")),
        ColumnType::Json => finished(format!("CAST({c} AS TEXT)"), Finish::Json),
        _ => done(format!("CAST({c} AS TEXT)")),
    }
}

/// A 64-bit hash of a text expression, as the server computes it: `md5`'s
/// first 60 bits (non-negative, the same in every kind), or
/// PostgreSQL's own `hashtextextended` when both sides are PostgreSQL.
pub fn hash_sql(kind: SqlKind, text: &str, pg_native: bool) -> String {
    match kind {
        SqlKind::Postgres if pg_native => format!("hashtextextended({text}, 0)"),
        SqlKind::Postgres => format!("('x' || substr(md5({text}), 1, 15))::bit(60)::bigint"),
        SqlKind::Mysql => format!("CAST(CONV(SUBSTR(MD5({text}), 1, 15), 16, 10) AS UNSIGNED)"),
        // No hash function in SQLite: its rows (and objects) are hashed by ferry.
        SqlKind::Sqlite | SqlKind::Objects => String::new(),
    }
}

/// The texts joined as ferry joins them: each value, or `\x1e` for NULL,
/// separated by `\x1f`.
pub fn joined_sql(kind: SqlKind, parts: &[&str]) -> String {
    if parts.is_empty() {
        return "''".to_string();
    }
    let (null, sep) = match kind {
        SqlKind::Postgres => ("E'\\x1e'", "E'\\x1f'"),
        SqlKind::Mysql => ("CHAR(30 USING utf8mb4)", "CHAR(31 USING utf8mb4)"),
        SqlKind::Sqlite | SqlKind::Objects => ("char(30)", "char(31)"),
    };
    let coalesced: Vec<String> = parts
        .iter()
        .map(|p| format!("COALESCE({p}, {null})"))
        .collect();
    match kind {
        SqlKind::Mysql => format!("CONCAT({})", coalesced.join(&format!(", {sep}, "))),
        _ => coalesced.join(&format!(" || {sep} || ")),
    }
}

/// `a || b` in the kind.
pub fn concat_sql(kind: SqlKind, a: &str, b: &str) -> String {
    match kind {
        SqlKind::Mysql => format!("CONCAT({a}, {b})"),
        _ => format!("{a} || {b}"),
    }
}

/// The literal of the separator between a row's key and its fields (`\x1d`).
pub fn key_separator_sql(kind: SqlKind) -> &'static str {
    match kind {
        SqlKind::Postgres => "E'\\x1d'",
        SqlKind::Mysql => "CHAR(29 USING utf8mb4)",
        SqlKind::Sqlite | SqlKind::Objects => "char(29)",
    }
}

/// The bucket (0..buckets) of a row whose key hashes to `hash` (or, a
/// one-column integer key, whose key is `hash`).
pub fn bucket_sql(hash: &str, buckets: u32) -> String {
    format!("((({hash}) % {buckets}) + {buckets}) % {buckets}")
}
