//! `ferry resync`: a part of the source (a key range, a predicate, or all of
//! it) is read again and every object in it resent, repairing a target that
//! drifted, and nothing outside it is touched — on PostgreSQL, MariaDB,
//! SQLite and file sources, with both state stores.
mod common;

use common::*;

/// The target rows as `id:name`, in key order.
async fn target_rows(db: &TestDb) -> Vec<String> {
    db.strings("SELECT id || ':' || name FROM dst ORDER BY id")
        .await
}

/// Rows 1..=n named `n<id>`, as the source holds them after the first run.
fn synced_rows(n: i64) -> Vec<String> {
    (1..=n).map(|i| format!("{i}:n{i}")).collect()
}

/// A target that drifted: every name changed by hand, and rows 5 and 15 gone.
async fn drift(db: &TestDb) {
    db.exec("UPDATE dst SET name = 'drift'; DELETE FROM dst WHERE id IN (5, 15)")
        .await;
}

/// A job from `source` (the `[source]` lines after `type`) into the
/// PostgreSQL table `into` of `target_url`, keyed by `key`, with `detect`
/// as the `[detect]` body; the source owns every field.
fn job_into_pg(source: &str, key: &str, detect: &str, target_url: &str, into: &str) -> String {
    format!(
        "[source]\n{source}\nkey = {key}\n\n[detect]\n{detect}\n\n\
         [target]\ntype = \"postgres\"\nurl = \"{target_url}\"\ntable = \"{into}\"\nkey = {key}\n\n\
         [rules]\nowner = \"source\"\n"
    )
}

/// A job from `src` into `dst` of `db` (SQLite state), synced once.
fn synced_src_to_dst(db: &TestDb, key: &str, detect: &str) -> (ConfigDir, String) {
    let cfg = ConfigDir::new();
    let source = format!("type = \"postgres\"\nurl = \"{}\"\ntable = \"src\"", db.url);
    cfg.job("copy", &job_into_pg(&source, key, detect, &db.url, "dst"));
    let state = state_url(StateKind::Sqlite, &cfg, db);
    cfg.run_once_ok(&state);
    (cfg, state)
}

fn resync(cfg: &ConfigDir, state: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--output", "json", "resync", "copy"];
    all.extend_from_slice(args);
    cfg.ferry(Some(state), &all)
}

/// A PostgreSQL source of 20 rows into a PostgreSQL target, synced once.
async fn synced_pg_job(kind: StateKind, strategy: &str) -> (TestDb, ConfigDir, String) {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (id bigint PRIMARY KEY, name text, region text, updated_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO src (id, name, region) SELECT i, 'n' || i, CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END FROM generate_series(1, 20) i;
         CREATE TABLE dst (id bigint PRIMARY KEY, name text, region text, updated_at timestamptz);",
    )
    .await;
    let cfg = ConfigDir::new();
    cfg.job(
        "copy",
        &pg_job(&db.url, "src", strategy, "size = 7", &db.url, "dst"),
    );
    let state = state_url(kind, &cfg, &db);
    cfg.run_once_ok(&state);
    assert_eq!(target_rows(&db).await, synced_rows(20));
    (db, cfg, state)
}

async fn keys_rewrite_only_their_range(kind: StateKind, strategy: &str) {
    let (db, cfg, state) = synced_pg_job(kind, strategy).await;
    drift(&db).await;
    let out = resync(&cfg, &state, &["--keys", "4..12"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let run = summary_run(&out, "copy");
    assert_eq!(run["scanned"], 9, "only the range is read: {run}");
    assert_eq!(run["synced"], 9, "{run}");
    let expected: Vec<String> = (1..=20)
        .filter(|i| *i != 15)
        .map(|i| match i {
            4..=12 => format!("{i}:n{i}"),
            _ => format!("{i}:drift"),
        })
        .collect();
    assert_eq!(target_rows(&db).await, expected);

    // The watermark and the ledger still say the source is synced: the
    // next run finds nothing to send.
    let next = cfg.run_once_ok(&state);
    assert_eq!(changed(&next, "copy"), 0);
    assert_eq!(target_rows(&db).await, expected);

    // A new row after the resync is still caught by the next run.
    db.exec("INSERT INTO src (id, name, region) VALUES (21, 'n21', 'eu')")
        .await;
    let next = cfg.run_once_ok(&state);
    assert_eq!(synced(&next, "copy"), 1);
}

#[tokio::test]
async fn keys_rewrite_only_their_range_cursor_sqlite_state() {
    keys_rewrite_only_their_range(StateKind::Sqlite, CURSOR).await;
}

#[tokio::test]
async fn keys_rewrite_only_their_range_diff_postgres_state() {
    keys_rewrite_only_their_range(StateKind::Postgres, "strategy = \"diff\"").await;
}

#[tokio::test]
async fn where_rewrites_only_matching_rows_and_open_ranges_reach_the_end() {
    let (db, cfg, state) = synced_pg_job(StateKind::Sqlite, CURSOR).await;
    drift(&db).await;
    let out = resync(
        &cfg,
        &state,
        &["--where", "region = 'eu'", "--keys", "11.."],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary_run(&out, "copy")["scanned"], 5);
    let eu_from_11: Vec<String> = db
        .strings("SELECT id::text FROM dst WHERE name <> 'drift' ORDER BY id")
        .await;
    assert_eq!(eu_from_11, ["12", "14", "16", "18", "20"]);

    let out = resync(&cfg, &state, &["--where", "region = 'us'"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary_run(&out, "copy")["scanned"], 10);
    // Row 5 (us) is back; 15 (us) too; the eu rows below 11 still drifted.
    let drifted = db
        .strings("SELECT id::text FROM dst WHERE name = 'drift' ORDER BY id::int")
        .await;
    assert_eq!(drifted, ["2", "4", "6", "8", "10"]);
    assert_eq!(db.count("SELECT count(*) FROM dst").await, 20);
}

#[tokio::test]
async fn a_whole_resync_repairs_everything_and_a_dry_run_writes_nothing() {
    let (db, cfg, state) = synced_pg_job(StateKind::Postgres, CURSOR).await;
    drift(&db).await;
    let out = resync(&cfg, &state, &["--dry-run", "--keys", "..3"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let plan = summary_run(&out, "copy");
    assert_eq!(plan["scanned"], 3, "{plan}");
    assert_eq!(plan["updates"], 3, "{plan}");
    assert_eq!(
        plan["keys"]["updates"],
        serde_json::json!(["[1]", "[2]", "[3]"])
    );
    assert_eq!(
        db.count("SELECT count(*) FROM dst WHERE name = 'drift'")
            .await,
        18
    );

    let out = resync(&cfg, &state, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary_run(&out, "copy")["synced"], 20);
    assert_eq!(target_rows(&db).await, synced_rows(20));
    let runs = cfg.ferry(Some(&state), &["--output", "json", "status", "copy"]);
    assert!(
        String::from_utf8_lossy(&runs.stdout).contains("resync"),
        "the run is recorded as a resync: {}",
        String::from_utf8_lossy(&runs.stdout)
    );
}

#[tokio::test]
async fn text_and_composite_keys_compare_as_the_database_orders_them() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (tenant int, code text, name text, PRIMARY KEY (tenant, code));
         INSERT INTO src SELECT t, c, t || c FROM generate_series(1, 3) t, unnest(ARRAY['a','b','c']) c;
         CREATE TABLE dst (tenant int, code text, name text, PRIMARY KEY (tenant, code));",
    )
    .await;
    let (cfg, state) = synced_src_to_dst(&db, "[\"tenant\", \"code\"]", "strategy = \"diff\"");
    db.exec("UPDATE dst SET name = 'drift'").await;
    let out = resync(&cfg, &state, &["--keys", "[1,\"c\"]..[2,\"b\"]"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let repaired = db
        .strings("SELECT tenant || code FROM dst WHERE name <> 'drift' ORDER BY 1")
        .await;
    assert_eq!(repaired, ["1c", "2a", "2b"]);

    let out = resync(&cfg, &state, &["--keys", "1..2"]);
    assert_eq!(code(&out), 2, "a composite key needs array bounds");
    assert!(stderr(&out).contains("2 column(s)"), "{}", stderr(&out));
}

#[tokio::test]
async fn mariadb_and_sqlite_sources_push_the_range_down() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE dst (id bigint PRIMARY KEY, name text);
         CREATE TABLE codes (id text PRIMARY KEY, name text);",
    )
    .await;
    let my = MysqlDb::new().await;
    my.exec(
        "CREATE TABLE src (id bigint PRIMARY KEY, name varchar(20));
         INSERT INTO src VALUES (1,'n1'),(2,'n2'),(9007199254740993,'big'),(9007199254740994,'big2');
         CREATE TABLE codes (id varchar(10) PRIMARY KEY, name varchar(20));
         INSERT INTO codes VALUES ('10','ten'),('100','hundred'),('9','nine');",
    )
    .await;
    let cfg = ConfigDir::new();
    let sqlite_path = cfg.path().join("src.db");
    let sqlite_url = format!("sqlite://{}?mode=rwc", sqlite_path.display());
    let pool = sqlx::SqlitePool::connect(&sqlite_url)
        .await
        .expect("sqlite");
    sqlx::raw_sql(
        "CREATE TABLE src (id INTEGER PRIMARY KEY, name TEXT);
         INSERT INTO src VALUES (101,'n101'),(102,'n102'),(110,'n110');",
    )
    .execute(&pool)
    .await
    .expect("sqlite source");
    pool.close().await;
    let lite = format!("sqlite://{}", sqlite_path.display());
    for (name, kind, url, table, into) in [
        ("my", "mysql", &my.url, "src", "dst"),
        ("mytext", "mysql", &my.url, "codes", "codes"),
        ("lite", "sqlite", &lite, "src", "dst"),
    ] {
        cfg.job(
            name,
            &job_into_pg(
                &format!("type = \"{kind}\"\nurl = \"{url}\"\ntable = \"{table}\""),
                "[\"id\"]",
                "strategy = \"diff\"",
                &db.url,
                into,
            ),
        );
    }
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    cfg.run_once_ok(&state);
    db.exec("UPDATE dst SET name = 'drift'; UPDATE codes SET name = 'drift'")
        .await;
    for (job, keys, scanned) in [
        ("my", "9007199254740993..9007199254740993", 1),
        // A text key compares as text: '10' and '100' lie between '1' and '2'.
        ("mytext", "1..2", 2),
        ("lite", "102..200", 2),
    ] {
        let out = cfg.ferry(
            Some(&state),
            &["--output", "json", "resync", job, "--keys", keys],
        );
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let run = summary_run(&out, job);
        assert_eq!(run["scanned"], scanned, "{job}");
        // Every key is known to the ledger: each is an update, whatever
        // part of the ledger the range read.
        assert_eq!(
            (run["updates"].as_u64(), run["inserts"].as_u64()),
            (Some(scanned), Some(0)),
            "{job}: {run}"
        );
    }
    let repaired = db
        .strings("SELECT id::text FROM dst WHERE name <> 'drift' ORDER BY id")
        .await;
    assert_eq!(repaired, ["102", "110", "9007199254740993"]);
    let codes = db
        .strings("SELECT id FROM codes WHERE name <> 'drift' ORDER BY id")
        .await;
    assert_eq!(codes, ["10", "100"]);
}

#[tokio::test]
async fn a_file_source_filters_keys_and_refuses_sql() {
    let db = TestDb::new().await;
    db.exec("CREATE TABLE dst (id bigint PRIMARY KEY, name text)")
        .await;
    let cfg = ConfigDir::new();
    let csv = cfg.file("people.csv", "id,name\n1,a\n2,b\n3,c\n10,j\n");
    cfg.job(
        "copy",
        &job_into_pg(
            &format!(
                "type = \"file\"\npath = \"{}\"\ntypes = {{ id = \"bigint\" }}",
                csv.display()
            ),
            "[\"id\"]",
            "strategy = \"diff\"",
            &db.url,
            "dst",
        ),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    cfg.run_once_ok(&state);
    db.exec("UPDATE dst SET name = 'drift'").await;
    let out = resync(&cfg, &state, &["--keys", "2..9"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary_run(&out, "copy")["scanned"], 2);
    let repaired = db
        .strings("SELECT id::text FROM dst WHERE name <> 'drift' ORDER BY id")
        .await;
    assert_eq!(repaired, ["2", "3"], "10 > 9 as numbers, not as text");

    let out = resync(&cfg, &state, &["--where", "id > 1"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--where is SQL"), "{}", stderr(&out));
}

#[tokio::test]
async fn what_cannot_be_resynced_is_refused_with_why() {
    let db = TestDb::new().await;
    let cfg = ConfigDir::new();
    cfg.job(
        "copy",
        &pg_job(&db.url, "src", CURSOR, "size = 7", &db.url, "dst"),
    );
    cfg.job(
        "changes",
        &job_into_pg(
            &format!(
                "type = \"postgres\"\nurl = \"{}\"\ntable = \"outbox\"",
                db.url
            ),
            "[\"id\"]",
            "strategy = \"outbox\"",
            &db.url,
            "dst",
        ),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    for (args, says) in [
        (vec!["resync", "nope"], "unknown job"),
        (
            vec!["resync", "copy", "--keys", "9..1"],
            "above the high bound",
        ),
        (vec!["resync", "copy", "--keys", "5"], "not a key range"),
        (vec!["resync", "changes"], "nothing to re-read"),
    ] {
        let out = cfg.ferry(Some(&state), &args);
        assert_eq!(code(&out), 2, "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

#[tokio::test]
async fn deletes_are_found_inside_a_key_range_or_the_whole_source_never_by_where() {
    let (db, cfg, state) = synced_pg_job(StateKind::Sqlite, CURSOR).await;
    // A cursor job cannot see deletes; a resync can.
    db.exec("DELETE FROM src WHERE id IN (6, 18)").await;
    let out = resync(&cfg, &state, &["--where", "id < 10"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        summary_run(&out, "copy")["deletes"],
        0,
        "no deletes by --where"
    );
    assert_eq!(db.count("SELECT count(*) FROM dst").await, 20);

    let out = resync(&cfg, &state, &["--keys", "4..12"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let run = summary_run(&out, "copy");
    assert_eq!(run["deletes"], 1, "{run}");
    let left: Vec<String> = db
        .strings("SELECT id::text FROM dst WHERE id IN (6, 18) ORDER BY id")
        .await;
    assert_eq!(left, ["18"], "18 lies outside the range");

    // An open range: the ledger is read for its part, not key by key.
    db.exec("DELETE FROM src WHERE id = 3").await;
    let out = resync(&cfg, &state, &["--keys", "15.."]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary_run(&out, "copy")["deletes"], 1);
    assert_eq!(
        db.count("SELECT count(*) FROM dst WHERE id IN (3, 18)")
            .await,
        1
    );

    let out = resync(&cfg, &state, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary_run(&out, "copy")["deletes"], 1, "3, outside 15..");
    assert_eq!(db.count("SELECT count(*) FROM dst").await, 17);
    let out = resync(&cfg, &state, &[]);
    assert_eq!(summary_run(&out, "copy")["deletes"], 0);
    let next = cfg.run_once_ok(&state);
    assert_eq!(changed(&next, "copy"), 0);
}

#[tokio::test]
async fn a_text_key_is_deleted_only_when_the_source_has_it_under_no_order() {
    let db = TestDb::new().await;
    db.exec(
        r#"CREATE TABLE src (code text COLLATE "en-x-icu" PRIMARY KEY, name text);
         INSERT INTO src VALUES ('a', 'a'), ('B', 'B'), ('b', 'b'), ('c', 'c');
         CREATE TABLE dst (code text PRIMARY KEY, name text);"#,
    )
    .await;
    let (cfg, state) = synced_src_to_dst(
        &db,
        "[\"code\"]",
        "strategy = \"diff\"\nmax_delete_ratio = 1.0",
    );
    db.exec("DELETE FROM src WHERE code = 'b'").await;
    // In bytes 'B' < 'a' < 'b' < 'c'; in the source's collation
    // 'a' < 'b' < 'B' < 'c'. The range a..b holds 'B' for the database only,
    // and 'b' for both: only 'b' is gone.
    let out = resync(&cfg, &state, &["--keys", "a..b"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary_run(&out, "copy")["deletes"], 1);
    let left = db
        .strings("SELECT code FROM dst ORDER BY code COLLATE \"C\"")
        .await;
    assert_eq!(left, ["B", "a", "c"]);
    // B..a is empty to the database, and holds 'B' and 'a' in bytes: both
    // are still at the source, so neither is deleted.
    let out = resync(&cfg, &state, &["--keys", "B..a"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary_run(&out, "copy")["deletes"], 0);
    assert_eq!(db.count("SELECT count(*) FROM dst").await, 3);
}

#[tokio::test]
async fn emptying_a_range_is_refused_unless_allowed() {
    let (db, cfg, state) = synced_pg_job(StateKind::Postgres, "strategy = \"diff\"").await;
    db.exec("DELETE FROM src WHERE id BETWEEN 1 AND 4").await;
    let out = resync(&cfg, &state, &["--keys", "1..4"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        summary_run(&out, "copy")["message"]
            .as_str()
            .unwrap_or_default()
            .contains("--allow-mass-delete"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(db.count("SELECT count(*) FROM dst").await, 20);
    let status = cfg.ferry(Some(&state), &["--output", "json", "status", "copy"]);
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert!(
        doc["jobs"][0]["pending_resync"].is_null(),
        "a refused resync is not run again by itself: {doc}"
    );
    let out = resync(&cfg, &state, &["--keys", "1..4", "--allow-mass-delete"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(db.count("SELECT count(*) FROM dst").await, 16);
}

#[tokio::test]
async fn run_full_repairs_as_a_whole_resync_and_plan_full_previews_it() {
    let (db, cfg, state) = synced_pg_job(StateKind::Sqlite, CURSOR).await;
    drift(&db).await;
    db.exec("DELETE FROM src WHERE id = 7").await;
    let plan = cfg.ferry(Some(&state), &["--output", "json", "plan", "--full"]);
    assert_eq!(code(&plan), 0, "{}", stderr(&plan));
    let planned = summary_run(&plan, "copy");
    assert_eq!(planned["scanned"], 19, "{planned}");
    assert_eq!(planned["deletes"], 1, "{planned}");
    assert_eq!(planned["keys"]["deletes"], serde_json::json!(["[7]"]));
    assert_eq!(
        db.count("SELECT count(*) FROM dst WHERE name = 'drift'")
            .await,
        18
    );

    let out = cfg.ferry(Some(&state), &["run", "--once", "--full"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let run = summary_run(&out, "copy");
    assert_eq!(
        (run["synced"].as_u64(), run["deletes"].as_u64()),
        (Some(20), Some(1)),
        "{run}"
    );
    let expected: Vec<String> = synced_rows(20)
        .into_iter()
        .filter(|r| r != "7:n7")
        .collect();
    assert_eq!(target_rows(&db).await, expected);
    assert_eq!(changed(&cfg.run_once_ok(&state), "copy"), 0);
}

/// Gives the job `copy` chunk tasks of `rows` rows, one at a time.
fn chunk_rows(cfg: &ConfigDir, rows: u64) {
    let path = cfg.path().join("jobs").join("copy.toml");
    let job = std::fs::read_to_string(&path).expect("job file");
    cfg.job(
        "copy",
        &format!("{job}\n[snapshot]\nchunk_rows = {rows}\nparallelism = 1\n"),
    );
}

/// A resync is recorded with its chunk tasks before it reads: killed after
/// its first chunk wrote, the next run does the chunks left (the killed one
/// again, idempotently), and `ferry status` says so meanwhile.
#[tokio::test]
async fn a_killed_resync_is_finished_by_the_next_run() {
    let (db, cfg, state) = synced_pg_job(StateKind::Postgres, CURSOR).await;
    chunk_rows(&cfg, 3);
    drift(&db).await;
    let mut child = spawn_command_at_fault(
        &cfg,
        &state,
        &["resync", "copy", "--keys", "4..12"],
        "pause",
        "chunk-part-settled",
        &[("FERRY_JOB_LEASE", "1s"), ("FERRY_TASK_LEASE", "1s")],
    );
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert_eq!(
        db.count("SELECT count(*) FROM dst WHERE name = 'drift'")
            .await,
        16,
        "the first chunk (4, 6; 5 was gone) was written before the kill"
    );

    let status = cfg.ferry(Some(&state), &["--output", "json", "status", "copy"]);
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(
        doc["jobs"][0]["pending_resync"]["part"], "--keys 4..12",
        "{doc}"
    );

    // Once the killed run's leases have expired, the next run does the rest.
    let out = run_after_killed(&cfg, &state);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a snapshot is in progress: 3 chunk task(s) left"),
        "{}",
        stderr(&out)
    );
    assert_eq!(summary_run(&out, "copy")["scanned"], 9);
    let repaired = db
        .strings("SELECT id::text FROM dst WHERE name <> 'drift' ORDER BY id")
        .await;
    assert_eq!(repaired, ["10", "11", "12", "4", "5", "6", "7", "8", "9"]);

    let status = cfg.ferry(Some(&state), &["--output", "json", "status", "copy"]);
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert!(doc["jobs"][0]["pending_resync"].is_null(), "{doc}");
    let next = cfg.run_once_ok(&state);
    assert_eq!(changed(&next, "copy"), 0, "a run as usual");
}
