//! The http target against a real HTTP server started by the test (axum):
//! batches of envelopes with idempotency keys and bearer auth, 429 with
//! `Retry-After`, an item the API refuses (whole request or per-item
//! result), and a server that is down.
mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::*;
use serde_json::{json, Value};

/// What the API saw, and how it answers.
#[derive(Default)]
struct Api {
    /// (idempotency key, authorization header, items, when).
    requests: Vec<(String, String, Vec<Value>, Instant)>,
    /// Answer the first N requests with 429 and `Retry-After: 1`.
    throttle: usize,
    /// Answer 400 to any request holding an item with this key.
    refuse: Option<Value>,
    /// Answer 200 with a per-item result of 400 for the item with this key.
    refuse_in_results: Option<Value>,
    /// Items accepted, by idempotency key (a resent key is counted once).
    accepted: Vec<(String, Value)>,
}

async fn items(
    State(api): State<Arc<Mutex<Api>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut api = api.lock().unwrap();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let list = body["items"].as_array().cloned().unwrap_or_default();
    let key = header("idempotency-key");
    api.requests.push((
        key.clone(),
        header("authorization"),
        list.clone(),
        Instant::now(),
    ));
    if api.requests.len() <= api.throttle {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response();
    }
    if let Some(bad) = &api.refuse {
        if list.iter().any(|i| &i["key"] == bad) {
            return (StatusCode::BAD_REQUEST, "item refused").into_response();
        }
    }
    let mut results = Vec::new();
    for item in &list {
        if api.refuse_in_results.as_ref() == Some(&item["key"]) {
            results.push(json!({"status": 400, "error": "invalid email"}));
        } else {
            results.push(json!({"status": 200}));
            if !api
                .accepted
                .iter()
                .any(|(k, i)| k == &key && i["key"] == item["key"])
            {
                api.accepted.push((key.clone(), item.clone()));
            }
        }
    }
    Json(json!({ "results": results })).into_response()
}

async fn serve(api: Arc<Mutex<Api>>, listener: tokio::net::TcpListener) {
    let app = axum::Router::new()
        .route("/items", axum::routing::post(items))
        .with_state(api);
    tokio::spawn(async move { axum::serve(listener, app).await });
}

async fn start(api: Arc<Mutex<Api>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    serve(api, listener).await;
    addr
}

async fn source(db: &TestDb) {
    db.exec(
        "CREATE TABLE people (id bigint PRIMARY KEY, email text);
         INSERT INTO people VALUES (1, 'a@x'), (2, 'b@x'), (3, 'c@x');",
    )
    .await;
}

fn job(db: &TestDb, addr: SocketAddr, extra: &str) -> String {
    format!(
        "[source]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"people\"\nkey = [\"id\"]\n\n\
         [detect]\nstrategy = \"diff\"\nmax_delete_ratio = 1.0\n\n\
         [batch]\nmax_attempts = 3\nbackoff = {{ initial = \"10ms\", max = \"10ms\" }}\n\n\
         [target]\ntype = \"http\"\nurl = \"http://{addr}/items\"\nauth = {{ bearer = \"${{API_TOKEN}}\" }}\ntimeout = \"5s\"\n{extra}\n\n\
         [rules]\nowner = \"source\"\ndeletes = \"propagate\"\n",
        db.url
    )
}

fn run(cfg: &ConfigDir, state: &str) -> std::process::Output {
    cfg.command(Some(state), &["run", "--once"])
        .env("API_TOKEN", "s3cret")
        .output()
        .expect("run ferry")
}

fn accepted_keys(api: &Arc<Mutex<Api>>) -> Vec<String> {
    let mut keys: Vec<String> = api
        .lock()
        .unwrap()
        .accepted
        .iter()
        .map(|(_, i)| format!("{}:{}", i["key"], i["op"]))
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_carry_envelopes_with_keys_and_auth_and_a_repeat_run_sends_nothing() {
    let db = TestDb::new().await;
    source(&db).await;
    let api = Arc::new(Mutex::new(Api::default()));
    let addr = start(api.clone()).await;
    let cfg = ConfigDir::new();
    cfg.job("people", &job(&db, addr, ""));
    let state = state_url(StateKind::Sqlite, &cfg, &db);

    let out = run(&cfg, &state);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    {
        let api = api.lock().unwrap();
        assert_eq!(api.requests.len(), 1, "one batch");
        let (key, auth, items, _) = &api.requests[0];
        assert!(key.starts_with("people-"), "{key}");
        assert_eq!(auth, "Bearer s3cret");
        assert_eq!(items.len(), 3);
        let one = items
            .iter()
            .find(|i| i["key"] == json!([1]))
            .expect("item 1");
        assert_eq!(
            (one["job"].as_str(), one["op"].as_str()),
            (Some("people"), Some("upsert"))
        );
        assert_eq!(one["data"], json!({"id": 1, "email": "a@x"}));
    }
    assert!(
        !stderr(&out).contains("s3cret"),
        "the token is never logged"
    );

    db.exec("UPDATE people SET email = 'a2@x' WHERE id = 1; DELETE FROM people WHERE id = 3")
        .await;
    assert_eq!(code(&run(&cfg, &state)), 0);
    // The diff sends updates as it scans and deletes once the scan is over.
    let sent = api.lock().unwrap().requests.len();
    assert!((2..=3).contains(&sent), "{sent} requests");
    let out = run(&cfg, &state);
    assert_eq!(code(&out), 0);
    assert_eq!(
        api.lock().unwrap().requests.len(),
        sent,
        "a repeat run sends nothing"
    );
    assert_eq!(
        accepted_keys(&api),
        [
            "[1]:\"upsert\"",
            "[1]:\"upsert\"",
            "[2]:\"upsert\"",
            "[3]:\"delete\"",
            "[3]:\"upsert\""
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_with_retry_after_is_waited_out_then_delivered() {
    let db = TestDb::new().await;
    source(&db).await;
    let api = Arc::new(Mutex::new(Api {
        throttle: 1,
        ..Default::default()
    }));
    let addr = start(api.clone()).await;
    let cfg = ConfigDir::new();
    cfg.job("people", &job(&db, addr, ""));
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    let out = run(&cfg, &state);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let api = api.lock().unwrap();
    assert_eq!(api.requests.len(), 2);
    let waited = api.requests[1].3 - api.requests[0].3;
    assert!(
        waited >= std::time::Duration::from_secs(1),
        "resent after {waited:?}"
    );
    assert_eq!(
        api.requests[0].0, api.requests[1].0,
        "the same idempotency key"
    );
    assert_eq!(api.accepted.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_item_the_api_refuses_goes_dead_alone() {
    for per_item in [false, true] {
        let db = TestDb::new().await;
        source(&db).await;
        let api = Arc::new(Mutex::new(Api::default()));
        {
            let mut api = api.lock().unwrap();
            if per_item {
                api.refuse_in_results = Some(json!([2]));
            } else {
                api.refuse = Some(json!([2]));
            }
        }
        let addr = start(api.clone()).await;
        let cfg = ConfigDir::new();
        let extra = if per_item {
            "results = \"/results\""
        } else {
            ""
        };
        cfg.job("people", &job(&db, addr, extra));
        let state = state_url(StateKind::Sqlite, &cfg, &db);
        let out = run(&cfg, &state);
        assert_ne!(code(&out), 0, "a dead item is not in sync");
        assert_eq!(
            failed(&out, "people"),
            1,
            "per_item={per_item}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(
            accepted_keys(&api),
            ["[1]:\"upsert\"", "[3]:\"upsert\""],
            "per_item={per_item}: only the refused item is left out"
        );
        if per_item {
            assert_eq!(
                api.lock().unwrap().requests.len(),
                1,
                "per-item results need no split"
            );
        }
        let dead = cfg
            .command(Some(&state), &["tasks", "--state", "dead"])
            .output()
            .expect("tasks");
        let text = String::from_utf8_lossy(&dead.stdout);
        assert!(text.contains("people"), "per_item={per_item}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_is_down_exits_75_and_loses_nothing() {
    let db = TestDb::new().await;
    source(&db).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let cfg = ConfigDir::new();
    cfg.job("people", &job(&db, addr, ""));
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    let out = run(&cfg, &state);
    assert_eq!(code(&out), 75, "{}", stderr(&out));

    let api = Arc::new(Mutex::new(Api::default()));
    let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
    serve(api.clone(), listener).await;
    let out = run(&cfg, &state);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        accepted_keys(&api),
        ["[1]:\"upsert\"", "[2]:\"upsert\"", "[3]:\"upsert\""]
    );
}
