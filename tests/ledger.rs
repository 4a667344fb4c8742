//! The ledger through the state store's own API, on both backends: a settle
//! records every key it synced, including one detection never wrote (gone
//! since), and a version never moves back.
mod common;

use std::time::Duration;

use common::*;
use ferry::model::Item;
use ferry::state::{DetectedBatch, Settlement, Store, Synced};
use serde_json::json;

fn synced(key: &str, hash: i64, version: i64) -> Synced {
    Synced {
        key: key.to_string(),
        hash,
        version,
        // Hex, as the ledger keeps what conflicts.rs encodes (as bytes).
        written: Some(format!("{version:08x}")),
        source_hash: None,
    }
}

async fn settle_records_every_key(url: &str) {
    let store = Store::open(url).await.expect("open the state store");
    store.migrate().await.expect("migrate");
    store.ensure_job("j").await.expect("job");
    let mut batch = DetectedBatch {
        items: (1..=3).map(|k| Item::delete(vec![json!(k)])).collect(),
        keys: ["[1]", "[2]", "[3]"].map(String::from).to_vec(),
        keys_unseen: true,
        ..Default::default()
    };
    store
        .commit_detected("j", 1, &mut batch)
        .await
        .expect("detected");
    let versions: Vec<i64> = batch.items.iter().map(|i| i.version).collect();
    let task = store
        .claim("j", "test", Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("a task");

    // The ledger already records a newer version of [3] (its newer task
    // completed first); [4] was never detected.
    let newer = versions[2] + 100;
    store
        .complete_batch("j", &[], &[synced("[3]", 33, newer)])
        .await
        .expect("record a newer version of [3]");
    let settlement = Settlement {
        synced: vec![
            synced("[1]", 11, versions[0]),
            synced("[2]", 22, versions[1]),
            synced("[3]", 30, versions[2]),
            synced("[4]", 44, versions[2] + 1),
        ],
        ..Default::default()
    };
    assert!(store.settle(&task, &settlement).await.expect("settle"));

    let keys = ["[1]", "[2]", "[3]", "[4]"].map(String::from);
    let ledger = store.ledger_written("j", &keys).await.expect("ledger");
    for (key, version) in [
        ("[1]", versions[0]),
        ("[2]", versions[1]),
        ("[3]", newer),
        ("[4]", versions[2] + 1),
    ] {
        let (entry, written) = &ledger[key];
        assert_eq!(entry.synced_version, Some(version), "{url}: {key}");
        assert_eq!(written.as_deref(), Some(format!("{version:08x}").as_str()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn settle_records_every_key_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    settle_records_every_key(&url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn settle_records_every_key_postgres() {
    let db = TestDb::new().await;
    settle_records_every_key(&db.url).await;
}

/// A run that adds many keys refreshes the ledger's planner statistics on
/// PostgreSQL (a run adding a few does not), so the next run's ledger walk
/// is planned for the ledger's real size.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_grows_the_ledger_analyzes_it() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (id bigint PRIMARY KEY, v text, updated_at timestamptz NOT NULL);
         CREATE TABLE dst (id bigint PRIMARY KEY, v text, updated_at timestamptz);
         INSERT INTO src SELECT g, 'v', now() FROM generate_series(1, 10) g;",
    )
    .await;
    let cfg = ConfigDir::new();
    cfg.job(
        "grow",
        &pg_job(
            &db.url,
            "src",
            "strategy = \"cursor\"\ncursor = \"updated_at\"",
            "size = 5000",
            &db.url,
            "dst",
        ),
    );
    let analyzed = || {
        db.count(
            "SELECT count(last_analyze) FROM pg_stat_user_tables WHERE relname = 'ferry_ledger'",
        )
    };
    cfg.run_once_ok(&db.url);
    assert_eq!(
        analyzed().await,
        0,
        "ten new keys leave the statistics to autovacuum"
    );
    let more = ferry::detect::LEDGER_GROWTH_TO_ANALYZE;
    db.exec(&format!(
        "INSERT INTO src SELECT g, 'v', now() FROM generate_series(11, {}) g",
        10 + more
    ))
    .await;
    cfg.run_once_ok(&db.url);
    assert_eq!(analyzed().await, 1, "{more} new keys are analyzed at once");
}

/// A walk limited to a range of integer keys leaves out only integer keys
/// outside it, in the state store; every key it cannot place (text, a
/// fraction, a composite) still comes, in key order.
async fn a_walk_within_integer_keys(url: &str) {
    let store = Store::open(url).await.expect("open the state store");
    store.migrate().await.expect("migrate");
    store.ensure_job("j").await.expect("job");
    let keys = [
        "[-7]",
        "[2.5]",
        "[10]",
        "[12]",
        "[2]",
        "[3]",
        "[9223372036854775807]",
        "[\"5\"]",
        "[\"x\"]",
        "[4,\"a\"]",
    ];
    let mut batch = DetectedBatch {
        items: keys
            .iter()
            .map(|k| Item::delete(serde_json::from_str(k).expect("key")))
            .collect(),
        keys: keys.map(String::from).to_vec(),
        keys_unseen: true,
        ..Default::default()
    };
    store
        .commit_detected("j", 1, &mut batch)
        .await
        .expect("detected");
    let within = ferry::state::IntegerKeys { lo: 2, hi: 10 };
    let mut walk = store.ledger_walk("j", 3, Some(within));
    let mut seen = Vec::new();
    while let Some((key, _)) = walk.next().await.expect("walk") {
        seen.push(key);
    }
    // Bytewise: `"` sorts before digits, `.` before `]`.
    let expected = [
        "[\"5\"]",
        "[\"x\"]",
        "[10]",
        "[2.5]",
        "[2]",
        "[3]",
        "[4,\"a\"]",
    ];
    assert_eq!(seen, expected, "{url}");
    let mut all = store.ledger_walk("j", 3, None);
    let mut count = 0;
    while all.next().await.expect("walk").is_some() {
        count += 1;
    }
    assert_eq!(count, keys.len(), "{url}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_walk_within_integer_keys_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    a_walk_within_integer_keys(&url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_walk_within_integer_keys_postgres() {
    let db = TestDb::new().await;
    a_walk_within_integer_keys(&db.url).await;
}
