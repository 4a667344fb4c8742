//! MySQL and MariaDB as source (table or query, each row rendered by the
//! server as one `JSON_OBJECT`) and target (multi-row `INSERT … ON DUPLICATE
//! KEY UPDATE`). Sessions run with `ANSI_QUOTES`, so identifiers are quoted
//! as in the other SQL connectors (`"name"`); string literals in a `query`
//! use single quotes.
mod schema;
mod source;
mod target;

pub use source::MysqlSource;
pub use target::MysqlTarget;

use crate::config::registry::{Abilities, Spec};
use crate::connectors::Connector;

/// What `type = "mysql"` is, for the configuration's checks.
pub const CONNECTOR: Connector = Connector {
    spec: Spec {
        kind: "mysql",
        schemes: &["mysql", "mariadb"],
        pooled: true,
        source: Some(super::sql::table_source(true)),
        target: Some(super::sql::table_target(
            super::sql::TARGET_KEYS,
            Abilities {
                images: false,
                generates_keys: false,
                refuses_items: true,
            },
        )),
    },
    open_source: Some(|job| Ok(Box::new(MysqlSource::new(&job.source)?))),
    open_target: Some(|job, rules| Ok(Box::new(MysqlTarget::new(&job.target, rules)?))),
};

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{Executor, MySqlPool};

use super::ConnectorError;

/// A lazily connecting pool, so that building a job never touches the network.
fn pool(url: &str, system: &str, max: u32) -> Result<MySqlPool, ConnectorError> {
    // `mariadb://` is accepted in config; the driver knows it as `mysql://`.
    let url = match url.strip_prefix("mariadb:") {
        Some(rest) => format!("mysql:{rest}"),
        None => url.to_string(),
    };
    let opts = MySqlConnectOptions::from_str(&url)
        .map_err(|e| ConnectorError::failed(system, "url", e))?;
    let opts = crate::sql_log::slow_statements_at_debug(opts);
    Ok(MySqlPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')")
                    .await?;
                Ok(())
            })
        })
        .connect_lazy_with(opts))
}

fn system(url: &str) -> String {
    format!("mysql {}", crate::redact::url(url))
}

/// `'name'`: a column name as a string literal (for `JSON_OBJECT` keys).
fn literal(name: &str) -> String {
    format!("'{}'", name.replace('\\', "\\\\").replace('\'', "''"))
}
