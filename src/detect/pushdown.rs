//! The diff with hashes its source computes: the source's database hashes
//! every row and hands over only (key, hash) pairs, which are sorted and
//! merged with the ledger as the full scan's objects are. A key whose hash
//! equals the one its ledger entry recorded is unchanged and costs nothing
//! more; every other key (new, changed, or one whose source hash the ledger
//! does not know) is read whole, a batch of keys at a time, and judged by
//! its content hash exactly as the full scan judges it. So the rows that
//! leave the source are the changed ones, and a ledger written before the
//! source hashed (or by an echo mark) costs one whole read of its keys.
use std::collections::HashMap;
use std::time::Instant;

use futures::TryStreamExt;
use serde_json::Value;

use super::diff::{ledger_part, DeleteSpill};
use super::ranges::{self, integer_key, Tally, ROWS_PER_BUCKET};
use super::{Chunker, DetectError};
use crate::connectors::{BucketDigest, ConnectorError, Hashed, KeyRange, RowStream, Scan, Subset};
use crate::model::{parse_hash, Item};
use crate::sort::{Entry, Merged, Sorter, SORT_MEMORY};
use crate::state::{DetectedBatch, LedgerEntry, RangeDigests, Store};

/// What a pushdown diff leaves for its caller: the deletes to guard, and
/// the range digests to record once they are enqueued.
pub(super) struct Compared {
    pub deletes: DeleteSpill,
    pub digests: Option<Digests>,
}

/// Buckets' digests as the ledger will hold them.
pub(super) struct Digests {
    width: i64,
    buckets: Vec<BucketDigest>,
    mostly_changed: bool,
}

impl Digests {
    /// Records them: only once the run's deletes are enqueued, as a bucket
    /// whose refused or left out deletes the ledger still holds live would
    /// otherwise look unchanged from then on.
    pub(super) async fn save(self, store: &Store, job: &str) -> Result<(), DetectError> {
        let buckets: Vec<(i64, i64, i64)> = self
            .buckets
            .iter()
            .map(|d| (d.bucket, d.rows, d.sum))
            .collect();
        store
            .save_range_digests(job, self.width, &buckets, self.mostly_changed)
            .await?;
        Ok(())
    }
}

/// Runs the diff on the source's (key, hash) pairs: of the buckets whose
/// range digests changed, or of every row. None when the source cannot
/// hash its rows.
pub(super) async fn compare(chunker: &mut Chunker<'_>) -> Result<Option<Compared>, DetectError> {
    let d = chunker.d;
    let job = &d.job.name;
    let dry = chunker.opts.dry_run;
    let recorded = d.store.range_digests(job).await?;
    let plan = ranges::plan(d.source, &recorded).await?;
    let mut deletes = DeleteSpill::new()?;
    let whole = plan.is_none();
    let tally = match plan {
        Some(plan) => {
            chunker.keeps_digests = !dry;
            if !dry {
                d.store
                    .forget_range_digests(job, Some(&plan.changed))
                    .await?;
            }
            // Rows of unchanged buckets: scanned by their digests, unchanged.
            chunker.report.scanned += plan.unchanged_rows;
            chunker.report.unchanged += plan.unchanged_rows;
            chunker.matched_live += plan.unchanged_rows;
            chunker.scanned(plan.unchanged_rows);
            let mut tally = Tally::new(Some(plan.width));
            for (lo, hi) in plan.ranges {
                let part = Subset {
                    keys: Some(KeyRange {
                        from: Some(vec![Value::from(lo)]),
                        to: Some(vec![Value::from(hi)]),
                    }),
                    ..Subset::default()
                };
                let Some(rows) = d
                    .source
                    .scan_hashed(Scan::Subset(&part), Hashed::Keys)
                    .await?
                else {
                    return Err(ConnectorError::failed(
                        &d.source.describe(),
                        "diff",
                        "the source summed its rows' hashes but did not hash them",
                    )
                    .into());
                };
                let (sorted, _) = sort_hashes(chunker, rows).await?;
                merge(chunker, sorted, Some((lo, hi)), &mut deletes, &mut tally).await?;
            }
            tally
        }
        None => {
            let Some(rows) = d.source.scan_hashed(Scan::All, Hashed::Keys).await? else {
                return Ok(None);
            };
            chunker.keeps_digests = !dry;
            if !dry {
                d.store.forget_range_digests(job, None).await?;
            }
            let (sorted, span) = sort_hashes(chunker, rows).await?;
            let width = span.map(|(min, max, count)| bucket_width(&recorded, min, max, count));
            let mut tally = Tally::new(width);
            merge(chunker, sorted, None, &mut deletes, &mut tally).await?;
            tally
        }
    };
    let digests = tally.width().filter(|_| !dry).map(|width| {
        let (buckets, differ) = tally.digests(&recorded);
        // Known only when every bucket was read, at the width recorded.
        let mostly_changed = whole && recorded.width == Some(width) && differ * 2 > buckets.len();
        Digests {
            width,
            buckets,
            mostly_changed,
        }
    });
    Ok(Some(Compared { deletes, digests }))
}

/// The recorded width while its buckets still hold about
/// [`ROWS_PER_BUCKET`] rows each (digests stay comparable from run to
/// run), else one fitted to the keys `min..=max`, `count` of them.
fn bucket_width(recorded: &RangeDigests, min: i64, max: i64, count: u64) -> i64 {
    let span = (i128::from(max) - i128::from(min) + 1).max(1);
    let per_bucket = |width: i64| count as i128 * i128::from(width) / span;
    match recorded.width {
        Some(width)
            if (i128::from(ROWS_PER_BUCKET / 4)..=i128::from(4 * ROWS_PER_BUCKET))
                .contains(&per_bucket(width)) =>
        {
            width
        }
        _ => ranges::width_for(min, max, count),
    }
}

/// The source's (key text, hash) pairs in the ledger's key order, and the
/// span of the keys when each is one integer: (min, max, count).
async fn sort_hashes(
    chunker: &mut Chunker<'_>,
    mut rows: RowStream,
) -> Result<(Merged, Option<(i64, i64, u64)>), DetectError> {
    let mut sorter = Sorter::new(SORT_MEMORY);
    let mut unreported = 0u64;
    let report_every = chunker.job.batch.size as u64;
    let mut span: Option<(i64, i64, u64)> = Some((i64::MAX, i64::MIN, 0));
    while let Some(row) = rows.try_next().await? {
        chunker.report.scanned += 1;
        chunker.report.read_hashes += 1;
        unreported += 1;
        let Some(hash) = row.source_hash else {
            // Left out, the key would look deleted.
            let source = chunker.d.source.describe();
            return Err(
                ConnectorError::failed(&source, "diff", "a row came without its hash").into(),
            );
        };
        if let Some((values, key)) = chunker.keyed(&row) {
            span = match (span, values.as_slice()) {
                (Some((lo, hi, n)), [Value::Number(v)]) => {
                    v.as_i64().map(|v| (lo.min(v), hi.max(v), n + 1))
                }
                _ => None,
            };
            sorter.push(Entry { key, hash, at: 0 })?;
        }
        if unreported == report_every {
            chunker.scanned(unreported);
            unreported = 0;
        }
    }
    chunker.scanned(unreported);
    let span = span.filter(|(_, _, n)| *n > 0);
    Ok((sorter.finish()?, span))
}

/// The most keys read whole by one query: each binds a value per key
/// column where the keys are not integers, and the servers bind at most
/// 65,535.
const KEYS_PER_READ: usize = 5000;

/// Walks the sorted hashes and the ledger (within the integer keys `part`)
/// side by side: reads and commits the keys that may have changed, a batch
/// at a time, and adds the deletes to `deletes`.
async fn merge(
    chunker: &mut Chunker<'_>,
    mut scan: Merged,
    part: Option<(i64, i64)>,
    deletes: &mut DeleteSpill,
    tally: &mut Tally,
) -> Result<(), DetectError> {
    let size = chunker.job.batch.size;
    let (store, job) = (chunker.store, &chunker.job.name);
    let mut ledger = ledger_part(store, job, size, part.map(|(lo, hi)| (Some(lo), Some(hi))));
    // A key the walk brings that the part does not hold (another kind of
    // key) is no delete of this part.
    let within = |key: &str| {
        part.is_none_or(|(lo, hi)| integer_key(key).is_some_and(|k| (lo..=hi).contains(&k)))
    };
    let per_read = size.clamp(1, KEYS_PER_READ);
    let mut suspects = Suspects::default();
    let mut pair = scan.next_entry()?;
    let mut known = ledger.next().await?;
    loop {
        match (pair.take(), known.take()) {
            (None, None) => break,
            (Some(p), None) => {
                suspects.push(p.key, None);
                pair = scan.next_entry()?;
            }
            (None, Some((key, entry))) => {
                if within(&key) {
                    deletes.push(&key, &entry)?;
                }
                known = ledger.next().await?;
            }
            (Some(p), Some((key, entry))) => match p.key.as_str().cmp(key.as_str()) {
                std::cmp::Ordering::Less => {
                    suspects.push(p.key, None);
                    pair = scan.next_entry()?;
                    known = Some((key, entry));
                }
                std::cmp::Ordering::Equal => {
                    if unchanged(&entry, p.hash) {
                        chunker.matched_live += 1;
                        chunker.report.unchanged += 1;
                        tally.add(&p.key, Some(p.hash));
                    } else {
                        suspects.push(p.key, Some(entry));
                    }
                    pair = scan.next_entry()?;
                    known = ledger.next().await?;
                }
                std::cmp::Ordering::Greater => {
                    if within(&key) {
                        deletes.push(&key, &entry)?;
                    }
                    pair = Some(p);
                    known = ledger.next().await?;
                }
            },
        }
        if suspects.len() >= per_read {
            read_and_commit(chunker, std::mem::take(&mut suspects), tally).await?;
        }
    }
    read_and_commit(chunker, suspects, tally).await
}

/// Whether the source's hash says the key's row is the one last detected.
fn unchanged(entry: &LedgerEntry, source_hash: i64) -> bool {
    !entry.deleted && entry.source_hash == Some(source_hash)
}

/// Keys whose rows are read whole, with their ledger entries.
#[derive(Default)]
struct Suspects {
    entries: HashMap<String, Option<LedgerEntry>>,
    /// Their texts and values, in key order.
    texts: Vec<String>,
    keys: Vec<Vec<Value>>,
}

impl Suspects {
    fn push(&mut self, key: String, entry: Option<LedgerEntry>) {
        // Written by `Chunker::keyed` from a key's values.
        if let Ok(values) = serde_json::from_str(&key) {
            self.keys.push(values);
            self.entries.insert(key.clone(), entry);
            self.texts.push(key);
        }
    }

    fn len(&self) -> usize {
        self.keys.len()
    }
}

/// Reads the suspects' rows from the source, each with its hash, and
/// commits those whose content changed; the others' source hashes are
/// recorded, so that the next run finds them unchanged by hash alone. A key
/// the source no longer holds is left to the next run's delete.
async fn read_and_commit(
    chunker: &mut Chunker<'_>,
    suspects: Suspects,
    tally: &mut Tally,
) -> Result<(), DetectError> {
    if suspects.keys.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let Suspects {
        entries,
        texts,
        keys,
    } = suspects;
    let subset = Subset {
        listed: Some(keys),
        ..Subset::default()
    };
    let source = chunker.d.source;
    let mut rows = match source
        .scan_hashed(Scan::Subset(&subset), Hashed::Whole)
        .await?
    {
        Some(rows) => rows,
        None => source.scan(Scan::Subset(&subset)).await?,
    };
    // Later rows with the same key win, as in a chunk of the full scan.
    let mut read: HashMap<String, Item> = HashMap::with_capacity(entries.len());
    while let Some(row) = rows.try_next().await? {
        chunker.report.read_whole += 1;
        if let Some((key, text)) = chunker.keyed(&row) {
            if entries.contains_key(&text) {
                let mut item = Item::upsert_object(key, row.object);
                item.source_hash = row.source_hash;
                read.insert(text, item);
            }
        }
    }
    let mut batch = DetectedBatch {
        supersedes: Some(false),
        ..Default::default()
    };
    let mut known = Vec::new();
    for text in texts {
        let Some(item) = read.remove(&text) else {
            // Gone before it was read: the next run finds it deleted.
            tally.add(&text, None);
            continue;
        };
        let entry = entries.get(&text).copied().flatten();
        let hash = parse_hash(&item.hash);
        let same = entry.filter(|e| !e.deleted && e.detected_hash == hash);
        if chunker.changed(&text, entry.as_ref(), hash, &mut batch.supersedes) {
            tally.add(&text, item.source_hash);
            batch.items.push(item);
            batch.keys.push(text);
        } else if let (Some(entry), Some(source_hash)) = (same, item.source_hash) {
            tally.add(&text, Some(source_hash));
            known.push((text, entry.detected_hash, source_hash));
        } else {
            // A change `[detect] ops` leaves out: not recorded, so that it
            // is seen again, and its bucket read again.
            tally.add(&text, None);
        }
    }
    if !chunker.opts.dry_run {
        chunker
            .store
            .record_source_hashes(&chunker.job.name, &known)
            .await?;
    }
    chunker.commit(batch, 0, started).await
}
