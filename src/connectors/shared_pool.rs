//! The process's connection pools, one per URL, role and size: every job
//! that reads (or writes) the same system with the same credentials takes
//! the same pool, so a process opens at most the system's budget of
//! connections however many jobs use it (`config::connections` sizes
//! them). A connector config without a size (one built outside a loaded
//! configuration) gets a pool of its own.
use std::any::Any;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// What a pool is for: a system's readers and writers never share one.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Read,
    Write,
}

type Pools = HashMap<String, Box<dyn Any + Send + Sync>>;

static POOLS: LazyLock<Mutex<Pools>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The system's shared pool for `url` in `role` when the configuration
/// sized it (`size`), else one of `own` connections for this connector
/// alone; `open` opens a pool of the size it is given (lazily connecting,
/// so that building a job never touches the network).
pub fn pool<P, E>(
    url: &str,
    role: Role,
    size: Option<u32>,
    own: u32,
    open: impl FnOnce(u32) -> Result<P, E>,
) -> Result<P, E>
where
    P: Clone + Send + Sync + 'static,
{
    match size {
        Some(size) => shared(url, role, size, open),
        None => open(own),
    }
}

/// The pool for `url` in `role` with `size` connections, opened by `open`
/// the first time.
fn shared<P, E>(
    url: &str,
    role: Role,
    size: u32,
    open: impl FnOnce(u32) -> Result<P, E>,
) -> Result<P, E>
where
    P: Clone + Send + Sync + 'static,
{
    // The full URL, credentials too: jobs that log in as different users
    // must not share connections. It never leaves this map.
    let key = format!("{role:?} {size} {}", url);
    // A poisoned lock means a panic while inserting a pool; the map is whole.
    let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(pool) = pools.get(&key).and_then(|p| p.downcast_ref::<P>()) {
        return Ok(pool.clone());
    }
    let pool = open(size)?;
    pools.insert(key, Box::new(pool.clone()));
    Ok(pool)
}
