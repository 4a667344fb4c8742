//! Redis Streams as a target: each change `XADD`ed to a stream as the
//! change envelope, with a per-item `id` (`<job>-<version>`). A resent item
//! (a retry after a crash between the write and its settlement) is not
//! added twice within `dedupe_window`: the add and a marker key per id
//! happen in one Lua script, atomically.
mod config;
mod target;

pub use target::RedisTarget;

use crate::config::registry::{Abilities, Spec, TargetSpec, Writes};
use crate::connectors::Connector;

/// What `type = "redis"` is, for the configuration's checks.
pub const CONNECTOR: Connector = Connector {
    spec: Spec {
        kind: "redis",
        schemes: &["redis", "rediss"],
        pooled: false,
        source: None,
        target: Some(TargetSpec {
            writes: Writes::Records,
            keys: config::KEYS,
            options: Some(config::check),
            abilities: Abilities::NONE,
        }),
    },
    open_source: None,
    open_target: Some(|job, _| Ok(Box::new(RedisTarget::new(job)?))),
};
