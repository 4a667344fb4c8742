//! `[source] type = "http"`: its own keys, typed and checked where they
//! are written.
use std::time::Duration;

use serde::Deserialize;

use crate::config::registry::{parse_options, OptionProblem};

/// How requests authenticate. Secrets never reach a log or a message.
#[derive(Clone)]
pub enum HttpAuth {
    Bearer(String),
    Basic { user: String, password: String },
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpAuth::Bearer(_) => f.write_str("Bearer(***)"),
            HttpAuth::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
        }
    }
}

/// The `[source]` keys an HTTP source reads (`url` is read by ferry).
pub const SOURCE_KEYS: &[&str] = &[
    "url",
    "items",
    "next",
    "page_param",
    "cursor_param",
    "auth",
    "timeout",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceKeys {
    /// Checked and kept by ferry as the source's `url`.
    #[serde(default)]
    #[allow(dead_code)]
    url: Option<String>,
    items: Option<String>,
    next: Option<String>,
    page_param: Option<String>,
    cursor_param: Option<String>,
    auth: Option<toml::Table>,
    timeout: Option<String>,
}

/// A paginated JSON API as source.
#[derive(Debug, Clone)]
pub struct HttpSourceConfig {
    /// JSON pointer to the array of objects in a page (`""`: the page is the array).
    pub items: String,
    /// JSON pointer to the next page's cursor (a URL, or a token sent in
    /// `cursor_param`); absent, null or empty ends the pages.
    pub next: Option<String>,
    /// The query parameter that carries the cursor (default `cursor`).
    pub cursor_param: String,
    /// Page numbers from 1 in this query parameter, until an empty page.
    pub page_param: Option<String>,
    pub auth: Option<HttpAuth>,
    pub timeout: Duration,
}

impl HttpSourceConfig {
    /// The source's settings, or every problem with them.
    pub fn parse(options: &toml::Table) -> Result<HttpSourceConfig, Vec<OptionProblem>> {
        let keys: SourceKeys = parse_options(options).map_err(|p| vec![p])?;
        let mut problems = Vec::new();
        for (key, value) in [("items", &keys.items), ("next", &keys.next)] {
            if let Some(v) = value
                .as_deref()
                .filter(|v| !v.is_empty() && !v.starts_with('/'))
            {
                problems.push(problem(
                    key,
                    format!("`{key}` is a JSON pointer (like `/data`), not `{v}`"),
                ));
            }
        }
        if keys.next.is_some() && keys.page_param.is_some() {
            problems.push(problem(
                "page_param",
                "`page_param` pages by number, `next` by cursor: give one of them".into(),
            ));
        }
        let auth = optional_auth(keys.auth.as_ref(), &mut problems);
        let timeout = duration(&keys.timeout, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(HttpSourceConfig {
            items: keys.items.unwrap_or_default(),
            next: keys.next,
            cursor_param: keys.cursor_param.unwrap_or_else(|| "cursor".to_string()),
            page_param: keys.page_param,
            auth,
            timeout,
        })
    }
}

/// [`crate::config::registry::SourceSpec::options`] of the HTTP source.
pub fn check_source(options: &toml::Table) -> Vec<OptionProblem> {
    HttpSourceConfig::parse(options).err().unwrap_or_default()
}

fn problem(key: &str, message: String) -> OptionProblem {
    OptionProblem {
        key: Some(key.to_string()),
        message,
    }
}

/// `{ bearer = "…" }` or `{ basic = { user = "…", password = "…" } }`.
/// `auth`, when given; a problem with it joins `problems`.
fn optional_auth(
    table: Option<&toml::Table>,
    problems: &mut Vec<OptionProblem>,
) -> Option<HttpAuth> {
    match auth(table?) {
        Ok(a) => Some(a),
        Err(p) => {
            problems.push(p);
            None
        }
    }
}

fn auth(table: &toml::Table) -> Result<HttpAuth, OptionProblem> {
    let text = |v: Option<&toml::Value>| v.and_then(|v| v.as_str()).map(str::to_string);
    let basic = table.get("basic").and_then(|b| b.as_table());
    match (text(table.get("bearer")), basic, table.len()) {
        (Some(token), None, 1) => Ok(HttpAuth::Bearer(token)),
        (None, Some(basic), 1) => match (text(basic.get("user")), text(basic.get("password"))) {
            (Some(user), Some(password)) if basic.len() == 2 => Ok(HttpAuth::Basic { user, password }),
            _ => Err(problem("auth", "`auth`: `basic` takes `user` and `password`, both strings".into())),
        },
        _ => Err(problem(
            "auth",
            "`auth` is `{ bearer = \"${TOKEN}\" }` or `{ basic = { user = \"…\", password = \"${PASSWORD}\" } }`".into(),
        )),
    }
}

/// The `[target]` keys an HTTP target reads (`url` is read by ferry).
pub const TARGET_KEYS: &[&str] = &["url", "method", "batch", "results", "auth", "timeout"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetKeys {
    /// Checked and kept by ferry as the target's `url`.
    #[serde(default)]
    #[allow(dead_code)]
    url: Option<String>,
    method: Option<String>,
    batch: Option<bool>,
    results: Option<String>,
    auth: Option<toml::Table>,
    timeout: Option<String>,
}

/// An HTTP API as target.
#[derive(Debug, Clone)]
pub struct HttpTargetConfig {
    /// `POST` (default), `PUT` or `PATCH`.
    pub method: reqwest::Method,
    /// One request per batch (`{"items": […]}`, default) or one per item.
    pub batch: bool,
    /// JSON pointer to per-item results in a batch's response.
    pub results: Option<String>,
    pub auth: Option<HttpAuth>,
    pub timeout: Duration,
}

impl HttpTargetConfig {
    /// The target's settings, or every problem with them.
    pub fn parse(options: &toml::Table) -> Result<HttpTargetConfig, Vec<OptionProblem>> {
        let keys: TargetKeys = parse_options(options).map_err(|p| vec![p])?;
        let mut problems = Vec::new();
        let method = match keys.method.as_deref().unwrap_or("POST") {
            "POST" => reqwest::Method::POST,
            "PUT" => reqwest::Method::PUT,
            "PATCH" => reqwest::Method::PATCH,
            other => {
                problems.push(problem(
                    "method",
                    format!("`method` is `{other}`; expected `POST`, `PUT` or `PATCH`"),
                ));
                reqwest::Method::POST
            }
        };
        if let Some(r) = keys.results.as_deref().filter(|r| !r.starts_with('/')) {
            problems.push(problem(
                "results",
                format!("`results` is a JSON pointer (like `/results`), not `{r}`"),
            ));
        }
        let auth = optional_auth(keys.auth.as_ref(), &mut problems);
        let timeout = duration(&keys.timeout, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(HttpTargetConfig {
            method,
            batch: keys.batch.unwrap_or(true),
            results: keys.results,
            auth,
            timeout,
        })
    }
}

/// [`crate::config::registry::TargetSpec::options`] of the HTTP target.
pub fn check_target(options: &toml::Table) -> Vec<OptionProblem> {
    HttpTargetConfig::parse(options).err().unwrap_or_default()
}

/// `timeout`, default 30 s.
fn duration(timeout: &Option<String>, problems: &mut Vec<OptionProblem>) -> Duration {
    match timeout.as_deref().map(humantime::parse_duration) {
        None => Duration::from_secs(30),
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            problems.push(problem(
                "timeout",
                format!("`timeout` is not a duration like \"30s\": {e}"),
            ));
            Duration::ZERO
        }
    }
}
