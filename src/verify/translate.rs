//! Rows paired through id maps. A job whose target generates its keys
//! records, per source key, the key the target gave it; a `lookup` field
//! holds another job's target key where the source holds that job's
//! source key. Nothing in either database pairs them, so the source's rows
//! are carried to the target's keys and values here, one column at a
//! time: the rows wait in a spill file while their column's texts are
//! sorted and walked beside the id map, sorted alike, both in bounded
//! memory. The rows then hash as the target's would, and sort by their new
//! key to be walked beside the target's rows as any verify walks them.
use std::io;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Plan, VerifyError};
use crate::connectors::checksum::{self, key_parts, Hashing, Session};
use crate::connectors::{Column, ColumnType};
use crate::sort::{Entry, Merged, ObjectSpill, Sorter, SpilledObjects, SORT_MEMORY};
use crate::state::Store;

/// What a verify translates through id maps.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    /// The job whose id map gives the target's key (the verified job's own,
    /// when its target generates the key).
    pub key: Option<String>,
    /// (index among the compared fields, the job whose id map translates it).
    pub fields: Vec<(usize, String)>,
}

impl Translation {
    pub fn is_active(&self) -> bool {
        self.key.is_some() || !self.fields.is_empty()
    }
}

/// The text a source value has when its id map does not hold it: no
/// target value reads so (canonical texts never begin with `\x1e`).
pub fn unmapped_text(value: &str) -> String {
    format!("\x1e{value}")
}

/// One source row on its way to the target's keys and values.
#[derive(Serialize, Deserialize)]
struct Carried {
    /// The source's key text, for reports and repairs.
    source: String,
    key: String,
    fields: Vec<Option<String>>,
}

/// One column carried through one id map.
enum Step<'a> {
    Key(&'a str),
    Field(usize, &'a str),
}

impl Step<'_> {
    fn text<'r>(&self, row: &'r Carried) -> Option<&'r str> {
        match self {
            Step::Key(_) => Some(&row.key),
            Step::Field(i, _) => row.fields.get(*i)?.as_deref(),
        }
    }

    fn job(&self) -> &str {
        match self {
            Step::Key(job) | Step::Field(_, job) => job,
        }
    }

    /// The source columns whose values the id map's source keys hold.
    fn columns<'p>(&self, plan: &'p Plan) -> &'p [Column] {
        match self {
            Step::Key(_) => &plan.source.key,
            Step::Field(i, _) => std::slice::from_ref(&plan.source.fields[*i]),
        }
    }
}

/// The source's rows in the target's keys and values, sorted by key, each
/// entry with its row hash and, as `at`, where the spill returned holds its
/// source key text; and how many rows the source has. A row whose key the
/// id map lacks is not among them: it is handed to `unmapped` (its source
/// key text).
pub(crate) async fn carried(
    session: &mut Session,
    plan: &Plan,
    hashing: Hashing,
    store: &Store,
    unmapped: &mut (dyn FnMut(String) + Send),
) -> Result<(Merged, u64, SpilledObjects), VerifyError> {
    let mut steps = Vec::new();
    if let Some(translation) = &plan.translation {
        if let Some(job) = &translation.key {
            if translation.fields.is_empty() {
                return keyed(session, plan, store, job, unmapped).await;
            }
            steps.push(Step::Key(job));
        }
        for (i, job) in &translation.fields {
            steps.push(Step::Field(*i, job));
        }
    }
    let mut first = Stage::new()?;
    let mut failed = None;
    let mut rows = 0u64;
    session
        .each_row(None, &mut |key, fields| {
            rows += 1;
            if failed.is_none() {
                let row = Carried {
                    source: key.clone(),
                    key,
                    fields,
                };
                failed = first
                    .push(&row, steps.first().and_then(|s| s.text(&row)))
                    .err();
            }
        })
        .await
        .map_err(VerifyError::Source)?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    let mut sources = ObjectSpill::new()?;
    let mut sorted = Sorter::new(SORT_MEMORY);
    let mut stage = Some(first);
    for (n, step) in steps.iter().enumerate() {
        // One stage per step: the loop ends after the last.
        let Some(current) = stage.take() else { break };
        let map = sorted_map(store, step.job(), step.columns(plan)).await?;
        let mut next = match steps.get(n + 1) {
            Some(_) => Some(Stage::new()?),
            None => None,
        };
        current.through(map, &mut |mut row, to| {
            match (step, to) {
                (Step::Key(_), Some(to)) => row.key = to.to_string(),
                (Step::Key(_), None) => {
                    unmapped(row.source);
                    return Ok(());
                }
                (Step::Field(i, _), to) => {
                    if let Some(Some(value)) = row.fields.get_mut(*i) {
                        *value = to.map_or_else(|| unmapped_text(value), |t| t.to_string());
                    }
                }
            }
            match (&mut next, steps.get(n + 1)) {
                (Some(next), Some(then)) => next.push(&row, then.text(&row)),
                _ => {
                    let at = sources.push(row.source.as_bytes())?;
                    sorted.push(Entry {
                        hash: hashing.row_hash(&row.key, &row.fields),
                        key: row.key,
                        at,
                    })
                }
            }
        })?;
        stage = next;
    }
    Ok((sorted.finish()?, rows, sources.finish()?))
}

/// Rows waiting in a spill, and their texts of one column, sorted.
struct Stage {
    rows: ObjectSpill,
    texts: Sorter,
}

impl Stage {
    fn new() -> io::Result<Stage> {
        Ok(Stage {
            rows: ObjectSpill::new()?,
            texts: Sorter::new(SORT_MEMORY),
        })
    }

    /// `text`: the row's text of the column translated next (None: NULL,
    /// which no id map holds).
    fn push(&mut self, row: &Carried, text: Option<&str>) -> io::Result<()> {
        let at = self
            .rows
            .push(&serde_json::to_vec(row).map_err(io::Error::other)?)?;
        self.texts.push(Entry {
            key: text.unwrap_or("\x1e").to_string(),
            hash: 0,
            at,
        })
    }

    /// Each row with what `map` holds for its text (None: nothing), in
    /// order of the texts.
    fn through(
        self,
        map: Merged,
        each: &mut dyn FnMut(Carried, Option<i64>) -> io::Result<()>,
    ) -> io::Result<()> {
        let rows = self.rows.finish()?;
        beside(self.texts.finish()?, map, &mut |entry, to| {
            let row: Carried =
                serde_json::from_slice(&rows.read(entry.at)?).map_err(io::Error::other)?;
            each(row, to)
        })
    }
}

/// Each of `sorted`'s entries with what `map` (sorted alike, one entry per
/// key) holds for its key: the entry's hash, or None.
fn beside(
    mut sorted: Merged,
    mut map: Merged,
    each: &mut dyn FnMut(Entry, Option<i64>) -> io::Result<()>,
) -> io::Result<()> {
    let mut mapped = map.next_entry()?;
    while let Some(entry) = sorted.next_entry()? {
        while mapped.as_ref().is_some_and(|m| m.key < entry.key) {
            mapped = map.next_entry()?;
        }
        let to = mapped
            .as_ref()
            .filter(|m| m.key == entry.key)
            .map(|m| m.hash);
        each(entry, to)?;
    }
    Ok(())
}

/// [`carried`] where only the key is translated: the hashes of the rows'
/// fields, computed where the source can (no row leaves its server), are
/// carried to the target's keys without the rows.
async fn keyed(
    session: &mut Session,
    plan: &Plan,
    store: &Store,
    job: &str,
    unmapped: &mut (dyn FnMut(String) + Send),
) -> Result<(Merged, u64, SpilledObjects), VerifyError> {
    let mut by_source = Sorter::new(SORT_MEMORY);
    let mut failed = None;
    let mut rows = 0u64;
    let mut push = |key, _, hash| {
        rows += 1;
        if failed.is_none() {
            failed = by_source.push(Entry { key, hash, at: 0 }).err();
        }
    };
    let hashed = session.each_hashed(None, &mut push);
    // The map is read while the source hashes its rows.
    let (hashed, map) = tokio::join!(hashed, sorted_map(store, job, &plan.source.key));
    hashed.map_err(VerifyError::Source)?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    let map = map?;
    let mut sources = ObjectSpill::new()?;
    let mut sorted = Sorter::new(SORT_MEMORY);
    beside(by_source.finish()?, map, &mut |entry, to| {
        match to {
            Some(to) => {
                let at = sources.push(entry.key.as_bytes())?;
                sorted.push(Entry {
                    key: to.to_string(),
                    hash: entry.hash,
                    at,
                })?;
            }
            None => unmapped(entry.key),
        }
        Ok(())
    })?;
    Ok((sorted.finish()?, rows, sources.finish()?))
}

/// `job`'s id map sorted by the canonical text of its source keys (values
/// of `columns`); each entry's hash is the target key. A pair that is not
/// a source key of these columns and an integer target key is left out:
/// nothing pairs with it.
async fn sorted_map(store: &Store, job: &str, columns: &[Column]) -> Result<Merged, VerifyError> {
    let mut sorter = Sorter::new(SORT_MEMORY);
    store
        .each_id(job, &mut |source, target| -> Result<(), VerifyError> {
            if let (Some(key), Some(to)) = (canonical_key(&source, columns), target_key(&target)) {
                sorter.push(Entry {
                    key,
                    hash: to,
                    at: 0,
                })?;
            }
            Ok(())
        })
        .await?;
    Ok(sorter.finish()?)
}

/// The canonical text of a key the id map holds as the ledger does (a JSON
/// array of the source's values), as the verify reads `columns`.
pub fn canonical_key(ledger: &str, columns: &[Column]) -> Option<String> {
    let values: Vec<Value> = serde_json::from_str(ledger).ok()?;
    let parts: Vec<Option<String>> = values
        .iter()
        .enumerate()
        .map(|(i, value)| match value {
            Value::Null => None,
            Value::String(s) => Some(match columns.get(i).map(|c| &c.ty) {
                Some(ColumnType::Uuid) => s.to_lowercase(),
                _ => s.clone(),
            }),
            other => Some(other.to_string()),
        })
        .collect();
    Some(checksum::joined(&parts))
}

/// A generated target key (the id map's `[n]`).
pub fn target_key(ledger: &str) -> Option<i64> {
    match serde_json::from_str::<Vec<Value>>(ledger).ok()?.as_slice() {
        [one] => one.as_i64(),
        _ => None,
    }
}

/// The ledger text of a key's canonical text, its values rendered as the
/// source renders `columns` (a number for an integer column, text otherwise).
pub fn ledger_key(text: &str, columns: &[Column]) -> Result<String, String> {
    let parts = key_parts(text);
    let values = columns
        .iter()
        .zip(parts.iter().chain(std::iter::repeat(&None)))
        .map(|(column, part)| match part {
            Some(part) => value_of(part, column),
            None => Err(format!(
                "key column `{}` has no value in key {text:?}",
                column.name
            )),
        })
        .collect::<Result<Vec<Value>, String>>()?;
    Ok(crate::model::key_text(&values))
}

/// A key column's value from its canonical text.
pub fn value_of(part: &str, column: &Column) -> Result<Value, String> {
    match &column.ty {
        ColumnType::Int(_) => part
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("key `{part}` of `{}` is not an integer", column.name)),
        ColumnType::Text(_) | ColumnType::Char(_) | ColumnType::Uuid | ColumnType::Any => {
            Ok(Value::from(part.to_string()))
        }
        other => Err(format!(
            "`{}` is {other}: only keys of integers, text and UUIDs are found again by value",
            column.name
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(name: &str) -> Column {
        Column::sqlite(name.into(), "INTEGER".into())
    }

    #[test]
    fn ledger_and_canonical_keys_are_one_another_s_inverse() {
        let columns = [int("a"), Column::sqlite("b".into(), "TEXT".into())];
        let text = canonical_key(r#"[7,"x y"]"#, &columns).unwrap();
        assert_eq!(text, "7\x1fx y");
        assert_eq!(ledger_key(&text, &columns).unwrap(), r#"[7,"x y"]"#);
        assert_eq!(target_key("[42]"), Some(42));
        assert_eq!(target_key(r#"["a"]"#), None);
        assert!(ledger_key("x", &[int("a")]).is_err());
    }
}
