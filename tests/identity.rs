//! Key translation on both SQL targets: customers get keys the target
//! generates (recorded in the job's id map); orders translate their customer
//! reference through that id map, and an order whose customer is not synced
//! yet waits for it instead of being written with a dangling reference.
mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn orders_point_at_the_right_customer_and_wait_for_one_not_synced_yet() {
    for kind in BOTH {
        let db = TestDb::new().await;
        let cfg = ConfigDir::new();
        let target = id_map_fixture(kind, &cfg, &db).await;
        let state = state_url(StateKind::Sqlite, &cfg, &db);
        let orders = "SELECT CAST(o.id AS TEXT) || '|' || COALESCE(c.name, '-') FROM crm_orders o
                      LEFT JOIN crm_customers c ON c.id = o.customer_id ORDER BY o.id";

        cfg.run_once_ok(&state);
        assert_eq!(
            target.strings(orders).await,
            ["1001|Ada", "1002|Cleo", "1003|Brian", "1004|-"],
            "{kind:?}: every order points at its customer's target row"
        );
        let generated = target
            .strings("SELECT CAST(id AS TEXT) FROM crm_customers ORDER BY id")
            .await;
        assert_eq!(
            generated,
            ["1", "2", "3"],
            "{kind:?}: the target's own keys"
        );

        // A new customer and its order; only the orders job runs: the order waits.
        db.exec(
            "INSERT INTO customers (id, name) VALUES (104, 'Dana');
             INSERT INTO orders (id, customer_id, total) VALUES (1005, 104, '50');",
        )
        .await;
        let out = cfg.ferry(Some(&state), &["run", "--once", "orders"]);
        assert_ne!(
            code(&out),
            0,
            "{kind:?}: an order waiting for its customer is not in sync"
        );
        assert!(
            stderr(&out).contains("refers to [104] of job customers, which is not synced yet"),
            "{kind:?}: {}",
            stderr(&out)
        );
        assert_eq!(
            target.strings(orders).await.len(),
            4,
            "{kind:?}: nothing dangling"
        );

        // The customer is synced, and the order is delivered after it.
        cfg.ferry(Some(&state), &["run", "--once", "customers"]);
        std::thread::sleep(std::time::Duration::from_millis(50));
        cfg.run_once_ok(&state);
        assert_eq!(
            target.strings(orders).await,
            ["1001|Ada", "1002|Cleo", "1003|Brian", "1004|-", "1005|Dana"],
            "{kind:?}"
        );

        // A changed customer updates its own target row, not a new one.
        db.exec(
            "UPDATE customers SET name = 'Ada L.', updated_at = clock_timestamp() WHERE id = 101",
        )
        .await;
        cfg.run_once_ok(&state);
        assert_eq!(
            target
                .strings("SELECT CAST(id AS TEXT) || '|' || name FROM crm_customers ORDER BY id")
                .await,
            ["1|Ada L.", "2|Brian", "3|Cleo", "4|Dana"],
            "{kind:?}"
        );
        let status = cfg.ferry(Some(&state), &["status", "customers"]);
        let text = String::from_utf8_lossy(&status.stdout);
        assert!(
            text.contains("id map       4 source key(s)"),
            "{kind:?}: {text}"
        );
    }
}

#[test]
fn a_lookup_needs_a_job_with_an_id_map() {
    let cfg = ConfigDir::new();
    let src = "postgres://ferry@nowhere.invalid/shop";
    id_map_jobs(&cfg, Target::Postgres, src, src);
    // Customers' target key now comes from the source: no id map.
    let customers = std::fs::read_to_string(cfg.path().join("jobs/customers.toml")).unwrap();
    cfg.job(
        "customers",
        &customers.replace(
            "[fields]\nname = \"name\"",
            "[fields]\nid = \"id\"\nname = \"name\"",
        ),
    );
    let out = cfg.ferry(None, &["check"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 78, "{err}");
    assert!(err.contains("jobs/orders.toml:"), "{err}");
    assert!(
        err.contains("`lookup` names job `customers`, whose target key comes from its source"),
        "{err}"
    );
}
