//! `mode = "mirror"`: after a clean run the target holds exactly the source's
//! keys. Deletes the source reported go through the queue like any change;
//! this removes the rest — target rows whose key the ledger never saw (rows
//! the target had before, or that someone else inserted). The target's keys
//! and the ledger's are sorted in bounded memory ([`crate::sort`]) and walked
//! side by side; the rows to remove wait in a temporary file until the
//! delete guard has seen them all.
use std::io;

use futures::TryStreamExt;
use serde_json::Value;

use super::Mapping;
use crate::config::{Detect, Job};
use crate::connectors::{ConnectorError, Target, WriteBatch};
use crate::model::Record;
use crate::sort::{Entry, LineSpill, ObjectSpill, Sorter, SORT_MEMORY};
use crate::state::{StateError, Store};

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Target(#[from] ConnectorError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("mirror: temporary sort file in {}: {source}", std::env::temp_dir().display())]
    Spill {
        #[from]
        source: io::Error,
    },
    #[error("mirror: refusing to delete {extra} of {rows} target rows whose key the source does not have ({percent:.1}% > max_delete_ratio {ratio}); rerun with --allow-mass-delete if this is intended")]
    MassDelete {
        extra: u64,
        rows: u64,
        percent: f64,
        ratio: f64,
    },
}

/// Deletes the target rows whose key the job's ledger does not hold; returns
/// how many. Call it only when the job's queue has drained cleanly.
pub async fn prune(
    job: &Job,
    store: &Store,
    target: &dyn Target,
    allow_mass_delete: bool,
) -> Result<u64, MirrorError> {
    let Some(mut keys) = target.keys().await? else {
        return Ok(0);
    };
    let mapping = Mapping::new(job);
    let mut in_target = Sorter::new(SORT_MEMORY / 2);
    let mut target_keys = ObjectSpill::new()?;
    let mut rows = 0u64;
    while let Some(key) = keys.try_next().await? {
        rows += 1;
        if let Some(source_key) = mapping.source_key(&key) {
            let at = target_keys.push(&serde_json::to_vec(&key).map_err(io::Error::from)?)?;
            in_target.push(Entry {
                key: loose_key(&source_key),
                hash: 0,
                at,
            })?;
        }
    }
    // The ledger holds keys as the source gave them, the target as it stores
    // them (a CSV's "7" is a table's 7): both sides sort by a form that
    // forgets the difference.
    let mut in_ledger = Sorter::new(SORT_MEMORY / 2);
    let mut ledger = store.ledger_in_key_order(&job.name, job.batch.size);
    while let Some((text, _)) = ledger.try_next().await? {
        let key: Vec<Value> = serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
            url: "ledger".to_string(),
            detail: format!("job {}: key `{text}` is unreadable: {e}", job.name),
        })?;
        in_ledger.push(Entry {
            key: loose_key(&key),
            hash: 0,
            at: 0,
        })?;
    }
    drop(ledger);
    let mut sorted = in_target.finish()?;
    let target_keys = target_keys.finish()?;
    let mut ledger = in_ledger.finish()?;
    let mut known = ledger.next_entry()?;
    let mut extra = LineSpill::new()?;
    while let Some(row) = sorted.next_entry()? {
        while known.as_ref().is_some_and(|k| k.key < row.key) {
            known = ledger.next_entry()?;
        }
        if known.as_ref().is_some_and(|k| k.key == row.key) {
            continue;
        }
        // Compact JSON of the key values: no raw line break.
        extra.push(&[&target_keys.read(row.at)?])?;
    }
    let count = extra.count();
    if count == 0 {
        return Ok(0);
    }
    let ratio = match job.detect {
        Detect::Diff { max_delete_ratio } => max_delete_ratio,
        _ => 0.0,
    };
    let share = count as f64 / rows as f64;
    if !allow_mass_delete && share > ratio {
        return Err(MirrorError::MassDelete {
            extra: count,
            rows,
            percent: share * 100.0,
            ratio,
        });
    }
    let mut lines = extra.into_lines()?;
    loop {
        let mut batch: Vec<Record> = Vec::with_capacity(job.batch.size);
        for line in lines.by_ref().take(job.batch.size) {
            // `prune` wrote each line from a JSON array just above.
            let key: Vec<Value> = serde_json::from_str(&line?).map_err(io::Error::from)?;
            batch.push(mapping.target_key_record(key));
        }
        if batch.is_empty() {
            break;
        }
        target
            .write(&WriteBatch {
                upserts: Vec::new(),
                deletes: batch.iter().collect(),
                ..Default::default()
            })
            .await?;
    }
    tracing::info!(job = %job.name, deleted = count, "mirror: removed target rows whose key the source does not have");
    Ok(count)
}

/// A key in a form where a value's text and its type do not matter: each
/// value as its text (a string without quotes), as a JSON array.
fn loose_key(key: &[Value]) -> String {
    let texts: Vec<String> = key
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    // A Vec of strings always serialises.
    serde_json::to_string(&texts).expect("strings serialise")
}
