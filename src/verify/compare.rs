//! The three passes of a verify: bucket digests at one snapshot, the
//! (key, hash) pairs of differing buckets walked side by side, and the
//! differing keys' fields read again to name what differs.
use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Sides, VerifyError, FIRST};
use crate::connectors::checksum::{self, Hashing, IntBuckets, Session};
use crate::connectors::sql::canonical::SqlKind;
use crate::sort::{Entry, Merged, Sorter, SORT_MEMORY};

/// Keys re-checked field by field at most; beyond them a difference is
/// counted from its hash alone.
pub(crate) const RECHECKED: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Missing,
    Extra,
    Different,
}

/// One key that differs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Difference {
    pub kind: Kind,
    /// The source's key as text: one value, or a JSON array of a composite
    /// key's values. None: a target row the source lacks, whose target key
    /// the id map does not know.
    pub key: Option<String>,
    /// The target's key, where it is not the source's (the target
    /// generates it; the id map pairs them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_key: Option<String>,
    /// For `different`: the fields whose values differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

impl Difference {
    /// The keys as a person reads them: the source's, with the target's
    /// where the target generates it.
    pub fn shown_key(&self) -> String {
        match (&self.key, &self.target_key) {
            (Some(key), None) => key.clone(),
            (Some(key), Some(target)) => format!("{key} (target {target})"),
            (None, Some(target)) => format!("target {target} (not in the id map)"),
            (None, None) => String::new(),
        }
    }
}

pub(crate) struct Found {
    pub source_rows: u64,
    pub target_rows: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    pub fields: BTreeMap<String, u64>,
    pub first: Vec<Difference>,
    /// Every difference re-checked: its kind and key text.
    pub all: Vec<(Kind, String)>,
    /// Differences beyond [`RECHECKED`], counted but not listed.
    pub unlisted: u64,
    /// Target keys of extra rows the id map does not know.
    pub unmapped: Vec<String>,
    pub source_pushdown: bool,
    pub target_pushdown: bool,
}

pub(crate) async fn compare(sides: &Sides<'_>) -> Result<Found, VerifyError> {
    let mut hashing = sides.hashing;
    let (mut source, mut target) = sides.open(true, hashing).await?;
    if super::integer_key(sides.plan) {
        if let Some(ranges) = key_ranges(sides, &mut source, &mut target).await? {
            hashing.int_key = Some(ranges);
            source.bucket_by(ranges);
            target.bucket_by(ranges);
        }
    }
    let (s, t) = tokio::join!(source.digests(), target.digests());
    let (s, t) = (
        s.map_err(VerifyError::Source)?,
        t.map_err(VerifyError::Target)?,
    );
    let mut found = Found::new(
        s.iter().map(|d| d.rows).sum(),
        t.iter().map(|d| d.rows).sum(),
        source.pushed_down(),
        target.pushed_down(),
    );
    let differing: Vec<u32> = (0..sides.hashing.buckets)
        .filter(|&b| s[b as usize] != t[b as usize])
        .collect();
    if differing.is_empty() {
        return Ok(found);
    }
    // Every bucket differs when the target is empty: read them all.
    let only = (differing.len() < sides.hashing.buckets as usize / 2).then_some(&differing[..]);
    let (s, t) = tokio::join!(sorted(&mut source, only), sorted(&mut target, only));
    drop((source, target));
    let suspects = suspects_of(
        s.map_err(VerifyError::Source)??.0,
        t.map_err(VerifyError::Target)??.0,
    )?;
    crate::fault::point("verify-compared");
    recheck(sides, hashing, suspects, &mut found).await?;
    Ok(found)
}

impl Found {
    pub fn new(
        source_rows: u64,
        target_rows: u64,
        source_pushdown: bool,
        target_pushdown: bool,
    ) -> Found {
        Found {
            source_rows,
            target_rows,
            missing: 0,
            extra: 0,
            different: 0,
            fields: BTreeMap::new(),
            first: Vec::new(),
            all: Vec::new(),
            unlisted: 0,
            unmapped: Vec::new(),
            source_pushdown,
            target_pushdown,
        }
    }

    /// Differences beyond those re-checked, by kind.
    pub fn count_unchecked(&mut self, [missing, extra, different]: [u64; 3]) {
        self.missing += missing;
        self.extra += extra;
        self.different += different;
        self.unlisted = missing + extra + different;
    }
}

/// Buckets of ranges of a one-column integer key, spanning the keys of
/// the source (of the target when the source is empty or not SQL). Any
/// span is correct, both sides bucketing alike; one that fits the keys
/// keeps the buckets even.
async fn key_ranges(
    sides: &Sides<'_>,
    source: &mut Session,
    target: &mut Session,
) -> Result<Option<IntBuckets>, VerifyError> {
    let mut span = None;
    if sides.source.kind() != SqlKind::Objects {
        span = source.key_span().await.map_err(VerifyError::Source)?;
    }
    if span.is_none() {
        span = target.key_span().await.map_err(VerifyError::Target)?;
    }
    Ok(span.and_then(|(lo, hi)| IntBuckets::spanning(lo, hi, sides.hashing.buckets)))
}

/// The (key, hash) pairs of a side's buckets `only`, sorted by key text,
/// and how many there are.
pub(crate) async fn sorted(
    session: &mut Session,
    only: Option<&[u32]>,
) -> Result<std::io::Result<(Merged, u64)>, crate::connectors::ConnectorError> {
    let mut sorter = Sorter::new(SORT_MEMORY);
    let mut failed = None;
    let mut rows = 0u64;
    session
        .each_hashed(only, &mut |key, bucket, hash| {
            rows += 1;
            if failed.is_none() {
                let entry = Entry {
                    key,
                    hash,
                    at: u64::from(bucket),
                };
                failed = sorter.push(entry).err();
            }
        })
        .await?;
    Ok(match failed {
        Some(e) => Err(e),
        None => sorter.finish().map(|merged| (merged, rows)),
    })
}

/// Keys that differ by hash, each with its kind and bucket.
struct Suspects {
    keys: HashMap<String, Kind>,
    buckets: Vec<u32>,
    /// Differences beyond [`RECHECKED`], counted by hash only.
    unchecked: [u64; 3],
}

impl Suspects {
    fn note(&mut self, kind: Kind, key: String, bucket: u64) {
        if self.keys.len() < RECHECKED {
            self.keys.insert(key, kind);
            self.buckets.push(bucket as u32);
        } else {
            self.unchecked[kind as usize] += 1;
        }
    }
}

/// Walks two sides' (key, hash) entries sorted by key, handing each that
/// differs to `note`: a source's entry for missing and different keys, a
/// target's for extra ones.
pub(crate) fn walk(
    mut source: Merged,
    mut target: Merged,
    note: &mut dyn FnMut(Kind, Entry),
) -> std::io::Result<()> {
    let (mut s, mut t) = (source.next_entry()?, target.next_entry()?);
    loop {
        match (s.take(), t.take()) {
            (None, None) => break,
            (Some(a), None) => {
                note(Kind::Missing, a);
                s = source.next_entry()?;
            }
            (None, Some(b)) => {
                note(Kind::Extra, b);
                t = target.next_entry()?;
            }
            (Some(a), Some(b)) => match a.key.cmp(&b.key) {
                std::cmp::Ordering::Less => {
                    note(Kind::Missing, a);
                    (s, t) = (source.next_entry()?, Some(b));
                }
                std::cmp::Ordering::Greater => {
                    note(Kind::Extra, b);
                    (s, t) = (Some(a), target.next_entry()?);
                }
                std::cmp::Ordering::Equal => {
                    if a.hash != b.hash {
                        note(Kind::Different, a);
                    }
                    (s, t) = (source.next_entry()?, target.next_entry()?);
                }
            },
        }
    }
    Ok(())
}

fn suspects_of(source: Merged, target: Merged) -> Result<Suspects, VerifyError> {
    let mut suspects = Suspects {
        keys: HashMap::new(),
        buckets: Vec::new(),
        unchecked: [0; 3],
    };
    walk(source, target, &mut |kind, entry| {
        suspects.note(kind, entry.key, entry.at)
    })?;
    suspects.buckets.sort_unstable();
    suspects.buckets.dedup();
    Ok(suspects)
}

/// Reads the suspects' rows again, outside the snapshot: a key whose rows
/// are now alike changed while the verify ran, and is not reported.
async fn recheck(
    sides: &Sides<'_>,
    hashing: Hashing,
    suspects: Suspects,
    found: &mut Found,
) -> Result<(), VerifyError> {
    found.count_unchecked(suspects.unchecked);
    if suspects.keys.is_empty() {
        return Ok(());
    }
    let (mut source, mut target) = sides.open(false, hashing).await?;
    let keys: HashSet<String> = suspects.keys.into_keys().collect();
    let buckets = &suspects.buckets;
    let (s, t) = tokio::join!(
        rows_of(&mut source, buckets, &keys),
        rows_of(&mut target, buckets, &keys)
    );
    let (s, t) = (
        s.map_err(VerifyError::Source)?,
        t.map_err(VerifyError::Target)?,
    );
    let pairs: Vec<(Option<String>, Option<String>)> = keys
        .into_iter()
        .map(|k| (Some(k.clone()), Some(k)))
        .collect();
    judge(sides.plan, &pairs, &s, &t, found);
    Ok(())
}

/// Rows read again: each key text's compared field texts.
pub(crate) type Rows = HashMap<String, Vec<Option<String>>>;

/// What the rows read again of each (source key, target key) pair make
/// of it, counted and listed in `found`.
pub(crate) fn judge(
    plan: &super::Plan,
    pairs: &[(Option<String>, Option<String>)],
    s: &Rows,
    t: &Rows,
    found: &mut Found,
) {
    let translated = plan.translation.as_ref().is_some_and(|t| t.key.is_some());
    let mut differences: Vec<Difference> = Vec::new();
    for (source_key, target_key) in pairs {
        let a = source_key.as_ref().and_then(|k| s.get(k));
        let b = target_key.as_ref().and_then(|k| t.get(k));
        let (kind, fields) = match (a, b) {
            (Some(_), None) => (Kind::Missing, vec![]),
            (None, Some(_)) => (Kind::Extra, vec![]),
            (Some(a), Some(b)) => {
                let fields: Vec<String> = plan
                    .fields
                    .iter()
                    .zip(&plan.target.filled)
                    .zip(a.iter().zip(b))
                    .filter(|((_, filled), (x, y))| match filled {
                        // The target may keep its own value; only a hole
                        // where the source has one differs.
                        true => x.is_some() && y.is_none(),
                        false => x != y,
                    })
                    .map(|((name, _), _)| name.clone())
                    .collect();
                if fields.is_empty() {
                    continue;
                }
                (Kind::Different, fields)
            }
            (None, None) => continue,
        };
        // A target row without a source key: the id map does not know it,
        // so ferry never wrote it.
        match source_key {
            Some(key) => found.all.push((kind, key.clone())),
            None => found.unmapped.extend(target_key.as_deref().map(shown)),
        }
        differences.push(Difference {
            kind,
            key: source_key.as_deref().map(shown),
            target_key: target_key.as_deref().filter(|_| translated).map(shown),
            fields,
        });
    }
    differences
        .sort_by(|a, b| (a.kind, &a.key, &a.target_key).cmp(&(b.kind, &b.key, &b.target_key)));
    let mut listed = [0usize; 3];
    for d in differences {
        match d.kind {
            Kind::Missing => found.missing += 1,
            Kind::Extra => found.extra += 1,
            Kind::Different => found.different += 1,
        }
        for f in &d.fields {
            *found.fields.entry(f.clone()).or_default() += 1;
        }
        if listed[d.kind as usize] < FIRST {
            listed[d.kind as usize] += 1;
            found.first.push(d);
        }
    }
}

/// The fields of the rows of `buckets` whose key is one of `keys`.
pub(crate) async fn rows_of(
    session: &mut Session,
    buckets: &[u32],
    keys: &HashSet<String>,
) -> Result<Rows, crate::connectors::ConnectorError> {
    let mut rows = HashMap::new();
    if keys.is_empty() {
        return Ok(rows);
    }
    session
        .each_row(Some(buckets), &mut |key, fields| {
            if keys.contains(&key) {
                rows.insert(key, fields);
            }
        })
        .await?;
    Ok(rows)
}

/// A key's canonical text as a person reads it: `42`, or `["a","1"]`.
pub(crate) fn shown(key: &str) -> String {
    match checksum::key_parts(key).as_slice() {
        [Some(one)] => one.clone(),
        parts => serde_json::Value::from(
            parts
                .iter()
                .map(|p| p.clone().map_or(serde_json::Value::Null, Into::into))
                .collect::<Vec<serde_json::Value>>(),
        )
        .to_string(),
    }
}
