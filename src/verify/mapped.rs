//! The compare of a job whose rows pair through id maps (see
//! [`translate`]). A bucket's sums cannot pair when the two sides' keys
//! differ, so both sides' (key, hash) pairs are read whole: the source's
//! carried to the target's keys and values, the target's hashed in its
//! server. The pairs that differ are read again outside the snapshot and
//! translated anew, through the id maps as they are by then.
use std::collections::{HashMap, HashSet};

use super::compare::{judge, rows_of, sorted, walk, Found, Kind, Rows, RECHECKED};
use super::translate::{self, canonical_key, ledger_key, target_key, unmapped_text};
use super::{Plan, Sides, VerifyError};
use crate::connectors::checksum::{bucket_of, Hashing};
use crate::connectors::Column;
use crate::state::Store;

/// A (source key, target key) pair that may differ; None where a side's
/// key is not known.
type Pair = (Option<String>, Option<String>);

pub(crate) async fn compare(sides: &Sides<'_>, store: &Store) -> Result<Found, VerifyError> {
    let (mut source, mut target) = sides.open(true, sides.hashing).await?;
    let mut pairs: Vec<Pair> = Vec::new();
    let mut unchecked = [0u64; 3];
    let mut unmapped = |key: String| match pairs.len() < RECHECKED {
        true => pairs.push((Some(key), None)),
        false => unchecked[Kind::Missing as usize] += 1,
    };
    let (carried, target_sorted) = tokio::join!(
        translate::carried(&mut source, sides.plan, sides.hashing, store, &mut unmapped),
        sorted(&mut target, None)
    );
    let (carried, source_rows, sources) = carried?;
    let (target_sorted, target_rows) = target_sorted.map_err(VerifyError::Target)??;
    // Rows carried through a lookup's map are hashed here.
    let carried_whole = sides
        .plan
        .translation
        .as_ref()
        .is_some_and(|t| !t.fields.is_empty());
    let mut found = Found::new(
        source_rows,
        target_rows,
        source.pushed_down() && !carried_whole,
        target.pushed_down(),
    );
    drop((source, target));
    let mut failed = None;
    walk(carried, target_sorted, &mut |kind, entry| {
        if pairs.len() >= RECHECKED {
            unchecked[kind as usize] += 1;
            return;
        }
        let source_key = match kind {
            Kind::Extra => None,
            _ => match sources.read(entry.at) {
                Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
                Err(e) => {
                    failed.get_or_insert(e);
                    None
                }
            },
        };
        pairs.push((source_key, Some(entry.key)));
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    found.count_unchecked(unchecked);
    recheck(sides, store, pairs, &mut found).await?;
    Ok(found)
}

/// Reads the pairs' rows again, through the id maps as they are now: a
/// pair whose rows are now alike changed while the verify ran.
async fn recheck(
    sides: &Sides<'_>,
    store: &Store,
    mut pairs: Vec<Pair>,
    found: &mut Found,
) -> Result<(), VerifyError> {
    if pairs.is_empty() {
        return Ok(());
    }
    let plan = sides.plan;
    let Some(translation) = &plan.translation else {
        return Ok(());
    };
    match &translation.key {
        Some(job) => pair_again(store, job, plan, &mut pairs).await?,
        // The key is the source's on both sides.
        None => {
            for (s, t) in &mut pairs {
                if s.is_none() {
                    s.clone_from(t);
                }
            }
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    // Buckets ferry can compute, to find the keys' rows by.
    let hashing = Hashing {
        pg_native: false,
        pg_record: false,
        ..sides.hashing
    };
    let (mut source, mut target) = sides.open(false, hashing).await?;
    let keys = |side: fn(&Pair) -> &Option<String>| -> HashSet<String> {
        pairs.iter().filter_map(|p| side(p).clone()).collect()
    };
    let (source_keys, target_keys) = (keys(|p| &p.0), keys(|p| &p.1));
    let (source_buckets, target_buckets) = (
        buckets(&source_keys, hashing),
        buckets(&target_keys, hashing),
    );
    let (s, t) = tokio::join!(
        rows_of(&mut source, &source_buckets, &source_keys),
        rows_of(&mut target, &target_buckets, &target_keys)
    );
    let mut s = s.map_err(VerifyError::Source)?;
    let t = t.map_err(VerifyError::Target)?;
    for (i, job) in &translation.fields {
        lookups_again(store, job, &plan.source.fields[*i], *i, &mut s).await?;
    }
    judge(plan, &pairs, &s, &t, found);
    Ok(())
}

/// Completes and refreshes the pairs through the job's id map as it is
/// now: the source key of each extra target row the map knows, the target
/// key of every source key.
async fn pair_again(
    store: &Store,
    job: &str,
    plan: &Plan,
    pairs: &mut [Pair],
) -> Result<(), VerifyError> {
    let ledger = |text: &str, columns: &[Column]| {
        ledger_key(text, columns).map_err(|why| VerifyError::Refused(vec![why]))
    };
    let mut extra = Vec::new();
    for (s, t) in pairs.iter() {
        if let (None, Some(t)) = (s, t) {
            extra.push(ledger(t, &plan.target.key)?);
        }
    }
    let sources = store.id_map_reverse(job, &extra).await?;
    for (s, t) in pairs.iter_mut() {
        if let (None, Some(text)) = (&s, &t) {
            let known = sources.get(&ledger(text, &plan.target.key)?);
            *s = known.and_then(|k| canonical_key(k, &plan.source.key));
        }
    }
    let mut wanted = Vec::new();
    for (s, _) in pairs.iter() {
        if let Some(s) = s {
            wanted.push(ledger(s, &plan.source.key)?);
        }
    }
    let targets = store.id_map(job, &wanted).await?;
    for (s, t) in pairs.iter_mut() {
        let Some(text) = s else { continue };
        if let Some(to) = targets.get(&ledger(text, &plan.source.key)?) {
            *t = target_key(to).map(|n| n.to_string());
        }
    }
    Ok(())
}

/// The `i`-th field of `rows` (the source's values of `column`) translated
/// through `job`'s id map as it is now.
async fn lookups_again(
    store: &Store,
    job: &str,
    column: &Column,
    i: usize,
    rows: &mut Rows,
) -> Result<(), VerifyError> {
    let columns = std::slice::from_ref(column);
    let mut ledgers: HashMap<String, String> = HashMap::new();
    for fields in rows.values() {
        if let Some(Some(value)) = fields.get(i) {
            if let Ok(text) = ledger_key(value, columns) {
                ledgers.insert(value.clone(), text);
            }
        }
    }
    let wanted: Vec<String> = ledgers.values().cloned().collect();
    let targets = store.id_map(job, &wanted).await?;
    for fields in rows.values_mut() {
        if let Some(Some(value)) = fields.get_mut(i) {
            let to = ledgers
                .get(value.as_str())
                .and_then(|l| targets.get(l))
                .and_then(|t| target_key(t));
            *value = to.map_or_else(|| unmapped_text(value), |n| n.to_string());
        }
    }
    Ok(())
}

fn buckets(keys: &HashSet<String>, hashing: Hashing) -> Vec<u32> {
    let mut buckets: Vec<u32> = keys.iter().map(|k| bucket_of(k, hashing)).collect();
    buckets.sort_unstable();
    buckets.dedup();
    buckets
}
