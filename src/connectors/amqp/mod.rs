//! RabbitMQ (AMQP 0-9-1, lapin) as target: each change published as a
//! persistent message with publisher confirms — an item counts as delivered
//! only once the broker confirmed it.
mod target;

pub use target::AmqpTarget;
