//! PostgreSQL as source (table or query, streamed) and target (one statement
//! per batch through `json_populate_recordset`, typed by the target table).
mod copy_images;
mod copy_in;
mod copy_rows;
mod schema;
mod source;
mod target;

pub use source::PostgresSource;
pub use target::PostgresTarget;

use crate::config::registry::{Abilities, Spec};
use crate::connectors::Connector;

/// What `type = "postgres"` is, for the configuration's checks.
pub const CONNECTOR: Connector = Connector {
    spec: Spec {
        kind: "postgres",
        schemes: &["postgres", "postgresql"],
        pooled: true,
        source: Some(super::sql::table_source(true)),
        target: Some(super::sql::table_target(
            super::sql::TARGET_KEYS,
            Abilities {
                images: true,
                generates_keys: true,
                refuses_items: true,
            },
        )),
    },
    open_source: Some(|job| Ok(Box::new(PostgresSource::new(&job.source)?))),
    open_target: Some(|job, rules| Ok(Box::new(PostgresTarget::new(&job.target, rules)?))),
};

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::ConnectorError;

/// A lazily connecting pool, so that building a job never touches the network.
fn pool(url: &str, system: &str, max: u32) -> Result<PgPool, ConnectorError> {
    let opts = PgConnectOptions::from_str(url)
        .map_err(|e| ConnectorError::failed(system, "url", e))?
        .application_name("ferry");
    let opts = crate::sql_log::slow_statements_at_debug(opts);
    Ok(PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(opts))
}

fn system(url: &str) -> String {
    format!("postgres {}", crate::redact::url(url))
}
