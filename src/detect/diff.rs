//! The diff strategy: hash every object and compare with the ledger; keys the
//! ledger holds that the scan did not see are deletes, guarded by
//! `max_delete_ratio` and the empty-source check.
use super::{Chunker, DetectError, DetectReport, Detection};
use crate::connectors::Scan;
use crate::model::{Item, Op};
use crate::state::DetectedBatch;

pub async fn detect(d: Detection<'_>, max_delete_ratio: f64) -> Result<DetectReport, DetectError> {
    let (job, source, store, run_id, opts) = (d.job, d.source, d.store, d.run_id, d.opts);
    let present = if opts.full {
        0
    } else {
        store.live_count(&job.name).await? as u64
    };
    let mut chunker = Chunker::new(d, true).start().await?;
    let rows = source.scan(Scan::All).await?;
    chunker.consume(rows, false).await?;
    let mut report = chunker.report;
    if opts.full {
        return Ok(report);
    }

    let deletes = present.saturating_sub(chunker.matched_live);
    if deletes > 0 && !opts.allow_mass_delete {
        if report.scanned == 0 {
            return Err(DetectError::EmptySource { present });
        }
        let ratio = deletes as f64 / present as f64;
        if ratio > max_delete_ratio {
            return Err(DetectError::MassDelete {
                deletes,
                present,
                percent: ratio * 100.0,
                ratio: max_delete_ratio,
            });
        }
    }
    if opts.dry_run {
        report.deletes = deletes;
        return Ok(report);
    }

    let mut after = String::new();
    loop {
        let keys = store
            .unseen_keys(&job.name, run_id, &after, job.batch.size)
            .await?;
        let Some(last) = keys.last() else { break };
        after = last.clone();
        let mut batch = DetectedBatch::default();
        for text in keys {
            let key =
                serde_json::from_str(&text).map_err(|e| crate::state::StateError::Corrupt {
                    url: "ledger".to_string(),
                    detail: format!("job {}: key `{text}` is unreadable: {e}", job.name),
                })?;
            batch.items.push(Item {
                key,
                op: Op::Delete,
                version: 0,
                hash: crate::model::hash_hex(0),
                data: Default::default(),
                error: None,
            });
            batch.keys.push(text);
        }
        let started = std::time::Instant::now();
        let n = batch.items.len() as u64;
        report.deletes += n;
        store.commit_detected(&job.name, run_id, &mut batch).await?;
        crate::metrics::chunk_detected(&job.name, 0, 0, n, true, started.elapsed());
        report.tasks += 1;
    }
    Ok(report)
}
