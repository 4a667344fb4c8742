//! Each detection strategy against each state store, PostgreSQL to PostgreSQL:
//! initial sync, changes, and a run with nothing to do.
mod common;

use common::*;

const SOURCE_ROWS: i64 = 10_000;

async fn setup(db: &TestDb) {
    db.exec(
        "CREATE TABLE shop_customers (id bigint PRIMARY KEY, email text NOT NULL, name text, country text,
             balance numeric(12,2), updated_at timestamptz(6) NOT NULL);
         CREATE TABLE crm_contacts (id bigint PRIMARY KEY, email text NOT NULL, name text, country text,
             balance numeric(12,2), updated_at timestamptz(6) NOT NULL);
         INSERT INTO shop_customers
           SELECT g, 'user' || g || '@example.com', 'Name ' || g, (ARRAY['CZ','DE','US'])[1 + g % 3],
                  (g * 7 % 100000) / 100.0, timestamptz '2026-01-01' + g * interval '1 second'
           FROM generate_series(1, 10000) g;",
    )
    .await;
}

fn job(db: &TestDb, detect: &str) -> String {
    format!(
        r#"
[source]
type = "postgres"
url = "{url}"
table = "shop_customers"
key = ["id"]

[detect]
{detect}

[batch]
size = 1000

[target]
type = "postgres"
url = "{url}"
table = "crm_contacts"
key = ["id"]

[rules]
owner = "source"
deletes = "propagate"
"#,
        url = db.url
    )
}

async fn assert_target_equals_source(db: &TestDb) {
    let diff = db
        .difference("SELECT * FROM shop_customers", "SELECT * FROM crm_contacts")
        .await;
    assert_eq!(diff, 0, "target differs from source in {diff} rows");
}

async fn scenario(strategy: &str, state: StateKind) {
    let db = TestDb::new().await;
    setup(&db).await;
    let detect = match strategy {
        "cursor" => "strategy = \"cursor\"\ncursor = \"updated_at\"\nlag = \"2s\"",
        _ => "strategy = \"diff\"\nmax_delete_ratio = 0.2",
    };
    let cfg = ConfigDir::new();
    cfg.job("customers", &job(&db, detect));
    let state = state_url(state, &cfg, &db);

    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(synced(&out, "customers"), SOURCE_ROWS as u64);
    assert_target_equals_source(&db).await;

    // 1% updated; with diff also 0.5% deleted (a cursor cannot see deletes).
    db.exec("UPDATE shop_customers SET name = name || ' (moved)', updated_at = timestamptz '2026-06-01' + id * interval '1 ms' WHERE id % 100 = 0").await;
    let deleted = if strategy == "diff" {
        db.exec("DELETE FROM shop_customers WHERE id % 200 = 1")
            .await;
        50
    } else {
        0
    };
    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(synced(&out, "customers"), 100 + deleted);
    assert_target_equals_source(&db).await;

    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        synced(&out, "customers"),
        0,
        "an unchanged source must sync nothing"
    );
    assert_eq!(changed(&out, "customers"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn cursor_with_sqlite_state() {
    scenario("cursor", StateKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cursor_with_postgres_state() {
    scenario("cursor", StateKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_with_sqlite_state() {
    scenario("diff", StateKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_with_postgres_state() {
    scenario("diff", StateKind::Postgres).await;
}

/// Rows that tie with the watermark, and a row committed late inside the lag
/// window, are each synced exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn cursor_boundary_ties_and_late_commits_sync_once() {
    for state_kind in [StateKind::Sqlite, StateKind::Postgres] {
        let db = TestDb::new().await;
        setup(&db).await;
        let cfg = ConfigDir::new();
        cfg.job(
            "customers",
            &job(
                &db,
                "strategy = \"cursor\"\ncursor = \"updated_at\"\nlag = \"10s\"",
            ),
        );
        let state = state_url(state_kind, &cfg, &db);
        let last = "timestamptz '2026-01-01' + 10000 * interval '1 second'";

        assert_eq!(code(&cfg.ferry(Some(&state), &["run", "--once"])), 0);

        // Three rows with exactly the watermark's value.
        db.exec(&format!(
            "INSERT INTO shop_customers SELECT g, 'tie' || g || '@example.com', 'Tie', 'CZ', 1.5, {last} FROM generate_series(20001, 20003) g"
        ))
        .await;
        let out = cfg.ferry(Some(&state), &["run", "--once"]);
        assert_eq!(
            synced(&out, "customers"),
            3,
            "{state_kind:?}: ties with the watermark"
        );

        // A transaction that committed late, with a cursor 5 s behind the watermark.
        db.exec(&format!("INSERT INTO shop_customers VALUES (30001, 'late@example.com', 'Late', 'DE', 2.25, {last} - interval '5 seconds')")).await;
        let out = cfg.ferry(Some(&state), &["run", "--once"]);
        assert_eq!(
            synced(&out, "customers"),
            1,
            "{state_kind:?}: late commit inside the lag window"
        );

        let out = cfg.ferry(Some(&state), &["run", "--once"]);
        assert_eq!(
            synced(&out, "customers"),
            0,
            "{state_kind:?}: nothing twice"
        );
        assert_target_equals_source(&db).await;
    }
}

/// Sub-microsecond-exact cursor values survive the round trip through the
/// state store (a truncated watermark would re-read the same rows forever).
#[tokio::test(flavor = "multi_thread")]
async fn cursor_values_round_trip_losslessly() {
    let db = TestDb::new().await;
    setup(&db).await;
    db.exec("UPDATE shop_customers SET updated_at = timestamptz '2026-03-01 10:00:00.123456+00' + id * interval '1 microsecond'").await;
    let cfg = ConfigDir::new();
    cfg.job(
        "customers",
        &job(&db, "strategy = \"cursor\"\ncursor = \"updated_at\""),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    assert_eq!(code(&cfg.ferry(Some(&state), &["run", "--once"])), 0);
    let out = cfg.ferry(Some(&state), &["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2026-03-01 10:00:00.133456+00"),
        "watermark kept to the microsecond"
    );
    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(changed(&out, "customers"), 0);
}

/// Rows whose cursor is NULL are not silently dropped: they sync, and sync
/// again only when their content changes.
#[tokio::test(flavor = "multi_thread")]
async fn rows_with_null_cursor_are_synced_by_hash() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE shop_customers (id bigint PRIMARY KEY, email text, name text, country text, balance numeric(12,2), updated_at timestamptz);
         CREATE TABLE crm_contacts (LIKE shop_customers);
         ALTER TABLE crm_contacts ADD PRIMARY KEY (id);
         INSERT INTO shop_customers SELECT g, 'u' || g, 'N', 'CZ', 1, CASE WHEN g % 10 = 0 THEN NULL ELSE now() END FROM generate_series(1, 100) g;",
    )
    .await;
    let cfg = ConfigDir::new();
    cfg.job(
        "customers",
        &job(&db, "strategy = \"cursor\"\ncursor = \"updated_at\""),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    assert_eq!(
        synced(&cfg.ferry(Some(&state), &["run", "--once"]), "customers"),
        100
    );
    assert_eq!(
        synced(&cfg.ferry(Some(&state), &["run", "--once"]), "customers"),
        0
    );
    db.exec("UPDATE shop_customers SET name = 'changed' WHERE id = 20")
        .await;
    assert_eq!(
        synced(&cfg.ferry(Some(&state), &["run", "--once"]), "customers"),
        1
    );
    assert_target_equals_source(&db).await;
}

/// `--full` resends everything: the repair when the target lost data.
#[tokio::test(flavor = "multi_thread")]
async fn full_resync_repairs_a_target_that_lost_rows() {
    let db = TestDb::new().await;
    setup(&db).await;
    let cfg = ConfigDir::new();
    cfg.job(
        "customers",
        &job(&db, "strategy = \"cursor\"\ncursor = \"updated_at\""),
    );
    let state = state_url(StateKind::Postgres, &cfg, &db);
    assert_eq!(code(&cfg.ferry(Some(&state), &["run", "--once"])), 0);
    db.exec("DELETE FROM crm_contacts WHERE id > 5000").await;
    assert_eq!(
        synced(&cfg.ferry(Some(&state), &["run", "--once"]), "customers"),
        0
    );
    let out = cfg.ferry(Some(&state), &["run", "--once", "--full"]);
    assert_eq!(synced(&out, "customers"), SOURCE_ROWS as u64);
    assert_target_equals_source(&db).await;
}

/// A first run inserts the ledger's keys without checking for ones already
/// there; a source that repeats a key (no primary key) still syncs, its
/// later row winning, once the ledger write retries with the check.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_repeated_in_a_first_run_syncs_its_later_row() {
    for state_kind in [StateKind::Sqlite, StateKind::Postgres] {
        let db = TestDb::new().await;
        db.exec(
            "CREATE TABLE shop_customers (id bigint NOT NULL, email text NOT NULL, name text, country text,
                 balance numeric(12,2), updated_at timestamptz(6) NOT NULL);
             CREATE TABLE crm_contacts (LIKE shop_customers);
             ALTER TABLE crm_contacts ADD PRIMARY KEY (id);
             INSERT INTO shop_customers
               SELECT g, 'user' || g || '@example.com', 'Name ' || g, 'CZ', 1, timestamptz '2026-01-01' + g * interval '1 second'
               FROM generate_series(1, 3000) g;
             INSERT INTO shop_customers VALUES (5, 'again@example.com', 'Later', 'DE', 2, timestamptz '2026-02-01');",
        )
        .await;
        let cfg = ConfigDir::new();
        cfg.job(
            "customers",
            &job(&db, "strategy = \"cursor\"\ncursor = \"updated_at\""),
        );
        let state = state_url(state_kind, &cfg, &db);
        let out = cfg.ferry(Some(&state), &["run", "--once"]);
        assert_eq!(code(&out), 0, "{state_kind:?}: {}", stderr(&out));
        assert_eq!(
            db.strings("SELECT name FROM crm_contacts WHERE id = 5")
                .await,
            ["Later"],
            "{state_kind:?}: the later row of key 5 is the one in the target"
        );
        assert_eq!(db.count("SELECT count(*) FROM crm_contacts").await, 3000);
        let out = cfg.ferry(Some(&state), &["run", "--once"]);
        assert_eq!(
            changed(&out, "customers"),
            0,
            "{state_kind:?}: {}",
            stderr(&out)
        );
    }
}
