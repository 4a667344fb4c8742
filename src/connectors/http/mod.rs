//! HTTP APIs. As target: each item as the JSON envelope, a batch in one
//! request (`{"items": […]}`) or one request per item, each with an
//! `Idempotency-Key`, so a resent item is recognised by the API. As source:
//! a paginated JSON API read page by page (diff strategy).
mod config;
mod source;
mod target;

pub use config::{HttpAuth, HttpSourceConfig, HttpTargetConfig};
pub use source::HttpSource;
pub use target::HttpTarget;

use crate::config::registry::{Abilities, Reads, SourceSpec, Spec, TargetSpec, Writes};
use crate::connectors::Connector;

/// What `type = "http"` is, for the configuration's checks.
pub const CONNECTOR: Connector = Connector {
    spec: Spec {
        kind: "http",
        schemes: &["http", "https"],
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
            abilities: Abilities {
                images: false,
                generates_keys: false,
                refuses_items: true,
            },
        }),
    },
    open_source: Some(|job| Ok(Box::new(HttpSource::new(job)?))),
    open_target: Some(|job, _| Ok(Box::new(HttpTarget::new(job)?))),
};

use std::time::Duration;

use crate::connectors::ConnectorError;

fn authorize(request: reqwest::RequestBuilder, auth: Option<&HttpAuth>) -> reqwest::RequestBuilder {
    match auth {
        Some(HttpAuth::Bearer(token)) => request.bearer_auth(token),
        Some(HttpAuth::Basic { user, password }) => request.basic_auth(user, Some(password)),
        None => request,
    }
}

/// A failed exchange: a refused connection or a timeout is "unreachable".
fn transport(system: &str, object: &str, e: reqwest::Error) -> ConnectorError {
    let unreachable = e.is_connect() || e.is_timeout();
    // reqwest's own message is generic; its causes say what happened.
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        detail.push_str(": ");
        detail.push_str(&c.to_string());
        cause = c.source();
    }
    let detail = crate::redact::text(&detail);
    if unreachable {
        ConnectorError::Unreachable {
            system: system.to_string(),
            detail,
        }
    } else {
        ConnectorError::Failed {
            system: system.to_string(),
            object: object.to_string(),
            detail,
        }
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    line.chars().take(200).collect()
}

/// `Retry-After` in seconds (the HTTP-date form is read as "soon": 1 s).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    Some(match value.trim().parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => Duration::from_secs(1),
    })
}
