//! Change detection: reads a [`Source`], compares each object's content hash
//! with the ledger, and commits the changes (one queue task per chunk) together
//! with the watermark advance in one state-store transaction. Streams in
//! chunks of `[batch] size`: a table is never held in memory.
mod cursor;
mod diff;
mod outbox;
mod pushdown;
mod ranges;
mod resync;
pub mod snapshot;

pub use diff::scan_for_diff;

use std::collections::HashMap;
use std::time::Instant;

use futures::TryStreamExt;

use crate::config::{Detect, Job};
use crate::connectors::{ConnectorError, RowStream, Source, Subset};
use crate::model::{key_text, parse_hash, Item, Op, SourceRow};
use crate::progress::Progress;
use crate::state::{carried_prior, DetectedBatch, LedgerEntry, StateError, Store};

#[derive(Debug, Clone, Copy, Default)]
pub struct DetectOptions {
    /// Every object is new: ignore the watermark and the ledger, look for
    /// no deletes (a job whose fields or rules changed writes every row again).
    pub full: bool,
    /// `run --once --full`, `plan --full`: re-read the whole source and
    /// resend every object, and delete what it no longer has, as a resync
    /// of the whole source does (queues cannot be re-read: their jobs run
    /// as usual).
    pub repair: bool,
    /// Let a diff run delete more than `max_delete_ratio`, or from an empty source.
    pub allow_mass_delete: bool,
    /// Count what would change; write nothing.
    pub dry_run: bool,
    /// With `dry_run`: keep up to this many keys of each kind of change
    /// (`ferry plan --limit`).
    pub sample: usize,
}

#[derive(Debug, Clone, Default)]
pub struct DetectReport {
    pub scanned: u64,
    /// Rows the source sent whole; the rest of `scanned` left it as a key
    /// and a hash its database computed (the diff's pushdown).
    pub read_whole: u64,
    /// (key, hash) pairs the source sent (the diff's pushdown); the rows
    /// of buckets whose digests were unchanged sent none.
    pub read_hashes: u64,
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    pub unchanged: u64,
    /// Objects without a value in a key column; skipped and counted as failed.
    pub invalid: u64,
    pub first_invalid: Option<String>,
    /// Cursor strategy: objects whose cursor is NULL (compared by hash each run).
    pub null_cursor: u64,
    /// Changes of an operation `[detect] ops` leaves out: not enqueued, not
    /// recorded (a diff sees them again next run).
    pub left_out: u64,
    pub tasks: u64,
    /// Changes a failed detection committed to the queue before it failed,
    /// known only as a total (its report was lost with the error).
    pub unclassified: u64,
    /// A dry run's first keys of each kind ([`DetectOptions::sample`]).
    pub samples: KeySamples,
    /// A chunked snapshot of the job is in progress after this detection
    /// (its chunk tasks are in the queue).
    pub snapshot_open: bool,
    /// A dry run: the chunk tasks and rows the snapshot it plans would
    /// read, when it goes through chunk tasks.
    pub snapshot_plan: Option<(u64, u64)>,
    /// This detection started that snapshot and counts its rows (as
    /// inserts on a first run, else updates) as the source held them.
    pub snapshot_counted: bool,
}

/// The first keys (as JSON arrays of the key's values) that a dry run
/// would insert, update and delete.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct KeySamples {
    pub inserts: Vec<String>,
    pub updates: Vec<String>,
    pub deletes: Vec<String>,
    /// The changes of the sampled updates, to show which fields differ
    /// from the target's rows.
    #[serde(skip)]
    pub update_items: Vec<(String, Item)>,
}

impl KeySamples {
    fn keep(list: &mut Vec<String>, limit: usize, key: &str) {
        if list.len() < limit {
            list.push(key.to_string());
        }
    }
}

impl DetectReport {
    /// Adds an earlier pass's counts to this one's (a snapshot's last pass).
    pub fn absorb(&mut self, earlier: DetectReport) {
        self.scanned += earlier.scanned;
        self.read_whole += earlier.read_whole;
        self.read_hashes += earlier.read_hashes;
        self.inserts += earlier.inserts;
        self.updates += earlier.updates;
        self.deletes += earlier.deletes;
        self.unchanged += earlier.unchanged;
        self.invalid += earlier.invalid;
        self.null_cursor += earlier.null_cursor;
        self.left_out += earlier.left_out;
        self.tasks += earlier.tasks;
        self.unclassified += earlier.unclassified;
        self.snapshot_counted |= earlier.snapshot_counted;
    }

    pub fn changed(&self) -> u64 {
        self.inserts + self.updates + self.deletes + self.unclassified
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Source(#[from] ConnectorError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("refusing to delete {deletes} of {present} objects ({percent:.1}% > max_delete_ratio {ratio}); rerun with --allow-mass-delete if this is intended")]
    MassDelete {
        deletes: u64,
        present: u64,
        percent: f64,
        ratio: f64,
    },
    #[error("the source returned no objects, which would delete all {present} in the target; rerun with --allow-mass-delete if this is intended")]
    EmptySource { present: u64 },
    #[error("a snapshot of this job is in progress ({left} chunk task(s) left): run the job until it is done (ferry status shows it), then ask again")]
    SnapshotInProgress { left: i64 },
    /// The diff strategy sorts its scan in temporary files (`TMPDIR`).
    #[error("diff scan: temporary sort file in {}: {source}", std::env::temp_dir().display())]
    Spill {
        #[from]
        source: std::io::Error,
    },
}

/// One detection: what it reads, where it writes, and for which run.
#[derive(Clone, Copy)]
pub struct Detection<'a> {
    pub job: &'a Job,
    pub source: &'a dyn Source,
    pub store: &'a Store,
    pub run_id: i64,
    pub opts: DetectOptions,
    /// `ferry resync`: resend every object of this part of the source.
    pub subset: Option<&'a Subset>,
    pub progress: &'a Progress,
}

/// New ledger keys in one run from which the ledger's planner statistics are
/// refreshed ([`Store::refresh_ledger_statistics`]).
pub const LEDGER_GROWTH_TO_ANALYZE: u64 = 10_000;

pub async fn detect(d: Detection<'_>) -> Result<DetectReport, DetectError> {
    let report = match &d.job.detect {
        _ if d.subset.is_some() => resync::detect(d).await?,
        Detect::Cursor { .. } | Detect::Diff { .. } if d.opts.repair => resync::detect(d).await?,
        Detect::Cursor { column, lag } => cursor::detect(d, column, *lag).await?,
        Detect::Diff { max_delete_ratio } => diff::detect(d, *max_delete_ratio).await?,
        Detect::Outbox => outbox::detect(d).await?,
    };
    if report.inserts >= LEDGER_GROWTH_TO_ANALYZE {
        // The keys are committed; stale statistics only slow later runs.
        if let Err(e) = d.store.refresh_ledger_statistics().await {
            tracing::warn!(job = %d.job.name, error = %e, "could not refresh the ledger's planner statistics");
        }
    }
    if report.left_out > 0 {
        tracing::info!(
            job = %d.job.name,
            left_out = report.left_out,
            "changes of operations `[detect] ops` leaves out were not enqueued"
        );
    }
    Ok(report)
}

/// Accumulates scanned rows into chunks and commits each one.
struct Chunker<'a> {
    d: Detection<'a>,
    job: &'a Job,
    store: &'a Store,
    opts: DetectOptions,
    rows: Vec<SourceRow>,
    report: DetectReport,
    /// Keys found live in the ledger (diff: present objects that still exist).
    matched_live: u64,
    /// The ledger knows no key of this job (first run, or `--full`): every
    /// object is new, and looking each one up would find nothing.
    skip_lookups: bool,
    /// The ledger knew no key of this job when detection began (not so for
    /// `--full`, which skips lookups on a full ledger).
    ledger_was_empty: bool,
    /// Resend objects the ledger says are unchanged (`ferry resync`: the
    /// target may have drifted from what the ledger says was written).
    resend: bool,
    /// The diff's pushdown keeps the job's range digests: its commits do
    /// not forget them.
    keeps_digests: bool,
}

impl<'a> Chunker<'a> {
    fn new(d: Detection<'a>) -> Self {
        Chunker {
            d,
            job: d.job,
            store: d.store,
            opts: d.opts,
            rows: Vec::with_capacity(d.job.batch.size),
            report: DetectReport::default(),
            matched_live: 0,
            skip_lookups: d.opts.full,
            ledger_was_empty: false,
            resend: false,
            keeps_digests: false,
        }
    }

    async fn start(mut self) -> Result<Self, DetectError> {
        self.ledger_was_empty = self.store.ledger_is_empty(&self.job.name).await?;
        self.skip_lookups |= self.ledger_was_empty;
        Ok(self)
    }

    /// Reads the whole stream, committing a chunk every `[batch] size` rows.
    /// With `advance`, each commit moves the watermark to its last row's cursor.
    async fn consume(&mut self, mut rows: RowStream, advance: bool) -> Result<(), DetectError> {
        while let Some(row) = rows.try_next().await? {
            self.report.scanned += 1;
            self.report.read_whole += 1;
            self.rows.push(row);
            if self.rows.len() >= self.job.batch.size {
                self.flush(advance).await?;
            }
        }
        self.flush(advance).await
    }

    async fn flush(&mut self, advance: bool) -> Result<(), DetectError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let rows = std::mem::take(&mut self.rows);
        let scanned = rows.len() as u64;
        let watermark = if advance {
            rows.last().and_then(|r| r.cursor.clone())
        } else {
            None
        };
        // Later rows with the same key win: one item per key per task.
        let mut by_key: HashMap<String, (Vec<serde_json::Value>, SourceRow)> =
            HashMap::with_capacity(rows.len());
        let mut order = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some((key, text)) = self.keyed(&row) {
                if by_key.insert(text.clone(), (key, row)).is_none() {
                    order.push(text);
                }
            }
        }
        let ledger = if self.skip_lookups {
            HashMap::new()
        } else {
            self.store.ledger_written(&self.job.name, &order).await?
        };
        let mut batch = DetectedBatch {
            watermark,
            supersedes: (!self.skip_lookups).then_some(false),
            keys_unseen: self.ledger_was_empty,
            ..Default::default()
        };
        for text in order {
            // Every key in `order` was inserted into `by_key` just above.
            let (key, row) = by_key.remove(&text).expect("key collected above");
            let mut item = Item::upsert_object(key, row.object);
            item.source_hash = row.source_hash;
            let found = ledger.get(&text);
            if self.changed(
                &text,
                found.map(|(entry, _)| entry),
                parse_hash(&item.hash),
                &mut batch.supersedes,
            ) {
                item.prior = carried_prior(found);
                batch.items.push(item);
                batch.keys.push(text);
            }
        }
        self.commit(batch, scanned, started).await
    }

    /// Counts objects scanned outside a committed chunk.
    fn scanned(&mut self, n: u64) {
        self.d.progress.scanned(n, 0);
        crate::metrics::objects_scanned(&self.job.name, n);
    }

    /// The object's key and its ledger text; None (counted as invalid) when
    /// a key column has no value.
    fn keyed(&mut self, row: &SourceRow) -> Option<(Vec<serde_json::Value>, String)> {
        match row.object.key(&self.job.source.key) {
            Ok(key) => {
                let text = key_text(&key);
                Some((key, text))
            }
            Err(column) => {
                self.report.invalid += 1;
                if self.report.first_invalid.is_none() {
                    self.report.first_invalid = Some(format!(
                        "an object has no value in key column `{column}`: {}",
                        row.object.preview()
                    ));
                }
                None
            }
        }
    }

    /// Whether an object with content `hash` is a change against its ledger
    /// entry; counts it as unchanged, an insert or an update, and notes when
    /// it replaces a version still queued.
    fn changed(
        &mut self,
        key: &str,
        entry: Option<&LedgerEntry>,
        hash: i64,
        supersedes: &mut Option<bool>,
    ) -> bool {
        let live = entry.is_some_and(|e| !e.deleted);
        if live {
            self.matched_live += 1;
        }
        match entry {
            Some(e) if live && e.detected_hash == hash && !self.resend => {
                self.report.unchanged += 1;
                false
            }
            _ => {
                let update = entry.is_some_and(|e| live && e.synced_version.is_some());
                let carried = if update {
                    self.job.ops.update
                } else {
                    self.job.ops.create
                };
                if !carried {
                    self.report.left_out += 1;
                    return false;
                }
                if entry.is_some_and(LedgerEntry::queued) {
                    *supersedes = Some(true);
                }
                let limit = if self.opts.dry_run {
                    self.opts.sample
                } else {
                    0
                };
                if update {
                    self.report.updates += 1;
                    KeySamples::keep(&mut self.report.samples.updates, limit, key);
                } else {
                    self.report.inserts += 1;
                    KeySamples::keep(&mut self.report.samples.inserts, limit, key);
                }
                true
            }
        }
    }

    async fn commit(
        &mut self,
        mut batch: DetectedBatch,
        scanned: u64,
        started: Instant,
    ) -> Result<(), DetectError> {
        if self.opts.dry_run {
            let samples = &mut self.report.samples;
            for (item, key) in batch.items.iter().zip(&batch.keys) {
                if samples.update_items.len() < samples.updates.len()
                    && samples.updates.contains(key)
                {
                    samples.update_items.push((key.clone(), item.clone()));
                }
            }
            return Ok(());
        }
        if batch.items.is_empty() && batch.watermark.is_none() {
            return Ok(());
        }
        batch.keeps_digests |= self.keeps_digests;
        let task = self
            .store
            .commit_detected(&self.job.name, self.d.run_id, &mut batch)
            .await?
            .is_some();
        if task {
            self.report.tasks += 1;
        }
        let deletes = batch.items.iter().filter(|i| i.op == Op::Delete).count() as u64;
        let upserts = batch.items.len() as u64 - deletes;
        self.d.progress.scanned(scanned, upserts + deletes);
        crate::metrics::chunk_detected(
            &self.job.name,
            scanned,
            upserts,
            deletes,
            task,
            started.elapsed(),
        );
        Ok(())
    }
}
