//! What the commands say must be true: a stopped, paused or busy run is not
//! a success; `trigger --wait` never hangs; discarding gives up on attempts,
//! not on objects; skipped deletes and refused deletes are counted; task
//! commands name what they could not do. Every check runs the real binary
//! against real PostgreSQL and reads its `--output json` documents.
mod common;

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The JSON document a command printed on stdout.
fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

/// The run of `job` in a `run --once --output json` (or `plan`) document.
fn run_of<'a>(doc: &'a Value, job: &str) -> &'a Value {
    let runs = doc
        .get("runs")
        .or_else(|| doc.get("plans"))
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no runs in {doc}"));
    runs.iter()
        .find(|r| r["job"] == job)
        .unwrap_or_else(|| panic!("no run of {job} in {doc}"))
}

fn number(v: &Value, field: &str) -> i64 {
    v[field]
        .as_i64()
        .unwrap_or_else(|| panic!("`{field}` is not a number in {v}"))
}

/// A source of `rows` rows and a target whose every row write sleeps
/// `sleep_ms` (a trigger), so that a sync takes long enough to interrupt.
async fn slow_tables(db: &TestDb, rows: i64, sleep_ms: u32) {
    db.exec(&format!(
        "CREATE TABLE src (id bigint PRIMARY KEY, name text, updated_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO src (id, name) SELECT g, 'n' || g FROM generate_series(1, {rows}) g;
         CREATE TABLE dst (id bigint PRIMARY KEY, name text, updated_at timestamptz);
         CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep({sleep_ms} / 1000.0); RETURN NEW; END $$;
         CREATE TRIGGER slow BEFORE INSERT OR UPDATE ON dst FOR EACH ROW EXECUTE FUNCTION slow();"
    ))
    .await;
}

/// A test database with [`slow_tables`], a config folder with the job
/// `slow` over them, and a state store of `kind`.
async fn slow_job_on(rows: i64, sleep_ms: u32, kind: StateKind) -> (TestDb, ConfigDir, String) {
    let db = TestDb::new().await;
    slow_tables(&db, rows, sleep_ms).await;
    let cfg = ConfigDir::new();
    cfg.job("slow", &slow_job(&db));
    let state = state_url(kind, &cfg, &db);
    (db, cfg, state)
}

fn slow_job(db: &TestDb) -> String {
    pg_job(
        &db.url,
        "src",
        "strategy = \"diff\"",
        "size = 10\nconcurrency = 1",
        &db.url,
        "dst",
    )
}

async fn in_sync(db: &TestDb) -> bool {
    db.difference("SELECT id, name FROM src", "SELECT id, name FROM dst")
        .await
        == 0
}

/// `ferry ARGS` started with piped output, returned once the target has
/// rows it did not have before (the run is syncing).
async fn spawn_syncing(db: &TestDb, cfg: &ConfigDir, state: &str, args: &[&str]) -> Child {
    let before = db.count("SELECT count(*) FROM dst").await;
    let child = cfg
        .command(Some(state), args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    assert!(
        eventually(30, || async {
            db.count("SELECT count(*) FROM dst").await > before
        })
        .await,
        "`ferry {}` synced nothing",
        args.join(" ")
    );
    child
}

fn signal(child: &Child, name: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{name} failed");
}

/// Waits for `child` at most `secs`; its output, and how long it took.
fn finish(child: Child, secs: u64) -> (Output, Duration) {
    let started = Instant::now();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().expect("wait"));
    while !waiter.is_finished() {
        if started.elapsed() > Duration::from_secs(secs) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("ferry did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = waiter.join().expect("waiter");
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn run_once_stopped_by_sigterm_says_stopped_and_counts_what_is_left() {
    let (db, cfg, state) = slow_job_on(600, 20, StateKind::Sqlite).await;
    for (name, code_expected) in [("TERM", 143), ("INT", 130)] {
        let child = spawn_syncing(&db, &cfg, &state, &["--output", "json", "run", "--once"]).await;
        signal(&child, name);
        let (out, took) = finish(child, 30);
        assert_eq!(code(&out), code_expected, "{}", stderr(&out));
        assert!(took < Duration::from_secs(10), "drain took {took:?}");
        let doc = json(&out);
        assert_eq!(doc["stopped_by"], format!("SIG{name}"));
        let run = run_of(&doc, "slow");
        assert_eq!(run["outcome"], "stopped", "{run}");
        let left = number(run, "left_queued_items");
        let synced = db.count("SELECT count(*) FROM dst").await;
        assert!(left > 0, "{run}");
        assert!(
            synced + left >= 600,
            "{synced} synced and {left} left of 600"
        );
        assert!(
            number(run, "synced") > 0,
            "a stopped run counts what it synced: {run}"
        );
    }
    // The text summary says it too.
    let child = spawn_syncing(&db, &cfg, &state, &["--output", "text", "run", "--once"]).await;
    signal(&child, "TERM");
    let (out, _) = finish(child, 30);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("stopped by SIGTERM"), "{text}");
    assert!(text.contains("item(s) left queued"), "{text}");
    assert!(!text.contains(" success "), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_wait_fails_fast_without_a_daemon_and_stops_on_signals_and_timeouts() {
    let (db, cfg, state) = slow_job_on(2000, 20, StateKind::Postgres).await;
    let hb = [("FERRY_DAEMON_HEARTBEAT", "1s")];

    // No daemon: exit 75 at once, saying what to do.
    let started = Instant::now();
    let out = cfg
        .command(Some(&state), &["trigger", "slow", "--wait"])
        .envs(hb)
        .output()
        .expect("trigger");
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        stderr(&out).contains("no daemon is running on this state store; start `ferry run`, or use `ferry run --once JOB`"),
        "{}",
        stderr(&out)
    );

    let mut daemon = cfg.daemon(&state, "", &hb).await;
    // The daemon is listed by status once its heartbeat is written.
    let listed = eventually(10, || async {
        let out = cfg
            .command(Some(&state), &["status", "--output", "json"])
            .envs(hb)
            .output()
            .expect("status");
        json(&out)["daemons"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["pid"] == daemon.child.id()))
    })
    .await;
    assert!(listed, "the daemon is not listed by `ferry status`");
    let out = cfg.ferry(Some(&state), &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("pid {}", daemon.child.id())),
        "{text}"
    );

    // --timeout: gives up waiting with 75; the run goes on in the daemon.
    let started = Instant::now();
    let out = cfg
        .command(
            Some(&state),
            &["trigger", "slow", "--wait", "--timeout", "1s"],
        )
        .envs(hb)
        .output()
        .expect("trigger");
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(stderr(&out).contains("still waiting after 1s"));

    // SIGINT / SIGTERM while waiting: 130 / 143 at once.
    let requests = "SELECT count(*) FROM ferry_triggers";
    for (name, expected) in [("INT", 130), ("TERM", 143)] {
        let before = db.count(requests).await;
        let child = cfg
            .command(Some(&state), &["trigger", "slow", "--wait"])
            .envs(hb)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("trigger");
        // Signalled once its request is recorded: it is waiting then.
        assert!(
            eventually(10, || async { db.count(requests).await > before }).await,
            "the trigger request was never recorded"
        );
        signal(&child, name);
        let (out, took) = finish(child, 10);
        assert_eq!(code(&out), expected, "{}", stderr(&out));
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    // The daemon stops: the next trigger fails fast again.
    let (rc, _) = daemon.terminate();
    assert_eq!(rc, 143, "{}", daemon.log_text());
    let out = cfg
        .command(Some(&state), &["trigger", "slow", "--wait"])
        .envs(hb)
        .output()
        .expect("trigger");
    assert_eq!(code(&out), 75, "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_job_is_not_a_success_for_trigger_wait_or_run_once() {
    let (db, cfg, state) = slow_job_on(30, 0, StateKind::Sqlite).await;
    let out = cfg.ferry(Some(&state), &["pause", "slow"]);
    assert_eq!(code(&out), 0);

    let out = cfg.ferry(Some(&state), &["--output", "json", "run", "--once"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let doc = json(&out);
    let run = run_of(&doc, "slow");
    assert_eq!(run["outcome"], "paused");
    assert_eq!(number(run, "left_queued_items"), 30);
    assert!(run["message"]
        .as_str()
        .is_some_and(|m| m.contains("paused: 30 item(s) wait unsent")));

    let daemon = cfg.daemon(&state, "", &[]).await;
    let out = cfg.ferry(Some(&state), &["trigger", "slow", "--wait"]);
    assert_eq!(code(&out), 1, "{}", daemon.log_text());
    assert!(String::from_utf8_lossy(&out.stdout).contains("slow: paused"));
    assert!(stderr(&out).contains("wait unsent"), "{}", stderr(&out));
    assert_eq!(db.count("SELECT count(*) FROM dst").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_finds_the_job_busy_names_the_holder_and_a_dead_holder_is_taken_over() {
    for kind in [StateKind::Sqlite, StateKind::Postgres] {
        let (db, cfg, state) = slow_job_on(300, 0, kind).await;
        // Holder: a run that stops itself right after taking the job lease.
        let mut holder = spawn_at_fault(&cfg, &state, "stop", "detecting", &[]);
        let out = cfg.ferry(Some(&state), &["--output", "json", "run", "--once"]);
        assert_eq!(code(&out), 75, "{kind:?}: {}", stderr(&out));
        let doc = json(&out);
        let run = run_of(&doc, "slow");
        assert_eq!(run["outcome"], "busy", "{run}");
        assert_eq!(run["busy_holder"]["pid"], holder.id(), "{run}");
        let message = run["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("detection skipped")
                && message.contains(&format!("pid {}", holder.id())),
            "{message}"
        );
        assert_eq!(db.count("SELECT count(*) FROM dst").await, 0);

        // The holder dies (on this host): the next run takes the lease at
        // once, long before it would expire (15 s).
        holder.kill().expect("kill");
        holder.wait().expect("wait");
        let started = Instant::now();
        let out = cfg.ferry(Some(&state), &["--output", "json", "run", "--once"]);
        assert_eq!(code(&out), 0, "{kind:?}: {}", stderr(&out));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(run_of(&json(&out), "slow")["outcome"], "success");
        assert!(in_sync(&db).await, "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn discarding_a_dead_task_gives_up_on_the_attempt_not_on_the_objects() {
    for kind in [StateKind::Sqlite, StateKind::Postgres] {
        let db = TestDb::new().await;
        db.exec(
            "CREATE TABLE src (id bigint PRIMARY KEY, name text, updated_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO src (id, name) SELECT g, 'n' || g FROM generate_series(1, 50) g;
             UPDATE src SET name = 'poison' WHERE id IN (7, 8);
             CREATE TABLE dst (id bigint PRIMARY KEY, name text CHECK (name <> 'poison'), updated_at timestamptz);",
        )
        .await;
        let cfg = ConfigDir::new();
        cfg.job(
            "people",
            &pg_job(
                &db.url,
                "src",
                "strategy = \"diff\"",
                "size = 100",
                &db.url,
                "dst",
            ),
        );
        let state = state_url(kind, &cfg, &db);
        let out = cfg.ferry(Some(&state), &["run", "--once"]);
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        let dead = task_ids(&cfg, &state, &["--state", "dead"]);
        assert_eq!(dead.len(), 1, "{dead:?}");

        let args: Vec<&str> = ["tasks", "discard", dead[0].as_str(), "--yes"].to_vec();
        let out = cfg.ferry(Some(&state), &args);
        assert_eq!(code(&out), 0, "{}", stderr(&out));

        // Out of sync until the keys are written: status says so, and a
        // plan (a diff) finds them changed again.
        let status = json(&cfg.ferry(Some(&state), &["status", "--output", "json"]));
        assert_eq!(status["jobs"][0]["discarded_keys"], 2, "{status}");
        let plan = json(&cfg.ferry(Some(&state), &["plan", "--output", "json"]));
        let plan = run_of(&plan, "people");
        assert_eq!(
            number(plan, "inserts") + number(plan, "updates"),
            2,
            "{plan}"
        );

        // Once the target takes them, a run sends exactly them.
        db.exec("ALTER TABLE dst DROP CONSTRAINT dst_name_check")
            .await;
        let out = cfg.ferry(Some(&state), &["--output", "json", "run", "--once"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(number(run_of(&json(&out), "people"), "synced"), 2);
        assert!(in_sync(&db).await, "{kind:?}");
        let status = json(&cfg.ferry(Some(&state), &["status", "--output", "json"]));
        assert_eq!(status["jobs"][0]["discarded_keys"], 0, "{status}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ignored_deletes_are_skipped_and_refused_mass_deletes_count_the_scan() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (id bigint PRIMARY KEY, name text, updated_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO src (id, name) SELECT g, 'n' || g FROM generate_series(1, 100) g;
         CREATE TABLE dst (id bigint PRIMARY KEY, name text, updated_at timestamptz);
         CREATE TABLE dst2 (id bigint PRIMARY KEY, name text, updated_at timestamptz);",
    )
    .await;
    let cfg = ConfigDir::new();
    let ignoring = pg_job(
        &db.url,
        "src",
        "strategy = \"diff\"",
        "size = 100",
        &db.url,
        "dst",
    )
    .replace("deletes = \"propagate\"", "deletes = \"ignore\"");
    cfg.job("ignoring", &ignoring);
    cfg.job(
        "guarded",
        &pg_job(
            &db.url,
            "src",
            "strategy = \"diff\"",
            "size = 100",
            &db.url,
            "dst2",
        ),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    cfg.run_once_ok(&state);

    // Ignored deletes delete nothing: the mass-delete guard lets them by.
    db.exec("DELETE FROM src WHERE id <= 80").await;
    let out = cfg.ferry(
        Some(&state),
        &["--output", "json", "run", "--once", "ignoring"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc = json(&out);
    let run = run_of(&doc, "ignoring");
    assert_eq!(number(run, "skipped"), 80, "{run}");
    assert_eq!(number(run, "synced"), 0, "{run}");
    assert_eq!(db.count("SELECT count(*) FROM dst").await, 100);
    let text = cfg
        .command(
            Some(&state),
            &["--output", "text", "run", "--once", "ignoring"],
        )
        .output()
        .expect("run");
    assert_eq!(skipped_column(&text, "ignoring"), 0);

    // 80 of 100 deletes: refused, with the scan and the refusal counted.
    let out = cfg.ferry(
        Some(&state),
        &["--output", "json", "run", "--once", "guarded"],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let run = run_of(&json(&out), "guarded").clone();
    assert_eq!(number(&run, "scanned"), 20, "{run}");
    assert_eq!(number(&run, "refused_deletes"), 80, "{run}");
    assert_eq!(db.count("SELECT count(*) FROM dst2").await, 100);
    // plan --allow-mass-delete previews them; nothing is written.
    let out = cfg.ferry(
        Some(&state),
        &["--output", "json", "plan", "--allow-mass-delete", "guarded"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(number(run_of(&json(&out), "guarded"), "deletes"), 80);
    assert_eq!(db.count("SELECT count(*) FROM dst2").await, 100);
}

/// The SKIPPED column (the last) of `job`'s summary line.
fn skipped_column(out: &Output, job: &str) -> u64 {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(job))
        .unwrap_or_else(|| panic!("no summary line for {job}:\n{stdout}"));
    line.split_whitespace()
        .last()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn task_commands_name_each_id_they_cannot_act_on() {
    let (_db, cfg, state) = slow_job_on(5, 0, StateKind::Sqlite).await;
    cfg.run_once_ok(&state);
    let tasks = json(&cfg.ferry(
        Some(&state),
        &["--output", "json", "tasks", "--state", "done"],
    ));
    let done = tasks["tasks"][0]["id"]
        .as_i64()
        .expect("a done task")
        .to_string();

    let out = cfg.ferry(Some(&state), &["tasks", "retry", &done, "999999"]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("task {done} not retried: it is done")),
        "{err}"
    );
    assert!(
        err.contains("task 999999 not retried: there is no such task"),
        "{err}"
    );
    let out = cfg.ferry(Some(&state), &["tasks", "discard", "999999", "--yes"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("task 999999 not discarded"));
}

#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let cfg = ConfigDir::new();
    cfg.job(
        "a",
        "[source]\ntype = \"file\"\npath = \"a.csv\"\nkey = [\"id\"]\n[target]\ntype = \"file\"\npath = \"out\"\nformat = \"jsonl\"\n[rules]\nowner = \"source\"\n",
    );
    for args in [&["jobs"][..], &["--output", "json", "jobs"][..]] {
        let mut child = cfg
            .command(None, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // The reader goes away before ferry has printed anything (it is
        // still starting up): its first write meets EPIPE.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
}

/// A second `run --once` while another process still syncs the job exits
/// 0 only once nothing of the job is queued or running: it helps drain and
/// waits for the other's tasks in flight.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_succeeds_only_when_nothing_of_the_job_is_left_in_flight() {
    let (db, cfg, state) = slow_job_on(300, 20, StateKind::Postgres).await;
    let first = cfg
        .command(Some(&state), &["run", "--once"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    assert!(
        eventually(30, || async {
            db.count("SELECT count(*) FROM dst").await > 0
        })
        .await,
        "nothing synced"
    );
    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary_run(&out, "slow")["outcome"], "success");
    // At its exit everything is in the target and nothing is in flight.
    assert_eq!(db.count("SELECT count(*) FROM dst").await, 300);
    assert_eq!(
        db.count("SELECT count(*) FROM ferry_tasks WHERE state <> 'done'")
            .await,
        0
    );
    let (out, _) = finish(first, 30);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}
