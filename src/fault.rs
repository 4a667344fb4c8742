//! Fault-injection hooks for the crash and stale-worker tests, and the lease
//! lengths those tests shorten. Inert unless the environment asks.
//!
//! `FERRY_FAULT=pause-<point>` blocks the process at `<point>` (the test then
//! SIGKILLs it); `FERRY_FAULT=stop-<point>` makes it SIGSTOP itself there (the
//! test SIGCONTs it later). Points: `detecting` (the job lease just taken), `after-enqueue`, `before-write`,
//! `after-write` (the target holds a batch its task has not settled), `before-ack`
//! (outbox: changes enqueued, messages not yet acknowledged), `chunk-claimed`,
//! `chunk-part-settled` and `chunk-done` (a snapshot's chunk task),
//! `verify-compared` (a verify found its suspects, not yet re-checked).
use std::time::Duration;

pub fn point(name: &str) {
    let Ok(fault) = std::env::var("FERRY_FAULT") else {
        return;
    };
    if fault == format!("pause-{name}") {
        eprintln!("ferry: fault point {name} reached; pausing");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if fault == format!("stop-{name}") {
        eprintln!("ferry: fault point {name} reached; stopping");
        let _ = std::process::Command::new("kill")
            .arg("-STOP")
            .arg(std::process::id().to_string())
            .status();
    }
}

/// A lease length from `var` (a duration like "2s"), else `default`.
pub fn lease(var: &str, default: Duration) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(default)
}

/// Whether detection and sync may overlap. Fault injection at a stage
/// boundary needs them one after the other.
pub fn pipelined() -> bool {
    std::env::var_os("FERRY_FAULT").is_none()
}
