//! The nats connector against the local NATS JetStream: as target (each
//! change one acknowledged message, deduplicated by `Nats-Msg-Id`, none on a
//! repeat run) and as source (a durable pull consumer; a malformed message
//! goes dead with its body; a kill between enqueue and ack redelivers and
//! syncs once).
mod common;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use common::*;
use futures::StreamExt;

const URL: &str = "nats://127.0.0.1:4222";

/// A stream of its own taking `<name>.>`, deleted at the end.
struct Stream {
    js: jetstream::Context,
    name: String,
}

impl Stream {
    async fn new() -> Stream {
        let client = async_nats::connect(URL)
            .await
            .expect("NATS must be running on 127.0.0.1:4222 (see .ci/run)");
        let js = jetstream::new(client);
        let name = format!("ferry_t_{}", uuid::Uuid::new_v4().simple());
        js.create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            ..Default::default()
        })
        .await
        .expect("stream");
        Stream { js, name }
    }

    async fn count(&self) -> u64 {
        let mut s = self.js.get_stream(&self.name).await.expect("stream");
        s.info().await.expect("info").state.messages
    }

    /// Every message in the stream, as (subject, envelope).
    async fn messages(&self) -> Vec<(String, serde_json::Value)> {
        let s = self.js.get_stream(&self.name).await.expect("stream");
        let reader = s
            .create_consumer(consumer::pull::Config::default())
            .await
            .expect("reader");
        let mut out = Vec::new();
        let mut batch = reader
            .fetch()
            .max_messages(10_000)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .expect("fetch");
        while let Some(m) = batch.next().await {
            let m = m.expect("message");
            out.push((
                m.subject.to_string(),
                serde_json::from_slice(&m.payload).unwrap_or(serde_json::Value::Null),
            ));
        }
        out
    }

    async fn publish(&self, subject: &str, bodies: &[&str]) {
        for body in bodies {
            self.js
                .publish(format!("{}.{subject}", self.name), body.to_string().into())
                .await
                .expect("publish")
                .await
                .expect("ack");
        }
    }

    async fn delete(&self) {
        let _ = self.js.delete_stream(&self.name).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_change_is_one_acknowledged_message_and_a_repeat_run_sends_none() {
    let stream = Stream::new().await;
    let db = TestDb::new().await;
    db.exec("CREATE TABLE people (id bigint PRIMARY KEY, email text); INSERT INTO people VALUES (1, 'a@x'), (2, 'b@x'), (3, 'c@x');")
        .await;
    let cfg = ConfigDir::new();
    cfg.job(
        "people",
        &format!(
            "[source]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"people\"\nkey = [\"id\"]\n\n\
             [detect]\nstrategy = \"diff\"\nmax_delete_ratio = 1.0\n\n\
             [target]\ntype = \"nats\"\nurl = \"{URL}\"\nsubject = \"{}.{{job}}.{{op}}\"\n\n\
             [rules]\nowner = \"source\"\ndeletes = \"propagate\"\n",
            db.url, stream.name
        ),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    cfg.run_once_ok(&state);
    assert_eq!(stream.count().await, 3);
    cfg.run_once_ok(&state);
    assert_eq!(stream.count().await, 3, "a repeat run publishes nothing");
    db.exec("UPDATE people SET email = 'a2@x' WHERE id = 1; DELETE FROM people WHERE id = 3")
        .await;
    cfg.run_once_ok(&state);
    let messages = stream.messages().await;
    assert_eq!(messages.len(), 5);
    let last_of_1 = messages
        .iter()
        .rev()
        .find(|m| m.1["key"] == serde_json::json!([1]))
        .expect("key 1");
    assert_eq!(last_of_1.0, format!("{}.people.upsert", stream.name));
    assert_eq!(last_of_1.1["data"]["email"], "a2@x");
    assert!(messages
        .iter()
        .any(|m| m.0 == format!("{}.people.delete", stream.name)
            && m.1["key"] == serde_json::json!([3])));
    stream.delete().await;
}

fn consumer_job(db: &TestDb, stream: &Stream) -> String {
    format!(
        "[source]\ntype = \"nats\"\nurl = \"{URL}\"\nstream = \"{name}\"\nconsumer = \"ferry\"\nsubject = \"{name}.in\"\nkey = [\"id\"]\n\n\
         [target]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"people\"\nkey = [\"id\"]\n\n\
         [fields]\nid = \"id\"\nemail = \"email\"\n\n[rules]\nowner = \"source\"\ndeletes = \"propagate\"\n",
        db.url,
        name = stream.name
    )
}

async fn people(db: &TestDb) -> Vec<String> {
    db.strings("SELECT id || '|' || email FROM people ORDER BY id")
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_into_postgres_and_a_kill_between_enqueue_and_ack_syncs_once() {
    let stream = Stream::new().await;
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE people (id bigint PRIMARY KEY, email text, writes int NOT NULL DEFAULT 0);",
    )
    .await;
    db.exec(&count_writes("people")).await;
    // The durable consumer, made ahead with a short ack wait, so that the
    // test sees a redelivery within a second.
    stream
        .js
        .get_stream(&stream.name)
        .await
        .expect("stream")
        .create_consumer(consumer::pull::Config {
            durable_name: Some("ferry".to_string()),
            filter_subject: format!("{}.in", stream.name),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let cfg = ConfigDir::new();
    cfg.job("people", &consumer_job(&db, &stream));
    let state = state_url(StateKind::Postgres, &cfg, &db);

    stream
        .publish(
            "in",
            &[
                r#"{"id": 1, "email": "a@x"}"#,
                "not json",
                r#"{"id": 2, "email": "b@x"}"#,
            ],
        )
        .await;
    kill_at_fault(&cfg, &state, "before-ack");
    assert!(people(&db).await.is_empty());

    let out = run_after_killed(&cfg, &state);
    assert_ne!(code(&out), 0, "the malformed message is dead");
    assert_eq!(
        changed(&out, "people"),
        0,
        "redelivered messages are no new changes: {}",
        stderr(&out)
    );
    let writes: Vec<String> =
        sqlx::query_scalar("SELECT id || ':' || writes FROM people ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .expect("read");
    assert_eq!(writes, ["1:1", "2:1"], "each change applied once");
    let dead = dead_items(&cfg, &state, "people");
    assert!(dead.contains("not json"), "{dead}");

    stream
        .publish(
            "in",
            &[r#"{"job":"x","key":[2],"op":"delete","version":9,"hash":"0"}"#],
        )
        .await;
    // The dead message keeps the job "not in sync" (exit 1) until handled.
    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(changed(&out, "people"), 1, "{}", stderr(&out));
    assert_eq!(people(&db).await, ["1|a@x"]);
    stream.delete().await;
}

/// `[target] stream` is honoured: a stream that does not exist, or that
/// does not take the job's subjects, stops the run before anything is sent;
/// the right one stores every message.
#[tokio::test(flavor = "multi_thread")]
async fn the_target_stream_must_exist_and_take_the_subjects() {
    let stream = Stream::new().await;
    let other = Stream::new().await;
    let db = TestDb::new().await;
    db.exec("CREATE TABLE people (id bigint PRIMARY KEY, email text); INSERT INTO people VALUES (1, 'a@x'), (2, 'b@x');")
        .await;
    let job = |stream_name: &str| {
        format!(
            "[source]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"people\"\nkey = [\"id\"]\n\n\
             [target]\ntype = \"nats\"\nurl = \"{URL}\"\nsubject = \"{}.{{job}}.{{op}}\"\nstream = \"{stream_name}\"\n\n\
             [rules]\nowner = \"source\"\ndeletes = \"propagate\"\n",
            db.url, stream.name
        )
    };
    for (named, expected) in [
        ("ferry_no_such_stream".to_string(), "does not exist"),
        (other.name.clone(), "does not take subject"),
    ] {
        let cfg = ConfigDir::new();
        cfg.job("people", &job(&named));
        let state = state_url(StateKind::Sqlite, &cfg, &db);
        let out = cfg.ferry(Some(&state), &["run", "--once"]);
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("stream `{named}`")) && stderr(&out).contains(expected),
            "{}",
            stderr(&out)
        );
        assert_eq!(stream.count().await, 0);
        assert_eq!(other.count().await, 0);
    }
    let cfg = ConfigDir::new();
    cfg.job("people", &job(&stream.name));
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    cfg.run_once_ok(&state);
    assert_eq!(stream.count().await, 2);
    stream.delete().await;
    other.delete().await;
}
