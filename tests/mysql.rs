//! The mysql connector against the local MariaDB: as a source into
//! PostgreSQL, and as a target from PostgreSQL — initial sync, updates,
//! deletes, and a repeat run that sends nothing.
mod common;

use common::*;

fn job(
    source: (&str, &str, &str),
    target: (&str, &str, &str),
    detect: &str,
    fields: &str,
) -> String {
    format!(
        "[source]\ntype = \"{}\"\nurl = \"{}\"\ntable = \"{}\"\nkey = [\"id\"]\n\n[detect]\n{detect}\n\n\
         [target]\ntype = \"{}\"\nurl = \"{}\"\ntable = \"{}\"\nkey = [\"id\"]\n\n{fields}\n[rules]\nowner = \"source\"\ndeletes = \"propagate\"\n",
        source.0, source.1, source.2, target.0, target.1, target.2
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_source_into_postgres() {
    let my = MysqlDb::new().await;
    let pg = TestDb::new().await;
    let cfg = ConfigDir::new();
    my.exec(
        "CREATE TABLE customers (id BIGINT PRIMARY KEY, email VARCHAR(100), balance DECIMAL(12,2), updated_at DATETIME(6) NOT NULL);
         INSERT INTO customers VALUES (1, 'a@x', 10.50, '2026-01-01 00:00:01'), (2, 'b@x', 20.00, '2026-01-01 00:00:02'), (3, 'it''s@x', NULL, '2026-01-01 00:00:03');",
    )
    .await;
    pg.exec("CREATE TABLE customers (id bigint PRIMARY KEY, email text, balance numeric(12,2), updated_at timestamp)")
        .await;
    for (name, detect) in [
        (
            "by_cursor",
            "strategy = \"cursor\"\ncursor = \"updated_at\"",
        ),
        ("by_diff", "strategy = \"diff\"\nmax_delete_ratio = 1.0"),
    ] {
        cfg.job(
            name,
            &job(
                ("mysql", &my.url, "customers"),
                ("postgres", &pg.url, "customers"),
                detect,
                "",
            ),
        );
    }
    // One job at a time against the same target table.
    let state = state_url(StateKind::Sqlite, &cfg, &pg);
    let rows = "SELECT id || '|' || email || '|' || COALESCE(balance::text, '-') || '|' || updated_at::text FROM customers ORDER BY id";
    let run = |job: &str| cfg.ferry(Some(&state), &["run", "--once", job]);

    let out = run("by_cursor");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(synced(&out, "by_cursor"), 3);
    let expected = [
        "1|a@x|10.50|2026-01-01 00:00:01",
        "2|b@x|20.00|2026-01-01 00:00:02",
        "3|it's@x|-|2026-01-01 00:00:03",
    ];
    assert_eq!(pg.strings(rows).await, expected);
    assert_eq!(
        synced(&run("by_cursor"), "by_cursor"),
        0,
        "a repeat run sends nothing"
    );

    my.exec("UPDATE customers SET email = 'a2@x', updated_at = '2026-01-02 00:00:00' WHERE id = 1")
        .await;
    let out = run("by_cursor");
    assert_eq!(synced(&out, "by_cursor"), 1, "{}", stderr(&out));
    assert_eq!(
        pg.strings(rows).await[0],
        "1|a2@x|10.50|2026-01-02 00:00:00"
    );

    // Deletes need the diff strategy: its first run records every object.
    let out = run("by_diff");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    my.exec("DELETE FROM customers WHERE id = 2; UPDATE customers SET balance = 1.25 WHERE id = 3")
        .await;
    let out = run("by_diff");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(changed(&out, "by_diff"), 2);
    assert_eq!(
        pg.strings(rows).await,
        [
            "1|a2@x|10.50|2026-01-02 00:00:00",
            "3|it's@x|1.25|2026-01-01 00:00:03"
        ]
    );
    assert_eq!(
        changed(&run("by_diff"), "by_diff"),
        0,
        "a repeat run finds nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_into_a_mysql_target() {
    let my = MysqlDb::new().await;
    let pg = TestDb::new().await;
    let cfg = ConfigDir::new();
    pg.exec(
        "CREATE TABLE people (id bigint PRIMARY KEY, email text, phone text, balance numeric(12,2), seen timestamptz);
         INSERT INTO people VALUES (1, 'a@x', '111', 1.50, '2026-01-01T10:00:00+02:00'), (2, 'b@x', '222', NULL, NULL), (3, 'c@x', '333', 3, NULL);",
    )
    .await;
    my.exec(
        "CREATE TABLE contacts (id BIGINT PRIMARY KEY, email VARCHAR(100), phone VARCHAR(20), balance DECIMAL(12,2), seen DATETIME(6));
         INSERT INTO contacts (id, email, phone) VALUES (1, 'old@x', 'keep');",
    )
    .await;
    cfg.job(
        "contacts",
        &job(
            ("postgres", &pg.url, "people"),
            ("mysql", &my.url, "contacts"),
            "strategy = \"diff\"\nmax_delete_ratio = 1.0",
            "[fields]\nid = \"id\"\nemail = \"email\"\nphone = { from = \"phone\", owner = \"target\" }\nbalance = \"balance\"\nseen = \"seen\"\n",
        ),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &pg);
    let rows = "SELECT CONCAT_WS('|', id, email, phone, COALESCE(balance, '-'), COALESCE(seen, '-')) FROM contacts ORDER BY id";

    let out = cfg.run_once_ok(&state);
    assert_eq!(synced(&out, "contacts"), 3);
    assert_eq!(
        my.strings(rows).await,
        [
            "1|a@x|keep|1.50|2026-01-01 08:00:00.000000",
            "2|b@x|222|-|-",
            "3|c@x|333|3.00|-",
        ],
        "the target keeps its phone; times arrive in UTC"
    );

    pg.exec("UPDATE people SET email = 'b2@x', phone = '999' WHERE id = 2; DELETE FROM people WHERE id = 3")
        .await;
    let out = cfg.run_once_ok(&state);
    assert_eq!(synced(&out, "contacts"), 2);
    assert_eq!(
        my.strings(rows).await,
        [
            "1|a@x|keep|1.50|2026-01-01 08:00:00.000000",
            "2|b2@x|222|-|-"
        ]
    );
    assert_eq!(
        synced(&cfg.run_once_ok(&state), "contacts"),
        0,
        "a repeat run sends nothing"
    );
}
