//! Snapshots with children: each object read from a source carries its
//! child rows (`[children.NAME]`) as an array under NAME, fetched with one
//! query per chunk of parents, not one per parent. The children are part of
//! the object's content hash, so a changed child marks its parent changed.
use std::collections::HashMap;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use super::{ConnectorError, RowStream, Scan, Source};
use crate::config::Child;
use crate::model::Record;

/// Parents per child query.
const CHUNK: usize = 1000;

pub struct WithChildren {
    inner: std::sync::Arc<dyn Source>,
    /// The parent's one key column.
    key: String,
    children: Vec<(String, Child)>,
}

impl WithChildren {
    pub fn new(inner: Box<dyn Source>, key: String, children: Vec<(String, Child)>) -> Self {
        WithChildren {
            inner: inner.into(),
            key,
            children,
        }
    }
}

/// The text a key value groups by, whatever its JSON type (a child's
/// `order_id` 7 and a parent's "7" are one parent).
fn group_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[async_trait]
impl Source for WithChildren {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn scan(&self, scan: Scan<'_>) -> Result<RowStream, ConnectorError> {
        let rows = self.inner.scan(scan).await?;
        let (inner, key, children) = (self.inner.clone(), self.key.clone(), self.children.clone());
        let stream = async_stream::try_stream! {
            let mut chunks = rows.try_chunks(CHUNK);
            while let Some(mut chunk) = chunks.try_next().await.map_err(|e| e.1)? {
                let keys: Vec<Value> = chunk
                    .iter_mut()
                    .filter_map(|r| r.object.record_mut().get(&key).cloned())
                    .collect();
                for (name, child) in &children {
                    let mut by_parent: HashMap<String, Vec<Value>> = HashMap::new();
                    for row in inner.children(child, &keys).await? {
                        let parent = row.get(&child.parent).map(group_key).unwrap_or_default();
                        by_parent.entry(parent).or_default().push(Value::Object(row));
                    }
                    for r in &mut chunk {
                        let record = r.object.record_mut();
                        let mut rows = record
                            .get(&key)
                            .and_then(|k| by_parent.remove(&group_key(k)))
                            .unwrap_or_default();
                        // A set: its order must not make an unchanged parent look changed.
                        rows.sort_by_cached_key(|c| child_key(c, &child.key));
                        record.insert(name.clone(), Value::Array(rows));
                    }
                }
                for r in chunk {
                    yield r;
                }
            }
        };
        Ok(Box::pin(stream.boxed()))
    }

    async fn children(
        &self,
        child: &Child,
        parents: &[Value],
    ) -> Result<Vec<Record>, ConnectorError> {
        self.inner.children(child, parents).await
    }
}

fn child_key(row: &Value, key: &[String]) -> String {
    let values: Vec<&Value> = key
        .iter()
        .map(|k| row.get(k).unwrap_or(&Value::Null))
        .collect();
    // Serialising JSON values cannot fail.
    serde_json::to_string(&values).expect("key values serialise")
}
