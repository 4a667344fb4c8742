//! Queue throughput: claim + complete of empty tasks, one at a time and in
//! batches, on a PostgreSQL and a SQLite state store.
//!
//!   cargo bench --bench queue      # 20,000 tasks per batched measurement, 2,000 one at a time
//!   QUEUE_TASKS=50000 cargo bench --bench queue
//!
//! Needs a local PostgreSQL (`PG`, default postgres://postgres@127.0.0.1:5432);
//! creates and drops its own database. Prints a Markdown table.
use std::time::{Duration, Instant};

use ferry::state::{Settlement, Store};
use sqlx::Connection;

const JOB: &str = "bench";
const LEASE: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() {
    let tasks: usize = std::env::var("QUEUE_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let pg = std::env::var("PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let db = format!("ferry_bench_queue_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&format!("{pg}/postgres"))
        .await
        .expect("connect to PostgreSQL (set PG)");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await
        .expect("create the benchmark database");
    let dir = tempfile::tempdir().expect("temporary directory");
    let stores = [
        ("postgres", format!("{pg}/{db}")),
        (
            "sqlite",
            format!("sqlite://{}", dir.path().join("state.db").display()),
        ),
    ];

    println!("| state store | mode | tasks | seconds | tasks/s |");
    println!("|---|---|---:|---:|---:|");
    for (name, url) in &stores {
        let store = Store::open(url).await.expect("open the state store");
        store.migrate().await.expect("migrate");
        for (mode, batch, workers) in [
            ("one at a time, 1 worker", 1, 1),
            ("one at a time, 4 workers", 1, 4),
            ("batches of 100, 1 worker", 100, 1),
            ("batches of 100, 4 workers", 100, 4),
            ("batches of 1000, 1 worker", 1000, 1),
            ("batches of 1000, 4 workers", 1000, 4),
        ] {
            // One commit (and fsync) per task: a tenth of the tasks is
            // plenty to measure its rate.
            let tasks = if batch == 1 { tasks / 10 } else { tasks };
            fill(url, tasks).await;
            let started = Instant::now();
            let done = drain(&store, batch, workers).await;
            let secs = started.elapsed().as_secs_f64();
            assert_eq!(done, tasks, "every task claimed and completed exactly once");
            println!(
                "| {name} | {mode} | {done} | {secs:.2} | {:.0} |",
                done as f64 / secs
            );
        }
        store.close().await;
    }
    sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop the benchmark database");
}

/// Replaces the queue with `n` pending tasks holding no items.
async fn fill(url: &str, n: usize) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.expect("connect");
    sqlx::query("DELETE FROM ferry_tasks")
        .execute(&mut conn)
        .await
        .expect("empty the queue");
    let insert = format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
         INSERT INTO ferry_tasks (job, run_id, state, item_count, created_at, run_after, stale_check) \
         SELECT '{JOB}', 1, 'pending', 0, 0, 0, 0 FROM n"
    );
    sqlx::query(&insert)
        .execute(&mut conn)
        .await
        .expect("fill the queue");
}

/// Claims and completes until the queue is empty; returns the tasks done.
async fn drain(store: &Store, batch: usize, workers: usize) -> usize {
    let handles = (0..workers).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            let owner = format!("bench-{w}");
            let mut done = 0;
            loop {
                let claimed = store
                    .claim_batch(JOB, &owner, LEASE, batch)
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    return done;
                }
                if batch == 1 {
                    for task in &claimed {
                        assert!(store
                            .settle(task, &Settlement::default())
                            .await
                            .expect("settle"));
                    }
                    done += claimed.len();
                } else {
                    done += store
                        .complete_batch(JOB, &claimed, &[])
                        .await
                        .expect("complete")
                        .len();
                }
            }
        })
    });
    let mut total = 0;
    for h in handles.collect::<Vec<_>>() {
        total += h.await.expect("worker");
    }
    total
}
