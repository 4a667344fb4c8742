use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{first_line, retry_after};
use super::{HttpAuth, HttpTargetConfig};
use crate::config::Job;
use crate::connectors::{ConnectorError, Target, WriteBatch, Written};
use crate::model::{Envelope, Item};

/// How long a write waits in place for a `Retry-After`; a longer one makes
/// the items retry later with the job's backoff instead.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// `Retry-After` waits per request before giving up for this attempt.
const MAX_WAITS: u32 = 5;

pub struct HttpTarget {
    client: reqwest::Client,
    url: String,
    method: reqwest::Method,
    batch: bool,
    results: Option<String>,
    auth: Option<HttpAuth>,
    job: String,
    system: String,
    children: Vec<String>,
    ignore_deletes: bool,
}

/// What one request came to.
enum Outcome {
    Ok(Option<Value>),
    Rejected(String),
}

impl HttpTarget {
    pub fn new(job: &Job) -> Result<HttpTarget, ConnectorError> {
        let url = job.target.url.clone().unwrap_or_default();
        let system = format!("http {}", crate::redact::url(&url));
        // Checked when the configuration loaded.
        let http = HttpTargetConfig::parse(&job.target.options).map_err(|problems| {
            let why: Vec<String> = problems.into_iter().map(|p| p.message).collect();
            ConnectorError::failed(&system, "config", why.join("; "))
        })?;
        let client = reqwest::Client::builder()
            .timeout(http.timeout)
            .build()
            .map_err(|e| ConnectorError::failed(&system, "client", e))?;
        Ok(HttpTarget {
            client,
            method: http.method,
            url,
            batch: http.batch,
            results: http.results,
            auth: http.auth,
            job: job.name.clone(),
            system,
            children: job.children.keys().cloned().collect(),
            ignore_deletes: crate::rules::keeps_deleted_rows(job),
        })
    }

    fn object(&self) -> String {
        format!("{} {}", self.method, crate::redact::url(&self.url))
    }

    /// Sends one body, waiting in place for a `Retry-After` of 429 or 503.
    async fn send(&self, body: &Value, idempotency_key: &str) -> Result<Outcome, ConnectorError> {
        let mut waits = 0;
        loop {
            let mut request = self
                .client
                .request(self.method.clone(), &self.url)
                .header("Idempotency-Key", idempotency_key)
                .json(body);
            request = super::authorize(request, self.auth.as_ref());
            let response = request.send().await.map_err(|e| self.transport(e))?;
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            {
                let wait = retry_after(response.headers());
                match wait {
                    Some(wait) if wait <= MAX_WAIT && waits < MAX_WAITS => {
                        waits += 1;
                        tracing::info!(job = %self.job, status = status.as_u16(), seconds = wait.as_secs_f64(), "the API asks to wait; waiting");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    _ => {
                        return Err(ConnectorError::Transient {
                            system: self.system.clone(),
                            object: self.object(),
                            detail: format!(
                                "{status}{}",
                                wait.map(|w| format!(", retry after {}s", w.as_secs()))
                                    .unwrap_or_default()
                            ),
                        })
                    }
                }
            }
            let text = response.text().await.map_err(|e| self.transport(e))?;
            return match status.as_u16() {
                200..=299 => Ok(Outcome::Ok(serde_json::from_str(&text).ok())),
                401 | 403 => Err(ConnectorError::refused(
                    &self.system,
                    format!("{status}: {}", first_line(&text)),
                )),
                408 => Err(ConnectorError::Transient {
                    system: self.system.clone(),
                    object: self.object(),
                    detail: status.to_string(),
                }),
                400..=499 => Ok(Outcome::Rejected(format!(
                    "{status}: {}",
                    first_line(&text)
                ))),
                _ => Err(ConnectorError::Failed {
                    system: self.system.clone(),
                    object: self.object(),
                    detail: format!("{status}: {}", first_line(&text)),
                }),
            };
        }
    }

    fn transport(&self, e: reqwest::Error) -> ConnectorError {
        super::transport(&self.system, &self.object(), e)
    }

    /// Per-item results of a batch's response: (index, why) of each item
    /// the API refused (an entry with `status` ≥ 400, or with `error`).
    fn refused_items(&self, response: Option<&Value>, n: usize) -> Vec<(usize, String)> {
        let Some(results) = self
            .results
            .as_deref()
            .and_then(|p| response?.pointer(p))
            .and_then(Value::as_array)
        else {
            return Vec::new();
        };
        results
            .iter()
            .take(n)
            .enumerate()
            .filter_map(|(i, r)| {
                let status = r.get("status").and_then(Value::as_u64).unwrap_or(200);
                let error = r.get("error").filter(|e| !e.is_null());
                (status >= 400 || error.is_some()).then(|| {
                    let why = error.map_or_else(
                        || format!("status {status}"),
                        |e| e.as_str().map_or_else(|| e.to_string(), str::to_string),
                    );
                    (i, format!("refused by the API: {why}"))
                })
            })
            .collect()
    }
}

/// The same items always get the same key: a resent batch or item is one
/// the API can recognise.
fn idempotency_key(job: &str, items: &[&Item]) -> String {
    match items {
        [one] => format!("{job}-{}", one.version),
        many => {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            for i in many {
                h.update(&i.version.to_le_bytes());
            }
            format!("{job}-batch-{:016x}", h.digest())
        }
    }
}

#[async_trait]
impl Target for HttpTarget {
    fn describe(&self) -> String {
        format!("{} {}", self.system, self.object())
    }

    async fn write(&self, batch: &WriteBatch<'_>) -> Result<Written, ConnectorError> {
        let pairs = batch.changes(!self.ignore_deletes);
        let mut written = Written::default();
        if pairs.is_empty() {
            return Ok(written);
        }
        let envelopes: Vec<Value> = pairs
            .iter()
            .map(|(record, item)| {
                serde_json::to_value(Envelope::new(&self.job, item, record, &self.children))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| ConnectorError::failed(&self.system, &self.object(), e))?;
        let items: Vec<&Item> = pairs.iter().map(|(_, i)| *i).collect();
        if self.batch {
            let body = json!({ "items": envelopes });
            match self
                .send(&body, &idempotency_key(&self.job, &items))
                .await?
            {
                Outcome::Ok(response) => {
                    written.rejected = self.refused_items(response.as_ref(), items.len())
                }
                Outcome::Rejected(why) => {
                    return Err(ConnectorError::Rejected {
                        system: self.system.clone(),
                        object: self.object(),
                        detail: why,
                    })
                }
            }
        } else {
            for (i, (envelope, item)) in envelopes.iter().zip(&items).enumerate() {
                if let Outcome::Rejected(why) = self
                    .send(envelope, &idempotency_key(&self.job, &[item]))
                    .await?
                {
                    written.rejected.push((i, why));
                }
            }
        }
        Ok(written)
    }
}
