//! The three passes of a verify: bucket digests at one snapshot, the
//! (key, hash) pairs of differing buckets walked side by side, and the
//! differing keys' fields read again to name what differs.
use std::collections::{BTreeMap, HashMap};

use super::{Sides, VerifyError, FIRST};
use crate::connectors::checksum::{self, Hashing, IntBuckets, Session};
use crate::connectors::sql::canonical::SqlKind;
use crate::sort::{Entry, Merged, Sorter, SORT_MEMORY};

/// Keys re-checked field by field at most; beyond them a difference is
/// counted from its hash alone.
const RECHECKED: usize = 200_000;

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
    /// The key's canonical text: one value, or a JSON array of a composite
    /// key's values.
    pub key: String,
    /// For `different`: the fields whose values differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
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
    let mut found = Found {
        source_rows: s.iter().map(|d| d.rows).sum(),
        target_rows: t.iter().map(|d| d.rows).sum(),
        missing: 0,
        extra: 0,
        different: 0,
        fields: BTreeMap::new(),
        first: Vec::new(),
        all: Vec::new(),
        unlisted: 0,
        source_pushdown: source.pushed_down(),
        target_pushdown: target.pushed_down(),
    };
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
    let suspects = walk(
        s.map_err(VerifyError::Source)??,
        t.map_err(VerifyError::Target)??,
    )?;
    recheck(sides, hashing, suspects, &mut found).await?;
    Ok(found)
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

/// The (key, hash) pairs of a side's buckets `only`, sorted by key text.
async fn sorted(
    session: &mut Session,
    only: Option<&[u32]>,
) -> Result<std::io::Result<Merged>, crate::connectors::ConnectorError> {
    let mut sorter = Sorter::new(SORT_MEMORY);
    let mut failed = None;
    session
        .each_hashed(only, &mut |key, bucket, hash| {
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
        None => sorter.finish(),
    })
}

/// Keys that differ by hash, each with its kind and bucket.
struct Suspects {
    keys: HashMap<String, Kind>,
    buckets: Vec<u32>,
    /// Differences beyond [`RECHECKED`], counted by hash only.
    unchecked: [u64; 3],
}

fn walk(mut source: Merged, mut target: Merged) -> Result<Suspects, VerifyError> {
    let mut suspects = Suspects {
        keys: HashMap::new(),
        buckets: Vec::new(),
        unchecked: [0; 3],
    };
    let note = |suspects: &mut Suspects, key: String, bucket: u64, kind: Kind| {
        if suspects.keys.len() < RECHECKED {
            suspects.keys.insert(key, kind);
            suspects.buckets.push(bucket as u32);
        } else {
            suspects.unchecked[kind as usize] += 1;
        }
    };
    let (mut s, mut t) = (source.next_entry()?, target.next_entry()?);
    loop {
        match (s.take(), t.take()) {
            (None, None) => break,
            (Some(a), None) => {
                note(&mut suspects, a.key, a.at, Kind::Missing);
                s = source.next_entry()?;
            }
            (None, Some(b)) => {
                note(&mut suspects, b.key, b.at, Kind::Extra);
                t = target.next_entry()?;
            }
            (Some(a), Some(b)) => match a.key.cmp(&b.key) {
                std::cmp::Ordering::Less => {
                    note(&mut suspects, a.key, a.at, Kind::Missing);
                    (s, t) = (source.next_entry()?, Some(b));
                }
                std::cmp::Ordering::Greater => {
                    note(&mut suspects, b.key, b.at, Kind::Extra);
                    (s, t) = (Some(a), target.next_entry()?);
                }
                std::cmp::Ordering::Equal => {
                    if a.hash != b.hash {
                        note(&mut suspects, a.key, a.at, Kind::Different);
                    }
                    (s, t) = (source.next_entry()?, target.next_entry()?);
                }
            },
        }
    }
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
    let [missing, extra, different] = suspects.unchecked;
    found.missing += missing;
    found.extra += extra;
    found.different += different;
    found.unlisted = missing + extra + different;
    if suspects.keys.is_empty() {
        return Ok(());
    }
    let (mut source, mut target) = sides.open(false, hashing).await?;
    let keys = &suspects.keys;
    let buckets = &suspects.buckets;
    let (s, t) = tokio::join!(
        rows_of(&mut source, buckets, keys),
        rows_of(&mut target, buckets, keys)
    );
    let (s, t) = (
        s.map_err(VerifyError::Source)?,
        t.map_err(VerifyError::Target)?,
    );
    let mut differences: Vec<Difference> = Vec::new();
    for key in keys.keys() {
        let difference = match (s.get(key), t.get(key)) {
            (Some(_), None) => Some((Kind::Missing, vec![])),
            (None, Some(_)) => Some((Kind::Extra, vec![])),
            (Some(a), Some(b)) => {
                let plan = sides.plan;
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
                (!fields.is_empty()).then_some((Kind::Different, fields))
            }
            (None, None) => None,
        };
        if let Some((kind, fields)) = difference {
            found.all.push((kind, key.clone()));
            differences.push(Difference {
                kind,
                key: shown(key),
                fields,
            });
        }
    }
    differences.sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
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
    Ok(())
}

/// The fields of the rows of `buckets` whose key is one of `keys`.
async fn rows_of(
    session: &mut Session,
    buckets: &[u32],
    keys: &HashMap<String, Kind>,
) -> Result<HashMap<String, Vec<Option<String>>>, crate::connectors::ConnectorError> {
    let mut rows = HashMap::new();
    session
        .each_row(buckets, &mut |key, fields| {
            if keys.contains_key(&key) {
                rows.insert(key, fields);
            }
        })
        .await?;
    Ok(rows)
}

/// A key's canonical text as a person reads it: `42`, or `["a","1"]`.
fn shown(key: &str) -> String {
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
