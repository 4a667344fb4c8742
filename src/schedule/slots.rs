//! `[engine] max_concurrent_runs`: how many runs (and scheduled verifies)
//! one daemon has in flight. More wait for a slot in the order they were
//! started, which is the order their ticks fell due: a fleet of jobs due in
//! the same second queues, oldest first, instead of opening every job's
//! connections at once.
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct RunSlots {
    // tokio's semaphore is fair: permits go to waiters first come, first served.
    slots: Arc<Semaphore>,
    size: Mutex<usize>,
}

impl RunSlots {
    pub fn new(size: usize) -> RunSlots {
        RunSlots {
            slots: Arc::new(Semaphore::new(size)),
            size: Mutex::new(size),
        }
    }

    /// A slot for a run of `job`, held until the permit drops.
    pub async fn wait(&self, job: &str, limit: usize) -> OwnedSemaphorePermit {
        if self.slots.available_permits() == 0 {
            tracing::info!(job = %job, max_concurrent_runs = limit, "waits for a run slot");
        }
        // The semaphore is never closed, so acquiring cannot fail.
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the run slots are never closed")
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    /// A reloaded configuration's limit: more slots at once; fewer as runs
    /// in flight give theirs back.
    pub fn resize(&self, size: usize) {
        // A poisoned lock means a panic while resizing; the count is still whole.
        let mut current = self.size.lock().unwrap_or_else(|p| p.into_inner());
        if size > *current {
            self.slots.add_permits(size - *current);
        } else if size < *current {
            let fewer = u32::try_from(*current - size).unwrap_or(u32::MAX);
            let slots = self.slots.clone();
            tokio::spawn(async move {
                if let Ok(taken) = slots.acquire_many_owned(fewer).await {
                    taken.forget();
                }
            });
        }
        *current = size;
    }
}

#[cfg(test)]
mod tests {
    use super::RunSlots;

    #[tokio::test]
    async fn slots_shrink_as_runs_give_theirs_back_and_grow_at_once() {
        let slots = RunSlots::new(2);
        let first = slots.wait("a", 2).await;
        let second = slots.wait("b", 2).await;
        slots.resize(1);
        drop(first);
        drop(second);
        tokio::task::yield_now().await;
        let only = slots.wait("c", 1).await;
        assert_eq!(slots.slots.available_permits(), 0, "one slot left");
        slots.resize(3);
        assert_eq!(slots.slots.available_permits(), 2);
        drop(only);
    }
}
