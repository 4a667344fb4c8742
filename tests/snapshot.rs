//! The snapshot lane: a first run, `run --once --full` and `ferry resync` of
//! a SQL table source queue chunk tasks (key ranges the source splits
//! itself) instead of one item per row; each chunk is re-read and written
//! in bulk. What it leaves — target rows, ledger, watermark — is what the
//! per-item lane leaves, on both state stores and for every key kind; a
//! killed snapshot resumes with the chunks left.
mod common;

use common::*;

/// `n` rows with ids 1..=n, each a second later than the one before.
async fn source_rows(db: &TestDb, n: i64) {
    db.exec(&format!(
        "CREATE TABLE src (id bigint PRIMARY KEY, name text, updated_at timestamptz NOT NULL);
         INSERT INTO src SELECT i, 'n' || i, '2026-01-01'::timestamptz + i * interval '1 second' FROM generate_series(1, {n}) i;
         CREATE TABLE dst (id bigint PRIMARY KEY, name text, updated_at timestamptz);"
    ))
    .await;
}

const CURSOR: &str = "strategy = \"cursor\"\ncursor = \"updated_at\"\nlag = \"0s\"";
const DIFF: &str = "strategy = \"diff\"";

/// `src` into `dst` of `db`, with `[snapshot] chunk_rows` and parallelism.
fn copy_job(db: &TestDb, detect: &str, chunk_rows: u64, parallelism: u64) -> String {
    format!(
        "{}\n[snapshot]\nchunk_rows = {chunk_rows}\nparallelism = {parallelism}\n",
        pg_job(&db.url, "src", detect, "size = 100", &db.url, "dst")
    )
}

/// Every statement writing `dst` (on `events`) takes `seconds` longer: a
/// snapshot then runs long enough for another process, or a kill, to meet it.
async fn slow_writes(db: &TestDb, events: &str, seconds: f64) {
    db.exec(&format!(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$;
         CREATE TRIGGER slow AFTER {events} ON dst FOR EACH STATEMENT EXECUTE FUNCTION slow();"
    ))
    .await;
}

async fn same_rows(db: &TestDb) {
    assert_eq!(
        db.difference(
            "SELECT id, name, updated_at FROM src",
            "SELECT id, name, updated_at FROM dst"
        )
        .await,
        0,
        "the target holds exactly the source's rows"
    );
}

async fn first_run_through_chunks(kind: StateKind, detect: &str) {
    let db = TestDb::new().await;
    source_rows(&db, 1000).await;
    let cfg = ConfigDir::new();
    cfg.job("copy", &copy_job(&db, detect, 64, 2));
    let state = state_url(kind, &cfg, &db);

    let plan = cfg.ferry(Some(&state), &["--output", "json", "plan"]);
    let doc: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan JSON");
    assert_eq!(
        doc["plans"][0]["snapshot"],
        serde_json::json!({"chunks": 16, "rows": 1000}),
        "{doc}"
    );
    let out = cfg.run_once_ok(&state);
    let run = summary_run(&out, "copy");
    assert_eq!(run["inserts"], 1000, "{run}");
    assert_eq!(run["synced"], 1000, "{run}");
    assert_eq!(run["writes"], 16, "one write per chunk of 64 rows: {run}");
    same_rows(&db).await;

    // The ledger knows every key: nothing changed is nothing sent, and a
    // cursor job starts from the watermark its snapshot recorded.
    let out = cfg.run_once_ok(&state);
    let run = summary_run(&out, "copy");
    assert_eq!(run["changed"], 0, "{run}");
    if detect == CURSOR {
        assert!(run["scanned"].as_u64().unwrap() < 10, "{run}");
    }
    db.exec("UPDATE src SET name = 'changed', updated_at = now() WHERE id IN (3, 500, 999)")
        .await;
    let out = cfg.run_once_ok(&state);
    assert_eq!(changed(&out, "copy"), 3);
    same_rows(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_first_run_goes_through_chunks_sqlite_state() {
    first_run_through_chunks(StateKind::Sqlite, CURSOR).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_diff_first_run_goes_through_chunks_postgres_state() {
    first_run_through_chunks(StateKind::Postgres, DIFF).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_first_run_goes_through_chunks_postgres_state() {
    first_run_through_chunks(StateKind::Postgres, CURSOR).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_diff_first_run_goes_through_chunks_sqlite_state() {
    first_run_through_chunks(StateKind::Sqlite, DIFF).await;
}

/// `n` source rows and a job of `chunk_rows` chunks, one at a time, whose
/// first run is held at fault `point` (short leases, for the run that
/// follows a kill).
async fn snapshot_held_at(
    n: i64,
    chunk_rows: u64,
    kind: StateKind,
    point: &str,
) -> (TestDb, ConfigDir, String, std::process::Child) {
    let db = TestDb::new().await;
    source_rows(&db, n).await;
    let cfg = ConfigDir::new();
    cfg.job("copy", &copy_job(&db, DIFF, chunk_rows, 1));
    let state = state_url(kind, &cfg, &db);
    let child = spawn_at_fault(
        &cfg,
        &state,
        "pause",
        point,
        &[("FERRY_JOB_LEASE", "1s"), ("FERRY_TASK_LEASE", "1s")],
    );
    (db, cfg, state, child)
}

/// Killed after its first chunk wrote, a first run's snapshot is finished
/// by the next run: the chunks left, the killed one again.
async fn a_killed_snapshot_resumes(kind: StateKind) {
    let (db, cfg, state, mut child) = snapshot_held_at(200, 50, kind, "chunk-part-settled").await;
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert_eq!(db.count("SELECT count(*) FROM dst").await, 50);

    let out = run_after_killed(&cfg, &state);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a snapshot is in progress: 4 chunk task(s) left"),
        "{}",
        stderr(&out)
    );
    let run = summary_run(&out, "copy");
    assert_eq!(
        run["synced"], 200,
        "the killed chunk again, then the rest: {run}"
    );
    same_rows(&db).await;
    let out = cfg.run_once_ok(&state);
    assert_eq!(changed(&out, "copy"), 0, "the ledger holds every key");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_snapshot_resumes_sqlite_state() {
    a_killed_snapshot_resumes(StateKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_snapshot_resumes_postgres_state() {
    a_killed_snapshot_resumes(StateKind::Postgres).await;
}

/// While one process runs a snapshot, `ferry status` in another shows how
/// far it has come, from the state store; after it, nothing is pending.
#[tokio::test(flavor = "multi_thread")]
async fn status_shows_a_snapshot_in_progress() {
    let (db, cfg, state, mut child) =
        snapshot_held_at(200, 50, StateKind::Postgres, "chunk-done").await;
    let status = cfg.ferry(Some(&state), &["--output", "json", "status", "copy"]);
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let pending = &doc["jobs"][0]["pending_resync"];
    assert_eq!(
        (&pending["chunks"], &pending["rows"]),
        (
            &serde_json::json!({"done": 1, "open": 3, "dead": 0, "total": 4}),
            &serde_json::json!({"written": 50, "planned": 200})
        ),
        "{doc}"
    );
    let text = cfg.ferry(Some(&state), &["status", "copy"]);
    assert!(
        String::from_utf8_lossy(&text.stdout)
            .contains("1 of 4 chunk(s) done, 50 of 200 row(s) written (25%)"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    child.kill().expect("kill");
    child.wait().expect("wait");

    let out = run_after_killed(&cfg, &state);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    same_rows(&db).await;
    let status = cfg.ferry(Some(&state), &["--output", "json", "status", "copy"]);
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert!(doc["jobs"][0]["pending_resync"].is_null(), "{doc}");
}

/// Text, composite and integer keys split by PostgreSQL, MariaDB and
/// SQLite into chunks that meet without a gap or an overlap.
#[tokio::test(flavor = "multi_thread")]
async fn every_key_kind_splits_without_gap_or_overlap() {
    let db = TestDb::new().await;
    let my = MysqlDb::new().await;
    let cfg = ConfigDir::new();
    let lite = cfg.path().join("src.db");
    let lite_url = format!("sqlite://{}?mode=rwc", lite.display());
    db.exec(
        "CREATE TABLE t_text (code text PRIMARY KEY, v int);
         INSERT INTO t_text SELECT 'k' || i, i FROM generate_series(1, 97) i;
         CREATE TABLE t_pair (a int, b text, v int, PRIMARY KEY (a, b));
         INSERT INTO t_pair SELECT i % 5, 'b' || i, i FROM generate_series(1, 97) i;",
    )
    .await;
    my.exec(
        "CREATE TABLE t_text (code VARCHAR(20) PRIMARY KEY, v INT);
         INSERT INTO t_text SELECT CONCAT('K', seq), seq FROM seq_1_to_97;",
    )
    .await;
    let sqlite = sqlx::SqlitePool::connect(&lite_url).await.expect("sqlite");
    sqlx::raw_sql(
        "CREATE TABLE t_pair (a INTEGER, b TEXT, v INTEGER, PRIMARY KEY (a, b));
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 97)
         INSERT INTO t_pair SELECT i % 5, 'b' || i, i FROM s;",
    )
    .execute(&sqlite)
    .await
    .expect("sqlite rows");
    sqlite.close().await;
    let sources = [
        (
            "pg_text",
            "postgres",
            db.url.clone(),
            "t_text",
            "[\"code\"]",
        ),
        (
            "pg_pair",
            "postgres",
            db.url.clone(),
            "t_pair",
            "[\"a\", \"b\"]",
        ),
        ("my_text", "mysql", my.url.clone(), "t_text", "[\"code\"]"),
        (
            "lite_pair",
            "sqlite",
            lite_url.clone(),
            "t_pair",
            "[\"a\", \"b\"]",
        ),
    ];
    for (name, kind, url, table, key) in &sources {
        cfg.job(
            name,
            &format!(
                "[source]\ntype = \"{kind}\"\nurl = \"{url}\"\ntable = \"{table}\"\nkey = {key}\n\n\
                 [detect]\nstrategy = \"diff\"\n\n[snapshot]\nchunk_rows = 7\n\n\
                 [target]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"{name}\"\nkey = {key}\ncreate = true\n\n\
                 [rules]\nowner = \"source\"\n",
                db.url
            ),
        );
    }
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    let out = cfg.run_once_ok(&state);
    for (name, ..) in &sources {
        let run = summary_run(&out, name);
        assert_eq!(run["synced"], 97, "{name}: {run}");
        assert_eq!(run["writes"], 14, "{name}: 14 chunks of 7 rows: {run}");
        assert_eq!(
            db.count(&format!("SELECT count(DISTINCT v) FROM {name}"))
                .await,
            97,
            "{name}"
        );
    }
    let out = cfg.run_once_ok(&state);
    for (name, ..) in &sources {
        assert_eq!(changed(&out, name), 0, "{name}");
    }
}

/// The same job through chunks and through the per-item queue
/// (`chunk_rows = 0`) leaves the same rows, under owner rules and soft
/// deletes, for a first run and a `--full` repair.
#[tokio::test(flavor = "multi_thread")]
async fn the_rules_give_the_same_rows_through_both_lanes() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (id bigint PRIMARY KEY, email text, phone text, notes text);
         INSERT INTO src SELECT i, 'e' || i, 'p' || i, 'n' || i FROM generate_series(1, 40) i;",
    )
    .await;
    let cfg = ConfigDir::new();
    for (lane, chunk_rows) in [("chunks", 6), ("items", 0)] {
        db.exec(&format!(
            "CREATE TABLE dst_{lane} (id bigint PRIMARY KEY, email text, phone text, notes text, deleted_at timestamptz);
             INSERT INTO dst_{lane} SELECT i, 'old' || i, 'mine' || i, CASE WHEN i % 2 = 0 THEN 'kept' || i END, NULL FROM generate_series(1, 20) i;"
        ))
        .await;
        cfg.job(
            &format!("to_{lane}"),
            &format!(
                "[source]\ntype = \"postgres\"\nurl = \"{url}\"\ntable = \"src\"\nkey = [\"id\"]\n\n\
                 [detect]\nstrategy = \"diff\"\nmax_delete_ratio = 1.0\n\n[snapshot]\nchunk_rows = {chunk_rows}\n\n\
                 [target]\ntype = \"postgres\"\nurl = \"{url}\"\ntable = \"dst_{lane}\"\nkey = [\"id\"]\n\n\
                 [fields]\nid = \"id\"\nemail = {{ from = \"email\", owner = \"source\" }}\n\
                 phone = {{ from = \"phone\", owner = \"target\" }}\nnotes = {{ from = \"notes\", owner = \"fill\" }}\n\n\
                 [rules]\nowner = \"source\"\ndeletes = \"soft\"\nsoft_delete = \"deleted_at\"\n",
                url = db.url
            ),
        );
    }
    let state = state_url(StateKind::Postgres, &cfg, &db);
    let rows = |lane: &str| {
        format!("SELECT id, email, phone, notes, deleted_at IS NOT NULL FROM dst_{lane}")
    };
    cfg.run_once_ok(&state);
    assert_eq!(db.difference(&rows("chunks"), &rows("items")).await, 0);
    assert_eq!(
        db.strings("SELECT phone || '/' || coalesce(notes, '-') FROM dst_chunks WHERE id IN (1, 2, 30) ORDER BY id")
            .await,
        ["mine1/n1", "mine2/kept2", "p30/n30"]
    );

    db.exec("DELETE FROM src WHERE id IN (4, 33); UPDATE src SET email = 'new', notes = 'new' WHERE id IN (2, 3)")
        .await;
    let out = cfg.ferry(
        Some(&state),
        &["--output", "json", "run", "--once", "--full"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for lane in ["chunks", "items"] {
        assert_eq!(summary_run(&out, &format!("to_{lane}"))["deletes"], 2);
    }
    assert_eq!(db.difference(&rows("chunks"), &rows("items")).await, 0);
    assert_eq!(
        db.count("SELECT count(*) FROM dst_chunks WHERE deleted_at IS NOT NULL")
            .await,
        2
    );
}

/// A repair asked for while a snapshot is in progress is refused, saying
/// why; once the snapshot is done, the same repair runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_repair_waits_for_the_snapshot_in_progress() {
    let (db, cfg, state, mut child) =
        snapshot_held_at(100, 30, StateKind::Sqlite, "chunk-part-settled").await;
    child.kill().expect("kill");
    child.wait().expect("wait");
    std::thread::sleep(std::time::Duration::from_millis(1500));

    let out = cfg.ferry(Some(&state), &["resync", "copy", "--keys", "1..10"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a snapshot of this job is in progress (4 chunk task(s) left)"),
        "{}",
        stderr(&out)
    );

    // The refused run's drain did the chunks beside it; this run closes
    // the snapshot.
    cfg.run_once_ok(&state);
    same_rows(&db).await;
    db.exec("UPDATE dst SET name = 'drift' WHERE id <= 20")
        .await;
    let out = cfg.ferry(
        Some(&state),
        &["--output", "json", "resync", "copy", "--keys", "1..10"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary_run(&out, "copy")["synced"], 10);
    assert_eq!(
        db.count("SELECT count(*) FROM dst WHERE name = 'drift'")
            .await,
        10
    );
}

/// Two processes running the same job share its chunk tasks: each chunk is
/// written by one of them, once, and together they write every row.
#[tokio::test(flavor = "multi_thread")]
async fn two_processes_share_a_snapshot() {
    let db = TestDb::new().await;
    source_rows(&db, 2000).await;
    slow_writes(&db, "INSERT", 0.1).await;
    let cfg = ConfigDir::new();
    cfg.job("copy", &copy_job(&db, DIFF, 100, 1));
    assert_eq!(code(&cfg.ferry(Some(&db.url), &["migrate"])), 0);
    let start = || {
        cfg.command(Some(&db.url), &["--output", "json", "run", "--once"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let first = start();
    assert!(
        eventually(10, || async {
            db.count("SELECT count(*) FROM ferry_tasks WHERE chunk IS NOT NULL AND state = 'done'")
                .await
                > 0
        })
        .await,
        "the first process never finished a chunk"
    );
    let second = start();
    let (first, second) = (
        first.wait_with_output().expect("first"),
        second.wait_with_output().expect("second"),
    );
    let (a, b) = (synced(&first, "copy"), synced(&second, "copy"));
    assert!(a > 0 && b > 0, "each process wrote chunks: {a} and {b}");
    assert_eq!(a + b, 2000, "each chunk was written once");
    assert_eq!(
        db.count("SELECT count(*) FROM ferry_tasks WHERE chunk IS NOT NULL AND state = 'done'")
            .await,
        20
    );
    same_rows(&db).await;
}

/// SIGKILL at ten moments of a first run's snapshot (between statements,
/// mid-write, mid-settle): the run after the last kill leaves the target
/// equal to the source and a ledger that knows every key once.
#[tokio::test(flavor = "multi_thread")]
async fn ten_kills_lose_nothing_and_duplicate_nothing() {
    let db = TestDb::new().await;
    source_rows(&db, 3000).await;
    slow_writes(&db, "INSERT OR UPDATE", 0.02).await;
    let cfg = ConfigDir::new();
    cfg.job("copy", &copy_job(&db, DIFF, 500, 2));
    let state = state_url(StateKind::Postgres, &cfg, &db);
    let leases = [("FERRY_JOB_LEASE", "1s"), ("FERRY_TASK_LEASE", "1s")];
    for kill in 0..10u64 {
        let mut child = cfg
            .command(Some(&state), &["run", "--once"])
            .envs(leases)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(std::time::Duration::from_millis(150 + 40 * kill));
        child.kill().expect("kill");
        child.wait().expect("wait");
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let out = cfg.run_once_ok(&state);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        db.difference(
            "SELECT id, name, updated_at FROM src",
            "SELECT id, name, updated_at FROM dst"
        )
        .await,
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM ferry_ledger WHERE job = 'copy' AND deleted = 0 AND synced_version = detected_version")
            .await,
        3000,
        "every key once in the ledger, synced"
    );
    assert_eq!(changed(&cfg.run_once_ok(&state), "copy"), 0);
}

/// A first run's COPY into an empty PostgreSQL table remembers, per key,
/// exactly what the per-item lane's statement remembers (the ledger's
/// `written` images), over many column types: read back by key range where
/// the keys are dense, by key where they are sparse. A later edit on both
/// sides is then one conflict in each lane.
#[tokio::test(flavor = "multi_thread")]
async fn a_copied_first_run_remembers_what_the_statement_would() {
    let db = TestDb::new().await;
    let columns =
        "id bigint PRIMARY KEY, name text, amount numeric(12,2), ratio float8, at timestamptz, \
                   day date, ok boolean, code varchar(12), n int4, u uuid";
    db.exec(&format!(
        "CREATE TABLE src ({columns});
         INSERT INTO src SELECT i, E'n\\t\"' || i || E'\\\\ é', i * 1.5, i / 7.0, '2026-01-01'::timestamptz + i * interval '1 minute',
                DATE '2026-01-01' + i, i % 2 = 0, 'c' || i, i, md5(i::text)::uuid
         FROM (SELECT g AS i FROM generate_series(1, 200) g UNION ALL SELECT 1000 + 10 * g FROM generate_series(1, 100) g) s;
         UPDATE src SET name = NULL, amount = NULL WHERE id % 17 = 0;
         CREATE TABLE dst_chunks ({columns}); CREATE TABLE dst_items ({columns});"
    ))
    .await;
    let cfg = ConfigDir::new();
    for (lane, chunk_rows) in [("chunks", 50), ("items", 0)] {
        cfg.job(
            &format!("to_{lane}"),
            &format!(
                "{}\n[snapshot]\nchunk_rows = {chunk_rows}\n",
                pg_job(
                    &db.url,
                    "src",
                    DIFF,
                    "size = 100",
                    &db.url,
                    &format!("dst_{lane}")
                )
            ),
        );
    }
    let state = state_url(StateKind::Postgres, &cfg, &db);
    cfg.run_once_ok(&state);
    let rows = |lane: &str| format!("SELECT * FROM dst_{lane}");
    assert_eq!(db.difference(&rows("chunks"), &rows("items")).await, 0);
    assert_eq!(db.count("SELECT count(*) FROM dst_chunks").await, 300);
    let written = |job: &str| {
        format!("SELECT key, written FROM ferry_ledger WHERE job = '{job}' AND written IS NOT NULL")
    };
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM ({}) w",
            written("to_chunks")
        ))
        .await,
        300
    );
    assert_eq!(
        db.difference(&written("to_chunks"), &written("to_items"))
            .await,
        0,
        "each key's images as the statement's"
    );

    db.exec(
        "UPDATE dst_chunks SET amount = 1 WHERE id IN (3, 1050); UPDATE dst_items SET amount = 1 WHERE id IN (3, 1050);
         UPDATE src SET amount = 2 WHERE id IN (3, 1050)",
    )
    .await;
    let out = cfg.ferry(Some(&state), &["--output", "json", "run", "--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for lane in ["chunks", "items"] {
        assert_eq!(
            summary_run(&out, &format!("to_{lane}"))["conflicts"],
            2,
            "{lane}"
        );
    }
}
