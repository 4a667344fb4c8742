//! Errors are classified and fast: a system that refuses our credentials or
//! has no such database exits 78 every time (a change of configuration is
//! needed), naming the system and its redacted URL; one where nothing listens
//! exits 75 at once with `connection refused: HOST:PORT (role)`. Each against
//! a real server.
mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

const RULES: &str = "[rules]\nowner = \"source\"\ndeletes = \"propagate\"\n";

/// A PostgreSQL source table `src` of 10 rows.
async fn source(db: &TestDb) {
    db.exec(
        "CREATE TABLE src (id bigint PRIMARY KEY, name text);
         INSERT INTO src SELECT g, 'n' || g FROM generate_series(1, 10) g;",
    )
    .await;
}

fn source_section(db: &TestDb) -> String {
    format!(
        "[source]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"src\"\nkey = [\"id\"]\n[detect]\nstrategy = \"diff\"\n",
        db.url
    )
}

/// `run --once` twice (the second must say the same: nothing is retried
/// into a different answer); the first output.
fn run_twice(cfg: &ConfigDir, state: &str) -> Output {
    let first = cfg.ferry(Some(state), &["run", "--once"]);
    let second = cfg.ferry(Some(state), &["run", "--once"]);
    assert_eq!(code(&first), code(&second), "{}", stderr(&second));
    first
}

/// A job from `db`'s source into `target` (the body of a `[target]`), run
/// twice: both runs exit 78, naming `system` and `detail`.
fn target_refuses(db: &TestDb, target: &str, system: &str, detail: &str) -> Output {
    let cfg = ConfigDir::new();
    cfg.job(
        "j",
        &format!("{}[target]\n{target}\n{RULES}", source_section(db)),
    );
    let state = state_url(StateKind::Sqlite, &cfg, db);
    let out = run_twice(&cfg, &state);
    assert_refused(&out, system, detail);
    out
}

fn assert_refused(out: &Output, system: &str, detail: &str) {
    assert_eq!(code(out), 78, "{}", stderr(out));
    let err = stderr(out);
    assert!(
        err.contains(system) && err.contains(detail) && err.contains("refused access"),
        "expected `{system}` … `{detail}`:\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_unknown_database_and_role_exit_78_every_time() {
    let db = TestDb::new().await;
    source(&db).await;
    for (url, detail) in [
        (
            format!("{}/ferry_no_such_db_{}", pg_server(), std::process::id()),
            "does not exist",
        ),
        (
            "postgres://ferry_no_such_role:pw@127.0.0.1:5432/postgres".to_string(),
            "role \"ferry_no_such_role\" does not exist",
        ),
    ] {
        let out = target_refuses(
            &db,
            &format!("type = \"postgres\"\nurl = \"{url}\"\ntable = \"dst\"\nkey = [\"id\"]"),
            "postgres postgres://",
            detail,
        );
        assert!(!stderr(&out).contains(":pw@"), "no password in messages");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_store_with_no_such_database_exits_78() {
    let cfg = ConfigDir::new();
    cfg.job("j", "[source]\ntype = \"file\"\npath = \"a.csv\"\nkey = [\"id\"]\n[target]\ntype = \"file\"\npath = \"out\"\nformat = \"jsonl\"\n[rules]\nowner = \"source\"\n");
    let state = format!("{}/ferry_no_such_state_{}", pg_server(), std::process::id());
    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(stderr(&out).contains("state store"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_wrong_password_and_unknown_database_exit_78() {
    let db = TestDb::new().await;
    source(&db).await;
    for (url, detail) in [
        ("mysql://root:wrong@127.0.0.1:3306/test", "Access denied"),
        (
            "mysql://root@127.0.0.1:3306/ferry_no_such_db",
            "Unknown database",
        ),
    ] {
        let out = target_refuses(
            &db,
            &format!("type = \"mysql\"\nurl = \"{url}\"\ntable = \"dst\"\nkey = [\"id\"]"),
            "mysql mysql://",
            detail,
        );
        assert!(!stderr(&out).contains("wrong"), "no password in messages");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_access_refused_exits_78() {
    let db = TestDb::new().await;
    source(&db).await;
    target_refuses(
        &db,
        "type = \"amqp\"\nurl = \"amqp://guest:wrong@127.0.0.1:5672/%2f\"\nexchange = \"\"\nrouting_key = \"ferry_none\"",
        "amqp",
        "ACCESS_REFUSED",
    );
}

/// A child process that ends with the test, passed or failed.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_authorization_violation_exits_78() {
    // A NATS server of the test's own that requires a user.
    let port = free_port();
    // Where Debian's package puts it (.ci/run starts the machine's from there).
    let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nats-server");
    let server = std::process::Command::new(binary)
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--user",
            "ferry",
            "--pass",
            "right",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server must be installed (bash .ci/run installs the machine's services)");
    let _server = KillOnDrop(server);
    let up = eventually(10, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "nats-server did not start");
    let db = TestDb::new().await;
    source(&db).await;
    target_refuses(
        &db,
        &format!(
            "type = \"nats\"\nurl = \"nats://ferry:wrong@127.0.0.1:{port}\"\nsubject = \"ferry.x\""
        ),
        "nats",
        "authorization",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_401_and_403_exit_78_and_keep_the_items_queued() {
    for status in [401u16, 403] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route(
            "/items",
            axum::routing::post(move || async move {
                (
                    axum::http::StatusCode::from_u16(status).expect("status"),
                    "no entry",
                )
            }),
        );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let db = TestDb::new().await;
        source(&db).await;
        let cfg = ConfigDir::new();
        cfg.job(
            "j",
            &format!(
                "{}[target]\ntype = \"http\"\nurl = \"http://{addr}/items\"\n{RULES}",
                source_section(&db)
            ),
        );
        let state = state_url(StateKind::Sqlite, &cfg, &db);
        assert_refused(&run_twice(&cfg, &state), "http", &status.to_string());
        // Nothing went dead: the items wait for the configuration to be fixed.
        assert!(task_ids(&cfg, &state, &["--state", "dead"]).is_empty());
        server.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_listening_is_reported_at_once_for_source_target_and_state_store() {
    let db = TestDb::new().await;
    source(&db).await;
    let port = free_port();
    let nowhere = format!("postgres://postgres@127.0.0.1:{port}/x");
    let cases = [
        (
            "target",
            format!(
                "{}[target]\ntype = \"postgres\"\nurl = \"{nowhere}\"\ntable = \"dst\"\nkey = [\"id\"]\n{RULES}",
                source_section(&db)
            ),
            None,
        ),
        (
            "source",
            format!(
                "[source]\ntype = \"postgres\"\nurl = \"{nowhere}\"\ntable = \"src\"\nkey = [\"id\"]\n[target]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"dst\"\nkey = [\"id\"]\n{RULES}",
                db.url
            ),
            None,
        ),
        (
            "state store",
            format!(
                "{}[target]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"dst\"\nkey = [\"id\"]\n{RULES}",
                source_section(&db),
                db.url
            ),
            Some(nowhere.clone()),
        ),
    ];
    for (role, job, state) in cases {
        let cfg = ConfigDir::new();
        cfg.job("j", &job);
        let state = state.unwrap_or_else(|| state_url(StateKind::Sqlite, &cfg, &db));
        let started = Instant::now();
        let out = cfg.ferry(Some(&state), &["run", "--once"]);
        let took = started.elapsed();
        assert_eq!(code(&out), 75, "{role}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("connection refused: 127.0.0.1:{port} ({role})")),
            "{role}: {}",
            stderr(&out)
        );
        assert!(took < Duration::from_secs(3), "{role}: took {took:?}");
    }
}
