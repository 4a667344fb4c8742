//! SQLite as source (table or query) and target (one statement per batch
//! through `json_each`, so a batch of any size is one bound parameter).
mod schema;
mod source;
mod target;

pub use source::SqliteSource;
pub use target::SqliteTarget;

use crate::config::registry::{Abilities, Spec};
use crate::connectors::Connector;

/// What `type = "sqlite"` is, for the configuration's checks.
pub const CONNECTOR: Connector = Connector {
    spec: Spec {
        kind: "sqlite",
        schemes: &["sqlite"],
        pooled: false,
        source: Some(super::sql::table_source(false)),
        target: Some(super::sql::table_target(
            &[
                "url",
                "table",
                "mode",
                "updated_at",
                "create",
                "create_table",
            ],
            Abilities {
                images: true,
                generates_keys: true,
                refuses_items: true,
            },
        )),
    },
    open_source: Some(|job| Ok(Box::new(SqliteSource::new(&job.source)?))),
    open_target: Some(|job, rules| Ok(Box::new(SqliteTarget::new(&job.target, rules)?))),
};

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::SqlitePool;

use super::ConnectorError;

fn pool(url: &str, system: &str, read_only: bool) -> Result<SqlitePool, ConnectorError> {
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|e| ConnectorError::failed(system, "url", e))?
        .read_only(read_only)
        .busy_timeout(Duration::from_secs(30));
    let opts = crate::sql_log::slow_statements_at_debug(opts);
    let opts = if read_only {
        opts
    } else {
        opts.journal_mode(SqliteJournalMode::Wal)
    };
    // One writer connection: SQLite serialises writers anyway, and one
    // connection never waits on itself.
    let max = if read_only { 2 } else { 1 };
    Ok(SqlitePoolOptions::new()
        .max_connections(max)
        .connect_lazy_with(opts))
}

fn system(url: &str) -> String {
    format!("sqlite {}", crate::redact::url(url))
}
