//! A file as source: CSV (header row; empty cells are NULL) and JSONL (one
//! object per line), read on a blocking thread and streamed row by row.
use std::path::PathBuf;

use async_trait::async_trait;
use serde_json::Value;

use crate::config::{FileFormat, SourceConfig};
use crate::connectors::{ConnectorError, RowStream, Scan, Source};
use crate::model::{Record, SourceRow};

pub struct FileSource {
    path: PathBuf,
    format: FileFormat,
}

impl FileSource {
    pub fn new(cfg: &SourceConfig) -> Self {
        FileSource {
            path: cfg.path.clone().unwrap_or_default(),
            format: cfg.format.unwrap_or(FileFormat::Csv),
        }
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

    async fn scan(&self, scan: Scan<'_>) -> Result<RowStream, ConnectorError> {
        if !matches!(scan, Scan::All) {
            return Err(ConnectorError::failed(
                &self.system(),
                &self.object(),
                "a file source supports only the diff strategy",
            ));
        }
        let file = std::fs::File::open(&self.path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ConnectorError::MissingObject {
                    system: self.system(),
                    object: self.object(),
                    detail: e.to_string(),
                }
            } else {
                ConnectorError::failed(&self.system(), &self.object(), e)
            }
        })?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<SourceRow, ConnectorError>>(1024);
        let format = self.format;
        let object = self.object();
        tokio::task::spawn_blocking(move || {
            let reader = std::io::BufReader::with_capacity(256 * 1024, file);
            let fail = |line: u64, e: &dyn std::fmt::Display| {
                ConnectorError::failed("file", &format!("{object} line {line}"), e)
            };
            match format {
                FileFormat::Csv => {
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
                    let mut record = csv::StringRecord::new();
                    loop {
                        match csv.read_record(&mut record) {
                            Ok(false) => break,
                            Ok(true) => {
                                let data: Record = headers
                                    .iter()
                                    .zip(record.iter())
                                    .map(|(h, v)| {
                                        (
                                            h.to_string(),
                                            if v.is_empty() {
                                                Value::Null
                                            } else {
                                                Value::String(v.to_string())
                                            },
                                        )
                                    })
                                    .collect();
                                if tx.blocking_send(Ok(SourceRow::new(data, None))).is_err() {
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
                FileFormat::Jsonl => {
                    use std::io::BufRead;
                    for (i, line) in reader.lines().enumerate() {
                        let n = i as u64 + 1;
                        let row = line.map_err(|e| fail(n, &e)).and_then(|l| {
                            if l.trim().is_empty() {
                                return Ok(None);
                            }
                            serde_json::from_str::<Record>(&l)
                                .map(Some)
                                .map_err(|e| fail(n, &format!("not a JSON object: {e}")))
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
            }
        });
        let stream = async_stream::stream! {
            while let Some(item) = rx.recv().await {
                yield item;
            }
        };
        Ok(Box::pin(stream))
    }
}
