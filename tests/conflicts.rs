//! Conflicts and echo suppression on both SQL targets: a field changed on
//! both sides since ferry last wrote it is decided by its owner and counted
//! once; a write that would leave a row as it is does not touch it.
mod common;

use common::*;

/// A source table and a target table of either kind, one job between them:
/// email owned by the source, phone by the target.
struct Pair {
    db: TestDb,
    cfg: ConfigDir,
    kind: Target,
    url: String,
    state: String,
}

impl Pair {
    async fn new(kind: Target) -> Pair {
        let db = TestDb::new().await;
        let cfg = ConfigDir::new();
        db.exec(
            "CREATE TABLE people (id bigint PRIMARY KEY, email text, phone text, updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
             INSERT INTO people (id, email, phone) VALUES (1, 'a@x', '111'), (2, 'b@x', '222');",
        )
        .await;
        let url = target_url(kind, &cfg, &db);
        TargetDb::open(kind, &url, &db)
            .await
            .exec("CREATE TABLE contacts (id bigint PRIMARY KEY, email text, phone text)")
            .await;
        cfg.job(
            "contacts",
            &format!(
                r#"
[source]
type = "postgres"
url = "{src}"
table = "people"
key = ["id"]

[detect]
strategy = "cursor"
cursor = "updated_at"

[target]
type = "{kind}"
url = "{url}"
table = "contacts"
key = ["id"]

[fields]
id = "id"
email = "email"
phone = {{ from = "phone", owner = "target" }}

[rules]
owner = "source"
"#,
                src = db.url,
                kind = kind.kind(),
            ),
        );
        let state = state_url(StateKind::Sqlite, &cfg, &db);
        Pair {
            db,
            cfg,
            kind,
            url,
            state,
        }
    }

    /// Runs once; returns (synced, conflicts) from the summary.
    fn run(&self) -> (u64, u64) {
        let out = self.cfg.run_once_ok(&self.state);
        (synced(&out, "contacts"), conflicts(&out, "contacts"))
    }

    async fn target(&self) -> TargetDb<'_> {
        TargetDb::open(self.kind, &self.url, &self.db).await
    }

    async fn rows(&self) -> Vec<String> {
        self.target()
            .await
            .strings(
                "SELECT CAST(id AS TEXT) || '|' || email || '|' || phone FROM contacts ORDER BY id",
            )
            .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_field_changed_on_both_sides_is_decided_by_its_owner_and_counted_once() {
    for kind in BOTH {
        let p = Pair::new(kind).await;
        assert_eq!(p.run(), (2, 0), "{kind:?}: initial sync");

        // Both sides change email of 1 (source owns it) between runs; only
        // the target changes email of 2, only the source its phone.
        p.target()
            .await
            .exec("UPDATE contacts SET email = 'target1@x' WHERE id = 1; UPDATE contacts SET email = 'target2@x' WHERE id = 2")
            .await;
        p.db.exec(
            "UPDATE people SET email = 'source1@x', updated_at = clock_timestamp() WHERE id = 1;
                   UPDATE people SET phone = '999', updated_at = clock_timestamp() WHERE id = 2",
        )
        .await;
        assert_eq!(p.run(), (2, 1), "{kind:?}: one field changed on both sides");
        assert_eq!(
            p.rows().await,
            ["1|source1@x|111", "2|b@x|222"],
            "{kind:?}: the source owns email and wins its conflict; on 2 only the target changed email (no conflict), and the source's value is written back with the phone change"
        );

        // Both sides change phone of 1, which the target owns: it keeps its value.
        p.target()
            .await
            .exec("UPDATE contacts SET phone = 'mine' WHERE id = 1")
            .await;
        p.db.exec("UPDATE people SET phone = '555', updated_at = clock_timestamp() WHERE id = 1")
            .await;
        assert_eq!(
            p.run(),
            (1, 1),
            "{kind:?}: the target-owned field's conflict"
        );
        assert_eq!(
            p.rows().await[0],
            "1|source1@x|mine",
            "{kind:?}: the target keeps phone"
        );

        // A second run finds nothing to do and no new conflict: no flip-flop.
        assert_eq!(p.run(), (0, 0), "{kind:?}: idle run");
        assert_eq!(p.rows().await, ["1|source1@x|mine", "2|b@x|222"]);

        // The source changes email of 1 again; the target did not: no conflict.
        p.db.exec(
            "UPDATE people SET email = 'again@x', updated_at = clock_timestamp() WHERE id = 1",
        )
        .await;
        assert_eq!(p.run(), (1, 0), "{kind:?}: a change on the source only");

        let status = p.cfg.ferry(Some(&p.state), &["status", "contacts"]);
        let text = String::from_utf8_lossy(&status.stdout);
        assert!(
            text.contains("conflicts    2 in all runs"),
            "{kind:?}: status shows the conflicts:\n{text}"
        );
    }
}

/// The items of the job's pending tasks, oldest first, as `ferry tasks show` prints them.
fn pending_items(p: &Pair) -> Vec<serde_json::Value> {
    let ids = task_ids(
        &p.cfg,
        &p.state,
        &["--state", "pending", "--job", "contacts"],
    );
    let mut items = Vec::new();
    for id in ids.iter().rev() {
        let shown = p.cfg.ferry(Some(&p.state), &["tasks", "show", id]);
        let task: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("task JSON");
        items.extend(task["items"].as_array().cloned().unwrap_or_default());
    }
    items
}

/// A change of a key whose last write has settled carries that write's
/// record through the queue (sync reads no ledger for it); a change of a key
/// with another change still queued does not, and sync reads the ledger: a
/// conflict is found either way.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_carries_the_last_write_only_while_no_other_change_of_its_key_is_queued() {
    let p = Pair::new(Target::Postgres).await;
    assert_eq!(p.run(), (2, 0), "initial sync");
    assert_eq!(
        code(&p.cfg.ferry(Some(&p.state), &["pause", "contacts"])),
        0
    );
    p.db.exec("UPDATE people SET email = 'first@x', updated_at = clock_timestamp() WHERE id = 1")
        .await;
    detect_while_paused(&p);
    let items = pending_items(&p);
    assert_eq!(items.len(), 1, "{items:?}");
    let carried = items[0]["prior"].as_str().unwrap_or_default().to_string();
    assert!(
        !carried.is_empty(),
        "the settled key's change carries what ferry wrote: {items:?}"
    );

    p.db.exec("UPDATE people SET email = 'second@x', updated_at = clock_timestamp() WHERE id = 1")
        .await;
    detect_while_paused(&p);
    let items = pending_items(&p);
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(
        items[0]["prior"].as_str(),
        Some(carried.as_str()),
        "{items:?}"
    );
    assert!(
        items[1].get("prior").is_none(),
        "a change of a key with a change queued carries nothing: {items:?}"
    );

    // The target changes the source-owned email meanwhile: the older change
    // is superseded, the newer one meets the conflict through the ledger.
    p.target()
        .await
        .exec("UPDATE contacts SET email = 'target@x' WHERE id = 1")
        .await;
    assert_eq!(
        code(&p.cfg.ferry(Some(&p.state), &["resume", "contacts"])),
        0
    );
    assert_eq!(p.run(), (1, 1), "one write, one conflict");
    assert_eq!(p.rows().await, ["1|second@x|111", "2|b@x|222"]);

    // Settled again: the next change carries, and its conflict is found
    // from what it carries.
    p.target()
        .await
        .exec("UPDATE contacts SET email = 'target again@x' WHERE id = 1")
        .await;
    p.db.exec("UPDATE people SET email = 'third@x', updated_at = clock_timestamp() WHERE id = 1")
        .await;
    assert_eq!(p.run(), (1, 1), "a carried record finds the conflict");
    assert_eq!(p.rows().await, ["1|third@x|111", "2|b@x|222"]);
}

/// Side A (PostgreSQL) and side B (either kind), each with a trigger that
/// stamps `updated_at` whenever a row really changes, and two jobs between
/// them: A owns `name`, B owns `phone`.
async fn bidirectional(kind: Target, db: &TestDb, cfg: &ConfigDir) -> String {
    db.exec(
        "CREATE TABLE a_people (id bigint PRIMARY KEY, name text, phone text, updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE FUNCTION a_stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at = clock_timestamp(); RETURN NEW; END $$;
         CREATE TRIGGER a_stamp BEFORE UPDATE ON a_people FOR EACH ROW EXECUTE FUNCTION a_stamp();
         INSERT INTO a_people (id, name, phone) SELECT i, 'name' || i, 'phone' || i FROM generate_series(1, 20) AS i;",
    )
    .await;
    let url = target_url(kind, cfg, db);
    let b_ddl = match kind {
        Target::Postgres => {
            "CREATE TABLE b_people (id bigint PRIMARY KEY, name text, phone text, updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
             CREATE FUNCTION b_stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at = clock_timestamp(); RETURN NEW; END $$;
             CREATE TRIGGER b_stamp BEFORE UPDATE ON b_people FOR EACH ROW EXECUTE FUNCTION b_stamp();"
        }
        Target::Sqlite => {
            "CREATE TABLE b_people (id INTEGER PRIMARY KEY, name TEXT, phone TEXT, updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')));
             CREATE TRIGGER b_stamp AFTER UPDATE ON b_people FOR EACH ROW
               BEGIN UPDATE b_people SET updated_at = strftime('%Y-%m-%dT%H:%M:%f', 'now') WHERE id = NEW.id; END;"
        }
        Target::Mysql => unreachable!("bidirectional pairs are tested on PostgreSQL and SQLite"),
    };
    TargetDb::open(kind, &url, db).await.exec(b_ddl).await;
    let job = |source_kind: &str,
               source_url: &str,
               from: &str,
               to_kind: &str,
               to_url: &str,
               to: &str,
               fields: &str| {
        format!(
            "[source]\ntype = \"{source_kind}\"\nurl = \"{source_url}\"\ntable = \"{from}\"\nkey = [\"id\"]\n\n\
             [detect]\nstrategy = \"cursor\"\ncursor = \"updated_at\"\n\n\
             [target]\ntype = \"{to_kind}\"\nurl = \"{to_url}\"\ntable = \"{to}\"\nkey = [\"id\"]\n\n\
             [fields]\nid = \"id\"\n{fields}\n\n[rules]\nowner = \"source\"\n"
        )
    };
    cfg.job(
        "a_to_b",
        &job(
            "postgres",
            &db.url,
            "a_people",
            kind.kind(),
            &url,
            "b_people",
            "name = \"name\"\nphone = { from = \"phone\", owner = \"target\" }",
        ),
    );
    cfg.job(
        "b_to_a",
        &job(
            kind.kind(),
            &url,
            "b_people",
            "postgres",
            &db.url,
            "a_people",
            "phone = \"phone\"\nname = { from = \"name\", owner = \"target\" }",
        ),
    );
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bidirectional_pair_converges_and_sends_no_echo() {
    use rand::{Rng, SeedableRng};
    for kind in BOTH {
        let db = TestDb::new().await;
        let cfg = ConfigDir::new();
        let url = bidirectional(kind, &db, &cfg).await;
        let b = TargetDb::open(kind, &url, &db).await;
        let state = state_url(StateKind::Sqlite, &cfg, &db);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        cfg.run_once_ok(&state);

        // 10 rounds of 10 edits on each side, each to the field its side owns.
        for round in 0..10 {
            for edit in 0..10 {
                let (a, b_id) = (rng.gen_range(1..=20), rng.gen_range(1..=20));
                db.exec(&format!(
                    "UPDATE a_people SET name = 'a{round}.{edit}' WHERE id = {a}"
                ))
                .await;
                b.exec(&format!(
                    "UPDATE b_people SET phone = 'b{round}.{edit}' WHERE id = {b_id}"
                ))
                .await;
            }
            cfg.run_once_ok(&state);
        }

        let a_rows =
            "SELECT CAST(id AS TEXT) || '|' || name || '|' || phone FROM a_people ORDER BY id";
        let b_rows =
            "SELECT CAST(id AS TEXT) || '|' || name || '|' || phone FROM b_people ORDER BY id";
        let stamps =
            "SELECT CAST(id AS TEXT) || '|' || CAST(updated_at AS TEXT) FROM a_people ORDER BY id";
        let b_stamps =
            "SELECT CAST(id AS TEXT) || '|' || CAST(updated_at AS TEXT) FROM b_people ORDER BY id";

        // Idle passes: each job recognises the rows the other wrote (its
        // ledger holds their hash) and sends nothing back; no row is touched.
        let (before_a, before_b) = (db.strings(stamps).await, b.strings(b_stamps).await);
        for pass in 1..=2 {
            let out = cfg.run_once_ok(&state);
            for job in ["a_to_b", "b_to_a"] {
                assert_eq!(
                    (changed(&out, job), synced(&out, job)),
                    (0, 0),
                    "{kind:?}: {job} on idle pass {pass}"
                );
            }
        }
        assert_eq!(
            db.strings(stamps).await,
            before_a,
            "{kind:?}: no echo written into A"
        );
        assert_eq!(
            b.strings(b_stamps).await,
            before_b,
            "{kind:?}: no echo written into B"
        );
        assert_eq!(
            db.strings(a_rows).await,
            b.strings(b_rows).await,
            "{kind:?}: both sides hold the same names (A's) and phones (B's)"
        );
    }
}

/// A job that reads another's target table but writes elsewhere is the next
/// step of a chain, not a reverse job: it carries every row.
#[tokio::test(flavor = "multi_thread")]
async fn a_chain_through_a_table_carries_every_row() {
    let db = TestDb::new().await;
    let cfg = ConfigDir::new();
    db.exec(
        "CREATE TABLE s (id bigint PRIMARY KEY, v text, updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE TABLE t (id bigint PRIMARY KEY, v text, updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE TABLE y (id bigint PRIMARY KEY, v text);
         INSERT INTO s (id, v) VALUES (1, 'one'), (2, 'two');",
    )
    .await;
    let job = |from: &str, to: &str, after: &str| {
        format!(
            "after = [{after}]\n[source]\ntype = \"postgres\"\nurl = \"{url}\"\ntable = \"{from}\"\nkey = [\"id\"]\n\
             [detect]\nstrategy = \"cursor\"\ncursor = \"updated_at\"\n\
             [target]\ntype = \"postgres\"\nurl = \"{url}\"\ntable = \"{to}\"\nkey = [\"id\"]\n\
             [fields]\nid = \"id\"\nv = \"v\"\n[rules]\nowner = \"source\"\n",
            url = db.url
        )
    };
    cfg.job("s_to_t", &job("s", "t", ""));
    cfg.job("t_to_y", &job("t", "y", "\"s_to_t\""));
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    cfg.run_once_ok(&state);
    assert_eq!(
        db.strings("SELECT CAST(id AS TEXT) || '|' || v FROM y ORDER BY id")
            .await,
        ["1|one", "2|two"]
    );
}

/// `run --once` of the paused job: it detects and queues, sends nothing,
/// and exits 1 (a paused job is not in sync).
fn detect_while_paused(p: &Pair) {
    let out = p.cfg.ferry(Some(&p.state), &["run", "--once"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("paused"));
}
