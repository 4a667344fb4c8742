//! `ferry verify`: whether the target holds what the source holds, trusting
//! nothing but the two databases (not the ledger).
//!
//! Both sides hash each row's canonical texts (`connectors::checksum`) and
//! sum the hashes per bucket of keys, in the servers where they can, at one
//! snapshot each. Only buckets whose count or sum differ are read again, as
//! (key, hash) pairs sorted in bounded memory and walked side by side; the
//! keys that differ are read once more, field by field, outside the
//! snapshot, so that a row changed while the verify ran is not reported.
//! Buckets by key hash rather than key ranges: two passes find scattered
//! differences whatever the key's type, where a bisection of ranges reads
//! the table once per level.
mod compare;
mod mapped;
mod plan;
mod repair;
mod translate;

use std::collections::BTreeMap;
use std::time::Instant;

use std::sync::Arc;

use crate::config::registry::Reads;
use crate::config::{Detect, Job};
use crate::connectors::checksum::{Checksum, Hashing, Objects, Session};
use crate::connectors::sql::canonical::SqlKind;
use crate::connectors::{self, Column, ConnectorError, Shape, Source, TableSchema};
use crate::state::Store;

pub use crate::connectors::checksum::Part;

pub use compare::{Difference, Kind};
pub use plan::Plan;
pub use repair::{repair, Repair};

/// Buckets of keys: about 250 rows each at 1M rows; a bucket is what is
/// read again when it differs.
pub const BUCKETS: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The job cannot be verified as configured (exit 78).
    #[error("{}", .0.join("; "))]
    Refused(Vec<String>),
    #[error("source {0}")]
    Source(ConnectorError),
    #[error("target {0}")]
    Target(ConnectorError),
    #[error("verify: {0}")]
    Io(#[from] std::io::Error),
    /// The id map a translated job pairs its rows through.
    #[error("state store: {0}")]
    State(#[from] crate::state::StateError),
}

impl VerifyError {
    pub fn connector(&self) -> Option<&ConnectorError> {
        match self {
            VerifyError::Source(e) | VerifyError::Target(e) => Some(e),
            _ => None,
        }
    }
}

/// What one verify found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub job: String,
    pub source_rows: u64,
    pub target_rows: u64,
    pub equal: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// Target rows the source lacks do not count as drift for this job.
    pub extra_allowed: bool,
    pub missing_allowed: bool,
    /// How many rows differ in each field.
    pub fields: BTreeMap<String, u64>,
    /// The first keys of each kind, in key order of their texts.
    pub first: Vec<Difference>,
    /// Differences counted beyond those re-checked and listed.
    pub unlisted: u64,
    /// Target keys of extra rows the id map does not know (a job whose
    /// target generates its keys): ferry never wrote them, and a repair
    /// cannot delete them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unmapped: Vec<String>,
    /// Every listed difference: its kind and key text (see [`repair`]).
    #[serde(skip)]
    pub keys: Vec<(Kind, String)>,
    /// The source's key columns, in the order of the key texts.
    #[serde(skip)]
    pub source_key: Vec<crate::connectors::Column>,
    pub compared_fields: Vec<String>,
    pub not_compared: Vec<String>,
    /// Whether each server hashed its own rows.
    pub source_pushdown: bool,
    pub target_pushdown: bool,
    pub seconds: f64,
}

impl Outcome {
    /// Differences the job's rules do not allow.
    pub fn drifted(&self) -> bool {
        self.different > 0
            || (self.missing > 0 && !self.missing_allowed)
            || (self.extra > 0 && !self.extra_allowed)
    }
}

/// Keys listed per kind.
pub const FIRST: usize = 20;

/// `store`: the state store holding the id maps, for a job whose keys or
/// fields are translated through them (see [`needs_state`]).
pub async fn verify(
    job: &Job,
    part: Part<'_>,
    store: Option<&Store>,
) -> Result<Outcome, VerifyError> {
    let started = Instant::now();
    // Nothing listening is said at once, not after a pool's timeout.
    let (s, t) = (&job.source, &job.target);
    let (up_s, up_t) = tokio::join!(
        crate::reach::system(&s.kind, &s.url, "source", s.connect_timeout),
        crate::reach::system(&t.kind, &t.url, "target", t.connect_timeout),
    );
    up_s.map_err(VerifyError::Source)?;
    up_t.map_err(VerifyError::Target)?;
    let source: Arc<dyn Source> = Arc::from(connectors::source(job).map_err(VerifyError::Source)?);
    let target = connectors::target(job).map_err(VerifyError::Target)?;
    let target_sum = target
        .checksum()
        .ok_or_else(|| not_table("target", &target.describe()))?;
    let kind_s = match source.checksum() {
        Some(sum) => sum.kind(),
        None if reads_whole(job) => SqlKind::Objects,
        None => return Err(not_table("source", &source.describe())),
    };
    let (source_table, target_table) = tables(job, source.as_ref(), target.as_ref()).await?;
    let kind_t = target_sum.kind();
    let plan = plan::plan(job, &source_table, &target_table, (kind_s, kind_t))
        .map_err(VerifyError::Refused)?;
    narrowable(
        &plan,
        part,
        kind_s,
        (&source.describe(), &target.describe()),
    )?;
    let names = |columns: &[Column]| columns.iter().map(|c| c.name.clone()).collect();
    let objects = (kind_s == SqlKind::Objects).then(|| {
        Objects::new(
            source.clone(),
            names(&plan.source.key),
            names(&plan.source.fields),
            part.keys.cloned(),
        )
    });
    let source_sum: &dyn Checksum = match (&objects, source.checksum()) {
        (Some(objects), _) => objects,
        (None, Some(sum)) => sum,
        (None, None) => return Err(not_table("source", &source.describe())),
    };
    let hashing = hashing(&plan, (kind_s, kind_t), (source_sum, target_sum)).await;
    let sides = Sides {
        source: source_sum,
        target: target_sum,
        plan: &plan,
        part,
        hashing,
    };
    let found = match (&plan.translation, store) {
        (None, _) => compare::compare(&sides).await?,
        (Some(_), Some(store)) => mapped::compare(&sides, store).await?,
        (Some(_), None) => {
            return Err(VerifyError::Refused(vec![
                "this job's rows pair through id maps, which the state store holds: give ferry its state store".to_string(),
            ]))
        }
    };
    Ok(Outcome {
        job: job.name.clone(),
        source_rows: found.source_rows,
        target_rows: found.target_rows,
        // Rows re-checked after the snapshot may have come since: never below 0.
        equal: found
            .source_rows
            .saturating_sub(found.missing + found.different),
        missing: found.missing,
        extra: found.extra,
        different: found.different,
        extra_allowed: plan.extra_allowed,
        missing_allowed: plan.missing_allowed,
        fields: found.fields,
        first: found.first,
        unlisted: found.unlisted,
        unmapped: found.unmapped,
        keys: found.all,
        source_key: plan.source.key.clone(),
        compared_fields: plan.fields.clone(),
        not_compared: plan.not_compared.clone(),
        source_pushdown: found.source_pushdown,
        target_pushdown: found.target_pushdown,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Whether a verify of `job` reads the state store: its target generates
/// its keys, or a field is translated through another job's id map.
pub fn needs_state(job: &Job) -> bool {
    job.generated_key().is_some() || job.fields.iter().any(|f| f.lookup.is_some())
}

/// How both sides hash, the same on each.
async fn hashing(
    plan: &Plan,
    (kind_s, kind_t): (SqlKind, SqlKind),
    (source_sum, target_sum): (&dyn Checksum, &dyn Checksum),
) -> Hashing {
    // Rows pairing through an id map hash their fields only; rows carried
    // through a lookup's map are hashed by ferry, as the target's server
    // hashes them: the portable hash.
    let translated = plan.translation.is_some();
    let carried = plan
        .translation
        .as_ref()
        .is_some_and(|t| !t.fields.is_empty());
    Hashing {
        buckets: BUCKETS,
        pg_native: kind_s == kind_t && kind_s == SqlKind::Postgres && !carried,
        pg_record: !carried
            && kind_s == kind_t
            && kind_s == SqlKind::Postgres
            && same_types(plan, translated)
            && record_hash_on(source_sum).await
            && record_hash_on(target_sum).await,
        alike: kind_s == kind_t,
        // Ranges of the key once `compare` has measured it.
        int_key: None,
        keyless: translated,
    }
}

/// Every compared column hashes alike on both sides: types of one hash
/// family (PostgreSQL hashes an `integer` 5 as a `bigint` 5, a
/// `numeric(12,2)` 1.50 as a `numeric` 1.5), each with a hash function of
/// its own (not `json`, nor a type ferry does not know).
/// `keyless`: the keys are not hashed (they pair through an id map).
fn same_types(plan: &Plan, keyless: bool) -> bool {
    let pairs = |s: &'_ [Column], t: &'_ [Column]| {
        s.iter()
            .zip(t)
            .all(|(a, b)| hash_family(a).is_some() && hash_family(a) == hash_family(b))
    };
    (keyless || pairs(&plan.source.key, &plan.target.key))
        && pairs(&plan.source.fields, &plan.target.fields)
}

/// The PostgreSQL hash family of a column's type, if it has one.
fn hash_family(column: &Column) -> Option<u8> {
    use crate::connectors::ColumnType as T;
    Some(match &column.ty {
        T::Bool => 1,
        T::Int(_) => 2,
        T::Decimal(_) => 3,
        T::Float(_) => 4,
        T::Text(_) => 5,
        T::Char(_) => 6,
        T::Bytes => 7,
        T::Date => 8,
        T::Time(_) => 9,
        T::Timestamp(_) => 10,
        T::TimestampTz(_) => 11,
        T::Interval => 12,
        T::Uuid => 13,
        T::Json if column.declared == "jsonb" => 14,
        _ => return None,
    })
}

/// Whether the server has `hash_record_extended` (PostgreSQL 14).
async fn record_hash_on(system: &dyn Checksum) -> bool {
    let Ok(mut reader) = system.reader(false).await else {
        return false;
    };
    let mut version = 0u32;
    let asked = reader
        .each_row(
            "SELECT current_setting('server_version_num')",
            &[],
            &mut |row| {
                version = row
                    .first()
                    .cloned()
                    .flatten()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                Ok(())
            },
        )
        .await;
    asked.is_ok() && version >= 140_000
}

/// Whether `part` can narrow both sides alike.
fn narrowable(
    plan: &Plan,
    part: Part<'_>,
    kind_s: SqlKind,
    (source, target): (&str, &str),
) -> Result<(), VerifyError> {
    if kind_s == SqlKind::Objects && part.predicate.is_some() {
        return Err(VerifyError::Refused(vec![format!(
            "--where is SQL, and the source {source} is not: narrow it by --keys"
        )]));
    }
    if plan.translation.as_ref().is_some_and(|t| t.key.is_some()) && part.keys.is_some() {
        return Err(VerifyError::Refused(vec![format!(
            "--keys names the source's keys, and the target {target} has keys of its own (the id map pairs them): narrow by --where"
        )]));
    }
    Ok(())
}

fn not_table(side: &str, what: &str) -> VerifyError {
    VerifyError::Refused(vec![format!(
        "the {side} {what} is not a table ferry can read back: verify compares PostgreSQL, MySQL/MariaDB and SQLite tables (and sources read whole, as files, with such a target)"
    )])
}

/// A source read whole every run (a file, an API), not a queue.
fn reads_whole(job: &Job) -> bool {
    let reads = connectors::REGISTRY
        .source(&job.source.kind)
        .map(|spec| spec.reads);
    reads == Some(Reads::Whole) && job.detect != Detect::Outbox
}

/// Both tables' columns. A source without columns (JSON lines, an API)
/// has the fields the job reads from it, typed by the target's columns.
async fn tables(
    job: &Job,
    source: &dyn Source,
    target: &dyn connectors::Target,
) -> Result<(TableSchema, TableSchema), VerifyError> {
    let (source_shape, target_shape) = tokio::join!(source.schema(), target.schema());
    let target_table = table(
        target_shape.map_err(VerifyError::Target)?,
        &target.describe(),
    )
    .map_err(VerifyError::Target)?;
    let source_table = match source_shape.map_err(VerifyError::Source)? {
        Shape::Schemaless => {
            let mut fields: Vec<String> = match job.fields.is_empty() {
                true => target_table
                    .columns
                    .iter()
                    .map(|c| c.name.clone())
                    .collect(),
                false => job.fields.iter().map(|f| f.from.clone()).collect(),
            };
            fields.extend(job.source.key.iter().cloned());
            fields.sort_unstable();
            fields.dedup();
            TableSchema {
                columns: fields
                    .into_iter()
                    .map(|name| Column::sqlite(name, String::new()))
                    .collect(),
                primary_key: job.source.key.clone(),
            }
        }
        shape => table(shape, &source.describe()).map_err(VerifyError::Source)?,
    };
    Ok((source_table, target_table))
}

fn table(shape: Shape, described: &str) -> Result<TableSchema, ConnectorError> {
    match shape {
        Shape::Table(t) => Ok(t),
        _ => Err(ConnectorError::MissingObject {
            system: described.to_string(),
            object: "table".to_string(),
            detail: "no such table".to_string(),
        }),
    }
}

/// Both systems and how they are read.
pub(crate) struct Sides<'a> {
    pub source: &'a dyn Checksum,
    pub target: &'a dyn Checksum,
    pub plan: &'a Plan,
    pub part: Part<'a>,
    pub hashing: Hashing,
}

/// The key is one integer column on both sides.
fn integer_key(plan: &Plan) -> bool {
    [&plan.source, &plan.target].iter().all(|side| {
        matches!(side.key.as_slice(), [one] if matches!(one.ty, crate::connectors::ColumnType::Int(_)))
    })
}

impl Sides<'_> {
    /// Both sides' sessions, bucketing as `hashing` says.
    pub async fn open(
        &self,
        consistent: bool,
        hashing: Hashing,
    ) -> Result<(Session, Session), VerifyError> {
        let (s, t) = tokio::join!(
            Session::open(
                self.source,
                &self.plan.source,
                &self.part,
                hashing,
                consistent
            ),
            Session::open(
                self.target,
                &self.plan.target,
                &self.part,
                hashing,
                consistent
            ),
        );
        Ok((
            s.map_err(VerifyError::Source)?,
            t.map_err(VerifyError::Target)?,
        ))
    }
}
