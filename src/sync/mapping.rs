//! `[fields]`: target field ← source field, for upserts and for delete keys.
use serde_json::Value;

use crate::config::Job;
use crate::model::Record;

#[derive(Debug, Clone)]
pub struct Mapping {
    /// (target field, source field); empty: every source field under its own name.
    fields: Vec<(String, String)>,
    /// For each target key field, its position in the source key.
    delete_key: Vec<(String, Option<usize>)>,
    source_key_len: usize,
    /// `owner = "newest"`: (target `updated_at`, source cursor). The write
    /// carries the source's change time in the target's column, unless a
    /// field already maps one there, so the target can compare the two.
    clock: Option<(String, String)>,
}

impl Mapping {
    pub fn new(job: &Job) -> Mapping {
        // Child rows travel under their name, for the target to write.
        let children = job.children.keys().map(|name| (name.clone(), name.clone()));
        let fields: Vec<(String, String)> = job
            .fields
            .iter()
            .map(|f| (f.target.clone(), f.from.clone()))
            .chain(children.filter(|_| !job.fields.is_empty()))
            .collect();
        let delete_key = job
            .target
            .key
            .iter()
            .map(|k| {
                let from = fields
                    .iter()
                    .find(|(t, _)| t == k)
                    .map_or(k.as_str(), |(_, s)| s.as_str());
                (k.clone(), job.source.key.iter().position(|s| s == from))
            })
            .collect();
        let clock = job
            .newest_clock()
            .filter(|(updated_at, _)| !fields.iter().any(|(t, _)| t == updated_at))
            .map(|(t, s)| (t.to_string(), s.to_string()));
        Mapping {
            fields,
            delete_key,
            source_key_len: job.source.key.len(),
            clock,
        }
    }

    /// The target fields of an upserted object; without `[fields]` the
    /// object itself.
    pub fn upsert(&self, data: Record) -> Record {
        let time = self.clock.as_ref().map(|(updated_at, cursor)| {
            (updated_at, data.get(cursor).cloned().unwrap_or(Value::Null))
        });
        let mut mapped = if self.fields.is_empty() {
            data
        } else {
            self.fields
                .iter()
                .map(|(t, s)| (t.clone(), data.get(s).cloned().unwrap_or(Value::Null)))
                .collect()
        };
        if let Some((updated_at, time)) = time {
            mapped.entry(updated_at.clone()).or_insert(time);
        }
        mapped
    }

    /// Whether upserts go to the target as the source gave them (no
    /// `[fields]`, no change time added): then their JSON need not be read.
    pub fn keeps_objects(&self) -> bool {
        self.fields.is_empty() && self.clock.is_none()
    }

    /// The target key of a deleted object, from its source key values.
    pub fn delete(&self, key: &[Value]) -> Record {
        self.delete_key
            .iter()
            .map(|(t, pos)| {
                (
                    t.clone(),
                    pos.and_then(|p| key.get(p)).cloned().unwrap_or(Value::Null),
                )
            })
            .collect()
    }

    /// The source key of a target row, from its key values (in `[target]
    /// key` order); None when a source key column has no target key field.
    pub fn source_key(&self, target_key: &[Value]) -> Option<Vec<Value>> {
        (0..self.source_key_len)
            .map(|i| {
                let j = self.delete_key.iter().position(|(_, p)| *p == Some(i))?;
                target_key.get(j).cloned()
            })
            .collect()
    }

    /// A target row's key as the record a delete names it by.
    pub fn target_key_record(&self, target_key: Vec<Value>) -> Record {
        self.delete_key
            .iter()
            .map(|(t, _)| t.clone())
            .zip(target_key)
            .collect()
    }
}
