//! The targets under test, each set up on its real system, and what each
//! holds read back in one shape: the rows it keeps by id, or, for targets
//! that receive every change as a record, the envelopes it got (folded into
//! rows by version when a behaviour asks what the target now reflects).
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, consumer, stream};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use redis::AsyncCommands;
use serde_json::Value;

use crate::common::*;

/// Every target kind of this build: the suite runs each behaviour on each.
pub const KINDS: [&str; 8] = [
    "postgres", "mysql", "sqlite", "file", "http", "amqp", "nats", "redis",
];

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const NATS: &str = "nats://127.0.0.1:4222";
const REDIS: &str = "redis://127.0.0.1:6379";

/// A row as a target holds it (or as the envelopes make it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub name: Option<String>,
    pub note: Option<String>,
    pub tier: Option<String>,
    /// Marked deleted (soft deletes).
    pub deleted: bool,
}

/// One change a record target received.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// What identifies this copy as a repeat (message id, idempotency
    /// key), or the version where the target has none.
    pub id: String,
    pub envelope: Value,
}

/// What the HTTP API saw: refuses a request holding a `poison` name.
#[derive(Default)]
struct Api {
    accepted: Vec<Envelope>,
}

async fn items(
    State(api): State<Arc<Mutex<Api>>>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let list = body["items"].as_array().cloned().unwrap_or_default();
    if list.iter().any(|i| i["data"]["name"] == "poison") {
        return (StatusCode::UNPROCESSABLE_ENTITY, "poison refused").into_response();
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // The lock is never held across an await, so it cannot be poisoned by one.
    let mut api = api.lock().expect("api lock");
    for item in list {
        api.accepted.push(Envelope {
            id: format!("{key}/{}", item["version"]),
            envelope: item,
        });
    }
    StatusCode::OK.into_response()
}

enum Sink<'a> {
    Sql(TargetDb<'a>, Target),
    File(PathBuf),
    Http(Arc<Mutex<Api>>, SocketAddr),
    Amqp(String),
    Nats(jetstream::Context, String),
    Redis(redis::aio::MultiplexedConnection, String),
}

/// A target of one kind, set up for a job named `people`.
pub struct Under<'a> {
    pub kind: &'static str,
    sink: Sink<'a>,
    /// Records received so far (a queue is drained as it is read).
    received: Mutex<Vec<Envelope>>,
}

impl<'a> Under<'a> {
    pub async fn new(kind: &'static str, cfg: &ConfigDir, db: &'a TestDb) -> Under<'a> {
        let unique = format!("ferry_t_{}", uuid::Uuid::new_v4().simple());
        let sink = match kind {
            "postgres" | "sqlite" | "mysql" => {
                let target = match kind {
                    "postgres" => Target::Postgres,
                    "sqlite" => Target::Sqlite,
                    _ => Target::Mysql,
                };
                let sql = TargetDb::new(target, cfg, db).await;
                sql.exec(&table_ddl(target, "people_t")).await;
                Sink::Sql(sql, target)
            }
            "file" => Sink::File(cfg.path().join("out")),
            "http" => {
                let api = Arc::new(Mutex::new(Api::default()));
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("addr");
                let app = axum::Router::new()
                    .route("/items", axum::routing::post(items))
                    .with_state(api.clone());
                tokio::spawn(async move { axum::serve(listener, app).await });
                Sink::Http(api, addr)
            }
            "amqp" => {
                let channel = amqp_channel().await;
                let durable = QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                };
                channel
                    .queue_declare(&unique, durable, FieldTable::default())
                    .await
                    .expect("queue");
                Sink::Amqp(unique)
            }
            "nats" => {
                let client = async_nats::connect(NATS)
                    .await
                    .expect("NATS must be running on 127.0.0.1:4222 (see .ci/run)");
                let js = jetstream::new(client);
                js.create_stream(stream::Config {
                    name: unique.clone(),
                    subjects: vec![format!("{unique}.>")],
                    ..Default::default()
                })
                .await
                .expect("stream");
                Sink::Nats(js, unique)
            }
            "redis" => {
                let client = redis::Client::open(REDIS).expect("url");
                let connection = client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("Redis must be running on 127.0.0.1:6379 (see .ci/run)");
                Sink::Redis(connection, unique)
            }
            other => panic!("no conformance set-up for a `{other}` target"),
        };
        Under {
            kind,
            sink,
            received: Mutex::new(Vec::new()),
        }
    }

    /// The `[target]` section of a job writing here: `table` and `key` for
    /// the SQL targets; `key` names the objects' key for the others.
    pub fn target_toml(&self, table: &str, key: &str) -> String {
        let own = match &self.sink {
            Sink::Sql(sql, _) => format!(
                "type = \"{}\"\nurl = \"{}\"\ntable = \"{table}\"",
                self.kind,
                sql.url()
            ),
            Sink::File(dir) => format!(
                "type = \"file\"\npath = \"{}\"\nformat = \"jsonl\"",
                dir.display()
            ),
            Sink::Http(_, addr) => format!("type = \"http\"\nurl = \"http://{addr}/items\""),
            Sink::Amqp(queue) => {
                format!(
                    "type = \"amqp\"\nurl = \"{AMQP}\"\nexchange = \"\"\nrouting_key = \"{queue}\""
                )
            }
            Sink::Nats(_, stream) => {
                format!("type = \"nats\"\nurl = \"{NATS}\"\nsubject = \"{stream}.{{op}}\"\nstream = \"{stream}\"")
            }
            Sink::Redis(_, stream) => {
                format!("type = \"redis\"\nurl = \"{REDIS}\"\nstream = \"{stream}\"")
            }
        };
        format!("{own}\nkey = [\"{key}\"]")
    }

    pub fn sql(&self) -> Option<&TargetDb<'a>> {
        match &self.sink {
            Sink::Sql(sql, _) => Some(sql),
            _ => None,
        }
    }

    /// Creates another table shaped like `people_t` (SQL targets).
    pub async fn create_table(&self, ddl: impl Fn(Target) -> String) {
        if let Sink::Sql(sql, target) = &self.sink {
            sql.exec(&ddl(*target)).await;
        }
    }

    /// The rows of `table` by id (SQL targets), or every record received
    /// folded by version into the rows it describes.
    pub async fn rows(&self, table: &str) -> BTreeMap<i64, Row> {
        match &self.sink {
            Sink::Sql(sql, target) => sql_rows(sql, *target, table).await,
            _ => fold(&self.records().await),
        }
    }

    /// Every record received so far, in arrival order (record targets).
    pub async fn records(&self) -> Vec<Envelope> {
        let fresh = match &self.sink {
            Sink::Sql(..) => panic!("a SQL target keeps rows, not records"),
            Sink::File(dir) => {
                // Files are read whole each time: forget what was read.
                self.received.lock().expect("lock").clear();
                file_records(dir)
            }
            Sink::Http(api, _) => {
                self.received.lock().expect("lock").clear();
                api.lock().expect("api lock").accepted.clone()
            }
            Sink::Amqp(queue) => amqp_records(queue).await,
            Sink::Nats(js, stream) => {
                self.received.lock().expect("lock").clear();
                nats_records(js, stream).await
            }
            Sink::Redis(connection, stream) => {
                self.received.lock().expect("lock").clear();
                redis_records(connection, stream).await
            }
        };
        let mut received = self.received.lock().expect("lock");
        received.extend(fresh);
        received.clone()
    }

    /// Removes what the test made on shared servers.
    pub async fn clean(&self) {
        match &self.sink {
            Sink::Amqp(queue) => {
                let channel = amqp_channel().await;
                let _ = channel
                    .queue_delete(queue, QueueDeleteOptions::default())
                    .await;
            }
            Sink::Nats(js, stream) => {
                let _ = js.delete_stream(stream).await;
            }
            Sink::Redis(connection, stream) => {
                let mut c = connection.clone();
                let markers: Vec<String> = c
                    .keys(format!("ferry:sent:{stream}:*"))
                    .await
                    .unwrap_or_default();
                let _: Result<(), _> = c.del(stream).await;
                if !markers.is_empty() {
                    let _: Result<(), _> = c.del(markers).await;
                }
            }
            _ => {}
        }
    }
}

/// `people_t`-shaped table: a CHECK refuses the name `poison`, and
/// `deleted_at` takes soft deletes.
fn table_ddl(target: Target, table: &str) -> String {
    match target {
        Target::Postgres => format!("CREATE TABLE {table} (id bigint PRIMARY KEY, name text CHECK (name IS DISTINCT FROM 'poison'), note text, tier text, deleted_at timestamptz)"),
        Target::Sqlite => format!("CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT CHECK (name IS NOT 'poison'), note TEXT, tier TEXT, deleted_at TEXT)"),
        Target::Mysql => format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, name TEXT, note TEXT, tier TEXT, deleted_at DATETIME(6) NULL, CHECK (name <> 'poison'))"),
    }
}

async fn sql_rows(sql: &TargetDb<'_>, target: Target, table: &str) -> BTreeMap<i64, Row> {
    let query = match target {
        Target::Mysql => format!("SELECT CONCAT(id, '|', COALESCE(name, '~'), '|', COALESCE(note, '~'), '|', COALESCE(tier, '~'), '|', IF(deleted_at IS NULL, '', 'deleted')) FROM {table} ORDER BY id"),
        _ => format!("SELECT CAST(id AS TEXT) || '|' || COALESCE(name, '~') || '|' || COALESCE(note, '~') || '|' || COALESCE(tier, '~') || '|' || CASE WHEN deleted_at IS NULL THEN '' ELSE 'deleted' END FROM {table} ORDER BY id"),
    };
    let text = |s: &str| (s != "~").then(|| s.to_string());
    sql.strings(&query)
        .await
        .iter()
        .map(|line| {
            let cells: Vec<&str> = line.split('|').collect();
            let row = Row {
                name: text(cells[1]),
                note: text(cells[2]),
                tier: text(cells[3]),
                deleted: cells[4] == "deleted",
            };
            (cells[0].parse().expect("an id"), row)
        })
        .collect()
}

/// The rows the records describe: each key's newest change by version.
fn fold(records: &[Envelope]) -> BTreeMap<i64, Row> {
    let mut by_version: Vec<&Value> = records.iter().map(|r| &r.envelope).collect();
    by_version.sort_by_key(|e| e["version"].as_i64());
    let mut rows = BTreeMap::new();
    for e in by_version {
        let id = e["key"][0].as_i64().expect("a numeric key");
        let field = |f: &str| e["data"][f].as_str().map(str::to_string);
        match e["op"].as_str() {
            Some("delete") => {
                rows.remove(&id);
            }
            _ => {
                let row = Row {
                    name: field("name"),
                    note: field("note"),
                    tier: field("tier"),
                    deleted: false,
                };
                rows.insert(id, row);
            }
        }
    }
    rows
}

fn file_records(dir: &std::path::Path) -> Vec<Envelope> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).expect("read");
            text.lines()
                .map(|l| {
                    let envelope: Value = serde_json::from_str(l).expect("a JSON line");
                    Envelope {
                        id: envelope["version"].to_string(),
                        envelope,
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn amqp_channel() -> lapin::Channel {
    let connection = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .expect("RabbitMQ must be running on 127.0.0.1:5672 (see .ci/run)");
    connection.create_channel().await.expect("channel")
}

async fn amqp_records(queue: &str) -> Vec<Envelope> {
    let channel = amqp_channel().await;
    let mut out = Vec::new();
    while let Some(m) = channel
        .basic_get(queue, BasicGetOptions::default())
        .await
        .expect("get")
    {
        let id = m.properties.message_id().as_ref().map(|s| s.to_string());
        out.push(Envelope {
            id: id.unwrap_or_default(),
            envelope: serde_json::from_slice(&m.delivery.data).expect("JSON body"),
        });
        m.delivery
            .ack(BasicAckOptions::default())
            .await
            .expect("ack");
    }
    out
}

async fn nats_records(js: &jetstream::Context, stream: &str) -> Vec<Envelope> {
    let s = js.get_stream(stream).await.expect("stream");
    let reader = s
        .create_consumer(consumer::pull::Config::default())
        .await
        .expect("reader");
    let mut batch = reader
        .fetch()
        .max_messages(10_000)
        .expires(std::time::Duration::from_millis(500))
        .messages()
        .await
        .expect("fetch");
    let mut out = Vec::new();
    while let Some(m) = batch.next().await {
        let m = m.expect("message");
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.to_string())
            .unwrap_or_else(|| format!("no Nats-Msg-Id in {:?}", m.headers));
        out.push(Envelope {
            id,
            envelope: serde_json::from_slice(&m.payload).unwrap_or(Value::Null),
        });
    }
    out
}

async fn redis_records(
    connection: &redis::aio::MultiplexedConnection,
    stream: &str,
) -> Vec<Envelope> {
    let mut c = connection.clone();
    let reply: redis::streams::StreamRangeReply = c.xrange_all(stream).await.expect("XRANGE");
    reply
        .ids
        .iter()
        .map(|e| {
            let field = |f: &str| e.get::<String>(f).unwrap_or_default();
            Envelope {
                id: field("id"),
                envelope: serde_json::from_str(&field("envelope")).unwrap_or_default(),
            }
        })
        .collect()
}
