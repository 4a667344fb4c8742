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
