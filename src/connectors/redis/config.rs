//! `[target] type = "redis"`: its own keys, typed.
use std::time::Duration;

use serde::Deserialize;

use crate::config::registry::{parse_options, OptionProblem};

/// The `[target]` keys a Redis target reads (`url` is read by ferry).
pub const KEYS: &[&str] = &["url", "stream", "maxlen", "dedupe_window"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisOptions {
    /// Checked and kept by ferry as the target's `url`.
    #[serde(default)]
    #[allow(dead_code)]
    url: Option<String>,
    /// The stream's key; may use `{job}` and `{table}` (the source table).
    pub stream: String,
    /// `XADD … MAXLEN ~ n`: trim the stream to about this many entries.
    pub maxlen: Option<u64>,
    /// How long a sent id is remembered, so that a resent item is not
    /// added again (a duration, default "24h"): see [`RedisOptions::window`].
    dedupe_window: Option<String>,
}

impl RedisOptions {
    pub fn parse(options: &toml::Table) -> Result<RedisOptions, OptionProblem> {
        let parsed: RedisOptions = parse_options(options)?;
        if parsed.stream.trim().is_empty() {
            return Err(OptionProblem {
                key: Some("stream".into()),
                message: "`stream` is empty: name the stream (it may use `{job}` and `{table}`)"
                    .into(),
            });
        }
        if parsed.maxlen == Some(0) {
            return Err(OptionProblem {
                key: Some("maxlen".into()),
                message: "`maxlen` = 0 would trim every entry away; leave it out to keep them all"
                    .into(),
            });
        }
        let window = |message: String| OptionProblem {
            key: Some("dedupe_window".into()),
            message,
        };
        match parsed
            .dedupe_window
            .as_deref()
            .map(humantime::parse_duration)
        {
            Some(Err(e)) => Err(window(format!(
                "`dedupe_window` is not a duration like \"24h\": {e}"
            ))),
            Some(Ok(d)) if d.as_secs() == 0 => {
                Err(window("`dedupe_window` must be at least 1s".into()))
            }
            _ => Ok(parsed),
        }
    }

    /// `dedupe_window`, checked by [`RedisOptions::parse`].
    pub fn window(&self) -> Duration {
        self.dedupe_window
            .as_deref()
            .and_then(|w| humantime::parse_duration(w).ok())
            .unwrap_or(Duration::from_secs(24 * 3600))
    }
}

/// The registry's check of these options (`ferry check`).
pub fn check(options: &toml::Table) -> Vec<OptionProblem> {
    match RedisOptions::parse(options) {
        Ok(_) => vec![],
        Err(problem) => vec![problem],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RedisOptions, OptionProblem> {
        RedisOptions::parse(&toml::from_str(text).unwrap())
    }

    #[test]
    fn reads_its_keys_and_names_the_wrong_one() {
        let o = parse("stream = \"s\"\nmaxlen = 5\ndedupe_window = \"1h\"").unwrap();
        assert_eq!((o.maxlen, o.window().as_secs()), (Some(5), 3600));
        let e = parse("stram = \"s\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("stram"));
        let e = parse("stream = \"s\"\nmaxlen = \"many\"").unwrap_err();
        assert!(e.message.contains("invalid type"), "{}", e.message);
        assert_eq!(
            parse("stream = \"s\"\nmaxlen = 0")
                .unwrap_err()
                .key
                .as_deref(),
            Some("maxlen")
        );
        assert!(parse("maxlen = 3").unwrap_err().message.contains("stream"));
    }
}
