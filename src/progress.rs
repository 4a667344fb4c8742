//! How far a run has got, for progress bars: detection and sync bump these
//! counters; the command line shows them when stderr is a terminal.
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Progress {
    scanned: AtomicU64,
    changed: AtomicU64,
    synced: AtomicU64,
}

impl Progress {
    pub fn scanned(&self, n: u64, changed: u64) {
        self.scanned.fetch_add(n, Ordering::Relaxed);
        self.changed.fetch_add(changed, Ordering::Relaxed);
    }

    pub fn synced(&self, n: u64) {
        self.synced.fetch_add(n, Ordering::Relaxed);
    }

    /// (scanned, changed, synced) so far.
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.scanned.load(Ordering::Relaxed),
            self.changed.load(Ordering::Relaxed),
            self.synced.load(Ordering::Relaxed),
        )
    }
}
