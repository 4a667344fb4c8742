//! The TOML files as written, with the location of every value, before
//! interpolation and validation turn them into the typed [`super::Job`].
//! Every key is documented in `docs/configuration.md`; `tests/docs.rs`
//! fails when the two differ.
use std::collections::BTreeMap;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SchedulesFile {
    #[serde(default)]
    pub engine: Option<S<EngineRaw>>,
    #[serde(default)]
    pub schedules: BTreeMap<S<String>, S<ScheduleRaw>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EngineRaw {
    pub state: Option<S<String>>,
    pub metrics: Option<S<String>>,
    pub pushgateway: Option<S<String>>,
    pub timezone: Option<S<String>>,
    pub retain_tasks: Option<S<String>>,
    pub retain_runs: Option<S<String>>,
    pub connect_timeout: Option<S<String>>,
    pub max_concurrent_runs: Option<S<i64>>,
    pub max_connections_per_system: Option<S<i64>>,
    #[serde(default)]
    pub systems: BTreeMap<S<String>, S<SystemRaw>>,
}

/// `[engine.systems."URL"]`: one source or target system's limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemRaw {
    pub max_connections: Option<S<i64>>,
}

/// `name = "cron"` or `name = { cron, timezone, missed }`.
#[derive(Debug)]
pub struct ScheduleRaw {
    pub cron: String,
    pub timezone: Option<String>,
    pub missed: Option<String>,
    /// When the daemon runs `ferry verify` for the job.
    pub verify: Option<String>,
}

impl<'de> Deserialize<'de> for ScheduleRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            cron: String,
            timezone: Option<String>,
            missed: Option<String>,
            verify: Option<String>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ScheduleRaw;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a cron expression or a table { cron, timezone, missed, verify }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScheduleRaw, E> {
                Ok(ScheduleRaw {
                    cron: v.to_string(),
                    timezone: None,
                    missed: None,
                    verify: None,
                })
            }
            fn visit_map<M: MapAccess<'de>>(self, m: M) -> Result<ScheduleRaw, M::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(m))?;
                Ok(ScheduleRaw {
                    cron: t.cron,
                    timezone: t.timezone,
                    missed: t.missed,
                    verify: t.verify,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    pub description: Option<S<String>>,
    #[serde(default)]
    pub after: Vec<S<String>>,
    pub source: S<SourceRaw>,
    #[serde(default)]
    pub detect: Option<S<DetectRaw>>,
    #[serde(default)]
    pub batch: Option<S<BatchRaw>>,
    #[serde(default)]
    pub snapshot: Option<S<SnapshotRaw>>,
    pub target: S<TargetRaw>,
    #[serde(default)]
    pub fields: Option<S<BTreeMap<S<String>, S<FieldRaw>>>>,
    #[serde(default)]
    pub rules: Option<S<RulesRaw>>,
    #[serde(default)]
    pub schema: Option<S<SchemaRaw>>,
    #[serde(default)]
    pub children: BTreeMap<S<String>, S<ChildRaw>>,
    /// `[[tests]]` blocks, for `ferry test`.
    #[serde(default)]
    pub tests: Vec<S<TestRaw>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestRaw {
    pub name: S<String>,
    pub source: Option<S<toml::Table>>,
    pub target: Option<S<toml::Table>>,
    pub written: Option<S<toml::Table>>,
    pub expect: S<String>,
    pub fields: Option<S<toml::Table>>,
}

/// Without `deny_unknown_fields`: a key it does not read may be one a
/// connector reads into its own options ([`SOURCE_KEYS`]).
#[derive(Debug, Deserialize)]
pub struct SourceRaw {
    #[serde(rename = "type")]
    pub kind: S<String>,
    pub url: Option<S<String>>,
    pub table: Option<S<String>>,
    pub query: Option<S<String>>,
    pub tables: Option<S<Vec<S<String>>>>,
    #[serde(rename = "where")]
    pub filter: Option<S<String>>,
    pub key: Option<S<Vec<S<String>>>>,
    /// Resolved against the configuration folder.
    pub path: Option<S<String>>,
    pub connect_timeout: Option<S<String>>,
}

/// The keys [`SourceRaw`] reads; any other key of `[source]` must be one a
/// connector declares for its own options.
pub const SOURCE_KEYS: &[&str] = &[
    "type",
    "url",
    "table",
    "query",
    "tables",
    "where",
    "key",
    "path",
    "connect_timeout",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectRaw {
    pub strategy: S<String>,
    pub cursor: Option<S<String>>,
    pub lag: Option<S<String>>,
    pub max_delete_ratio: Option<S<f64>>,
    pub ops: Option<S<Vec<S<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRaw {
    pub size: Option<S<i64>>,
    pub concurrency: Option<S<i64>>,
    pub max_attempts: Option<S<i64>>,
    pub backoff: Option<S<BackoffRaw>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRaw {
    pub chunk_rows: Option<S<i64>>,
    pub parallelism: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffRaw {
    pub initial: Option<S<String>>,
    pub max: Option<S<String>>,
}

/// Every key of `[target]` with its span: what a connector's own options
/// are read from ([`TargetRaw`] reads ferry's).
pub type TableKeys = Vec<(S<String>, S<toml::Value>)>;

/// The keys [`TargetRaw`] reads; any other key of `[target]` must be one a
/// connector declares for its own options.
pub const TARGET_KEYS: &[&str] = &[
    "type",
    "url",
    "table",
    "key",
    "mode",
    "create",
    "create_table",
    "updated_at",
    "path",
    "connect_timeout",
];

/// `[source]` and `[target]` as maps, read in a second pass over the file.
#[derive(Debug, Deserialize)]
pub struct SectionTables {
    pub source: Option<S<BTreeMap<S<String>, S<toml::Value>>>>,
    pub target: Option<S<BTreeMap<S<String>, S<toml::Value>>>>,
}

impl SectionTables {
    /// (the `[source]` keys, the `[target]` keys).
    pub fn keys(self) -> (TableKeys, TableKeys) {
        let keys = |t: Option<S<BTreeMap<S<String>, S<toml::Value>>>>| {
            t.map(|t| t.into_inner().into_iter().collect())
                .unwrap_or_default()
        };
        (keys(self.source), keys(self.target))
    }
}

/// Without `deny_unknown_fields`: a key it does not read may be one a
/// connector reads into its own options ([`TARGET_KEYS`]).
#[derive(Debug, Deserialize)]
pub struct TargetRaw {
    #[serde(rename = "type")]
    pub kind: S<String>,
    pub url: Option<S<String>>,
    pub table: Option<S<String>>,
    pub key: Option<S<Vec<S<String>>>>,
    pub mode: Option<S<String>>,
    pub create: Option<S<bool>>,
    pub create_table: Option<S<bool>>,
    pub updated_at: Option<S<String>>,
    pub path: Option<S<String>>,
    pub connect_timeout: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRaw {
    pub on_new_column: Option<S<String>>,
    pub on_type_change: Option<S<String>>,
}

/// `target = "source_field"` or `target = { from, owner, lookup, lossy }`.
#[derive(Debug)]
pub struct FieldRaw {
    pub from: String,
    pub owner: Option<String>,
    pub lookup: Option<String>,
    pub lossy: bool,
}

impl<'de> Deserialize<'de> for FieldRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            from: String,
            owner: Option<String>,
            lookup: Option<String>,
            #[serde(default)]
            lossy: bool,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldRaw;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a source field name or a table { from, owner, lookup, lossy }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldRaw, E> {
                Ok(FieldRaw {
                    from: v.to_string(),
                    owner: None,
                    lookup: None,
                    lossy: false,
                })
            }
            fn visit_map<M: MapAccess<'de>>(self, m: M) -> Result<FieldRaw, M::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(m))?;
                Ok(FieldRaw {
                    from: t.from,
                    owner: t.owner,
                    lookup: t.lookup,
                    lossy: t.lossy,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesRaw {
    pub owner: Option<S<String>>,
    pub deletes: Option<S<String>>,
    pub soft_delete: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildRaw {
    pub query: S<String>,
    pub key: S<Vec<S<String>>>,
    /// The SQL target's child table (default: the child's name).
    pub table: Option<S<String>>,
}
