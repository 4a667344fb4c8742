//! Test harness: a fresh PostgreSQL database per test, a temporary config
//! folder, and the real `ferry` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};

pub fn pg_server() -> String {
    std::env::var("FERRY_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let name = format!("ferry_t_{}", uuid::Uuid::new_v4().simple());
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&format!("{}/postgres", pg_server()))
            .await
            .expect("PostgreSQL must be running on 127.0.0.1:5432 (see .ci/run)");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        admin.close().await;
        let url = format!("{}/{name}", pg_server());
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("connect test database");
        TestDb { name, url, pool }
    }

    pub async fn exec(&self, sql: &str) {
        sqlx::raw_sql(sql)
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Rows in one query's result and not the other's, both ways.
    pub async fn difference(&self, a: &str, b: &str) -> i64 {
        self.count(&format!(
            "SELECT count(*) FROM (({a} EXCEPT ALL {b}) UNION ALL ({b} EXCEPT ALL {a})) d"
        ))
        .await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside the test's runtime: a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(admin) = PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&format!("{}/postgres", pg_server()))
                    .await
                {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            })
        })
        .join();
    }
}

/// A config folder with `jobs/` and an optional `schedules.toml`.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new() -> ConfigDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("jobs")).expect("jobs dir");
        ConfigDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn job(&self, name: &str, toml: &str) -> &Self {
        std::fs::write(self.path().join("jobs").join(format!("{name}.toml")), toml)
            .expect("write job");
        self
    }

    pub fn schedules(&self, toml: &str) -> &Self {
        std::fs::write(self.path().join("schedules.toml"), toml).expect("write schedules");
        self
    }

    pub fn file(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, content).expect("write file");
        p
    }

    /// `ferry --config DIR ARGS…` with `--state` when given.
    pub fn ferry(&self, state: Option<&str>, args: &[&str]) -> Output {
        let out = self.command(state, args).output().expect("run ferry");
        eprintln!(
            "$ ferry {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn command(&self, state: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.arg("--config").arg(self.path());
        if let Some(s) = state {
            cmd.arg("--state").arg(s);
        }
        cmd.args(args)
            .env_remove("FERRY_STATE_URL")
            .env_remove("FERRY_CONFIG")
            .env("FERRY_LOG", "warn");
        cmd
    }
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The SYNCED column of `job`'s line in a `run --once` summary.
pub fn synced(out: &Output, job: &str) -> u64 {
    summary_column(out, job, 4)
}

pub fn changed(out: &Output, job: &str) -> u64 {
    summary_column(out, job, 3)
}

fn summary_column(out: &Output, job: &str, column: usize) -> u64 {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(job))
        .unwrap_or_else(|| panic!("no summary line for {job} in:\n{stdout}"));
    line.split_whitespace()
        .nth(column)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad summary line: {line}"))
}

/// The state store to use: a SQLite file in the config folder, or the test database.
#[derive(Debug, Clone, Copy)]
pub enum StateKind {
    Sqlite,
    Postgres,
}

pub fn state_url(kind: StateKind, cfg: &ConfigDir, db: &TestDb) -> String {
    match kind {
        StateKind::Sqlite => format!("sqlite://{}", cfg.path().join("state.db").display()),
        StateKind::Postgres => db.url.clone(),
    }
}
