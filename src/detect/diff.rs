//! The diff strategy: hash every object and compare with the ledger. The scan
//! is sorted by key in bounded memory ([`crate::sort`]) and merged with the
//! ledger read in the same order: an unchanged object costs no
//! write, and a live ledger key the scan lacks is a delete. Deletes are held
//! in a temporary file until the scan is complete, then guarded by
//! `max_delete_ratio` and the empty-source check before any is enqueued.
use std::fs::File;
use std::io::{self, BufReader};
use std::time::Instant;

use futures::TryStreamExt;

use super::{Chunker, DetectError, DetectReport, Detection};
use crate::config::{Detect, Job};
use crate::connectors::{ConnectorError, Hashed, KeyRange, RowStream, Scan, Source, Subset};
use crate::model::Item;
use crate::sort::{Entry, LineSpill, Merged, ObjectSpill, Sorter, SpilledObjects, SORT_MEMORY};
use crate::state::{DetectedBatch, IntegerKeys, LedgerEntry, LedgerWalk, StateError, Store};

pub async fn detect(d: Detection<'_>, max_delete_ratio: f64) -> Result<DetectReport, DetectError> {
    let mut chunker = Chunker::new(d).start().await?;
    if !chunker.skip_lookups {
        if let Some(compared) = super::pushdown::compare(&mut chunker).await? {
            let deletes_held = compared.deletes.count() > 0 && !d.job.ops.delete;
            let report = finish(chunker, compared.deletes, max_delete_ratio, &Scope::All).await?;
            match (compared.digests, deletes_held) {
                (Some(digests), false) => digests.save(d.store, &d.job.name).await?,
                // Deletes `[detect] ops` leaves out stay live in the ledger.
                (Some(_), true) => d.store.forget_range_digests(&d.job.name, None).await?,
                // A dry run, or keys no bucket holds: nothing to record.
                (None, _) => {}
            }
            return Ok(report);
        }
    }
    let rows = scan_for_diff(d.job, d.source, Scan::All).await?;
    compare(chunker, rows, max_delete_ratio, &Scope::All).await
}

/// `scan` of a diff job's source, each row with the hash its database
/// computes when it can (the ledger keeps it for the next run's pushdown,
/// [`super::pushdown`]); a scan of any other job's source as it is.
pub async fn scan_for_diff(
    job: &Job,
    source: &dyn Source,
    scan: Scan<'_>,
) -> Result<RowStream, ConnectorError> {
    if matches!(job.detect, Detect::Diff { .. }) {
        if let Some(rows) = source.scan_hashed(scan, Hashed::Whole).await? {
            return Ok(rows);
        }
    }
    source.scan(scan).await
}

/// Which live ledger keys that the scan lacks are deletes.
pub(super) enum Scope<'a> {
    /// Every one: the scan read the whole source.
    All,
    /// Those in the range the scan read, that the source indeed no longer
    /// holds (`ferry resync --keys`).
    Keys {
        range: &'a KeyRange,
        source: &'a dyn Source,
    },
    /// Those listed (`ferry verify --repair`; key texts, sorted): each
    /// was looked for by key, so one the scan lacks is gone.
    Listed(&'a [String]),
}

/// The widest integer key range whose keys are each looked up in the
/// ledger rather than found by reading it whole.
const ENUMERATED_KEYS: u64 = 250_000;

impl Scope<'_> {
    /// A one-column range's integer bounds (see [`KeyRange::integer_bounds`]).
    fn integer_bounds(&self) -> Option<(Option<i64>, Option<i64>)> {
        match self {
            Scope::Keys { range, .. } => range.integer_bounds(),
            Scope::All | Scope::Listed(_) => None,
        }
    }

    /// Whether the ledger key `text`, which the scan did not return, was
    /// deleted at the source.
    pub(super) async fn deleted(&self, text: &str) -> Result<bool, DetectError> {
        let (range, source) = match self {
            Scope::All => return Ok(true),
            Scope::Listed(keys) => {
                return Ok(keys.binary_search_by(|k| k.as_str().cmp(text)).is_ok())
            }
            Scope::Keys { range, source } => (range, source),
        };
        let Ok(key) = serde_json::from_str::<Vec<serde_json::Value>>(text) else {
            return Ok(false);
        };
        // A key of another kind than the bounds is outside the range.
        if range.contains(&key) != Ok(true) {
            return Ok(false);
        }
        if key.iter().all(|v| v.is_i64() || v.is_u64()) {
            return Ok(true);
        }
        // Text: the database orders it by its collation, ferry by bytes, and
        // the two may place a key at the range's edge differently (as may a
        // fraction, compared here as a float). Only a key the source holds
        // under no order is a delete.
        let point = Subset {
            predicate: None,
            keys: Some(KeyRange {
                from: Some(key.clone()),
                to: Some(key),
            }),
            chunk: None,
            listed: None,
        };
        let mut rows = source.scan(Scan::Subset(&point)).await?;
        Ok(rows.try_next().await?.is_none())
    }
}

/// Merges `rows` with the ledger: commits the changes and, within `scope`,
/// the deletes, guarded by `max_delete_ratio`.
pub(super) async fn compare(
    mut chunker: Chunker<'_>,
    rows: RowStream,
    max_delete_ratio: f64,
    scope: &Scope<'_>,
) -> Result<DetectReport, DetectError> {
    if chunker.skip_lookups {
        // First run, or --full: every object is new, and nothing is deleted.
        chunker.consume(rows, false).await?;
        return Ok(chunker.report);
    }
    let (scan, objects, all_integer) = sort_scan(&mut chunker, rows).await?;
    // A part of the ledger serves only when it holds every key the scan
    // returned: each found there is then an update, a supersession seen.
    let part = match all_integer {
        true => scope.integer_bounds(),
        false => None,
    };
    let deletes = merge(&mut chunker, scan, &objects, scope, part).await?;
    drop(objects);
    finish(chunker, deletes, max_delete_ratio, scope).await
}

/// Guards the merge's deletes (`max_delete_ratio`, an empty source) and
/// enqueues them, or counts them in a dry run.
pub(super) async fn finish(
    mut chunker: Chunker<'_>,
    deletes: DeleteSpill,
    max_delete_ratio: f64,
    scope: &Scope<'_>,
) -> Result<DetectReport, DetectError> {
    let d = chunker.d;
    let present = match scope {
        // A few keys of the table: its deletes weigh against the whole.
        Scope::Listed(_) => d.store.live_count(&d.job.name).await?.max(0) as u64,
        _ => chunker.matched_live + deletes.count(),
    };
    if !d.job.ops.delete {
        chunker.report.left_out += deletes.count();
        return Ok(chunker.report);
    }
    // Deletes the rules ignore remove nothing from the target: no guard.
    let deletes_remove = d.job.rules.deletes != crate::config::Deletes::Ignore
        || d.job.target.mode == crate::config::Mode::Mirror;
    if deletes.count() > 0 && deletes_remove && !d.opts.allow_mass_delete {
        if chunker.report.scanned == 0 {
            return Err(DetectError::EmptySource { present });
        }
        let ratio = deletes.count() as f64 / present as f64;
        if ratio > max_delete_ratio {
            return Err(DetectError::MassDelete {
                deletes: deletes.count(),
                present,
                percent: ratio * 100.0,
                ratio: max_delete_ratio,
            });
        }
    }
    if d.opts.dry_run {
        chunker.report.deletes = deletes.count();
        for line in deletes.into_lines()?.take(d.opts.sample) {
            // `DeleteSpill::push` writes a one-byte flag before the key.
            chunker
                .report
                .samples
                .deletes
                .push(line?.split_at(1).1.to_string());
        }
        return Ok(chunker.report);
    }
    enqueue_deletes(&mut chunker, deletes).await?;
    Ok(chunker.report)
}

/// Reads the whole source: each object's compact JSON into the object spill,
/// its key text, content hash and place in the spill into the external sorter.
/// The sorted scan, and whether every key in it is one integer that fits
/// an `i64` (what a part of the ledger read by integer range can match).
async fn sort_scan(
    chunker: &mut Chunker<'_>,
    mut rows: RowStream,
) -> Result<(Merged, SpilledObjects, bool), DetectError> {
    let mut all_integer = true;
    let mut sorter = Sorter::new(SORT_MEMORY);
    let mut objects = ObjectSpill::new()?;
    let mut unreported = 0u64;
    let report_every = chunker.job.batch.size as u64;
    while let Some(row) = rows.try_next().await? {
        chunker.report.scanned += 1;
        chunker.report.read_whole += 1;
        unreported += 1;
        if let Some((_, key)) = chunker.keyed(&row) {
            all_integer &= is_integer_key(&key);
            let (json, hash) = row.object.into_json();
            let at = objects.push(&spilled(json.get(), row.source_hash))?;
            sorter.push(Entry { key, hash, at })?;
        }
        if unreported == report_every {
            chunker.scanned(unreported);
            unreported = 0;
        }
    }
    chunker.scanned(unreported);
    tracing::debug!(job = %chunker.job.name, runs = sorter.spilled_runs(), "diff scan sorted");
    Ok((sorter.finish()?, objects.finish()?, all_integer))
}

/// `[123]` or `[-5]`: one integer of at most 18 digits (always an `i64`).
fn is_integer_key(text: &str) -> bool {
    let Some(digits) = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .map(|t| t.strip_prefix('-').unwrap_or(t))
    else {
        return false;
    };
    (1..=18).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Walks the sorted scan and the ledger side by side: commits the upserts,
/// chunk by chunk, and returns the deletes.
async fn merge(
    chunker: &mut Chunker<'_>,
    mut scan: Merged,
    objects: &SpilledObjects,
    scope: &Scope<'_>,
    part: Option<(Option<i64>, Option<i64>)>,
) -> Result<DeleteSpill, DetectError> {
    let size = chunker.job.batch.size;
    let (store, job) = (chunker.store, &chunker.job.name);
    let mut ledger = match scope {
        Scope::Listed(keys) => store.ledger_walk_keys(job, keys.to_vec(), size),
        _ => ledger_part(store, job, size, part),
    };
    let mut deletes = DeleteSpill::new()?;
    let mut batch = upsert_batch();
    let mut started = Instant::now();
    let mut object = scan.next_entry()?;
    let mut known = ledger.next().await?;
    loop {
        match (object.take(), known.take()) {
            (None, None) => break,
            (Some(o), None) => {
                change(chunker, &mut batch, o, None, objects)?;
                object = scan.next_entry()?;
            }
            (None, Some((key, entry))) => {
                if !entry.deleted && scope.deleted(&key).await? {
                    deletes.push(&key, &entry)?;
                }
                known = ledger.next().await?;
            }
            (Some(o), Some((key, entry))) => match o.key.as_str().cmp(key.as_str()) {
                std::cmp::Ordering::Less => {
                    change(chunker, &mut batch, o, None, objects)?;
                    object = scan.next_entry()?;
                    known = Some((key, entry));
                }
                std::cmp::Ordering::Equal => {
                    change(chunker, &mut batch, o, Some(&entry), objects)?;
                    object = scan.next_entry()?;
                    known = ledger.next().await?;
                }
                std::cmp::Ordering::Greater => {
                    if !entry.deleted && scope.deleted(&key).await? {
                        deletes.push(&key, &entry)?;
                    }
                    object = Some(o);
                    known = ledger.next().await?;
                }
            },
        }
        if batch.items.len() >= size {
            let full = std::mem::replace(&mut batch, upsert_batch());
            chunker.commit(full, 0, started).await?;
            started = Instant::now();
        }
    }
    chunker.commit(batch, 0, started).await?;
    Ok(deletes)
}

fn upsert_batch() -> DetectedBatch {
    DetectedBatch {
        supersedes: Some(false),
        ..Default::default()
    }
}

/// The ledger's entries whose one integer key lies within `part` (every
/// entry when None; keys of other kinds come along, for the caller to place).
pub(super) fn ledger_part<'a>(
    store: &'a Store,
    job: &'a str,
    size: usize,
    part: Option<(Option<i64>, Option<i64>)>,
) -> LedgerWalk<'a> {
    match part {
        // A narrow range of integer keys: each of its keys looked up.
        Some((Some(lo), Some(hi))) if hi.abs_diff(lo) < ENUMERATED_KEYS => {
            let mut keys: Vec<String> = (lo..=hi).map(|k| format!("[{k}]")).collect();
            keys.sort_unstable();
            store.ledger_walk_keys(job, keys, size)
        }
        // A wide one: the state store leaves out the integer keys outside it.
        Some((lo, hi)) => {
            let within = IntegerKeys {
                lo: lo.unwrap_or(i64::MIN),
                hi: hi.unwrap_or(i64::MAX),
            };
            store.ledger_walk(job, size, Some(within))
        }
        None => store.ledger_walk(job, size, None),
    }
}

/// Adds the scanned object to `batch` when it differs from its ledger entry.
fn change(
    chunker: &mut Chunker<'_>,
    batch: &mut DetectedBatch,
    object: Entry,
    entry: Option<&LedgerEntry>,
    objects: &SpilledObjects,
) -> Result<(), DetectError> {
    if !chunker.changed(&object.key, entry, object.hash, &mut batch.supersedes) {
        return Ok(());
    }
    // Both were written by `sort_scan` from valid JSON values.
    let key = serde_json::from_str(&object.key).map_err(io::Error::from)?;
    let spilled = objects.read(object.at)?;
    let (json, source_hash) = unspilled(&spilled);
    let data = serde_json::from_slice(json).map_err(io::Error::from)?;
    let mut item = Item::upsert_json(key, data, object.hash);
    item.source_hash = source_hash;
    batch.items.push(item);
    batch.keys.push(object.key);
    Ok(())
}

/// An object as the scan spills it: its JSON, after `h` and the source's
/// hash of the row when there is one (JSON never starts with `h`).
fn spilled(json: &str, source_hash: Option<i64>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(json.len() + 9);
    if let Some(hash) = source_hash {
        bytes.push(b'h');
        bytes.extend_from_slice(&hash.to_le_bytes());
    }
    bytes.extend_from_slice(json.as_bytes());
    bytes
}

/// The inverse of [`spilled`].
fn unspilled(bytes: &[u8]) -> (&[u8], Option<i64>) {
    match bytes.split_first() {
        Some((b'h', rest)) if rest.len() >= 8 => {
            let (hash, json) = rest.split_at(8);
            // `split_at(8)` gives exactly eight bytes.
            let hash = i64::from_le_bytes(hash.try_into().expect("eight bytes"));
            (json, Some(hash))
        }
        _ => (bytes, None),
    }
}

/// Enqueues the deletes the merge found, a chunk at a time.
async fn enqueue_deletes(
    chunker: &mut Chunker<'_>,
    deletes: DeleteSpill,
) -> Result<(), DetectError> {
    let size = chunker.job.batch.size;
    let mut lines = deletes.into_lines()?;
    loop {
        let started = Instant::now();
        let mut batch = upsert_batch();
        for line in lines.by_ref().take(size) {
            let line = line?;
            // `DeleteSpill::push` writes a one-byte flag before the key.
            let (flag, text) = line.split_at(1);
            if flag == "1" {
                batch.supersedes = Some(true);
            }
            let key = serde_json::from_str(text).map_err(|e| StateError::Corrupt {
                url: "ledger".to_string(),
                detail: format!("job {}: key `{text}` is unreadable: {e}", chunker.job.name),
            })?;
            batch.items.push(Item::delete(key));
            batch.keys.push(text.to_string());
        }
        if batch.items.is_empty() {
            return Ok(());
        }
        chunker.report.deletes += batch.items.len() as u64;
        chunker.commit(batch, 0, started).await?;
    }
}

/// Live ledger keys the scan did not see, each after a one-byte flag telling
/// whether a version of it is still queued. (A key text is compact JSON: it
/// never holds a raw line break.)
pub(super) struct DeleteSpill {
    lines: LineSpill,
}

impl DeleteSpill {
    pub(super) fn new() -> io::Result<Self> {
        Ok(DeleteSpill {
            lines: LineSpill::new()?,
        })
    }

    pub(super) fn push(&mut self, key: &str, entry: &LedgerEntry) -> io::Result<()> {
        if entry.deleted {
            return Ok(());
        }
        let queued = entry.queued();
        let flag: &[u8] = if queued { b"1" } else { b"0" };
        self.lines.push(&[flag, key.as_bytes()])
    }

    pub(super) fn count(&self) -> u64 {
        self.lines.count()
    }

    fn into_lines(self) -> io::Result<io::Lines<BufReader<File>>> {
        self.lines.into_lines()
    }
}

#[cfg(test)]
mod tests {
    use super::{is_integer_key, spilled, unspilled};

    #[test]
    fn a_spilled_object_keeps_its_source_hash() {
        for hash in [None, Some(0), Some(-7), Some(i64::MAX)] {
            let bytes = spilled("{\"id\":1}", hash);
            assert_eq!(unspilled(&bytes), (&b"{\"id\":1}"[..], hash));
        }
    }

    #[test]
    fn integer_keys_are_one_i64_and_nothing_else() {
        for yes in ["[0]", "[-5]", "[123456789012345678]"] {
            assert!(is_integer_key(yes), "{yes}");
        }
        for no in [
            "[]",
            "[-]",
            "[1.5]",
            "[\"5\"]",
            "[1,2]",
            "[1234567890123456789]",
            "5",
        ] {
            assert!(!is_integer_key(no), "{no}");
        }
    }
}
