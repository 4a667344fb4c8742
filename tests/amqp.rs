//! The amqp target against the local RabbitMQ: every change one persistent,
//! confirmed message in the bound queue; a repeat run publishes nothing; a
//! dropped connection loses nothing (duplicates only with the same message
//! id).
mod common;

use std::collections::HashMap;

use common::*;
use lapin::options::BasicPublishOptions;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// `rabbitmqctl close_all_connections` closes every connection on the
/// broker, other tests' too: the test that uses it runs alone.
static BROKER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// An exchange and a queue bound to it with `#`, both unique, deleted at
/// the end. Each operation connects anew: the test drops connections.
struct Broker {
    exchange: String,
    queue: String,
}

async fn channel() -> (Connection, Channel) {
    let connection = Connection::connect(URL, ConnectionProperties::default())
        .await
        .expect("RabbitMQ must be running on 127.0.0.1:5672 (see .ci/run)");
    let channel = connection.create_channel().await.expect("channel");
    (connection, channel)
}

impl Broker {
    async fn new() -> Broker {
        let (_connection, channel) = channel().await;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (exchange, queue) = (format!("ferry_t_{id}"), format!("ferry_t_{id}_q"));
        channel
            .exchange_declare(
                &exchange,
                ExchangeKind::Topic,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("exchange");
        channel
            .queue_declare(
                &queue,
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue");
        channel
            .queue_bind(
                &queue,
                &exchange,
                "#",
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        Broker { exchange, queue }
    }

    /// Every message in the queue: (message id, routing key, envelope).
    async fn drain(&self) -> Vec<(String, String, serde_json::Value)> {
        let (_connection, channel) = channel().await;
        let mut out = Vec::new();
        while let Some(m) = channel
            .basic_get(&self.queue, BasicGetOptions::default())
            .await
            .expect("get")
        {
            let id = m
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            let body: serde_json::Value =
                serde_json::from_slice(&m.delivery.data).expect("JSON body");
            out.push((id, m.delivery.routing_key.to_string(), body));
            m.delivery
                .ack(BasicAckOptions::default())
                .await
                .expect("ack");
        }
        out
    }

    /// Messages ready in the queue.
    async fn ready(&self) -> u32 {
        let (_connection, channel) = channel().await;
        channel
            .queue_declare(
                &self.queue,
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .unwrap_or(0)
    }

    async fn delete(&self) {
        let (_connection, channel) = channel().await;
        let _ = channel
            .queue_delete(&self.queue, QueueDeleteOptions::default())
            .await;
        let _ = channel
            .exchange_delete(&self.exchange, ExchangeDeleteOptions::default())
            .await;
    }
}

fn job(db: &TestDb, exchange: &str, batch: &str) -> String {
    format!(
        "[source]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"people\"\nkey = [\"id\"]\n\n\
         [detect]\nstrategy = \"diff\"\nmax_delete_ratio = 1.0\n\n[batch]\n{batch}\n\n\
         [target]\ntype = \"amqp\"\nurl = \"{URL}\"\nexchange = \"{exchange}\"\nrouting_key = \"crm.{{job}}.{{op}}\"\n\n\
         [rules]\nowner = \"source\"\ndeletes = \"propagate\"\n",
        db.url
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_change_is_one_confirmed_message_and_a_repeat_run_sends_none() {
    let _shared = BROKER.read().await;
    let broker = Broker::new().await;
    let db = TestDb::new().await;
    db.exec("CREATE TABLE people (id bigint PRIMARY KEY, email text); INSERT INTO people VALUES (1, 'a@x'), (2, 'b@x'), (3, 'c@x');")
        .await;
    let cfg = ConfigDir::new();
    cfg.job("people", &job(&db, &broker.exchange, ""));
    let state = state_url(StateKind::Sqlite, &cfg, &db);

    cfg.run_once_ok(&state);
    let first = broker.drain().await;
    assert_eq!(first.len(), 3);
    let (id, routing_key, body) = first
        .iter()
        .find(|m| m.2["key"] == serde_json::json!([1]))
        .expect("item 1");
    assert_eq!(routing_key, "crm.people.upsert");
    assert_eq!(body["data"], serde_json::json!({"id": 1, "email": "a@x"}));
    assert_eq!(id, &format!("people-{}", body["version"]));

    cfg.run_once_ok(&state);
    assert!(
        broker.drain().await.is_empty(),
        "a repeat run publishes nothing"
    );

    db.exec("UPDATE people SET email = 'a2@x' WHERE id = 1; DELETE FROM people WHERE id = 3")
        .await;
    cfg.run_once_ok(&state);
    let mut second: Vec<String> = broker
        .drain()
        .await
        .into_iter()
        .map(|m| format!("{} {}", m.1, m.2["key"]))
        .collect();
    second.sort();
    assert_eq!(second, ["crm.people.delete [3]", "crm.people.upsert [1]"]);
    broker.delete().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_connection_loses_no_change() {
    let _alone = BROKER.write().await;
    let broker = Broker::new().await;
    let db = TestDb::new().await;
    db.exec("CREATE TABLE people (id bigint PRIMARY KEY, email text); INSERT INTO people SELECT g, 'p' || g || '@x' FROM generate_series(1, 3000) g;")
        .await;
    let cfg = ConfigDir::new();
    cfg.job(
        "people",
        &job(
            &db,
            &broker.exchange,
            "size = 50\nconcurrency = 1\nbackoff = { initial = \"10ms\", max = \"10ms\" }",
        ),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);

    // Drop ferry's connections while it publishes.
    let mut child = cfg
        .command(Some(&state), &["run", "--once"])
        .spawn()
        .expect("ferry");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut dropped = false;
    while std::time::Instant::now() < deadline && child.try_wait().expect("wait").is_none() {
        let out = std::process::Command::new("rabbitmqctl")
            .args(["close_all_connections", "ferry test drops the connection"])
            .output();
        dropped |= out.is_ok_and(|o| o.status.success());
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let _ = child.wait();
    // Whatever the interrupted run left, the next ones deliver it.
    for _ in 0..3 {
        if code(&cfg.ferry(Some(&state), &["run", "--once"])) == 0 {
            break;
        }
    }
    let messages = broker.drain().await;
    let mut by_id: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for (id, _, body) in messages {
        by_id.entry(id).or_default().push(body);
    }
    let keys: std::collections::HashSet<String> = by_id
        .values()
        .flat_map(|b| b.iter().map(|m| m["key"].to_string()))
        .collect();
    assert_eq!(
        keys.len(),
        3000,
        "every change is in the queue (dropped: {dropped})"
    );
    let duplicates: usize = by_id.values().map(|b| b.len() - 1).sum();
    for bodies in by_id.values() {
        assert!(
            bodies.windows(2).all(|w| w[0] == w[1]),
            "a duplicate is the same message"
        );
    }
    eprintln!("duplicates after dropped connections: {duplicates}");
    broker.delete().await;
}

/// Publishes `bodies` to `queue` through the default exchange, confirmed.
async fn publish(queue: &str, bodies: &[&str]) {
    let (_connection, channel) = channel().await;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    for body in bodies {
        channel
            .basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }
}

fn consumer_job(db: &TestDb, queue: &str) -> String {
    format!(
        "[source]\ntype = \"amqp\"\nurl = \"{URL}\"\nqueue = \"{queue}\"\nkey = [\"id\"]\n\n\
         [target]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"people\"\nkey = [\"id\"]\n\n\
         [fields]\nid = \"id\"\nemail = \"email\"\n\n[rules]\nowner = \"source\"\ndeletes = \"propagate\"\n",
        db.url
    )
}

async fn people(db: &TestDb) -> Vec<String> {
    db.strings("SELECT id || '|' || email FROM people ORDER BY id")
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_into_postgres_and_a_malformed_message_is_dead_with_its_body() {
    let _shared = BROKER.read().await;
    let broker = Broker::new().await;
    let db = TestDb::new().await;
    db.exec("CREATE TABLE people (id bigint PRIMARY KEY, email text)")
        .await;
    let cfg = ConfigDir::new();
    cfg.job("people", &consumer_job(&db, &broker.queue));
    let state = state_url(StateKind::Postgres, &cfg, &db);

    publish(
        &broker.queue,
        &[
            r#"{"id": 1, "email": "a@x"}"#,
            r#"{"id": 2, "email": "b@x"}"#,
            "this is not json",
            r#"{"job":"shop","key":[3],"op":"upsert","version":1,"hash":"0","data":{"id":3,"email":"c@x"}}"#,
        ],
    )
    .await;
    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_ne!(code(&out), 0, "a dead message leaves the job not in sync");
    assert_eq!(people(&db).await, ["1|a@x", "2|b@x", "3|c@x"]);
    let dead = cfg.ferry(
        Some(&state),
        &["tasks", "--state", "dead", "--job", "people"],
    );
    let text = String::from_utf8_lossy(&dead.stdout);
    assert!(text.contains("dead"), "{text}");
    let body = dead_items(&cfg, &state, "people");
    assert!(
        body.contains("this is not json") && body.contains("malformed message: not JSON"),
        "{body}"
    );
    assert!(
        broker.drain().await.is_empty(),
        "every message was acknowledged"
    );

    publish(
        &broker.queue,
        &[
            r#"{"id": 1, "email": "a2@x"}"#,
            r#"{"job":"shop","key":[2],"op":"delete","version":2,"hash":"0"}"#,
        ],
    )
    .await;
    cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(people(&db).await, ["1|a2@x", "3|c@x"]);
    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(changed(&out, "people"), 0, "an empty queue: nothing to do");
    broker.delete().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_between_enqueue_and_ack_the_messages_come_again_and_sync_once() {
    let _shared = BROKER.read().await;
    let broker = Broker::new().await;
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE people (id bigint PRIMARY KEY, email text, writes int NOT NULL DEFAULT 0);",
    )
    .await;
    db.exec(&count_writes("people")).await;
    let cfg = ConfigDir::new();
    cfg.job("people", &consumer_job(&db, &broker.queue));
    let state = state_url(StateKind::Postgres, &cfg, &db);
    publish(
        &broker.queue,
        &[
            r#"{"id": 1, "email": "a@x"}"#,
            r#"{"id": 2, "email": "b@x"}"#,
        ],
    )
    .await;

    kill_at_fault(&cfg, &state, "before-ack");
    assert!(
        people(&db).await.is_empty(),
        "killed before anything was written"
    );
    // The broker gives the unacknowledged messages back once it sees the
    // connection gone.
    assert!(
        eventually(10, || async { broker.ready().await == 2 }).await,
        "the messages are back in the queue"
    );

    // The messages come again (once the killed run's job lease has
    // expired, detection runs); the changes enqueued before the kill are
    // synced, and the redelivered copies are recognised.
    let out = run_after_killed(&cfg, &state);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        changed(&out, "people"),
        0,
        "the redelivered messages are no new changes"
    );
    assert_eq!(synced(&out, "people"), 2);
    let writes: Vec<String> =
        sqlx::query_scalar("SELECT id || ':' || writes FROM people ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .expect("read");
    assert_eq!(writes, ["1:1", "2:1"], "each change applied once");
    assert!(broker.drain().await.is_empty(), "acknowledged now");
    broker.delete().await;
}
