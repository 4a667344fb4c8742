//! The job lease: detection is one runner's at a time.
use std::time::{Duration, Instant};

use super::RunError;
use crate::config::Job;
use crate::state::{Lease, Store};

/// A job lease outlives a crashed holder by at most this (15 s; the tests
/// shorten it with `FERRY_JOB_LEASE`); renewed at a third.
pub fn job_lease() -> Duration {
    crate::fault::lease("FERRY_JOB_LEASE", Duration::from_secs(15))
}

/// What running under the job's lease came to.
pub(super) enum Leased<T> {
    Done(T),
    /// Another process holds the lease; the work was not run.
    Held(crate::state::LeaseHolder),
}

/// Runs `work` holding the job's lease, renewed by a heartbeat; not run
/// while another process holds it.
pub(super) async fn with_job_lease<T>(
    job: &Job,
    store: &Store,
    owner: &str,
    wait: Duration,
    work: impl std::future::Future<Output = Result<T, RunError>>,
) -> Result<Leased<T>, RunError> {
    let lease_name = format!("job:{}", job.name);
    let deadline = Instant::now() + wait;
    let token = loop {
        match store.try_lease(&lease_name, owner, job_lease()).await? {
            Lease::Taken(token) => break token,
            Lease::Held(holder) if Instant::now() >= deadline => return Ok(Leased::Held(holder)),
            Lease::Held(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let heartbeat = {
        let (store, name) = (store.clone(), lease_name.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(job_lease() / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
                match store.renew_lease(&name, token, job_lease()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(lease = %name, "job lease lost; another runner may detect this job")
                    }
                    Err(e) => tracing::warn!(lease = %name, "could not renew the job lease: {e}"),
                }
            }
        })
    };
    let result = work.await;
    heartbeat.abort();
    release_job_lease(store, &lease_name, token).await;
    result.map(Leased::Done)
}

/// Releases the job lease. A state store that is down now may be back in
/// a moment: trying again for a few seconds spares the next run of the job
/// waiting out the lease (it expires by itself otherwise).
async fn release_job_lease(store: &Store, lease_name: &str, token: i64) {
    const PATIENCE: Duration = Duration::from_secs(5);
    let tries = async {
        loop {
            match store.release_lease(lease_name, token).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_unreachable() => {
                    tracing::info!(lease = %lease_name, "could not release the job lease, trying again: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let failed = match tokio::time::timeout(PATIENCE, tries).await {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(_) => "the state store did not come back in time".to_string(),
    };
    tracing::warn!(lease = %lease_name, "could not release the job lease (it expires by itself within {}): {failed}", humantime::format_duration(job_lease()));
}
