//! A file as source: CSV (header row; empty cells are NULL) and JSONL (one
//! object per line), read on a blocking thread and streamed row by row.
use std::path::PathBuf;

use async_trait::async_trait;
use serde_json::Value;

use super::config::FileSourceOptions;
use super::types::{cell_value, column_type};
use crate::config::{FileFormat, SourceConfig};
use crate::connectors::{
    subset, Column, ColumnType, ConnectorError, RowStream, Scan, Shape, Source, TableSchema,
};
use crate::model::{Record, SourceRow};

#[derive(Clone)]
pub struct FileSource {
    path: PathBuf,
    format: FileFormat,
    types: Vec<(String, String)>,
    /// The columns the run reads (the schema stage's projection); None: all.
    read: Option<Vec<String>>,
    key: Vec<String>,
}

impl FileSource {
    pub fn new(cfg: &SourceConfig) -> Result<Self, ConnectorError> {
        // Checked when the configuration loaded.
        let options = FileSourceOptions::parse(&cfg.options).map_err(|problems| {
            let why: Vec<String> = problems.into_iter().map(|p| p.message).collect();
            ConnectorError::failed("file", "config", why.join("; "))
        })?;
        Ok(FileSource {
            path: cfg.path.clone().unwrap_or_default(),
            format: options.format,
            types: options.types,
            read: cfg.columns.clone(),
            key: cfg.key.clone(),
        })
    }

    fn open(&self) -> Result<std::fs::File, ConnectorError> {
        std::fs::File::open(&self.path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ConnectorError::MissingObject {
                    system: self.system(),
                    object: self.object(),
                    detail: e.to_string(),
                }
            } else {
                ConnectorError::failed(&self.system(), &self.object(), e)
            }
        })
    }

    /// A CSV header's columns: declared ones typed, the others text.
    fn columns(&self, header: &csv::StringRecord) -> Vec<Column> {
        header
            .iter()
            .map(|name| {
                let declared = self
                    .types
                    .iter()
                    .find(|(column, _)| column == name)
                    .map_or("text".to_string(), |(_, d)| d.clone());
                Column {
                    name: name.to_string(),
                    ty: column_type(&declared).unwrap_or(ColumnType::Text(None)),
                    declared,
                    system: "file",
                }
            })
            .collect()
    }

    fn system(&self) -> String {
        "file".to_string()
    }

    fn object(&self) -> String {
        self.path.display().to_string()
    }
}

#[async_trait]
impl Source for FileSource {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    /// A CSV file's header, with the declared `types`. A JSONL file names
    /// its columns on each line: it has no schema to check.
    async fn schema(&self) -> Result<Shape, ConnectorError> {
        if self.format == FileFormat::Jsonl {
            return Ok(Shape::Schemaless);
        }
        let file = self.open()?;
        let header = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(std::io::BufReader::new(file))
            .headers()
            .cloned()
            .map_err(|e| ConnectorError::failed("file", &format!("{} line 1", self.object()), e))?;
        Ok(Shape::Table(TableSchema {
            columns: self.columns(&header),
            primary_key: vec![],
        }))
    }

    async fn scan(&self, scan: Scan<'_>) -> Result<RowStream, ConnectorError> {
        let range = match scan {
            Scan::All => None,
            Scan::Subset(subset) => subset.for_whole_read(&self.system())?,
            _ => {
                return Err(ConnectorError::failed(
                    &self.system(),
                    &self.object(),
                    "a file source supports only the diff strategy",
                ))
            }
        };
        let file = self.open()?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<SourceRow, ConnectorError>>(1024);
        let (format, object, this) = (self.format, self.object(), self.clone());
        tokio::task::spawn_blocking(move || {
            let reader = std::io::BufReader::with_capacity(256 * 1024, file);
            match format {
                FileFormat::Csv => this.send_csv(reader, &tx),
                FileFormat::Jsonl => send_jsonl(&object, reader, &tx),
            }
        });
        let stream = async_stream::stream! {
            while let Some(item) = rx.recv().await {
                yield item;
            }
        };
        let key = self.key.clone();
        Ok(subset::filter(Box::pin(stream), range, key, self.system()))
    }
}

type RowSender = tokio::sync::mpsc::Sender<Result<SourceRow, ConnectorError>>;

fn line_error(object: &str, line: u64, e: &dyn std::fmt::Display) -> ConnectorError {
    ConnectorError::failed("file", &format!("{object} line {line}"), e)
}

impl FileSource {
    /// Sends the CSV file's rows, each cell read as its column's type; the
    /// first bad cell or line ends the scan with its line.
    fn send_csv(&self, reader: impl std::io::Read, tx: &RowSender) {
        let object = self.object();
        let fail = |line: u64, e: &dyn std::fmt::Display| line_error(&object, line, e);
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(reader);
        let headers = match csv.headers() {
            Ok(h) => h.clone(),
            Err(e) => {
                let _ = tx.blocking_send(Err(fail(1, &e)));
                return;
            }
        };
        let columns: Vec<Option<Column>> = self
            .columns(&headers)
            .into_iter()
            .map(|c| {
                let read = self.read.as_ref().is_none_or(|r| r.contains(&c.name));
                read.then_some(c)
            })
            .collect();
        let mut record = csv::StringRecord::new();
        loop {
            match csv.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {
                    // The csv crate counts the header line as line 0 here.
                    let line = record.position().map_or(0, |p| p.line() + 1);
                    let row = match typed_record(&columns, &record) {
                        Ok(data) => Ok(SourceRow::new(data, None)),
                        Err(e) => Err(fail(line, &e)),
                    };
                    let stop = row.is_err();
                    if tx.blocking_send(row).is_err() || stop {
                        return;
                    }
                }
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    let _ = tx.blocking_send(Err(fail(line, &e)));
                    return;
                }
            }
        }
    }
}

/// One CSV line's cells of the columns read, each as its column's type.
fn typed_record(columns: &[Option<Column>], record: &csv::StringRecord) -> Result<Record, String> {
    columns
        .iter()
        .zip(record.iter())
        .filter_map(|(c, cell)| {
            let c = c.as_ref()?;
            let value = match cell.is_empty() {
                true => Ok(Value::Null),
                false => cell_value(&c.ty, cell).map_err(|e| {
                    format!(
                        "column `{}`: {e} (types.{} = \"{}\")",
                        c.name, c.name, c.declared
                    )
                }),
            };
            Some(value.map(|v| (c.name.clone(), v)))
        })
        .collect()
}

/// Sends a JSON Lines file's objects; blank lines are skipped, the first
/// line that is not an object ends the scan.
fn send_jsonl(object: &str, reader: impl std::io::BufRead, tx: &RowSender) {
    for (i, line) in reader.lines().enumerate() {
        let n = i as u64 + 1;
        let row = line.map_err(|e| line_error(object, n, &e)).and_then(|l| {
            if l.trim().is_empty() {
                return Ok(None);
            }
            serde_json::from_str::<Record>(&l)
                .map(Some)
                .map_err(|e| line_error(object, n, &format!("not a JSON object: {e}")))
        });
        let send = match row {
            Ok(None) => continue,
            Ok(Some(data)) => tx.blocking_send(Ok(SourceRow::new(data, None))),
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        if send.is_err() {
            return;
        }
    }
}
