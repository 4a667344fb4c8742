//! Buckets of a one-column integer key: consecutive ranges of keys, so
//! that the rows of a differing bucket are read by an index range scan
//! rather than by reading the table again.
/// Keys `lo + b * width ..= lo + (b + 1) * width - 1` are bucket `b`; keys
/// below or above the span (rows added since it was measured) fall in
/// the first or the last bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntBuckets {
    pub lo: i64,
    pub width: i64,
}

impl IntBuckets {
    /// Buckets spanning `lo..=hi`; None when the span does not fit an
    /// `i64` (then keys are bucketed by hash).
    pub fn spanning(lo: i64, hi: i64, buckets: u32) -> Option<IntBuckets> {
        let span = hi.checked_sub(lo)?.checked_add(1)?;
        let width = (span + i64::from(buckets) - 1) / i64::from(buckets);
        Some(IntBuckets {
            lo,
            width: width.max(1),
        })
    }

    fn hi(&self, buckets: u32) -> i64 {
        self.lo
            .saturating_add(self.width.saturating_mul(i64::from(buckets)))
            .saturating_sub(1)
    }

    pub fn bucket(&self, key: i64, buckets: u32) -> u32 {
        let clamped = key.clamp(self.lo, self.hi(buckets));
        ((clamped - self.lo) / self.width).min(i64::from(buckets) - 1) as u32
    }

    /// The bucket of `column`, in SQL (`LEAST`/`GREATEST` are in every
    /// dialect that hashes in the server). `mysql`: MySQL's `/` divides
    /// into a decimal (`4 / 1` is `4.0000`); its `DIV` is the integer
    /// division the others' `/` is between integers.
    pub fn sql(&self, column: &str, buckets: u32, mysql: bool) -> String {
        format!(
            "(LEAST(GREATEST({column}, {lo}), {hi}) - {lo}) {div} {width}",
            lo = self.lo,
            hi = self.hi(buckets),
            width = self.width,
            div = if mysql { "DIV" } else { "/" },
        )
    }

    /// `column` within the buckets `only` (sorted): ranges an index reads,
    /// neighbours merged.
    pub fn ranges_sql(&self, column: &str, only: &[u32], buckets: u32) -> String {
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for &b in only {
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == b => *end = b,
                _ => ranges.push((b, b)),
            }
        }
        let last = buckets - 1;
        let parts: Vec<String> = ranges
            .into_iter()
            .map(|(first, end)| {
                let from = self.lo + i64::from(first) * self.width;
                let to = self.lo + (i64::from(end) + 1) * self.width - 1;
                match (first, end) {
                    (0, e) if e == last => "TRUE".to_string(),
                    (0, _) => format!("{column} <= {to}"),
                    (_, e) if e == last => format!("{column} >= {from}"),
                    _ => format!("({column} >= {from} AND {column} <= {to})"),
                }
            })
            .collect();
        format!("({})", parts.join(" OR "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_their_buckets_and_clamp_the_rest() {
        let b = IntBuckets::spanning(1, 1000, 10).unwrap();
        assert_eq!(b.width, 100);
        assert_eq!(b.bucket(1, 10), 0);
        assert_eq!(b.bucket(100, 10), 0);
        assert_eq!(b.bucket(101, 10), 1);
        assert_eq!(b.bucket(1000, 10), 9);
        assert_eq!(b.bucket(5000, 10), 9);
        assert_eq!(b.bucket(-7, 10), 0);
        assert_eq!(
            b.ranges_sql("k", &[0, 3, 4, 9], 10),
            "(k <= 100 OR (k >= 301 AND k <= 500) OR k >= 901)"
        );
        assert!(IntBuckets::spanning(i64::MIN, i64::MAX, 10).is_none());
    }
}
