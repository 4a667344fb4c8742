//! Connectors to external systems: one folder each, implementing [`Source`]
//! and/or [`Target`]. A connector is a leaf: it knows its system and the job's
//! config, never the state store, detection or sync.
//!
//! Adding a system: a folder here and one line in each registry below.
pub mod amqp;
pub mod checksum;
mod children;
pub mod columns;
mod error;
pub mod file;
pub mod http;
pub mod mysql;
pub mod nats;
pub mod postgres;
pub mod redis;
pub mod shared_pool;
pub mod sql;
pub mod sqlite;
pub mod subset;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde_json::value::RawValue;

use crate::config::registry::Spec;
use crate::config::{Child, Job};
use crate::model::{Item, Record, SourceRow};

pub use crate::rules::{ChildTable, WriteRules};
pub use columns::{Column, ColumnType, ListedTable, Shape, TableSchema};
pub use error::ConnectorError;
pub use subset::{Chunk, KeyRange, Subset};

/// A change to a target table's definition, from the source's columns
/// (each target renders the types in its own dialect: `docs/types.md`).
#[derive(Debug, Clone, PartialEq)]
pub enum SchemaChange {
    /// `[target] create = true`: the table, with the job's key as primary key.
    CreateTable {
        columns: Vec<Column>,
        key: Vec<String>,
    },
    /// `[schema] on_new_column = "add"`.
    AddColumn(Column),
    /// `[schema] on_type_change = "widen"`: the column takes the wider type.
    WidenColumn(Column),
}

/// What a detection strategy asks a source for.
#[derive(Debug, Clone, Copy)]
pub enum Scan<'a> {
    /// Every object, in any order.
    All,
    /// Objects whose cursor column is `>= from - lag` (all non-NULL when
    /// `from` is None), ordered by the cursor.
    Since {
        column: &'a str,
        from: Option<&'a str>,
        lag: Duration,
    },
    /// Objects whose cursor column is NULL; they never advance the watermark.
    NullCursor { column: &'a str },
    /// The objects of a subset (`ferry resync`), in any order: a SQL
    /// source pushes it into its query; a source read whole keeps the keys
    /// in its range ([`subset::filter`]).
    Subset(&'a Subset),
}

pub type RowStream = BoxStream<'static, Result<SourceRow, ConnectorError>>;

/// One bucket of a table's rows (see [`Source::hash_digests`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketDigest {
    /// The bucket: keys from `bucket × width` to `(bucket + 1) × width - 1`.
    pub bucket: i64,
    pub rows: i64,
    /// The sum of the rows' hashes, modulo 2⁶⁴.
    pub sum: i64,
}

impl BucketDigest {
    /// A bucket's digest from the columns a server returned (the sum as
    /// decimal text), or the source's error naming it.
    pub fn read(
        bucket: Option<i64>,
        rows: Option<i64>,
        sum: Option<&str>,
        source: &str,
    ) -> Result<BucketDigest, ConnectorError> {
        match (bucket, rows, sum.and_then(wrapped_sum)) {
            (Some(bucket), Some(rows), Some(sum)) => Ok(BucketDigest { bucket, rows, sum }),
            _ => Err(ConnectorError::failed(
                source,
                "diff",
                "a bucket's count or hash sum is not a number",
            )),
        }
    }
}

impl Scan<'_> {
    /// Whether a source that hashes rows can hash this scan's.
    pub fn hashable(&self) -> bool {
        matches!(self, Scan::All | Scan::Subset(_))
    }
}

/// The bucket of `key` among buckets of `width` keys (floor division, as
/// [`sql::floor_div`] computes it in SQL).
pub fn bucket_of(key: i64, width: i64) -> i64 {
    key.div_euclid(width.max(1))
}

/// The sum a server returned as decimal text, modulo 2⁶⁴ (what adding the
/// hashes with wrapping gives).
pub fn wrapped_sum(text: &str) -> Option<i64> {
    // Truncating to the low 64 bits is the modulo.
    text.trim().parse::<i128>().ok().map(|sum| sum as i64)
}

/// What a hashed scan ([`Source::scan_hashed`]) reads of each row besides
/// the hash its database computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashed {
    /// The key columns only: every other value stays in the server.
    Keys,
    /// The whole object, as [`Source::scan`] reads it.
    Whole,
}

/// A part of a table source split into chunks of about equal rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Consecutive, together the whole part, in the source's key order.
    pub chunks: Vec<Chunk>,
    /// The rows of the part when it was split.
    pub rows: u64,
}

impl Split {
    /// The chunks that `boundaries` (each the last key of a chunk, in key
    /// order) cut: the first open below, the last open above.
    pub fn at(boundaries: Vec<Vec<serde_json::Value>>, rows: u64) -> Split {
        let mut chunks = Vec::with_capacity(boundaries.len() + 1);
        let mut after = None;
        for upto in boundaries {
            chunks.push(Chunk {
                after: after.take(),
                upto: Some(upto.clone()),
            });
            after = Some(upto);
        }
        chunks.push(Chunk { after, upto: None });
        Split { chunks, rows }
    }
}

/// A message taken from a queue, not yet acknowledged.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Vec<u8>,
    /// What [`Source::acknowledge`] takes back.
    pub ack: u64,
}

#[async_trait]
pub trait Source: Send + Sync {
    /// The system and object, for messages: `postgres postgres://u:***@h/db table "customers"`.
    fn describe(&self) -> String;
    async fn scan(&self, scan: Scan<'_>) -> Result<RowStream, ConnectorError>;
    /// [`Scan::All`] or [`Scan::Subset`] with each row's hash, computed by
    /// the source's database over the columns the object holds, in
    /// [`SourceRow::source_hash`]: equal hashes mean an unchanged row, so a
    /// diff reads only the keys and hashes of most rows. None: this source
    /// cannot hash its rows.
    ///
    /// [`SourceRow::source_hash`]: crate::model::SourceRow::source_hash
    async fn scan_hashed(
        &self,
        _scan: Scan<'_>,
        _read: Hashed,
    ) -> Result<Option<RowStream>, ConnectorError> {
        Ok(None)
    }
    /// A queue: up to `max` messages, in order; none when the queue stays
    /// empty for a moment (the run's detection is then over).
    async fn receive(&self, _max: usize) -> Result<Vec<Received>, ConnectorError> {
        Err(ConnectorError::failed(
            &self.describe(),
            "queue",
            "this source is not a queue; use strategy cursor or diff",
        ))
    }
    /// The columns the job reads, when the source is a table or a query
    /// with a schema; what every run checks the job's fields against.
    async fn schema(&self) -> Result<Shape, ConnectorError> {
        Ok(Shape::Schemaless)
    }
    /// Every table of the database, with its primary key (whole-schema
    /// jobs). None: this source has no tables to list.
    async fn list_tables(&self) -> Result<Option<Vec<ListedTable>>, ConnectorError> {
        Ok(None)
    }
    /// Splits the part `subset` of the source into chunks of about `rows`
    /// rows each, at keys the source itself orders (a snapshot's chunk
    /// tasks). None: the source is read whole, as one chunk.
    async fn split(&self, _subset: &Subset, _rows: u64) -> Result<Option<Split>, ConnectorError> {
        Ok(None)
    }
    /// The largest value of the cursor `column`, as a cursor scan renders
    /// it: where a snapshot's incremental runs will start. None: no row
    /// has one.
    async fn max_cursor(&self, _column: &str) -> Result<Option<String>, ConnectorError> {
        Ok(None)
    }
    /// Acknowledges received messages up to and including `ack`, once their
    /// changes are durably enqueued: the queue forgets them.
    async fn acknowledge(&self, _ack: u64) -> Result<(), ConnectorError> {
        Ok(())
    }
    /// How `ferry verify` reads the source's rows. None: it cannot.
    fn checksum(&self) -> Option<&dyn checksum::Checksum> {
        None
    }
    /// Per bucket of `width` consecutive values of the source's one integer
    /// key column, the rows and the sum of their hashes (as
    /// [`scan_hashed`](Self::scan_hashed) computes them), in one grouped
    /// query the database answers without sending a row; the buckets with
    /// rows only. None: the key is not one integer column, or the source
    /// cannot hash.
    async fn hash_digests(&self, _width: i64) -> Result<Option<Vec<BucketDigest>>, ConnectorError> {
        Ok(None)
    }
    /// The rows of `child`'s query for all of `parents` (values of the
    /// parent's key) in one query; each row names its parent in the
    /// `child.parent` column.
    async fn children(
        &self,
        _child: &Child,
        _parents: &[serde_json::Value],
    ) -> Result<Vec<Record>, ConnectorError> {
        Err(ConnectorError::failed(
            &self.describe(),
            "children",
            "this source cannot read child rows",
        ))
    }
}

/// One bulk write: mapped target records (upserts) and target key records
/// (deletes), with the queued items they come from (parallel; empty when
/// the write has none, as a mirror's removals).
#[derive(Debug, Default)]
pub struct WriteBatch<'a> {
    pub upserts: Vec<&'a Record>,
    /// Upserts as the objects' JSON, instead of `upserts` (never both), for
    /// a target that reads JSON rows itself ([`Target::reads_json_rows`])
    /// when the job's mapping leaves objects as they are.
    pub upsert_json: Vec<&'a RawValue>,
    pub deletes: Vec<&'a Record>,
    pub upsert_items: Vec<&'a Item>,
    pub delete_items: Vec<&'a Item>,
    /// Report each upsert's [`Images`], for conflict detection.
    pub images: bool,
    /// With `images`: leave the rows before the write out (`before` None).
    pub skip_before: bool,
    /// Report the upserted rows as they are before and after the write,
    /// each as a source of the same table would read it (echo suppression).
    pub read_back: bool,
    /// The upserts are new to the target as far as ferry knows (a first
    /// run's snapshot): a target may insert them in bulk, reporting no
    /// images, and must write the batch as usual should any be there.
    pub insert_new: bool,
}

impl<'a> WriteBatch<'a> {
    pub fn upsert_count(&self) -> usize {
        self.upserts.len() + self.upsert_json.len()
    }

    /// The upserts as one JSON array, in order.
    pub fn upserts_json(&self) -> String {
        if self.upsert_json.is_empty() {
            return sql::to_json(&self.upserts);
        }
        let len: usize = self.upsert_json.iter().map(|r| r.get().len() + 1).sum();
        let mut out = String::with_capacity(len + 2);
        out.push('[');
        for (i, row) in self.upsert_json.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(row.get());
        }
        out.push(']');
        out
    }

    /// Every field the upserts name, in the order first seen.
    pub fn upsert_fields(&self) -> Vec<String> {
        let mut fields = sql::columns_of(&self.upserts);
        for row in &self.upsert_json {
            crate::model::object_keys(row, &mut fields);
        }
        fields
    }

    /// Each change with its item, upserts then deletes (none with
    /// `deletes = false`): what document-shaped targets send.
    pub fn changes(&self, deletes: bool) -> Vec<(&'a Record, &'a Item)> {
        let deletes = if deletes { self.deletes.len() } else { 0 };
        self.upserts
            .iter()
            .copied()
            .zip(self.upsert_items.iter().copied())
            .chain(
                self.deletes
                    .iter()
                    .copied()
                    .zip(self.delete_items.iter().copied())
                    .take(deletes),
            )
            .collect()
    }
}

/// One upserted row's written fields (see [`Written::fields`]), each as a
/// hash of its JSON form in the target's own types, so that values compare
/// the same way across writes whatever form the source gave them in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Images {
    /// The values as sent, typed by the target.
    pub incoming: Vec<u32>,
    /// The row before the write; None: there was none.
    pub before: Option<Vec<u32>>,
    /// The row after the write; None: there is none (an update of a missing row).
    pub after: Option<Vec<u32>>,
}

/// What a write reports back.
#[derive(Debug, Default)]
pub struct Written {
    /// The non-key fields the images cover, in order.
    pub fields: Vec<String>,
    /// Parallel to the batch's upserts when it asked for images and the
    /// target can read its rows back; empty otherwise.
    pub images: Vec<Images>,
    /// Items the target refused one by one while accepting the rest: their
    /// index in the batch (upserts, then deletes) and why.
    pub rejected: Vec<(usize, String)>,
    /// With `read_back`: the upserted rows before the write (locked until
    /// it commits) and after it, each in any order.
    pub rows_before: Vec<Record>,
    pub rows: Vec<Record>,
}

/// The key of every row of a target, each in `[target] key` order.
pub type KeyStream = BoxStream<'static, Result<Vec<serde_json::Value>, ConnectorError>>;

#[async_trait]
pub trait Target: Send + Sync {
    fn describe(&self) -> String;
    /// Applies the whole batch, atomically where the system allows it. A
    /// write that would leave a row as it is does not touch it.
    async fn write(&self, batch: &WriteBatch<'_>) -> Result<Written, ConnectorError>;
    /// Whether writes report [`Images`] when asked (the target can read its
    /// rows back): conflict bookkeeping is only done for such targets.
    fn reports_images(&self) -> bool {
        false
    }
    /// Whether the target takes upserts as JSON objects
    /// ([`WriteBatch::upsert_json`]): it sends the JSON on as it is, so
    /// items need not be decoded into records to be written.
    fn reads_json_rows(&self) -> bool {
        false
    }
    /// The run's writes are over: a target that gathers them (one file per
    /// run) completes its output.
    async fn finish(&self) -> Result<(), ConnectorError> {
        Ok(())
    }
    /// Keys for `n` new rows of a table whose key the target generates (a
    /// serial or identity column), taken before the rows are written so a
    /// retried write reuses them; each above `floor`, the largest key taken
    /// before (some may not be written yet). None: this target cannot.
    async fn allocate_keys(
        &self,
        _n: usize,
        _floor: i64,
    ) -> Result<Option<Vec<serde_json::Value>>, ConnectorError> {
        Ok(None)
    }
    /// Every row's key, for `mode = "mirror"`, which removes the rows whose
    /// key the source does not have. None: the target cannot list its keys.
    async fn keys(&self) -> Result<Option<KeyStream>, ConnectorError> {
        Ok(None)
    }
    /// Whether the target writes a table with columns ([`Target::schema`]
    /// reads them): only then does a run check them.
    fn has_columns(&self) -> bool {
        false
    }
    /// How `ferry verify` reads the target's rows. None: it cannot.
    fn checksum(&self) -> Option<&dyn checksum::Checksum> {
        None
    }
    /// The target's rows for the batch's upserts as they are now, each as
    /// a source of the table would read it (`ferry plan` shows what an
    /// update would change). None: this target cannot read its rows.
    async fn current_rows(
        &self,
        _batch: &WriteBatch<'_>,
    ) -> Result<Option<Vec<Record>>, ConnectorError> {
        Ok(None)
    }
    /// The target table's columns, for the checks every run makes before
    /// it writes.
    async fn schema(&self) -> Result<Shape, ConnectorError> {
        Ok(Shape::Schemaless)
    }
    /// The statements that make `change`, in this target's dialect (shown
    /// by `ferry plan`); an error when this target cannot make it.
    fn schema_statements(&self, _change: &SchemaChange) -> Result<Vec<String>, ConnectorError> {
        Err(ConnectorError::failed(
            &self.describe(),
            "schema",
            "this target has no table definition to change",
        ))
    }
    /// Whether `target`, a column of this target's table, takes every value
    /// of the `source` column unchanged; Err says what would change.
    fn holds(&self, target: &Column, source: &Column) -> Result<(), String> {
        target.ty.holds(&source.ty)
    }
    /// Runs [`Target::schema_statements`] of `change`. Safe to repeat: a
    /// table or column that exists already is left as it is.
    async fn change_schema(&self, _change: &SchemaChange) -> Result<(), ConnectorError> {
        Err(ConnectorError::failed(
            &self.describe(),
            "schema",
            "this target has no table definition to change",
        ))
    }
}

/// A connector: what it declares (its type, URL schemes, keys, abilities)
/// and how it opens for a job. Each connector's folder defines one as
/// `CONNECTOR`.
pub struct Connector {
    pub spec: Spec,
    pub open_source: Option<OpenSource>,
    pub open_target: Option<OpenTarget>,
}

/// Opens a connector as a job's source.
pub type OpenSource = fn(&Job) -> Result<Box<dyn Source>, ConnectorError>;
/// Opens a connector as a job's target, writing under its rules.
pub type OpenTarget = fn(&Job, WriteRules) -> Result<Box<dyn Target>, ConnectorError>;

/// Every connector of this build: adding one is its folder and a line here.
pub const CONNECTORS: &[&Connector] = &[
    &postgres::CONNECTOR,
    &mysql::CONNECTOR,
    &sqlite::CONNECTOR,
    &file::CONNECTOR,
    &http::CONNECTOR,
    &amqp::CONNECTOR,
    &nats::CONNECTOR,
    &redis::CONNECTOR,
];

/// The declarations of [`CONNECTORS`], in their order, for the
/// configuration's checks (which know no connector's code).
const SPECS: [&Spec; CONNECTORS.len()] = {
    let mut specs = [&CONNECTORS[0].spec; CONNECTORS.len()];
    let mut i = 0;
    while i < CONNECTORS.len() {
        specs[i] = &CONNECTORS[i].spec;
        i += 1;
    }
    specs
};

pub const REGISTRY: crate::config::Registry<'static> =
    crate::config::Registry { connectors: &SPECS };

fn connector(kind: &str) -> Option<&'static Connector> {
    CONNECTORS.iter().copied().find(|c| c.spec.kind == kind)
}

/// A job's source, with its children when it has some.
pub fn source(job: &Job) -> Result<Box<dyn Source>, ConnectorError> {
    let kind = job.source.kind.as_str();
    let open = connector(kind)
        .and_then(|c| c.open_source)
        .ok_or_else(|| ConnectorError::unsupported(kind))?;
    let source = open(job)?;
    Ok(match job.source.key.as_slice() {
        [key] if !job.children.is_empty() => Box::new(children::WithChildren::new(
            source,
            key.clone(),
            job.children.clone().into_iter().collect(),
        )),
        _ => source,
    })
}

/// A job's target, writing under the job's rules.
pub fn target(job: &Job) -> Result<Box<dyn Target>, ConnectorError> {
    let kind = job.target.kind.as_str();
    let open = connector(kind)
        .and_then(|c| c.open_target)
        .ok_or_else(|| ConnectorError::unsupported(kind))?;
    open(job, WriteRules::from_job(job))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_connector_opens_what_it_declares() {
        for c in CONNECTORS {
            let kind = c.spec.kind;
            assert_eq!(
                c.open_source.is_some(),
                c.spec.source.is_some(),
                "{kind}: source"
            );
            assert_eq!(
                c.open_target.is_some(),
                c.spec.target.is_some(),
                "{kind}: target"
            );
            assert_eq!(REGISTRY.spec(kind).map(|s| s.kind), Some(kind));
        }
        let mut kinds: Vec<&str> = CONNECTORS.iter().map(|c| c.spec.kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), CONNECTORS.len(), "a type is declared twice");
    }
}
