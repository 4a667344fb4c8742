//! `ferry check` on malformed configurations: a located message for each
//! error, all of them at once, exit 78, never a panic.
mod common;

use common::*;

const VALID: &str = r#"
[source]
type = "postgres"
url = "postgres://app:secret@127.0.0.1/shop"
table = "customers"
key = ["id"]

[detect]
strategy = "cursor"
cursor = "updated_at"

[target]
type = "sqlite"
url = "sqlite://crm.db"
table = "contacts"
key = ["id"]

[rules]
owner = "source"
"#;

fn check(cfg: &ConfigDir) -> (i32, String) {
    let out = cfg
        .command(None, &["check"])
        .env_remove("FERRY_TEST_UNSET")
        .output()
        .expect("run ferry");
    (code(&out), stderr(&out))
}

/// (case, job file, expected `line:col: ` and part of the message)
const CASES: &[(&str, &str, &str, &str)] = &[
    ("unknown key", "[source]\ntype = \"postgres\"\nurl = \"postgres://h/db\"\ntable = \"t\"\nkey = [\"id\"]\ncolour = \"red\"\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\n", "6:1", "unknown field `colour`"),
    ("wrong type", "[source]\ntype = \"file\"\npath = \"a.csv\"\nkey = [\"id\"]\n[batch]\nsize = \"big\"\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\n", "6:8", "invalid type"),
    ("missing env var", "[source]\ntype = \"postgres\"\nurl = \"${FERRY_TEST_UNSET}\"\ntable = \"t\"\nkey = [\"id\"]\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\n", "3:7", "environment variable `FERRY_TEST_UNSET` is not set"),
    ("mirror without diff", "[source]\ntype = \"postgres\"\nurl = \"postgres://h/db\"\ntable = \"t\"\nkey = [\"id\"]\n[detect]\nstrategy = \"cursor\"\ncursor = \"u\"\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\nmode = \"mirror\"\n[rules]\nowner = \"source\"\n", "14:8", "`mode = \"mirror\"` needs `[detect] strategy = \"diff\"`"),
    ("duplicate key column", "[source]\ntype = \"postgres\"\nurl = \"postgres://h/db\"\ntable = \"t\"\nkey = [\"id\", \"id\"]\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\n", "5:14", "names column `id` twice"),
    ("bad url scheme", "[source]\ntype = \"postgres\"\nurl = \"mysql://u:pw@h/db\"\ntable = \"t\"\nkey = [\"id\"]\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\n", "3:7", "must start with `postgres:` or `postgresql:`"),
    ("unknown source type", "[source]\ntype = \"oracle\"\nkey = [\"id\"]\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\n", "2:8", "unknown source type `oracle`"),
    ("no owner", "[source]\ntype = \"file\"\npath = \"a.csv\"\nkey = [\"id\"]\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n", "1:1", "no owner for the fields"),
    ("newest without updated_at", "[source]\ntype = \"file\"\npath = \"a.csv\"\nkey = [\"id\"]\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[fields]\nid = \"id\"\ntier = { from = \"tier\", owner = \"newest\" }\n[rules]\nowner = \"source\"\n", "12:8", "needs `[target] updated_at`"),
    ("lookup to missing job", "[source]\ntype = \"file\"\npath = \"a.csv\"\nkey = [\"id\"]\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[fields]\nid = \"id\"\nacc = { from = \"a\", lookup = \"accounts\" }\n[rules]\nowner = \"source\"\n", "12:7", "names job `accounts`, which does not exist"),
    ("cursor without column", "[source]\ntype = \"postgres\"\nurl = \"postgres://h/db\"\ntable = \"t\"\nkey = [\"id\"]\n[detect]\nstrategy = \"cursor\"\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\n", "6:1", "needs `cursor`"),
    ("http auth of neither kind", "[source]\ntype = \"file\"\npath = \"a.csv\"\nkey = [\"id\"]\n[target]\ntype = \"http\"\nurl = \"https://api.example.com/items\"\nauth = { token = \"x\" }\n[rules]\nowner = \"source\"\n", "8:8", "`auth` is `{ bearer"),
    ("http results not a pointer", "[source]\ntype = \"file\"\npath = \"a.csv\"\nkey = [\"id\"]\n[target]\ntype = \"http\"\nurl = \"https://api.example.com/items\"\nresults = \"results\"\n[rules]\nowner = \"source\"\n", "8:11", "`results` is a JSON pointer"),
    ("mode on a message target", "[source]\ntype = \"file\"\npath = \"a.csv\"\nkey = [\"id\"]\n[target]\ntype = \"amqp\"\nurl = \"amqp://h/%2f\"\nmode = \"mirror\"\n[rules]\nowner = \"source\"\n", "8:8", "`mode` applies to SQL targets"),
    ("bad duration", "[source]\ntype = \"postgres\"\nurl = \"postgres://h/db\"\ntable = \"t\"\nkey = [\"id\"]\n[detect]\nstrategy = \"cursor\"\ncursor = \"u\"\nlag = \"soon\"\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\n", "9:7", "is not a duration"),
    ("ratio out of range", "[source]\ntype = \"file\"\npath = \"a.csv\"\nkey = [\"id\"]\n[detect]\nstrategy = \"diff\"\nmax_delete_ratio = 1.5\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\n", "7:20", "must be between 0 and 1"),
    ("table and query", "[source]\ntype = \"postgres\"\nurl = \"postgres://h/db\"\ntable = \"t\"\nquery = \"select 1\"\nkey = [\"id\"]\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\n", "5:9", "`table` or `query`, not both"),
    ("soft delete without column", "[source]\ntype = \"file\"\npath = \"a.csv\"\nkey = [\"id\"]\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\ndeletes = \"soft\"\n", "12:11", "needs `soft_delete`"),
    ("unknown op", "[source]\ntype = \"file\"\npath = \"a.csv\"\nkey = [\"id\"]\n[detect]\nstrategy = \"diff\"\nops = [\"create\", \"upsert\"]\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\n", "7:18", "`ops` is `upsert`; expected one of `create`, `update`, `delete`"),
    ("empty ops", "[source]\ntype = \"file\"\npath = \"a.csv\"\nkey = [\"id\"]\n[detect]\nstrategy = \"diff\"\nops = []\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\n", "7:7", "`ops` is empty"),
    ("cursor carrying only deletes", "[source]\ntype = \"postgres\"\nurl = \"postgres://h/db\"\ntable = \"t\"\nkey = [\"id\"]\n[detect]\nstrategy = \"cursor\"\ncursor = \"u\"\nops = [\"delete\"]\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\n", "9:7", "which a cursor never sees"),
    ("mirror without deletes", "[source]\ntype = \"file\"\npath = \"a.csv\"\nkey = [\"id\"]\n[detect]\nstrategy = \"diff\"\nops = [\"create\", \"update\"]\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\nmode = \"mirror\"\n[rules]\nowner = \"source\"\n", "7:7", "`mode = \"mirror\"` needs deletes"),
    ("newest without a cursor", "[source]\ntype = \"file\"\npath = \"a.csv\"\nkey = [\"id\"]\n[detect]\nstrategy = \"diff\"\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\nupdated_at = \"m\"\n[rules]\nowner = \"newest\"\n", "6:12", "it needs `strategy = \"cursor\"`"),
    ("newest without updated_at", "[source]\ntype = \"postgres\"\nurl = \"postgres://h/db\"\ntable = \"t\"\nkey = [\"id\"]\n[detect]\nstrategy = \"cursor\"\ncursor = \"u\"\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"newest\"\n", "15:9", "needs `[target] updated_at`"),
    ("TOML syntax error", "[source\ntype = \"file\"\n", "1:8", "expected"),
];

#[test]
fn each_malformed_job_gets_a_located_message_and_exit_78() {
    for (case, toml, location, message) in CASES {
        let cfg = ConfigDir::new();
        cfg.job("broken", toml);
        let (code, err) = check(&cfg);
        assert_eq!(code, 78, "{case}: exit code; stderr:\n{err}");
        assert!(!err.contains("panicked"), "{case}: panicked:\n{err}");
        let expected = format!("broken.toml:{location}: ");
        assert!(
            err.lines()
                .any(|l| l.contains(&expected) && l.contains(message)),
            "{case}: no line with `{expected}` and `{message}` in:\n{err}"
        );
    }
}

#[test]
fn schedules_errors_are_located_too() {
    let cfg = ConfigDir::new();
    cfg.job("customers", VALID);
    cfg.schedules("[engine]\ntimezone = \"Mars/Olympus\"\n[schedules]\ncustomers = \"61 * * * *\"\nnobody = \"* * * * *\"\n");
    let (code, err) = check(&cfg);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("schedules.toml:2:12: unknown time zone `Mars/Olympus`"),
        "{err}"
    );
    assert!(
        err.contains("schedules.toml:4:13: schedule `customers`: invalid cron expression"),
        "{err}"
    );
    assert!(
        err.contains("schedules.toml:5:1: schedule for job `nobody`, which does not exist"),
        "{err}"
    );
}

#[test]
fn every_error_is_reported_not_only_the_first_and_secrets_stay_hidden() {
    let cfg = ConfigDir::new();
    cfg.job(
        "a",
        &VALID.replace("postgres://app:secret@", "mysql://app:secret@"),
    );
    cfg.job(
        "b",
        &VALID.replace("owner = \"source\"", "owner = \"everyone\""),
    );
    cfg.job("Bad-Name", VALID);
    let (code, err) = check(&cfg);
    assert_eq!(code, 78);
    assert!(err.contains("a.toml:4:7:"), "{err}");
    assert!(err.contains("b.toml:19:9: `owner` is `everyone`"), "{err}");
    assert!(
        err.contains("Bad-Name.toml:1:1: job name `Bad-Name`"),
        "{err}"
    );
    assert!(!err.contains("secret"), "a password leaked: {err}");
    assert!(err.contains("3 configuration error(s)"), "{err}");
}

#[test]
fn a_valid_config_passes_and_jobs_lists_next_fire_times() {
    let cfg = ConfigDir::new();
    cfg.job("customers", VALID);
    cfg.schedules("[schedules]\ncustomers = { cron = \"0 30 9 * * 1-5\", timezone = \"Europe/Prague\", missed = \"skip\" }\n");
    let (code, err) = check(&cfg);
    assert_eq!(code, 0, "{err}");
    let out = cfg.ferry(None, &["jobs"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("postgres:customers → sqlite:contacts"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("09:30:00 CE").count(),
        3,
        "three next fire times in the job's zone: {stdout}"
    );
}

#[test]
fn unknown_job_on_the_command_line_is_a_usage_error() {
    let cfg = ConfigDir::new();
    cfg.job("customers", VALID);
    let out = cfg.ferry(None, &["plan", "nosuchjob"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("unknown job(s): nosuchjob; jobs: customers"));
}

#[test]
fn the_examples_pass_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for entry in std::fs::read_dir(&root).expect("examples/") {
        let dir = entry.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("--config")
            .arg(&dir)
            .arg("check")
            .env("SHOP_MYSQL_URL", "mysql://shop:secret@db.invalid:3306/shop")
            .env("CRM_PG_URL", "postgres://crm:secret@crm.invalid/crm")
            .env("API_URL", "https://api.invalid/v1/contacts/batch")
            .env("API_TOKEN", "secret")
            .env("SHOP_PG_URL", "postgres://shop:secret@shop.invalid/shop")
            .env("AMQP_URL", "amqp://shop:secret@rabbit.invalid:5672/%2f")
            .env("ERP_PG_URL", "postgres://erp:secret@erp.invalid/erp")
            .output()
            .expect("run ferry");
        assert!(
            out.status.success(),
            "{}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_structural_error_of_every_file_is_reported_in_one_run() {
    let cfg = ConfigDir::new();
    // Two unknown keys and a wrong type in one file, an unknown table in another.
    cfg.job(
        "first",
        "[source]\ntype = \"file\"\npath = \"a.csv\"\ncolour = \"red\"\nkey = [\"id\"]\n[batch]\nsize = \"big\"\nsped = 3\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\n",
    );
    cfg.job(
        "second",
        "[source]\ntype = \"file\"\npath = \"a.csv\"\nkey = [\"id\"]\n[targte]\ntype = \"sqlite\"\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\n",
    );
    let (code, err) = check(&cfg);
    assert_eq!(code, 78, "{err}");
    for (file, at, message) in [
        ("first.toml", "4:1", "unknown field `colour`"),
        ("first.toml", "7:8", "invalid type"),
        ("first.toml", "8:1", "unknown field `sped`"),
        ("second.toml", "5:2", "unknown field `targte`"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("{file}:{at}: ")) && l.contains(message)),
            "`{file}:{at}: {message}` missing:\n{err}"
        );
    }
    assert!(err.contains("4 configuration error(s)"), "{err}");
}

#[test]
fn a_schedule_that_never_fires_and_every_error_of_a_schedule_are_reported() {
    let cfg = ConfigDir::new();
    cfg.job("a", "[source]\ntype = \"file\"\npath = \"a.csv\"\nkey = [\"id\"]\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\n");
    cfg.job("b", "[source]\ntype = \"file\"\npath = \"b.csv\"\nkey = [\"id\"]\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\n");
    cfg.schedules(
        "[schedules]\na = \"0 0 31 2 *\"\nb = { cron = \"0 0 99 * *\", timezone = \"Mars/Olympus\", missed = \"sometimes\" }\n",
    );
    let (code, err) = check(&cfg);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.lines().any(|l| l.contains("schedules.toml:2:5: ")
            && l.contains("`0 0 31 2 *` never fires in the next 5 years")),
        "{err}"
    );
    for message in [
        "unknown time zone `Mars/Olympus`",
        "`missed` is `sometimes`",
        "invalid cron expression `0 0 99 * *`",
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains("schedules.toml:3:5: ") && l.contains(message)),
            "`{message}` missing:\n{err}"
        );
    }
}

#[test]
fn a_folder_without_jobs_says_how_to_point_at_one() {
    let empty = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--config")
        .arg(empty.path())
        .arg("check")
        .env_remove("FERRY_CONFIG")
        .output()
        .expect("run ferry");
    assert_eq!(code(&out), 78);
    assert!(
        stderr(&out).contains(&format!(
            "no jobs/ folder in {} — pass --config DIR or set FERRY_CONFIG",
            empty.path().display()
        )),
        "{}",
        stderr(&out)
    );
}

const SOURCE_KEYS: &[(&str, &str)] = &[
    ("url", "\"postgres://h/db\""),
    ("table", "\"t2\""),
    ("query", "\"select 1\""),
    ("where", "\"1 = 1\""),
    ("path", "\"b.csv\""),
    ("format", "\"csv\""),
    ("items", "\"/items\""),
    ("next", "\"/next\""),
    ("page_param", "\"page\""),
    ("cursor_param", "\"c\""),
    ("auth", "{ bearer = \"x\" }"),
    ("timeout", "\"5s\""),
    ("queue", "\"q\""),
    ("prefetch", "10"),
    ("stream", "\"s\""),
    ("consumer", "\"c\""),
    ("subject", "\"x\""),
    ("connect_timeout", "\"5s\""),
];

const SOURCE_KINDS: &[(&str, &str, &[&str])] = &[
    (
        "postgres",
        "url = \"postgres://h/db\"\ntable = \"t\"",
        &["url", "table", "query", "where", "connect_timeout"],
    ),
    (
        "mysql",
        "url = \"mysql://h/db\"\ntable = \"t\"",
        &["url", "table", "query", "where", "connect_timeout"],
    ),
    (
        "sqlite",
        "url = \"sqlite://s.db\"\ntable = \"t\"",
        &["url", "table", "query", "where", "connect_timeout"],
    ),
    ("file", "path = \"a.csv\"", &["path", "format"]),
    (
        "http",
        "url = \"http://h/items\"",
        &[
            "url",
            "items",
            "next",
            "page_param",
            "cursor_param",
            "auth",
            "timeout",
            "connect_timeout",
        ],
    ),
    (
        "amqp",
        "url = \"amqp://h/%2f\"\nqueue = \"q\"",
        &["url", "queue", "prefetch", "connect_timeout"],
    ),
    (
        "nats",
        "url = \"nats://h\"\nstream = \"s\"\nconsumer = \"c\"",
        &["url", "stream", "consumer", "subject", "connect_timeout"],
    ),
];

const TARGET_KEYS: &[(&str, &str)] = &[
    ("url", "\"postgres://h/db\""),
    ("table", "\"t2\""),
    ("mode", "\"upsert\""),
    ("create_table", "true"),
    ("updated_at", "\"u\""),
    ("path", "\"out2\""),
    ("format", "\"csv\""),
    ("method", "\"PUT\""),
    ("batch", "false"),
    ("results", "\"/results\""),
    ("auth", "{ bearer = \"x\" }"),
    ("timeout", "\"5s\""),
    ("exchange", "\"e\""),
    ("routing_key", "\"r\""),
    ("subject", "\"x\""),
    ("stream", "\"s\""),
    ("maxlen", "10"),
    ("dedupe_window", "\"1h\""),
    ("connect_timeout", "\"5s\""),
];

const TARGET_KINDS: &[(&str, &str, &[&str])] = &[
    (
        "postgres",
        "url = \"postgres://h/db\"\ntable = \"t\"\nkey = [\"id\"]",
        &["url", "table", "mode", "updated_at", "connect_timeout"],
    ),
    (
        "mysql",
        "url = \"mysql://h/db\"\ntable = \"t\"\nkey = [\"id\"]",
        &["url", "table", "mode", "updated_at", "connect_timeout"],
    ),
    (
        "sqlite",
        "url = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]",
        &[
            "url",
            "table",
            "mode",
            "updated_at",
            "create_table",
            "connect_timeout",
        ],
    ),
    (
        "file",
        "path = \"out\"\nformat = \"jsonl\"",
        &["path", "format"],
    ),
    (
        "http",
        "url = \"http://h/items\"",
        &[
            "url",
            "method",
            "batch",
            "results",
            "auth",
            "timeout",
            "connect_timeout",
        ],
    ),
    (
        "amqp",
        "url = \"amqp://h/%2f\"",
        &["url", "exchange", "routing_key", "connect_timeout"],
    ),
    (
        "nats",
        "url = \"nats://h\"\nsubject = \"x\"",
        &["url", "subject", "stream", "connect_timeout"],
    ),
    (
        "redis",
        "url = \"redis://h\"\nstream = \"x\"",
        &[
            "url",
            "stream",
            "maxlen",
            "dedupe_window",
            "connect_timeout",
        ],
    ),
];

/// No key is accepted and ignored: each connector key of a source or target
/// kind that does not document it is refused by `ferry check`, located. (The
/// effect of each documented key is tested with its connector: tests/nats.rs,
/// tests/amqp.rs, tests/http_*.rs, tests/mysql.rs, tests/sync_matrix.rs.)
#[test]
fn every_connector_key_a_kind_does_not_use_is_refused() {
    const RULES: &str = "[rules]\nowner = \"source\"\n";
    const SQLITE_TARGET: &str =
        "[target]\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\ntable = \"t\"\nkey = [\"id\"]\n";
    const FILE_SOURCE: &str = "[source]\ntype = \"file\"\npath = \"a.csv\"\nkey = [\"id\"]\n";
    // (kind, a minimal source of it, the keys it documents)
    let mut silently_accepted = Vec::new();
    let mut walk =
        |role: &str, kind: &str, base: &str, documented: &[&str], keys: &[(&str, &str)]| {
            for (key, value) in keys.iter().filter(|(k, _)| !documented.contains(k)) {
                let section = format!("[{role}]\ntype = \"{kind}\"\n{base}\n{key} = {value}\n");
                let file = if role == "source" {
                    format!("{section}key = [\"id\"]\n{SQLITE_TARGET}{RULES}")
                } else {
                    format!("{FILE_SOURCE}{section}{RULES}")
                };
                let cfg = ConfigDir::new();
                cfg.job("j", &file);
                let (code, err) = check(&cfg);
                let located = err
                    .lines()
                    .any(|l| l.contains("j.toml:") && l.contains(&format!("`{key}`")));
                if code != 78 || !located {
                    silently_accepted.push(format!(
                        "[{role}] type = \"{kind}\": `{key}` (exit {code}): {err}"
                    ));
                }
            }
        };
    for (kind, base, documented) in SOURCE_KINDS {
        walk("source", kind, base, documented, SOURCE_KEYS);
    }
    for (kind, base, documented) in TARGET_KINDS {
        walk("target", kind, base, documented, TARGET_KEYS);
    }
    assert!(
        silently_accepted.is_empty(),
        "keys accepted by kinds that do not use them:\n{}",
        silently_accepted.join("\n")
    );
}
