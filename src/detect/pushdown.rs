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

use super::diff::{finish, DeleteSpill, Scope};
use super::{Chunker, DetectError, DetectReport};
use crate::connectors::{Hashed, RowStream, Scan, Subset};
use crate::model::{parse_hash, Item};
use crate::sort::{Entry, Merged, Sorter, SORT_MEMORY};
use crate::state::{DetectedBatch, LedgerEntry};

/// Runs the diff on `keys`, the source's (key, hash) scan.
pub(super) async fn compare(
    mut chunker: Chunker<'_>,
    keys: RowStream,
    max_delete_ratio: f64,
) -> Result<DetectReport, DetectError> {
    let scan = sort_hashes(&mut chunker, keys).await?;
    let deletes = merge(&mut chunker, scan).await?;
    finish(chunker, deletes, max_delete_ratio, &Scope::All).await
}

/// The source's (key text, hash) pairs in the ledger's key order.
async fn sort_hashes(
    chunker: &mut Chunker<'_>,
    mut rows: RowStream,
) -> Result<Merged, DetectError> {
    let mut sorter = Sorter::new(SORT_MEMORY);
    let mut unreported = 0u64;
    let report_every = chunker.job.batch.size as u64;
    while let Some(row) = rows.try_next().await? {
        chunker.report.scanned += 1;
        unreported += 1;
        if let (Some((_, key)), Some(hash)) = (chunker.keyed(&row), row.source_hash) {
            sorter.push(Entry { key, hash, at: 0 })?;
        }
        if unreported == report_every {
            chunker.scanned(unreported);
            unreported = 0;
        }
    }
    chunker.scanned(unreported);
    Ok(sorter.finish()?)
}

/// The most keys read whole by one query: each binds a value per key
/// column where the keys are not integers, and the servers bind at most
/// 65,535.
const KEYS_PER_READ: usize = 5000;

/// Walks the sorted hashes and the ledger side by side: reads and commits
/// the keys that may have changed, a batch at a time, and returns the deletes.
async fn merge(chunker: &mut Chunker<'_>, mut scan: Merged) -> Result<DeleteSpill, DetectError> {
    let size = chunker.job.batch.size;
    let (store, job) = (chunker.store, &chunker.job.name);
    let mut ledger = store.ledger_walk(job, size, None);
    let per_read = size.clamp(1, KEYS_PER_READ);
    let mut deletes = DeleteSpill::new()?;
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
                deletes.push(&key, &entry)?;
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
                    } else {
                        suspects.push(p.key, Some(entry));
                    }
                    pair = scan.next_entry()?;
                    known = ledger.next().await?;
                }
                std::cmp::Ordering::Greater => {
                    deletes.push(&key, &entry)?;
                    pair = Some(p);
                    known = ledger.next().await?;
                }
            },
        }
        if suspects.len() >= per_read {
            read_and_commit(chunker, std::mem::take(&mut suspects)).await?;
        }
    }
    read_and_commit(chunker, suspects).await?;
    Ok(deletes)
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
async fn read_and_commit(chunker: &mut Chunker<'_>, suspects: Suspects) -> Result<(), DetectError> {
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
            continue;
        };
        let entry = entries.get(&text).copied().flatten();
        let hash = parse_hash(&item.hash);
        if chunker.changed(&text, entry.as_ref(), hash, &mut batch.supersedes) {
            batch.items.push(item);
            batch.keys.push(text);
        } else if let (Some(entry), Some(source_hash)) = (entry, item.source_hash) {
            known.push((text, entry.detected_hash, source_hash));
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
