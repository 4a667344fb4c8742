//! How far a run has got, for progress bars: detection and sync bump these
//! counters; the command line shows them when stderr is a terminal.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Progress {
    scanned: AtomicU64,
    changed: AtomicU64,
    synced: AtomicU64,
    /// Rows a snapshot started by this run will write (0: none started).
    expected: AtomicU64,
}

impl Progress {
    pub fn scanned(&self, n: u64, changed: u64) {
        self.scanned.fetch_add(n, Ordering::Relaxed);
        self.changed.fetch_add(changed, Ordering::Relaxed);
    }

    pub fn synced(&self, n: u64) {
        self.synced.fetch_add(n, Ordering::Relaxed);
    }

    /// A snapshot of `rows` rows was queued: the bar can tell how long is left.
    pub fn expect(&self, rows: u64) {
        self.expected.fetch_add(rows, Ordering::Relaxed);
    }

    /// Rows a snapshot of this run will write, when one was started.
    pub fn expected(&self) -> u64 {
        self.expected.load(Ordering::Relaxed)
    }

    /// (scanned, changed, synced) so far.
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.scanned.load(Ordering::Relaxed),
            self.changed.load(Ordering::Relaxed),
            self.synced.load(Ordering::Relaxed),
        )
    }

    /// The bar's text after `elapsed`; with a snapshot under way, its rows
    /// written of all and the time left at the pace so far.
    pub fn message(&self, elapsed: Duration) -> String {
        let (scanned, changed, synced) = self.get();
        let counts = format!("{scanned} scanned, {changed} changed, {synced} synced");
        let expected = self.expected();
        if expected == 0 || synced == 0 {
            return counts;
        }
        let left = expected.saturating_sub(synced);
        let eta = elapsed.as_secs_f64() * left as f64 / synced as f64;
        format!(
            "{counts}; snapshot {}% of {expected} rows, about {}s left",
            synced.min(expected) * 100 / expected,
            eta.round() as u64
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_shows_its_share_done_and_the_time_left() {
        let progress = Progress::default();
        assert_eq!(
            progress.message(Duration::from_secs(3)),
            "0 scanned, 0 changed, 0 synced"
        );
        progress.expect(1000);
        progress.scanned(250, 250);
        progress.synced(250);
        assert_eq!(
            progress.message(Duration::from_secs(3)),
            "250 scanned, 250 changed, 250 synced; snapshot 25% of 1000 rows, about 9s left"
        );
    }
}
