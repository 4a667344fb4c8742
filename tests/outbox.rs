//! Outbox tables (`strategy = "outbox"` on a PostgreSQL table): rows read in
//! id order, enqueued, then deleted; the last change of each key wins; a
//! crash between enqueue and delete loses nothing and applies nothing twice.
mod common;

use common::*;

async fn tables(db: &TestDb) {
    db.exec(
        "CREATE TABLE outbox (id bigserial PRIMARY KEY, op text, payload jsonb, created_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE items (id bigint PRIMARY KEY, v bigint, writes int NOT NULL DEFAULT 0);",
    )
    .await;
    db.exec(&count_writes("items")).await;
}

fn job(db: &TestDb) -> String {
    format!(
        "[source]\ntype = \"postgres\"\nurl = \"{url}\"\ntable = \"outbox\"\nkey = [\"id\"]\n\n\
         [detect]\nstrategy = \"outbox\"\n\n[batch]\nsize = 1000\n\n\
         [target]\ntype = \"postgres\"\nurl = \"{url}\"\ntable = \"items\"\nkey = [\"id\"]\n\n\
         [fields]\nid = \"id\"\nv = \"v\"\n\n[rules]\nowner = \"source\"\ndeletes = \"propagate\"\n",
        url = db.url
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_outbox_rows_end_as_the_last_change_of_each_key() {
    let db = TestDb::new().await;
    tables(&db).await;
    // 100 keys, 100 changes each, interleaved; then keys 1–5 deleted.
    db.exec(
        "INSERT INTO outbox (payload) SELECT jsonb_build_object('id', g % 100 + 1, 'v', g) FROM generate_series(1, 10000) g;
         INSERT INTO outbox (op, payload) SELECT 'delete', jsonb_build_object('id', k) FROM generate_series(1, 5) k;",
    )
    .await;
    let cfg = ConfigDir::new();
    cfg.job("items", &job(&db));
    let state = state_url(StateKind::Postgres, &cfg, &db);
    cfg.run_once_ok(&state);

    let wrong: i64 = db
        .count(
            "SELECT count(*) FROM generate_series(6, 100) k LEFT JOIN items i ON i.id = k
             WHERE i.v IS DISTINCT FROM (SELECT max(g) FROM generate_series(1, 10000) g WHERE g % 100 + 1 = k)",
        )
        .await;
    assert_eq!(wrong, 0, "every key holds its last change");
    assert_eq!(
        db.count("SELECT count(*) FROM items WHERE id <= 5").await,
        0,
        "deleted keys are gone"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM outbox").await,
        0,
        "what was enqueued is deleted from the outbox"
    );
    let out = cfg.run_once_ok(&state);
    assert_eq!(changed(&out, "items"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_enqueue_and_delete_loses_nothing_and_applies_nothing_twice() {
    let db = TestDb::new().await;
    tables(&db).await;
    db.exec("INSERT INTO outbox (payload) VALUES ('{\"id\": 1, \"v\": 10}'), ('{\"id\": 2, \"v\": 20}')")
        .await;
    let cfg = ConfigDir::new();
    cfg.job("items", &job(&db));
    let state = state_url(StateKind::Postgres, &cfg, &db);

    kill_at_fault(&cfg, &state, "before-ack");
    assert_eq!(
        db.count("SELECT count(*) FROM outbox").await,
        2,
        "not deleted before the kill"
    );

    let out = run_after_killed(&cfg, &state);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        changed(&out, "items"),
        0,
        "the rows read again are no new changes"
    );
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT id || ':' || v || ':' || writes FROM items ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .expect("read");
    assert_eq!(rows, ["1:10:1", "2:20:1"], "each change applied once");
    assert_eq!(db.count("SELECT count(*) FROM outbox").await, 0);
}
