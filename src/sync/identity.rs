//! Key translation. A job whose target generates its own keys gives each
//! new object a key from the target and records it in the job's id map
//! before the row is written, so a retry writes the same row again instead
//! of a second one. A field with `lookup = "job"` carries a source key of
//! that job's objects; it is translated through that job's id map, and an
//! object whose reference is not synced yet waits instead of being written
//! with a dangling one.

use serde_json::Value;

use super::row::Row;
use crate::config::Job;
use crate::connectors::{ConnectorError, Target};
use crate::model::{key_text, Op, Record};
use crate::state::{StateError, Store};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Target(#[from] ConnectorError),
}

/// What translation makes of one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Ready,
    /// A referenced object is not synced yet: try again later.
    Wait(String),
    /// A delete of an object the target never got: nothing to do.
    Nothing,
}

#[derive(Debug, Clone)]
pub struct Identity {
    job: String,
    /// The target key column the target generates.
    generated: Option<String>,
    /// (target field, the job whose id map translates it).
    lookups: Vec<(String, String)>,
}

impl Identity {
    pub fn new(job: &Job) -> Identity {
        Identity {
            job: job.name.clone(),
            generated: job.generated_key().map(str::to_string),
            lookups: job
                .fields
                .iter()
                .filter_map(|f| Some((f.target.clone(), f.lookup.clone()?)))
                .collect(),
        }
    }

    pub fn is_active(&self) -> bool {
        self.generated.is_some() || !self.lookups.is_empty()
    }

    /// Gives each item its target key and translates its lookups, in place.
    /// `live`: (index in the task, op, record); `keys`: ledger text of each
    /// task item's source key.
    pub async fn resolve(
        &self,
        target: &dyn Target,
        store: &Store,
        live: &mut [(usize, Op, Row<'_>)],
        keys: &[String],
    ) -> Result<Vec<Resolution>, IdentityError> {
        let mut out = vec![Resolution::Ready; live.len()];
        if let Some(column) = &self.generated {
            self.target_keys(column, target, store, live, keys, &mut out)
                .await?;
        }
        for (field, other) in &self.lookups {
            let wanted: Vec<String> = live
                .iter()
                .filter(|(_, op, _)| *op == Op::Upsert)
                .filter_map(|(_, _, r)| reference(r.record()?, field))
                .collect();
            let map = store.id_map(other, &wanted).await?;
            for ((_, op, record), resolution) in live.iter_mut().zip(&mut out) {
                if *op != Op::Upsert || *resolution != Resolution::Ready {
                    continue;
                }
                let Some(record) = record.record_mut() else {
                    continue;
                };
                let Some(source_key) = reference(record, field) else {
                    continue;
                };
                match map.get(&source_key).and_then(|t| first_value(t)) {
                    Some(target_key) => {
                        record.insert(field.clone(), target_key);
                    }
                    None => {
                        *resolution = Resolution::Wait(format!(
                            "field `{field}` refers to {source_key} of job {other}, which is not synced yet; waiting for it"
                        ))
                    }
                }
            }
        }
        Ok(out)
    }

    /// Target keys from the job's id map; new objects get keys from the
    /// target, recorded before anything is written.
    async fn target_keys(
        &self,
        column: &str,
        target: &dyn Target,
        store: &Store,
        live: &mut [(usize, Op, Row<'_>)],
        keys: &[String],
        out: &mut [Resolution],
    ) -> Result<(), IdentityError> {
        let source_keys: Vec<String> = live.iter().map(|(i, _, _)| keys[*i].clone()).collect();
        let mut map = store.id_map(&self.job, &source_keys).await?;
        let new: Vec<&String> = live
            .iter()
            .filter(|(i, op, _)| *op == Op::Upsert && !map.contains_key(&keys[*i]))
            .map(|(i, _, _)| &keys[*i])
            .collect();
        if !new.is_empty() {
            let floor = store.id_map_max(&self.job).await?;
            let allocated = target
                .allocate_keys(new.len(), floor)
                .await?
                .ok_or_else(|| {
                    ConnectorError::failed(
                        &target.describe(),
                        column,
                        "this target cannot generate keys; map the target key from a source field",
                    )
                })?;
            let pairs: Vec<(String, String)> = new
                .iter()
                .zip(&allocated)
                .map(|(s, t)| ((*s).clone(), key_text(std::slice::from_ref(t))))
                .collect();
            store.record_ids(&self.job, &pairs).await?;
            // Another worker may have mapped one of these keys first: its
            // key is the one recorded.
            let recorded: Vec<String> = pairs.into_iter().map(|(s, _)| s).collect();
            map.extend(store.id_map(&self.job, &recorded).await?);
        }
        for ((i, op, record), resolution) in live.iter_mut().zip(out) {
            match map.get(&keys[*i]).and_then(|t| first_value(t)) {
                Some(target_key) => {
                    let Some(record) = record.record_mut() else {
                        continue;
                    };
                    if *op == Op::Delete {
                        record.clear();
                    }
                    record.insert(column.to_string(), target_key);
                }
                None if *op == Op::Delete => *resolution = Resolution::Nothing,
                // Every upsert's key was just recorded; should the store not
                // return it, the item waits rather than be written keyless.
                None => *resolution = Resolution::Wait("no target key recorded yet".to_string()),
            }
        }
        Ok(())
    }
}

/// The source key text a lookup field refers to; None for no reference.
fn reference(record: &Record, field: &str) -> Option<String> {
    match record.get(field) {
        None | Some(Value::Null) => None,
        Some(v) => Some(key_text(std::slice::from_ref(v))),
    }
}

fn first_value(key_text: &str) -> Option<Value> {
    serde_json::from_str::<Vec<Value>>(key_text)
        .ok()?
        .into_iter()
        .next()
}
