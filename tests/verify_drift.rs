//! Drift the ledger cannot see, found by `ferry verify` and repaired: a
//! discarded task and a target restored from an old copy, on both state
//! stores; and a row changed while a verify runs is not reported.
mod common;

use common::*;

const DIFF: &str = "strategy = \"diff\"";

/// `src` of 50 rows synced into `dst`, whose CHECK refuses the name
/// `poison`; the job gives up on a task at its first failure.
async fn synced(db: &TestDb, kind: StateKind) -> (ConfigDir, String) {
    db.exec(
        "CREATE TABLE src (id bigint PRIMARY KEY, name text);
         INSERT INTO src SELECT g, 'n' || g FROM generate_series(1, 50) g;
         CREATE TABLE dst (id bigint PRIMARY KEY, name text CONSTRAINT no_poison CHECK (name <> 'poison'));",
    )
    .await;
    let cfg = ConfigDir::new();
    cfg.job(
        "copy",
        &pg_job(&db.url, "src", DIFF, "size = 100", &db.url, "dst"),
    );
    let state = state_url(kind, &cfg, db);
    cfg.run_once_ok(&state);
    (cfg, state)
}

/// Repairs with `verify --repair` (exit 0), then checks the tables equal
/// and the next run idle.
async fn repaired(cfg: &ConfigDir, state: &str, db: &TestDb, what: &str) {
    let (code, json) = verify(cfg, state, &["--repair"]);
    assert_eq!(code, 0, "{what}: {json:#}");
    assert_eq!(json["jobs"][0]["after"]["equal"], 50, "{what}: {json:#}");
    assert_eq!(
        db.difference("SELECT * FROM src", "SELECT * FROM dst")
            .await,
        0,
        "{what}"
    );
    let out = cfg.run_once_ok(state);
    assert_eq!(
        changed(&out, "copy"),
        0,
        "{what}: the ledger knows the rows"
    );
}

async fn discarded_and_restored(kind: StateKind) {
    let db = TestDb::new().await;
    let (cfg, state) = synced(&db, kind).await;

    // A task the target refuses, given up on: its changes never arrive,
    // and the ledger no longer expects them.
    db.exec("UPDATE src SET name = 'poison' WHERE id IN (7, 8)")
        .await;
    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(code(&out), 1, "{kind:?}: {}", stderr(&out));
    let dead = task_ids(&cfg, &state, &["--state", "dead"]);
    assert_eq!(dead.len(), 1, "{kind:?}: {dead:?}");
    let out = cfg.ferry(Some(&state), &["tasks", "discard", &dead[0], "--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (code, json) = verify(&cfg, &state, &[]);
    assert_eq!(code, 1, "{kind:?}: {json:#}");
    assert_eq!(keys(&json, "different"), ["7", "8"], "{json:#}");
    assert_eq!(result(&json)["fields"]["name"], 2, "{json:#}");
    db.exec("ALTER TABLE dst DROP CONSTRAINT no_poison").await;
    repaired(&cfg, &state, &db, "discarded").await;

    // The target restored from a copy taken before these changes synced.
    db.exec(
        "CREATE TABLE backup AS SELECT * FROM dst;
         UPDATE src SET name = 'later' WHERE id IN (11, 12);
         DELETE FROM src WHERE id = 13;
         INSERT INTO src VALUES (51, 'n51');",
    )
    .await;
    cfg.run_once_ok(&state);
    db.exec("TRUNCATE dst; INSERT INTO dst SELECT * FROM backup")
        .await;
    let (code, json) = verify(&cfg, &state, &[]);
    assert_eq!(code, 1, "{kind:?}: {json:#}");
    assert_eq!(keys(&json, "different"), ["11", "12"], "{json:#}");
    assert_eq!(keys(&json, "missing"), ["51"], "{json:#}");
    assert_eq!(keys(&json, "extra"), ["13"], "{json:#}");
    repaired(&cfg, &state, &db, "restored").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn discarded_task_and_restored_backup_sqlite_state() {
    discarded_and_restored(StateKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn discarded_task_and_restored_backup_postgres_state() {
    discarded_and_restored(StateKind::Postgres).await;
}

/// A key that differs when the verify compares, and is alike by the time
/// it is checked again (the source changed meanwhile), is not reported.
#[tokio::test(flavor = "multi_thread")]
async fn a_row_changed_during_the_verify_is_not_reported() {
    let db = TestDb::new().await;
    let (cfg, state) = synced(&db, StateKind::Sqlite).await;
    db.exec("UPDATE dst SET name = 'hand' WHERE id IN (3, 4)")
        .await;
    let verifying = spawn_command_at_fault(
        &cfg,
        &state,
        &["--output", "json", "verify"],
        "stop",
        "verify-compared",
        &[],
    );
    // Between the compare and the re-check, the source takes key 3's
    // target value.
    db.exec("UPDATE src SET name = 'hand' WHERE id = 3").await;
    resume(verifying.id());
    let out = verifying.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(1), "key 4 still differs");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("verify JSON");
    assert_eq!(
        keys(&json, "different"),
        ["4"],
        "key 3, alike when checked again, is not reported: {json:#}"
    );
}
