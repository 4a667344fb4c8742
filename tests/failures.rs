//! Failures lose nothing: clear one-line errors naming job, system and object,
//! the exit codes the README documents, and a rerun that succeeds once fixed.
mod common;

use common::*;

fn job(source_url: &str, target_url: &str, extra: &str) -> String {
    let batch = format!("size = 100\nbackoff = {{ initial = \"50ms\", max = \"100ms\" }}\n{extra}");
    pg_job(
        source_url,
        "shop_customers",
        CURSOR,
        &batch,
        target_url,
        "crm_contacts",
    )
}

const SOURCE_TABLE: &str = "CREATE TABLE shop_customers (id bigint PRIMARY KEY, name text, updated_at timestamptz NOT NULL);
     INSERT INTO shop_customers SELECT g, 'n' || g, now() FROM generate_series(1, 1000) g;";

async fn target_matches(db: &TestDb) -> bool {
    db.difference(
        "SELECT id, name FROM shop_customers",
        "SELECT id, name FROM crm_contacts",
    )
    .await
        == 0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_source_table_names_job_system_and_table_then_recovers() {
    let db = TestDb::new().await;
    db.exec("CREATE TABLE crm_contacts (id bigint PRIMARY KEY, name text, updated_at timestamptz)")
        .await;
    let cfg = ConfigDir::new();
    cfg.job("customers", &job(&db.url, &db.url, ""));
    let state = state_url(StateKind::Sqlite, &cfg, &db);

    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("error: job customers:"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains("source postgres postgres://")
            && line.contains("table shop_customers does not exist"),
        "{line}"
    );

    db.exec(SOURCE_TABLE).await;
    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(target_matches(&db).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_connection_exits_75_without_leaking_the_password() {
    let db = TestDb::new().await;
    let cfg = ConfigDir::new();
    cfg.job(
        "customers",
        &job("postgres://app:hunter2@127.0.0.1:1/shop", &db.url, ""),
    );
    let out = cfg.ferry(
        Some(&state_url(StateKind::Sqlite, &cfg, &db)),
        &["run", "--once"],
    );
    assert_eq!(code(&out), 75);
    let err = stderr(&out);
    assert!(err.contains("error: job customers: source postgres postgres://app:***@127.0.0.1:1/shop could not be reached"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");

    let out = cfg.ferry(
        Some("postgres://app:hunter2@127.0.0.1:1/state"),
        &["status"],
    );
    assert_eq!(code(&out), 75, "an unreachable state store is exit 75 too");
    assert!(!stderr(&out).contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_type_mismatch_kills_items_with_the_error_and_retry_resends_them() {
    let db = TestDb::new().await;
    db.exec(SOURCE_TABLE).await;
    db.exec(
        "CREATE TABLE crm_contacts (id bigint PRIMARY KEY, name integer, updated_at timestamptz)",
    )
    .await;
    let cfg = ConfigDir::new();
    cfg.job("customers", &job(&db.url, &db.url, ""));
    let state = state_url(StateKind::Postgres, &cfg, &db);

    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: job customers: target postgres")
                && l.contains("table crm_contacts rejected the data")
                && l.contains("integer")),
        "{err}"
    );
    let tasks = cfg.ferry(
        Some(&state),
        &["tasks", "--job", "customers", "--state", "dead"],
    );
    assert_eq!(
        String::from_utf8_lossy(&tasks.stdout).lines().count(),
        11,
        "10 dead tasks kept, plus the header"
    );
    let dead_items = db
        .count("SELECT sum(item_count)::bigint FROM ferry_tasks WHERE state = 'dead'")
        .await;
    assert_eq!(
        dead_items, 1000,
        "a type error is the data's fault: rejected, dead at once, payload kept"
    );
    let id = db
        .count("SELECT min(id) FROM ferry_tasks WHERE state = 'dead'")
        .await
        .to_string();
    let shown = cfg.ferry(Some(&state), &["tasks", "show", &id]);
    let shown: serde_json::Value =
        serde_json::from_slice(&shown.stdout).expect("tasks show prints JSON");
    assert!(
        shown["items"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("invalid input syntax for type integer"),
        "{shown}"
    );

    db.exec("ALTER TABLE crm_contacts ALTER COLUMN name TYPE text")
        .await;
    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(
        synced(&out, "customers"),
        0,
        "dead items wait for the operator"
    );
    let out = cfg.ferry(
        Some(&state),
        &["tasks", "retry", "--dead", "--job", "customers"],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("10 task(s) queued again"));
    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(synced(&out, "customers"), 1000);
    assert!(target_matches(&db).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_target_exits_75_and_keeps_the_queue() {
    let db = TestDb::new().await;
    db.exec(SOURCE_TABLE).await;
    db.exec("CREATE TABLE crm_contacts (id bigint PRIMARY KEY, name text, updated_at timestamptz)")
        .await;
    let cfg = ConfigDir::new();
    cfg.job(
        "customers",
        &job(&db.url, "postgres://ferry@127.0.0.1:1/crm", ""),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(code(&out), 75);
    assert!(stderr(&out).contains("error: job customers: target postgres postgres://ferry@127.0.0.1:1/crm could not be reached"));

    cfg.job("customers", &job(&db.url, &db.url, ""));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        synced(&out, "customers"),
        1000,
        "every queued item was kept"
    );
    assert!(target_matches(&db).await);
}

/// A run SIGKILLed after enqueue and before sync loses nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_after_enqueue_loses_nothing() {
    for kind in [StateKind::Sqlite, StateKind::Postgres] {
        let db = TestDb::new().await;
        db.exec(SOURCE_TABLE).await;
        db.exec(
            "CREATE TABLE crm_contacts (id bigint PRIMARY KEY, name text, updated_at timestamptz)",
        )
        .await;
        let cfg = ConfigDir::new();
        // The per-item queue (`tests/snapshot.rs` kills chunk tasks).
        cfg.job("customers", &items_only(&job(&db.url, &db.url, "")));
        let state = state_url(kind, &cfg, &db);

        let mut child = spawn_at_fault(&cfg, &state, "pause", "after-enqueue", &[]);
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        assert_eq!(
            db.count("SELECT count(*) FROM crm_contacts").await,
            0,
            "killed before any sync"
        );

        // The watermark moved with the enqueue, so this run detects nothing
        // new and must deliver what the killed run queued.
        let out = cfg.ferry(Some(&state), &["run", "--once"]);
        assert_eq!(code(&out), 0, "{kind:?}: {}", common::stderr(&out));
        assert_eq!(changed(&out, "customers"), 0);
        assert_eq!(synced(&out, "customers"), 1000);
        assert!(target_matches(&db).await, "{kind:?}");
    }
}
