//! Table columns as the SQL connectors read them from their catalogs, the
//! portable type each declared type stands for, and which target types hold
//! which source values exactly (`docs/types.md` is the user's table).
use std::fmt;

/// One column: its name, the type as the database declares it
/// (`numeric(38,10)`, `varchar(20)`, `DATETIME(6)`) and what that type is.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub declared: String,
    pub ty: ColumnType,
    /// The database that declared it (`postgres`, `mysql`, `sqlite`): a
    /// target of the same kind creates the column with the same type.
    pub system: &'static str,
}

impl Column {
    pub fn postgres(name: String, declared: String) -> Column {
        let ty = ColumnType::postgres(&declared);
        Column {
            name,
            declared,
            ty,
            system: "postgres",
        }
    }

    pub fn mysql(name: String, declared: String) -> Column {
        let ty = ColumnType::mysql(&declared);
        Column {
            name,
            declared,
            ty,
            system: "mysql",
        }
    }

    pub fn sqlite(name: String, declared: String) -> Column {
        let ty = ColumnType::sqlite(&declared);
        Column {
            name,
            declared,
            ty,
            system: "sqlite",
        }
    }
}

/// A table's (or a query's) columns in order, with its primary key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableSchema {
    pub columns: Vec<Column>,
    /// Empty for a query, or a table without one.
    pub primary_key: Vec<String>,
}

impl TableSchema {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// A table a database lists, for whole-schema jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTable {
    /// `schema.table` (PostgreSQL), `database.table` (MySQL), `main.table` (SQLite).
    pub name: String,
    /// Empty: the table has no primary key.
    pub primary_key: Vec<String>,
}

impl ListedTable {
    /// The name without its schema.
    pub fn short(&self) -> &str {
        self.name.rsplit_once('.').map_or(&self.name, |(_, t)| t)
    }
}

/// What a system says about a job's table.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// The system has no columns to check (a broker, an HTTP API, a file).
    Schemaless,
    /// The table does not exist.
    Missing,
    Table(TableSchema),
}

/// A declared type, as far as faithful transport cares. `Other` is any
/// type ferry does not reason about (arrays, enums, inet, …): it travels
/// as the source renders it and is never called lossy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    Bool,
    /// Bytes of storage: 1, 2, 3, 4 or 8.
    Int(u8),
    /// Precision and scale; None: unconstrained (PostgreSQL `numeric`).
    Decimal(Option<(u32, u32)>),
    /// 4 or 8 bytes.
    Float(u8),
    /// Maximum length in characters; None: unbounded.
    Text(Option<u32>),
    /// Fixed length, blank-padded.
    Char(u32),
    Bytes,
    Date,
    /// Fractional second digits.
    Time(u8),
    Timestamp(u8),
    TimestampTz(u8),
    Interval,
    Uuid,
    Json,
    /// SQLite's NUMERIC affinity: integers exact, other numbers as 8-byte
    /// floats (text that is not a number stays text).
    SqliteNumeric,
    /// A column without a declared type (SQLite): every value kept as given.
    Any,
    Other(String),
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Bool => write!(f, "boolean"),
            ColumnType::Int(n) => write!(f, "{}-byte integer", n),
            ColumnType::Decimal(Some((p, s))) => write!(f, "decimal({p},{s})"),
            ColumnType::Decimal(None) => write!(f, "decimal"),
            ColumnType::Float(n) => write!(f, "{}-byte float", n),
            ColumnType::Text(Some(n)) => write!(f, "text of at most {n} characters"),
            ColumnType::Text(None) => write!(f, "text"),
            ColumnType::Char(n) => write!(f, "char({n})"),
            ColumnType::Bytes => write!(f, "binary"),
            ColumnType::Date => write!(f, "date"),
            ColumnType::Time(p) => write!(f, "time({p})"),
            ColumnType::Timestamp(p) => write!(f, "timestamp({p}) without time zone"),
            ColumnType::TimestampTz(p) => write!(f, "timestamp({p}) with time zone"),
            ColumnType::Interval => write!(f, "interval"),
            ColumnType::Uuid => write!(f, "uuid"),
            ColumnType::Json => write!(f, "json"),
            ColumnType::SqliteNumeric => write!(f, "SQLite NUMERIC"),
            ColumnType::Any => write!(f, "untyped"),
            ColumnType::Other(name) => write!(f, "{name}"),
        }
    }
}

/// `(a,b)` or `(a)` after a type name.
fn modifiers(declared: &str) -> Vec<u32> {
    let Some(open) = declared.find('(') else {
        return vec![];
    };
    let close = declared[open..]
        .find(')')
        .map_or(declared.len(), |c| open + c);
    declared[open + 1..close]
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

fn base(declared: &str) -> String {
    let lower = declared.trim().to_ascii_lowercase();
    match lower.find('(') {
        Some(open) => {
            let close = lower[open..]
                .find(')')
                .map_or(lower.len(), |c| open + c + 1);
            format!("{}{}", lower[..open].trim_end(), &lower[close..])
        }
        None => lower,
    }
}

impl ColumnType {
    /// A type declared in `system` (`postgres`, `mysql`, `sqlite`).
    pub fn of(system: &str, declared: &str) -> ColumnType {
        match system {
            "mysql" => ColumnType::mysql(declared),
            "sqlite" => ColumnType::sqlite(declared),
            _ => ColumnType::postgres(declared),
        }
    }

    /// A PostgreSQL type as `format_type` writes it (`numeric(38,10)`,
    /// `timestamp(3) with time zone`, `character varying(20)`, `integer[]`),
    /// or as a prepared statement names it (`NUMERIC`, `TIMESTAMPTZ`).
    pub fn postgres(declared: &str) -> ColumnType {
        let b = base(declared);
        let m = modifiers(declared);
        let precision = |default: u8| m.first().map_or(default, |p| *p as u8);
        if b.ends_with("[]") || b.starts_with('_') {
            return ColumnType::Other(declared.to_string());
        }
        match b.as_str() {
            "boolean" | "bool" => ColumnType::Bool,
            "smallint" | "int2" => ColumnType::Int(2),
            "integer" | "int" | "int4" => ColumnType::Int(4),
            "bigint" | "int8" => ColumnType::Int(8),
            "numeric" | "decimal" => ColumnType::Decimal(match m.as_slice() {
                [p, s] => Some((*p, *s)),
                [p] => Some((*p, 0)),
                _ => None,
            }),
            "real" | "float4" => ColumnType::Float(4),
            "double precision" | "float8" => ColumnType::Float(8),
            "text" | "name" | "citext" => ColumnType::Text(None),
            "character varying" | "varchar" => ColumnType::Text(m.first().copied()),
            "character" | "char" | "bpchar" => ColumnType::Char(m.first().copied().unwrap_or(1)),
            "bytea" => ColumnType::Bytes,
            "date" => ColumnType::Date,
            "time without time zone" | "time" => ColumnType::Time(precision(6)),
            "timestamp without time zone" | "timestamp" => ColumnType::Timestamp(precision(6)),
            "timestamp with time zone" | "timestamptz" => ColumnType::TimestampTz(precision(6)),
            "interval" => ColumnType::Interval,
            "uuid" => ColumnType::Uuid,
            "json" | "jsonb" => ColumnType::Json,
            _ => ColumnType::Other(declared.to_string()),
        }
    }

    /// A MySQL or MariaDB type as `information_schema.COLUMNS.COLUMN_TYPE`
    /// writes it (`decimal(38,10)`, `bigint(20) unsigned`, `datetime(6)`).
    pub fn mysql(declared: &str) -> ColumnType {
        let b = base(declared);
        let m = modifiers(declared);
        let unsigned = b.contains("unsigned");
        let b = b.replace(" unsigned", "").replace(" zerofill", "");
        let int = |bytes: u8| match unsigned {
            // An unsigned integer needs the next size up to hold every value.
            true if bytes < 8 => ColumnType::Int(bytes * 2),
            true => ColumnType::Decimal(Some((20, 0))),
            false => ColumnType::Int(bytes),
        };
        match b.as_str() {
            "tinyint" if m.first() == Some(&1) => ColumnType::Bool,
            "bool" | "boolean" => ColumnType::Bool,
            "tinyint" => int(1),
            "smallint" => int(2),
            "mediumint" => int(3),
            "int" | "integer" => int(4),
            "bigint" => int(8),
            "decimal" | "numeric" => ColumnType::Decimal(Some(match m.as_slice() {
                [p, s] => (*p, *s),
                [p] => (*p, 0),
                _ => (10, 0),
            })),
            "float" => ColumnType::Float(4),
            "double" | "double precision" | "real" => ColumnType::Float(8),
            "varchar" => ColumnType::Text(m.first().copied()),
            "char" => ColumnType::Char(m.first().copied().unwrap_or(1)),
            "tinytext" => ColumnType::Text(Some(255)),
            "text" | "mediumtext" | "longtext" => ColumnType::Text(None),
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                ColumnType::Bytes
            }
            "date" => ColumnType::Date,
            "time" => ColumnType::Time(m.first().map_or(0, |p| *p as u8)),
            "datetime" => ColumnType::Timestamp(m.first().map_or(0, |p| *p as u8)),
            // TIMESTAMP is stored in UTC and shown in the session's zone,
            // which carries no offset: a timestamp without zone to readers.
            "timestamp" => ColumnType::Timestamp(m.first().map_or(0, |p| *p as u8)),
            "json" | "longtext json" => ColumnType::Json,
            "uuid" => ColumnType::Uuid,
            _ => ColumnType::Other(declared.to_string()),
        }
    }

    /// A SQLite declared type, by the affinity rules of sqlite.org/datatype3.
    pub fn sqlite(declared: &str) -> ColumnType {
        let upper = declared.to_ascii_uppercase();
        if upper.trim().is_empty() {
            ColumnType::Any
        } else if upper.contains("INT") {
            ColumnType::Int(8)
        } else if upper.contains("CHAR") || upper.contains("CLOB") || upper.contains("TEXT") {
            ColumnType::Text(None)
        } else if upper.contains("BLOB") {
            ColumnType::Bytes
        } else if upper.contains("REAL") || upper.contains("FLOA") || upper.contains("DOUB") {
            ColumnType::Float(8)
        } else {
            ColumnType::SqliteNumeric
        }
    }

    fn is_integer(&self) -> bool {
        matches!(self, ColumnType::Int(_) | ColumnType::Bool)
    }

    /// Whether a column of this type, as a target, takes every value of a
    /// `source` column unchanged; Err says what would change. Only silent
    /// changes count: a value too long or too large for its column is an
    /// error of the write, which names it (the item goes dead).
    pub fn holds(&self, source: &ColumnType) -> Result<(), String> {
        use ColumnType as T;
        let lossy = |what: &str| Err(format!("{self} cannot hold every {source} value: {what}"));
        match (source, self) {
            (_, T::Any) | (T::Other(_), _) | (_, T::Other(_)) => Ok(()),
            (T::Bytes, T::Bytes) => Ok(()),
            (T::Bytes, _) => lossy("bytes would arrive as their text rendering"),
            (T::Int(a), T::Float(b)) if (*a >= 8 && *b == 8) || (*a >= 4 && *b == 4) => {
                lossy("large integers would be rounded")
            }
            (T::Decimal(d), T::Float(b)) => match d {
                Some((p, _)) if *p <= if *b == 8 { 15 } else { 6 } => Ok(()),
                _ => lossy("decimals would be rounded to a float's 15 significant digits"),
            },
            (T::Decimal(d), T::SqliteNumeric) => match d {
                Some((p, 0)) if *p <= 18 => Ok(()),
                Some((p, _)) if *p <= 15 => Ok(()),
                _ => lossy("SQLite keeps only 15 significant digits of a non-integer number"),
            },
            (T::Decimal(Some((_, s))), t) if t.is_integer() && *s > 0 => {
                lossy("fractions would be rounded off")
            }
            (T::Decimal(None), t) if t.is_integer() => lossy("fractions would be rounded off"),
            (T::Decimal(from), T::Decimal(Some((_, s2)))) => match from {
                Some((_, s)) if s2 < s => lossy("fractional digits would be rounded"),
                None => lossy("fractional digits beyond its scale would be rounded"),
                _ => Ok(()),
            },
            (T::Float(a), T::Float(b)) if b < a => lossy("doubles would be rounded"),
            (T::Float(_), T::Decimal(Some(_))) => lossy("fractional digits would be rounded"),
            (T::Float(_), t) if t.is_integer() => lossy("fractions would be rounded off"),
            (T::Text(_), T::Char(_)) => lossy("strings would be padded with blanks"),
            (T::TimestampTz(_), T::Timestamp(_)) => lossy("the time zone offset would be dropped"),
            (T::Timestamp(a) | T::TimestampTz(a), T::Timestamp(b) | T::TimestampTz(b)) if b < a => {
                lossy("fractional seconds would be rounded")
            }
            (T::Time(a), T::Time(b)) if b < a => lossy("fractional seconds would be rounded"),
            _ => Ok(()),
        }
    }

    /// Whether a column of this type can become `wider` with every value
    /// kept (the change `on_type_change = "widen"` applies to the target).
    pub fn widens_to(&self, wider: &ColumnType) -> bool {
        use ColumnType as T;
        let at_least = |wide: &Option<u32>, narrow: u32| wide.is_none_or(|w| w >= narrow);
        self != wider
            && match (self, wider) {
                (T::Int(a), T::Int(b)) => b >= a,
                (T::Int(a), T::Decimal(d)) => d.is_none_or(|(p, s)| p - s >= integer_digits(*a)),
                (T::Decimal(Some((p, s))), T::Decimal(d)) => {
                    d.is_none_or(|(p2, s2)| s2 >= *s && p2 - s2 >= p - s)
                }
                (T::Float(a), T::Float(b)) => b >= a,
                (T::Text(Some(a)) | T::Char(a), T::Text(b)) => at_least(b, *a),
                (T::Text(None), T::Text(None)) => true,
                (T::Timestamp(a), T::Timestamp(b))
                | (T::TimestampTz(a), T::TimestampTz(b))
                | (T::Time(a), T::Time(b)) => b >= a,
                _ => false,
            }
    }

    /// Whether this column takes every value of `source`, by kind and by
    /// size: the same type, or a wider one.
    pub fn fits(&self, source: &ColumnType) -> bool {
        self == source || source.widens_to(self)
    }
}

/// Decimal digits of the largest integer of `bytes` bytes.
fn integer_digits(bytes: u8) -> u32 {
    match bytes {
        1 => 3,
        2 => 5,
        3 => 8,
        4 => 10,
        _ => 19,
    }
}

#[cfg(test)]
mod tests {
    use super::ColumnType as T;

    #[test]
    fn reads_declared_types_of_each_database() {
        assert_eq!(T::postgres("numeric(38,10)"), T::Decimal(Some((38, 10))));
        assert_eq!(
            T::postgres("timestamp(3) with time zone"),
            T::TimestampTz(3)
        );
        assert_eq!(T::postgres("character varying(20)"), T::Text(Some(20)));
        assert_eq!(T::postgres("integer[]"), T::Other("integer[]".into()));
        assert_eq!(T::mysql("bigint(20) unsigned"), T::Decimal(Some((20, 0))));
        assert_eq!(T::mysql("int(10) unsigned"), T::Int(8));
        assert_eq!(T::mysql("datetime(6)"), T::Timestamp(6));
        assert_eq!(T::mysql("tinyint(1)"), T::Bool);
        assert_eq!(T::sqlite("NUMERIC"), T::SqliteNumeric);
        assert_eq!(T::sqlite("VARCHAR(10)"), T::Text(None));
        assert_eq!(T::sqlite(""), T::Any);
    }

    #[test]
    fn wide_decimals_do_not_fit_floats_or_sqlite_numeric() {
        let wide = T::Decimal(Some((38, 10)));
        assert!(T::Float(8).holds(&wide).is_err());
        assert!(T::SqliteNumeric.holds(&wide).is_err());
        assert!(T::Text(None).holds(&wide).is_ok());
        assert!(T::Decimal(Some((40, 12))).holds(&wide).is_ok());
        assert!(T::Decimal(Some((38, 8))).holds(&wide).is_err());
        // Too long or too large is the write's error, not a silent change.
        assert!(T::Text(Some(10)).holds(&T::Text(None)).is_ok());
        assert!(T::Int(4).holds(&T::Int(8)).is_ok());
        assert!(T::Float(8).holds(&T::Decimal(Some((10, 2)))).is_ok());
    }

    #[test]
    fn bytes_only_into_binary_columns() {
        assert!(T::Text(None).holds(&T::Bytes).is_err());
        assert!(T::Bytes.holds(&T::Bytes).is_ok());
        assert!(T::Any.holds(&T::Bytes).is_ok());
    }

    #[test]
    fn widening_keeps_every_value() {
        assert!(T::Int(4).widens_to(&T::Int(8)));
        assert!(!T::Int(8).widens_to(&T::Int(4)));
        assert!(T::Text(Some(20)).widens_to(&T::Text(Some(40))));
        assert!(T::Decimal(Some((10, 2))).widens_to(&T::Decimal(Some((12, 2)))));
        assert!(!T::Text(None).widens_to(&T::Int(8)));
        assert!(!T::Int(8).widens_to(&T::Text(None)));
    }
}
