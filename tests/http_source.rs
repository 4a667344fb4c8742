//! The http source against a real HTTP server started by the test (axum):
//! pages by cursor (`next`) and by number (`page_param`), bearer auth, and
//! updates and deletes found by the diff strategy.
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::*;
use serde_json::{json, Value};

type People = Arc<Mutex<Vec<Value>>>;

const PAGE: usize = 2;

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer t0ken")
}

/// `{"data": [...], "meta": {"next": "<offset>" | null}}`, two per page.
async fn by_cursor(
    State(people): State<People>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let people = people.lock().unwrap();
    let from: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let page: Vec<Value> = people.iter().skip(from).take(PAGE).cloned().collect();
    let next = (from + PAGE < people.len()).then(|| (from + PAGE).to_string());
    Json(json!({"data": page, "meta": {"next": next}})).into_response()
}

/// `?page=N` from 1: a bare array, empty after the last page.
async fn by_number(
    State(people): State<People>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let people = people.lock().unwrap();
    let n: usize = q.get("page").and_then(|c| c.parse().ok()).unwrap_or(1);
    let page: Vec<Value> = people
        .iter()
        .skip((n - 1) * PAGE)
        .take(PAGE)
        .cloned()
        .collect();
    Json(Value::Array(page)).into_response()
}

async fn serve(people: People) -> std::net::SocketAddr {
    let app = axum::Router::new()
        .route("/people", axum::routing::get(by_cursor))
        .route("/numbered", axum::routing::get(by_number))
        .with_state(people);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn job(db: &TestDb, source: &str) -> String {
    format!(
        "[source]\ntype = \"http\"\n{source}\nkey = [\"id\"]\n\n[detect]\nstrategy = \"diff\"\nmax_delete_ratio = 1.0\n\n\
         [target]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"people\"\nkey = [\"id\"]\n\n\
         [rules]\nowner = \"source\"\ndeletes = \"propagate\"\n",
        db.url
    )
}

async fn rows(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar("SELECT id || '|' || email FROM people ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .expect("read")
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_by_cursor_and_by_number_sync_updates_and_deletes() {
    for numbered in [false, true] {
        let people: People = Arc::new(Mutex::new(
            (1..=5)
                .map(|i| json!({"id": i, "email": format!("p{i}@x")}))
                .collect(),
        ));
        let addr = serve(people.clone()).await;
        let db = TestDb::new().await;
        db.exec("CREATE TABLE people (id bigint PRIMARY KEY, email text)")
            .await;
        let cfg = ConfigDir::new();
        let source = if numbered {
            format!("url = \"http://{addr}/numbered\"\npage_param = \"page\"")
        } else {
            format!("url = \"http://{addr}/people\"\nitems = \"/data\"\nnext = \"/meta/next\"\nauth = {{ bearer = \"t0ken\" }}")
        };
        cfg.job("people", &job(&db, &source));
        let state = state_url(StateKind::Sqlite, &cfg, &db);

        let out = cfg.run_once_ok(&state);
        assert_eq!(changed(&out, "people"), 5, "numbered={numbered}");
        assert_eq!(
            rows(&db).await,
            ["1|p1@x", "2|p2@x", "3|p3@x", "4|p4@x", "5|p5@x"]
        );

        {
            let mut people = people.lock().unwrap();
            people[0]["email"] = json!("new1@x");
            people.remove(3);
        }
        let out = cfg.run_once_ok(&state);
        assert_eq!(changed(&out, "people"), 2, "numbered={numbered}");
        assert_eq!(rows(&db).await, ["1|new1@x", "2|p2@x", "3|p3@x", "5|p5@x"]);
        let out = cfg.run_once_ok(&state);
        assert_eq!(changed(&out, "people"), 0, "a repeat run finds nothing");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_token_is_a_clear_error() {
    let addr = serve(Arc::new(Mutex::new(Vec::new()))).await;
    let db = TestDb::new().await;
    db.exec("CREATE TABLE people (id bigint PRIMARY KEY, email text)")
        .await;
    let cfg = ConfigDir::new();
    cfg.job(
        "people",
        &job(&db, &format!("url = \"http://{addr}/people\"\nitems = \"/data\"\nnext = \"/meta/next\"\nauth = {{ bearer = \"wrong\" }}")),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_ne!(code(&out), 0);
    let err = stderr(&out);
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("wrong"), "the token is never shown: {err}");
}
