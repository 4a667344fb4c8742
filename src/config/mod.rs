//! Configuration: `schedules.toml` and `jobs/*.toml`, parsed, interpolated and
//! validated up front into immutable [`Config`] values. Nothing else reads TOML.
pub mod connections;
mod diagnostic;
mod interpolate;
mod load;
mod raw;
pub mod registry;
mod schedule;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use diagnostic::{ConfigErrors, Diagnostic};
pub use interpolate::{interpolate, InterpolateError};
pub use load::{load, load_offline};
pub use registry::Registry;
pub use schedule::{Missed, Schedule};
pub use validate::resolve_sqlite_url;

#[derive(Debug, Clone)]
pub struct Config {
    /// The folder that holds `schedules.toml` and `jobs/`; relative paths resolve against it.
    pub dir: PathBuf,
    pub engine: Engine,
    pub jobs: BTreeMap<String, Job>,
    pub schedules: BTreeMap<String, Schedule>,
    /// Tables a whole-schema job matched and cannot sync (no primary key).
    pub skipped: Vec<SkippedTable>,
    /// Valid settings that probably do not do what they appear to.
    pub warnings: Vec<Diagnostic>,
}

/// A table a whole-schema job left out, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SkippedTable {
    pub job: String,
    pub table: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Engine {
    /// State-store URL from `[engine] state`, with relative SQLite paths resolved.
    pub state: Option<String>,
    pub metrics: String,
    pub pushgateway: Option<String>,
    pub timezone: chrono_tz::Tz,
    pub retention: Retention,
    /// How long connecting to the state store may take (`[engine] connect_timeout`).
    pub connect_timeout: Duration,
    /// Runs (and scheduled verifies) in flight in one daemon; more wait,
    /// oldest due first.
    pub max_concurrent_runs: usize,
    /// Connections per source or target system and process.
    pub connections: connections::Budget,
}

/// How long finished work is kept in the state store.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Finished tasks (`[engine] retain_tasks`, default 7 days).
    pub tasks: Duration,
    /// Run history (`[engine] retain_runs`, default 90 days).
    pub runs: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            tasks: Duration::from_secs(7 * 86_400),
            runs: Duration::from_secs(90 * 86_400),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub description: String,
    pub after: Vec<String>,
    pub source: SourceConfig,
    pub detect: Detect,
    /// The operations the job carries (`[detect] ops`); others are dropped
    /// before they are enqueued.
    pub ops: Ops,
    pub batch: Batch,
    pub snapshot: Snapshot,
    pub target: TargetConfig,
    /// Target field ← source field. Empty: every source field, under its own name.
    pub fields: Vec<FieldMap>,
    pub rules: Rules,
    pub schema: SchemaPolicy,
    pub children: BTreeMap<String, Child>,
    /// `[[tests]]`: rule tests `ferry test` runs offline.
    pub tests: Vec<RuleTest>,
    /// Jobs whose source is this job's target table (the reverse job of a
    /// bidirectional pair): what this job writes is marked in their ledger
    /// so that they do not send it back.
    pub echo: Vec<EchoPartner>,
}

/// `[schema]`: what a run does when the source's columns changed since
/// the job's last run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchemaPolicy {
    pub on_new_column: OnNewColumn,
    pub on_type_change: OnTypeChange,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnNewColumn {
    /// Not read, not sent; nothing changes.
    #[default]
    Ignore,
    /// Added to the target table and sent from now on.
    Add,
    /// The job stops until someone maps or ignores it.
    Fail,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnTypeChange {
    /// The job stops until someone looks.
    #[default]
    Fail,
    /// A change that keeps every value (int → bigint, varchar(20) →
    /// varchar(40)) is made to the target column too; any other stops.
    Widen,
}

#[derive(Debug, Clone)]
pub struct EchoPartner {
    pub job: String,
    /// Its `[source] key`.
    pub key: Vec<String>,
    /// The columns it reads (see [`Job::read_columns`]): its content hashes
    /// cover these only.
    pub columns: Option<Vec<String>>,
}

impl Job {
    /// A target's error message with the job's field it names, and where
    /// the field is defined: `… (field `email`, jobs/j.toml:12)`. Databases
    /// name a column as `"email"` (PostgreSQL), `'email'` (MySQL) or
    /// `table.email` (SQLite).
    pub fn locate_in_message(&self, message: &str) -> String {
        let names = |f: &&FieldMap| {
            let t = &f.target;
            message.contains(&format!("\"{t}\""))
                || message.contains(&format!("'{t}'"))
                || message.ends_with(&format!(".{t}"))
                || message.contains(&format!(".{t} "))
                || message.contains(&format!(".{t}:"))
        };
        match self
            .fields
            .iter()
            .filter(|f| !f.location.is_empty())
            .find(names)
        {
            Some(f) if !message.contains(&f.location) => {
                format!("{message} (field `{}`, {})", f.target, f.location)
            }
            _ => message.to_string(),
        }
    }

    /// What decides how the job writes a row: its fields (target, source,
    /// owner, lookup), delete rules and target table, key, mode and change
    /// time. When it differs from the last run's, the rows the old one
    /// wrote are written again (the ledger's hashes cover the source's
    /// values only, so nothing else would resend them).
    pub fn write_fingerprint(&self) -> String {
        let mut text = String::new();
        // Fields the drift policy added (no location) are ferry's, not the
        // user's rules: they are in the hashes already.
        for f in self.fields.iter().filter(|f| !f.location.is_empty()) {
            text.push_str(&format!(
                "field {}={}/{:?}/{:?};",
                f.target, f.from, f.owner, f.lookup
            ));
        }
        text.push_str(&format!(
            "rules {:?}/{:?}/{:?};target {:?}/{:?}/{:?}/{:?}",
            self.rules.owner,
            self.rules.deletes,
            self.rules.soft_delete,
            self.target.table,
            self.target.key,
            self.target.mode,
            self.target.updated_at
        ));
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
    }

    /// The source columns a job with `[fields]` reads: the mapped ones, the
    /// key and the cursor. None: every column (a job without `[fields]`).
    pub fn read_columns(&self) -> Option<Vec<String>> {
        if self.fields.is_empty() {
            return None;
        }
        let mut columns: Vec<String> = self.fields.iter().map(|f| f.from.clone()).collect();
        columns.extend(self.source.key.iter().cloned());
        if let Detect::Cursor { column, .. } = &self.detect {
            columns.push(column.clone());
        }
        columns.dedup();
        Some(columns)
    }

    /// The target key column the target generates: a one-column target key
    /// that no field maps from the source. The job keeps an id map.
    pub fn generated_key(&self) -> Option<&str> {
        match self.target.key.as_slice() {
            [key] if !self.fields.is_empty() && !self.fields.iter().any(|f| &f.target == key) => {
                Some(key.as_str())
            }
            _ => None,
        }
    }

    /// For `owner = "newest"`: (the target's `updated_at` column, the source's
    /// cursor column): the times the newest rule compares.
    pub fn newest_clock(&self) -> Option<(&str, &str)> {
        let uses_newest = self.fields.iter().any(|f| f.owner == Owner::Newest)
            || (self.fields.is_empty() && self.rules.owner == Owner::Newest);
        match (&self.detect, &self.target.updated_at) {
            (Detect::Cursor { column, .. }, Some(updated_at)) if uses_newest => {
                Some((updated_at.as_str(), column.as_str()))
            }
            _ => None,
        }
    }
}

/// A `[[tests]]` block: an object (or its deletion) against the target's
/// current row, and the write the job's rules must make of it.
#[derive(Debug, Clone)]
pub struct RuleTest {
    pub name: String,
    /// `jobs/<job>.toml:<line>`, for reports.
    pub location: String,
    /// The source object; None: it was deleted at the source.
    pub source: Option<crate::model::Record>,
    /// The target's current row; None: the target has no row for the key.
    pub target: Option<crate::model::Record>,
    /// What ferry last wrote to the target for this key, per field.
    pub written: Option<crate::model::Record>,
    pub expect: WriteKind,
    /// The exact fields an insert or update writes, when the test names them.
    pub fields: Option<crate::model::Record>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Insert,
    Update,
    Delete,
    Skip,
    /// An update (or none) where a field changed on both sides since
    /// ferry's last write; its owner decides.
    Conflict,
}

impl WriteKind {
    pub fn name(self) -> &'static str {
        match self {
            WriteKind::Insert => "insert",
            WriteKind::Update => "update",
            WriteKind::Delete => "delete",
            WriteKind::Skip => "skip",
            WriteKind::Conflict => "conflict",
        }
    }
}

/// A connector's settings; which keys apply depends on `kind` (README, "Job files").
#[derive(Debug, Clone, Default)]
pub struct SourceConfig {
    pub kind: String,
    pub url: Option<String>,
    pub table: Option<String>,
    pub query: Option<String>,
    /// `tables = ["public.*", "!public.audit_*"]`: a whole-schema job, which
    /// expands into one job per matching table with a primary key.
    pub tables: Option<Vec<String>>,
    pub filter: Option<String>,
    pub key: Vec<String>,
    pub path: Option<PathBuf>,
    /// The connector's own keys (those it declares), `${VAR}`s resolved:
    /// its constructor reads them into its typed options.
    pub options: toml::Table,
    /// How long connecting may take before the system counts as unreachable.
    pub connect_timeout: Duration,
    /// The columns the job reads, in the table's order, as each run's
    /// schema check resolves them (mapped fields, key, cursor); None: all.
    /// Never set from the file.
    pub columns: Option<Vec<String>>,
    /// The connections its system's shared pool for sources may open (see
    /// [`connections`]); None: a pool of its own. Never set from the file.
    pub pool_size: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct TargetConfig {
    pub kind: String,
    /// The connector's own keys (those it declares), `${VAR}`s resolved:
    /// its constructor reads them into its typed options.
    pub options: toml::Table,
    pub url: Option<String>,
    pub table: Option<String>,
    pub key: Vec<String>,
    pub mode: Mode,
    /// SQL targets: create the table if it is missing, from the source's
    /// columns (`create`; `create_table`, SQLite only, is its old name).
    pub create: bool,
    pub updated_at: Option<String>,
    pub path: Option<PathBuf>,
    /// How long connecting may take before the system counts as unreachable.
    pub connect_timeout: Duration,
    /// As [`SourceConfig::pool_size`], for its system's pool for targets.
    pub pool_size: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Jsonl,
}

/// `[detect] max_delete_ratio` when not set (and for a cursor job's
/// `ferry resync`, which has none of its own).
pub const DEFAULT_MAX_DELETE_RATIO: f64 = 0.5;

#[derive(Debug, Clone, PartialEq)]
pub enum Detect {
    Cursor { column: String, lag: Duration },
    Diff { max_delete_ratio: f64 },
    Outbox,
}

impl Detect {
    pub fn name(&self) -> &'static str {
        match self {
            Detect::Cursor { .. } => "cursor",
            Detect::Diff { .. } => "diff",
            Detect::Outbox => "outbox",
        }
    }
}

/// Which detected operations a job enqueues: a subscription's filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ops {
    /// Objects the ledger does not know as present.
    pub create: bool,
    /// Present objects whose content changed.
    pub update: bool,
    /// Present objects the source no longer has (diff).
    pub delete: bool,
}

impl Default for Ops {
    fn default() -> Self {
        Ops {
            create: true,
            update: true,
            delete: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Batch {
    pub size: usize,
    pub concurrency: usize,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            size: 1000,
            concurrency: 4,
            max_attempts: 10,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
        }
    }
}

/// `[snapshot]`: how first runs, `--full` and resyncs of table sources
/// split the source into chunk tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Rows per chunk task; 0: no chunk tasks, every row is queued as an
    /// item (the lane of brokers and outboxes).
    pub chunk_rows: u64,
    /// Chunk tasks in flight in one process.
    pub parallelism: usize,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            chunk_rows: 100_000,
            parallelism: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Upsert,
    Insert,
    Update,
    Mirror,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Source,
    Target,
    Fill,
    Newest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Deletes {
    #[default]
    Propagate,
    Soft,
    Ignore,
}

#[derive(Debug, Clone)]
pub struct FieldMap {
    pub target: String,
    pub from: String,
    pub owner: Owner,
    pub lookup: Option<String>,
    /// The user accepts that the target's type changes some values
    /// (`lossy = true`); otherwise such a field stops the job.
    pub lossy: bool,
    /// `jobs/<file>.toml:<line>` of its definition, for messages; empty for
    /// a field ferry added (`on_new_column = "add"`).
    pub location: String,
}

#[derive(Debug, Clone)]
pub struct Rules {
    pub owner: Owner,
    pub deletes: Deletes,
    pub soft_delete: Option<String>,
}

/// `[children.NAME]`: rows attached to each object under NAME.
#[derive(Debug, Clone)]
pub struct Child {
    /// Selects one parent's children, comparing a column with `= $1`.
    pub query: String,
    /// The columns that identify a child among its parent's.
    pub key: Vec<String>,
    /// The child column compared with `$1`: the parent's key in each child row.
    pub parent: String,
    /// The SQL target's child table (default: NAME).
    pub table: String,
}

impl Child {
    /// Where the query compares its parent column with `$1`: the byte range
    /// of `= $1`, and the column's name. None: the query has no such place.
    pub fn parent_comparison(query: &str) -> Option<(std::ops::Range<usize>, String)> {
        let at = query.find("$1")?;
        let before = query[..at].trim_end();
        let eq = before.strip_suffix('=')?;
        let column_end = eq.trim_end();
        let start = column_end
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '"' || c == '.'))
            .map_or(0, |i| i + 1);
        let column = column_end[start..].rsplit('.').next()?.trim_matches('"');
        if column.is_empty() {
            return None;
        }
        Some((eq.len()..at + 2, column.to_string()))
    }

    /// The query for many parents at once: `= $1` becomes a test against
    /// the array bound at `$1` (`ANY($1)`, or SQLite's `IN (… json_each($1))`).
    pub fn batched(&self, membership: &str) -> String {
        match Child::parent_comparison(&self.query) {
            Some((range, _)) => format!(
                "{}{membership}{}",
                &self.query[..range.start],
                &self.query[range.end..]
            ),
            None => self.query.clone(),
        }
    }
}
