//! A daemon's limits at scale: `[engine] max_concurrent_runs` runs at once,
//! and no more connections to a system than its budget
//! (`max_connections_per_system`, `[engine.systems."URL"] max_connections`),
//! held to by a PostgreSQL role that refuses any connection over the limit.
mod common;

use std::time::Duration;

use common::*;

const JOBS: usize = 6;

/// `n` source tables `src_i` of `rows` rows and empty `dst_i` targets.
async fn tables(db: &TestDb, n: usize, rows: i64) {
    for i in 0..n {
        db.exec(&format!(
            "CREATE TABLE src_{i} (id bigint PRIMARY KEY, name text, updated_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE dst_{i} (id bigint PRIMARY KEY, name text, updated_at timestamptz);
             INSERT INTO src_{i} (id, name) SELECT g, 'row ' || g FROM generate_series(1, {rows}) g;"
        ))
        .await;
    }
}

/// Runs of `trigger` as (job, started_at, finished_at, outcome), by start.
async fn runs(db: &TestDb, trigger: &str) -> Vec<(String, i64, Option<i64>, Option<String>)> {
    sqlx::query_as(&format!(
        "SELECT job, started_at, finished_at, outcome FROM ferry_runs WHERE trigger = '{trigger}' ORDER BY started_at"
    ))
    .fetch_all(&db.pool)
    .await
    .unwrap_or_default()
}

async fn all_finished(db: &TestDb, n: usize) -> bool {
    let runs = runs(db, "signal").await;
    runs.len() == n && runs.iter().all(|r| r.2.is_some())
}

/// `[engine]` with the daemon's port and `limits`.
fn engine(port: u16, limits: &str) -> String {
    format!("[engine]\nmetrics = \"127.0.0.1:{port}\"\n{limits}\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_beyond_max_concurrent_runs_wait_for_a_slot() {
    let db = TestDb::new().await;
    tables(&db, 3, 100).await;
    let cfg = ConfigDir::new();
    for i in 0..3 {
        // Each run reads the source once, for over a second.
        let job = slow_job(&db.url, &format!("src_{i}"), 1.0, &format!("dst_{i}"));
        cfg.job(&format!("slow_{i}"), &job);
    }
    let port = free_port();
    cfg.schedules(&engine(port, "max_concurrent_runs = 1"));
    let d = cfg.start_daemon(&db.url, port, &[]).await;
    d.signal("USR1");
    assert!(
        eventually(30, || all_finished(&db, 3)).await,
        "three runs:\n{}",
        d.log_text()
    );
    let done = runs(&db, "signal").await;
    for pair in done.windows(2) {
        assert!(
            pair[0].2.is_some_and(|end| end <= pair[1].1),
            "one run at a time: {done:?}"
        );
    }
    assert!(
        done.iter().all(|r| r.3.as_deref() == Some("success")),
        "{done:?}"
    );
    assert!(
        d.log_text().contains("waits for a run slot"),
        "{}",
        d.log_text()
    );
    for i in 0..3 {
        let (src, dst) = (
            format!("SELECT * FROM src_{i}"),
            format!("SELECT * FROM dst_{i}"),
        );
        assert_eq!(db.difference(&src, &dst).await, 0, "dst_{i}");
    }
}

/// A login role that PostgreSQL lets hold at most `limit` connections,
/// with every right on the test database's tables; dropped at the end.
struct LimitedRole {
    name: String,
    db_url: String,
}

impl LimitedRole {
    async fn new(db: &TestDb, limit: u32) -> LimitedRole {
        let name = format!("ferry_r_{}", uuid::Uuid::new_v4().simple());
        db.exec(&format!(
            "CREATE ROLE {name} LOGIN CONNECTION LIMIT {limit};
             GRANT ALL ON ALL TABLES IN SCHEMA public TO {name};"
        ))
        .await;
        LimitedRole {
            name,
            db_url: db.url.clone(),
        }
    }

    /// The test database's URL, logging in as this role.
    fn url(&self, db: &TestDb) -> String {
        let server = pg_server().replace("postgres@", &format!("{}@", self.name));
        format!("{server}/{}", db.name)
    }
}

impl Drop for LimitedRole {
    fn drop(&mut self) {
        let (name, db_url) = (self.name.clone(), self.db_url.clone());
        on_own_runtime(async move {
            use sqlx::Executor;
            for (url, sql) in [
                (db_url, format!("DROP OWNED BY {name}")),
                (
                    format!("{}/postgres", pg_server()),
                    format!("DROP ROLE IF EXISTS {name}"),
                ),
            ] {
                if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                    let _ = pool.execute(sql.as_str()).await;
                    pool.close().await;
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_together_stay_within_a_systems_max_connections() {
    let db = TestDb::new().await;
    tables(&db, JOBS, 2000).await;
    // The server refuses this role a third connection: every job reads and
    // writes through it, all at once.
    let role = LimitedRole::new(&db, 2).await;
    let url = role.url(&db);
    let system = url.replace(&format!("{}@", role.name), "");
    let cfg = ConfigDir::new();
    for i in 0..JOBS {
        cfg.job(
            &format!("copy_{i}"),
            &pg_job(
                &url,
                &format!("src_{i}"),
                "strategy = \"diff\"",
                "size = 200\nconcurrency = 4",
                &url,
                &format!("dst_{i}"),
            ),
        );
    }
    let port = free_port();
    cfg.schedules(&engine(
        port,
        &format!(
            "max_concurrent_runs = {JOBS}\n\n[engine.systems.\"{system}\"]\nmax_connections = 2"
        ),
    ));
    let d = cfg.start_daemon(&db.url, port, &[]).await;
    d.signal("USR1");
    assert!(
        eventually(60, || all_finished(&db, JOBS)).await,
        "{JOBS} runs:\n{}",
        d.log_text()
    );
    let done = runs(&db, "signal").await;
    assert!(
        done.iter().all(|r| r.3.as_deref() == Some("success")),
        "every run within the role's two connections: {done:?}\n{}",
        d.log_text()
    );
    let overlapping = done
        .windows(2)
        .any(|p| p[0].2.is_some_and(|end| end > p[1].1));
    assert!(overlapping, "the runs ran side by side: {done:?}");
    for i in 0..JOBS {
        let (src, dst) = (
            format!("SELECT * FROM src_{i}"),
            format!("SELECT * FROM dst_{i}"),
        );
        assert_eq!(db.difference(&src, &dst).await, 0, "dst_{i}");
    }
    drop(d);
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_too_small_or_a_system_no_job_uses_is_a_config_error() {
    let db = TestDb::new().await;
    let cfg = ConfigDir::new();
    cfg.job(
        "copy",
        &pg_job(
            &db.url,
            "src",
            "strategy = \"diff\"",
            "size = 10",
            &db.url,
            "dst",
        ),
    );
    let system = db.url.replace("postgres@", "");
    cfg.schedules(&format!(
        "[engine]\nmax_concurrent_runs = 0\n\n[engine.systems.\"{system}\"]\nmax_connections = 1\n\n\
         [engine.systems.\"postgres://elsewhere:5432/db\"]\nmax_connections = 4\n\n\
         [engine.systems.\"postgres://app:secret@elsewhere:5432/db\"]\nmax_connections = 4\n"
    ));
    let out = cfg.ferry(None, &["check"]);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    let errors = stderr(&out);
    for expected in [
        "schedules.toml:2:",
        "`max_concurrent_runs` = 0 is out of range 1..=10000",
        "schedules.toml:4:",
        &format!("`max_connections` = 1 for `{system}` is too few: jobs read and write (one connection each) there, which needs at least 2"),
        "schedules.toml:7:",
        "`[engine.systems.\"postgres://elsewhere:5432/db\"]`: no job reads or writes this system; the systems jobs use: ",
        "schedules.toml:10:",
        "names a system by its URL without user, password or query: \"postgres://elsewhere:5432/db\"",
    ] {
        assert!(errors.contains(expected), "{expected}\n{errors}");
    }
    assert!(!errors.contains("secret"), "{errors}");
}

/// `ferry status` of every job reads each table once for all of them; what
/// it shows of each job is what `ferry status JOB` shows, on both stores.
#[tokio::test(flavor = "multi_thread")]
async fn the_status_of_all_jobs_is_each_jobs_status() {
    for kind in [StateKind::Sqlite, StateKind::Postgres] {
        let db = TestDb::new().await;
        tables(&db, 3, 50).await;
        let cfg = ConfigDir::new();
        for i in 0..3 {
            let detect = if i == 0 {
                CURSOR
            } else {
                "strategy = \"diff\""
            };
            cfg.job(
                &format!("copy_{i}"),
                &pg_job(
                    &db.url,
                    &format!("src_{i}"),
                    detect,
                    "size = 20",
                    &db.url,
                    &format!("dst_{i}"),
                ),
            );
        }
        let state = state_url(kind, &cfg, &db);
        cfg.run_once_ok(&state);
        db.exec("DELETE FROM src_1 WHERE id <= 5").await;
        cfg.run_once_ok(&state);
        let paused = cfg.ferry(Some(&state), &["pause", "copy_2"]);
        assert_eq!(code(&paused), 0, "{}", stderr(&paused));
        let json = |args: &[&str]| {
            let mut all = vec!["--output", "json", "status"];
            all.extend_from_slice(args);
            let out = cfg.ferry(Some(&state), &all);
            assert_eq!(code(&out), 0, "{}", stderr(&out));
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")["jobs"].clone()
        };
        let every = json(&[]);
        for i in 0..3 {
            let job = format!("copy_{i}");
            let one = json(&[job.as_str()]);
            assert_eq!(every[i], one[0], "{kind:?}: {job}");
        }
        assert_eq!(every[1]["ledger_objects"], 45, "{kind:?}: {every}");
        assert_eq!(every[2]["paused"], true, "{kind:?}: {every}");
    }
}
