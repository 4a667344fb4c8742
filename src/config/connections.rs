//! How many connections one ferry process opens to each source and target
//! system. A system is a pooled connector's URL without user, password or
//! query (`postgres://db.internal:5432/shop`). A process keeps one pool per
//! system and role (reading, writing), shared by every job, so 500 jobs on
//! one database open at most its budget of connections, not 500 pools; a
//! system that jobs both read and write has its budget split between the
//! two, so that a run that holds a connection to read never waits for one
//! to write that only another reader could give back.
use std::collections::{BTreeMap, BTreeSet};

use super::diagnostic::Diagnostic;
use super::raw;
use super::registry::Registry;
use super::validate::Ctx;
use super::{Engine, Job};

pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
pub const DEFAULT_MAX_CONCURRENT_RUNS: usize = 16;

/// `[engine] max_connections_per_system` and `[engine.systems."URL"]`.
#[derive(Debug, Clone)]
pub struct Budget {
    pub per_system: u32,
    /// Where `max_connections_per_system` is set, for errors about it.
    pub per_system_at: Option<Diagnostic>,
    /// Per system: its `max_connections`, and where that is set.
    pub systems: BTreeMap<String, (u32, Diagnostic)>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            per_system: DEFAULT_MAX_CONNECTIONS,
            per_system_at: None,
            systems: BTreeMap::new(),
        }
    }
}

impl Budget {
    fn limit(&self, system: &str) -> (u32, Option<&Diagnostic>) {
        match self.systems.get(system) {
            Some((max, at)) => (*max, Some(at)),
            None => (self.per_system, self.per_system_at.as_ref()),
        }
    }
}

/// The system a URL names (scheme, host, port and path); None for a URL
/// without a host.
pub fn system_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed.host_str().filter(|h| !h.is_empty())?;
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    Some(format!(
        "{}://{host}{port}{}",
        parsed.scheme(),
        parsed.path()
    ))
}

/// `max_concurrent_runs`, `max_connections_per_system` and `[engine.systems]`.
pub(super) fn engine_limits(ctx: &mut Ctx, e: &raw::EngineRaw, engine: &mut Engine) {
    const MOST: i64 = 10_000;
    engine.max_concurrent_runs = ctx.int(
        &e.max_concurrent_runs,
        "max_concurrent_runs",
        (1, MOST),
        DEFAULT_MAX_CONCURRENT_RUNS as i64,
    ) as usize;
    let budget = &mut engine.connections;
    budget.per_system = ctx.int(
        &e.max_connections_per_system,
        "max_connections_per_system",
        (1, MOST),
        i64::from(DEFAULT_MAX_CONNECTIONS),
    ) as u32;
    budget.per_system_at = e
        .max_connections_per_system
        .as_ref()
        .map(|v| ctx.src.diagnostic(v.span(), ""));
    for (name, system) in &e.systems {
        let url = name.get_ref();
        let at = ctx.src.diagnostic(name.span(), "");
        let Some(id) = system_of(url) else {
            ctx.src.error(
                name.span(),
                format!(
                    "`[engine.systems.\"{}\"]` is not a URL with a host, like \"postgres://db.internal:5432/shop\"",
                    crate::redact::url(url)
                ),
            );
            continue;
        };
        if &id != url {
            ctx.src.error(
                name.span(),
                format!("`[engine.systems]` names a system by its URL without user, password or query: \"{id}\""),
            );
            continue;
        }
        let Some(max) = &system.get_ref().max_connections else {
            ctx.src.error(
                system.span(),
                format!("`[engine.systems.\"{id}\"]` needs `max_connections`"),
            );
            continue;
        };
        let max = ctx.int(&Some(max.clone()), "max_connections", (1, MOST), 1) as u32;
        budget.systems.insert(id, (max, at));
    }
}

/// How jobs use one system.
#[derive(Debug, Default)]
struct Use {
    reads: bool,
    writes: bool,
    /// A job reads child rows from it: a parent row stream stays open while
    /// the children are queried, so reading needs two connections.
    reads_children: bool,
}

/// Each job's pool sizes from the budget: a system's whole budget for the
/// role jobs use it in, or its halves when they both read and write it.
/// A `[engine.systems]` entry that names no job's system is an error, as
/// is a budget too small for what the jobs do with the system.
pub fn size_pools(
    jobs: &mut BTreeMap<String, Job>,
    budget: &Budget,
    registry: &Registry,
    errors: &mut Vec<Diagnostic>,
) {
    let pooled = |kind: &str, url: &Option<String>| {
        registry
            .spec(kind)
            .filter(|s| s.pooled)
            .and(url.as_deref())
            .and_then(system_of)
    };
    let mut uses: BTreeMap<String, Use> = BTreeMap::new();
    for job in jobs.values() {
        if let Some(system) = pooled(&job.source.kind, &job.source.url) {
            let entry = uses.entry(system).or_default();
            entry.reads = true;
            entry.reads_children |= !job.children.is_empty();
        }
        if let Some(system) = pooled(&job.target.kind, &job.target.url) {
            uses.entry(system).or_default().writes = true;
        }
    }
    for (system, (_, at)) in &budget.systems {
        if !uses.contains_key(system) {
            let known: BTreeSet<&str> = uses.keys().map(String::as_str).collect();
            let known = match known.is_empty() {
                true => "none".to_string(),
                false => known.into_iter().collect::<Vec<_>>().join(", "),
            };
            errors.push(Diagnostic {
                message: format!(
                    "`[engine.systems.\"{system}\"]`: no job reads or writes this system; the systems jobs use: {known}"
                ),
                ..at.clone()
            });
        }
    }
    let mut shares: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for (system, usage) in &uses {
        let (limit, at) = budget.limit(system);
        let (reading, writing) = match (usage.reads, usage.writes) {
            (true, true) => (limit / 2, limit - limit / 2),
            (true, false) => (limit, 0),
            _ => (0, limit),
        };
        let need = match (usage.reads, usage.reads_children, usage.writes) {
            (true, true, true) => Some((3, "read child rows (two connections) and write")),
            (true, true, false) => Some((2, "read child rows (two connections)")),
            (true, false, true) => Some((2, "read and write (one connection each)")),
            _ => None,
        };
        if let Some((least, what)) = need.filter(|(least, _)| limit < *least) {
            let message = format!(
                "`max_connections` = {limit} for `{system}` is too few: jobs {what} there, which needs at least {least}"
            );
            errors.push(match at {
                Some(at) => Diagnostic {
                    message,
                    ..at.clone()
                },
                None => Diagnostic {
                    path: "schedules.toml".into(),
                    line: 1,
                    col: 1,
                    message,
                },
            });
        }
        shares.insert(system, (reading.max(1), writing.max(1)));
    }
    for job in jobs.values_mut() {
        if let Some(system) = pooled(&job.source.kind, &job.source.url) {
            job.source.pool_size = shares.get(system.as_str()).map(|s| s.0);
        }
        if let Some(system) = pooled(&job.target.kind, &job.target.url) {
            job.target.pool_size = shares.get(system.as_str()).map(|s| s.1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::system_of;

    #[test]
    fn a_system_is_its_url_without_credentials_or_query() {
        assert_eq!(
            system_of("postgres://app:secret@db.internal:5432/shop?sslmode=require").as_deref(),
            Some("postgres://db.internal:5432/shop")
        );
        assert_eq!(
            system_of("mariadb://root@127.0.0.1/test").as_deref(),
            Some("mariadb://127.0.0.1/test")
        );
        assert_eq!(system_of("sqlite:///tmp/a.db"), None);
        assert_eq!(system_of("not a url"), None);
    }
}
