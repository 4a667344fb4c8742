use async_trait::async_trait;

use crate::connectors::sql::canonical::SqlKind;
use crate::connectors::sql::reader::Readout;
use futures::TryStreamExt;
use serde_json::Value;
use sqlx::{Column, Executor, MySqlPool, Row, TypeInfo};

use super::literal;
use crate::config::{Child, SourceConfig};
use crate::connectors::shared_pool::{self, Role};
use crate::connectors::sql::{
    chunks_of, classify, floor_div, quote_ident, records_of_json, relation, split_statements,
    OutboxTable,
};
use crate::connectors::{
    BucketDigest, ColumnType, ConnectorError, Hashed, ListedTable, Received, RowStream, Scan,
    Shape, Source, Split, Subset,
};
use crate::model::{Record, SourceRow};

pub struct MysqlSource {
    pool: MySqlPool,
    /// What `ferry verify` reads.
    readout: Readout<sqlx::MySql>,
    system: String,
    object: String,
    /// `SELECT …` producing the source's rows, before ferry's own filter.
    relation: String,
    /// Read when the strategy is `outbox`.
    outbox: OutboxTable,
    key: Vec<String>,
    /// The table or query as configured, for its schema.
    cfg_table: Option<String>,
    cfg_query: Option<String>,
}

impl MysqlSource {
    pub fn new(cfg: &SourceConfig) -> Result<Self, ConnectorError> {
        let url = cfg.url.as_deref().unwrap_or_default();
        let system = super::system(url);
        let pool = shared_pool::pool(url, Role::Read, cfg.pool_size, 2, |max| {
            super::pool(url, &system, max)
        })?;
        let (relation, object) = relation(cfg);
        let outbox = OutboxTable::new(cfg, &system, &object, true);
        let readout = Readout::relation(&pool, SqlKind::Mysql, &system, &relation, &object);
        Ok(MysqlSource {
            readout,
            pool,
            system,
            object,
            relation,
            outbox,
            key: cfg.key.clone(),
            cfg_table: cfg.table.clone(),
            cfg_query: cfg.query.clone(),
        })
    }

    /// ` WHERE …` selecting `subset` of the relation described by
    /// `columns`, and the values to bind. A number compared with a text
    /// column would turn the column's values into numbers: it binds as
    /// text there.
    fn subset_clause(&self, columns: &[(String, String)], subset: &Subset) -> (String, Vec<Value>) {
        let mut compared = Vec::new();
        let (clause, values) = subset.where_clause(&self.key, &mut |_, column| {
            compared.push(numeric_column(columns, column));
            "?".into()
        });
        let values = values
            .into_iter()
            .zip(compared)
            .map(|(v, numeric)| match v {
                Value::Number(n) if !numeric => Value::String(n.to_string()),
                v => v,
            })
            .collect();
        (clause, values)
    }

    fn err(&self, e: sqlx::Error) -> ConnectorError {
        classify(e, &self.system, &self.object)
    }

    /// The columns of `select` with their SQL type names, as the server
    /// describes the statement (nothing is read).
    async fn columns(&self, select: &str) -> Result<Vec<(String, String)>, ConnectorError> {
        let described = (&self.pool)
            .describe(select)
            .await
            .map_err(|e| self.err(e))?;
        Ok(described
            .columns()
            .iter()
            .map(|c| (c.name().to_string(), c.type_info().name().to_string()))
            .collect())
    }

    /// The binary columns: from the catalog for a table (the driver calls
    /// a JSON column, text with a binary collation, a BLOB too); for a
    /// query, as the driver describes its columns.
    async fn binary_columns(
        &self,
        described: &[(String, String)],
    ) -> Result<Vec<String>, ConnectorError> {
        if self.cfg_table.is_some() {
            if let Shape::Table(table) = self.schema().await? {
                return Ok(table
                    .columns
                    .into_iter()
                    .filter(|c| c.ty == ColumnType::Bytes)
                    .map(|c| c.name)
                    .collect());
            }
        }
        Ok(described_binary(described))
    }

    /// Each row as one JSON object, rendered by the server. Binary columns
    /// are rendered as PostgreSQL renders bytea (`\\x` and hex), the one
    /// form of bytes from every SQL source; `JSON_OBJECT` would write
    /// `base64:type252:…`.
    /// A scan; with `hashed`, each row's hash beside it (see
    /// [`Source::scan_hashed`]): the first 60 bits of the MD5 of the JSON
    /// the server renders the row as, the text ferry's own hash reads.
    async fn scan_with(
        &self,
        scan: Scan<'_>,
        hashed: Option<Hashed>,
    ) -> Result<RowStream, ConnectorError> {
        let columns = self.columns(&self.relation).await?;
        let binary = self.binary_columns(&columns).await?;
        let whole = Self::as_json(&columns, &binary);
        let (json, hash) = match hashed {
            None => (whole, String::new()),
            Some(read) => {
                let hash = format!(", {}", Self::row_hash(&whole));
                let json = match read {
                    Hashed::Whole => whole,
                    Hashed::Keys => {
                        let keys: Vec<(String, String)> = columns
                            .iter()
                            .filter(|(c, _)| self.key.contains(c))
                            .cloned()
                            .collect();
                        Self::as_json(&keys, &binary)
                    }
                };
                (json, hash)
            }
        };
        let from = format!("({}) AS s", self.relation);
        let mut binds: Vec<Value> = Vec::new();
        let sql = match scan {
            Scan::All => format!("SELECT {json}, NULL{hash} FROM {from}"),
            Scan::Subset(subset) => {
                let (clause, values) = self.subset_clause(&columns, subset);
                binds.extend(values);
                format!("SELECT {json}, NULL{hash} FROM {from}{clause}")
            }
            Scan::NullCursor { column } => format!(
                "SELECT {json}, NULL FROM {from} WHERE s.{} IS NULL",
                quote_ident(column)
            ),
            Scan::Since {
                column,
                from: since,
                lag,
            } => {
                let c = quote_ident(column);
                let temporal = columns.iter().any(|(name, ty)| {
                    name == column && matches!(ty.as_str(), "DATETIME" | "TIMESTAMP" | "DATE")
                });
                let base = format!(
                    "SELECT {json}, CAST(s.{c} AS CHAR) FROM {from} WHERE s.{c} IS NOT NULL"
                );
                match since {
                    None => format!("{base} ORDER BY s.{c}"),
                    Some(since) => {
                        binds.push(Value::from(since));
                        if temporal && !lag.is_zero() {
                            binds.push(Value::from(lag.as_micros().to_string()));
                            format!("{base} AND s.{c} >= CAST(? AS DATETIME(6)) - INTERVAL ? MICROSECOND ORDER BY s.{c}")
                        } else {
                            format!("{base} AND s.{c} >= ? ORDER BY s.{c}")
                        }
                    }
                }
            }
        };
        let pool = self.pool.clone();
        let system = self.system.clone();
        let object = self.object.clone();
        let stream = async_stream::try_stream! {
            let mut rows = bind_all(sqlx::query(&sql), &binds).fetch(&pool);
            while let Some(row) = rows.try_next().await.map_err(|e| classify(e, &system, &object))? {
                let json: String = row.try_get(0).map_err(|e| classify(e, &system, &object))?;
                let data: Record = serde_json::from_str(&json).map_err(|e| ConnectorError::failed(&system, &object, e))?;
                let cursor: Option<String> = row.try_get(1).map_err(|e| classify(e, &system, &object))?;
                let mut source_row = SourceRow::new(data, cursor);
                if hashed.is_some() {
                    source_row.source_hash = row.try_get(2).map_err(|e| classify(e, &system, &object))?;
                }
                yield source_row;
            }
        };
        Ok(Box::pin(stream))
    }

    /// The row's hash: the first 60 bits of the MD5 of its JSON (`json`).
    fn row_hash(json: &str) -> String {
        format!("CAST(CONV(LEFT(MD5({json}), 15), 16, 10) AS SIGNED)")
    }

    fn as_json(columns: &[(String, String)], binary: &[String]) -> String {
        let pairs = columns
            .iter()
            .map(|(c, _)| {
                let value = format!("s.{}", quote_ident(c));
                let value = match binary.contains(c) {
                    true => format!("CONCAT('\\\\x', LOWER(HEX({value})))"),
                    false => value,
                };
                format!("{}, {value}", literal(c))
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!("CAST(JSON_OBJECT({pairs}) AS CHAR)")
    }
}

/// Binds each value; a number as one: compared with a BIGINT key as a
/// string, it would go through a double and lose digits.
fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments>,
    binds: &'q [Value],
) -> sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments> {
    for b in binds {
        q = match b {
            Value::Number(n) if n.is_i64() => q.bind(n.as_i64()),
            Value::Number(n) => q.bind(n.as_f64()),
            Value::String(s) => q.bind(s.as_str()),
            other => q.bind(other.to_string()),
        };
    }
    q
}

/// Whether the relation's `column` holds numbers (as the driver names types).
fn numeric_column(described: &[(String, String)], column: &str) -> bool {
    described.iter().any(|(name, ty)| {
        name == column
            && ["INT", "DECIMAL", "FLOAT", "DOUBLE", "YEAR"]
                .iter()
                .any(|numeric| ty.contains(numeric))
    })
}

/// The columns the driver describes as binary.
fn described_binary(described: &[(String, String)]) -> Vec<String> {
    described
        .iter()
        .filter(|(_, ty)| {
            matches!(
                ty.as_str(),
                "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB"
            )
        })
        .map(|(name, _)| name.clone())
        .collect()
}

#[async_trait]
impl Source for MysqlSource {
    fn checksum(&self) -> Option<&dyn crate::connectors::checksum::Checksum> {
        Some(&self.readout)
    }

    fn describe(&self) -> String {
        format!("{} {}", self.system, self.object)
    }

    async fn scan(&self, scan: Scan<'_>) -> Result<RowStream, ConnectorError> {
        self.scan_with(scan, None).await
    }

    async fn scan_hashed(
        &self,
        scan: Scan<'_>,
        read: Hashed,
    ) -> Result<Option<RowStream>, ConnectorError> {
        match scan.hashable() {
            true => self.scan_with(scan, Some(read)).await.map(Some),
            false => Ok(None),
        }
    }

    async fn hash_digests(&self, width: i64) -> Result<Option<Vec<BucketDigest>>, ConnectorError> {
        let [key] = self.key.as_slice() else {
            return Ok(None);
        };
        let columns = self.columns(&self.relation).await?;
        if !columns
            .iter()
            .any(|(name, ty)| name == key && ty.contains("INT"))
        {
            return Ok(None);
        }
        let binary = self.binary_columns(&columns).await?;
        let bucket = floor_div(&format!("s.{}", quote_ident(key)), width, true);
        let sql = format!(
            "SELECT b, COUNT(*), CAST(SUM(h) AS CHAR) FROM (SELECT {bucket} AS b, {} AS h FROM ({}) AS s) AS t GROUP BY b",
            Self::row_hash(&Self::as_json(&columns, &binary)),
            self.relation
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        let source = self.describe();
        rows.iter()
            .map(|r| {
                let (bucket, rows) = (r.try_get(0).ok(), r.try_get(1).ok());
                BucketDigest::read(bucket, rows, r.try_get(2).ok(), &source)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    async fn split(&self, subset: &Subset, rows: u64) -> Result<Option<Split>, ConnectorError> {
        if self.cfg_table.is_none() {
            // A query would be run again for every chunk.
            return Ok(None);
        }
        let columns = self.columns(&self.relation).await?;
        let (tail, binds) = self.subset_clause(&columns, subset);
        let (boundaries, count) = split_statements(
            &self.relation,
            &tail,
            &self.key,
            rows,
            "CAST(JSON_ARRAY({}) AS CHAR)",
        );
        let found: Vec<String> = bind_all(sqlx::query(&boundaries), &binds)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        let count: i64 = bind_all(sqlx::query(&count), &binds)
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.err(e))?;
        chunks_of(&found, count, rows, &self.system, &self.object).map(Some)
    }

    async fn max_cursor(&self, column: &str) -> Result<Option<String>, ConnectorError> {
        let sql = format!(
            "SELECT CAST(max(s.{c}) AS CHAR) FROM ({}) AS s",
            self.relation,
            c = quote_ident(column)
        );
        sqlx::query(&sql)
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get::<Option<String>, _>(0))
            .map_err(|e| self.err(e))
    }

    async fn receive(&self, max: usize) -> Result<Vec<Received>, ConnectorError> {
        self.outbox.receive(&self.pool, max).await
    }

    /// Deletes the outbox rows up to `ack`: safe to repeat.
    async fn acknowledge(&self, ack: u64) -> Result<(), ConnectorError> {
        self.outbox.acknowledge(&self.pool, ack).await
    }

    async fn list_tables(&self) -> Result<Option<Vec<ListedTable>>, ConnectorError> {
        super::schema::list(&self.pool)
            .await
            .map(Some)
            .map_err(|e| self.err(e))
    }

    async fn schema(&self) -> Result<Shape, ConnectorError> {
        let shape = match (&self.cfg_table, &self.cfg_query) {
            (Some(table), _) => super::schema::table(&self.pool, table).await,
            (None, Some(query)) => super::schema::query(&self.pool, query).await,
            (None, None) => Ok(Shape::Schemaless),
        };
        shape.map_err(|e| self.err(e))
    }

    async fn children(
        &self,
        child: &Child,
        parents: &[Value],
    ) -> Result<Vec<Record>, ConnectorError> {
        let query = child.batched("IN (SELECT value FROM JSON_TABLE(?, '$[*]' COLUMNS (value TEXT PATH '$')) AS ferry_parents)");
        let columns = self.columns(&query).await?;
        let sql = format!(
            "SELECT {} FROM ({query}) AS s",
            Self::as_json(&columns, &described_binary(&columns))
        );
        let parents = serde_json::to_string(parents)
            .map_err(|e| ConnectorError::failed(&self.system, &self.object, e))?;
        let rows: Vec<String> = sqlx::query_scalar(&sql)
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
        records_of_json(&rows, &self.system, &self.object)
    }
}
