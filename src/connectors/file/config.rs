//! `[source] type = "file"`: its own keys, typed and checked where they are
//! written. (`path` is ferry's: resolved against the configuration folder.)
use std::path::Path;

use serde::Deserialize;

use super::types::{column_type, COLUMN_TYPES};
use crate::config::registry::{parse_options, OptionProblem};
use crate::config::FileFormat;

/// The `[source]` keys a file source reads.
pub const SOURCE_KEYS: &[&str] = &["path", "format", "types"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceKeys {
    /// As written; ferry keeps it resolved as the source's `path`.
    path: Option<String>,
    format: Option<String>,
    /// CSV: column types, `{ id = "bigint" }`.
    types: Option<toml::Table>,
}

/// A file source's format and declared column types.
#[derive(Debug, Clone)]
pub struct FileSourceOptions {
    pub format: FileFormat,
    /// (column, type in PostgreSQL's spelling); the other columns are text.
    pub types: Vec<(String, String)>,
}

impl FileSourceOptions {
    /// The source's settings, or every problem with them.
    pub fn parse(options: &toml::Table) -> Result<FileSourceOptions, Vec<OptionProblem>> {
        let keys: SourceKeys = parse_options(options).map_err(|p| vec![p])?;
        let mut problems = Vec::new();
        let format = match (keys.format.as_deref(), keys.path.as_deref().map(Path::new)) {
            (Some("csv"), _) => Some(FileFormat::Csv),
            (Some("jsonl"), _) => Some(FileFormat::Jsonl),
            (Some(other), _) => {
                problems.push(problem(
                    "format",
                    format!("`format` = `{other}`; expected `csv` or `jsonl`"),
                ));
                None
            }
            (None, path) => match path.and_then(|p| p.extension()).and_then(|e| e.to_str()) {
                Some("csv") => Some(FileFormat::Csv),
                Some("jsonl" | "ndjson") => Some(FileFormat::Jsonl),
                _ => {
                    let message = "[source] of type `file` needs `format = \"csv\"` or `\"jsonl\"`";
                    problems.push(OptionProblem {
                        key: None,
                        message: message.into(),
                    });
                    None
                }
            },
        };
        let mut types = Vec::new();
        if let Some(declared) = &keys.types {
            if format == Some(FileFormat::Jsonl) {
                problems.push(problem(
                    "types",
                    "`types` applies to CSV files; a JSON line carries its own types".into(),
                ));
            }
            for (column, ty) in declared {
                match ty.as_str() {
                    Some(t) if column_type(t).is_some() => {
                        types.push((column.clone(), t.to_string()))
                    }
                    _ => problems.push(problem(
                        "types",
                        format!("`types.{column}` = {ty}: give one of {COLUMN_TYPES}"),
                    )),
                }
            }
        }
        match format {
            Some(format) if problems.is_empty() => Ok(FileSourceOptions { format, types }),
            _ => Err(problems),
        }
    }
}

/// [`crate::config::registry::SourceSpec::options`] of the file source.
pub fn check_source(options: &toml::Table) -> Vec<OptionProblem> {
    FileSourceOptions::parse(options).err().unwrap_or_default()
}

fn problem(key: &str, message: String) -> OptionProblem {
    OptionProblem {
        key: Some(key.to_string()),
        message,
    }
}

/// The `[target]` keys a file target reads.
pub const TARGET_KEYS: &[&str] = &["path", "format"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetKeys {
    /// As written; ferry keeps it resolved as the target's `path`.
    #[allow(dead_code)]
    path: Option<String>,
    format: Option<String>,
}

/// A file target's format: given, since a folder has no extension to
/// tell it.
pub fn target_format(options: &toml::Table) -> Result<FileFormat, OptionProblem> {
    let keys: TargetKeys = parse_options(options)?;
    match keys.format.as_deref() {
        Some("csv") => Ok(FileFormat::Csv),
        Some("jsonl") => Ok(FileFormat::Jsonl),
        Some(other) => Err(problem(
            "format",
            format!("`format` = `{other}`; expected `csv` or `jsonl`"),
        )),
        None => Err(OptionProblem {
            key: None,
            message: "[target] of type `file` needs `format = \"csv\"` or `\"jsonl\"`".into(),
        }),
    }
}

/// [`crate::config::registry::TargetSpec::options`] of the file target.
pub fn check_target(options: &toml::Table) -> Vec<OptionProblem> {
    target_format(options).err().into_iter().collect()
}
