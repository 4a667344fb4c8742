//! Operator commands on the queue: pause/resume, discard, status.
mod common;

use common::*;

/// Every row through the per-item queue: these commands act on its tasks.
fn job(db: &TestDb) -> String {
    items_only(&pg_job(
        &db.url,
        "src",
        CURSOR,
        "size = 100",
        &db.url,
        "dst",
    ))
}

async fn setup() -> (TestDb, ConfigDir) {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (id bigint PRIMARY KEY, name text, updated_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE dst (LIKE src INCLUDING ALL);
         INSERT INTO src (id, name) SELECT g, 'n' || g FROM generate_series(1, 500) g;",
    )
    .await;
    let cfg = ConfigDir::new();
    cfg.job("sync", &job(&db));
    (db, cfg)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_job_queues_changes_and_sends_them_on_resume() {
    for state_kind in [StateKind::Postgres, StateKind::Sqlite] {
        let (db, cfg) = setup().await;
        let state = state_url(state_kind, &cfg, &db);
        let out = cfg.ferry(Some(&state), &["pause", "sync"]);
        assert_eq!(code(&out), 0);
        let out = cfg.ferry(Some(&state), &["run", "--once"]);
        assert_eq!(
            (code(&out), changed(&out, "sync"), synced(&out, "sync")),
            (1, 500, 0),
            "{state_kind:?}: a paused job is not in sync"
        );
        assert_eq!(db.count("SELECT count(*) FROM dst").await, 0);
        let status = String::from_utf8_lossy(&cfg.ferry(Some(&state), &["status", "sync"]).stdout)
            .to_string();
        assert!(
            status.contains("sync (paused: nothing is sent)") && status.contains("pending 5"),
            "{status}"
        );

        assert_eq!(code(&cfg.ferry(Some(&state), &["resume", "sync"])), 0);
        let out = cfg.ferry(Some(&state), &["run", "--once"]);
        assert_eq!(synced(&out, "sync"), 500);
        assert_eq!(
            db.difference("SELECT * FROM src", "SELECT * FROM dst")
                .await,
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn discard_needs_confirmation_and_removes_only_what_it_names() {
    let (db, cfg) = setup().await;
    assert_eq!(code(&cfg.ferry(Some(&db.url), &["pause", "sync"])), 0);
    cfg.ferry(Some(&db.url), &["run", "--once"]);
    let first = db
        .count("SELECT min(id) FROM ferry_tasks")
        .await
        .to_string();
    let out = cfg.ferry(Some(&db.url), &["tasks", "discard", &first]);
    assert_eq!(code(&out), 2, "--yes is required");
    let out = cfg.ferry(Some(&db.url), &["tasks", "discard", &first, "--yes"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 task(s) discarded"));
    assert_eq!(db.count("SELECT count(*) FROM ferry_tasks").await, 4);
    assert_eq!(code(&cfg.ferry(Some(&db.url), &["pause", "nosuch"])), 2);
}

/// A scan streams a whole table: sqlx's "slow statement" warning would
/// accompany every large run, so ferry logs slow statements at debug level.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_source_scan_logs_no_slow_statement_warning() {
    let (db, cfg) = setup().await;
    let slow_scan = job(&db).replace(
        "table = \"src\"",
        "query = \"SELECT * FROM src WHERE (SELECT pg_sleep(1.2)) IS NOT NULL\"",
    );
    cfg.job("sync", &slow_scan);
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    let out = cfg.run_once_ok(&state);
    assert_eq!(synced(&out, "sync"), 500);
    let log = stderr(&out);
    assert!(!log.contains("slow statement"), "{log}");
    // The next run's scan binds its watermark: a query sqlx times.
    let out = cfg
        .command(Some(&state), &["run", "--once"])
        .env("FERRY_LOG", "info,sqlx=debug")
        .output()
        .expect("ferry runs");
    assert!(
        stderr(&out).contains("slow statement"),
        "shown at debug level: {}",
        stderr(&out)
    );
}
