//! sqlx logs every statement that runs for over a second as a warning.
//! ferry's reads stream whole tables and ledgers by design, so each large
//! run would warn about its own scan; slow statements are logged at debug
//! level instead (`FERRY_LOG=info,sqlx=debug` shows them).
use std::time::Duration;

pub fn slow_statements_at_debug<O: sqlx::ConnectOptions>(opts: O) -> O {
    opts.log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1))
}
