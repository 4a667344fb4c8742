//! Named leases with a fencing token: one holder at a time, across processes
//! and pods; a crashed holder's lease simply expires. Each lease records the
//! host and process id of its holder, so that a run finding a lease taken
//! can say who has it, and a holder on this host whose process is gone is
//! taken over at once instead of after the lease expires.
use std::time::Duration;

use sqlx::Row;

use super::{args, Bind, StateError, Store};
use crate::model::now_millis;

/// Who holds a lease, as recorded when it was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub holder: String,
    /// None for a lease taken before holders were recorded.
    pub host: Option<String>,
    pub pid: Option<i64>,
    /// When the holder took it (unix ms).
    pub since: Option<i64>,
    pub expires_at: i64,
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let time = |ms: i64| crate::model::utc_text(ms);
        write!(
            f,
            "host {}, pid {}",
            self.host.as_deref().unwrap_or("?"),
            self.pid.map_or("?".to_string(), |p| p.to_string())
        )?;
        if let Some(since) = self.since {
            write!(f, ", since {}", time(since))?;
        }
        write!(f, ", lease expires {}", time(self.expires_at))
    }
}

/// The outcome of asking for a lease.
#[derive(Debug)]
pub enum Lease {
    /// Ours, with this fencing token.
    Taken(i64),
    /// Someone else's, still alive as far as this process can tell.
    Held(LeaseHolder),
}

/// This machine's name, as leases and daemon records show it.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it or truncates, and we read up to the first NUL only.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Whether process `pid` of this host is gone (a signal 0 finds no such process).
fn process_gone(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 checks for existence and permission only; nothing is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

impl Store {
    /// Takes `name` for `holder` if it is free, expired, already `holder`'s,
    /// or held by a process of this host that no longer exists.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, StateError> {
        let now = now_millis();
        let mut a = args();
        a.push(name.to_string());
        a.push(holder.to_string());
        a.push(now + ttl.as_millis() as i64);
        a.push(now);
        a.push(host_name());
        a.push(i64::from(std::process::id()));
        let mut tx = self.write_tx().await?;
        let row = sqlx::query_with(
            "INSERT INTO ferry_leases (name, holder, token, expires_at, host, pid, since) VALUES ($1, $2, 1, $3, $5, $6, $4) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = ferry_leases.token + 1, expires_at = excluded.expires_at, \
             host = excluded.host, pid = excluded.pid, \
             since = CASE WHEN ferry_leases.holder = excluded.holder THEN ferry_leases.since ELSE excluded.since END \
             WHERE ferry_leases.expires_at < $4 OR ferry_leases.holder = excluded.holder \
             RETURNING token",
            a,
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        if let Some(row) = row {
            return Ok(Lease::Taken(row.get(0)));
        }
        let Some(current) = self.lease_holder(name).await? else {
            // Released between the two statements: ask again.
            return Box::pin(self.try_lease(name, holder, ttl)).await;
        };
        let ours = current.host.as_deref() == Some(host_name().as_str());
        let dead = ours
            && current
                .pid
                .is_some_and(|p| p != i64::from(std::process::id()) && process_gone(p));
        if !dead {
            return Ok(Lease::Held(current));
        }
        tracing::warn!(lease = %name, "taking over the lease of process {} on this host, which no longer exists", current.pid.unwrap_or(0));
        let mut a = args();
        a.push(name.to_string());
        a.push(holder.to_string());
        a.push(now + ttl.as_millis() as i64);
        a.push(now);
        a.push(current.holder.clone());
        a.push(i64::from(std::process::id()));
        let row = sqlx::query_with(
            "UPDATE ferry_leases SET holder = $2, token = token + 1, expires_at = $3, pid = $6, since = $4 \
             WHERE name = $1 AND holder = $5 RETURNING token",
            a,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        match row {
            Some(row) => Ok(Lease::Taken(row.get(0))),
            // Someone else took it over first.
            None => Ok(match self.lease_holder(name).await? {
                Some(h) => Lease::Held(h),
                None => Lease::Held(current),
            }),
        }
    }

    /// Who holds `name` now (an expired lease counts as free: None).
    pub async fn lease_holder(&self, name: &str) -> Result<Option<LeaseHolder>, StateError> {
        let mut a = args();
        a.push(name.to_string());
        a.push(now_millis());
        let row = sqlx::query_with(
            "SELECT holder, host, pid, since, expires_at FROM ferry_leases WHERE name = $1 AND expires_at >= $2",
            a,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.map(|r| LeaseHolder {
            holder: r.get(0),
            host: r.get(1),
            pid: r.get(2),
            since: r.get(3),
            expires_at: r.get(4),
        }))
    }

    /// Extends a held lease; false when it was lost (expired and taken).
    pub async fn renew_lease(
        &self,
        name: &str,
        token: i64,
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let mut a = args();
        a.push(now_millis() + ttl.as_millis() as i64);
        a.push(name.to_string());
        a.push(token);
        let r = sqlx::query_with(
            "UPDATE ferry_leases SET expires_at = $1 WHERE name = $2 AND token = $3",
            a,
        )
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn release_lease(&self, name: &str, token: i64) -> Result<(), StateError> {
        let mut a = args();
        a.push(name.to_string());
        a.push(token);
        sqlx::query_with("DELETE FROM ferry_leases WHERE name = $1 AND token = $2", a)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
