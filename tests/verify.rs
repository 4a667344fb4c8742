//! `ferry verify`: after ferry synced a table, the two databases compare
//! equal on every type, across database kinds (PostgreSQL into PostgreSQL,
//! MariaDB and SQLite); drift made by hand in the target is found key by
//! key and field by field; the job's rules decide what counts; exit codes.
mod common;

use common::*;
use serde_json::Value;

/// A source of many types: 200 rows, some values NULL.
const TYPED_SOURCE: &str = "CREATE TABLE src (
    id bigint PRIMARY KEY, name text, code char(4), flag boolean, qty integer,
    price numeric(12,2), ratio double precision, born date, at timestamp(6),
    seen timestamptz, uid uuid, doc jsonb, raw bytea);
  INSERT INTO src SELECT i, 'name ' || i, 'c' || (i % 10), i % 3 = 0, i * 7,
    (i * 1.25)::numeric(12,2), i / 8.0, date '2024-01-01' + i,
    timestamp '2024-01-01 10:00:00.123456' + i * interval '1 hour',
    timestamptz '2024-03-01 00:00:00+02' + i * interval '1 minute',
    md5(i::text)::uuid, jsonb_build_object('n', i, 'tags', jsonb_build_array('a', i)),
    decode(lpad(to_hex(i), 4, '0'), 'hex')
  FROM generate_series(1, 200) i;
  UPDATE src SET name = NULL, ratio = NULL, seen = NULL, doc = NULL WHERE id % 17 = 0;";

fn job(source_url: &str, target_kind: &str, target_url: &str, extra: &str) -> String {
    format!(
        "[source]\ntype = \"postgres\"\nurl = \"{source_url}\"\ntable = \"src\"\nkey = [\"id\"]\n\n\
         [detect]\nstrategy = \"diff\"\n\n\
         [target]\ntype = \"{target_kind}\"\nurl = \"{target_url}\"\ntable = \"dst\"\nkey = [\"id\"]\ncreate = true\n\n\
         [rules]\nowner = \"source\"\n{extra}"
    )
}

/// Synced once into `target_kind`; verify says equal, in the servers
/// where both are PostgreSQL.
async fn synced(target_kind: &str, target_url: &str, db: &TestDb) -> (ConfigDir, String) {
    let cfg = ConfigDir::new();
    cfg.job("copy", &job(&db.url, target_kind, target_url, ""));
    let state = state_url(StateKind::Sqlite, &cfg, db);
    cfg.run_once_ok(&state);
    let (code, json) = verify(&cfg, &state, &[]);
    let r = result(&json);
    assert_eq!(code, 0, "{target_kind}: a synced target is equal: {json:#}");
    assert_eq!(r["source_rows"], 200);
    assert_eq!(r["target_rows"], 200);
    assert_eq!(r["equal"], 200);
    assert_eq!(r["compared_fields"].as_array().map(Vec::len), Some(12));
    (cfg, state)
}

#[tokio::test]
async fn postgres_target_equal_then_drift_found_key_by_key() {
    let db = TestDb::new().await;
    db.exec(TYPED_SOURCE).await;
    let (cfg, state) = synced("postgres", &db.url, &db).await;
    let (_, json) = verify(&cfg, &state, &[]);
    assert_eq!(result(&json)["source_pushdown"], true);
    assert_eq!(result(&json)["target_pushdown"], true);
    db.exec(
        "UPDATE dst SET price = price + 0.01 WHERE id = 10;
         UPDATE dst SET doc = '{\"n\": 0}', flag = NOT flag WHERE id = 20;
         UPDATE dst SET seen = seen + interval '1 microsecond' WHERE id = 30;
         DELETE FROM dst WHERE id IN (40, 150);
         INSERT INTO dst (id, name) VALUES (1000, 'stray'), (1001, NULL);",
    )
    .await;
    let (code, json) = verify(&cfg, &state, &[]);
    let r = result(&json);
    assert_eq!(code, 1, "{json:#}");
    assert_eq!(r["different"], 3);
    assert_eq!(r["missing"], 2);
    assert_eq!(r["extra"], 2);
    assert_eq!(r["equal"], 195);
    assert_eq!(keys(&json, "missing"), ["150", "40"]);
    assert_eq!(keys(&json, "extra"), ["1000", "1001"]);
    assert_eq!(keys(&json, "different"), ["10", "20", "30"]);
    let fields: Vec<&Value> = r["first"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "different")
        .map(|d| &d["fields"])
        .collect();
    assert_eq!(fields[0], &serde_json::json!(["price"]));
    assert_eq!(fields[1], &serde_json::json!(["flag", "doc"]));
    assert_eq!(fields[2], &serde_json::json!(["seen"]));
    // A range of keys compares only its rows.
    let (code, json) = verify(&cfg, &state, &["--keys", "100..200"]);
    assert_eq!(code, 1);
    assert_eq!(result(&json)["source_rows"], 101);
    assert_eq!(keys(&json, "missing"), ["150"]);
    assert_eq!(result(&json)["different"], 0);
    let (code, _) = verify(&cfg, &state, &["--keys", "41..140"]);
    assert_eq!(code, 0);
    // A predicate, evaluated in both tables.
    let (code, json) = verify(&cfg, &state, &["--where", "id % 2 = 0"]);
    assert_eq!(code, 1);
    assert_eq!(result(&json)["source_rows"], 100);
    assert_eq!(keys(&json, "extra"), ["1000"]);
    assert_eq!(result(&json)["different"], 3);
}

/// Drift of every kind, repaired: the differing keys are resent or
/// deleted through the normal lane, and a second verify is equal.
async fn repair_with(kind: StateKind) {
    let db = TestDb::new().await;
    db.exec(TYPED_SOURCE).await;
    let cfg = ConfigDir::new();
    cfg.job("copy", &job(&db.url, "postgres", &db.url, ""));
    let state = state_url(kind, &cfg, &db);
    cfg.run_once_ok(&state);
    db.exec(
        "UPDATE dst SET name = 'hand' WHERE id IN (3, 4);
         DELETE FROM dst WHERE id = 5;
         INSERT INTO dst (id, name) VALUES (900, 'stray');",
    )
    .await;
    let (code, json) = verify(&cfg, &state, &["--repair"]);
    assert_eq!(code, 0, "{json:#}");
    let report = &json["jobs"][0];
    assert_eq!(report["result"]["different"], 2);
    assert_eq!(report["repair"]["outcome"], "success", "{report:#}");
    assert_eq!(
        report["repair"]["synced"], 4,
        "2 rewritten, 1 re-inserted, 1 deleted: {report:#}"
    );
    assert_eq!(report["after"]["equal"], 200);
    assert_eq!(report["after"]["extra"], 0);
    assert_eq!(
        db.difference("SELECT * FROM src", "SELECT * FROM dst")
            .await,
        0
    );
    // The ledger knows the repaired rows: the next run has nothing to do.
    let out = cfg.run_once_ok(&state);
    assert_eq!(changed(&out, "copy"), 0);
}

#[tokio::test]
async fn repair_makes_the_target_equal_sqlite_state() {
    repair_with(StateKind::Sqlite).await;
}

#[tokio::test]
async fn repair_makes_the_target_equal_postgres_state() {
    repair_with(StateKind::Postgres).await;
}

#[tokio::test]
async fn mariadb_target_compares_equal_across_kinds() {
    let db = TestDb::new().await;
    db.exec(TYPED_SOURCE).await;
    let maria = MysqlDb::new().await;
    let (cfg, state) = synced("mysql", &maria.url, &db).await;
    maria
        .exec("UPDATE dst SET name = 'hand' WHERE id = 7; DELETE FROM dst WHERE id = 8")
        .await;
    let (code, json) = verify(&cfg, &state, &[]);
    assert_eq!(code, 1, "{json:#}");
    assert_eq!(keys(&json, "different"), ["7"]);
    assert_eq!(keys(&json, "missing"), ["8"]);
    assert_eq!(result(&json)["fields"], serde_json::json!({"name": 1}));
}

/// Columns MariaDB renders itself: it hashes its rows in the server, its
/// buckets ranges of an integer key wider than one.
#[tokio::test]
async fn mariadb_target_hashes_in_its_server() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (id bigint PRIMARY KEY, name text, price numeric(12,2), seen timestamptz);
         INSERT INTO src SELECT i, 'Zákazník ' || i || ' ✓', i * 1.25, timestamptz '2024-03-01 00:00:00+02' + i * interval '1 second'
         FROM generate_series(1, 10000) i;",
    )
    .await;
    let maria = MysqlDb::new().await;
    let cfg = ConfigDir::new();
    cfg.job("copy", &job(&db.url, "mysql", &maria.url, ""));
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    cfg.run_once_ok(&state);
    let (code, json) = verify(&cfg, &state, &[]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(result(&json)["target_pushdown"], true, "{json:#}");
    assert_eq!(result(&json)["equal"], 10000);
    maria
        .exec("UPDATE dst SET name = 'hand' WHERE id = 4321; DELETE FROM dst WHERE id = 9999")
        .await;
    let (code, json) = verify(&cfg, &state, &[]);
    assert_eq!(code, 1, "{json:#}");
    assert_eq!(keys(&json, "different"), ["4321"]);
    assert_eq!(keys(&json, "missing"), ["9999"]);
}

#[tokio::test]
async fn sqlite_target_compares_equal_across_kinds() {
    let db = TestDb::new().await;
    db.exec(TYPED_SOURCE).await;
    let cfg_dir = ConfigDir::new();
    let path = cfg_dir.path().join("dst.db");
    std::fs::File::create(&path).expect("sqlite file");
    let url = format!("sqlite://{}", path.display());
    let (cfg, state) = synced("sqlite", &url, &db).await;
    let pool = sqlx::SqlitePool::connect(&url).await.expect("sqlite");
    sqlx::query("UPDATE dst SET qty = qty + 1 WHERE id = 3")
        .execute(&pool)
        .await
        .expect("drift");
    let (code, json) = verify(&cfg, &state, &[]);
    assert_eq!(code, 1, "{json:#}");
    assert_eq!(keys(&json, "different"), ["3"]);
    assert_eq!(result(&json)["target_pushdown"], false);
}

#[tokio::test]
async fn the_rules_decide_what_counts() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (id bigint PRIMARY KEY, name text, note text, phone text);
         INSERT INTO src SELECT i, 'n' || i, 'x', CASE WHEN i % 2 = 0 THEN 'p' || i END FROM generate_series(1, 50) i;
         CREATE TABLE dst (id bigint PRIMARY KEY, name text, note text, phone text, deleted_at timestamptz);",
    )
    .await;
    let cfg = ConfigDir::new();
    let rules = "deletes = \"soft\"\nsoft_delete = \"deleted_at\"\n\n\
                 [fields]\nid = \"id\"\nname = \"name\"\nnote = { from = \"note\", owner = \"target\" }\n\
                 phone = { from = \"phone\", owner = \"fill\" }\n";
    cfg.job("copy", &job(&db.url, "postgres", &db.url, rules));
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    cfg.run_once_ok(&state);
    // A target-owned field edited in the target is not drift; nor is a
    // fill field's own value in the target, where the source has one or not.
    db.exec(
        "UPDATE dst SET note = 'kept by the target' WHERE id < 10;
         UPDATE dst SET phone = 'own' WHERE id IN (3, 4)",
    )
    .await;
    let (code, json) = verify(&cfg, &state, &[]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(
        result(&json)["compared_fields"],
        serde_json::json!(["name", "phone"])
    );
    assert_eq!(result(&json)["equal"], 50);
    // A fill field left empty where the source has a value is drift.
    db.exec("UPDATE dst SET phone = NULL WHERE id IN (6, 7)")
        .await;
    let (code, json) = verify(&cfg, &state, &[]);
    assert_eq!(code, 1, "{json:#}");
    assert_eq!(keys(&json, "different"), ["6"]);
    assert_eq!(result(&json)["fields"], serde_json::json!({"phone": 1}));
    db.exec("UPDATE dst SET phone = 'p6' WHERE id = 6").await;
    // A soft-deleted row counts as deleted: present in the source, missing.
    db.exec("UPDATE dst SET deleted_at = now() WHERE id = 5")
        .await;
    let (code, json) = verify(&cfg, &state, &[]);
    assert_eq!(code, 1);
    assert_eq!(keys(&json, "missing"), ["5"]);
}

/// `src` of `rows` rows `(id, 'n' || id)` synced once into `dst` of the
/// same database, under the `[rules]` lines `rules`.
async fn small_synced(db: &TestDb, rows: u32, rules: &str) -> (ConfigDir, String) {
    db.exec(&format!(
        "CREATE TABLE src (id bigint PRIMARY KEY, name text);
         INSERT INTO src SELECT i, 'n' || i FROM generate_series(1, {rows}) i;"
    ))
    .await;
    let cfg = ConfigDir::new();
    cfg.job("copy", &job(&db.url, "postgres", &db.url, rules));
    let state = state_url(StateKind::Sqlite, &cfg, db);
    cfg.run_once_ok(&state);
    (cfg, state)
}

#[tokio::test]
async fn extra_rows_are_allowed_when_deletes_are_ignored() {
    let db = TestDb::new().await;
    let (cfg, state) = small_synced(&db, 30, "deletes = \"ignore\"\n").await;
    db.exec("DELETE FROM src WHERE id = 3").await;
    let (code, json) = verify(&cfg, &state, &[]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(result(&json)["extra"], 1);
    assert_eq!(result(&json)["extra_allowed"], true);
}

#[tokio::test]
async fn exit_codes_name_what_cannot_be_verified() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (id bigint PRIMARY KEY, name text); INSERT INTO src VALUES (1, 'a'); CREATE TABLE dst (LIKE src);",
    )
    .await;
    let cfg = ConfigDir::new();
    let out_dir = cfg.path().join("out");
    cfg.job(
        "to_file",
        &format!(
            "[source]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"src\"\nkey = [\"id\"]\n\n\
             [detect]\nstrategy = \"diff\"\n\n[target]\ntype = \"file\"\npath = \"{}\"\nformat = \"jsonl\"\n\n[rules]\nowner = \"source\"\n",
            db.url,
            out_dir.display()
        ),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    let out = cfg.ferry(Some(&state), &["verify", "to_file"]);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(stderr(&out).contains("is not a table"), "{}", stderr(&out));
    let cfg = ConfigDir::new();
    let port = free_port();
    let down = format!("postgres://postgres@127.0.0.1:{port}/nothing");
    cfg.job("down", &job(&down, "postgres", &db.url, ""));
    let out = cfg.ferry(Some(&state), &["verify", "down"]);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
}

/// `verify = "<cron>"`: the daemon verifies the job on its schedule and
/// exports what it found.
#[tokio::test]
async fn the_daemon_verifies_on_schedule_and_exports_drift() {
    let db = TestDb::new().await;
    let (cfg, state) = small_synced(&db, 40, "").await;
    db.exec("UPDATE dst SET name = 'hand' WHERE id IN (1, 2); DELETE FROM dst WHERE id = 3")
        .await;
    let daemon = cfg
        .daemon(
            &state,
            "copy = { cron = \"0 0 1 1 *\", verify = \"*/2 * * * * *\" }",
            &[],
        )
        .await;
    let series = |text: &str, result: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("ferry_verify_rows{")
                    && l.contains("sync_job=\"copy\"")
                    && l.contains(&format!("result=\"{result}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let found = eventually(20, || async {
        let text = daemon.get("/metrics").await.unwrap_or_default();
        series(&text, "different") == Some(2.0) && series(&text, "missing") == Some(1.0)
    })
    .await;
    let text = daemon.get("/metrics").await.unwrap_or_default();
    assert!(found, "no verify exported:\n{text}\n{}", daemon.log_text());
    assert_eq!(series(&text, "equal"), Some(37.0));
    assert!(text.contains("ferry_verify_last_run_timestamp_seconds{sync_job=\"copy\"}"));
    assert!(text.contains("ferry_verify_duration_seconds_bucket{sync_job=\"copy\""));
    assert!(daemon.log_text().contains("verify: the target differs"));
}

/// A file source (read whole, no server to hash it) against a PostgreSQL
/// target: ferry reads the file's objects and hashes them as the server
/// hashes the table's rows.
#[tokio::test]
async fn a_file_source_compares_with_its_target() {
    let db = TestDb::new().await;
    let cfg = ConfigDir::new();
    let mut csv = String::from("id,name,amount,active,born\n");
    for i in 1..=60 {
        csv.push_str(&format!(
            "{i},name {i},{}.50,{},2024-01-{:02}\n",
            i * 3,
            i % 2 == 0,
            i % 28 + 1
        ));
    }
    cfg.file("people.csv", &csv);
    cfg.job(
        "people",
        &format!(
            "[source]\ntype = \"file\"\npath = \"people.csv\"\nkey = [\"id\"]\n\
             types = {{ id = \"bigint\", amount = \"numeric(12,2)\", active = \"boolean\", born = \"date\" }}\n\n\
             [detect]\nstrategy = \"diff\"\n\n\
             [target]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"people\"\nkey = [\"id\"]\ncreate = true\n\n\
             [rules]\nowner = \"source\"\n",
            db.url
        ),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    cfg.run_once_ok(&state);
    let (code, json) = verify(&cfg, &state, &[]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(result(&json)["equal"], 60);
    assert_eq!(result(&json)["source_pushdown"], false);
    db.exec("UPDATE people SET amount = 0 WHERE id = 9; DELETE FROM people WHERE id = 10")
        .await;
    let (code, json) = verify(&cfg, &state, &["--keys", "5..20"]);
    assert_eq!(code, 1, "{json:#}");
    assert_eq!(result(&json)["source_rows"], 16);
    assert_eq!(keys(&json, "different"), ["9"]);
    assert_eq!(keys(&json, "missing"), ["10"]);
    let out = cfg.ferry(Some(&state), &["verify", "people", "--where", "id > 3"]);
    assert_eq!(common::code(&out), 78, "{}", stderr(&out));
}

/// MariaDB and SQLite as sources: typed rows synced into PostgreSQL
/// compare equal, and a hand edit in the target is found.
#[tokio::test]
async fn mariadb_and_sqlite_sources_compare_with_postgres() {
    let db = TestDb::new().await;
    let maria = MysqlDb::new().await;
    maria
        .exec(
            "CREATE TABLE src (id bigint PRIMARY KEY, name varchar(40), flag tinyint(1), price decimal(12,2),
                at datetime(6), doc json, code char(4));
             INSERT INTO src SELECT seq, CONCAT('name ', seq), seq % 2, seq * 1.25,
                TIMESTAMP('2024-01-01 10:00:00.5') + INTERVAL seq HOUR, JSON_OBJECT('n', seq, 'a', 'x'), 'ab'
             FROM seq_1_to_80;",
        )
        .await;
    let cfg = ConfigDir::new();
    let lite_path = cfg.path().join("src.db");
    let lite_url = format!("sqlite://{}?mode=rwc", lite_path.display());
    let pool = sqlx::SqlitePool::connect(&lite_url).await.expect("sqlite");
    sqlx::raw_sql(
        "CREATE TABLE src (id INTEGER PRIMARY KEY, name TEXT, price NUMERIC, at TEXT, flag BOOLEAN);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 80)
         INSERT INTO src SELECT i, 'name ' || i, i * 1.25, '2024-01-01T10:00:00', i % 2 FROM n;",
    )
    .execute(&pool)
    .await
    .expect("sqlite source");
    for (name, kind, url) in [
        ("from_maria", "mysql", maria.url.clone()),
        (
            "from_lite",
            "sqlite",
            format!("sqlite://{}", lite_path.display()),
        ),
    ] {
        cfg.job(
            name,
            &format!(
                "[source]\ntype = \"{kind}\"\nurl = \"{url}\"\ntable = \"src\"\nkey = [\"id\"]\n\n\
                 [detect]\nstrategy = \"diff\"\n\n\
                 [target]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"dst_{name}\"\nkey = [\"id\"]\ncreate = true\n\n\
                 [rules]\nowner = \"source\"\n",
                db.url
            ),
        );
    }
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    cfg.run_once_ok(&state);
    for name in ["from_maria", "from_lite"] {
        let (code, json) = verify(&cfg, &state, &[name]);
        assert_eq!(code, 0, "{name}: {json:#}");
        assert_eq!(result(&json)["equal"], 80, "{name}");
        db.exec(&format!(
            "UPDATE dst_{name} SET name = 'hand' WHERE id = 33"
        ))
        .await;
        let (code, json) = verify(&cfg, &state, &[name]);
        assert_eq!(code, 1, "{name}: {json:#}");
        assert_eq!(keys(&json, "different"), ["33"], "{name}");
    }
}
