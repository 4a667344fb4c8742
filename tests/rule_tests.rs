//! `ferry test`: the `[[tests]]` blocks of a job file, run offline. The cases
//! restate, row for row, what `tests/rules.rs` observes on real PostgreSQL
//! and SQLite targets for the same rules, so the offline prediction and the
//! bulk SQL are held to the same results.
mod common;

use common::*;

/// The rules of `tests/rules.rs`: email from the source, phone the target's,
/// notes filled where empty, soft deletes. The URLs point nowhere: `ferry
/// test` must not contact them.
/// `ferry test ARGS…`: its exit code and standard output.
fn ferry_test(cfg: &ConfigDir, args: &[&str]) -> (i32, String) {
    let mut all = vec!["test"];
    all.extend_from_slice(args);
    let out = cfg.ferry(None, &all);
    (code(&out), String::from_utf8_lossy(&out.stdout).to_string())
}

const JOB: &str = r#"
[source]
type = "postgres"
url = "postgres://ferry@nowhere.invalid/shop"
table = "people"
key = ["id"]

[target]
type = "postgres"
url = "postgres://ferry@nowhere.invalid/crm"
table = "contacts"
key = ["id"]

[fields]
id = "id"
email = "email"
phone = { from = "phone", owner = "target" }
notes = { from = "notes", owner = "fill" }

[rules]
owner = "source"
deletes = "soft"
soft_delete = "deleted_at"

[[tests]]
name = "a new object is inserted with every field"
source = { id = 3, email = "c@x", phone = "333", notes = "n3" }
expect = "insert"
fields = { id = 3, email = "c@x", phone = "333", notes = "n3" }

[[tests]]
name = "the target keeps its phone and fills empty notes"
source = { id = 1, email = "a@x", phone = "111", notes = "n1" }
target = { id = 1, email = "old@x", phone = "keep" }
expect = "update"
fields = { email = "a@x", notes = "n1" }

[[tests]]
name = "notes the target has are not overwritten"
source = { id = 2, email = "b@x", phone = "222", notes = "n2" }
target = { id = 2, email = "old2@x", phone = "keep2", notes = "mine" }
expect = "update"
fields = { email = "b@x" }

[[tests]]
name = "nothing to write when the owned fields agree"
source = { id = 2, email = "b@x", phone = "222", notes = "n2" }
target = { id = 2, email = "b@x", phone = "keep2", notes = "mine" }
expect = "skip"

[[tests]]
name = "a deleted object is soft-deleted"
target = { id = 3, email = "c@x", phone = "333", notes = "n3" }
expect = "update"
fields = { deleted_at = "now" }

[[tests]]
name = "it comes back un-deleted"
source = { id = 3, email = "c2@x", phone = "333", notes = "n3" }
target = { id = 3, email = "c@x", phone = "333", notes = "n3", deleted_at = "2026-11-23T10:00:00Z" }
expect = "update"

[[tests]]
name = "both sides changed email since ferry wrote it: the source owns it"
source = { id = 1, email = "source1@x", phone = "111", notes = "n1" }
target = { id = 1, email = "target1@x", phone = "111", notes = "n1" }
written = { email = "a@x", phone = "111", notes = "n1" }
expect = "conflict"
fields = { email = "source1@x" }

[[tests]]
name = "only the target changed email: no conflict, the source's value goes back"
source = { id = 2, email = "b@x", phone = "999", notes = "n2" }
target = { id = 2, email = "target2@x", phone = "222", notes = "n2" }
written = { email = "b@x", phone = "222", notes = "n2" }
expect = "update"
fields = { email = "b@x" }
"#;

#[test]
fn rule_tests_pass_offline_and_a_wrong_expectation_names_test_and_field() {
    let cfg = ConfigDir::new();
    cfg.job("contacts", JOB);
    // `ferry` prints the command's stderr into the test's output.
    let (code, stdout) = ferry_test(&cfg, &["contacts"]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("ok    contacts: "))
            .count(),
        8,
        "{stdout}"
    );
    assert!(stdout.ends_with("8 test(s), 0 failed\n"), "{stdout}");

    // Two wrong expectations: the phone is the target's, so it is not
    // written; an un-delete also clears `deleted_at`.
    cfg.job(
        "contacts",
        &JOB.replace(
            "fields = { email = \"a@x\", notes = \"n1\" }",
            "fields = { email = \"a@x\", phone = \"111\", notes = \"n1\" }",
        )
        .replace(
            "deleted_at = \"2026-11-23T10:00:00Z\" }\nexpect = \"update\"",
            "deleted_at = \"2026-11-23T10:00:00Z\" }\nexpect = \"update\"\nfields = { email = \"c2@x\" }",
        ),
    );
    let (code, stdout) = ferry_test(&cfg, &[]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains(
            "FAIL  contacts: the target keeps its phone and fills empty notes (jobs/contacts.toml:"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("field `phone`: expected \"111\", not written"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL  contacts: it comes back un-deleted (jobs/contacts.toml:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("field `deleted_at`: not expected, written as null"),
        "{stdout}"
    );
    assert!(stdout.ends_with("8 test(s), 2 failed\n"), "{stdout}");
}

#[test]
fn a_wrong_kind_of_write_is_reported_with_the_rules_result() {
    let cfg = ConfigDir::new();
    cfg.job(
        "contacts",
        &(JOB.replace("deletes = \"soft\"\nsoft_delete = \"deleted_at\"", "deletes = \"ignore\"")
            .split("[[tests]]")
            .next()
            .unwrap()
            .to_string()
            + "[[tests]]\nname = \"deletes are ignored\"\ntarget = { id = 9 }\nexpect = \"delete\"\n"),
    );
    let (code, stdout) = ferry_test(&cfg, &[]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("expected delete, the rules make skip"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the delete rule writes nothing"),
        "{stdout}"
    );
}

#[test]
fn malformed_tests_are_configuration_errors() {
    let cfg = ConfigDir::new();
    let base = JOB.split("[[tests]]").next().unwrap().to_string();
    cfg.job(
        "contacts",
        &(base
            + "[[tests]]\nname = \"no object\"\nexpect = \"skip\"\n\n\
               [[tests]]\nname = \"conflict\"\nsource = { id = 1 }\nexpect = \"conflict\"\n\n\
               [[tests]]\nname = \"typo\"\nsource = { id = 1 }\nexpect = \"upsert\"\n"),
    );
    let out = cfg.ferry(None, &["test"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 78, "{err}");
    assert!(err.contains("test `no object` needs `source`"), "{err}");
    assert!(
        err.contains("`expect = \"conflict\"` needs `source`, `target` and `written`"),
        "{err}"
    );
    assert!(
        err.contains("`expect` is `upsert`; expected one of"),
        "{err}"
    );
}

/// The cases `tests/rules.rs` runs on real targets for `owner = "newest"`.
#[test]
fn newest_is_predicted_from_the_cursor_and_the_targets_change_time() {
    let cfg = ConfigDir::new();
    cfg.job(
        "contacts",
        r#"
[source]
type = "postgres"
url = "postgres://ferry@nowhere.invalid/shop"
table = "people"
key = ["id"]

[detect]
strategy = "cursor"
cursor = "updated_at"

[target]
type = "sqlite"
url = "sqlite:///nowhere/crm.db"
table = "contacts"
key = ["id"]
updated_at = "modified_at"

[fields]
id = "id"
email = "email"
phone = { from = "phone", owner = "target" }
tier = { from = "tier", owner = "newest" }

[rules]
owner = "source"

[[tests]]
name = "the source changed later: its tier and change time"
source = { id = 1, email = "a@x", phone = "111", tier = "silver", updated_at = "2026-02-01T00:00:00+00:00" }
target = { id = 1, email = "old1@x", phone = "keep1", tier = "gold", modified_at = "2026-01-01T00:00:00+00:00" }
expect = "update"
fields = { email = "a@x", tier = "silver", modified_at = "2026-02-01T00:00:00+00:00" }

[[tests]]
name = "the target changed later: it keeps its tier"
source = { id = 2, email = "b@x", phone = "222", tier = "silver", updated_at = "2026-02-01T00:00:00+00:00" }
target = { id = 2, email = "old2@x", phone = "keep2", tier = "platinum", modified_at = "2026-03-01T00:00:00+00:00" }
expect = "update"
fields = { email = "b@x" }

[[tests]]
name = "no change time at the target: the source wins"
source = { id = 4, email = "d@x", phone = "444", tier = "silver", updated_at = "2026-02-01T00:00:00+00:00" }
target = { id = 4, email = "d@x", phone = "keep4", tier = "gold" }
expect = "update"
fields = { tier = "silver", modified_at = "2026-02-01T00:00:00+00:00" }
"#,
    );
    // `ferry` prints the command's stderr into the test's output.
    let (code, stdout) = ferry_test(&cfg, &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.ends_with("3 test(s), 0 failed\n"), "{stdout}");
}
