//! The daemon's HTTP port (`[engine] metrics`, or `FERRY_METRICS`): `/metrics`, `/healthz`,
//! `/readyz`, and `POST /trigger/<job>` for webhooks.
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;

use super::Daemon;

/// The address to serve on: `FERRY_METRICS`, else `[engine] metrics`
/// (several daemons on one host share a config folder, each on its own
/// port), or why it is not an address.
pub fn address(configured: &str) -> Result<String, String> {
    match std::env::var("FERRY_METRICS") {
        Err(_) => Ok(configured.to_string()),
        Ok(addr) if addr.parse::<std::net::SocketAddr>().is_ok() => Ok(addr),
        Ok(addr) => Err(format!(
            "FERRY_METRICS = `{addr}` is not an address like \"0.0.0.0:9464\""
        )),
    }
}

pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/trigger/{job}", post(trigger))
        .with_state(daemon)
}

async fn metrics(State(d): State<Arc<Daemon>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        d.metrics.render(),
    )
}

/// Ready when the configuration is loaded and the state store answers.
async fn ready(State(d): State<Arc<Daemon>>) -> impl IntoResponse {
    match d.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("state store: {e}\n"),
        ),
    }
}

/// Disabled (404) unless `FERRY_TRIGGER_TOKEN` is set; then it needs
/// `Authorization: Bearer <token>`, compared in constant time.
async fn trigger(
    State(d): State<Arc<Daemon>>,
    Path(job): Path<String>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let Some(expected) = d.trigger_token.as_deref() else {
        return (
            StatusCode::NOT_FOUND,
            "triggering by HTTP is disabled (set FERRY_TRIGGER_TOKEN)\n".to_string(),
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        return (
            StatusCode::UNAUTHORIZED,
            "bad or missing bearer token\n".to_string(),
        );
    }
    if !d.config().jobs.contains_key(&job) {
        return (StatusCode::NOT_FOUND, format!("no job `{job}`\n"));
    }
    match d.store.request_trigger(&job).await {
        Ok(id) => (
            StatusCode::ACCEPTED,
            format!("{{\"id\":{id},\"job\":\"{job}\"}}\n"),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("state store: {e}\n"),
        ),
    }
}
