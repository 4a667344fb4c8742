//! A folder as target: each run's changes go to one new file,
//! `<job>-<UTC time>.<jsonl|csv>`, written as `….part`, made durable before
//! each write returns, and renamed when the run ends. A part file a crashed
//! run left behind holds changes recorded as synced: the next run completes
//! it (cut back to its last whole line) instead of losing them.
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::Value;

use crate::config::{FileFormat, Job};
use crate::connectors::{ConnectorError, Target, WriteBatch, Written};
use crate::model::{Envelope, Item, Record};

pub struct FileTarget {
    dir: PathBuf,
    format: FileFormat,
    job: String,
    /// `[fields]` target names, in order: the CSV columns when given.
    fields: Vec<String>,
    children: Vec<String>,
    /// `[rules] deletes = "ignore"`: deletes are not written.
    ignore_deletes: bool,
    open: tokio::sync::Mutex<Option<Open>>,
}

/// The run's file while it is written.
struct Open {
    part: PathBuf,
    file: std::fs::File,
    /// CSV: the columns of the header.
    columns: Vec<String>,
}

impl FileTarget {
    pub fn new(job: &Job) -> Result<FileTarget, ConnectorError> {
        // Checked when the configuration loaded.
        let format = super::config::target_format(&job.target.options)
            .map_err(|p| ConnectorError::failed("file", "config", p.message))?;
        Ok(FileTarget {
            dir: job.target.path.clone().unwrap_or_default(),
            format,
            job: job.name.clone(),
            fields: job.fields.iter().map(|f| f.target.clone()).collect(),
            children: job.children.keys().cloned().collect(),
            ignore_deletes: crate::rules::keeps_deleted_rows(job),
            open: tokio::sync::Mutex::new(None),
        })
    }

    fn extension(&self) -> &'static str {
        match self.format {
            FileFormat::Jsonl => "jsonl",
            FileFormat::Csv => "csv",
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::failed("file", &self.dir.display().to_string(), e)
    }

    /// Completes part files of this job that an earlier run left behind.
    fn recover(&self, except: Option<&Path>) -> Result<(), ConnectorError> {
        let prefix = format!("{}-", self.job);
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.err(e)),
        };
        for entry in entries {
            let path = entry.map_err(|e| self.err(e))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with(&prefix)
                && name.ends_with(".part")
                && Some(path.as_path()) != except
            {
                cut_to_last_line(&path).map_err(|e| self.err(e))?;
                complete(&path).map_err(|e| self.err(e))?;
                tracing::warn!(job = %self.job, file = %path.display(), "completed the output file of an interrupted run");
            }
        }
        Ok(())
    }

    fn start(&self, batch: &WriteBatch<'_>) -> Result<Open, ConnectorError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.err(e))?;
        self.recover(None)?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let part = self
            .dir
            .join(format!("{}-{stamp}.{}.part", self.job, self.extension()));
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&part)
            .map_err(|e| self.err(e))?;
        let mut columns = Vec::new();
        if self.format == FileFormat::Csv {
            columns = if self.fields.is_empty() {
                crate::connectors::sql::columns_of(&batch.upserts)
                    .into_iter()
                    .chain(batch.deletes.iter().flat_map(|d| d.keys().cloned()))
                    .fold(Vec::new(), |mut cols, c| {
                        if !cols.contains(&c) {
                            cols.push(c);
                        }
                        cols
                    })
            } else {
                self.fields.clone()
            };
            columns.retain(|c| !self.children.contains(c));
            let mut header = csv::Writer::from_writer(Vec::new());
            header
                .write_record(
                    ["_op", "_version"]
                        .into_iter()
                        .chain(columns.iter().map(String::as_str)),
                )
                .map_err(|e| self.err(e))?;
            file.write_all(&header.into_inner().map_err(|e| self.err(e))?)
                .map_err(|e| self.err(e))?;
        }
        Ok(Open {
            part,
            file,
            columns,
        })
    }

    /// The batch's lines, JSONL envelopes or CSV rows.
    fn lines(&self, batch: &WriteBatch<'_>, columns: &[String]) -> Result<Vec<u8>, ConnectorError> {
        let pairs = batch.changes(!self.ignore_deletes);
        let mut out = Vec::new();
        match self.format {
            FileFormat::Jsonl => {
                for (record, item) in pairs {
                    let envelope = Envelope::new(&self.job, item, record, &self.children);
                    serde_json::to_writer(&mut out, &envelope).map_err(|e| self.err(e))?;
                    out.push(b'\n');
                }
            }
            FileFormat::Csv => {
                let mut w = csv::Writer::from_writer(&mut out);
                for (record, item) in pairs {
                    if let Some(extra) = record
                        .keys()
                        .find(|k| !columns.contains(k) && !self.children.contains(k))
                    {
                        return Err(ConnectorError::Rejected {
                            system: "file".to_string(),
                            object: self.dir.display().to_string(),
                            detail: format!("field `{extra}` is not among the CSV file's columns ({}); name the fields in `[fields]`", columns.join(", ")),
                        });
                    }
                    w.write_record(csv_row(item, record, columns))
                        .map_err(|e| self.err(e))?;
                }
                w.flush().map_err(|e| self.err(e))?;
            }
        }
        Ok(out)
    }
}

fn csv_row(item: &Item, record: &Record, columns: &[String]) -> Vec<String> {
    let cell = |v: Option<&Value>| match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    [item.op.as_str().to_string(), item.version.to_string()]
        .into_iter()
        .chain(columns.iter().map(|c| cell(record.get(c))))
        .collect()
}

/// Drops a torn last line (a write the crash interrupted, never reported done).
fn cut_to_last_line(path: &Path) -> std::io::Result<()> {
    let bytes = std::fs::read(path)?;
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if whole < bytes.len() {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(whole as u64)?;
    }
    Ok(())
}

/// `x.jsonl.part` → `x.jsonl`, durably.
fn complete(part: &Path) -> std::io::Result<PathBuf> {
    let done = part.with_extension("");
    std::fs::File::open(part)?.sync_all()?;
    std::fs::rename(part, &done)?;
    if let Some(dir) = done.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(done)
}

#[async_trait]
impl Target for FileTarget {
    fn describe(&self) -> String {
        format!("file {}", self.dir.display())
    }

    /// Plain blocking file I/O under the lock: the run's writes go to one
    /// file one after the other anyway, each an append and an fsync.
    async fn write(&self, batch: &WriteBatch<'_>) -> Result<Written, ConnectorError> {
        if batch.upserts.is_empty() && (self.ignore_deletes || batch.deletes.is_empty()) {
            return Ok(Written::default());
        }
        let mut open = self.open.lock().await;
        if open.is_none() {
            *open = Some(self.start(batch)?);
        }
        // Set just above.
        let Some(file) = open.as_mut() else {
            return Ok(Written::default());
        };
        let lines = self.lines(batch, &file.columns)?;
        file.file.write_all(&lines).map_err(|e| self.err(e))?;
        // Durable before the items count as synced.
        file.file.sync_data().map_err(|e| self.err(e))?;
        Ok(Written::default())
    }

    async fn finish(&self) -> Result<(), ConnectorError> {
        let Some(open) = self.open.lock().await.take() else {
            return Ok(());
        };
        let done = complete(&open.part).map_err(|e| self.err(e))?;
        tracing::info!(job = %self.job, file = %done.display(), "wrote the run's changes");
        Ok(())
    }
}
