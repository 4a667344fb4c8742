//! Live daemons: each `ferry run` writes a heartbeat row, so that
//! `ferry trigger --wait` can tell at once whether any daemon will answer,
//! and `ferry status` can list them.
use std::time::Duration;

use sqlx::Row;

use super::{args, Bind, StateError, Store};
use crate::model::now_millis;

/// How often a daemon writes its heartbeat (5 s; the tests shorten it with
/// `FERRY_DAEMON_HEARTBEAT`). A daemon is live while its last heartbeat is
/// younger than three of these.
pub fn daemon_heartbeat() -> Duration {
    crate::fault::lease("FERRY_DAEMON_HEARTBEAT", Duration::from_secs(5))
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DaemonInfo {
    pub instance: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

impl Store {
    /// Records (or refreshes) this daemon's heartbeat.
    pub async fn daemon_heartbeat(
        &self,
        instance: &str,
        started_at: i64,
    ) -> Result<(), StateError> {
        let mut a = args();
        a.push(instance.to_string());
        a.push(super::host_name());
        a.push(i64::from(std::process::id()));
        a.push(env!("CARGO_PKG_VERSION").to_string());
        a.push(started_at);
        a.push(now_millis());
        sqlx::query_with(
            "INSERT INTO ferry_daemons (instance, host, pid, version, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (instance) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            a,
        )
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        // Rows of daemons gone for a day are of no more use to anyone.
        let mut a = args();
        a.push(now_millis() - 24 * 3600 * 1000);
        sqlx::query_with("DELETE FROM ferry_daemons WHERE heartbeat_at < $1", a)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A daemon that stops says so, rather than looking live for a while.
    pub async fn daemon_stopped(&self, instance: &str) -> Result<(), StateError> {
        let mut a = args();
        a.push(instance.to_string());
        sqlx::query_with("DELETE FROM ferry_daemons WHERE instance = $1", a)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Daemons whose heartbeat is younger than three heartbeat periods.
    pub async fn live_daemons(&self) -> Result<Vec<DaemonInfo>, StateError> {
        let mut a = args();
        a.push(now_millis() - 3 * daemon_heartbeat().as_millis() as i64);
        let rows = sqlx::query_with(
            "SELECT instance, host, pid, version, started_at, heartbeat_at FROM ferry_daemons WHERE heartbeat_at >= $1 ORDER BY host, pid",
            a,
        )
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| DaemonInfo {
                instance: r.get(0),
                host: r.get(1),
                pid: r.get(2),
                version: r.get(3),
                started_at: r.get(4),
                heartbeat_at: r.get(5),
            })
            .collect())
    }
}
