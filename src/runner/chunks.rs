//! The reader the drain is given for snapshot chunk tasks: a chunk task's
//! part of the source, read from the job's source as objects.
use async_trait::async_trait;
use futures::TryStreamExt;

use crate::config::Job;
use crate::connectors::{self, ConnectorError, Scan, Source, Subset};
use crate::detect::scan_for_diff;
use crate::model::Item;
use crate::sync::{ChunkReader, ChunkRow, ChunkRows};

pub(super) struct SourceChunks {
    source: Box<dyn Source>,
    job: Job,
}

impl SourceChunks {
    pub(super) fn open(job: &Job) -> Result<SourceChunks, ConnectorError> {
        Ok(SourceChunks {
            source: connectors::source(job)?,
            job: job.clone(),
        })
    }
}

#[async_trait]
impl ChunkReader for SourceChunks {
    async fn read(&self, chunk: &str) -> Result<ChunkRows, ConnectorError> {
        let part: Subset = serde_json::from_str(chunk).map_err(|e| {
            ConnectorError::failed(
                &self.source.describe(),
                "snapshot",
                format!("a chunk task's part of the source is unreadable: {e}"),
            )
        })?;
        let rows = scan_for_diff(&self.job, self.source.as_ref(), Scan::Subset(&part)).await?;
        let key = self.job.source.key.clone();
        Ok(Box::pin(rows.map_ok(
            move |row| match row.object.key(&key) {
                Ok(values) => {
                    let mut item = Item::upsert_object(values, row.object);
                    item.source_hash = row.source_hash;
                    ChunkRow::Item(item)
                }
                Err(column) => ChunkRow::Invalid(format!(
                    "an object has no value in key column `{column}`, so it cannot be synced: {}",
                    row.object.preview()
                )),
            },
        )))
    }
}
