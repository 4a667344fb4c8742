//! The daemon (`ferry run`): cron schedules, signals, trigger requests and the
//! HTTP port. tokio-cron-scheduler only wakes it once a second; each due tick
//! `(job, scheduled_for)` is claimed in the state store, so with any number of
//! replicas every tick runs once, and a job never overlaps itself.
mod http;
mod shares;
mod signals;
mod slots;
pub mod ticks;
mod verify;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use signals::{Received, Signals};

use crate::config::{self, Config};
use crate::detect::DetectOptions;
use crate::exit::ExitCode;
use crate::runner::{self, JobRun, RunOptions, Trigger};
use crate::state::{daemon_heartbeat, Store};

pub struct Daemon {
    config: RwLock<Arc<Config>>,
    config_dir: PathBuf,
    store: Store,
    owner: String,
    metrics: PrometheusHandle,
    trigger_token: Option<String>,
    shutdown: CancellationToken,
    /// Jobs running in this process: a job never overlaps itself.
    running: Mutex<HashSet<String>>,
    /// Per scheduled job, the time up to which its ticks were handled.
    handled_until: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Runs requested (signal, trigger) while the job was running: one more
    /// run after it, answering every request collected meanwhile.
    pending: Mutex<HashMap<String, (Trigger, Vec<i64>)>>,
    /// `[engine] max_concurrent_runs`: runs and verifies in flight.
    run_slots: Arc<slots::RunSlots>,
    /// The live replicas, and which of them claims a tick first.
    peers: shares::Peers,
    /// Due ticks left for the replica designated to claim them, tried at
    /// the next wake.
    deferred: Mutex<Vec<(DateTime<Utc>, String)>>,
}

/// Signals within this window are one request (several SIGUSR1 may arrive as one, or as many).
const SIGNAL_DEBOUNCE: Duration = Duration::from_millis(50);

/// What finished: a run, and the trigger requests it answered, or a
/// scheduled verify.
struct Finished {
    work: Work,
    requests: Vec<i64>,
    trigger: Trigger,
}

enum Work {
    Run(Box<JobRun>),
    /// The job whose target was verified.
    Verified(String),
}

impl Daemon {
    pub fn new(config: Config, store: Store, metrics: PrometheusHandle) -> Arc<Daemon> {
        for job in config.jobs.keys() {
            crate::metrics::register_job(job);
        }
        for (job, schedule) in &config.schedules {
            if schedule.verify.is_some() {
                crate::metrics::register_verify(job);
            }
        }
        crate::metrics::register_config();
        let config_slots = config.engine.max_concurrent_runs;
        Arc::new(Daemon {
            config_dir: config.dir.clone(),
            config: RwLock::new(Arc::new(config)),
            store,
            owner: runner::instance_id(),
            metrics,
            trigger_token: std::env::var("FERRY_TRIGGER_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            shutdown: CancellationToken::new(),
            running: Mutex::new(HashSet::new()),
            handled_until: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            run_slots: Arc::new(slots::RunSlots::new(config_slots)),
            peers: shares::Peers::default(),
            deferred: Mutex::new(Vec::new()),
        })
    }

    pub fn config(&self) -> Arc<Config> {
        // A poisoned lock means a panic while swapping an Arc; the Arc inside is still whole.
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs until SIGTERM/SIGINT; then stops claiming, lets runs in flight
    /// finish within `grace`, and returns 143/130. A second signal exits at once.
    pub async fn run(self: Arc<Self>, mut signals: Signals, grace: Duration) -> ExitCode {
        let addr = match http::address(&self.config().engine.metrics) {
            Ok(addr) => addr,
            Err(why) => {
                tracing::error!("{why}");
                return ExitCode::Config;
            }
        };
        let listener = match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot listen on {addr} for /metrics, /healthz, /readyz: {e}");
                return ExitCode::Unavailable;
            }
        };
        // Registered before anyone can see the daemon up (/healthz), so that
        // a `ferry trigger` that waited for it finds it live.
        let started_at = crate::model::now_millis();
        if let Err(e) = self.store.daemon_heartbeat(&self.owner, started_at).await {
            tracing::warn!("could not write this daemon's heartbeat: {e}");
        }
        tracing::info!(address = %addr, instance = %self.owner, jobs = self.config().jobs.len(), "ferry daemon started");
        let server = {
            let router = http::router(self.clone());
            let stop = self.shutdown.clone();
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            })
        };

        let (wake_tx, mut wake_rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut scheduler = match wake_up_source(wake_tx).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot start the scheduler: {e}");
                return ExitCode::Unavailable;
            }
        };
        self.init_handled_until().await;
        self.init_job_metrics().await;
        let heartbeat = self.clone().spawn_heartbeat(started_at);

        let mut runs: JoinSet<Finished> = JoinSet::new();
        let mut run_all_at: Option<tokio::time::Instant> = None;
        let stopped_by = loop {
            let debounce = async move {
                match run_all_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(()) = wake_rx.recv() => self.on_wake(&mut runs).await,
                Some(done) = runs.join_next(), if !runs.is_empty() => self.on_finished(&mut runs, done).await,
                () = debounce => {
                    run_all_at = None;
                    tracing::info!("SIGUSR1: running every job now");
                    for job in self.config().jobs.keys() {
                        self.request(&mut runs, job, Trigger::Signal, None);
                    }
                }
                signal = signals.next() => match signal {
                    Received::RunAll => {
                        run_all_at.get_or_insert_with(|| tokio::time::Instant::now() + SIGNAL_DEBOUNCE);
                    }
                    Received::Reload => self.reload().await,
                    stop @ (Received::Terminate | Received::Interrupt) => break stop,
                },
            }
        };

        tracing::info!(
            runs_in_flight = runs.len(),
            grace_seconds = grace.as_secs(),
            "{stopped_by:?}: draining"
        );
        self.shutdown.cancel();
        let _ = scheduler.shutdown().await;
        let drained = tokio::time::timeout(grace, async {
            while let Some(done) = runs.join_next().await {
                self.on_finished(&mut runs, done).await;
            }
        });
        tokio::select! {
            r = drained => if r.is_err() {
                tracing::warn!("grace period over with runs in flight; their tasks' leases expire and another runner takes them");
            },
            _ = signals.next() => tracing::warn!("second signal: stopping at once"),
        }
        let _ = server.await;
        heartbeat.abort();
        if let Err(e) = self.store.daemon_stopped(&self.owner).await {
            tracing::warn!("could not remove this daemon's heartbeat (it ages out): {e}");
        }
        self.store.close().await;
        stopped_by.exit_code()
    }

    /// Writes this daemon's heartbeat into the state store every
    /// [`daemon_heartbeat`] period, so that `ferry trigger` knows someone
    /// will answer and `ferry status` lists the daemon.
    fn spawn_heartbeat(self: Arc<Self>, started_at: i64) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(daemon_heartbeat());
            loop {
                tick.tick().await;
                if let Err(e) = self.store.daemon_heartbeat(&self.owner, started_at).await {
                    tracing::warn!("could not write this daemon's heartbeat: {e}");
                }
                match self.store.live_daemons().await {
                    Ok(live) => self
                        .peers
                        .set(live.into_iter().map(|d| d.instance).collect()),
                    Err(e) => tracing::warn!("could not read the live daemons: {e}"),
                }
            }
        })
    }

    /// A run asked for by a signal or a trigger request: now, or right after
    /// the job's current run if it is running.
    fn request(
        &self,
        runs: &mut JoinSet<Finished>,
        job: &str,
        trigger: Trigger,
        request: Option<i64>,
    ) {
        let requests: Vec<i64> = request.into_iter().collect();
        if self.is_running(job) {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending
                .entry(job.to_string())
                .or_insert((trigger, Vec::new()))
                .1
                .extend(requests);
        } else {
            self.start(runs, job, trigger, None, requests);
        }
    }

    fn is_running(&self, job: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(job)
    }

    /// Starts a run of `job` unless this process is already running it.
    fn start(
        &self,
        runs: &mut JoinSet<Finished>,
        job: &str,
        trigger: Trigger,
        scheduled_for: Option<i64>,
        requests: Vec<i64>,
    ) -> bool {
        let Some(job_cfg) = self.config().jobs.get(job).cloned() else {
            return false;
        };
        // `after`: a job whose prerequisite is running here starts when it ends.
        if job_cfg.after.iter().any(|a| self.is_running(a)) {
            tracing::info!(job = %job, "waits for the jobs it runs after ({})", job_cfg.after.join(", "));
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending
                .entry(job.to_string())
                .or_insert((trigger, Vec::new()))
                .1
                .extend(requests);
            return false;
        }
        if !self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.to_string())
        {
            return false;
        }
        let store = self.store.clone();
        let owner = self.owner.clone();
        let mut opts = RunOptions::new(trigger, DetectOptions::default(), self.shutdown.clone());
        opts.scheduled_for = scheduled_for;
        opts.retention = self.config().engine.retention;
        let slots = self.run_slots.clone();
        let limit = self.config().engine.max_concurrent_runs;
        runs.spawn(async move {
            let _slot = slots.wait(&job_cfg.name, limit).await;
            let run = runner::run_job(&job_cfg, &store, &owner, opts).await;
            Finished {
                work: Work::Run(Box::new(run)),
                requests,
                trigger,
            }
        });
        true
    }

    async fn on_finished(
        &self,
        runs: &mut JoinSet<Finished>,
        done: Result<Finished, tokio::task::JoinError>,
    ) {
        let finished = match done {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("a run panicked: {e}");
                return;
            }
        };
        let run = match &finished.work {
            Work::Run(run) => run,
            Work::Verified(job) => {
                self.running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(job);
                self.released(runs, job);
                return;
            }
        };
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run.job);
        match &run.error {
            Some(e) => {
                tracing::error!(job = %run.job, trigger = finished.trigger.as_str(), "run failed: {e}")
            }
            None => tracing::info!(
                job = %run.job,
                trigger = finished.trigger.as_str(),
                outcome = run.outcome.as_str(),
                scanned = run.detect.scanned,
                changed = run.detect.changed(),
                synced = run.sync.synced,
                failed = run.failed(),
                seconds = run.elapsed.as_secs_f64(),
                "run finished"
            ),
        }
        for &id in &finished.requests {
            let code = run.exit_code();
            if let Err(e) = self
                .store
                .finish_trigger(id, run.run_id, run.outcome.as_str(), code.code())
                .await
            {
                tracing::warn!(request = id, "could not record the trigger's outcome: {e}");
            }
        }
        self.released(runs, &run.job);
    }

    /// `job` is no longer busy here: the run asked for meanwhile starts,
    /// and runs that waited for it (`after`).
    fn released(&self, runs: &mut JoinSet<Finished>, job: &str) {
        let next = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(job);
        if let Some((trigger, requests)) = next {
            if !self.shutdown.is_cancelled() {
                self.start(runs, job, trigger, None, requests);
            }
        }
        // Runs that waited for this job (`after`) and can go now.
        let config = self.config();
        let ready: Vec<(String, (Trigger, Vec<i64>))> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let names: Vec<String> = pending
                .keys()
                .filter(|j| !self.is_running(j))
                .filter(|j| {
                    config
                        .jobs
                        .get(*j)
                        .is_some_and(|c| c.after.iter().all(|a| !self.is_running(a)))
                })
                .cloned()
                .collect();
            names
                .into_iter()
                .filter_map(|j| pending.remove(&j).map(|p| (j, p)))
                .collect()
        };
        if !self.shutdown.is_cancelled() {
            for (job, (trigger, requests)) in ready {
                self.start(runs, &job, trigger, None, requests);
            }
        }
    }

    /// Where each scheduled job's ticks start: its latest claimed tick (so a
    /// restarted daemon sees what it missed), else now.
    async fn init_handled_until(&self) {
        let now = Utc::now();
        let config = self.config();
        let verified = config
            .schedules
            .iter()
            .filter(|(_, s)| s.verify.is_some())
            .map(|(job, _)| verify::tick_name(job));
        for job in config.schedules.keys().cloned().chain(verified) {
            let job = &job;
            let since = match self.store.last_tick(job).await {
                Ok(Some(ms)) => Utc.timestamp_millis_opt(ms).single().unwrap_or(now),
                Ok(None) => now,
                Err(e) => {
                    tracing::warn!(job = %job, "cannot read the last tick: {e}");
                    now
                }
            };
            self.handled_until
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(job.clone(), since);
        }
    }

    /// Series that come from the state store rather than from this process:
    /// the last success and the queue, as other runners left them.
    async fn init_job_metrics(&self) {
        for job in self.config().jobs.keys() {
            if let Ok((_, Some(ms), _)) = self.store.last_run(job).await {
                crate::metrics::last_success(job, ms);
            }
            if let Ok(counts) = self.store.queue_counts(job).await {
                crate::metrics::queue(job, counts.by_state(), counts.oldest_pending_ms);
            }
        }
    }

    /// Once a second: claim due ticks, pick up trigger requests.
    async fn on_wake(&self, runs: &mut JoinSet<Finished>) {
        let now = Utc::now();
        let config = self.config();
        let mut due = Vec::new();
        for (job, schedule) in &config.schedules {
            if let Some(verify) = &schedule.verify {
                let name = verify::tick_name(job);
                if let Some(tick) = self.due(&name, verify, now) {
                    self.verify_at(runs, job, &name, tick).await;
                }
            }
            if let Some(tick) = self.due(job, schedule, now) {
                due.push((tick, job));
            }
        }
        // Ticks another replica was designated for at the last wake are
        // claimed now if it has not; this wake's others wait for the next.
        let left = std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|p| p.into_inner()));
        let full = self.run_slots.available() == 0;
        let (mut due, later): (Vec<_>, Vec<_>) = due.into_iter().partition(|(tick, job)| {
            !full
                && self
                    .peers
                    .designated(&self.owner, job, tick.timestamp_millis())
        });
        due.extend(left.iter().filter_map(|(tick, job)| {
            config
                .schedules
                .get_key_value(job)
                .map(|(job, _)| (*tick, job))
        }));
        *self.deferred.lock().unwrap_or_else(|p| p.into_inner()) = later
            .into_iter()
            .map(|(tick, job)| (tick, job.clone()))
            .collect();
        // Runs wait for a slot in the order they start: oldest due first.
        due.sort();
        for (tick, job) in due {
            if self.is_running(job) {
                tracing::info!(job = %job, tick = %tick, "still running; tick skipped");
                continue;
            }
            match self
                .store
                .claim_tick(job, tick.timestamp_millis(), &self.owner)
                .await
            {
                Ok(true) => {
                    self.start(
                        runs,
                        job,
                        Trigger::Schedule,
                        Some(tick.timestamp_millis()),
                        Vec::new(),
                    );
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(job = %job, "cannot claim tick {tick}: {e}"),
            }
        }
        match self.store.claim_triggers(&self.owner, 16).await {
            Ok(requests) => {
                for r in requests {
                    if config.jobs.contains_key(&r.job) {
                        self.request(runs, &r.job, Trigger::Manual, Some(r.id));
                    } else {
                        tracing::warn!(job = %r.job, request = r.id, "trigger request for a job this configuration does not have");
                        let _ = self
                            .store
                            .finish_trigger(r.id, None, "failed", ExitCode::Usage.code())
                            .await;
                    }
                }
            }
            Err(e) => tracing::warn!("cannot read trigger requests: {e}"),
        }
        if now.timestamp() % 3600 == 0 {
            let _ = self.store.purge_ticks(Duration::from_secs(24 * 3600)).await;
        }
    }

    /// The tick of `schedule` due now for `name`, if one is; the ticks up to
    /// now count as handled.
    fn due(
        &self,
        name: &str,
        schedule: &config::Schedule,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let mut handled = self.handled_until.lock().unwrap_or_else(|p| p.into_inner());
        let since = *handled.entry(name.to_string()).or_insert(now);
        handled.insert(name.to_string(), now);
        ticks::due(schedule, since, now)
    }

    /// SIGHUP: validate the new configuration first; keep the old one on error.
    async fn reload(&self) {
        let env = |name: &str| std::env::var(name).ok();
        let loaded = config::load(&self.config_dir, &env, &crate::connectors::REGISTRY);
        match loaded {
            Ok(mut new) => {
                crate::schema::expand::expand(&mut new).await;
                for job in new.jobs.keys() {
                    crate::metrics::register_job(job);
                }
                let jobs: Vec<String> = new.jobs.keys().cloned().collect();
                self.run_slots.resize(new.engine.max_concurrent_runs);
                *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
                crate::metrics::config_reload(true);
                tracing::info!(jobs = ?jobs, "SIGHUP: configuration reloaded");
            }
            Err(errors) => {
                crate::metrics::config_reload(false);
                for d in &errors.0 {
                    tracing::error!("{d}");
                }
                tracing::error!(
                    errors = errors.0.len(),
                    "SIGHUP: configuration rejected; the previous one keeps running"
                );
            }
        }
    }
}

/// The daemon's only use of tokio-cron-scheduler: a wake-up every second.
async fn wake_up_source(
    wake: tokio::sync::mpsc::Sender<()>,
) -> Result<tokio_cron_scheduler::JobScheduler, tokio_cron_scheduler::JobSchedulerError> {
    let scheduler = tokio_cron_scheduler::JobScheduler::new().await?;
    let job = tokio_cron_scheduler::Job::new_async("* * * * * *", move |_, _| {
        let wake = wake.clone();
        Box::pin(async move {
            // A full channel means a wake-up is already pending: wake-ups collapse.
            let _ = wake.try_send(());
        })
    })?;
    scheduler.add(job).await?;
    scheduler.start().await?;
    Ok(scheduler)
}
