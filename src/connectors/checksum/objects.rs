//! A source that is not a SQL table but reads whole (a file, an API), as
//! `ferry verify` compares it: each object's key and compared fields as
//! text, which ferry finishes and hashes as it does SQLite's rows. No
//! server hashes them, so the source is read out once per pass.
use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use serde_json::Value;

use super::{Checksum, TextReader};
use crate::connectors::sql::canonical::SqlKind;
use crate::connectors::{ConnectorError, KeyRange, Scan, Source};

pub struct Objects {
    source: Arc<dyn Source>,
    /// The key's fields, then the compared fields, in the order the
    /// checksum session reads them.
    names: Vec<String>,
    key_width: usize,
    /// `--keys`: the objects whose key lies in the range.
    range: Option<KeyRange>,
}

impl Objects {
    pub fn new(
        source: Arc<dyn Source>,
        key: Vec<String>,
        fields: Vec<String>,
        range: Option<KeyRange>,
    ) -> Objects {
        let key_width = key.len();
        Objects {
            source,
            names: key.into_iter().chain(fields).collect(),
            key_width,
            range,
        }
    }
}

#[async_trait]
impl Checksum for Objects {
    fn kind(&self) -> SqlKind {
        SqlKind::Objects
    }

    fn relation(&self) -> String {
        String::new()
    }

    fn describe(&self) -> String {
        self.source.describe()
    }

    async fn reader(&self, _consistent: bool) -> Result<Box<dyn TextReader>, ConnectorError> {
        Ok(Box::new(Reader {
            source: self.source.clone(),
            names: self.names.clone(),
            key_width: self.key_width,
            range: self.range.clone(),
        }))
    }
}

struct Reader {
    source: Arc<dyn Source>,
    names: Vec<String>,
    key_width: usize,
    range: Option<KeyRange>,
}

/// A field's value as text: JSON text for an object or an array.
fn text_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

#[async_trait]
impl TextReader for Reader {
    /// Reads every object; the SQL is the session's for a table, which
    /// objects do not need: they give their fields by name.
    async fn each_row(
        &mut self,
        _sql: &str,
        _binds: &[Value],
        each: &mut (dyn FnMut(Vec<Option<String>>) -> Result<(), ConnectorError> + Send),
    ) -> Result<(), ConnectorError> {
        let system = self.source.describe();
        let mut rows = self.source.scan(Scan::All).await?;
        while let Some(mut row) = rows.try_next().await? {
            let record = row.object.record_mut();
            if let Some(range) = &self.range {
                let key: Vec<Value> = self.names[..self.key_width]
                    .iter()
                    .map(|k| record.get(k).cloned().unwrap_or(Value::Null))
                    .collect();
                match range.contains(&key) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(why) => return Err(ConnectorError::failed(&system, "--keys", why)),
                }
            }
            each(self.names.iter().map(|n| text_of(record.get(n))).collect())?;
        }
        Ok(())
    }
}
