//! `ferry verify --repair`: the keys a verify found different become one
//! resync of those keys (`Subset::listed`), which the normal lane syncs
//! under the job's rules. A target row the source lacks is a delete only
//! where the ledger holds its key, so such keys are first noted in the
//! ledger as held (the ledger was wrong about them).
use serde_json::Value;

use super::{Kind, Outcome};
use crate::config::Job;
use crate::connectors::checksum::key_parts;
use crate::connectors::Subset;

/// What a repair resends and deletes.
#[derive(Debug, Clone)]
pub struct Repair {
    /// The differing keys, for a resync.
    pub subset: Subset,
    /// Ledger key texts of target rows the source lacks.
    pub held: Vec<String>,
}

/// The repair of what `outcome` found, or why there is none to make.
pub fn repair(job: &Job, outcome: &Outcome) -> Result<Repair, String> {
    if outcome.unlisted > 0 {
        return Err(format!(
            "{} difference(s) beyond the {} re-checked: repair the whole table with `ferry run --once --full {}`",
            outcome.unlisted,
            outcome.keys.len(),
            job.name
        ));
    }
    let mut listed = Vec::new();
    let mut held = Vec::new();
    for (kind, text) in &outcome.keys {
        let allowed = match kind {
            Kind::Missing => outcome.missing_allowed,
            Kind::Extra => outcome.extra_allowed,
            Kind::Different => false,
        };
        if allowed {
            continue;
        }
        let values = source_values(job, outcome, text)?;
        if *kind == Kind::Extra {
            held.push(crate::model::key_text(&values));
        }
        listed.push(values);
    }
    Ok(Repair {
        subset: Subset {
            listed: Some(listed),
            ..Subset::default()
        },
        held,
    })
}

/// A key text's values in the source's key order, as the source renders
/// them (a number for an integer column, text otherwise).
fn source_values(job: &Job, outcome: &Outcome, text: &str) -> Result<Vec<Value>, String> {
    let parts = key_parts(text);
    job.source
        .key
        .iter()
        .map(|name| {
            let at = outcome.source_key.iter().position(|c| &c.name == name);
            let (Some(at), Some(Some(part))) = (at, at.and_then(|at| parts.get(at))) else {
                return Err(format!("key column `{name}` has no value in key {text:?}"));
            };
            super::translate::value_of(part, &outcome.source_key[at])
                .map_err(|why| format!("{why}: repair with `ferry resync {}`", job.name))
        })
        .collect()
}
