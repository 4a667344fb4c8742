//! Snapshots with children on both SQL targets: each order carries its
//! lines; a changed, added or deleted line marks its order changed, and the
//! target's set of lines for the order is replaced by the source's.
mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_orders_lines_at_the_target_follow_the_source() {
    for kind in BOTH {
        let db = TestDb::new().await;
        let cfg = ConfigDir::new();
        db.exec(
            "CREATE TABLE orders (id bigint PRIMARY KEY, customer text);
             CREATE TABLE order_lines (id bigint PRIMARY KEY, order_id bigint NOT NULL REFERENCES orders, sku text, qty int);
             INSERT INTO orders VALUES (1, 'ada'), (2, 'brian'), (3, 'cleo');
             INSERT INTO order_lines VALUES (11, 1, 'apple', 1), (12, 1, 'pear', 2), (21, 2, 'plum', 3);",
        )
        .await;
        let url = target_url(kind, &cfg, &db);
        let target = TargetDb::open(kind, &url, &db).await;
        target
            .exec(
                "CREATE TABLE crm_orders (id bigint PRIMARY KEY, customer text);
                 CREATE TABLE crm_order_lines (id bigint PRIMARY KEY, order_id bigint NOT NULL, sku text, qty int);",
            )
            .await;
        cfg.job("orders", &orders_job(&db.url, kind.kind(), &url));
        let state = state_url(StateKind::Sqlite, &cfg, &db);
        let lines = "SELECT CAST(id AS TEXT) || '|' || CAST(order_id AS TEXT) || '|' || sku || '|' || CAST(qty AS TEXT) FROM ";
        let source_lines = || async {
            db.strings(&format!("{lines} order_lines ORDER BY id"))
                .await
        };
        let target_lines = || async {
            target
                .strings(&format!("{lines} crm_order_lines ORDER BY id"))
                .await
        };

        let out = cfg.run_once_ok(&state);
        assert_eq!(changed(&out, "orders"), 3, "{kind:?}");
        assert_eq!(
            target_lines().await,
            source_lines().await,
            "{kind:?}: initial sync"
        );

        db.exec("UPDATE order_lines SET qty = 5 WHERE id = 12")
            .await;
        let out = cfg.run_once_ok(&state);
        assert_eq!(
            changed(&out, "orders"),
            1,
            "{kind:?}: a changed line marks its order changed"
        );
        assert_eq!(
            target_lines().await,
            source_lines().await,
            "{kind:?}: changed line"
        );

        db.exec("DELETE FROM order_lines WHERE id = 21; INSERT INTO order_lines VALUES (31, 3, 'fig', 7)")
            .await;
        let out = cfg.run_once_ok(&state);
        assert_eq!(changed(&out, "orders"), 2, "{kind:?}");
        assert_eq!(
            target_lines().await,
            ["11|1|apple|1", "12|1|pear|5", "31|3|fig|7"],
            "{kind:?}: a deleted line is gone, an added one is there"
        );

        db.exec("DELETE FROM order_lines WHERE order_id = 1; DELETE FROM orders WHERE id = 1")
            .await;
        cfg.run_once_ok(&state);
        assert_eq!(
            target_lines().await,
            ["31|3|fig|7"],
            "{kind:?}: a deleted order takes its lines"
        );
        assert_eq!(
            target
                .strings("SELECT CAST(id AS TEXT) FROM crm_orders ORDER BY id")
                .await,
            ["2", "3"],
            "{kind:?}"
        );

        let out = cfg.run_once_ok(&state);
        assert_eq!(
            changed(&out, "orders"),
            0,
            "{kind:?}: an idle run finds nothing"
        );
    }
}

#[test]
fn a_child_query_must_compare_the_parent_key_with_dollar_one() {
    let cfg = ConfigDir::new();
    cfg.job(
        "orders",
        r#"
[source]
type = "postgres"
url = "postgres://ferry@nowhere.invalid/shop"
table = "orders"
key = ["id"]

[target]
type = "postgres"
url = "postgres://ferry@nowhere.invalid/crm"
table = "crm_orders"
key = ["id"]

[rules]
owner = "source"

[children.lines]
query = "select * from order_lines"
key = ["id"]
"#,
    );
    let out = cfg.ferry(None, &["check"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 78, "{err}");
    assert!(err.contains("jobs/orders.toml:"), "{err}");
    assert!(
        err.contains("`[children.lines]`: the query must compare the parent's key with `= $1`"),
        "{err}"
    );
}

/// Orders synced with their lines as a child set.
fn orders_job(src: &str, kind: &str, url: &str) -> String {
    format!(
        r#"
[source]
type = "postgres"
url = "{src}"
table = "orders"
key = ["id"]

[detect]
strategy = "diff"
max_delete_ratio = 1.0

[target]
type = "{kind}"
url = "{url}"
table = "crm_orders"
key = ["id"]

[fields]
id = "id"
customer = "customer"

[rules]
owner = "source"
deletes = "propagate"

[children.lines]
query = "select id, order_id, sku, qty from order_lines where order_id = $1"
key = ["id"]
table = "crm_order_lines"
"#
    )
}
