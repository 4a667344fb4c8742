//! An HTTP API as target: each item as the JSON envelope, a batch in one
//! request (`{"items": […]}`) or one request per item, each with an
//! `Idempotency-Key`, so a resent item is recognised by the API.
mod target;

pub use target::HttpTarget;
