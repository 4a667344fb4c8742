//! `ferry resync`: re-reads a part of the source (rows matching a
//! predicate, keys in a range, or all) and resends every object in it,
//! whatever the ledger says was written, so a target that drifted is
//! rewritten under the job's rules. Within a key range (or the whole
//! source), a live ledger key the source no longer holds is a delete,
//! guarded as a diff's (a text key only once the source confirms it holds
//! it under no order); a predicate cannot be tested on a row that is gone,
//! so a resync by `--where` looks for no deletes. The watermark does not
//! move: a part of the source says nothing about where the rest stands.
use super::diff::{self, Scope};
use super::{Chunker, DetectError, DetectReport, Detection};
use crate::config::{Detect, DEFAULT_MAX_DELETE_RATIO};
use crate::connectors::{ConnectorError, Scan, Subset};

pub async fn detect(d: Detection<'_>) -> Result<DetectReport, DetectError> {
    let whole = Subset::default();
    let subset = d.subset.unwrap_or(&whole);
    let max_delete_ratio =
        match d.job.detect {
            Detect::Outbox => return Err(ConnectorError::failed(
                &d.source.describe(),
                "resync",
                "an outbox or queue holds changes, not the objects: there is nothing to re-read",
            )
            .into()),
            Detect::Diff { max_delete_ratio } => max_delete_ratio,
            Detect::Cursor { .. } => DEFAULT_MAX_DELETE_RATIO,
        };
    let mut chunker = Chunker::new(d).start().await?;
    chunker.resend = true;
    let rows = super::diff::scan_for_diff(d.job, d.source, Scan::Subset(subset)).await?;
    if subset.predicate.is_some() {
        chunker.consume(rows, false).await?;
        return Ok(chunker.report);
    }
    let listed: Option<Vec<String>> = subset.listed.as_ref().map(|keys| {
        let mut texts: Vec<String> = keys.iter().map(|k| crate::model::key_text(k)).collect();
        texts.sort_unstable();
        texts
    });
    let scope = match (&listed, &subset.keys) {
        (Some(texts), _) => Scope::Listed(texts),
        (None, None) => Scope::All,
        (None, Some(range)) => Scope::Keys {
            range,
            source: d.source,
        },
    };
    diff::compare(chunker, rows, max_delete_ratio, &scope).await
}
