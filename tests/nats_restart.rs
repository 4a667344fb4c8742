//! The nats target while the NATS server restarts mid-run: no acknowledged
//! change is lost, unacknowledged ones are sent again, and the stream's
//! `Nats-Msg-Id` deduplication keeps one message per change. A test binary
//! of its own: it restarts the machine's NATS server, which no other test
//! may be using meanwhile (cargo runs test binaries one after another).
mod common;

use std::process::Command;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use common::*;

const URL: &str = "nats://127.0.0.1:4222";

fn port_open() -> bool {
    std::net::TcpStream::connect("127.0.0.1:4222").is_ok()
}

fn stop_server() {
    let _ = Command::new("pkill").args(["-x", "nats-server"]).status();
    for _ in 0..50 {
        if !port_open() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The machine's NATS as `.ci/run` starts it (JetStream keeps its streams on disk).
fn start_server() {
    let _ = Command::new("start-stop-daemon")
        .args([
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/nats-server",
            "--",
            "-a",
            "127.0.0.1",
            "-p",
            "4222",
            "-js",
            "-sd",
            "/var/lib/nats-server",
            "-l",
            "/var/log/nats-server.log",
        ])
        .status();
    for _ in 0..100 {
        if port_open() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("NATS did not come back on 127.0.0.1:4222");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_restart_mid_run_loses_no_change_and_duplicates_none() {
    let client = async_nats::connect(URL)
        .await
        .expect("NATS must be running on 127.0.0.1:4222 (see .ci/run)");
    let js = jetstream::new(client);
    let name = format!("ferry_t_{}", uuid::Uuid::new_v4().simple());
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{name}.>")],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("stream");

    let db = TestDb::new().await;
    db.exec("CREATE TABLE people (id bigint PRIMARY KEY, email text); INSERT INTO people SELECT g, 'p' || g || '@x' FROM generate_series(1, 3000) g;")
        .await;
    let cfg = ConfigDir::new();
    cfg.job(
        "people",
        &format!(
            "[source]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"people\"\nkey = [\"id\"]\n\n\
             [detect]\nstrategy = \"diff\"\n\n[batch]\nsize = 50\nconcurrency = 1\nbackoff = {{ initial = \"10ms\", max = \"10ms\" }}\n\n\
             [target]\ntype = \"nats\"\nurl = \"{URL}\"\nsubject = \"{name}.{{job}}\"\n\n\
             [rules]\nowner = \"source\"\n",
            db.url
        ),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);

    let mut child = cfg
        .command(Some(&state), &["run", "--once"])
        .spawn()
        .expect("ferry");
    // Stop the server once the first changes are in the stream.
    let mut at_stop = 0;
    for _ in 0..200 {
        at_stop = js
            .get_stream(&name)
            .await
            .expect("stream")
            .info()
            .await
            .expect("info")
            .state
            .messages;
        if at_stop > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_server();
    std::thread::sleep(Duration::from_millis(500));
    start_server();
    let first = child.wait().expect("wait");
    // Whatever the interrupted run left, the next ones deliver it.
    let mut runs = vec![first.code()];
    for _ in 0..5 {
        let out = cfg.ferry(Some(&state), &["run", "--once"]);
        runs.push(out.status.code());
        if code(&out) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(runs.last(), Some(&Some(0)), "runs: {runs:?}");

    let client = async_nats::connect(URL).await.expect("reconnect");
    let js = jetstream::new(client);
    let mut s = js.get_stream(&name).await.expect("stream");
    let messages = s.info().await.expect("info").state.messages;
    eprintln!("runs {runs:?}: stopped at {at_stop} messages; {messages} messages for 3000 changes");
    assert!(at_stop < 3000, "the restart came before the run was over");
    assert_eq!(
        messages, 3000,
        "one message per change: none lost, resends deduplicated by Nats-Msg-Id"
    );
    let _ = js.delete_stream(&name).await;
}
