//! The state store: runs, the durable task queue, the per-key ledger,
//! watermarks and leases. SQLite (embedded, default) or PostgreSQL (shared by
//! many replicas), chosen by URL. The only module that writes SQL for ferry's
//! own tables; it never talks to external systems.
mod chunks;
mod daemons;
mod digests;
mod fleet;
mod idmap;
mod lease;
mod ledger;
mod ledger_walk;
mod operate;
mod queue;
mod runs;
mod schedule;
mod schemas;
mod snapshots;

use std::str::FromStr;
use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Arguments, Executor, Transaction};

pub use chunks::{ChunkCounts, NewSnapshot};
pub use daemons::{daemon_heartbeat, DaemonInfo};
pub use digests::RangeDigests;
pub use fleet::JobFacts;
pub use lease::{host_name, Lease, LeaseHolder};
pub use ledger::{carried_prior, DetectedBatch, LedgerEntry, WrittenEntry};
pub use ledger_walk::{IntegerKeys, LedgerWalk};
pub use operate::{QueueCounts, TaskInfo};
pub use queue::{ClaimedTask, Settlement, Synced, TaskState};
pub use runs::{RunCounts, RunInfo};
pub use schedule::{TriggerRequest, TriggerStatus};
pub use schemas::SchemaChangeInfo;
pub use snapshots::OpenSnapshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {url} could not be reached: {detail}")]
    Unreachable { url: String, detail: String },
    /// Wrong credentials or no such database: only a change of configuration helps.
    #[error("state store {url} refused access: {source} (fix the state URL: credentials, database name)")]
    Refused { url: String, source: sqlx::Error },
    #[error("state store {url}: {source}")]
    Query { url: String, source: sqlx::Error },
    #[error("state store {url}: schema migration failed: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("state store url `{0}` must start with `sqlite:` or `postgres://`")]
    BadUrl(String),
    #[error("state store {url}: {detail}")]
    Corrupt { url: String, detail: String },
}

impl StateError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, StateError::Unreachable { .. })
    }

    pub fn is_refused(&self) -> bool {
        matches!(self, StateError::Refused { .. })
    }

    /// A statement met a key already there (a primary key or unique index).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StateError::Query { source: sqlx::Error::Database(e), .. } if e.is_unique_violation())
    }
}

/// A handle on the state store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Redacted, for messages.
    url: String,
}

static DRIVERS: Once = Once::new();

impl Store {
    /// Connects (creating an SQLite file if needed). Call [`Store::migrate`] before use.
    pub async fn open(url: &str) -> Result<Store, StateError> {
        Store::open_within(url, crate::reach::DEFAULT_CONNECT_TIMEOUT).await
    }

    /// Connects, giving up on a server that does not answer within
    /// `connect_timeout` (a refused connection fails at once).
    pub async fn open_within(url: &str, connect_timeout: Duration) -> Result<Store, StateError> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let redacted = crate::redact::url(url);
        let (backend, connect_url) = if url.starts_with("sqlite:") {
            (Backend::Sqlite, sqlite_url(url))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StateError::BadUrl(redacted));
        };
        let mut opts = AnyPoolOptions::new().acquire_timeout(connect_timeout);
        opts = match backend {
            // Each connection to `:memory:` is a database of its own: keep one.
            Backend::Sqlite => opts
                .max_connections(if url.contains(":memory:") { 1 } else { 4 })
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // WAL lets readers run beside the one writer; FULL keeps the
                        // last commits of a queue of record through a power loss.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = FULL",
                            "PRAGMA busy_timeout = 30000",
                        ] {
                            conn.execute(pragma).await?;
                        }
                        Ok(())
                    })
                }),
            Backend::Postgres => opts
                .max_connections(10)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // The ledger grows from nothing within one run; a generic
                        // plan chosen while it was small scans every key of the job.
                        conn.execute("SET plan_cache_mode = force_custom_plan")
                            .await?;
                        Ok(())
                    })
                })
                .after_release(shrink_buffers),
        };
        if backend == Backend::Sqlite {
            if let Some(parent) = sqlite_path(url)
                .and_then(|p| std::path::Path::new(&p).parent().map(|d| d.to_path_buf()))
            {
                if !parent.as_os_str().is_empty() {
                    let _ = std::fs::create_dir_all(parent);
                }
            }
        }
        let failed = |source: sqlx::Error| {
            if crate::sql_error::is_refusal(&source) {
                StateError::Refused {
                    url: redacted.clone(),
                    source,
                }
            } else {
                StateError::Unreachable {
                    url: redacted.clone(),
                    detail: source.to_string(),
                }
            }
        };
        let connect_opts = AnyConnectOptions::from_str(&connect_url).map_err(failed)?;
        if backend == Backend::Postgres {
            crate::reach::probe(url, "state store", connect_timeout)
                .await
                .map_err(|detail| StateError::Unreachable {
                    url: redacted.clone(),
                    detail,
                })?;
        }
        let pool = opts
            .connect_with(crate::sql_log::slow_statements_at_debug(connect_opts))
            .await
            .map_err(failed)?;
        Ok(Store {
            pool,
            backend,
            url: redacted,
        })
    }

    pub async fn migrate(&self) -> Result<(), StateError> {
        let migrator = match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        migrator
            .run(&self.pool)
            .await
            .map_err(|source| StateError::Migrate {
                url: self.url.clone(),
                source,
            })
    }

    /// Whether ferry's tables exist here (a store `ferry migrate` or a run
    /// set up): `plan` reads a store that has none as an empty one.
    pub async fn has_tables(&self) -> Result<bool, StateError> {
        let sql = match self.backend {
            Backend::Postgres => "SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename = '_sqlx_migrations' AND schemaname = current_schema()",
            Backend::Sqlite => "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        };
        let row = sqlx::query(sql)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(sqlx::Row::get::<i64, _>(&row, 0) > 0)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction: `BEGIN IMMEDIATE` on SQLite, so that it never has
    /// to upgrade a read lock (which fails with SQLITE_BUSY whatever the timeout).
    async fn write_tx(&self) -> Result<Transaction<'static, Any>, StateError> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        };
        tx.map_err(|e| self.err(e))
    }

    /// A subquery over a JSON array of arrays bound at `$param`: element i of
    /// each inner array becomes column `cols[i]` (text, integer or bytes, as
    /// marked).
    /// A whole batch is then one statement with one parameter, on both
    /// backends, instead of thousands of placeholders to parse and plan.
    fn json_rows(&self, param: usize, cols: &[(&str, Kind)]) -> String {
        let exprs = cols
            .iter()
            .enumerate()
            .map(|(i, (name, kind))| match (self.backend, kind) {
                (Backend::Postgres, Kind::Text) => format!("(e->>{i}) AS {name}"),
                (Backend::Postgres, Kind::Int) => format!("(e->>{i})::bigint AS {name}"),
                (Backend::Sqlite, Kind::Text) => format!("json_extract(value, '$[{i}]') AS {name}"),
                (Backend::Sqlite, Kind::Int) => {
                    format!("CAST(json_extract(value, '$[{i}]') AS INTEGER) AS {name}")
                }
                (Backend::Postgres, Kind::Hex) => format!("decode(e->>{i}, 'hex') AS {name}"),
                (Backend::Sqlite, Kind::Hex) => {
                    format!("unhex(json_extract(value, '$[{i}]')) AS {name}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        match self.backend {
            Backend::Postgres => {
                // jsonb: parsed once, each field then read from the binary
                // form; `json` re-parses every element for each `->>`
                // (twice the server's time for a part's ledger rows).
                format!("(SELECT {exprs} FROM jsonb_array_elements(${param}::jsonb) AS e)")
            }
            Backend::Sqlite => format!("(SELECT {exprs} FROM json_each(${param}))"),
        }
    }

    /// The bytes of `column` (a [`Kind::Hex`] one) as the hex text they were
    /// given in.
    fn hex_of(&self, column: &str) -> String {
        match self.backend {
            Backend::Postgres => format!("encode({column}, 'hex')"),
            // hex(NULL) is '', not NULL.
            Backend::Sqlite => format!("nullif(lower(hex({column})), '')"),
        }
    }

    /// A subquery of the strings in a JSON array bound at `$param`.
    fn json_strings(&self, param: usize) -> String {
        match self.backend {
            Backend::Postgres => format!("(SELECT json_array_elements_text(${param}::json))"),
            Backend::Sqlite => format!("(SELECT value FROM json_each(${param}))"),
        }
    }

    fn err(&self, source: sqlx::Error) -> StateError {
        match source {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed => StateError::Unreachable {
                url: self.url.clone(),
                detail: source.to_string(),
            },
            source if crate::sql_error::is_refusal(&source) => StateError::Refused {
                url: self.url.clone(),
                source,
            },
            source => StateError::Query {
                url: self.url.clone(),
                source,
            },
        }
    }
}

/// sqlx wants `sqlite://path?mode=rwc` to create a missing file.
fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| path.to_string())
}

/// `$start, $start+1, …` for `n` values.
fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Int,
    /// Hex text in the JSON, stored as the bytes it spells.
    Hex,
}

/// A JSON array parameter; serialising plain values cannot fail.
fn json_param(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("plain values serialise")
}

/// Arguments for the Any driver; adding an owned String or i64 cannot fail.
fn args() -> AnyArguments<'static> {
    AnyArguments::default()
}

trait Bind {
    fn push<T>(&mut self, v: T)
    where
        T: 'static + Send + sqlx::Encode<'static, Any> + sqlx::Type<Any>;
}

impl Bind for AnyArguments<'static> {
    fn push<T>(&mut self, v: T)
    where
        T: 'static + Send + sqlx::Encode<'static, Any> + sqlx::Type<Any>,
    {
        // Encoding strings, integers and their Options into Any arguments never fails.
        self.add(v).expect("bind value");
    }
}

impl Store {
    /// A round trip to the state store, for readiness.
    pub async fn ping(&self) -> Result<(), StateError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// `after_release` hook of the PostgreSQL store's pool: a connection keeps
/// read and write buffers as large as the largest message it carried (a
/// task's items, a batch of ledger rows: a megabyte at 5,000 items), and
/// idle in the pool it gives them back. S1 on PostgreSQL state peaked at
/// 72–77 MiB with six such connections, 53–64 MiB without (growing a buffer
/// again costs a few copies per batch, not measurable). The same hook on the
/// connectors' pools (two connections each) raised the peak instead: the
/// freed megabytes then come back from a fragmented heap.
fn shrink_buffers(
    conn: &mut sqlx::AnyConnection,
    _: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    sqlx::Connection::shrink_buffers(conn);
    Box::pin(async { Ok(true) })
}
