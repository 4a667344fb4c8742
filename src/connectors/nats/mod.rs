//! NATS JetStream (async-nats). As target: each change published on a
//! subject and acknowledged by the stream (`PubAck`), with `Nats-Msg-Id`
//! so the stream drops a resent one within its duplicate window. As source:
//! a durable pull consumer, each message acknowledged only after its change
//! is durably enqueued in the state store.
mod source;
mod target;

pub use source::NatsSource;
pub use target::NatsTarget;

use crate::config::registry::{
    check_options, Abilities, Reads, SourceSpec, Spec, TargetSpec, Writes,
};
use crate::connectors::Connector;

/// What `type = "nats"` is, for the configuration's checks.
pub const CONNECTOR: Connector = Connector {
    spec: Spec {
        kind: "nats",
        schemes: &["nats", "tls"],
        pooled: false,
        source: Some(SourceSpec {
            reads: Reads::Queue,
            outbox_table: false,
            keys: &["url", "stream", "consumer", "subject"],
            options: Some(check_options::<source::NatsSourceOptions>),
        }),
        target: Some(TargetSpec {
            writes: Writes::Records,
            keys: &["url", "subject", "stream"],
            options: Some(check_options::<target::NatsOptions>),
            abilities: Abilities::NONE,
        }),
    },
    open_source: Some(|job| Ok(Box::new(NatsSource::new(&job.source)?))),
    open_target: Some(|job, _| Ok(Box::new(NatsTarget::new(job)?))),
};

use super::ConnectorError;

fn system(url: &str) -> String {
    format!("nats {}", crate::redact::url(url))
}

/// Every NATS failure leaves the items unconfirmed: they are sent again.
fn unreachable(system: &str, e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Unreachable {
        system: system.to_string(),
        detail: crate::redact::text(&e.to_string()),
    }
}

/// A failed connect: refused credentials are for good (exit 78), anything
/// else means the server cannot be reached now.
fn connect_error(system: &str, e: async_nats::ConnectError) -> ConnectorError {
    let detail = crate::redact::text(&e.to_string());
    match e.kind() {
        async_nats::ConnectErrorKind::AuthorizationViolation
        | async_nats::ConnectErrorKind::Authentication => ConnectorError::refused(system, detail),
        _ => ConnectorError::Unreachable {
            system: system.to_string(),
            detail,
        },
    }
}
