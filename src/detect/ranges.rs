//! Range digests for the diff's pushdown: buckets of a job's integer keys
//! whose count and sum of source hashes the ledger recorded. The source
//! computes the same two numbers per bucket in one grouped query; buckets
//! that answer alike are unchanged, and only the others' (key, hash) pairs
//! are read. Sums are additive modulo 2⁶⁴, never XOR (which cancels two
//! equal rows).
use std::collections::{BTreeMap, BTreeSet};

use crate::connectors::{bucket_of, BucketDigest, ConnectorError, Source};
use crate::state::RangeDigests;

/// About this many rows per bucket: a bucket changed costs its rows' pairs.
pub const ROWS_PER_BUCKET: i64 = 4096;

/// Which parts of the key space a diff reads.
#[derive(Debug)]
pub struct Plan {
    pub width: i64,
    /// Inclusive key ranges covering the changed buckets, in key order.
    pub ranges: Vec<(i64, i64)>,
    pub changed: Vec<i64>,
    /// Rows of the buckets left unread (the source's count).
    pub unchanged_rows: u64,
}

/// Compares the source's digests with the recorded ones. None: read every
/// pair (no digests recorded, the source cannot compute them, most buckets
/// changed, or buckets grew too large for their width).
pub async fn plan(
    source: &dyn Source,
    recorded: &RangeDigests,
) -> Result<Option<Plan>, ConnectorError> {
    let Some(width) = recorded.width.filter(|_| !recorded.mostly_changed) else {
        return Ok(None);
    };
    let Some(current) = source.hash_digests(width).await? else {
        return Ok(None);
    };
    let rows: i64 = current.iter().map(|d| d.rows).sum();
    if rows > 4 * ROWS_PER_BUCKET * current.len().max(1) as i64 {
        return Ok(None);
    }
    let mut changed = BTreeSet::new();
    let mut unchanged_rows = 0u64;
    for d in &current {
        match recorded.buckets.get(&d.bucket) == Some(&(d.rows, d.sum)) {
            true => unchanged_rows += d.rows.max(0) as u64,
            false => {
                changed.insert(d.bucket);
            }
        }
    }
    let present: BTreeSet<i64> = current.iter().map(|d| d.bucket).collect();
    changed.extend(recorded.buckets.keys().filter(|b| !present.contains(b)));
    if changed.len() * 2 > present.len().max(recorded.buckets.len()) {
        return Ok(None);
    }
    let changed: Vec<i64> = changed.into_iter().collect();
    Ok(Some(Plan {
        width,
        ranges: ranges(&changed, width),
        changed,
        unchanged_rows,
    }))
}

/// Runs of consecutive buckets as inclusive key ranges.
fn ranges(buckets: &[i64], width: i64) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    let first_key = |b: i64| b.saturating_mul(width);
    let last_key = |b: i64| b.saturating_add(1).saturating_mul(width).saturating_sub(1);
    let mut run: Option<(i64, i64)> = None;
    for &b in buckets {
        run = match run {
            Some((lo, hi)) if hi.checked_add(1) == Some(b) => Some((lo, b)),
            Some((lo, hi)) => {
                out.push((first_key(lo), last_key(hi)));
                Some((b, b))
            }
            None => Some((b, b)),
        };
    }
    if let Some((lo, hi)) = run {
        out.push((first_key(lo), last_key(hi)));
    }
    out
}

/// The bucket width for keys spanning `min..=max`, `count` of them.
pub fn width_for(min: i64, max: i64, count: u64) -> i64 {
    let span = i128::from(max) - i128::from(min) + 1;
    let buckets = (count as i128 / i128::from(ROWS_PER_BUCKET)).max(1);
    let width = (span + buckets - 1) / buckets;
    i64::try_from(width.max(1)).unwrap_or(i64::MAX)
}

/// The digests of the buckets a diff read, from the hashes it recorded in
/// the ledger; a bucket where a recorded hash is unknown (a row gone
/// before it was read whole) is left without one, to be read next time.
#[derive(Debug, Default)]
pub struct Tally {
    width: Option<i64>,
    buckets: BTreeMap<i64, (i64, i64)>,
    unknown: BTreeSet<i64>,
}

impl Tally {
    pub fn new(width: Option<i64>) -> Tally {
        Tally {
            width,
            ..Tally::default()
        }
    }

    /// A key (ledger text) and the source hash the ledger holds for it.
    pub fn add(&mut self, key: &str, hash: Option<i64>) {
        let Some(width) = self.width else { return };
        let Some(key) = integer_key(key) else {
            // A key that is not one integer: buckets cannot hold it.
            self.width = None;
            return;
        };
        let bucket = bucket_of(key, width);
        match hash {
            Some(hash) => {
                let entry = self.buckets.entry(bucket).or_default();
                entry.0 += 1;
                entry.1 = entry.1.wrapping_add(hash);
            }
            None => {
                self.unknown.insert(bucket);
            }
        }
    }

    pub fn width(&self) -> Option<i64> {
        self.width
    }

    /// The digests to record, and how many of them differ from `recorded`.
    pub fn digests(&self, recorded: &RangeDigests) -> (Vec<BucketDigest>, usize) {
        let digests: Vec<BucketDigest> = self
            .buckets
            .iter()
            .filter(|(b, _)| !self.unknown.contains(b))
            .map(|(&bucket, &(rows, sum))| BucketDigest { bucket, rows, sum })
            .collect();
        let differ = digests
            .iter()
            .filter(|d| recorded.buckets.get(&d.bucket) != Some(&(d.rows, d.sum)))
            .count();
        (digests, differ)
    }
}

/// `[123]`: 123 (a ledger key that is one integer).
pub(super) fn integer_key(text: &str) -> Option<i64> {
    text.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_buckets_make_one_range() {
        assert_eq!(
            ranges(&[-2, -1, 0, 5, 7, 8], 10),
            [(-20, 9), (50, 59), (70, 89)]
        );
        assert_eq!(ranges(&[], 10), []);
    }

    #[test]
    fn a_width_gives_about_the_rows_per_bucket() {
        assert_eq!(width_for(1, 1_000_000, 1_000_000), 4099);
        assert_eq!(width_for(5, 5, 1), 1);
        assert_eq!(width_for(i64::MIN, i64::MAX, 10), i64::MAX);
    }

    #[test]
    fn sums_wrap_and_unknown_buckets_are_left_out() {
        let mut tally = Tally::new(Some(10));
        tally.add("[1]", Some(i64::MAX));
        tally.add("[2]", Some(1));
        tally.add("[15]", None);
        tally.add("[16]", Some(3));
        let (digests, differ) = tally.digests(&RangeDigests::default());
        assert_eq!(
            digests,
            [BucketDigest {
                bucket: 0,
                rows: 2,
                sum: i64::MIN
            }]
        );
        assert_eq!(differ, 1);
        tally.add("[\"a\"]", Some(1));
        assert_eq!(tally.width(), None, "a text key turns buckets off");
    }
}
