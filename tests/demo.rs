//! The shipped demo (jobs/, schedules.toml, demo/customers.csv) on a fresh
//! machine with no server: CSV → embedded SQLite.
mod common;

use std::path::Path;

use common::*;
use sqlx::sqlite::SqlitePoolOptions;

fn copy_demo(to: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for rel in [
        "schedules.toml",
        "jobs/customers_demo.toml",
        "demo/customers.csv",
    ] {
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().expect("has parent")).expect("mkdir");
        std::fs::copy(root.join(rel), dest).expect("copy demo file");
    }
}

async fn contacts(dir: &Path) -> Vec<(String, String, String)> {
    let url = format!("sqlite://{}", dir.join("demo/crm.db").display());
    let pool = SqlitePoolOptions::new()
        .connect(&url)
        .await
        .expect("open crm.db");
    let rows = sqlx::query_as::<_, (String, String, String)>("SELECT CAST(shop_id AS TEXT), email, country FROM contacts ORDER BY CAST(shop_id AS INTEGER)")
        .fetch_all(&pool)
        .await
        .expect("read contacts");
    pool.close().await;
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_syncs_once_then_only_edits() {
    let cfg = ConfigDir::new();
    copy_demo(cfg.path());

    let out = cfg.ferry(None, &["run", "--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(synced(&out, "customers_demo"), 3000);
    let rows = contacts(cfg.path()).await;
    assert_eq!(rows.len(), 3000);
    assert_eq!(
        rows[1],
        ("2".into(), "grace.jones2@example.com".into(), "DE".into())
    );

    let out = cfg.ferry(None, &["run", "--once"]);
    assert_eq!(
        synced(&out, "customers_demo"),
        0,
        "a second run syncs nothing"
    );

    let csv_path = cfg.path().join("demo/customers.csv");
    let csv = std::fs::read_to_string(&csv_path).expect("read csv");
    let edited: Vec<String> = csv
        .lines()
        .filter(|l| !l.starts_with("3,"))
        .map(|l| {
            if l.starts_with("2,") {
                l.replace(",DE,", ",CZ,")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&csv_path, edited.join("\n") + "\n").expect("write csv");

    let plan = cfg.ferry(None, &["plan"]);
    let line = String::from_utf8_lossy(&plan.stdout)
        .lines()
        .find(|l| l.starts_with("customers_demo"))
        .map(str::to_string)
        .expect("plan line");
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["customers_demo", "2999", "0", "1", "1", "2998"]
    );

    let out = cfg.ferry(None, &["run", "--once"]);
    assert_eq!(
        synced(&out, "customers_demo"),
        2,
        "just the edit and the delete"
    );
    let rows = contacts(cfg.path()).await;
    assert_eq!(rows.len(), 2999);
    assert_eq!(rows[1].2, "CZ");
    assert!(rows.iter().all(|r| r.0 != "3"));
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_writes_nothing_anywhere() {
    let cfg = ConfigDir::new();
    copy_demo(cfg.path());
    let out = cfg.ferry(None, &["plan"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("customers_demo                 3000       3000"));
    assert!(
        !cfg.path().join("ferry-state.db").exists(),
        "plan created the state store"
    );
    assert!(
        !cfg.path().join("demo/crm.db").exists(),
        "plan touched the target"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_emptied_source_is_not_mirrored_as_mass_deletes() {
    let cfg = ConfigDir::new();
    copy_demo(cfg.path());
    assert_eq!(code(&cfg.ferry(None, &["run", "--once"])), 0);
    std::fs::write(
        cfg.path().join("demo/customers.csv"),
        "id,email,name,country,tier,balance\n",
    )
    .expect("empty csv");
    let out = cfg.ferry(None, &["run", "--once"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("the source returned no objects, which would delete all 3000"),
        "{}",
        stderr(&out)
    );
    assert_eq!(contacts(cfg.path()).await.len(), 3000);

    let csv =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/customers.csv"))
            .expect("csv");
    let kept: Vec<&str> = csv.lines().take(1001).collect();
    std::fs::write(
        cfg.path().join("demo/customers.csv"),
        kept.join("\n") + "\n",
    )
    .expect("write");
    let out = cfg.ferry(None, &["run", "--once"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("refusing to delete 2000 of 3000 objects"),
        "{}",
        stderr(&out)
    );
    let out = cfg.ferry(None, &["run", "--once", "--allow-mass-delete"]);
    assert_eq!(code(&out), 0);
    assert_eq!(contacts(cfg.path()).await.len(), 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_table_is_typed_so_numbers_compare_as_numbers() {
    let cfg = ConfigDir::new();
    copy_demo(cfg.path());
    let out = cfg.ferry(None, &["run", "--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let url = format!("sqlite://{}", cfg.path().join("demo/crm.db").display());
    let pool = SqlitePoolOptions::new().connect(&url).await.expect("open");
    let found: Vec<(i64, String)> = sqlx::query_as(
        "SELECT shop_id, typeof(balance) FROM contacts WHERE shop_id IN (5, 6) ORDER BY shop_id",
    )
    .fetch_all(&pool)
    .await
    .expect("query");
    assert_eq!(found, [(5, "real".to_string()), (6, "real".to_string())]);
    pool.close().await;

    // A cell that is not of its column's type stops the run, located.
    let csv_path = cfg.path().join("demo/customers.csv");
    let csv = std::fs::read_to_string(&csv_path).expect("read csv");
    std::fs::write(&csv_path, csv.replacen("\n4,", "\n4x,", 1)).expect("write csv");
    let out = cfg.ferry(None, &["run", "--once"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("customers.csv line 5: column `id`: `4x` is not an integer"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_field_naming_a_column_the_csv_lacks_stops_before_writing() {
    let cfg = ConfigDir::new();
    copy_demo(cfg.path());
    let job_path = cfg.path().join("jobs/customers_demo.toml");
    let job = std::fs::read_to_string(&job_path).expect("read job");
    std::fs::write(
        &job_path,
        job.replace("country = \"country\"", "country = \"contry\""),
    )
    .expect("write job");
    let out = cfg.ferry(None, &["run", "--once"]);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("source column `contry`"), "{err}");
    let db = cfg.path().join("demo/crm.db");
    if db.exists() {
        let url = format!("sqlite://{}", db.display());
        let pool = SqlitePoolOptions::new().connect(&url).await.expect("open");
        let tables: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name = 'contacts'")
                .fetch_one(&pool)
                .await
                .expect("query");
        assert_eq!(tables, 0, "the target table was created");
        pool.close().await;
    }
}
