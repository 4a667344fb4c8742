//! Named leases with a fencing token: one holder at a time, across processes
//! and pods; a crashed holder's lease simply expires.
use std::time::Duration;

use sqlx::Row;

use super::{args, Bind, StateError, Store};
use crate::model::now_millis;

impl Store {
    /// Takes `name` for `holder` if it is free, expired, or already `holder`'s.
    /// Returns the new fencing token, or None while someone else holds it.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<i64>, StateError> {
        let now = now_millis();
        let mut a = args();
        a.push(name.to_string());
        a.push(holder.to_string());
        a.push(now + ttl.as_millis() as i64);
        a.push(now);
        let mut tx = self.write_tx().await?;
        let row = sqlx::query_with(
            "INSERT INTO ferry_leases (name, holder, token, expires_at) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = ferry_leases.token + 1, expires_at = excluded.expires_at \
             WHERE ferry_leases.expires_at < $4 OR ferry_leases.holder = excluded.holder \
             RETURNING token",
            a,
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(row.map(|r| r.get(0)))
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
