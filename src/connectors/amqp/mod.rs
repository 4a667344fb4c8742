//! RabbitMQ (AMQP 0-9-1, lapin). As target: each change published as a
//! persistent message with publisher confirms — an item counts as delivered
//! only once the broker confirmed it. As source: a queue consumed with
//! manual acks, each message acknowledged only after its change is durably
//! enqueued in the state store.
mod source;
mod target;

pub use source::AmqpSource;
pub use target::AmqpTarget;

use crate::config::registry::{
    check_options, Abilities, Reads, SourceSpec, Spec, TargetSpec, Writes,
};
use crate::connectors::Connector;

/// What `type = "amqp"` is, for the configuration's checks.
pub const CONNECTOR: Connector = Connector {
    spec: Spec {
        kind: "amqp",
        schemes: &["amqp", "amqps"],
        pooled: false,
        source: Some(SourceSpec {
            reads: Reads::Queue,
            outbox_table: false,
            keys: &["url", "queue", "prefetch"],
            options: Some(source::check_source),
        }),
        target: Some(TargetSpec {
            writes: Writes::Records,
            keys: &["url", "exchange", "routing_key"],
            options: Some(check_options::<target::AmqpOptions>),
            abilities: Abilities::NONE,
        }),
    },
    open_source: Some(|job| Ok(Box::new(AmqpSource::new(&job.source, job.batch.size)?))),
    open_target: Some(|job, _| Ok(Box::new(AmqpTarget::new(job)?))),
};

use super::ConnectorError;

/// A lapin failure: a missing exchange or queue (`NOT_FOUND`) is a missing
/// object; anything else means the connection or channel is gone, and what
/// was not confirmed or acknowledged is sent again.
fn error(system: &str, object: &str, e: lapin::Error) -> ConnectorError {
    let detail = crate::redact::text(&e.to_string());
    // Wrong credentials or a virtual host the user may not use.
    if detail.contains("ACCESS_REFUSED") || detail.contains("NOT_ALLOWED") {
        return ConnectorError::refused(system, detail);
    }
    if detail.contains("NOT_FOUND") {
        ConnectorError::MissingObject {
            system: system.to_string(),
            object: object.to_string(),
            detail,
        }
    } else {
        ConnectorError::Unreachable {
            system: system.to_string(),
            detail,
        }
    }
}
