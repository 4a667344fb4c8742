//! Test harness: a fresh PostgreSQL database per test, a temporary config
//! folder, and the real `ferry` binary.
#![allow(dead_code)]

mod mysql_db;
mod proxy;
mod target_db;
mod verify_json;

#[allow(unused_imports)]
pub use mysql_db::{mysql_server, MysqlDb};
#[allow(unused_imports)]
pub use proxy::Proxy;

#[allow(unused_imports)]
pub use target_db::{id_map_fixture, id_map_jobs, target_url, Target, TargetDb, ALL_SQL, BOTH};
#[allow(unused_imports)]
pub use verify_json::{keys, result, verify};

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

    /// The first column of every row, as text.
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        sqlx::query_scalar::<_, String>(sql)
            .fetch_all(&self.pool)
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
        on_own_runtime(async move {
            if let Ok(admin) = PgPoolOptions::new()
                .max_connections(1)
                .connect(&format!("{}/postgres", pg_server()))
                .await
            {
                let _ = admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await;
            }
        });
    }
}

/// Runs `work` to its end on a thread with a runtime of its own: cleanup in
/// `Drop` runs outside the test's runtime.
pub fn on_own_runtime<F: std::future::Future<Output = ()> + Send + 'static>(work: F) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work)
    })
    .join();
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

    /// `ferry run --once` on `state`, which must exit 0.
    pub fn run_once_ok(&self, state: &str) -> Output {
        let out = self.ferry(Some(state), &["run", "--once"]);
        assert_eq!(code(&out), 0, "ferry run --once: {}", stderr(&out));
        out
    }

    /// The `ferry` command. A `run --once` prints its summary as JSON
    /// (unless the test asks for `--output text`), which [`synced`] and the
    /// other summary helpers read.
    pub fn command(&self, state: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.arg("--config").arg(self.path());
        let once = args.first() == Some(&"run") && args.contains(&"--once");
        if once && !args.contains(&"--output") {
            cmd.args(["--output", "json"]);
        }
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

/// Items `job`'s run synced, from a `run --once --output json` summary.
pub fn synced(out: &Output, job: &str) -> u64 {
    summary_field(out, job, "synced")
}

pub fn conflicts(out: &Output, job: &str) -> u64 {
    summary_field(out, job, "conflicts")
}

pub fn changed(out: &Output, job: &str) -> u64 {
    summary_field(out, job, "changed")
}

pub fn failed(out: &Output, job: &str) -> u64 {
    summary_field(out, job, "failed")
}

pub fn superseded(out: &Output, job: &str) -> u64 {
    summary_field(out, job, "superseded")
}

/// Write calls to the target: more than tasks when refused batches were split.
pub fn writes(out: &Output, job: &str) -> u64 {
    summary_field(out, job, "writes")
}

/// The run of `job` in a `run --once --output json` (or `plan`) document.
pub fn summary_run(out: &Output, job: &str) -> serde_json::Value {
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the summary is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let runs = doc
        .get("runs")
        .or_else(|| doc.get("plans"))
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    runs.into_iter()
        .find(|r| r["job"] == job)
        .unwrap_or_else(|| panic!("no run of {job} in {doc}"))
}

fn summary_field(out: &Output, job: &str, field: &str) -> u64 {
    let run = summary_run(out, job);
    run[field]
        .as_u64()
        .unwrap_or_else(|| panic!("`{field}` of {job}: {run}"))
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

/// A free TCP port on loopback for a daemon's HTTP listener.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A `ferry run` daemon started as a process; killed if the test ends first.
pub struct DaemonProc {
    pub child: std::process::Child,
    pub port: u16,
    pub log: PathBuf,
}

impl ConfigDir {
    /// Writes schedules.toml (`[engine] metrics` on a free port, then
    /// `schedules`) and starts the daemon; returns once /healthz answers.
    pub async fn daemon(&self, state: &str, schedules: &str, env: &[(&str, &str)]) -> DaemonProc {
        let port = free_port();
        self.schedules(&format!(
            "[engine]\nmetrics = \"127.0.0.1:{port}\"\n\n[schedules]\n{schedules}\n"
        ));
        self.start_daemon(state, port, env).await
    }

    pub async fn start_daemon(&self, state: &str, port: u16, env: &[(&str, &str)]) -> DaemonProc {
        let log = self
            .path()
            .join(format!("daemon-{}.log", uuid::Uuid::new_v4().simple()));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = self.command(Some(state), &["run", "--grace", "10s"]);
        cmd.env("FERRY_LOG", "info")
            .stderr(file)
            .stdout(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn daemon");
        let d = DaemonProc { child, port, log };
        for _ in 0..100 {
            if d.get("/healthz").await.is_some() {
                return d;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("daemon did not come up:\n{}", d.log_text());
    }
}

impl DaemonProc {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn get(&self, path: &str) -> Option<String> {
        let resp = reqwest::get(self.url(path)).await.ok()?;
        resp.text().await.ok()
    }

    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit code and how long the exit took.
    pub fn terminate(&mut self) -> (i32, std::time::Duration) {
        let started = std::time::Instant::now();
        self.signal("TERM");
        let status = self.child.wait().expect("wait daemon");
        (status.code().unwrap_or(-1), started.elapsed())
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 100 ms until it holds or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// The cursor strategy on `updated_at`, as most tests use it.
pub const CURSOR: &str = "strategy = \"cursor\"\ncursor = \"updated_at\"";

/// A PostgreSQL → PostgreSQL job file: `src` table of `source_url` into
/// `dst` table of `target_url`, keyed by `id`, the source owning every field.
/// `detect` and `batch` are the bodies of those tables.
pub fn pg_job(
    source_url: &str,
    src: &str,
    detect: &str,
    batch: &str,
    target_url: &str,
    dst: &str,
) -> String {
    format!(
        "[source]\ntype = \"postgres\"\nurl = \"{source_url}\"\ntable = \"{src}\"\nkey = [\"id\"]\n\n\
         [detect]\n{detect}\n\n[batch]\n{batch}\n\n\
         [target]\ntype = \"postgres\"\nurl = \"{target_url}\"\ntable = \"{dst}\"\nkey = [\"id\"]\n\n\
         [rules]\nowner = \"source\"\ndeletes = \"propagate\"\n"
    )
}

/// A diff job from table `src` into `dst` (both in `db_url`) whose every
/// read of the source takes `seconds` longer: runs that are surely in
/// flight at once.
pub fn slow_job(db_url: &str, src: &str, seconds: f64, dst: &str) -> String {
    let source = format!("SELECT s.* FROM {src} s CROSS JOIN (SELECT pg_sleep({seconds})) AS z");
    pg_job(
        db_url,
        "x",
        "strategy = \"diff\"",
        "size = 100",
        db_url,
        dst,
    )
    .replace("table = \"x\"", &format!("query = \"{source}\""))
}

/// `job` with every row queued as an item, never in chunk tasks: for the
/// tests of the per-item queue's own mechanics (a first run fills it).
pub fn items_only(job: &str) -> String {
    format!("{job}\n[snapshot]\nchunk_rows = 0\n")
}

/// SQL for a `writes` counter on `table` (an int column it must have),
/// raised by a trigger on every insert and update: how tests see that a
/// change was applied exactly once.
pub fn count_writes(table: &str) -> String {
    format!(
        "CREATE FUNCTION count_writes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.writes = COALESCE(OLD.writes, 0) + 1; RETURN NEW; END $$;
         CREATE TRIGGER count_writes BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION count_writes();"
    )
}

/// Starts `run --once` with `FERRY_FAULT=<mode>-<point>` (`pause` or
/// `stop`) and the extra `env`, and returns it once it has reached `point`.
pub fn spawn_at_fault(
    cfg: &ConfigDir,
    state: &str,
    mode: &str,
    point: &str,
    env: &[(&str, &str)],
) -> std::process::Child {
    spawn_command_at_fault(cfg, state, &["run", "--once"], mode, point, env)
}

/// [`spawn_at_fault`] for any `ferry` command; its stdout is piped, for
/// `wait_with_output` once it is resumed.
pub fn spawn_command_at_fault(
    cfg: &ConfigDir,
    state: &str,
    args: &[&str],
    mode: &str,
    point: &str,
    env: &[(&str, &str)],
) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    let mut child = cfg
        .command(Some(state), args)
        .env("FERRY_FAULT", format!("{mode}-{point}"))
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let log = child.stderr.take().expect("stderr");
    assert!(
        BufReader::new(log)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains(&format!("fault point {point}"))),
        "ferry never reached the fault point {point}"
    );
    child
}

/// Whether process `pid` is stopped (SIGSTOP).
pub fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_default()
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        == Some("T")
}

/// Resumes a process stopped at a `stop-<point>` fault. It stops itself
/// with `kill -STOP` after saying so, so a SIGCONT sent on the line alone
/// could come first and be lost: this waits for the stop (10 s at most).
pub fn resume(pid: u32) {
    for _ in 0..1000 {
        if stopped(pid) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let status = Command::new("kill")
        .arg("-CONT")
        .arg(pid.to_string())
        .status()
        .expect("kill -CONT");
    assert!(status.success(), "kill -CONT {pid}");
}

/// Starts `run --once` with a 1 s job lease, waits until it reaches the
/// fault point `point` (where it pauses), and kills it there.
pub fn kill_at_fault(cfg: &ConfigDir, state: &str, point: &str) {
    let mut child = spawn_at_fault(cfg, state, "pause", point, &[("FERRY_JOB_LEASE", "1s")]);
    child.kill().expect("kill");
    child.wait().expect("wait");
}

/// `run --once` after the job lease of a run killed by [`kill_at_fault`]
/// has expired, so that this one detects.
pub fn run_after_killed(cfg: &ConfigDir, state: &str) -> Output {
    std::thread::sleep(std::time::Duration::from_millis(1500));
    cfg.command(Some(state), &["run", "--once"])
        .env("FERRY_JOB_LEASE", "1s")
        .output()
        .expect("run")
}

/// The ids `ferry tasks` lists for its filters (`--state`, `--job`), newest first.
pub fn task_ids(cfg: &ConfigDir, state: &str, filters: &[&str]) -> Vec<String> {
    let args: Vec<&str> = ["--output", "json", "tasks"]
        .into_iter()
        .chain(filters.iter().copied())
        .collect();
    let list = cfg.ferry(Some(state), &args);
    let doc: serde_json::Value = serde_json::from_slice(&list.stdout).expect("tasks as JSON");
    doc["tasks"]
        .as_array()
        .expect("a tasks list")
        .iter()
        .map(|t| t["id"].to_string())
        .collect()
}

/// The items of `job`'s oldest dead task, as `ferry tasks show` prints them.
pub fn dead_items(cfg: &ConfigDir, state: &str, job: &str) -> String {
    let ids = task_ids(cfg, state, &["--state", "dead", "--job", job]);
    let Some(id) = ids.last() else {
        return format!("no dead task of {job}");
    };
    let shown = cfg.ferry(Some(state), &["tasks", "show", id]);
    String::from_utf8_lossy(&shown.stdout).into_owned()
}
