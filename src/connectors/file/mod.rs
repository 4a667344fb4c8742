//! Files. As a source: one CSV or JSONL file, streamed. As a target: one
//! file per run in a folder, written to `<name>.part` and renamed when the
//! run ends (a crashed run's part file is completed by the next).
mod config;
mod source;
mod target;
mod types;

pub use source::FileSource;
pub use target::FileTarget;
pub use types::{column_type, COLUMN_TYPES};

use crate::config::registry::{Abilities, Reads, SourceSpec, Spec, TargetSpec, Writes};
use crate::connectors::Connector;

/// What `type = "file"` is, for the configuration's checks.
pub const CONNECTOR: Connector = Connector {
    spec: Spec {
        kind: "file",
        schemes: &[],
        pooled: false,
        source: Some(SourceSpec {
            reads: Reads::Whole,
            outbox_table: false,
            keys: config::SOURCE_KEYS,
            options: Some(config::check_source),
        }),
        target: Some(TargetSpec {
            writes: Writes::Records,
            keys: config::TARGET_KEYS,
            options: Some(config::check_target),
            abilities: Abilities::NONE,
        }),
    },
    open_source: Some(|job| Ok(Box::new(FileSource::new(&job.source)?))),
    open_target: Some(|job, _| Ok(Box::new(FileTarget::new(job)?))),
};
