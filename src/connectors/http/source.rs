use async_trait::async_trait;
use serde_json::Value;

use super::HttpSourceConfig;
use super::{authorize, first_line, retry_after, transport};
use crate::config::Job;
use crate::connectors::{subset, ConnectorError, RowStream, Scan, Source};
use crate::model::{Record, SourceRow};

/// `Retry-After` waits per page before the run gives up on the API.
const MAX_WAITS: u32 = 5;

pub struct HttpSource {
    client: reqwest::Client,
    url: String,
    cfg: HttpSourceConfig,
    system: String,
    key: Vec<String>,
}

impl HttpSource {
    pub fn new(job: &Job) -> Result<HttpSource, ConnectorError> {
        let url = job.source.url.clone().unwrap_or_default();
        let system = format!("http {}", crate::redact::url(&url));
        // Checked when the configuration loaded: a problem here is one the
        // check reported already.
        let cfg = HttpSourceConfig::parse(&job.source.options).map_err(|problems| {
            let why: Vec<String> = problems.into_iter().map(|p| p.message).collect();
            ConnectorError::failed(&system, "config", why.join("; "))
        })?;
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| ConnectorError::failed(&system, "client", e))?;
        Ok(HttpSource {
            client,
            url,
            cfg,
            system,
            key: job.source.key.clone(),
        })
    }
}

/// One page request: its URL and query parameters.
#[derive(Clone)]
struct Page {
    url: String,
    query: Vec<(String, String)>,
}

struct Reader {
    client: reqwest::Client,
    cfg: HttpSourceConfig,
    system: String,
}

impl Reader {
    /// The page's body, waiting out `Retry-After` on 429 and 503.
    async fn get(&self, page: &Page) -> Result<Value, ConnectorError> {
        let object = crate::redact::url(&page.url);
        let mut waits = 0;
        loop {
            let request = self.client.get(&page.url).query(&page.query);
            let response = authorize(request, self.cfg.auth.as_ref())
                .send()
                .await
                .map_err(|e| transport(&self.system, &object, e))?;
            let status = response.status();
            if matches!(status.as_u16(), 429 | 503) && waits < MAX_WAITS {
                if let Some(wait) = retry_after(response.headers()) {
                    waits += 1;
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            let text = response
                .text()
                .await
                .map_err(|e| transport(&self.system, &object, e))?;
            if matches!(status.as_u16(), 401 | 403) {
                return Err(ConnectorError::refused(
                    &self.system,
                    format!("{status}: {}", first_line(&text)),
                ));
            }
            if !status.is_success() {
                return Err(ConnectorError::Failed {
                    system: self.system.clone(),
                    object,
                    detail: format!("{status}: {}", first_line(&text)),
                });
            }
            return serde_json::from_str(&text).map_err(|e| {
                ConnectorError::failed(&self.system, &object, format!("the page is not JSON: {e}"))
            });
        }
    }

    /// The page's objects.
    fn items(&self, page: &Page, body: &Value) -> Result<Vec<Record>, ConnectorError> {
        let found = if self.cfg.items.is_empty() {
            Some(body)
        } else {
            body.pointer(&self.cfg.items)
        };
        let Some(Value::Array(items)) = found else {
            return Err(ConnectorError::failed(
                &self.system,
                &crate::redact::url(&page.url),
                format!("no array of items at `{}`", self.cfg.items),
            ));
        };
        items
            .iter()
            .map(|i| match i {
                Value::Object(o) => Ok(o.clone()),
                other => Err(ConnectorError::failed(
                    &self.system,
                    &crate::redact::url(&page.url),
                    format!(
                        "an item is not an object: {}",
                        first_line(&other.to_string())
                    ),
                )),
            })
            .collect()
    }

    /// The page after `page`, from the response's cursor; None at the end.
    fn next(&self, page: &Page, body: &Value, got_items: bool, number: &mut u64) -> Option<Page> {
        if let Some(param) = &self.cfg.page_param {
            if !got_items {
                return None;
            }
            *number += 1;
            let mut next = page.clone();
            next.query.retain(|(k, _)| k != param);
            next.query.push((param.clone(), number.to_string()));
            return Some(next);
        }
        let pointer = self.cfg.next.as_deref()?;
        let cursor = match body.pointer(pointer)? {
            Value::String(s) if !s.is_empty() => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        if cursor.starts_with("http://") || cursor.starts_with("https://") {
            return Some(Page {
                url: cursor,
                query: Vec::new(),
            });
        }
        if cursor.starts_with('/') {
            let base = reqwest::Url::parse(&page.url).ok()?;
            return Some(Page {
                url: base.join(&cursor).ok()?.to_string(),
                query: Vec::new(),
            });
        }
        let mut next = page.clone();
        next.query.retain(|(k, _)| k != &self.cfg.cursor_param);
        next.query.push((self.cfg.cursor_param.clone(), cursor));
        Some(next)
    }
}

#[async_trait]
impl Source for HttpSource {
    fn describe(&self) -> String {
        self.system.clone()
    }

    async fn scan(&self, scan: Scan<'_>) -> Result<RowStream, ConnectorError> {
        let range = match scan {
            Scan::All => None,
            Scan::Subset(subset) => subset.for_whole_read(&self.system)?,
            _ => {
                return Err(ConnectorError::failed(
                    &self.system,
                    "pages",
                    "an http source supports only the diff strategy",
                ))
            }
        };
        let reader = Reader {
            client: self.client.clone(),
            cfg: self.cfg.clone(),
            system: self.system.clone(),
        };
        let mut page = Page {
            url: self.url.clone(),
            query: self
                .cfg
                .page_param
                .iter()
                .map(|p| (p.clone(), "1".to_string()))
                .collect(),
        };
        let stream = async_stream::try_stream! {
            let mut number = 1;
            let mut seen = std::collections::HashSet::new();
            loop {
                // A cursor that comes round again would page forever.
                if !seen.insert(format!("{}?{:?}", page.url, page.query)) {
                    break;
                }
                let body = reader.get(&page).await?;
                let items = reader.items(&page, &body)?;
                let got_items = !items.is_empty();
                for data in items {
                    yield SourceRow::new(data, None);
                }
                match reader.next(&page, &body, got_items, &mut number) {
                    Some(next) => page = next,
                    None => break,
                }
            }
        };
        let (key, system) = (self.key.clone(), self.system.clone());
        Ok(subset::filter(Box::pin(stream), range, key, system))
    }
}
