//! The redis target against the local Redis: each change one stream entry
//! carrying the change envelope and a per-item id, none on a repeat run;
//! `maxlen` trims; a resent batch (a crash between the write and its
//! settlement) adds nothing twice; its own keys are checked where they are
//! written.
mod common;

use common::*;
use redis::AsyncCommands;

const URL: &str = "redis://127.0.0.1:6379";

/// A stream name of its own; the stream and its markers are deleted at the end.
struct Stream {
    connection: redis::aio::MultiplexedConnection,
    name: String,
}

impl Stream {
    async fn new() -> Stream {
        let client = redis::Client::open(URL).expect("url");
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("Redis must be running on 127.0.0.1:6379 (see .ci/run)");
        let name = format!("ferry_t_{}", uuid::Uuid::new_v4().simple());
        Stream { connection, name }
    }

    /// Every entry as (id, op, envelope), oldest first.
    async fn entries(&self) -> Vec<(String, String, serde_json::Value)> {
        let mut c = self.connection.clone();
        let reply: redis::streams::StreamRangeReply =
            c.xrange_all(&self.name).await.expect("XRANGE");
        reply
            .ids
            .iter()
            .map(|e| {
                let field = |f: &str| e.get::<String>(f).unwrap_or_default();
                (
                    field("id"),
                    field("op"),
                    serde_json::from_str(&field("envelope")).unwrap_or_default(),
                )
            })
            .collect()
    }

    async fn len(&self) -> usize {
        let mut c = self.connection.clone();
        c.xlen(&self.name).await.expect("XLEN")
    }

    async fn delete(&self) {
        let mut c = self.connection.clone();
        let markers: Vec<String> = c
            .keys(format!("ferry:sent:{}:*", self.name))
            .await
            .unwrap_or_default();
        let _: Result<(), _> = c.del(&self.name).await;
        if !markers.is_empty() {
            let _: Result<(), _> = c.del(markers).await;
        }
    }
}

fn job(db: &TestDb, stream: &str, extra: &str) -> String {
    format!(
        "[source]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"people\"\nkey = [\"id\"]\n\n\
         [detect]\nstrategy = \"diff\"\n\n\
         [target]\ntype = \"redis\"\nurl = \"{URL}\"\nstream = \"{stream}\"\n{extra}\n\
         [rules]\nowner = \"source\"\ndeletes = \"propagate\"\n",
        db.url
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_change_is_one_entry_and_a_repeat_run_adds_none() {
    let stream = Stream::new().await;
    let db = TestDb::new().await;
    db.exec("CREATE TABLE people (id bigint PRIMARY KEY, email text); INSERT INTO people VALUES (1, 'a@x'), (2, 'b@x'), (3, 'c@x');")
        .await;
    let cfg = ConfigDir::new();
    // `{job}` in the stream's name: the job is `people`.
    let template = format!("{}_{{job}}", stream.name);
    cfg.job("people", &job(&db, &template, ""));
    let named = Stream {
        name: format!("{}_people", stream.name),
        ..stream
    };
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    assert_eq!(synced(&cfg.run_once_ok(&state), "people"), 3);
    let entries = named.entries().await;
    assert_eq!(entries.len(), 3);
    let (id, op, envelope) = &entries[0];
    assert_eq!(op, "upsert");
    assert_eq!(*id, format!("people-{}", envelope["version"]));
    assert_eq!(envelope["job"], "people");
    assert_eq!(envelope["data"]["email"], "a@x");

    assert_eq!(synced(&cfg.run_once_ok(&state), "people"), 0);
    assert_eq!(named.len().await, 3, "a repeat run adds nothing");

    db.exec("DELETE FROM people WHERE id = 2; UPDATE people SET email = 'c2@x' WHERE id = 3")
        .await;
    assert_eq!(synced(&cfg.run_once_ok(&state), "people"), 2);
    let entries = named.entries().await;
    assert_eq!(entries.len(), 5);
    let ops: Vec<&str> = entries[3..].iter().map(|e| e.1.as_str()).collect();
    assert!(
        ops.contains(&"delete") && ops.contains(&"upsert"),
        "{ops:?}"
    );
    named.delete().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn maxlen_trims_the_stream() {
    let stream = Stream::new().await;
    let db = TestDb::new().await;
    db.exec("CREATE TABLE people (id bigint PRIMARY KEY, email text); INSERT INTO people SELECT g, 'p' || g FROM generate_series(1, 2000) g;")
        .await;
    let cfg = ConfigDir::new();
    cfg.job("people", &job(&db, &stream.name, "maxlen = 50\n"));
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    assert_eq!(synced(&cfg.run_once_ok(&state), "people"), 2000);
    let len = stream.len().await;
    // `~`: Redis trims whole nodes (100 entries by default), never below 50.
    assert!((50..=300).contains(&len), "XLEN {len}");
    stream.delete().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_resent_after_a_crash_is_not_added_twice() {
    let stream = Stream::new().await;
    let db = TestDb::new().await;
    db.exec("CREATE TABLE people (id bigint PRIMARY KEY, email text); INSERT INTO people SELECT g, 'p' || g FROM generate_series(1, 20) g;")
        .await;
    let cfg = ConfigDir::new();
    cfg.job("people", &job(&db, &stream.name, ""));
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    // The first run writes its batch, then dies before settling it.
    let mut child = spawn_at_fault(
        &cfg,
        &state,
        "pause",
        "after-write",
        &[("FERRY_JOB_LEASE", "1s"), ("FERRY_TASK_LEASE", "1s")],
    );
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert_eq!(stream.len().await, 20, "the batch was written");

    // The next run reclaims the task once its lease expires and sends it again.
    let out = cfg
        .command(Some(&state), &["run", "--once"])
        .env("FERRY_TASK_LEASE", "1s")
        .env("FERRY_JOB_LEASE", "1s")
        .output()
        .expect("run");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(synced(&out, "people"), 20, "the batch was sent again");
    let mut ids: Vec<String> = stream.entries().await.into_iter().map(|e| e.0).collect();
    assert_eq!(ids.len(), 20, "nothing was added twice");
    ids.dedup();
    assert_eq!(ids.len(), 20);
    stream.delete().await;
}

#[test]
fn its_own_keys_are_checked_where_they_are_written() {
    let cfg = ConfigDir::new();
    cfg.job(
        "people",
        "[source]\ntype = \"file\"\npath = \"p.csv\"\nkey = [\"id\"]\n\n\
         [target]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nstream = \"s\"\nmaxlen = \"many\"\nstreem = \"x\"\ntable = \"t\"\n\n\
         [rules]\nowner = \"source\"\n",
    );
    let out = cfg.ferry(None, &["check"]);
    assert_eq!(code(&out), 78);
    let err = stderr(&out);
    assert!(err.contains("people.toml:10:10: invalid type"), "{err}");
    assert!(
        err.contains("people.toml:11:1: unknown field `streem`"),
        "{err}"
    );
    assert!(
        err.contains("people.toml:12:9: `table` does not apply to a target of type `redis`"),
        "{err}"
    );

    cfg.job(
        "people",
        "[source]\ntype = \"file\"\npath = \"p.csv\"\nkey = [\"id\"]\n\n\
         [target]\ntype = \"redis\"\nurl = \"http://x\"\n\n[rules]\nowner = \"source\"\n",
    );
    let err = stderr(&cfg.ferry(None, &["check"]));
    assert!(
        err.contains("must start with `redis:` or `rediss:`"),
        "{err}"
    );
    assert!(err.contains("missing field `stream`"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_cannot_be_reached_is_exit_75_and_nothing_is_lost() {
    let db = TestDb::new().await;
    db.exec("CREATE TABLE people (id bigint PRIMARY KEY, email text); INSERT INTO people VALUES (1, 'a@x');")
        .await;
    let cfg = ConfigDir::new();
    cfg.job(
        "people",
        &job(&db, "s", "").replace(URL, "redis://127.0.0.1:1"),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("could not be reached"),
        "{}",
        stderr(&out)
    );
}
