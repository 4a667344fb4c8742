//! `run --once` pushes its metrics to a Pushgateway before it exits (the
//! exporter's own push loop never pushes at exit): the whole registry, PUT to
//! `/metrics/job/ferry/sync_group/<group>`, with no `instance` label, as
//! Prometheus advises for batch jobs. A Pushgateway that is down is a warning.
use metrics_exporter_prometheus::PrometheusHandle;

/// The grouping key: `FERRY_PUSH_GROUP`, else the sorted job names joined by `+`.
pub fn group(jobs: &[String]) -> String {
    if let Some(g) = std::env::var("FERRY_PUSH_GROUP")
        .ok()
        .filter(|g| !g.is_empty())
    {
        return g;
    }
    let mut names = jobs.to_vec();
    names.sort();
    names.join("+")
}

pub async fn push(gateway: &str, group: &str, handle: &PrometheusHandle) {
    let url = format!(
        "{}/metrics/job/ferry/sync_group/{}",
        gateway.trim_end_matches('/'),
        url_segment(group)
    );
    let body = handle.render();
    let result = reqwest::Client::new()
        .put(&url)
        .header("Content-Type", "text/plain; version=0.0.4")
        .timeout(std::time::Duration::from_secs(5))
        .body(body)
        .send()
        .await;
    let shown = crate::redact::url(&url);
    match result {
        Ok(r) if r.status().is_success() => tracing::info!(url = %shown, "metrics pushed"),
        Ok(r) => {
            tracing::warn!(url = %shown, status = %r.status(), "the Pushgateway refused the metrics")
        }
        Err(e) => tracing::warn!(url = %shown, "could not push metrics: {e}"),
    }
}

/// Percent-encodes what a path segment cannot hold as is.
fn url_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'+' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
