//! What a job's rules make of one object against the target's current row,
//! without touching the target: `ferry test` holds it against the job's
//! `[[tests]]`. It evaluates, row by row, the same rule plan
//! ([`crate::rules`]) the SQL targets render into their statements;
//! `tests/rule_tests.rs` runs the same cases through real targets to keep
//! the two in agreement.
use serde_json::Value;

use super::Mapping;
use crate::config::{Job, WriteKind};
use crate::model::Record;
use crate::rules::{DeleteAs, WriteRules};

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
            if !rules.inserts_new_rows() {
                return Predicted::skip();
            }
            Predicted {
                kind: WriteKind::Insert,
                fields: Mapping::new(job).upsert(object.clone()),
            }
        }
        (Some(object), Some(row)) => {
            if rules.mode == crate::config::Mode::Insert {
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
            let columns: Vec<String> = mapped.keys().cloned().collect();
            for (column, condition) in rules.update_fields(&columns) {
                let incoming = &mapped[column];
                let current = row.get(column).unwrap_or(&Value::Null);
                if condition.writes(current.is_null(), Some(newer)) && incoming != current {
                    fields.insert(column.to_string(), incoming.clone());
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
        (None, Some(row)) => match rules.delete_as() {
            DeleteAs::Remove => Predicted {
                kind: WriteKind::Delete,
                fields: Record::new(),
            },
            DeleteAs::MarkDeleted(column) if soft_deleted(&rules, row).is_none() => update_or_skip(
                Record::from_iter([(column.to_string(), Value::String(DELETION_TIME.to_string()))]),
            ),
            DeleteAs::MarkDeleted(_) | DeleteAs::Keep => Predicted::skip(),
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

/// The soft-delete column, when the row is marked deleted.
fn soft_deleted<'r>(rules: &'r WriteRules, row: &Record) -> Option<&'r str> {
    let column = rules.undelete()?;
    row.get(column)
        .is_some_and(|v| !v.is_null())
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
