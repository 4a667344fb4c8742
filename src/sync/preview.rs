//! What an update would change in the target, for `ferry plan`: each
//! sampled update's mapped fields against the target's row as it is now.
use serde_json::Value;

use super::Mapping;
use crate::config::Job;
use crate::connectors::{ConnectorError, Target, WriteBatch};
use crate::model::{Item, Record};

/// One target field an update would change.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FieldChange {
    pub field: String,
    pub now: Value,
    pub after: Value,
}

/// The fields each of `items` (upserts, with their ledger key text) would
/// change, in order; None when the target cannot read its rows. A key the
/// target has no row for is left out (it was deleted there: the update
/// inserts it again).
pub async fn field_changes(
    job: &Job,
    target: &dyn Target,
    items: &[(String, Item)],
) -> Result<Option<Vec<(String, Vec<FieldChange>)>>, ConnectorError> {
    let mapping = Mapping::new(job);
    let mut mapped: Vec<(String, Record)> = Vec::with_capacity(items.len());
    for (key, item) in items {
        // Detection wrote the item from a JSON object just now.
        if let Ok(record) = item.record() {
            mapped.push((key.clone(), mapping.upsert(record)));
        }
    }
    let batch = WriteBatch {
        upserts: mapped.iter().map(|(_, r)| r).collect(),
        ..Default::default()
    };
    let Some(rows) = target.current_rows(&batch).await? else {
        return Ok(None);
    };
    let key_of = |r: &Record| -> Vec<String> {
        job.target
            .key
            .iter()
            .map(|k| text(r.get(k).unwrap_or(&Value::Null)))
            .collect()
    };
    let mut out = Vec::new();
    for (key, after) in &mapped {
        let Some(now) = rows.iter().find(|row| key_of(row) == key_of(after)) else {
            continue;
        };
        let changes = after
            .iter()
            .filter(|(field, _)| !job.target.key.contains(field))
            .filter_map(|(field, value)| {
                let current = now.get(field).cloned().unwrap_or(Value::Null);
                (!same(&current, value)).then(|| FieldChange {
                    field: field.clone(),
                    now: current,
                    after: value.clone(),
                })
            })
            .collect();
        out.push((key.clone(), changes));
    }
    Ok(Some(out))
}

/// A value as text, strings without their quotes: a key read back from
/// the target may be typed differently from the source's.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// Equal as the target stores them: `12.50` and `12.5`, `"5"` and `5`.
fn same(a: &Value, b: &Value) -> bool {
    if a.is_null() || b.is_null() {
        return a == b;
    }
    a == b
        || text(a) == text(b)
        || matches!(
            (text(a).parse::<f64>(), text(b).parse::<f64>()),
            (Ok(x), Ok(y)) if x == y
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_and_their_text_are_the_same_value() {
        assert!(same(&json!(12.5), &json!("12.50")));
        assert!(same(&json!("5"), &json!(5)));
        assert!(!same(&json!("a"), &json!("b")));
        assert!(!same(&Value::Null, &json!("")));
        assert!(!same(&Value::Null, &json!("null")));
    }
}
