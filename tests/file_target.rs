//! The file target: one JSONL or CSV file per run holding the run's changes
//! as envelopes, a repeat run writes none, and a part file a crashed run
//! left behind is completed by the next run.
mod common;

use std::path::Path;

use common::*;

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).expect("output file")
}

async fn source(db: &TestDb) {
    db.exec(
        "CREATE TABLE people (id bigint PRIMARY KEY, email text, balance numeric(12,2));
         INSERT INTO people VALUES (1, 'a@x', 1.50), (2, 'b,x', NULL);",
    )
    .await;
}

fn job(db: &TestDb, format: &str) -> String {
    format!(
        "[source]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"people\"\nkey = [\"id\"]\n\n\
         [detect]\nstrategy = \"diff\"\nmax_delete_ratio = 1.0\n\n\
         [target]\ntype = \"file\"\npath = \"out\"\nformat = \"{format}\"\n\n[rules]\nowner = \"source\"\ndeletes = \"propagate\"\n",
        db.url
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn jsonl_holds_one_envelope_per_change_and_a_file_per_run() {
    let db = TestDb::new().await;
    source(&db).await;
    let cfg = ConfigDir::new();
    cfg.job("people", &job(&db, "jsonl"));
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    let out_dir = cfg.path().join("out");

    cfg.run_once_ok(&state);
    let first = files(&out_dir);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].starts_with("people-") && first[0].ends_with(".jsonl"));
    let lines: Vec<serde_json::Value> = read(&out_dir, &first[0])
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    let one = lines
        .iter()
        .find(|l| l["key"] == serde_json::json!([1]))
        .expect("key 1");
    assert_eq!(one["job"], "people");
    assert_eq!(one["op"], "upsert");
    assert_eq!(
        one["data"].to_string(),
        r#"{"id":1,"email":"a@x","balance":1.50}"#,
        "the decimal keeps its digits"
    );
    assert!(
        one["version"].as_i64().is_some() && one["hash"].as_str().is_some_and(|h| h.len() == 16)
    );

    cfg.run_once_ok(&state);
    assert_eq!(files(&out_dir), first, "a repeat run writes no file");

    db.exec("UPDATE people SET email = 'a2@x' WHERE id = 1; DELETE FROM people WHERE id = 2")
        .await;
    std::thread::sleep(std::time::Duration::from_millis(5));
    cfg.run_once_ok(&state);
    let now = files(&out_dir);
    assert_eq!(now.len(), 2, "{now:?}");
    let second = read(&out_dir, &now[1]);
    let ops: Vec<(String, String)> = second
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("line");
            (
                v["op"].as_str().unwrap_or_default().to_string(),
                v["key"].to_string(),
            )
        })
        .collect();
    assert_eq!(ops.len(), 2);
    assert!(
        ops.contains(&("upsert".to_string(), "[1]".to_string())),
        "{second}"
    );
    assert!(
        ops.contains(&("delete".to_string(), "[2]".to_string())),
        "{second}"
    );
    assert!(
        !second.contains("\"data\":{}")
            && second
                .lines()
                .any(|l| l.contains("\"op\":\"delete\"") && !l.contains("\"data\""))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_rows_and_a_crashed_runs_part_file_is_completed() {
    let db = TestDb::new().await;
    source(&db).await;
    let cfg = ConfigDir::new();
    cfg.job("people", &job(&db, "csv"));
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    let out_dir = cfg.path().join("out");
    // A crashed run's part file, its last line torn.
    std::fs::create_dir_all(&out_dir).expect("out");
    std::fs::write(
        out_dir.join("people-20260101T000000.000Z.csv.part"),
        "_op,_version,id\nupsert,1,9\nupsert,2,1",
    )
    .expect("part");

    cfg.run_once_ok(&state);
    let names = files(&out_dir);
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], "people-20260101T000000.000Z.csv");
    assert_eq!(
        read(&out_dir, &names[0]),
        "_op,_version,id\nupsert,1,9\n",
        "completed, without the torn line"
    );
    let run = read(&out_dir, &names[1]);
    let mut rows: Vec<&str> = run.lines().collect();
    assert_eq!(rows.remove(0), "_op,_version,id,email,balance");
    rows.sort();
    assert_eq!(rows.len(), 2);
    assert!(
        rows[0].starts_with("upsert,") && rows[0].ends_with(",1,a@x,1.50"),
        "{rows:?}"
    );
    assert!(
        rows[1].ends_with(",2,\"b,x\","),
        "CSV quoting and NULL as empty: {rows:?}"
    );
}
