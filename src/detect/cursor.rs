//! The cursor strategy: read rows whose cursor is `>=` the watermark minus
//! `lag`, in cursor order. Rows at the boundary or re-read inside the lag
//! window are recognised by their ledger hash, so ties and late commits are
//! sent exactly once. Rows with a NULL cursor are compared by hash every run.
use std::time::Duration;

use super::{Chunker, DetectError, DetectReport, Detection};
use crate::connectors::Scan;

pub async fn detect(
    d: Detection<'_>,
    column: &str,
    lag: Duration,
) -> Result<DetectReport, DetectError> {
    let (job, source, store, opts) = (d.job, d.source, d.store, d.opts);
    let from = if opts.full {
        None
    } else {
        store.watermark(&job.name).await?
    };
    let mut chunker = Chunker::new(d).start().await?;
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
