//! `ferry verify --output json`, run and read.
use serde_json::Value;

use super::{code, stderr, ConfigDir};

/// The exit code and the JSON report.
pub fn verify(cfg: &ConfigDir, state: &str, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--output", "json", "verify"];
    all.extend_from_slice(args);
    let out = cfg.ferry(Some(state), &all);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let json: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("verify printed no JSON ({e}): {text}\n{}", stderr(&out)));
    (code(&out), json)
}

pub fn result(json: &Value) -> &Value {
    &json["jobs"][0]["result"]
}

/// The listed keys of one kind, as text.
pub fn keys(json: &Value, kind: &str) -> Vec<String> {
    result(json)["first"]
        .as_array()
        .expect("first")
        .iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| d["key"].as_str().unwrap_or("-").to_string())
        .collect()
}
