//! Replicas on one PostgreSQL state store, as the Kubernetes Deployment
//! runs them: three daemons from one config folder share 20 jobs' ticks;
//! one is SIGKILLed with runs in flight, and the other two carry on with
//! every job, each tick run once, until every target equals its source.
mod common;

use std::time::{Duration, Instant};

use common::*;

const JOBS: usize = 20;

/// The instance id a daemon's log gives at start.
fn instance(d: &DaemonProc) -> String {
    let log = d.log_text();
    let at = log
        .find("instance=")
        .unwrap_or_else(|| panic!("no instance in the log:\n{log}"));
    log[at + "instance=".len()..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_matches('"')
        .to_string()
}

/// Scheduled runs as (job, started_at ms, outcome, holder of the tick).
async fn scheduled_runs(db: &TestDb) -> Vec<(String, i64, Option<String>, String)> {
    sqlx::query_as(
        "SELECT r.job, r.started_at, r.outcome, t.holder FROM ferry_runs r \
         JOIN ferry_ticks t ON t.job = r.job AND t.scheduled_for = r.scheduled_for \
         WHERE r.trigger = 'schedule' ORDER BY r.started_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap_or_default()
}

/// JOBS slow jobs, each due every 3 s, and three daemons running them
/// from one config folder.
async fn replicas(db: &TestDb, cfg: &ConfigDir) -> Vec<DaemonProc> {
    let mut schedules = String::new();
    for i in 0..JOBS {
        db.exec(&format!(
            "CREATE TABLE src_{i} (id bigint PRIMARY KEY, name text);
             CREATE TABLE dst_{i} (id bigint PRIMARY KEY, name text);
             INSERT INTO src_{i} SELECT g, 'row ' || g FROM generate_series(1, 300) g;"
        ))
        .await;
        // Each run reads its source for over a second: runs are in flight
        // when the replica dies.
        let job = slow_job(&db.url, &format!("src_{i}"), 1.5, &format!("dst_{i}"));
        cfg.job(&format!("job_{i}"), &job);
        schedules.push_str(&format!("job_{i} = \"*/3 * * * * *\"\n"));
    }
    let port = free_port();
    cfg.schedules(&format!(
        "[engine]\nmetrics = \"127.0.0.1:{port}\"\nmax_concurrent_runs = 8\n\n[schedules]\n{schedules}"
    ));
    let mut daemons = vec![cfg.start_daemon(&db.url, port, &[]).await];
    for _ in 0..2 {
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        daemons.push(
            cfg.start_daemon(&db.url, port, &[("FERRY_METRICS", &address)])
                .await,
        );
    }
    daemons
}

/// After the kill at `killed` (ms): no tick ran twice, the dead replica
/// ran nothing more, and the two others shared the runs.
async fn the_others_shared_the_ticks(db: &TestDb, doomed: &str, killed: i64) {
    let twice = db
        .count(
            "SELECT count(*) FROM (SELECT job, scheduled_for FROM ferry_runs WHERE scheduled_for IS NOT NULL \
             GROUP BY job, scheduled_for HAVING count(*) > 1) d",
        )
        .await;
    assert_eq!(twice, 0, "a tick ran twice");
    let after: Vec<_> = scheduled_runs(db)
        .await
        .into_iter()
        .filter(|r| r.1 > killed)
        .collect();
    let holders: std::collections::BTreeSet<&str> = after.iter().map(|r| r.3.as_str()).collect();
    assert!(!holders.contains(doomed), "the dead replica ran on");
    assert_eq!(holders.len(), 2, "both others ran jobs: {after:?}");
    for holder in &holders {
        let share = after.iter().filter(|r| r.3 == *holder).count();
        assert!(
            share * 10 >= after.len() * 2,
            "{holder} ran {share} of {} runs",
            after.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_mid_run_leaves_its_jobs_to_the_others() {
    let db = TestDb::new().await;
    let cfg = ConfigDir::new();
    let mut daemons = replicas(&db, &cfg).await;
    let doomed = instance(&daemons[0]);
    let in_flight = || async {
        db.count(&format!(
            "SELECT count(*) FROM ferry_runs r JOIN ferry_ticks t ON t.job = r.job \
             AND t.scheduled_for = r.scheduled_for WHERE t.holder = '{doomed}' AND r.finished_at IS NULL"
        ))
        .await
            > 0
    };
    assert!(
        eventually(30, in_flight).await,
        "the first replica never ran a job:\n{}",
        daemons[0].log_text()
    );
    daemons[0].child.kill().expect("SIGKILL");
    let _ = daemons[0].child.wait();
    let killed = chrono::Utc::now().timestamp_millis();
    let since = Instant::now();
    // Rows change after the kill: the jobs the dead replica held must still deliver them.
    for i in 0..JOBS {
        db.exec(&format!("UPDATE src_{i} SET name = 'changed' WHERE id % 10 = 0; DELETE FROM src_{i} WHERE id = 7"))
            .await;
    }
    let converged = || async {
        let mut equal = 0;
        for i in 0..JOBS {
            let (src, dst) = (
                format!("SELECT * FROM src_{i}"),
                format!("SELECT * FROM dst_{i}"),
            );
            equal += usize::from(db.difference(&src, &dst).await == 0);
        }
        equal == JOBS
    };
    // Every job is due every 3 s; a job lease held by a dead process of
    // this host is taken over at once, a task's lease expires after 30 s.
    assert!(
        eventually(50, converged).await,
        "targets still differ {:?} after the kill:\n{}\n{}",
        since.elapsed(),
        daemons[1].log_text(),
        daemons[2].log_text()
    );
    let took = since.elapsed();
    eprintln!("the other replicas converged every target {took:?} after the kill");
    assert!(took < Duration::from_secs(40), "the others took {took:?}");
    drop(daemons);
    the_others_shared_the_ticks(&db, &doomed, killed).await;
}
