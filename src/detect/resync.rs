//! `ferry resync`: re-reads a part of the source (rows matching a
//! predicate, keys in a range, or all) and resends every object in it,
//! whatever the ledger says was written, so a target that drifted is
//! rewritten under the job's rules. The watermark does not move: a part of
//! the source says nothing about where the rest of it stands.
use super::{Chunker, DetectError, DetectReport, Detection};
use crate::connectors::{ConnectorError, Scan, Subset};

pub async fn detect(d: Detection<'_>) -> Result<DetectReport, DetectError> {
    let whole = Subset::default();
    let subset = d.subset.unwrap_or(&whole);
    if d.job.detect == crate::config::Detect::Outbox {
        return Err(ConnectorError::failed(
            &d.source.describe(),
            "resync",
            "an outbox or queue holds changes, not the objects: there is nothing to re-read",
        )
        .into());
    }
    let mut chunker = Chunker::new(d).start().await?;
    chunker.resend = true;
    let rows = d.source.scan(Scan::Subset(subset)).await?;
    chunker.consume(rows, false).await?;
    Ok(chunker.report)
}
