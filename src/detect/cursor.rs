//! The cursor strategy: read rows whose cursor is `>=` the watermark minus
//! `lag`, in cursor order. Rows at the boundary or re-read inside the lag
//! window are recognised by their ledger hash, so ties and late commits are
//! sent exactly once. Rows with a NULL cursor are compared by hash every run.
use std::time::Duration;

use super::{Chunker, DetectError, DetectOptions, DetectReport};
use crate::config::Job;
use crate::connectors::{Scan, Source};
use crate::state::Store;

pub async fn detect(
    job: &Job,
    source: &dyn Source,
    store: &Store,
    run_id: i64,
    opts: DetectOptions,
    column: &str,
    lag: Duration,
) -> Result<DetectReport, DetectError> {
    let from = if opts.full {
        None
    } else {
        store.watermark(&job.name).await?
    };
    let mut chunker = Chunker::new(job, store, run_id, opts, false)
        .start()
        .await?;
    let rows = source
        .scan(Scan::Since {
            column,
            from: from.as_deref(),
            lag,
        })
        .await?;
    chunker.consume(rows, true).await?;

    let before = chunker.report.scanned;
    let rows = source.scan(Scan::NullCursor { column }).await?;
    chunker.consume(rows, false).await?;
    chunker.report.null_cursor = chunker.report.scanned - before;
    if chunker.report.null_cursor > 0 {
        tracing::warn!(
            job = %job.name,
            rows = chunker.report.null_cursor,
            "objects with a NULL cursor `{column}` are compared by content hash on every run; give them a cursor value to make runs cheaper"
        );
    }
    Ok(chunker.report)
}
