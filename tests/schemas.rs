//! Schema checks and drift: a run that cannot be exact stops before it
//! reads or writes (exit 78); the `[schema]` policy decides what a new or
//! retyped source column does; `[target] create = true` makes the table.
mod common;

use common::*;

const DIFF: &str = "strategy = \"diff\"";

/// A PostgreSQL source table `src` into `dst` of a target of `kind`, with
/// the given extra job text (`[fields]`, `[schema]`, target keys).
fn job(source_url: &str, kind: &str, target_url: &str, target_extra: &str, extra: &str) -> String {
    format!(
        "[source]\ntype = \"postgres\"\nurl = \"{source_url}\"\ntable = \"src\"\nkey = [\"id\"]\n\n\
         [detect]\n{DIFF}\n\n\
         [target]\ntype = \"{kind}\"\nurl = \"{target_url}\"\ntable = \"dst\"\nkey = [\"id\"]\n{target_extra}\n\n\
         [rules]\nowner = \"source\"\ndeletes = \"propagate\"\n\n{extra}"
    )
}

const FIELDS: &str = "[fields]\nid = \"id\"\nemail = \"email\"\nname = \"name\"\n";

async fn customers(db: &TestDb) {
    db.exec(
        "CREATE TABLE src (id bigint PRIMARY KEY, email text, name text);
         INSERT INTO src SELECT g, 'c' || g || '@x.test', 'n' || g FROM generate_series(1, 50) g;
         CREATE TABLE dst (id bigint PRIMARY KEY, email text, name text);",
    )
    .await;
}

fn run(cfg: &ConfigDir, state: &str) -> std::process::Output {
    cfg.ferry(Some(state), &["run", "--once"])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_mapped_column_stops_the_job_and_leaves_the_target_as_it_was() {
    for fields in [FIELDS, ""] {
        let db = TestDb::new().await;
        customers(&db).await;
        let cfg = ConfigDir::new();
        cfg.job("customers", &job(&db.url, "postgres", &db.url, "", fields));
        let state = state_url(StateKind::Sqlite, &cfg, &db);
        cfg.run_once_ok(&state);
        assert_eq!(db.count("SELECT count(email) FROM dst").await, 50);

        db.exec(
            "ALTER TABLE src DROP COLUMN email; UPDATE src SET name = 'renamed' WHERE id <= 10",
        )
        .await;
        let out = run(&cfg, &state);
        assert_eq!(code(&out), 78, "fields {fields:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("error: job customers:")
                && err.contains("source column `email`")
                && err.contains("table src"),
            "{err}"
        );
        // Nothing was written: every email is still there, no name changed.
        assert_eq!(db.count("SELECT count(email) FROM dst").await, 50);
        assert_eq!(
            db.count("SELECT count(*) FROM dst WHERE name = 'renamed'")
                .await,
            0
        );

        let check = cfg.ferry(Some(&state), &["check", "--connect"]);
        assert_eq!(code(&check), 78, "{}", stderr(&check));
        let text = String::from_utf8_lossy(&check.stdout).to_string();
        assert!(text.contains("source column `email`"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_column_no_field_maps_changes_no_row() {
    for fields in [FIELDS, ""] {
        let db = TestDb::new().await;
        customers(&db).await;
        let cfg = ConfigDir::new();
        cfg.job("customers", &job(&db.url, "postgres", &db.url, "", fields));
        let state = state_url(StateKind::Sqlite, &cfg, &db);
        cfg.run_once_ok(&state);

        db.exec("ALTER TABLE src ADD COLUMN notes text DEFAULT 'secret'; UPDATE src SET name = 'changed' WHERE id = 1")
            .await;
        let out = cfg.run_once_ok(&state);
        assert_eq!(changed(&out, "customers"), 1, "fields {fields:?}");
        assert_eq!(
            db.count("SELECT count(*) FROM dst WHERE name = 'changed'")
                .await,
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn on_new_column_add_adds_it_to_the_target_and_fail_stops() {
    for fields in [FIELDS, ""] {
        let db = TestDb::new().await;
        customers(&db).await;
        let cfg = ConfigDir::new();
        let add = "[schema]\non_new_column = \"add\"\n";
        cfg.job(
            "customers",
            &job(&db.url, "postgres", &db.url, "", &format!("{fields}{add}")),
        );
        let state = state_url(StateKind::Sqlite, &cfg, &db);
        cfg.run_once_ok(&state);

        db.exec("ALTER TABLE src ADD COLUMN tier numeric(6,2) DEFAULT 12.50")
            .await;
        let out = cfg.run_once_ok(&state);
        assert_eq!(changed(&out, "customers"), 50, "fields {fields:?}");
        assert_eq!(
            db.strings("SELECT DISTINCT tier::text FROM dst").await,
            vec!["12.50".to_string()]
        );
        assert_eq!(
            db.strings("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'dst'::regclass AND attname = 'tier'").await,
            vec!["numeric(6,2)".to_string()]
        );
        let status = cfg.ferry(Some(&state), &["status", "--output", "json"]);
        let status: serde_json::Value =
            serde_json::from_slice(&status.stdout).expect("status json");
        let changes = &status["jobs"][0]["schema_changes"];
        assert_eq!(changes[0]["change"], "column_added", "{status}");
        assert!(
            changes[0]["detail"].as_str().unwrap().contains("`tier`"),
            "{status}"
        );
        // The next run finds nothing new.
        assert_eq!(changed(&cfg.run_once_ok(&state), "customers"), 0);

        let fail = "[schema]\non_new_column = \"fail\"\n";
        cfg.job(
            "customers",
            &job(&db.url, "postgres", &db.url, "", &format!("{fields}{fail}")),
        );
        db.exec("ALTER TABLE src ADD COLUMN region text").await;
        let out = run(&cfg, &state);
        assert_eq!(code(&out), 78, "{}", stderr(&out));
        assert!(
            stderr(&out).contains("new column `region`"),
            "{}",
            stderr(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_type_stops_unless_widening_is_allowed() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (id bigint PRIMARY KEY, qty integer, code varchar(5));
         INSERT INTO src VALUES (1, 7, 'ab');
         CREATE TABLE dst (id bigint PRIMARY KEY, qty integer, code varchar(5));",
    )
    .await;
    let cfg = ConfigDir::new();
    cfg.job("items", &job(&db.url, "postgres", &db.url, "", ""));
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    cfg.run_once_ok(&state);

    db.exec("ALTER TABLE src ALTER COLUMN qty TYPE bigint; ALTER TABLE src ALTER COLUMN code TYPE varchar(40);
             UPDATE src SET qty = 5000000000, code = 'a much longer code than before'")
        .await;
    let out = run(&cfg, &state);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`qty` changed type from integer to bigint"),
        "{}",
        stderr(&out)
    );

    cfg.job(
        "items",
        &job(
            &db.url,
            "postgres",
            &db.url,
            "",
            "[schema]\non_type_change = \"widen\"\n",
        ),
    );
    cfg.run_once_ok(&state);
    assert_eq!(
        db.strings("SELECT qty::text || ' ' || code FROM dst").await,
        vec!["5000000000 a much longer code than before".to_string()]
    );

    // Narrowing is never followed.
    db.exec("ALTER TABLE src ALTER COLUMN qty TYPE integer USING 1")
        .await;
    let out = run(&cfg, &state);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(stderr(&out).contains("not a widening"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_target_column_or_table_stops_the_job() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (id bigint PRIMARY KEY, email text, name text);
         INSERT INTO src VALUES (1, 'a@x.test', 'a');
         CREATE TABLE dst (id bigint PRIMARY KEY, email text);",
    )
    .await;
    let cfg = ConfigDir::new();
    cfg.job("customers", &job(&db.url, "postgres", &db.url, "", FIELDS));
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    let out = run(&cfg, &state);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("target column `name` at jobs/customers.toml:"),
        "{}",
        stderr(&out)
    );
    assert_eq!(db.count("SELECT count(*) FROM dst").await, 0);

    db.exec("DROP TABLE dst").await;
    let out = run(&cfg, &state);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(stderr(&out).contains("create = true"), "{}", stderr(&out));
}

/// Columns of every common type, in PostgreSQL.
const TYPED_SOURCE: &str = "CREATE TABLE src (
    id bigint PRIMARY KEY, small smallint, amount numeric(12,2), wide numeric(38,10), ratio double precision,
    flag boolean, label varchar(40), note text, born date, seen timestamp(6), at timestamptz, payload jsonb, raw bytea);
  INSERT INTO src VALUES
    (1, -32768, 1234567890.12, 1234567890123456789012345678.0123456789, 0.1, true, 'ünïcode ✓', 'line1\nline2', '0001-01-01', '2024-03-31 01:30:00.123456', '2024-10-27 00:30:00.654321+00', '{\"a\": [1, 2.5, null]}', '\\x00ff10'),
    (2, NULL, NULL, NULL, NULL, NULL, NULL, '', NULL, NULL, NULL, NULL, NULL);";

#[tokio::test(flavor = "multi_thread")]
async fn create_true_makes_the_table_on_every_sql_target() {
    for kind in ALL_SQL {
        let db = TestDb::new().await;
        db.exec(TYPED_SOURCE).await;
        let cfg = ConfigDir::new();
        let target = TargetDb::new(kind, &cfg, &db).await;
        cfg.job(
            "typed",
            &job(&db.url, kind.kind(), &target.url(), "create = true", ""),
        );
        let state = state_url(StateKind::Sqlite, &cfg, &db);

        let plan = cfg.ferry(Some(&state), &["plan"]);
        assert_eq!(code(&plan), 0, "{kind:?}: {}", stderr(&plan));
        let text = String::from_utf8_lossy(&plan.stdout).to_string();
        assert!(
            text.contains("would create the target table"),
            "{kind:?}: {text}"
        );
        assert!(
            text.contains("CREATE TABLE IF NOT EXISTS \"dst\""),
            "{kind:?}: {text}"
        );

        cfg.run_once_ok(&state);
        let read = match kind {
            Target::Postgres => "SELECT concat_ws('|', id, small, amount, wide, flag, label, note, born, payload::text, encode(raw, 'hex')) FROM dst ORDER BY id",
            Target::Sqlite => "SELECT concat_ws('|', id, small, amount, wide, flag, label, note, born, payload, hex(raw)) FROM dst ORDER BY id",
            Target::Mysql => "SELECT CAST(CONCAT_WS('|', id, small, amount, wide, flag, label, note, born, payload, HEX(raw)) AS CHAR) FROM dst ORDER BY id",
        };
        let rows = target.strings(read).await;
        let (flag, payload, raw) = match kind {
            Target::Postgres => ("t", "{\"a\": [1, 2.5, null]}", "00ff10"),
            Target::Sqlite => ("1", "{\"a\":[1,2.5,null]}", "00FF10"),
            Target::Mysql => ("1", "{\"a\":[1,2.5,null]}", "00FF10"),
        };
        assert_eq!(
            rows[0],
            format!("1|-32768|1234567890.12|1234567890123456789012345678.0123456789|{flag}|ünïcode ✓|line1\nline2|0001-01-01|{payload}|{raw}"),
            "{kind:?}"
        );
        assert_eq!(
            target
                .strings("SELECT CAST(count(*) AS CHAR) FROM dst WHERE id = 2 AND note = '' AND amount IS NULL AND raw IS NULL")
                .await,
            vec!["1".to_string()],
            "{kind:?}: an empty string stays empty, NULL stays NULL"
        );
        // A second run finds the table as it made it: nothing to send.
        assert_eq!(changed(&cfg.run_once_ok(&state), "typed"), 0, "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lossy_target_type_is_refused_unless_the_field_accepts_it() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (id bigint PRIMARY KEY, wide numeric(38,10), raw bytea);
         INSERT INTO src VALUES (1, 1234567890123456789012345678.0123456789, '\\x00ff');",
    )
    .await;
    let cfg = ConfigDir::new();
    let target = TargetDb::new(Target::Sqlite, &cfg, &db).await;
    target
        .exec("CREATE TABLE dst (id INTEGER PRIMARY KEY, wide REAL, raw TEXT)")
        .await;
    let fields = "[fields]\nid = \"id\"\nwide = \"wide\"\nraw = \"raw\"\n";
    cfg.job("j", &job(&db.url, "sqlite", &target.url(), "", fields));
    let state = state_url(StateKind::Sqlite, &cfg, &db);

    let check = cfg.ferry(Some(&state), &["check", "--connect"]);
    assert_eq!(code(&check), 78);
    let text = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(
        text.contains("field `wide` at jobs/j.toml:23") && text.contains("15 significant digits"),
        "{text}"
    );
    assert!(
        text.contains("field `raw`") && text.contains("bytes"),
        "{text}"
    );
    let out = run(&cfg, &state);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(
        target
            .strings("SELECT CAST(count(*) AS TEXT) FROM dst")
            .await
            == vec!["0"]
    );

    let accepted = "[fields]\nid = \"id\"\nwide = { from = \"wide\", lossy = true }\nraw = { from = \"raw\", lossy = true }\n";
    cfg.job("j", &job(&db.url, "sqlite", &target.url(), "", accepted));
    cfg.run_once_ok(&state);
    assert_eq!(
        target
            .strings("SELECT CAST(wide AS TEXT) || ' ' || raw FROM dst")
            .await,
        vec!["1.23456789012346e+27 \\x00ff".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_columns_bytes_and_wide_decimals_arrive_exactly() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (id bigint PRIMARY KEY, doc json, wide numeric(38,10), raw bytea);
         INSERT INTO src VALUES (1, '{\"b\": 1, \"a\": [true]}', -0.0000000001, '\\x000102ff');
         CREATE TABLE dst (id bigint PRIMARY KEY, doc json, wide numeric(38,10), raw bytea);",
    )
    .await;
    // PostgreSQL: `json` has no equality operator.
    let cfg = ConfigDir::new();
    cfg.job("pg", &job(&db.url, "postgres", &db.url, "", ""));
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    cfg.run_once_ok(&state);
    db.exec("UPDATE src SET doc = '{\"b\": 2}'").await;
    cfg.run_once_ok(&state);
    assert_eq!(
        db.strings("SELECT doc::text || ' ' || wide::text || ' ' || encode(raw, 'hex') FROM dst")
            .await,
        // `json` keeps its text; ferry sends it compact (docs/types.md).
        vec!["{\"b\":2} -0.0000000001 000102ff".to_string()]
    );

    // MariaDB and SQLite: the bytes, not their text; every digit.
    for kind in [Target::Mysql, Target::Sqlite] {
        let cfg = ConfigDir::new();
        let target = TargetDb::new(kind, &cfg, &db).await;
        let ddl = match kind {
            Target::Mysql => "CREATE TABLE dst (id bigint PRIMARY KEY, doc json, wide decimal(38,10), raw longblob)",
            _ => "CREATE TABLE dst (id INTEGER PRIMARY KEY, doc TEXT, wide TEXT, raw BLOB)",
        };
        target.exec(ddl).await;
        cfg.job("j", &job(&db.url, kind.kind(), &target.url(), "", ""));
        cfg.run_once_ok(&state_url(StateKind::Sqlite, &cfg, &db));
        let read = match kind {
            Target::Mysql => "SELECT CONCAT(LENGTH(raw), ' ', HEX(raw), ' ', wide) FROM dst",
            _ => "SELECT length(raw) || ' ' || hex(raw) || ' ' || wide FROM dst",
        };
        assert_eq!(
            target.strings(read).await,
            vec!["4 000102FF -0.0000000001".to_string()],
            "{kind:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_file_replicates_a_whole_schema_into_created_tables() {
    let db = TestDb::new().await;
    let mut ddl = String::new();
    for i in 1..=15 {
        ddl.push_str(&format!(
            "CREATE TABLE t{i:02} (id bigint PRIMARY KEY, v numeric(10,{s}), note text);
             INSERT INTO t{i:02} SELECT g, g * 1.5, 'row ' || g FROM generate_series(1, {i}) g;",
            s = i % 4
        ));
    }
    ddl.push_str(
        "CREATE TABLE pairs (a int, b text, n int, PRIMARY KEY (a, b));
         INSERT INTO pairs VALUES (1, 'x', 10), (1, 'y', 11);
         CREATE TABLE audit_log (id bigint PRIMARY KEY, what text);
         CREATE TABLE audit_trail (id bigint PRIMARY KEY, what text);
         CREATE TABLE heap1 (v text); CREATE TABLE heap2 (v text); CREATE TABLE heap3 (v text);
         CREATE SCHEMA other; CREATE TABLE other.t01 (id int PRIMARY KEY);",
    );
    db.exec(&ddl).await;
    let target = TestDb::new().await;
    let cfg = ConfigDir::new();
    cfg.job(
        "shop",
        &format!(
            "[source]\ntype = \"postgres\"\nurl = \"{}\"\ntables = [\"public.*\", \"!public.audit_*\"]\n\n\
             [detect]\n{DIFF}\n\n\
             [target]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"copy_{{table}}\"\ncreate = true\n\n\
             [rules]\nowner = \"source\"\ndeletes = \"propagate\"\n",
            db.url, target.url
        ),
    );
    cfg.schedules("[schedules]\nshop = \"*/5 * * * *\"\n");
    let state = state_url(StateKind::Sqlite, &cfg, &db);

    let jobs = cfg.ferry(Some(&state), &["jobs", "--output", "json"]);
    assert_eq!(code(&jobs), 0, "{}", stderr(&jobs));
    let jobs: serde_json::Value = serde_json::from_slice(&jobs.stdout).expect("jobs json");
    let names: Vec<&str> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap())
        .collect();
    let mut expected: Vec<String> = (1..=15).map(|i| format!("shop.t{i:02}")).collect();
    expected.push("shop.pairs".to_string());
    expected.sort();
    assert_eq!(names, expected);
    assert!(jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["schedule"] == "*/5 * * * *"));
    let skipped: Vec<&str> = jobs["skipped_tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["table"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["public.heap1", "public.heap2", "public.heap3"]);

    let out = cfg.run_once_ok(&state);
    for i in 1..=15 {
        assert_eq!(changed(&out, &format!("shop.t{i:02}")), i);
        assert_eq!(
            target
                .count(&format!("SELECT count(*) FROM copy_t{i:02}"))
                .await,
            i as i64
        );
    }
    assert_eq!(
        target
            .strings("SELECT a || b || n FROM copy_pairs ORDER BY b")
            .await,
        ["1x10", "1y11"]
    );
    assert_eq!(
        target.strings("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'copy_t03'::regclass AND attname = 'v'").await,
        ["numeric(10,3)"]
    );
    assert_eq!(
        target.count("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'copy_audit%' OR tablename LIKE 'copy_heap%'").await,
        0
    );
    // One job of the schema runs alone, by its name.
    db.exec("UPDATE t07 SET note = 'changed' WHERE id = 7")
        .await;
    let out = cfg.ferry(Some(&state), &["run", "--once", "shop.t07"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(changed(&out, "shop.t07"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_lists_the_tables_again_and_runs_a_new_one() {
    let db = TestDb::new().await;
    db.exec("CREATE TABLE a (id int PRIMARY KEY, v text); INSERT INTO a VALUES (1, 'x');")
        .await;
    let target = TestDb::new().await;
    let cfg = ConfigDir::new();
    cfg.job(
        "shop",
        &format!(
            "[source]\ntype = \"postgres\"\nurl = \"{}\"\ntables = [\"*\"]\n\n\
             [detect]\n{DIFF}\n\n\
             [target]\ntype = \"postgres\"\nurl = \"{}\"\ncreate = true\n\n\
             [rules]\nowner = \"source\"\ndeletes = \"propagate\"\n",
            db.url, target.url
        ),
    );
    let mut d = cfg.daemon(&db.url, "shop = \"*/1 * * * * *\"", &[]).await;
    assert!(
        eventually(20, || async {
            target
                .count("SELECT count(*) FROM pg_tables WHERE tablename = 'a'")
                .await
                == 1
        })
        .await,
        "{}",
        d.log_text()
    );
    db.exec("CREATE TABLE b (id int PRIMARY KEY, v text); INSERT INTO b VALUES (2, 'y');")
        .await;
    d.signal("HUP");
    assert!(
        eventually(20, || async {
            target
                .count("SELECT count(*) FROM pg_tables WHERE tablename = 'b'")
                .await
                == 1
                && target.count("SELECT count(*) FROM b").await == 1
        })
        .await,
        "the new table was not synced after SIGHUP:\n{}",
        d.log_text()
    );
    let metrics = d.get("/metrics").await.unwrap_or_default();
    assert!(metrics.contains("sync_job=\"shop.b\""), "{metrics}");
    // The state store shares the source's database: its tables are not synced.
    assert!(!metrics.contains("sync_job=\"shop.ferry_"), "{metrics}");
    d.terminate();
}
