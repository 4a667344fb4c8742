//! The target conformance suite: each behaviour written once and run on
//! every target of this build (PostgreSQL, MariaDB, SQLite, file, HTTP,
//! RabbitMQ, NATS, Redis), each on its real system. What a target declares
//! in its connector folder (`connectors::REGISTRY`: whether it keeps rows,
//! reads images, generates keys, refuses single items) decides what each
//! behaviour expects of it. A target that cannot carry out a rule must have
//! the job refused by `ferry check`, naming why. A new target joins by
//! adding its set-up to `conformance/targets.rs` and a line to `suite!`.
mod common;
mod conformance {
    pub mod targets;
}

use std::collections::BTreeMap;

use common::*;
use conformance::targets::{Row, Under, KINDS};
use ferry::config::registry::{Abilities, TargetSpec};
use ferry::connectors::REGISTRY;

fn spec(kind: &str) -> &'static TargetSpec {
    REGISTRY.target(kind).expect("a target kind")
}

fn keeps_rows(kind: &str) -> bool {
    spec(kind).writes.keeps_rows()
}

fn abilities(kind: &str) -> Abilities {
    spec(kind).abilities
}

/// One job's world: the source table `people`, the target, the config.
struct World<'a> {
    db: &'a TestDb,
    cfg: &'a ConfigDir,
    state: String,
    under: Under<'a>,
}

impl<'a> World<'a> {
    async fn new(kind: &'static str, db: &'a TestDb, cfg: &'a ConfigDir) -> World<'a> {
        db.exec(
            "CREATE TABLE people (id bigint PRIMARY KEY, name text, note text, tier text);
             INSERT INTO people VALUES (1, 'ada', 'n1', 't1'), (2, 'bo', 'n2', 't2'), (3, 'cy', 'n3', 't3');",
        )
        .await;
        World {
            db,
            cfg,
            state: state_url(StateKind::Sqlite, cfg, db),
            under: Under::new(kind, cfg, db).await,
        }
    }

    /// Writes `jobs/people.toml`: `target_extra` goes into `[target]`,
    /// `fields` is a whole `[fields]` section or empty, `rules` the lines of `[rules]`.
    fn job(&self, target: &str, fields: &str, rules: &str) {
        self.cfg.job(
            "people",
            &format!(
                "[source]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"people\"\nkey = [\"id\"]\n\n\
                 [detect]\nstrategy = \"diff\"\nmax_delete_ratio = 1.0\n\n\
                 [batch]\nmax_attempts = 2\nbackoff = {{ initial = \"10ms\", max = \"10ms\" }}\n\n\
                 [target]\n{target}\n\n{fields}\n[rules]\n{rules}\n",
                self.db.url
            ),
        );
    }

    fn plain_job(&self, rules: &str) {
        self.job(&self.under.target_toml("people_t", "id"), "", rules);
    }

    fn run(&self) -> std::process::Output {
        self.cfg.ferry(Some(&self.state), &["run", "--once"])
    }

    fn run_ok(&self) -> std::process::Output {
        self.cfg.run_once_ok(&self.state)
    }

    /// The source's rows, in the shape the target's are read in.
    async fn source_rows(&self) -> BTreeMap<i64, Row> {
        self.db
            .strings("SELECT CAST(id AS TEXT) || '|' || COALESCE(name, '~') || '|' || COALESCE(note, '~') || '|' || COALESCE(tier, '~') FROM people ORDER BY id")
            .await
            .iter()
            .map(|line| {
                let c: Vec<&str> = line.split('|').collect();
                let text = |s: &str| (s != "~").then(|| s.to_string());
                let row = Row {
                    name: text(c[1]),
                    note: text(c[2]),
                    tier: text(c[3]),
                    deleted: false,
                };
                (c[0].parse().expect("id"), row)
            })
            .collect()
    }

    async fn target_rows(&self) -> BTreeMap<i64, Row> {
        self.under.rows("people_t").await
    }

    /// Runs `ferry check` on the job as written and expects it refused
    /// (exit 78) with a message that says `why`.
    fn refused(&self, why: &str) {
        let out = self.cfg.ferry(None, &["check"]);
        assert_eq!(
            code(&out),
            78,
            "{}: the job must be refused: {}",
            self.under.kind,
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(why),
            "{}: {}",
            self.under.kind,
            stderr(&out)
        );
    }
}

/// Runs `behaviour` on a fresh world of `kind` and cleans up.
async fn with_world<F>(kind: &'static str, behaviour: F)
where
    F: for<'w> AsyncFnOnce(&'w World<'w>),
{
    let db = TestDb::new().await;
    let cfg = ConfigDir::new();
    let world = World::new(kind, &db, &cfg).await;
    behaviour(&world).await;
    world.under.clean().await;
}

const PROPAGATE: &str = "owner = \"source\"\ndeletes = \"propagate\"";

async fn inserts_updates_and_deletes(w: &World<'_>) {
    w.plain_job(PROPAGATE);
    w.run_ok();
    assert_eq!(
        w.target_rows().await,
        w.source_rows().await,
        "{}: insert",
        w.under.kind
    );
    w.db.exec("UPDATE people SET name = 'bob' WHERE id = 2; DELETE FROM people WHERE id = 3; INSERT INTO people VALUES (4, 'di', NULL, NULL)")
        .await;
    let out = w.run_ok();
    assert_eq!(changed(&out, "people"), 3, "{}", w.under.kind);
    assert_eq!(
        w.target_rows().await,
        w.source_rows().await,
        "{}: update, delete, insert",
        w.under.kind
    );
    let out = w.run_ok();
    assert_eq!(
        synced(&out, "people"),
        0,
        "{}: a repeat run sends nothing",
        w.under.kind
    );
}

async fn ignored_deletes_leave_the_target_alone(w: &World<'_>) {
    w.plain_job("owner = \"source\"\ndeletes = \"ignore\"");
    w.run_ok();
    w.db.exec("DELETE FROM people WHERE id = 3").await;
    w.run_ok();
    let rows = w.target_rows().await;
    assert_eq!(
        rows.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3],
        "{}: the deleted object stays",
        w.under.kind
    );
    if !keeps_rows(w.under.kind) {
        let records = w.under.records().await;
        assert!(
            records.iter().all(|r| r.envelope["op"] == "upsert"),
            "{}: no delete is sent: {records:?}",
            w.under.kind
        );
    }
}

async fn soft_deletes_mark_and_a_returning_object_is_unmarked(w: &World<'_>) {
    w.plain_job("owner = \"source\"\ndeletes = \"soft\"\nsoft_delete = \"deleted_at\"");
    if !keeps_rows(w.under.kind) {
        return w.refused("keeps no rows");
    }
    w.run_ok();
    w.db.exec("DELETE FROM people WHERE id = 2").await;
    w.run_ok();
    let rows = w.target_rows().await;
    assert!(
        rows[&2].deleted && !rows[&1].deleted,
        "{}: {rows:?}",
        w.under.kind
    );
    w.db.exec("INSERT INTO people VALUES (2, 'bo', 'n2', 't2')")
        .await;
    w.run_ok();
    assert!(!w.target_rows().await[&2].deleted, "{}: back", w.under.kind);
}

async fn owners_decide_each_field(w: &World<'_>) {
    let fields = "[fields]\nid = \"id\"\nname = \"name\"\nnote = { from = \"note\", owner = \"fill\" }\ntier = { from = \"tier\", owner = \"target\" }\n";
    w.job(&w.under.target_toml("people_t", "id"), fields, PROPAGATE);
    if !keeps_rows(w.under.kind) {
        return w.refused("keeps no rows");
    }
    w.run_ok();
    let sql = w.under.sql().expect("a SQL target");
    sql.exec("UPDATE people_t SET note = NULL WHERE id = 1")
        .await;
    sql.exec("UPDATE people_t SET note = 'theirs', tier = 'gold' WHERE id = 2")
        .await;
    w.db.exec("UPDATE people SET note = 'n1b', tier = 'x' WHERE id = 1; UPDATE people SET name = 'bob', note = 'n2b', tier = 'y' WHERE id = 2")
        .await;
    w.run_ok();
    let rows = w.target_rows().await;
    let row = |name: &str, note: &str, tier: &str| Row {
        name: Some(name.into()),
        note: Some(note.into()),
        tier: Some(tier.into()),
        deleted: false,
    };
    assert_eq!(
        rows[&1],
        row("ada", "n1b", "t1"),
        "{}: fill fills an empty field; target keeps its own",
        w.under.kind
    );
    assert_eq!(
        rows[&2],
        row("bob", "theirs", "gold"),
        "{}: source wins; fill and target keep the row's",
        w.under.kind
    );
}

async fn newest_lets_the_later_change_win(w: &World<'_>) {
    w.db.exec("ALTER TABLE people ADD COLUMN changed_at timestamptz NOT NULL DEFAULT '2026-02-01T00:00:00Z'")
        .await;
    let clock = match w.under.kind {
        "postgres" => "timestamptz",
        _ => "text",
    };
    w.under
        .create_table(|_| format!("ALTER TABLE people_t ADD COLUMN modified_at {clock}"))
        .await;
    let target = format!(
        "{}\nupdated_at = \"modified_at\"",
        w.under.target_toml("people_t", "id")
    );
    let fields =
        "[fields]\nid = \"id\"\nname = \"name\"\ntier = { from = \"tier\", owner = \"newest\" }\n";
    w.job(&target, fields, PROPAGATE);
    w.cfg.job(
        "people",
        &std::fs::read_to_string(w.cfg.path().join("jobs/people.toml"))
            .expect("job")
            .replace(
                "strategy = \"diff\"\nmax_delete_ratio = 1.0",
                "strategy = \"cursor\"\ncursor = \"changed_at\"",
            ),
    );
    if !keeps_rows(w.under.kind) {
        return w.refused("keeps no rows");
    }
    w.run_ok();
    let sql = w.under.sql().expect("a SQL target");
    // The target's tier of 1 changed after the source's next change.
    sql.exec("UPDATE people_t SET tier = 'theirs', modified_at = '2026-03-01T00:00:00+00:00' WHERE id = 1")
        .await;
    w.db.exec(
        "UPDATE people SET name = 'ada2', tier = 'new1', changed_at = '2026-02-15T00:00:00Z' WHERE id = 1;
         UPDATE people SET tier = 'new2', changed_at = '2026-02-15T00:00:00Z' WHERE id = 2",
    )
    .await;
    w.run_ok();
    let rows = w.target_rows().await;
    assert_eq!(
        (rows[&1].name.as_deref(), rows[&1].tier.as_deref()),
        (Some("ada2"), Some("theirs")),
        "{}: the target's later change keeps its tier; the source owns the name",
        w.under.kind
    );
    assert_eq!(
        rows[&2].tier.as_deref(),
        Some("new2"),
        "{}: the source's later change wins",
        w.under.kind
    );
}

async fn conflicts_are_counted_where_the_target_reports_images(w: &World<'_>) {
    w.plain_job(PROPAGATE);
    w.run_ok();
    if let Some(sql) = w.under.sql() {
        sql.exec("UPDATE people_t SET name = 'theirs' WHERE id = 1")
            .await;
    }
    w.db.exec("UPDATE people SET name = 'ours' WHERE id = 1")
        .await;
    let out = w.run_ok();
    let expected = u64::from(abilities(w.under.kind).images);
    assert_eq!(
        conflicts(&out, "people"),
        expected,
        "{}: conflicts counted",
        w.under.kind
    );
    assert_eq!(
        w.target_rows().await[&1].name.as_deref(),
        Some("ours"),
        "{}: the owner decided",
        w.under.kind
    );
}

async fn a_poison_row_is_isolated(w: &World<'_>) {
    w.db.exec("INSERT INTO people SELECT g, CASE WHEN g = 7 THEN 'poison' ELSE 'p' || g END, NULL, NULL FROM generate_series(4, 12) g")
        .await;
    w.plain_job(PROPAGATE);
    let out = w.run();
    let rows = w.target_rows().await;
    if abilities(w.under.kind).refuses_items {
        assert_eq!(code(&out), 1, "{}: {}", w.under.kind, stderr(&out));
        assert_eq!(
            failed(&out, "people"),
            1,
            "{}: only the poison row fails",
            w.under.kind
        );
        assert_eq!(rows.len(), 11, "{}: every other row arrives", w.under.kind);
        assert!(!rows.contains_key(&7), "{}", w.under.kind);
        let dead = dead_items(w.cfg, &w.state, "people");
        assert!(
            dead.contains("poison"),
            "{}: the dead item is the poison row: {dead}",
            w.under.kind
        );
    } else {
        // Nothing here refuses a change: the row arrives like any other.
        assert_eq!(code(&out), 0, "{}: {}", w.under.kind, stderr(&out));
        assert_eq!(rows.len(), 12, "{}", w.under.kind);
        assert_eq!(rows[&7].name.as_deref(), Some("poison"), "{}", w.under.kind);
    }
}

async fn a_write_repeated_after_a_crash_before_its_settle_changes_nothing(w: &World<'_>) {
    w.plain_job(PROPAGATE);
    let leases = [("FERRY_JOB_LEASE", "1s"), ("FERRY_TASK_LEASE", "1s")];
    let mut child = spawn_at_fault(w.cfg, &w.state, "pause", "after-write", &leases);
    child.kill().expect("kill");
    child.wait().expect("wait");
    let out = run_after_killed(w.cfg, &w.state);
    assert_eq!(code(&out), 0, "{}: {}", w.under.kind, stderr(&out));
    assert_eq!(
        w.target_rows().await,
        w.source_rows().await,
        "{}",
        w.under.kind
    );
    if keeps_rows(w.under.kind) {
        return;
    }
    // At least once: a repeat is the same record, with the same identity.
    let records = w.under.records().await;
    let mut by_version: BTreeMap<String, Vec<&serde_json::Value>> = BTreeMap::new();
    for r in &records {
        by_version
            .entry(r.envelope["version"].to_string())
            .or_default()
            .push(&r.envelope);
    }
    assert_eq!(
        by_version.len(),
        3,
        "{}: every change arrives: {records:?}",
        w.under.kind
    );
    for copies in by_version.values() {
        assert!(
            copies.windows(2).all(|p| p[0] == p[1]),
            "{}: repeats are identical: {copies:?}",
            w.under.kind
        );
    }
    let ids: std::collections::BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert!(
        ids.iter()
            .all(|id| !id.is_empty() && !id.starts_with("no ")),
        "{}: each copy names itself: {ids:?}",
        w.under.kind
    );
    // NATS (Nats-Msg-Id) and Redis (its markers) drop a resent change.
    if matches!(w.under.kind, "nats" | "redis") {
        assert_eq!(
            records.len(),
            3,
            "{}: exactly once: {records:?}",
            w.under.kind
        );
    }
}

async fn keys_the_target_generates_are_translated(w: &World<'_>) {
    w.under
        .create_table(|t| match t {
            Target::Postgres => "CREATE TABLE people_g (gid bigserial PRIMARY KEY, source_id bigint, name text)".into(),
            Target::Sqlite => "CREATE TABLE people_g (gid INTEGER PRIMARY KEY AUTOINCREMENT, source_id INTEGER, name TEXT)".into(),
            Target::Mysql => "CREATE TABLE people_g (gid BIGINT AUTO_INCREMENT PRIMARY KEY, source_id BIGINT, name TEXT)".into(),
        })
        .await;
    let fields = "[fields]\nsource_id = \"id\"\nname = \"name\"\n";
    w.job(&w.under.target_toml("people_g", "gid"), fields, PROPAGATE);
    if !abilities(w.under.kind).generates_keys {
        return w.refused("does not generate keys");
    }
    let sql = w.under.sql().expect("a SQL target");
    let read = "SELECT CAST(source_id AS CHAR) FROM people_g ORDER BY source_id";
    let read = if w.under.kind == "mysql" {
        read.to_string()
    } else {
        read.replace("CHAR", "TEXT")
    };
    w.run_ok();
    assert_eq!(
        sql.strings(&read).await,
        ["1", "2", "3"],
        "{}",
        w.under.kind
    );
    let gid_of_2 = "SELECT CAST(gid AS TEXT) || ':' || name FROM people_g WHERE source_id = 2";
    let before = sql.strings(gid_of_2).await;
    w.db.exec("UPDATE people SET name = 'bob' WHERE id = 2; DELETE FROM people WHERE id = 3")
        .await;
    w.run_ok();
    assert_eq!(
        sql.strings(&read).await,
        ["1", "2"],
        "{}: the delete found its row",
        w.under.kind
    );
    let after = sql.strings(gid_of_2).await;
    assert_eq!(
        after[0].split(':').next(),
        before[0].split(':').next(),
        "{}: the same row",
        w.under.kind
    );
    assert!(after[0].ends_with(":bob"), "{}: {after:?}", w.under.kind);
}

#[test]
fn every_target_of_the_build_is_in_the_suite() {
    let mut declared = REGISTRY.kinds(false);
    declared.sort_unstable();
    let mut here = KINDS.to_vec();
    here.sort_unstable();
    assert_eq!(
        declared, here,
        "add the new target to conformance/targets.rs and suite!"
    );
}

/// A module per target, a test per behaviour.
macro_rules! suite {
    ($($kind:ident),*) => {$(
        mod $kind {
            use super::*;
            const KIND: &str = stringify!($kind);
            #[tokio::test(flavor = "multi_thread")]
            async fn inserts_updates_and_deletes() { with_world(KIND, super::inserts_updates_and_deletes).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn ignored_deletes_leave_the_target_alone() { with_world(KIND, super::ignored_deletes_leave_the_target_alone).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn soft_deletes_mark_and_a_returning_object_is_unmarked() { with_world(KIND, super::soft_deletes_mark_and_a_returning_object_is_unmarked).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn owners_decide_each_field() { with_world(KIND, super::owners_decide_each_field).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn newest_lets_the_later_change_win() { with_world(KIND, super::newest_lets_the_later_change_win).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn conflicts_are_counted_where_the_target_reports_images() { with_world(KIND, super::conflicts_are_counted_where_the_target_reports_images).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn a_poison_row_is_isolated() { with_world(KIND, super::a_poison_row_is_isolated).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn a_write_repeated_after_a_crash_before_its_settle_changes_nothing() { with_world(KIND, super::a_write_repeated_after_a_crash_before_its_settle_changes_nothing).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn keys_the_target_generates_are_translated() { with_world(KIND, super::keys_the_target_generates_are_translated).await }
        }
    )*};
}

suite!(postgres, mysql, sqlite, file, http, amqp, nats, redis);
