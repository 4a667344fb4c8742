//! The docs stay true. docs/configuration.md lists exactly the keys `ferry
//! check` accepts, section by section and connector by connector;
//! docs/metrics.md lists exactly the metrics (and labels) a daemon serves;
//! docs/commands.md names every command, and every `ferry …` command that
//! the README and the docs name exists.
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use ferry::connectors::REGISTRY;

fn doc(name: &str) -> String {
    let path = format!("{}/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A documented key: the connector types it applies to (None: all).
type Applies = Option<BTreeSet<String>>;

/// The keys of each section of docs/configuration.md (by heading), from
/// the first column of its table, with the second column's types.
fn documented_keys() -> BTreeMap<String, BTreeMap<String, Applies>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Applies>> = BTreeMap::new();
    let mut heading = String::new();
    for line in doc("docs/configuration.md").lines() {
        if let Some(h) = line.strip_prefix("## ").or(line.strip_prefix("### ")) {
            heading = h.trim().to_string();
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `key` | applies to | type | default | meaning |
        let (Some(key), Some(applies)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Some(key) = key.strip_prefix('`').and_then(|k| k.strip_suffix('`')) else {
            continue;
        };
        let applies =
            (*applies != "all").then(|| applies.split(',').map(|k| k.trim().to_string()).collect());
        let keys = sections.entry(heading.clone()).or_default();
        assert!(
            keys.insert(key.to_string(), applies).is_none(),
            "`{key}` is listed twice under {heading}"
        );
    }
    sections
}

/// The names between backticks after "expected" in a serde message.
fn expected_names(message: &str) -> BTreeSet<String> {
    let list = message
        .split_once("expected ")
        .map(|(_, l)| l)
        .unwrap_or_else(|| panic!("no expected list in: {message}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// One job file and schedules file with an unknown key in every section:
/// `ferry check` answers each with the keys the section takes.
const EVERY_SECTION_WRONG: &str = r#"zz_top = 1
[source]
type = "postgres"
url = "postgres://h/db"
table = "t"
key = ["id"]
[detect]
strategy = "diff"
zz_detect = 1
[batch]
zz_batch = 1
backoff = { zz_backoff = 1 }
[snapshot]
zz_snapshot = 1
[target]
type = "postgres"
url = "postgres://h/db"
table = "t"
key = ["id"]
[fields]
id = { from = "id", zz_fields = 1 }
[rules]
zz_rules = 1
[schema]
zz_schema = 1
[children.x]
query = "select 1 where a = $1"
key = ["id"]
zz_children = 1
[[tests]]
name = "x"
expect = "insert"
zz_tests = 1
"#;

#[test]
fn every_key_check_accepts_is_documented_and_every_documented_key_is_accepted() {
    let documented = documented_keys();
    let cfg = ConfigDir::new();
    cfg.job("a", EVERY_SECTION_WRONG);
    cfg.schedules(
        "[engine]\nzz_engine = 1\n[engine.systems.\"postgres://h:5432/db\"]\nmax_connections = 1\nzz_system = 1\n\
         [schedules]\na = { cron = \"* * * * *\", zz_schedules = 1 }\n",
    );
    let out = cfg.ferry(None, &["check"]);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    let errors = stderr(&out);
    let sections = [
        ("zz_top", "Job file: top level"),
        ("zz_detect", "`[detect]`"),
        ("zz_batch", "`[batch]`"),
        ("zz_backoff", "`[batch] backoff`"),
        ("zz_snapshot", "`[snapshot]`"),
        ("zz_fields", "`[fields]`"),
        ("zz_rules", "`[rules]`"),
        ("zz_schema", "`[schema]`"),
        ("zz_children", "`[children.NAME]`"),
        ("zz_tests", "`[[tests]]`"),
        ("zz_engine", "`schedules.toml`: `[engine]`"),
        ("zz_system", "`schedules.toml`: `[engine.systems.\"URL\"]`"),
        ("zz_schedules", "`schedules.toml`: `[schedules]`"),
    ];
    for (marker, heading) in sections {
        let message = errors
            .lines()
            .find(|l| l.contains(&format!("unknown field `{marker}`")))
            .unwrap_or_else(|| panic!("no error for {marker}:\n{errors}"));
        let accepted = expected_names(message);
        let listed: BTreeSet<String> = documented
            .get(heading)
            .unwrap_or_else(|| panic!("docs/configuration.md has no section {heading}"))
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            listed, accepted,
            "{heading}: documented (left) vs accepted (right)"
        );
    }
}

/// The keys of a kind, as the documented table says they apply.
fn applying(section: &BTreeMap<String, Applies>, kind: &str) -> BTreeSet<String> {
    section
        .iter()
        .filter(|(_, applies)| applies.as_ref().is_none_or(|a| a.contains(kind)))
        .map(|(key, _)| key.clone())
        .collect()
}

/// The keys a `ferry check` error says a connector type takes, beside
/// the ones it names as common.
fn takes(message: &str) -> BTreeSet<String> {
    let takes = message
        .split_once("takes ")
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("no list of keys in: {message}"));
    takes
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Runs `ferry check` on a job whose `[source]` or `[target]` has an
/// unknown key, and returns what the error says the type takes.
fn accepted(section: &str, source: &str, target: &str) -> BTreeSet<String> {
    let cfg = ConfigDir::new();
    let marker = format!("zz_{section}");
    let (source, target) = match section {
        "source" => (format!("{source}\n{marker} = 1"), target.to_string()),
        _ => (source.to_string(), format!("{target}\n{marker} = 1")),
    };
    cfg.job(
        "a",
        &format!("[source]\n{source}\nkey = [\"id\"]\n\n[target]\n{target}\n\n[rules]\nowner = \"source\"\n"),
    );
    let out = cfg.ferry(None, &["check"]);
    let errors = stderr(&out);
    let message = errors
        .lines()
        .find(|l| l.contains(&format!("unknown field `{marker}`")))
        .unwrap_or_else(|| panic!("no error for {marker}:\n{errors}"));
    takes(message)
}

/// A minimal `[source]` or `[target]` of each type, without `key`.
fn minimal(kind: &str) -> String {
    let own = match kind {
        "postgres" | "mysql" | "sqlite" => format!("url = \"{kind}://h/db\"\ntable = \"t\""),
        "file" => "path = \"out.csv\"\nformat = \"csv\"".to_string(),
        "nats" => {
            "url = \"nats://h\"\nsubject = \"s\"\nstream = \"s\"\nconsumer = \"c\"".to_string()
        }
        "redis" => "url = \"redis://h\"\nstream = \"s\"".to_string(),
        "amqp" => "url = \"amqp://h/\"\nqueue = \"q\"".to_string(),
        "http" => "url = \"http://h/\"".to_string(),
        other => panic!("a minimal section for `{other}` is missing here"),
    };
    format!("type = \"{kind}\"\n{own}")
}

#[test]
fn each_connector_takes_the_keys_documented_for_it() {
    let documented = documented_keys();
    let (sources, targets) = (&documented["`[source]`"], &documented["`[target]`"]);
    let common = |kind: &str| {
        let mut keys = BTreeSet::from(["type".to_string(), "key".to_string()]);
        if REGISTRY.spec(kind).is_some_and(|s| !s.schemes.is_empty()) {
            keys.insert("connect_timeout".to_string());
        }
        keys
    };
    let file_target = "type = \"file\"\npath = \"out\"\nformat = \"jsonl\"";
    for kind in REGISTRY.kinds(true) {
        let mut accepted = accepted("source", &minimal(kind), file_target);
        accepted.extend(common(kind));
        assert_eq!(
            applying(sources, kind),
            accepted,
            "[source] type = \"{kind}\": documented (left) vs accepted (right)"
        );
    }
    let file_source = "type = \"file\"\npath = \"a.csv\"";
    for kind in REGISTRY.kinds(false) {
        let mut accepted = accepted(
            "target",
            file_source,
            &minimal(kind)
                .replace("\nconsumer = \"c\"", "")
                .replace("\nqueue = \"q\"", ""),
        );
        accepted.extend(common(kind));
        assert_eq!(
            applying(targets, kind),
            accepted,
            "[target] type = \"{kind}\": documented (left) vs accepted (right)"
        );
    }
}

/// (name, label names) of each metric a document's table lists.
fn documented_metrics() -> BTreeMap<String, BTreeSet<String>> {
    doc("docs/metrics.md")
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix("`ferry_")?.strip_suffix('`')?;
            let labels = cells
                .get(3)?
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect();
            Some((format!("ferry_{name}"), labels))
        })
        .collect()
}

/// (name, label names) of each metric an exposition serves; a histogram's
/// series count as its own name, without `le`.
fn served_metrics(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let histograms: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" histogram"))
        .collect();
    let mut served: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("ferry_")) {
        let (series, _) = line.rsplit_once(' ').expect("a sample");
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|n| histograms.contains(n)))
            .unwrap_or(name);
        let labels = labels
            .trim_end_matches('}')
            .split(',')
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
            .filter(|k| k != "le");
        served.entry(name.to_string()).or_default().extend(labels);
    }
    served
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_served_is_documented_with_its_labels() {
    let cfg = ConfigDir::new();
    std::fs::write(cfg.path().join("people.csv"), "id,name\n1,ada\n").expect("csv");
    cfg.job(
        "people",
        "[source]\ntype = \"file\"\npath = \"people.csv\"\nkey = [\"id\"]\n\n[target]\ntype = \"sqlite\"\nurl = \"sqlite://people.db?mode=rwc\"\ntable = \"people\"\nkey = [\"id\"]\ncreate = true\n\n[rules]\nowner = \"source\"\n",
    );
    let state = format!("sqlite://{}", cfg.path().join("state.db").display());
    let daemon = cfg
        .daemon(
            &state,
            "people = { cron = \"*/1 * * * * *\", verify = \"0 0 1 1 *\" }",
            &[],
        )
        .await;
    // A run has finished once its outcome is counted.
    let ran = "ferry_runs_total{sync_job=\"people\",trigger=\"schedule\",outcome=\"success\"} 1";
    assert!(
        eventually(20, || async {
            daemon
                .get("/metrics")
                .await
                .unwrap_or_default()
                .contains(ran)
        })
        .await,
        "the scheduled run never succeeded:\n{}",
        daemon.log_text()
    );
    let text = daemon.get("/metrics").await.expect("metrics");
    assert_eq!(
        documented_metrics(),
        served_metrics(&text),
        "docs/metrics.md (left) vs /metrics (right)"
    );
}

/// The subcommands `ferry --help` lists.
fn cli_commands() -> BTreeSet<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--help")
        .output()
        .expect("ferry --help");
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    help.split("Commands:")
        .nth(1)
        .and_then(|c| c.split("Options:").next())
        .expect("a Commands: section")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// The text without its "Not yet" section, which names commands to come.
fn without_plans(text: &str) -> String {
    let Some(start) = text.find("\n## Not yet") else {
        return text.to_string();
    };
    let end = text[start + 1..]
        .find("\n## ")
        .map_or(text.len(), |e| start + 1 + e);
    format!("{}{}", &text[..start], &text[end..])
}

/// Every `ferry WORD` in a document's code (between backticks or in a code
/// block), WORD being a command name.
fn named_commands(text: &str) -> BTreeSet<String> {
    text.match_indices("ferry ")
        .filter_map(|(at, _)| {
            let before = text[..at].chars().last();
            // `ferry ` at the start of code, not inside a word or a path.
            if !matches!(before, Some('`') | Some('\n') | Some(' ') | Some('$')) {
                return None;
            }
            let word: String = text[at + "ferry ".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase())
                .collect();
            (!word.is_empty()).then_some(word)
        })
        .collect()
}

#[test]
fn the_commands_documented_are_the_commands_the_cli_has() {
    let commands = cli_commands();
    assert!(
        commands.contains("run") && commands.contains("check"),
        "{commands:?}"
    );
    let reference = doc("docs/commands.md");
    for command in &commands {
        assert!(
            reference.contains(&format!("`ferry {command}")),
            "docs/commands.md does not describe `ferry {command}`"
        );
    }
    for file in ["README.md", "docs/commands.md", "docs/operations.md"] {
        let text = without_plans(&doc(file));
        // Code blocks and inline code only: prose says "ferry runs …".
        let code: String = text
            .split("```")
            .enumerate()
            .map(|(i, part)| match i % 2 {
                1 => part.to_string(),
                _ => part
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .map(|c| format!("`{c}\n"))
                    .collect(),
            })
            .collect();
        for word in named_commands(&code) {
            assert!(
                commands.contains(&word),
                "{file} names `ferry {word}`, which the CLI does not have ({commands:?})"
            );
        }
    }
}
