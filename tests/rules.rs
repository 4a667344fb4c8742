//! Write rules on both SQL targets: modes, delete rules, field owners, and
//! the operations a job carries (`[detect] ops`).
mod common;

use common::*;

/// A target table `contacts(id, email, phone, notes, deleted_at)` with two
/// rows that ferry did not write, and a way to read it back.
struct Fixture {
    cfg: ConfigDir,
    db: TestDb,
    target: Target,
    url: String,
}

impl Fixture {
    async fn new(target: Target) -> Fixture {
        let cfg = ConfigDir::new();
        let db = TestDb::new().await;
        let ddl = "CREATE TABLE contacts (id bigint PRIMARY KEY, email text, phone text, notes text, deleted_at text);
                   INSERT INTO contacts (id, email, phone, notes) VALUES (1, 'old@x', 'keep', NULL), (2, 'old2@x', 'keep2', 'mine');";
        let url = target_url(target, &cfg, &db);
        TargetDb::open(target, &url, &db).await.exec(ddl).await;
        Fixture {
            cfg,
            db,
            target,
            url,
        }
    }

    fn job(&self, target_extra: &str, rules: &str) -> &Self {
        let kind = self.target.kind();
        self.cfg.job(
            "contacts",
            &format!(
                r#"
[source]
type = "file"
path = "people.csv"
key = ["id"]

[target]
type = "{kind}"
url = "{url}"
table = "contacts"
key = ["id"]
{target_extra}

[fields]
id = "id"
email = "email"
phone = {{ from = "phone", owner = "target" }}
notes = {{ from = "notes", owner = "fill" }}

[rules]
owner = "source"
{rules}
"#,
                url = self.url
            ),
        );
        self
    }

    /// Adds a `[detect]` section with `lines` to the job written by `job`.
    fn detect(&self, lines: &str) -> &Self {
        let path = self.cfg.path().join("jobs/contacts.toml");
        let text = std::fs::read_to_string(path).expect("job file");
        self.cfg.job(
            "contacts",
            &text.replace("[target]", &format!("[detect]\n{lines}\n\n[target]")),
        );
        self
    }

    fn source(&self, rows: &[&str]) -> &Self {
        self.cfg.file(
            "people.csv",
            &format!("id,email,phone,notes\n{}\n", rows.join("\n")),
        );
        self
    }

    fn run(&self, expect_code: i32) {
        let out = self.cfg.ferry(
            Some(&format!(
                "sqlite://{}",
                self.cfg.path().join("state.db").display()
            )),
            &["run", "--once"],
        );
        assert_eq!(
            code(&out),
            expect_code,
            "{:?}: {}",
            self.target,
            stderr(&out)
        );
    }

    /// `id|email|phone|notes|deleted?` per row, by id.
    async fn rows(&self) -> Vec<String> {
        let sql = "SELECT CAST(id AS TEXT) || '|' || COALESCE(email, '') || '|' || COALESCE(phone, '') || '|' || COALESCE(notes, '') || '|' ||
                          CASE WHEN deleted_at IS NULL THEN 'live' ELSE 'deleted' END FROM contacts ORDER BY id";
        TargetDb::open(self.target, &self.url, &self.db)
            .await
            .strings(sql)
            .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upsert_honours_owners_and_soft_deletes_come_back() {
    for target in BOTH {
        let f = Fixture::new(target).await;
        f.job(
            "mode = \"upsert\"",
            "deletes = \"soft\"\nsoft_delete = \"deleted_at\"",
        );
        f.source(&["1,a@x,111,n1", "2,b@x,222,n2", "3,c@x,333,n3"])
            .run(0);
        assert_eq!(
            f.rows().await,
            [
                "1|a@x|keep|n1|live",
                "2|b@x|keep2|mine|live",
                "3|c@x|333|n3|live"
            ],
            "{target:?}: target-owned phone kept, fill only where empty, insert writes everything"
        );

        f.source(&["1,a@x,111,n1", "2,b@x,222,n2"]).run(0);
        assert_eq!(
            f.rows().await[2],
            "3|c@x|333|n3|deleted",
            "{target:?}: soft delete"
        );

        f.source(&["1,a@x,111,n1", "2,b@x,222,n2", "3,c2@x,333,n3"])
            .run(0);
        assert_eq!(
            f.rows().await[2],
            "3|c2@x|333|n3|live",
            "{target:?}: un-deleted when it comes back"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn insert_mode_never_updates_and_update_mode_never_inserts() {
    for target in BOTH {
        let f = Fixture::new(target).await;
        f.job("mode = \"insert\"", "deletes = \"ignore\"");
        f.source(&["1,a@x,111,n1", "3,c@x,333,n3"]).run(0);
        assert_eq!(
            f.rows().await,
            [
                "1|old@x|keep||live",
                "2|old2@x|keep2|mine|live",
                "3|c@x|333|n3|live"
            ],
            "{target:?}: insert"
        );

        let f = Fixture::new(target).await;
        f.job("mode = \"update\"", "deletes = \"ignore\"");
        f.source(&["1,a@x,111,n1", "3,c@x,333,n3"]).run(0);
        assert_eq!(
            f.rows().await,
            ["1|a@x|keep|n1|live", "2|old2@x|keep2|mine|live"],
            "{target:?}: update"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ignore_keeps_deleted_objects_and_mirror_removes_them() {
    for target in BOTH {
        let f = Fixture::new(target).await;
        f.job("mode = \"upsert\"", "deletes = \"ignore\"");
        f.source(&["1,a@x,111,n1", "3,c@x,333,n3"]).run(0);
        f.source(&["1,a@x,111,n1"]).run(0);
        assert_eq!(f.rows().await.len(), 3, "{target:?}: ignore keeps row 3");

        let f = Fixture::new(target).await;
        f.job("mode = \"mirror\"", "").detect("strategy = \"diff\"");
        f.source(&["1,a@x,111,n1", "3,c@x,333,n3"]).run(0);
        assert_eq!(
            f.rows().await,
            ["1|a@x|keep|n1|live", "3|c@x|333|n3|live"],
            "{target:?}: mirror removes row 2, which the source never had"
        );
        f.source(&["1,a@x,111,n1"]).run(0);
        assert_eq!(
            f.rows().await,
            ["1|a@x|keep|n1|live"],
            "{target:?}: mirror deletes what ferry saw disappear"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mirror_that_would_remove_too_much_is_refused_until_allowed() {
    for target in BOTH {
        let f = Fixture::new(target).await;
        f.job("mode = \"mirror\"", "")
            .detect("strategy = \"diff\"\nmax_delete_ratio = 0.2");
        // Rows 1 and 2 were there before; the source has only 1.
        f.source(&["1,a@x,111,n1"]).run(1);
        assert_eq!(
            f.rows().await.len(),
            2,
            "{target:?}: 1 of 2 rows is more than max_delete_ratio 0.2: nothing removed"
        );
        let out = f.cfg.ferry(
            Some(&format!(
                "sqlite://{}",
                f.cfg.path().join("state.db").display()
            )),
            &["run", "--once", "--allow-mass-delete"],
        );
        assert_eq!(code(&out), 0, "{target:?}: {}", stderr(&out));
        assert_eq!(
            summary_run(&out, "contacts")["mirrored"],
            1,
            "{target:?}: mirror removed the target row whose key the source does not have"
        );
        assert_eq!(f.rows().await, ["1|a@x|keep|n1|live"], "{target:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ops_drop_the_operations_a_job_does_not_carry() {
    for target in BOTH {
        let f = Fixture::new(target).await;
        let with_ops = |ops: &str| {
            f.job("mode = \"upsert\"", "deletes = \"propagate\"")
                .detect(&format!("strategy = \"diff\"\nops = {ops}"));
        };

        // Creates only: a feed of new objects; later edits and deletes stay out.
        with_ops(r#"["create"]"#);
        f.source(&["1,a@x,111,n1", "3,c@x,333,n3"]).run(0);
        f.source(&["1,z@x,111,n1", "4,d@x,444,n4"]).run(0);
        assert_eq!(
            f.rows().await,
            [
                "1|a@x|keep|n1|live",
                "2|old2@x|keep2|mine|live",
                "3|c@x|333|n3|live",
                "4|d@x|444|n4|live"
            ],
            "{target:?}: only the create of 4 was carried"
        );

        // Updates and deletes only: the edit of 1 and the delete of 3 (both
        // still pending in the ledger's eyes) go through; 5 is not created.
        with_ops(r#"["update", "delete"]"#);
        f.source(&["1,z@x,111,n1", "4,d@x,444,n4", "5,e@x,555,n5"])
            .run(0);
        assert_eq!(
            f.rows().await,
            [
                "1|z@x|keep|n1|live",
                "2|old2@x|keep2|mine|live",
                "4|d@x|444|n4|live"
            ],
            "{target:?}: update of 1 and delete of 3 carried, create of 5 not"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn where_restricts_the_objects_and_one_that_leaves_it_is_deleted() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE items (id bigint PRIMARY KEY, name text, status text);
         INSERT INTO items SELECT g, 'item ' || g, CASE WHEN g % 3 = 0 THEN 'archived' ELSE 'active' END
           FROM generate_series(1, 30) g;
         CREATE TABLE items_copy (id bigint PRIMARY KEY, name text, status text);",
    )
    .await;
    let cfg = ConfigDir::new();
    cfg.job(
        "items",
        &format!(
            r#"
[source]
type = "postgres"
url = "{u}"
table = "items"
where = "status = 'active'"
key = ["id"]

[detect]
strategy = "diff"

[target]
type = "postgres"
url = "{u}"
table = "items_copy"
key = ["id"]

[rules]
owner = "source"
deletes = "propagate"
"#,
            u = db.url
        ),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    let run = || cfg.run_once_ok(&state);
    let active_equal = || {
        db.difference(
            "SELECT * FROM items WHERE status = 'active'",
            "SELECT * FROM items_copy",
        )
    };

    run();
    assert_eq!(db.count("SELECT count(*) FROM items_copy").await, 20);
    assert_eq!(active_equal().await, 0, "only the active objects");

    // Two objects leave the `where` set, one enters it.
    db.exec("UPDATE items SET status = 'archived' WHERE id IN (1, 2); UPDATE items SET status = 'active' WHERE id = 3")
        .await;
    run();
    assert_eq!(db.count("SELECT count(*) FROM items_copy").await, 19);
    assert_eq!(
        active_equal().await,
        0,
        "objects that left the set are deleted, the one that entered is inserted"
    );
}

/// `owner = "newest"`: the later change wins, by the source's cursor against
/// the target's `updated_at`, in one bulk batch beside source- and
/// target-owned fields.
#[tokio::test(flavor = "multi_thread")]
async fn newest_lets_the_later_change_win_field_by_field() {
    for target in BOTH {
        let db = TestDb::new().await;
        let cfg = ConfigDir::new();
        db.exec(
            "CREATE TABLE people (id bigint PRIMARY KEY, email text, phone text, tier text, updated_at timestamptz NOT NULL);
             INSERT INTO people VALUES
               (1, 'a@x', '111', 'silver', '2026-02-01T00:00:00Z'),
               (2, 'b@x', '222', 'silver', '2026-02-01T00:00:00Z'),
               (3, 'c@x', '333', 'silver', '2026-02-01T00:00:00Z'),
               (4, 'd@x', '444', 'silver', '2026-02-01T00:00:00Z');",
        )
        .await;
        // The target's rows, not written by ferry: 1 changed before the
        // source did, 2 after it, 4 has no change time; 3 is missing.
        let url = target_url(target, &cfg, &db);
        let (kind, time_type) = match target {
            Target::Postgres => ("postgres", "timestamptz"),
            Target::Sqlite | Target::Mysql => (target.kind(), "text"),
        };
        let ddl = format!(
            "CREATE TABLE contacts (id bigint PRIMARY KEY, email text, phone text, tier text, modified_at {time_type});
             INSERT INTO contacts VALUES
               (1, 'old1@x', 'keep1', 'gold', '2026-01-01T00:00:00+00:00'),
               (2, 'old2@x', 'keep2', 'platinum', '2026-03-01T00:00:00+00:00'),
               (4, 'old4@x', 'keep4', 'gold', NULL);"
        );
        let target_db = TargetDb::open(target, &url, &db).await;
        target_db.exec(&ddl).await;
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
updated_at = "modified_at"

[fields]
id = "id"
email = "email"
phone = {{ from = "phone", owner = "target" }}
tier = {{ from = "tier", owner = "newest" }}

[rules]
owner = "source"
"#,
                src = db.url
            ),
        );
        let state = state_url(StateKind::Sqlite, &cfg, &db);
        let run = || cfg.run_once_ok(&state);
        let rows = "SELECT CAST(id AS TEXT) || '|' || email || '|' || phone || '|' || tier || '|' || substr(CAST(modified_at AS TEXT), 1, 10)
                    FROM contacts ORDER BY id";

        run();
        assert_eq!(
            target_db.strings(rows).await,
            [
                "1|a@x|keep1|silver|2026-02-01",
                "2|b@x|keep2|platinum|2026-03-01",
                "3|c@x|333|silver|2026-02-01",
                "4|d@x|keep4|silver|2026-02-01",
            ],
            "{target:?}: the later change wins tier; email is the source's, phone the target's"
        );

        db.exec(
            "UPDATE people SET tier = 'bronze', updated_at = '2026-04-01T00:00:00Z' WHERE id = 2",
        )
        .await;
        run();
        assert_eq!(
            target_db.strings(rows).await[1],
            "2|b@x|keep2|bronze|2026-04-01",
            "{target:?}: now the source's change is the later one"
        );
    }
}
