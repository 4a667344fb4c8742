//! The boundaries ARCHITECTURE.md draws, checked on the source: data flows
//! one way (connectors → detect → state → sync → connectors), so a layer
//! never names one it must not know. A `use` that crosses a boundary fails
//! here, naming the file and line.
use std::path::{Path, PathBuf};

/// Every module below the configuration.
const EVERY_LAYER: &[&str] = &[
    "connectors",
    "state",
    "detect",
    "sync",
    "runner",
    "schema",
    "cli",
    "schedule",
];

/// (module, modules it must not name).
const RULES: &[(&str, &[&str])] = &[
    // Connectors are leaves: they know the configuration and the model only.
    (
        "connectors",
        &[
            "state", "detect", "sync", "runner", "schema", "cli", "schedule",
        ],
    ),
    // The state store knows no system it syncs.
    (
        "state",
        &[
            "connectors",
            "detect",
            "sync",
            "runner",
            "schema",
            "cli",
            "schedule",
        ],
    ),
    // The configuration is pure: what connectors accept reaches it through
    // `config::Registry`, passed in.
    ("config", EVERY_LAYER),
    // Detection meets sync only through the state store.
    ("detect", &["sync", "cli", "schedule"]),
    ("sync", &["detect", "cli", "schedule"]),
    // The write rules are computed from the configuration alone: targets
    // render them, sync evaluates them.
    ("rules.rs", EVERY_LAYER),
    // Metrics are named and recorded; what they measure is passed in.
    (
        "metrics.rs",
        &["state", "connectors", "detect", "sync", "runner", "cli"],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.is_file() {
        out.push(dir.to_path_buf());
        return;
    }
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::<module>` a file names outside comments, with the line it
/// starts on; `use crate::{a::X, b}` names `a` and `b`.
fn named_modules(text: &str) -> Vec<(usize, String)> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: each one after `{` or a `,`
            // outside nested braces.
            let (mut depth, mut start) = (0usize, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        start = false;
                        out.push((line_of(at), ident(&group[i..])));
                    }
                    _ => {}
                }
            }
        } else {
            out.push((line_of(at), ident(rest)));
        }
    }
    out
}

#[test]
fn no_module_names_one_it_must_not_know() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut crossings = Vec::new();
    for (module, forbidden) in RULES {
        let mut files = Vec::new();
        rust_files(&src.join(module), &mut files);
        assert!(!files.is_empty(), "src/{module} has no files");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read");
            for (line, name) in named_modules(&text) {
                if forbidden.contains(&name.as_str()) {
                    crossings.push(format!(
                        "{}:{line}: `{module}` names `crate::{name}`",
                        file.strip_prefix(&src).unwrap_or(&file).display()
                    ));
                }
            }
        }
    }
    assert!(
        crossings.is_empty(),
        "boundaries crossed:\n{}",
        crossings.join("\n")
    );
}

#[test]
fn the_check_sees_a_crossing() {
    let found = named_modules(
        "use crate::state::Store; // crate::sync in a comment\nuse crate::{\n    config::{Job, Mode},\n    detect,\n};\n",
    );
    let names: Vec<(usize, &str)> = found.iter().map(|(l, n)| (*l, n.as_str())).collect();
    assert_eq!(names, [(1, "state"), (2, "config"), (2, "detect")]);
}

/// A file that grows past 600 lines holds two things: split it.
#[test]
fn no_source_file_is_over_600_lines() {
    let mut files = Vec::new();
    rust_files(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut files,
    );
    assert!(
        files.len() > 50,
        "found only {} files under src/",
        files.len()
    );
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).expect("read").lines().count();
            (lines > 600).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "over 600 lines: {long:#?}");
}
