//! RabbitMQ (AMQP 0-9-1, lapin). As target: each change published as a
//! persistent message with publisher confirms — an item counts as delivered
//! only once the broker confirmed it. As source: a queue consumed with
//! manual acks, each message acknowledged only after its change is durably
//! enqueued in the state store.
mod source;
mod target;

pub use source::AmqpSource;
pub use target::AmqpTarget;
