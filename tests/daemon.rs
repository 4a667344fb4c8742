//! The daemon as operators run it: the real binary, schedules, signals,
//! triggers and its HTTP port, with the state in PostgreSQL.
mod common;

use std::time::Duration;

use common::*;

/// A quick PostgreSQL → PostgreSQL job over `items`, and a slow one whose
/// source query takes `sleep` seconds.
async fn tables(db: &TestDb) {
    db.exec(
        "CREATE TABLE items (id bigint PRIMARY KEY, name text, updated_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE items_copy (id bigint PRIMARY KEY, name text, updated_at timestamptz);
         INSERT INTO items (id, name) SELECT g, 'item ' || g FROM generate_series(1, 200) g;",
    )
    .await;
}

/// 1000 items, and a target that takes 0.3 s per write statement: a drain
/// long enough to interrupt.
async fn slow_writes(db: &TestDb) {
    db.exec(
        "INSERT INTO items (id, name) SELECT g, 'item ' || g FROM generate_series(201, 1000) g;
         CREATE FUNCTION slow_down() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$;
         CREATE TRIGGER slow_writes AFTER INSERT ON items_copy FOR EACH STATEMENT EXECUTE FUNCTION slow_down();",
    )
    .await;
}

/// After an interrupted run, the next `run --once` delivers everything.
fn the_next_run_completes(cfg: &ConfigDir, db: &TestDb) {
    let out = cfg.ferry(Some(&db.url), &["run", "--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

fn job(db: &TestDb, source: &str, target_table: &str, extra: &str) -> String {
    format!(
        r#"
[source]
type = "postgres"
url = "{url}"
{source}
key = ["id"]

[detect]
strategy = "cursor"
cursor = "updated_at"

[batch]
size = 50
concurrency = 1
{extra}

[target]
type = "postgres"
url = "{url}"
table = "{target_table}"
key = ["id"]

[rules]
owner = "source"
"#,
        url = db.url
    )
}

async fn runs(db: &TestDb, sql_filter: &str) -> Vec<(i64, i64, Option<i64>)> {
    sqlx::query_as::<_, (i64, i64, Option<i64>)>(&format!(
        "SELECT id, started_at, finished_at FROM ferry_runs WHERE {sql_filter} ORDER BY started_at"
    ))
    .fetch_all(&db.pool)
    .await
    .unwrap_or_default()
}

fn no_overlap(runs: &[(i64, i64, Option<i64>)]) -> bool {
    runs.windows(2)
        .all(|w| w[0].2.is_some_and(|end| end <= w[1].1))
}

#[tokio::test(flavor = "multi_thread")]
async fn schedules_run_every_second_and_a_slow_job_never_overlaps() {
    let db = TestDb::new().await;
    tables(&db).await;
    db.exec("CREATE TABLE slow_copy (LIKE items_copy INCLUDING ALL)")
        .await;
    let cfg = ConfigDir::new();
    cfg.job("fast", &job(&db, "table = \"items\"", "items_copy", ""));
    // Diff reads the source once per run: each run of `slow` takes over 3 s.
    let slow = job(
        &db,
        "query = \"SELECT i.* FROM items i CROSS JOIN (SELECT pg_sleep(3)) AS z\"",
        "slow_copy",
        "",
    )
    .replace(
        "strategy = \"cursor\"\ncursor = \"updated_at\"",
        "strategy = \"diff\"",
    );
    cfg.job("slow", &slow);
    let mut d = cfg
        .daemon(
            &db.url,
            "fast = \"*/1 * * * * *\"\nslow = \"*/1 * * * * *\"",
            &[],
        )
        .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (code, _) = d.terminate();
    assert_eq!(code, 143, "{}", d.log_text());

    let fast = runs(&db, "job = 'fast' AND trigger = 'schedule'").await;
    assert!(
        (7..=12).contains(&fast.len()),
        "fast job: {} runs in 10 s",
        fast.len()
    );
    let slow = runs(&db, "job = 'slow' AND trigger = 'schedule'").await;
    assert!(
        (2..=3).contains(&slow.len()),
        "slow job: {} runs of 3+ s in 10 s",
        slow.len()
    );
    assert!(no_overlap(&slow), "slow runs overlap: {slow:?}");
    assert_eq!(
        db.difference("SELECT * FROM items", "SELECT * FROM slow_copy")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigusr1_runs_within_a_second_and_five_at_once_run_once() {
    let db = TestDb::new().await;
    tables(&db).await;
    let cfg = ConfigDir::new();
    cfg.job("fast", &job(&db, "table = \"items\"", "items_copy", ""));
    let mut d = cfg.daemon(&db.url, "", &[]).await;
    let sent = chrono::Utc::now().timestamp_millis();
    for _ in 0..5 {
        d.signal("USR1");
    }
    assert!(
        eventually(1, || async {
            runs(&db, "trigger = 'signal'").await.len() == 1
        })
        .await,
        "no run within 1 s:\n{}",
        d.log_text()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let signal_runs = runs(&db, "trigger = 'signal'").await;
    assert_eq!(
        signal_runs.len(),
        1,
        "five signals in a burst are one request"
    );
    assert!(signal_runs[0].1 - sent < 1000);
    assert_eq!(d.terminate().0, 143);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_keeps_the_old_config_when_the_new_one_is_broken() {
    let db = TestDb::new().await;
    tables(&db).await;
    let cfg = ConfigDir::new();
    cfg.job("fast", &job(&db, "table = \"items\"", "items_copy", ""));
    let mut d = cfg.daemon(&db.url, "", &[]).await;

    cfg.job(
        "second",
        &job(&db, "table = \"items\"", "items_copy", "colour = \"red\""),
    );
    d.signal("HUP");
    assert!(
        eventually(3, || async {
            d.get("/metrics")
                .await
                .unwrap_or_default()
                .contains("ferry_config_reloads_total{result=\"rejected\"} 1")
        })
        .await,
        "rejected reload not counted:\n{}",
        d.log_text()
    );
    assert!(
        d.log_text()
            .contains("second.toml:15:1: unknown field `colour`"),
        "{}",
        d.log_text()
    );
    assert_eq!(
        d.get("/healthz").await.as_deref(),
        Some("ok\n"),
        "still running"
    );
    let metrics = d.get("/metrics").await.unwrap_or_default();
    assert!(metrics.contains("ferry_config_last_reload_successful 0"));
    assert!(
        !metrics.contains("sync_job=\"second\""),
        "the broken job must not be loaded"
    );

    cfg.job("second", &job(&db, "table = \"items\"", "items_copy", ""));
    d.signal("HUP");
    assert!(
        eventually(3, || async {
            d.get("/metrics")
                .await
                .unwrap_or_default()
                .contains("ferry_job_running{sync_job=\"second\"} 0")
        })
        .await,
        "fixed config not in effect:\n{}",
        d.log_text()
    );
    let out = cfg.ferry(Some(&db.url), &["trigger", "--wait", "second"]);
    assert_eq!(code(&out), 0, "the new job runs: {}", stderr(&out));
    assert_eq!(d.terminate().0, 143);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_long_run_drains_and_loses_nothing() {
    let db = TestDb::new().await;
    tables(&db).await;
    slow_writes(&db).await;
    let cfg = ConfigDir::new();
    cfg.job("fast", &job(&db, "table = \"items\"", "items_copy", ""));
    let mut d = cfg.daemon(&db.url, "", &[]).await;
    d.signal("USR1");
    assert!(
        eventually(10, || async {
            db.count("SELECT count(*) FROM items_copy").await > 0
        })
        .await
    );

    let (exit, took) = d.terminate();
    assert_eq!(exit, 143, "{}", d.log_text());
    assert!(
        took < Duration::from_secs(10),
        "exit within the grace period, took {took:?}"
    );
    let copied = db.count("SELECT count(*) FROM items_copy").await;
    assert!(
        copied < 1000,
        "the drain stopped claiming ({copied} rows copied)"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM ferry_tasks WHERE state = 'running'")
            .await,
        0,
        "in-flight tasks finished or released"
    );

    the_next_run_completes(&cfg, &db);
    assert_eq!(
        db.difference("SELECT * FROM items", "SELECT * FROM items_copy")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_on_one_state_store_run_every_tick_once() {
    let db = TestDb::new().await;
    tables(&db).await;
    let cfg = ConfigDir::new();
    cfg.job("fast", &job(&db, "table = \"items\"", "items_copy", ""));
    let a = cfg.daemon(&db.url, "fast = \"*/1 * * * * *\"", &[]).await;
    // The second shares the config folder: FERRY_METRICS moves its port.
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let b = cfg
        .start_daemon(&db.url, port, &[("FERRY_METRICS", &address)])
        .await;
    // Two daemons share the ticks until 15 scheduled runs have finished.
    let finished = "trigger = 'schedule' AND finished_at IS NOT NULL";
    assert!(
        eventually(40, || async { runs(&db, finished).await.len() >= 15 }).await,
        "15 scheduled runs never finished: {}",
        runs(&db, finished).await.len()
    );
    drop((a, b));

    let dup = db.count("SELECT count(*) FROM (SELECT scheduled_for FROM ferry_runs GROUP BY scheduled_for HAVING count(*) > 1) d").await;
    assert_eq!(dup, 0, "a tick ran twice");
    let all = runs(&db, finished).await;
    assert!(no_overlap(&all), "runs of one job overlapped");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_ferry_metrics_is_a_configuration_error() {
    let db = TestDb::new().await;
    let cfg = ConfigDir::new();
    cfg.schedules("[schedules]\n");
    let out = cfg
        .command(Some(&db.url), &["run"])
        .env("FERRY_METRICS", "port 9464")
        .output()
        .expect("run");
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("FERRY_METRICS = `port 9464` is not an address"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_reaches_the_daemon_and_wait_returns_its_outcome() {
    let db = TestDb::new().await;
    tables(&db).await;
    let cfg = ConfigDir::new();
    cfg.job("good", &job(&db, "table = \"items\"", "items_copy", ""));
    cfg.job(
        "bad",
        &job(&db, "table = \"items\"", "items_copy", "").replace(
            &format!("url = \"{}\"\ntable = \"items_copy\"", db.url),
            "url = \"postgres://ferry@127.0.0.1:1/x\"\ntable = \"items_copy\"",
        ),
    );
    let mut d = cfg.daemon(&db.url, "", &[]).await;

    let out = cfg.ferry(Some(&db.url), &["trigger", "--wait", "good"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("good: success"));
    assert_eq!(
        db.difference("SELECT * FROM items", "SELECT * FROM items_copy")
            .await,
        0
    );

    let out = cfg.ferry(Some(&db.url), &["trigger", "--wait", "bad"]);
    assert_eq!(code(&out), 75, "the run's outcome: target unreachable");

    let out = cfg.ferry(Some(&db.url), &["trigger", "nope"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("jobs: bad, good"));
    assert_eq!(
        db.count("SELECT count(*) FROM ferry_runs WHERE trigger = 'manual'")
            .await,
        2
    );
    assert_eq!(d.terminate().0, 143);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_trigger_needs_the_bearer_token() {
    let db = TestDb::new().await;
    tables(&db).await;
    let cfg = ConfigDir::new();
    cfg.job("good", &job(&db, "table = \"items\"", "items_copy", ""));
    let d = cfg
        .daemon(&db.url, "", &[("FERRY_TRIGGER_TOKEN", "s3cret")])
        .await;
    let client = reqwest::Client::new();
    let post = |path: &str, token: Option<&str>| {
        let mut req = client.post(d.url(path));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        req.send()
    };
    assert_eq!(post("/trigger/good", None).await.unwrap().status(), 401);
    assert_eq!(
        post("/trigger/good", Some("wrong")).await.unwrap().status(),
        401
    );
    assert_eq!(
        post("/trigger/nope", Some("s3cret"))
            .await
            .unwrap()
            .status(),
        404
    );
    let ok = post("/trigger/good", Some("s3cret")).await.unwrap();
    assert_eq!(ok.status(), 202);
    assert!(ok.text().await.unwrap().contains("\"id\":"));
    assert!(
        eventually(3, || async {
            !runs(&db, "trigger = 'manual' AND finished_at IS NOT NULL")
                .await
                .is_empty()
        })
        .await
    );
    assert_eq!(d.get("/readyz").await.as_deref(), Some("ready\n"));
    drop(d);

    let cfg2 = ConfigDir::new();
    cfg2.job("good", &job(&db, "table = \"items\"", "items_copy", ""));
    let d2 = cfg2.daemon(&db.url, "", &[]).await;
    assert_eq!(
        reqwest::Client::new()
            .post(d2.url("/trigger/good"))
            .header("Authorization", "Bearer x")
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "disabled without FERRY_TRIGGER_TOKEN"
    );
}

/// After downtime, `missed = "run_once"` runs the latest missed tick once at
/// start; `missed = "skip"` waits for the next tick.
#[tokio::test(flavor = "multi_thread")]
async fn missed_ticks_run_once_or_are_skipped_after_downtime() {
    for (policy, expected) in [("run_once", 1), ("skip", 0)] {
        let db = TestDb::new().await;
        tables(&db).await;
        let cfg = ConfigDir::new();
        cfg.job("fast", &job(&db, "table = \"items\"", "items_copy", ""));
        assert_eq!(code(&cfg.ferry(Some(&db.url), &["migrate"])), 0);
        // The last tick any daemon handled was an hour ago: since then ticks were missed.
        let hour_ago = chrono::Utc::now().timestamp_millis() - 3_600_000;
        db.exec(&format!(
            "INSERT INTO ferry_ticks VALUES ('fast', {hour_ago}, 'gone', {hour_ago})"
        ))
        .await;
        let schedule = format!("fast = {{ cron = \"*/10 * * * *\", missed = \"{policy}\" }}");
        let mut d = cfg.daemon(&db.url, &schedule, &[]).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let ran = runs(&db, "trigger = 'schedule'").await.len();
        d.terminate();
        // A */10 tick could fall inside these 3 s; then both policies run it.
        let on_time_tick = chrono::Utc::now().timestamp() % 600 < 5;
        if !on_time_tick {
            assert_eq!(ran, expected, "missed = {policy}");
        }
    }
}

/// `run --once` drains on SIGTERM too: stop claiming, exit 143, lose nothing.
#[tokio::test(flavor = "multi_thread")]
async fn run_once_drains_on_sigterm() {
    let db = TestDb::new().await;
    tables(&db).await;
    slow_writes(&db).await;
    let cfg = ConfigDir::new();
    cfg.job("fast", &job(&db, "table = \"items\"", "items_copy", ""));
    let mut child = cfg
        .command(Some(&db.url), &["run", "--once"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    assert!(
        eventually(10, || async {
            db.count("SELECT count(*) FROM items_copy").await > 0
        })
        .await
    );
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(143));
    assert!(db.count("SELECT count(*) FROM items_copy").await < 1000);
    the_next_run_completes(&cfg, &db);
    assert_eq!(
        db.difference("SELECT * FROM items", "SELECT * FROM items_copy")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_with_after_starts_when_the_job_it_follows_has_finished() {
    let db = TestDb::new().await;
    tables(&db).await;
    db.exec("CREATE TABLE slow_copy (LIKE items_copy INCLUDING ALL)")
        .await;
    let cfg = ConfigDir::new();
    let slow = job(
        &db,
        "query = \"SELECT i.* FROM items i CROSS JOIN (SELECT pg_sleep(2)) AS z\"",
        "slow_copy",
        "",
    )
    .replace(
        "strategy = \"cursor\"\ncursor = \"updated_at\"",
        "strategy = \"diff\"",
    );
    cfg.job("a_slow", &slow);
    cfg.job(
        "b_after",
        &format!(
            "after = [\"a_slow\"]\n{}",
            job(&db, "table = \"items\"", "items_copy", "")
        ),
    );
    let mut d = cfg.daemon(&db.url, "", &[]).await;
    d.signal("USR1");
    assert!(
        eventually(8, || async {
            runs(&db, "finished_at IS NOT NULL").await.len() == 2
        })
        .await,
        "both jobs ran:\n{}",
        d.log_text()
    );
    let slow = runs(&db, "job = 'a_slow'").await;
    let after = runs(&db, "job = 'b_after'").await;
    assert!(
        after[0].1 >= slow[0].2.unwrap_or(i64::MAX),
        "b_after started at {} before a_slow finished at {:?}",
        after[0].1,
        slow[0].2
    );
    assert_eq!(d.terminate().0, 143);
}
