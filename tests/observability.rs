//! Metrics against the real Prometheus tools: promtool on /metrics and on the
//! alert rules, a Prometheus server evaluating every dashboard expression, and
//! a Pushgateway receiving a one-shot run's metrics.
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// The path of a Prometheus tool, from Debian's `prometheus` and
/// `prometheus-pushgateway`. A missing tool fails the test (in CI or not):
/// a test that skipped its work must not count as passed.
fn tool(name: &str) -> String {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .ok()
        .filter(|o| o.status.success());
    match found {
        Some(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        None => panic!(
            "{name} is missing: apt-get install prometheus prometheus-pushgateway (bash .ci/run installs them)"
        ),
    }
}

fn repo(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(rel)
        .display()
        .to_string()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let promtool = tool("promtool");
    let check = Command::new(&promtool)
        .args(["check", "rules", &repo("dashboards/alerts.yml")])
        .output()
        .expect("promtool");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let test = Command::new(&promtool)
        .args(["test", "rules", &repo("dashboards/alerts_test.yml")])
        .output()
        .expect("promtool");
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    let rules = std::fs::read_to_string(repo("dashboards/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(repo("dashboards/alerts_test.yml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(alert.starts_with("Ferry"), "{alert}");
        let cases = tests.matches(&format!("alertname: {alert}")).count();
        assert!(cases >= 2, "{alert} needs a firing and a non-firing test");
    }
}

fn dashboard_exprs() -> Vec<String> {
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("dashboards/ferry.json")).unwrap())
            .expect("dashboard JSON");
    assert!(dash["schemaVersion"].as_i64().unwrap_or(0) >= 36);
    assert_eq!(dash["uid"], "ferry-sync");
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "sync_job"]);
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        assert!(
            ["row", "timeseries", "stat"].contains(&panel["type"].as_str().unwrap()),
            "panel type {}",
            panel["type"]
        );
        for t in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    exprs
}

fn job(db: &TestDb, table: &str, target_url: &str) -> String {
    format!(
        "[source]\ntype = \"postgres\"\nurl = \"{u}\"\ntable = \"{table}\"\nkey = [\"id\"]\n\n[detect]\nstrategy = \"diff\"\n\n\
         [batch]\nsize = 100\nmax_attempts = 1\n\n[target]\ntype = \"postgres\"\nurl = \"{target_url}\"\ntable = \"dst_{table}\"\nkey = [\"id\"]\n\n[rules]\nowner = \"source\"\n",
        u = db.url
    )
}

async fn setup(db: &TestDb) {
    db.exec(
        "CREATE TABLE good (id bigint PRIMARY KEY, name text); CREATE TABLE dst_good (LIKE good INCLUDING ALL);
         INSERT INTO good SELECT g, 'n' || g FROM generate_series(1, 300) g;
         CREATE TABLE poisoned (id bigint PRIMARY KEY, name text); CREATE TABLE dst_poisoned (LIKE poisoned INCLUDING ALL);
         ALTER TABLE dst_poisoned ADD CHECK (name <> 'poison');
         INSERT INTO poisoned SELECT g, CASE WHEN g IN (3, 50, 77) THEN 'poison' ELSE 'n' || g END FROM generate_series(1, 200) g;
         CREATE TABLE down (id bigint PRIMARY KEY, name text); INSERT INTO down VALUES (1, 'x');",
    )
    .await;
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name_and_labels} in:\n{text}"))
}

/// A real Prometheus scraping the daemon on `daemon_port` every second.
fn start_prometheus(prometheus: &str, dir: &Path, daemon_port: u16) -> (Killed, u16) {
    let prom_port = free_port();
    let prom_dir = dir.join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom_cfg = prom_dir.join("prometheus.yml");
    std::fs::write(&prom_cfg, format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ferry\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n", daemon_port)).unwrap();
    let prom = Killed(
        Command::new(prometheus)
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );

    (prom, prom_port)
}

/// `promtool check metrics` finds nothing to say about the exposition.
fn promtool_check_metrics(promtool: &str, text: &str) {
    let mut lint = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    lint.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
}

/// Every expression of the dashboard, evaluated by Prometheus once it has
/// scraped the daemon a few times, returns data.
async fn every_dashboard_expression_has_data(prom_port: u16) {
    let client = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{prom_port}/api/v1/query");
    // Rates and increases need two scrapes inside their window: wait until
    // Prometheus has scraped the daemon a few times (a loaded machine starts
    // it slowly).
    let scraped = eventually(60, || async {
        let scrapes = async {
            let text = client
                .get(&api)
                .query(&[("query", "count_over_time(ferry_build_info[10s]) >= 4")])
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let body: serde_json::Value = serde_json::from_str(&text).ok()?;
            body["data"]["result"]
                .as_array()
                .filter(|r| !r.is_empty())
                .map(|_| ())
        };
        scrapes.await.is_some()
    });
    assert!(
        scraped.await,
        "Prometheus never scraped the daemon four times in 10 s"
    );
    let mut empty = Vec::new();
    for expr in dashboard_exprs() {
        let q = expr
            .replace("$__rate_interval", "10s")
            .replace("$__range", "5m")
            .replace("$sync_job", ".+");
        let text = client
            .get(&api)
            .query(&[("query", q.as_str())])
            .send()
            .await
            .expect("query")
            .text()
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(body["status"], "success", "{q}: {body}");
        if body["data"]["result"]
            .as_array()
            .is_none_or(|r| r.is_empty())
        {
            empty.push(q);
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard expressions without data: {empty:#?}"
    );
}

/// A daemon with a good job, a job with poison rows, and a job whose target
/// is down; values of the counters, promtool on /metrics, and every
/// dashboard expression evaluated by a real Prometheus scraping it.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_right_lint_clean_and_feed_every_dashboard_panel() {
    let (promtool, prometheus) = (tool("promtool"), tool("prometheus"));
    let db = TestDb::new().await;
    setup(&db).await;
    let cfg = ConfigDir::new();
    cfg.job("good", &job(&db, "good", &db.url));
    cfg.job("poisoned", &job(&db, "poisoned", &db.url));
    cfg.job(
        "down",
        &job(&db, "down", "postgres://ferry@127.0.0.1:1/none"),
    );
    let d = cfg
        .daemon(
            &db.url,
            "good = { cron = \"*/1 * * * * *\", verify = \"*/2 * * * * *\" }\npoisoned = \"*/1 * * * * *\"\ndown = \"*/1 * * * * *\"",
            &[],
        )
        .await;

    let (_prom, prom_port) = start_prometheus(&prometheus, cfg.path(), d.port);

    // The unreachable target fails its runs (after the connection timeout).
    let down_failed =
        "ferry_runs_total{sync_job=\"down\",trigger=\"schedule\",outcome=\"failed\"} 1";
    assert!(
        eventually(20, || async {
            d.get("/metrics")
                .await
                .unwrap_or_default()
                .contains(down_failed)
        })
        .await
    );
    // Exactly 300 + 197 upserts synced and 3 dead, whatever the number of runs.
    assert!(
        eventually(20, || async {
            db.count("SELECT count(*) FROM dst_good").await == 300
                && db.count("SELECT count(*) FROM dst_poisoned").await == 197
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    db.exec("UPDATE good SET name = name || '!' WHERE id <= 25")
        .await;
    assert!(
        eventually(10, || async {
            db.count("SELECT count(*) FROM dst_good WHERE name LIKE '%!'")
                .await
                == 25
        })
        .await
    );
    // The update's run has settled once its items are counted.
    let synced_good = "ferry_items_synced_total{sync_job=\"good\",op=\"upsert\"} 325";
    assert!(
        eventually(10, || async {
            d.get("/metrics")
                .await
                .unwrap_or_default()
                .contains(synced_good)
        })
        .await,
        "never counted: {synced_good}"
    );
    let text = d.get("/metrics").await.expect("metrics");
    for (series, value) in [
        (
            "ferry_items_synced_total{sync_job=\"poisoned\",op=\"upsert\"}",
            197.0,
        ),
        (
            "ferry_items_failed_total{sync_job=\"poisoned\",result=\"dead\"}",
            3.0,
        ),
        (
            "ferry_items_failed_total{sync_job=\"poisoned\",result=\"reject\"}",
            3.0,
        ),
        (
            "ferry_changes_detected_total{sync_job=\"good\",op=\"upsert\"}",
            325.0,
        ),
        (
            "ferry_queue_tasks{sync_job=\"poisoned\",state=\"dead\"}",
            1.0,
        ),
    ] {
        assert_eq!(metric(&text, series), value, "{series}");
    }
    promtool_check_metrics(&promtool, &text);

    every_dashboard_expression_has_data(prom_port).await;
}

/// `run --once --pushgateway` PUTs the registry under job="ferry",
/// sync_group=<jobs>, with no instance label.
#[tokio::test(flavor = "multi_thread")]
async fn run_once_pushes_to_a_real_pushgateway() {
    let gateway = tool("prometheus-pushgateway");
    let db = TestDb::new().await;
    setup(&db).await;
    let cfg = ConfigDir::new();
    cfg.job("good", &job(&db, "good", &db.url));
    cfg.job("poisoned", &job(&db, "poisoned", &db.url));
    let port = free_port();
    let _gw = Killed(
        Command::new(gateway)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pushgateway"),
    );
    let url = format!("http://127.0.0.1:{port}");
    assert!(
        eventually(10, || async {
            reqwest::get(format!("{url}/-/ready"))
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await
    );
    let out = cfg.ferry(Some(&db.url), &["run", "--once", "--pushgateway", &url]);
    assert_eq!(code(&out), 1, "poisoned items are dead");
    let pushed = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = pushed
        .lines()
        .find(|l| {
            l.starts_with("ferry_items_synced_total")
                && l.contains("sync_job=\"good\"")
                && l.contains("op=\"upsert\"")
        })
        .unwrap_or_else(|| panic!("not pushed:\n{pushed}"));
    assert!(
        line.contains("job=\"ferry\"") && line.contains("sync_group=\"good+poisoned\""),
        "{line}"
    );
    assert!(line.contains("instance=\"\""), "no instance label: {line}");
    assert!(line.ends_with(" 300"), "{line}");
    assert!(pushed.contains("ferry_items_failed_total{instance=\"\",job=\"ferry\",result=\"dead\",sync_group=\"good+poisoned\",sync_job=\"poisoned\"} 3"), "{pushed}");
}
