//! `ferry verify` of jobs whose rows pair through id maps: customers get
//! keys the target generates, orders translate their customer reference
//! through the customers' id map. Drift made by hand is found with both
//! keys, a row ferry never wrote is named by its target key, and
//! `--repair` fixes what the lane can, on both SQL targets and state stores.
mod common;

use common::*;

/// The differences listed in a report: (kind, source key, target key, fields).
fn listed(json: &serde_json::Value, job: usize) -> Vec<(String, String, String, String)> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let mut all: Vec<_> = json["jobs"][job]["result"]["first"]
        .as_array()
        .expect("first")
        .iter()
        .map(|d| {
            let fields: Vec<String> = d["fields"]
                .as_array()
                .map(|f| f.iter().map(text).collect())
                .unwrap_or_default();
            (
                text(&d["kind"]),
                text(&d["key"]),
                text(&d["target_key"]),
                fields.join(","),
            )
        })
        .collect();
    all.sort();
    all
}

async fn drift_through_id_maps(kind: Target, state_kind: StateKind) {
    let db = TestDb::new().await;
    let cfg = ConfigDir::new();
    let target = id_map_fixture(kind, &cfg, &db).await;
    let state = state_url(state_kind, &cfg, &db);
    cfg.run_once_ok(&state);

    let (code, json) = verify(&cfg, &state, &["customers", "orders"]);
    assert_eq!(code, 0, "{kind:?}: equal after the sync: {json}");
    assert_eq!(json["jobs"][0]["result"]["equal"], 3, "{json}");
    assert_eq!(json["jobs"][1]["result"]["equal"], 4, "{json}");

    let target_key = |name: &str| {
        let target = &target;
        let sql = format!("SELECT CAST(id AS TEXT) FROM crm_customers WHERE name = '{name}'");
        async move { target.strings(&sql).await.remove(0) }
    };
    let (ada, brian, cleo) = (
        target_key("Ada").await,
        target_key("Brian").await,
        target_key("Cleo").await,
    );
    // By hand in the target: a changed name, a deleted row, a row ferry
    // never wrote, an order pointing at the wrong customer; in the source,
    // a customer deleted (a cursor does not see deletes).
    target
        .exec(&format!(
            "UPDATE crm_customers SET name = 'B.' WHERE id = {brian};
             DELETE FROM crm_customers WHERE id = {cleo};
             INSERT INTO crm_customers (id, name) VALUES (99, 'Stray');
             UPDATE crm_orders SET customer_id = {brian} WHERE id = 1002;"
        ))
        .await;
    db.exec("DELETE FROM customers WHERE id = 101").await;

    let (code, json) = verify(&cfg, &state, &["customers", "orders"]);
    assert_eq!(code, 1, "{kind:?}: {json}");
    let s = |v: &str| v.to_string();
    assert_eq!(
        listed(&json, 0),
        vec![
            (s("different"), s("102"), brian.clone(), s("name")),
            (s("extra"), s("-"), s("99"), s("")),
            (s("extra"), s("101"), ada.clone(), s("")),
            (s("missing"), s("103"), cleo.clone(), s("")),
        ],
        "{kind:?}: {json}"
    );
    assert_eq!(
        json["jobs"][0]["result"]["unmapped"],
        serde_json::json!(["99"])
    );
    assert_eq!(
        listed(&json, 1),
        vec![(s("different"), s("1002"), s("-"), s("customer_id"))],
        "{kind:?}: the order's reference, translated: {json}"
    );

    repaired(&cfg, &state, &target, kind, (&brian, &cleo)).await;

    target.exec("DELETE FROM crm_customers WHERE id = 99").await;
    let (code, json) = verify(&cfg, &state, &["customers", "orders"]);
    assert_eq!(code, 0, "{kind:?}: {json}");

    // Source keys do not range over the target's own keys.
    let (code, json) = verify(&cfg, &state, &["--keys", "1..5", "customers"]);
    assert_eq!(code, 78, "{kind:?}: {json}");
}

/// `verify --repair`: the lane repairs what ferry wrote; the row it never
/// wrote stays, and is said.
async fn repaired(
    cfg: &ConfigDir,
    state: &str,
    target: &TargetDb<'_>,
    kind: Target,
    (brian, cleo): (&str, &str),
) {
    let s = |v: &str| v.to_string();
    let out = cfg.ferry(
        Some(state),
        &[
            "--output",
            "json",
            "verify",
            "--repair",
            "customers",
            "orders",
        ],
    );
    assert_eq!(common::code(&out), 1, "{kind:?}: {}", stderr(&out));
    assert!(
        stderr(&out).contains("not in the id map") && stderr(&out).contains("99"),
        "{kind:?}: {}",
        stderr(&out)
    );
    let repaired: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("verify --repair JSON");
    assert_eq!(
        listed_after(&repaired, 0),
        vec![(s("extra"), s("-"), s("99"), s(""))],
        "{kind:?}: {repaired}"
    );
    assert_eq!(repaired["jobs"][1]["after"]["different"], 0, "{repaired}");
    assert_eq!(
        target
            .strings("SELECT CAST(id AS TEXT) || ':' || name FROM crm_customers ORDER BY id")
            .await,
        {
            let mut rows = vec![
                format!("{brian}:Brian"),
                format!("{cleo}:Cleo"),
                s("99:Stray"),
            ];
            rows.sort_by_key(|r| r.split(':').next().and_then(|n| n.parse::<i64>().ok()));
            rows
        },
        "{kind:?}: the same target keys as before"
    );
}

/// As [`listed`], of the verify after a repair.
fn listed_after(json: &serde_json::Value, job: usize) -> Vec<(String, String, String, String)> {
    let after = serde_json::json!({ "jobs": [{ "result": json["jobs"][job]["after"] }] });
    listed(&after, 0)
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_target_postgres_state() {
    drift_through_id_maps(Target::Postgres, StateKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_target_sqlite_state() {
    drift_through_id_maps(Target::Sqlite, StateKind::Sqlite).await;
}
