//! Connections cut in the middle of a run, through a TCP proxy in front of
//! the source, the target or the state store: the cut run exits 75 and its
//! summary counts the work it did; a run started right after does not claim
//! a success it did not make, and converges: target == source, no duplicates.
mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const ROWS: i64 = 300_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Source,
    Target,
    StateStore,
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

fn run_of(out: &Output) -> Value {
    json(out)["runs"][0].clone()
}

/// A run cut midway fails, and its summary counts what it did.
fn assert_cut_run_counts_its_work(cut: Cut, out: &Output) {
    let run = run_of(out);
    assert_eq!(run["outcome"], "failed", "{cut:?}: {run}");
    let (scanned, changed, synced) = (
        run["scanned"].as_i64().unwrap_or(0),
        run["changed"].as_i64().unwrap_or(0),
        run["synced"].as_i64().unwrap_or(0),
    );
    assert!(
        scanned > 0 && changed > 0 && synced > 0,
        "{cut:?}: the cut run counts what it did: {run}"
    );
    if cut == Cut::Source {
        assert!(scanned < ROWS, "{run}");
    }
}

async fn cut_mid_run(cut: Cut, state_kind: StateKind) {
    let db = TestDb::new().await;
    db.exec(&format!(
        "CREATE TABLE src (id bigint PRIMARY KEY, name text, n int);
         INSERT INTO src SELECT g, 'n' || g, g % 97 FROM generate_series(1, {ROWS}) g;
         CREATE TABLE dst (id bigint PRIMARY KEY, name text, n int);"
    ))
    .await;
    let proxy = Proxy::start("127.0.0.1:5432".parse().expect("addr")).await;
    let through = |url: &str, side: Cut| {
        if cut == side {
            proxy.url(url, 5432)
        } else {
            url.to_string()
        }
    };
    let cfg = ConfigDir::new();
    cfg.job(
        "big",
        &pg_job(
            &through(&db.url, Cut::Source),
            "src",
            "strategy = \"diff\"",
            "size = 1000\nconcurrency = 2\nbackoff = { initial = \"50ms\", max = \"200ms\" }",
            &through(&db.url, Cut::Target),
            "dst",
        ),
    );
    let state = match (cut, state_kind) {
        (Cut::StateStore, _) => through(&db.url, Cut::StateStore),
        (_, kind) => state_url(kind, &cfg, &db),
    };
    let lease = [("FERRY_JOB_LEASE", "3s"), ("FERRY_TASK_LEASE", "3s")];

    let child = cfg
        .command(Some(&state), &["--output", "json", "run", "--once"])
        .envs(lease)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    assert!(
        eventually(60, || async {
            db.count("SELECT count(*) FROM dst").await >= 20_000
        })
        .await,
        "{cut:?}: the run never got going"
    );
    proxy.cut();
    let started = Instant::now();
    let out = child.wait_with_output().expect("wait");
    eprintln!("{cut:?} cut run:\n{}", stderr(&out));
    assert_eq!(code(&out), 75, "{cut:?}: {}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(30), "{cut:?}");
    assert_cut_run_counts_its_work(cut, &out);
    let before = db.count("SELECT count(*) FROM dst").await;
    assert!(
        before < ROWS,
        "{cut:?}: the cut came too late ({before} rows)"
    );

    // Right after: the system is back, the cut run's process is gone.
    proxy.restore();
    let out = cfg
        .command(Some(&state), &["--output", "json", "run", "--once"])
        .envs(lease)
        .output()
        .expect("rerun");
    eprintln!("{cut:?} rerun:\n{}", stderr(&out));
    let rerun = run_of(&out);
    if code(&out) == 0 {
        assert_eq!(rerun["outcome"], "success", "{rerun}");
    } else {
        // Only as busy (the job's lease, named) or with items to retry.
        assert!(
            matches!(code(&out), 1 | 75) && rerun["outcome"] != "success",
            "{cut:?}: {rerun}"
        );
        // Once the cut run's leases (3 s) have expired, a run syncs the rest.
        let deadline = Instant::now() + Duration::from_secs(30);
        let out = loop {
            let out = cfg
                .command(Some(&state), &["run", "--once"])
                .envs(lease)
                .output()
                .expect("second rerun");
            if code(&out) == 0 || Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        assert_eq!(code(&out), 0, "{cut:?}: {}", stderr(&out));
    }
    assert_eq!(
        db.difference("SELECT id, name, n FROM src", "SELECT id, name, n FROM dst")
            .await,
        0,
        "{cut:?}: target == source"
    );
    assert_eq!(db.count("SELECT count(*) FROM dst").await, ROWS);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_cut_mid_scan() {
    for kind in [StateKind::Sqlite, StateKind::Postgres] {
        cut_mid_run(Cut::Source, kind).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_cut_mid_sync() {
    for kind in [StateKind::Sqlite, StateKind::Postgres] {
        cut_mid_run(Cut::Target, kind).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_store_cut_mid_run() {
    cut_mid_run(Cut::StateStore, StateKind::Postgres).await;
}
