use async_trait::async_trait;

use crate::connectors::sql::canonical::SqlKind;
use crate::connectors::sql::reader::Readout;
use futures::TryStreamExt;
use sqlx::{Column, Executor, PgPool, Row, Statement, TypeInfo};

use serde_json::value::RawValue;
use serde_json::Value;

use super::copy_rows::{parsed_hash, row_hash, Beside, CopyRows};
use crate::config::{Child, SourceConfig};
use crate::connectors::shared_pool::{self, Role};
use crate::connectors::sql::{
    chunks_of, classify, floor_div, quote_ident, records_of_json, relation, split_statements,
    OutboxTable,
};
use crate::connectors::{
    BucketDigest, ConnectorError, Hashed, ListedTable, Received, RowStream, Scan, Shape, Source,
    Split, Subset,
};
use crate::model::{Object, Record, SourceRow};

pub struct PostgresSource {
    pool: PgPool,
    /// What `ferry verify` reads.
    readout: Readout<sqlx::Postgres>,
    system: String,
    object: String,
    /// `SELECT …` producing the source's rows, before ferry's own filter.
    relation: String,
    /// The table, quoted, when the source is a table (not a query).
    table: Option<String>,
    /// Read when the strategy is `outbox`.
    outbox: OutboxTable,
    /// `json_build_array(s."k1", …)::text`: the key values as
    /// `row_to_json` renders them, so ferry need not read every field.
    key_json: String,
    key: Vec<String>,
    /// The table or query as configured, for its schema.
    cfg_table: Option<String>,
    cfg_query: Option<String>,
}

impl PostgresSource {
    pub fn new(cfg: &SourceConfig) -> Result<Self, ConnectorError> {
        let url = cfg.url.as_deref().unwrap_or_default();
        let system = super::system(url);
        let pool = shared_pool::pool(url, Role::Read, cfg.pool_size, 2, |max| {
            super::pool(url, &system, max)
        })?;
        let (relation, object) = relation(cfg);
        let outbox = OutboxTable::new(cfg, &system, &object, false);
        let table = cfg
            .table
            .as_deref()
            .map(crate::connectors::sql::quote_qualified);
        let key_columns: Vec<String> = cfg
            .key
            .iter()
            .map(|k| format!("s.{}", quote_ident(k)))
            .collect();
        let key_json = format!("json_build_array({})::text", key_columns.join(", "));
        let readout = Readout::relation(&pool, SqlKind::Postgres, &system, &relation, &object);
        Ok(PostgresSource {
            readout,
            pool,
            system,
            object,
            relation,
            table,
            outbox,
            key_json,
            key: cfg.key.clone(),
            cfg_table: cfg.table.clone(),
            cfg_query: cfg.query.clone(),
        })
    }

    /// A column's SQL type, read from the relation (None: no rows).
    async fn column_type(&self, column: &str) -> Result<Option<String>, ConnectorError> {
        let sql = format!(
            "SELECT pg_typeof(s.{})::text FROM ({}) AS s LIMIT 1",
            quote_ident(column),
            self.relation
        );
        let row = sqlx::query(&sql)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Whether a table's column is declared NOT NULL: then the NULL-cursor
    /// pass is skipped instead of scanning the table for nothing.
    async fn column_is_not_null(&self, column: &str) -> Result<bool, ConnectorError> {
        let Some(table) = &self.table else {
            return Ok(false);
        };
        let row = sqlx::query(
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2",
        )
        .bind(table)
        .bind(column)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.is_some_and(|r| r.get::<bool, _>(0)))
    }

    /// ` WHERE …` selecting `subset` and the values it binds; None when
    /// the relation has no rows (its key types are unknown). A value binds
    /// as text and is cast to its column's type, so that any key type
    /// (bigint, uuid, text) compares.
    async fn subset_tail(
        &self,
        subset: &Subset,
    ) -> Result<Option<(String, Vec<String>)>, ConnectorError> {
        let mut types = Vec::with_capacity(self.key.len());
        let compared: &[String] =
            match subset.keys.is_some() || subset.chunk.is_some() || subset.listed.is_some() {
                true => &self.key,
                false => &[],
            };
        for column in compared {
            match self.column_type(column).await? {
                Some(ty) => types.push(ty),
                None => return Ok(None),
            }
        }
        let (clause, values) = subset.where_clause(&self.key, &mut |n, _| {
            format!("CAST(${} AS {})", n + 1, types[n % types.len()])
        });
        // Integer bounds (a snapshot's chunks of an integer key) are
        // written into the statement, which can then be a COPY: an i64
        // rendered by Rust is a number and nothing else.
        let integers: Option<Vec<i64>> = values.iter().map(Value::as_i64).collect();
        if let (Some(integers), None) = (integers, &subset.predicate) {
            let (clause, _) = subset.where_clause(&self.key, &mut |n, _| {
                format!("CAST({} AS {})", integers[n], types[n % types.len()])
            });
            return Ok(Some((clause, vec![])));
        }
        let binds = values
            .into_iter()
            .map(|v| match v {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect();
        Ok(Some((clause, binds)))
    }

    fn err(&self, e: sqlx::Error) -> ConnectorError {
        classify(e, &self.system, &self.object)
    }

    /// The relation's columns (name, sqlx type name); None when it cannot
    /// be described (the `row_to_json` query then reports why).
    async fn described(&self) -> Option<Vec<(String, String)>> {
        let described = format!("SELECT * FROM ({}) AS s", self.relation);
        let statement = (&self.pool).prepare(described.as_str()).await.ok()?;
        Some(
            statement
                .columns()
                .iter()
                .map(|c| (c.name().to_string(), c.type_info().name().to_string()))
                .collect(),
        )
    }

    /// The COPY form of a scan without bound values, if ferry can render
    /// its rows. `keys_only`: the key columns alone are read.
    fn copy_rows(
        &self,
        columns: &[(String, String)],
        beside: Option<Beside<'_>>,
        keys_only: bool,
        tail: &str,
    ) -> Option<CopyRows> {
        let read: Vec<(String, String)> = columns
            .iter()
            .filter(|(name, _)| !keys_only || self.key.contains(name))
            .cloned()
            .collect();
        CopyRows::plan(&self.relation, &read, &self.key, beside, tail)
    }

    /// A scan; with `hashed`, each row's hash beside it (see
    /// [`Source::scan_hashed`]).
    async fn scan_with(
        &self,
        scan: Scan<'_>,
        hashed: Option<Hashed>,
    ) -> Result<RowStream, ConnectorError> {
        // What follows `FROM (relation) AS s`, the cursor column read as
        // text beside each row, and the values bound.
        let (tail, cursor, binds) = match scan {
            Scan::All => (String::new(), None, vec![]),
            Scan::NullCursor { column } => {
                if self.column_is_not_null(column).await? {
                    return Ok(Box::pin(futures::stream::empty()));
                }
                (
                    format!(" WHERE s.{} IS NULL", quote_ident(column)),
                    None,
                    vec![],
                )
            }
            Scan::Subset(subset) => match self.subset_tail(subset).await? {
                Some((tail, binds)) => (tail, None, binds),
                None => return Ok(Box::pin(futures::stream::empty())),
            },
            Scan::Since { column, from, lag } => {
                let c = quote_ident(column);
                let Some(ty) = self.column_type(column).await? else {
                    return Ok(Box::pin(futures::stream::empty()));
                };
                let (since, binds) = match from {
                    None => (String::new(), vec![]),
                    Some(from)
                        if (ty.starts_with("timestamp") || ty == "date") && !lag.is_zero() =>
                    {
                        (
                            format!(" AND s.{c} >= CAST($1 AS {ty}) - CAST($2 AS interval)"),
                            vec![
                                from.to_string(),
                                format!("{} microseconds", lag.as_micros()),
                            ],
                        )
                    }
                    Some(from) => (
                        format!(" AND s.{c} >= CAST($1 AS {ty})"),
                        vec![from.to_string()],
                    ),
                };
                (
                    format!(" WHERE s.{c} IS NOT NULL{since} ORDER BY s.{c}"),
                    Some(column),
                    binds,
                )
            }
        };
        let columns = match hashed.is_some() || binds.is_empty() {
            true => self.described().await,
            false => None,
        };
        let hash = row_hash(columns.as_deref());
        let beside = match (hashed, cursor) {
            (Some(_), _) => Some(Beside::Hash(&hash)),
            (None, Some(c)) => Some(Beside::Cursor(c)),
            (None, None) => None,
        };
        let keys_only = hashed == Some(Hashed::Keys);
        let copy = columns
            .as_deref()
            .filter(|_| binds.is_empty())
            .and_then(|columns| self.copy_rows(columns, beside, keys_only, &tail));
        if let Some(copy) = copy {
            return Ok(self.copy_stream(copy));
        }
        let object_json = match keys_only {
            true => "'{}'::text",
            false => "row_to_json(s)::text",
        };
        let beside_text = beside.map_or_else(
            || "NULL::text".to_string(),
            |b| format!("({})::text", b.sql()),
        );
        let sql = format!(
            "SELECT {object_json}, {beside_text}, {} FROM ({}) AS s{tail}",
            self.key_json, self.relation
        );
        let pool = self.pool.clone();
        let system = self.system.clone();
        let object = self.object.clone();
        let stream = async_stream::try_stream! {
            let mut q = sqlx::query(&sql);
            for b in &binds {
                q = q.bind(b);
            }
            let mut rows = q.fetch(&pool);
            while let Some(row) = rows.try_next().await.map_err(|e| classify(e, &system, &object))? {
                let unreadable = |e: serde_json::Error| ConnectorError::failed(&system, &object, e);
                let json = RawValue::from_string(row.get(0)).map_err(unreadable)?;
                let key = serde_json::from_str(row.get::<&str, _>(2)).map_err(unreadable)?;
                let beside = row.get::<Option<String>, _>(1);
                let (cursor, source_hash) = match hashed {
                    Some(_) => (None, parsed_hash(beside).map_err(|e| ConnectorError::failed(&system, &object, e))?),
                    None => (beside, None),
                };
                yield SourceRow { object: Object::Json { json, key }, cursor, source_hash };
            }
        };
        Ok(Box::pin(stream))
    }

    fn copy_stream(&self, copy: CopyRows) -> RowStream {
        let pool = self.pool.clone();
        let system = self.system.clone();
        let object = self.object.clone();
        Box::pin(async_stream::try_stream! {
            let failed = |e: sqlx::Error| classify(e, &system, &object);
            let unreadable = |e: String| ConnectorError::failed(&system, &object, format!("COPY row unreadable: {e}"));
            // Closed, not given back, when the scan ends: one dropped
            // half-read leaves its connection inside COPY, where no later
            // query could use it. It still counts against the pool's size
            // until then (a detached one would not), which is what keeps a
            // process within a system's `max_connections`.
            let mut conn = pool.acquire().await.map_err(failed)?;
            conn.close_on_drop();
            let mut chunks = conn.copy_out_raw(copy.sql()).await.map_err(failed)?;
            // PostgreSQL sends a row per message; a row split across
            // messages is put together here all the same.
            let mut partial = Vec::new();
            let mut scratch = Vec::new();
            while let Some(chunk) = chunks.try_next().await.map_err(failed)? {
                let mut rest = &chunk[..];
                if !partial.is_empty() {
                    let Some(end) = rest.iter().position(|b| *b == b'\n') else {
                        partial.extend_from_slice(rest);
                        continue;
                    };
                    partial.extend_from_slice(&rest[..end]);
                    rest = &rest[end + 1..];
                    yield copy.row(&partial, &mut scratch).map_err(unreadable)?;
                    partial.clear();
                }
                while let Some(end) = rest.iter().position(|b| *b == b'\n') {
                    yield copy.row(&rest[..end], &mut scratch).map_err(unreadable)?;
                    rest = &rest[end + 1..];
                }
                partial.extend_from_slice(rest);
            }
            if !partial.is_empty() {
                Err(unreadable("the COPY output ended inside a row".to_string()))?;
            }
        })
    }
}

#[async_trait]
impl Source for PostgresSource {
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

    async fn receive(&self, max: usize) -> Result<Vec<Received>, ConnectorError> {
        self.outbox.receive(&self.pool, max).await
    }

    async fn hash_digests(&self, width: i64) -> Result<Option<Vec<BucketDigest>>, ConnectorError> {
        let [key] = self.key.as_slice() else {
            return Ok(None);
        };
        let Some(columns) = self.described().await else {
            return Ok(None);
        };
        let integer = |(name, ty): &(String, String)| {
            name == key && matches!(ty.as_str(), "INT2" | "INT4" | "INT8")
        };
        if !columns.iter().any(integer) {
            return Ok(None);
        }
        let bucket = floor_div(&format!("s.{}", quote_ident(key)), width, false);
        let sql = format!(
            "SELECT b, count(*), sum(h)::text FROM (SELECT {bucket} AS b, {} AS h FROM ({}) AS s) AS t GROUP BY b",
            row_hash(Some(&columns)),
            self.relation
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        let source = self.describe();
        rows.iter()
            .map(|r| {
                let bucket = r.try_get::<i64, _>(0);
                // An int4 key's buckets are int4.
                let bucket = bucket.or_else(|_| r.try_get::<i32, _>(0).map(i64::from));
                let (rows, sum) = (r.try_get(1).ok(), r.try_get(2).ok());
                BucketDigest::read(bucket.ok(), rows, sum, &source)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    async fn split(&self, subset: &Subset, rows: u64) -> Result<Option<Split>, ConnectorError> {
        if self.table.is_none() {
            // A query would be run again for every chunk.
            return Ok(None);
        }
        let Some((tail, binds)) = self.subset_tail(subset).await? else {
            return Ok(Some(Split::at(vec![], 0)));
        };
        let (boundaries, count) = split_statements(
            &self.relation,
            &tail,
            &self.key,
            rows,
            "json_build_array({})::text",
        );
        let mut q = sqlx::query_scalar::<_, String>(&boundaries);
        let mut c = sqlx::query_scalar::<_, i64>(&count);
        for b in &binds {
            q = q.bind(b);
            c = c.bind(b);
        }
        let found = q.fetch_all(&self.pool).await.map_err(|e| self.err(e))?;
        let count = c.fetch_one(&self.pool).await.map_err(|e| self.err(e))?;
        chunks_of(&found, count, rows, &self.system, &self.object).map(Some)
    }

    async fn max_cursor(&self, column: &str) -> Result<Option<String>, ConnectorError> {
        let sql = format!(
            "SELECT max(s.{c})::text FROM ({}) AS s",
            self.relation,
            c = quote_ident(column)
        );
        sqlx::query_scalar::<_, Option<String>>(&sql)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))
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

    /// Deletes the outbox rows up to `ack`: safe to repeat.
    async fn acknowledge(&self, ack: u64) -> Result<(), ConnectorError> {
        self.outbox.acknowledge(&self.pool, ack).await
    }

    async fn children(
        &self,
        child: &Child,
        parents: &[Value],
    ) -> Result<Vec<Record>, ConnectorError> {
        let sql = format!(
            "SELECT row_to_json(c)::text FROM ({}) AS c",
            child.batched("= ANY($1)")
        );
        let query = sqlx::query_scalar::<_, String>(&sql);
        // The parameter's type comes from the column it is compared with;
        // integer keys bind as integers, anything else as text.
        let ints: Option<Vec<i64>> = parents.iter().map(Value::as_i64).collect();
        let query = match ints {
            Some(ints) => query.bind(ints),
            None => query.bind(
                parents
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect::<Vec<String>>(),
            ),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(|e| {
            classify(
                e,
                &self.system,
                &format!("children query of {}", self.object),
            )
        })?;
        records_of_json(&rows, &self.system, &self.object)
    }
}
