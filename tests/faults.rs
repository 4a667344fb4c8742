//! Fault injection: the queue's guarantees under crashes, outages, poison
//! rows, stale retries, concurrent workers, churn and paused workers. Real
//! processes, a real PostgreSQL; figures are printed (run with --nocapture).
mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};

/// Every row through the per-item queue, whose faults these tests inject.
fn job(db: &TestDb, detect: &str, batch: &str, target_url: &str) -> String {
    items_only(&pg_job(&db.url, "src", detect, batch, target_url, "dst"))
}

const DIFF: &str = "strategy = \"diff\"\nmax_delete_ratio = 1.0";

async fn tables(db: &TestDb, rows: i64) {
    db.exec(&format!(
        "CREATE TABLE src (id bigint PRIMARY KEY, name text NOT NULL, updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE TABLE dst (id bigint PRIMARY KEY, name text NOT NULL, updated_at timestamptz NOT NULL);
         INSERT INTO src (id, name) SELECT g, 'n' || g FROM generate_series(1, {rows}) g;"
    ))
    .await;
}

async fn equal(db: &TestDb) -> bool {
    db.difference("SELECT * FROM src", "SELECT * FROM dst")
        .await
        == 0
}

/// 30 cycles of: change the source, start a run, SIGKILL it at a random
/// moment. Then run to completion: the target equals the source.
#[tokio::test(flavor = "multi_thread")]
async fn crash_anywhere_loses_nothing() {
    let db = TestDb::new().await;
    tables(&db, 20_000).await;
    let cfg = ConfigDir::new();
    cfg.job(
        "sync",
        &job(&db, DIFF, "size = 500\nconcurrency = 2", &db.url),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut next_id = 1_000_000;
    for cycle in 0..30 {
        db.exec(&format!(
            "UPDATE src SET name = name || '.', updated_at = clock_timestamp() WHERE id % 97 = {m};
             DELETE FROM src WHERE id IN (SELECT id FROM src WHERE id % 89 = {m} LIMIT 20);
             INSERT INTO src (id, name) SELECT g, 'new' || g FROM generate_series({next_id}, {end}) g;",
            m = cycle % 89,
            end = next_id + 99
        ))
        .await;
        next_id += 100;
        let mut child = cfg
            .command(Some(&db.url), &["run", "--once"])
            .env("FERRY_JOB_LEASE", "1s")
            .env("FERRY_TASK_LEASE", "1s")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..1500))).await;
        let _ = child.kill();
        let _ = child.wait();
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut last = None;
    for _ in 0..5 {
        let out = cfg
            .command(Some(&db.url), &["run", "--once"])
            .env("FERRY_JOB_LEASE", "1s")
            .env("FERRY_TASK_LEASE", "1s")
            .output()
            .expect("run");
        if code(&out) == 0 && changed(&out, "sync") == 0 {
            last = Some(out);
            break;
        }
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    assert!(last.is_some(), "never reached a clean run");
    assert!(
        equal(&db).await,
        "target differs from source after 30 crashes"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM ferry_tasks WHERE state = 'running'")
            .await,
        0
    );
    println!(
        "crash anywhere: 30 SIGKILLs, target equals source ({} rows)",
        db.count("SELECT count(*) FROM dst").await
    );
}

/// The target refuses connections in the middle of 100k changes: exit 75
/// with tasks pending; after the fix everything arrives.
#[tokio::test(flavor = "multi_thread")]
async fn target_down_mid_run_then_everything_arrives() {
    let db = TestDb::new().await;
    tables(&db, 100_000).await;
    let role = format!("r_{}", &db.name[8..20]);
    db.exec(&format!(
        "CREATE ROLE {role} LOGIN; GRANT ALL ON dst TO {role};"
    ))
    .await;
    let target_url = format!(
        "{}/{}",
        pg_server().replace("postgres@", &format!("{role}@")),
        db.name
    );
    db.exec("CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.05); RETURN NULL; END $$;
             CREATE TRIGGER slow AFTER INSERT ON dst FOR EACH STATEMENT EXECUTE FUNCTION slow();").await;
    let cfg = ConfigDir::new();
    cfg.job(
        "sync",
        &job(&db, CURSOR, "size = 1000\nconcurrency = 2", &target_url),
    );

    let child = cfg
        .command(Some(&db.url), &["run", "--once"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    assert!(
        eventually(30, || async {
            db.count("SELECT count(*) FROM dst").await >= 10_000
        })
        .await
    );
    // An outage, not a refusal: the role may log in, but no connection is
    // free for it (53300), and its sessions are killed (57P01). A role
    // that may not log in at all (28000) is a configuration refusal: exit 78.
    db.exec(&format!("ALTER ROLE {role} CONNECTION LIMIT 0; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}';")).await;
    let out = child.wait_with_output().expect("wait");
    let down_exit = code(&out);
    let partial = db.count("SELECT count(*) FROM dst").await;
    let pending = db
        .count("SELECT count(*) FROM ferry_tasks WHERE state IN ('pending', 'failed')")
        .await;
    assert_eq!(
        code(&out),
        75,
        "no free connection and killed sessions are an unreachable target"
    );
    assert!(
        pending > 0 && partial < 100_000,
        "pending tasks {pending}, rows {partial}"
    );

    db.exec(&format!("ALTER ROLE {role} CONNECTION LIMIT -1"))
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let out = cfg.ferry(Some(&db.url), &["run", "--once"]);
    assert_eq!(
        code(&out),
        0,
        "the next run delivers everything: {}",
        stderr(&out)
    );
    assert!(equal(&db).await);
    println!("target down: exit {down_exit} with {partial} of 100000 rows and {pending} tasks pending; all delivered after");
    db.exec(&format!("DROP OWNED BY {role}")).await;
    drop(db);
    let admin = TestDb::new().await;
    admin.exec(&format!("DROP ROLE IF EXISTS {role}")).await;
}

/// 5 rows that break a target constraint among 50k: exactly those are dead,
/// with the target's message; everything else is synced.
#[tokio::test(flavor = "multi_thread")]
async fn poison_rows_are_isolated_by_bisection() {
    for state in [StateKind::Postgres, StateKind::Sqlite] {
        let db = TestDb::new().await;
        tables(&db, 50_000).await;
        db.exec(
            "UPDATE src SET name = 'poison' WHERE id IN (7, 12345, 23456, 34567, 49999);
                 ALTER TABLE dst ADD CONSTRAINT no_poison CHECK (name <> 'poison');",
        )
        .await;
        let cfg = ConfigDir::new();
        cfg.job("sync", &job(&db, CURSOR, "size = 1000", &db.url));
        let state_url = state_url(state, &cfg, &db);
        let out = cfg.ferry(Some(&state_url), &["run", "--once"]);
        assert_eq!(code(&out), 1, "{state:?}: items are dead");
        assert_eq!(synced(&out, "sync"), 49_995);
        assert_eq!(failed(&out, "sync"), 5);
        let statements = writes(&out, "sync");
        assert!(
            statements < 50 + 5 * 2 * 11,
            "{state:?}: {statements} writes"
        );
        assert_eq!(db.count("SELECT count(*) FROM dst").await, 49_995);

        let ids = task_ids(&cfg, &state_url, &["--state", "dead"]);
        let mut dead_keys = Vec::new();
        for id in &ids {
            let shown: serde_json::Value =
                serde_json::from_slice(&cfg.ferry(Some(&state_url), &["tasks", "show", id]).stdout)
                    .expect("json");
            for item in shown["items"].as_array().expect("items") {
                assert!(
                    item["error"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("no_poison"),
                    "{item}"
                );
                dead_keys.push(item["key"][0].as_i64().expect("id"));
            }
        }
        dead_keys.sort();
        assert_eq!(dead_keys, [7, 12345, 23456, 34567, 49999], "{state:?}");
        println!("poison rows ({state:?}): 5 of 50000 dead, 49995 synced, {statements} write statements for 50 tasks");
    }
}

/// K fails at v1 (transiently), K is updated to v2 and synced, then v1 is
/// retried: the target keeps v2 and v1 counts as superseded.
#[tokio::test(flavor = "multi_thread")]
async fn a_retried_old_version_never_overwrites_a_newer_one() {
    for state in [StateKind::Postgres, StateKind::Sqlite] {
        let db = TestDb::new().await;
        tables(&db, 10).await;
        db.exec("CREATE FUNCTION flaky() RETURNS trigger LANGUAGE plpgsql AS $$
                   BEGIN IF NEW.name = 'v1' THEN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END IF; RETURN NEW; END $$;
                 CREATE TRIGGER flaky BEFORE INSERT OR UPDATE ON dst FOR EACH ROW EXECUTE FUNCTION flaky();").await;
        let cfg = ConfigDir::new();
        cfg.job(
            "sync",
            &job(
                &db,
                CURSOR,
                "size = 100\nbackoff = { initial = \"1s\", max = \"1s\" }",
                &db.url,
            ),
        );
        let state_url = state_url(state, &cfg, &db);
        assert_eq!(code(&cfg.ferry(Some(&state_url), &["run", "--once"])), 0);

        db.exec("UPDATE src SET name = 'v1', updated_at = clock_timestamp() WHERE id = 5")
            .await;
        let out = cfg.ferry(Some(&state_url), &["run", "--once"]);
        // Full jitter may make the retry due within this run: it fails again.
        assert_eq!(code(&out), 1, "{state:?}: v1 waits for a retry");
        assert!(failed(&out, "sync") >= 1, "{state:?}: v1 failed");

        db.exec("UPDATE src SET name = 'v2', updated_at = clock_timestamp() WHERE id = 5")
            .await;
        let v2 = cfg.ferry(Some(&state_url), &["run", "--once"]);
        assert_eq!(
            synced(&v2, "sync"),
            1,
            "{state:?}: v2 synced while v1 waits"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let retry = cfg.ferry(Some(&state_url), &["run", "--once"]);
        assert_eq!(code(&retry), 0);
        // v1's retry may already be due in v2's run (full jitter): count both.
        assert_eq!(
            superseded(&v2, "sync") + superseded(&retry, "sync"),
            1,
            "{state:?}: v1 dropped as superseded"
        );
        assert_eq!(
            db.count("SELECT count(*) FROM dst WHERE id = 5 AND name = 'v2'")
                .await,
            1
        );
    }
}

/// Start a run that enqueues `tasks` tasks and is killed before it syncs.
async fn enqueue_only(cfg: &ConfigDir, state: &str) {
    let mut child = cfg
        .command(Some(state), &["run", "--once"])
        .env("FERRY_FAULT", "pause-after-enqueue")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    assert!(BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("fault point after-enqueue")));
    child.kill().expect("kill");
    child.wait().expect("wait");
}

async fn drain_with(processes: usize) -> (Duration, i64, i64) {
    let db = TestDb::new().await;
    tables(&db, 5_000).await;
    db.exec("CREATE TABLE writes (n bigint);
             CREATE FUNCTION counted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO writes VALUES (1); PERFORM pg_sleep(0.01); RETURN NULL; END $$;
             CREATE TRIGGER counted AFTER INSERT ON dst FOR EACH STATEMENT EXECUTE FUNCTION counted();").await;
    let cfg = ConfigDir::new();
    cfg.job(
        "sync",
        &job(&db, CURSOR, "size = 10\nconcurrency = 1", &db.url),
    );
    enqueue_only(&cfg, &db.url).await;
    assert_eq!(
        db.count("SELECT count(*) FROM ferry_tasks WHERE state = 'pending'")
            .await,
        500
    );
    let started = Instant::now();
    let children: Vec<_> = (0..processes)
        .map(|_| {
            cfg.command(Some(&db.url), &["run", "--once"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for mut c in children {
        assert_eq!(c.wait().expect("wait").code(), Some(0));
    }
    let took = started.elapsed();
    assert!(equal(&db).await);
    (
        took,
        db.count("SELECT count(*) FROM writes").await,
        db.count("SELECT count(*) FROM ferry_tasks WHERE state = 'done'")
            .await,
    )
}

/// 4 processes drain one PostgreSQL state store of 500 tasks: every task is
/// written exactly once, faster than one process.
#[tokio::test(flavor = "multi_thread")]
async fn many_workers_share_the_queue_each_task_once() {
    let (one, writes_one, done_one) = drain_with(1).await;
    let (four, writes_four, done_four) = drain_with(4).await;
    assert_eq!((writes_one, done_one), (500, 500));
    assert_eq!(
        (writes_four, done_four),
        (500, 500),
        "each task written and completed exactly once"
    );
    assert!(four < one, "4 processes took {four:?}, 1 took {one:?}");
    println!(
        "many workers: 500 tasks, 1 process {:.2}s, 4 processes {:.2}s ({:.2}x)",
        one.as_secs_f64(),
        four.as_secs_f64(),
        one.as_secs_f64() / four.as_secs_f64()
    );
}

/// 50 runs of 10k changes with a 1-second retention: the queue does not grow.
#[tokio::test(flavor = "multi_thread")]
async fn state_stays_bounded_under_churn() {
    let db = TestDb::new().await;
    tables(&db, 10_000).await;
    let cfg = ConfigDir::new();
    cfg.job("sync", &job(&db, CURSOR, "size = 1000", &db.url));
    cfg.schedules("[engine]\nretain_tasks = \"1s\"\nretain_runs = \"1s\"\n");
    let mut sizes = Vec::new();
    for run in 1..=50 {
        db.exec("UPDATE src SET name = name || '+', updated_at = clock_timestamp()")
            .await;
        let out = cfg.ferry(Some(&db.url), &["run", "--once"]);
        assert_eq!(synced(&out, "sync"), 10_000);
        if run == 10 || run == 50 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let rows = db.count("SELECT count(*) FROM ferry_tasks").await;
            let bytes = db
                .count("SELECT pg_total_relation_size('ferry_tasks') + pg_total_relation_size('ferry_task_items')")
                .await;
            let ledger = db.count("SELECT count(*) FROM ferry_ledger").await;
            sizes.push((run, rows, bytes, ledger));
        }
    }
    println!("bounded state (run, task rows, task bytes, ledger rows): {sizes:?}");
    let (_, rows10, bytes10, ledger10) = sizes[0];
    let (_, rows50, bytes50, ledger50) = sizes[1];
    assert!(
        rows50 <= rows10 + 10,
        "tasks grew from {rows10} to {rows50}"
    );
    assert!(
        bytes50 <= bytes10 * 3,
        "task tables grew from {bytes10} to {bytes50} bytes"
    );
    assert_eq!(
        (ledger10, ledger50),
        (10_000, 10_000),
        "one ledger row per live key"
    );
}

/// A worker stopped (SIGSTOP) past its lease while another reclaims and
/// completes its task cannot overwrite anything when it resumes.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_worker_cannot_overwrite_a_reclaimed_task() {
    let db = TestDb::new().await;
    tables(&db, 10).await;
    let cfg = ConfigDir::new();
    cfg.job(
        "sync",
        &job(&db, CURSOR, "size = 100\nconcurrency = 1", &db.url),
    );
    let stale = cfg
        .command(Some(&db.url), &["run", "--once"])
        .env("FERRY_FAULT", "stop-before-write")
        .env("FERRY_TASK_LEASE", "1s")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = stale.id();
    assert!(
        eventually(10, || async { stopped(pid) }).await,
        "the worker never stopped before its write"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let out = cfg
        .command(Some(&db.url), &["run", "--once"])
        .env("FERRY_TASK_LEASE", "1s")
        .output()
        .expect("run");
    assert_eq!(
        synced(&out, "sync"),
        10,
        "the task was reclaimed and completed"
    );
    db.exec("UPDATE src SET name = 'newer', updated_at = clock_timestamp() WHERE id = 3")
        .await;
    let out = cfg
        .command(Some(&db.url), &["run", "--once"])
        .env("FERRY_TASK_LEASE", "1s")
        .output()
        .expect("run");
    assert_eq!(synced(&out, "sync"), 1);

    resume(pid);
    let out = stale.wait_with_output().expect("wait stale");
    assert_eq!(synced(&out, "sync"), 0, "the stale worker wrote nothing");
    assert!(equal(&db).await, "the newer value survived");
    assert_eq!(
        db.count("SELECT count(*) FROM ferry_tasks WHERE state <> 'done'")
            .await,
        0
    );
}
