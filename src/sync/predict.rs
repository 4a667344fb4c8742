//! What a job's rules make of one object against the target's current row,
//! without touching the target: `ferry test` holds it against the job's
//! `[[tests]]`. It states, row by row, what the SQL targets apply in bulk
//! (`connectors::sql::assignments`); `tests/rule_tests.rs` runs the same
//! cases through real targets to keep the two in agreement.
use serde_json::Value;

use super::Mapping;
use crate::config::{Deletes, Job, Mode, Owner, WriteKind};
use crate::connectors::WriteRules;
use crate::model::Record;

/// The value a soft delete writes: the time of the write, unknown offline.
pub const DELETION_TIME: &str = "now";

#[derive(Debug, Clone, PartialEq)]
pub struct Predicted {
    pub kind: WriteKind,
    /// For an insert every field written; for an update the fields whose
    /// value changes.
    pub fields: Record,
}

impl Predicted {
    fn skip() -> Self {
        Predicted {
            kind: WriteKind::Skip,
            fields: Record::new(),
        }
    }
}

/// `source`: the object (None: deleted at the source); `target`: the target's
/// row for its key (None: no row); `written`: what ferry last wrote there.
/// A field that both sides changed since `written` makes the write a
/// [`WriteKind::Conflict`], whose fields are what the owners decide.
pub fn predict(
    job: &Job,
    source: Option<&Record>,
    target: Option<&Record>,
    written: Option<&Record>,
) -> Predicted {
    let rules = WriteRules::from_job(job);
    match (source, target) {
        (Some(object), None) => {
            if rules.mode == Mode::Update {
                return Predicted::skip();
            }
            Predicted {
                kind: WriteKind::Insert,
                fields: Mapping::new(job).upsert(object.clone()),
            }
        }
        (Some(object), Some(row)) => {
            if rules.mode == Mode::Insert {
                return Predicted::skip();
            }
            let mapped = Mapping::new(job).upsert(object.clone());
            let newer = rules
                .updated_at
                .as_ref()
                .is_none_or(|u| is_later(mapped.get(u), row.get(u)));
            let conflict = written.is_some_and(|w| {
                w.iter().any(|(column, last)| {
                    let incoming = mapped.get(column).unwrap_or(&Value::Null);
                    let current = row.get(column).unwrap_or(&Value::Null);
                    current != last && incoming != last && current != incoming
                })
            });
            let mut fields = Record::new();
            for (column, incoming) in mapped {
                if rules.key.contains(&column) {
                    continue;
                }
                let current = row.get(&column).unwrap_or(&Value::Null);
                let clock = rules.updated_at.as_ref() == Some(&column);
                let written = match rules.owner(&column) {
                    _ if clock && !newer => continue,
                    _ if clock => incoming,
                    Owner::Newest if !newer => continue,
                    Owner::Source | Owner::Newest => incoming,
                    Owner::Fill if current.is_null() => incoming,
                    Owner::Fill | Owner::Target => continue,
                };
                if &written != current {
                    fields.insert(column, written);
                }
            }
            // A soft-deleted row whose object is back is un-deleted.
            if let Some(column) = soft_deleted(&rules, row) {
                fields.insert(column.to_string(), Value::Null);
            }
            if conflict {
                return Predicted {
                    kind: WriteKind::Conflict,
                    fields,
                };
            }
            update_or_skip(fields)
        }
        (None, Some(row)) => match rules.deletes {
            Deletes::Propagate => Predicted {
                kind: WriteKind::Delete,
                fields: Record::new(),
            },
            Deletes::Soft => match (&rules.soft_delete, soft_deleted(&rules, row)) {
                (Some(column), None) => update_or_skip(Record::from_iter([(
                    column.clone(),
                    Value::String(DELETION_TIME.to_string()),
                )])),
                _ => Predicted::skip(),
            },
            Deletes::Ignore => Predicted::skip(),
        },
        (None, None) => Predicted::skip(),
    }
}

/// The SQL rule `existing IS NULL OR incoming > existing`, offline: change
/// times compare as their text (ISO 8601 in one format sorts in time order).
fn is_later(incoming: Option<&Value>, existing: Option<&Value>) -> bool {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match (incoming, existing) {
        (_, None | Some(Value::Null)) => true,
        (None | Some(Value::Null), _) => false,
        (Some(i), Some(e)) => text(i) > text(e),
    }
}

fn soft_deleted<'r>(rules: &'r WriteRules, row: &Record) -> Option<&'r str> {
    let column = rules.soft_delete.as_deref()?;
    (rules.deletes == Deletes::Soft && row.get(column).is_some_and(|v| !v.is_null()))
        .then_some(column)
}

fn update_or_skip(fields: Record) -> Predicted {
    if fields.is_empty() {
        return Predicted::skip();
    }
    Predicted {
        kind: WriteKind::Update,
        fields,
    }
}
