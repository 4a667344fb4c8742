//! The snapshot lane's detection side: a first run, `run --once --full` or
//! `ferry resync` of a source that can split itself (SQL tables) does not
//! read it here. It records the snapshot and one chunk task per key range
//! in one state-store transaction; the drain re-reads and writes each
//! chunk (`sync::ChunkReader`). Once every chunk is done, a later pass
//! looks for deletes: live ledger keys of the scope that no chunk wrote.
use super::diff::Scope;
use super::{DetectError, DetectReport, Detection};
use crate::config::{Detect, DEFAULT_MAX_DELETE_RATIO};
use crate::connectors::{Split, Subset};
use crate::model::{key_text, Item};
use crate::state::{DetectedBatch, IntegerKeys, NewSnapshot, OpenSnapshot, StateError};

/// A snapshot split into chunk tasks.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    pub snapshot: i64,
    pub chunks: usize,
    pub rows: u64,
}

/// Splits `subset` of the source and queues its chunk tasks with the
/// snapshot's record; None when the source cannot split (it is read in
/// the per-item lane). A cursor job's first run records the cursor's
/// largest value as its watermark first, so that what changes while the
/// chunks run is read by the next run.
pub async fn start(
    d: Detection<'_>,
    subset: &Subset,
    first_run: bool,
) -> Result<Option<Started>, DetectError> {
    let Some(split) = split(d, subset).await? else {
        return Ok(None);
    };
    let watermark = match (&d.job.detect, first_run) {
        (Detect::Cursor { column, .. }, true) => d.source.max_cursor(column).await?,
        _ => None,
    };
    let per_chunk = d.job.snapshot.chunk_rows.min(split.rows.max(1)) as i64;
    let chunks = split
        .chunks
        .iter()
        .map(|chunk| {
            let part = Subset {
                chunk: Some(chunk.clone()),
                ..subset.clone()
            };
            Ok((serde_json::to_string(&part)?, per_chunk))
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()
        .map_err(|e| corrupt(d, e))?;
    let scope = serde_json::to_string(subset).map_err(|e| corrupt(d, e))?;
    let snapshot = d
        .store
        .start_chunked_snapshot(&NewSnapshot {
            job: &d.job.name,
            run_id: d.run_id,
            scope: &scope,
            chunks,
            rows: split.rows as i64,
            watermark,
            first_run,
        })
        .await?;
    let started = Started {
        snapshot,
        chunks: split.chunks.len(),
        rows: split.rows,
    };
    tracing::info!(job = %d.job.name, snapshot, chunks = started.chunks, rows = started.rows, "snapshot of {subset}: {} chunk task(s) queued", started.chunks);
    crate::metrics::snapshot_planned(&d.job.name, started.rows, started.chunks as u64);
    d.progress.expect(started.rows);
    Ok(Some(started))
}

/// The chunks of `subset`, when its job's snapshots go through chunk
/// tasks: a table source that splits itself, into a target that keeps rows.
/// A document target (a broker, an API, a file) knows a resent change by
/// its version, which a chunk read again would not keep: such jobs, and
/// `chunk_rows = 0`, queue their rows as items.
async fn split(d: Detection<'_>, subset: &Subset) -> Result<Option<Split>, DetectError> {
    let keeps_rows = crate::connectors::REGISTRY
        .spec(&d.job.target.kind)
        .and_then(|spec| spec.target.as_ref())
        .is_some_and(|target| target.writes.keeps_rows());
    // A list of keys (a verify's repair) is read by key, not in ranges.
    if d.job.snapshot.chunk_rows == 0
        || !keeps_rows
        || d.job.detect == Detect::Outbox
        || subset.listed.is_some()
    {
        return Ok(None);
    }
    Ok(d.source.split(subset, d.job.snapshot.chunk_rows).await?)
}

/// What a snapshot of `subset` would read (`ferry plan`): its chunk tasks
/// and rows; None when it would queue items instead.
pub async fn preview(d: Detection<'_>, subset: &Subset) -> Result<Option<Started>, DetectError> {
    Ok(split(d, subset).await?.map(|split| Started {
        snapshot: 0,
        chunks: split.chunks.len(),
        rows: split.rows,
    }))
}

/// Where a chunked snapshot stands: chunks left (nothing to do here; the
/// drain runs them), or all ended, when the deletes of its scope are
/// queued (guarded as a diff's) and the snapshot is closed.
pub async fn proceed(
    d: Detection<'_>,
    open: &OpenSnapshot,
    asked: bool,
) -> Result<(DetectReport, bool), DetectError> {
    let counts = d.store.chunk_counts(open.id).await?;
    if counts.open > 0 && asked {
        // A new snapshot asked for now would be dropped, or read the
        // source a second time beside this one.
        return Err(DetectError::SnapshotInProgress { left: counts.open });
    }
    if counts.open > 0 {
        tracing::warn!(job = %d.job.name, snapshot = open.id, left = counts.open, "a snapshot is in progress: {} chunk task(s) left, which this run helps with; changes are detected once it is done", counts.open);
        return Ok((DetectReport::default(), false));
    }
    let subset: Subset = serde_json::from_str(&open.scope).map_err(|e| corrupt(d, e))?;
    let mut report = DetectReport::default();
    if subset.predicate.is_none() {
        match deletes(d, open, &subset, &mut report).await {
            Err(e @ (DetectError::MassDelete { .. } | DetectError::EmptySource { .. })) => {
                d.store.finish_snapshot(open.id, "refused").await?;
                return Err(e);
            }
            other => other?,
        }
    }
    let outcome = if counts.dead > 0 { "failed" } else { "done" };
    if counts.dead > 0 {
        tracing::warn!(job = %d.job.name, snapshot = open.id, dead = counts.dead, "a snapshot ended with {} dead chunk task(s): their rows were not written (ferry status; ferry retry requeues them)", counts.dead);
    }
    d.store.finish_snapshot(open.id, outcome).await?;
    Ok((report, true))
}

/// Queues a delete of each live ledger key of the scope that no chunk
/// wrote or queued, once the delete guard allows it.
async fn deletes(
    d: Detection<'_>,
    open: &OpenSnapshot,
    subset: &Subset,
    report: &mut DetectReport,
) -> Result<(), DetectError> {
    let floor = open.version_floor.unwrap_or(i64::MAX);
    let scope = match &subset.keys {
        None => Scope::All,
        Some(range) => Scope::Keys {
            range,
            source: d.source,
        },
    };
    let within = subset
        .keys
        .as_ref()
        .and_then(|range| range.integer_bounds())
        .map(|(lo, hi)| IntegerKeys {
            lo: lo.unwrap_or(i64::MIN),
            hi: hi.unwrap_or(i64::MAX),
        });
    let mut gone = Vec::new();
    for text in d
        .store
        .keys_not_seen_since(&d.job.name, floor, within)
        .await?
    {
        if scope.deleted(&text).await? {
            gone.push(text);
        }
    }
    if gone.is_empty() {
        return Ok(());
    }
    let ratio = match d.job.detect {
        Detect::Diff { max_delete_ratio } => max_delete_ratio,
        _ => DEFAULT_MAX_DELETE_RATIO,
    };
    let deletes = gone.len() as u64;
    let present = deletes + open.rows.unwrap_or(0).max(0) as u64;
    if !d.opts.allow_mass_delete {
        if present == deletes {
            return Err(DetectError::EmptySource { present });
        }
        let share = deletes as f64 / present as f64;
        if share > ratio {
            return Err(DetectError::MassDelete {
                deletes,
                present,
                percent: share * 100.0,
                ratio,
            });
        }
    }
    for keys in gone.chunks(d.job.batch.size) {
        let mut batch = DetectedBatch {
            supersedes: Some(true),
            ..Default::default()
        };
        for text in keys {
            let key: Vec<serde_json::Value> =
                serde_json::from_str(text).map_err(|e| corrupt(d, e))?;
            batch.keys.push(key_text(&key));
            batch.items.push(Item::delete(key));
        }
        d.store
            .commit_detected(&d.job.name, d.run_id, &mut batch)
            .await?;
        report.tasks += 1;
    }
    report.deletes = deletes;
    Ok(())
}

fn corrupt(d: Detection<'_>, e: serde_json::Error) -> DetectError {
    DetectError::State(StateError::Corrupt {
        url: "ferry_snapshots".to_string(),
        detail: format!("job {}: a snapshot's scope is unreadable: {e}", d.job.name),
    })
}
