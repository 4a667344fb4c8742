//! Turns one raw job file into a typed [`Job`], collecting every error with its
//! location instead of stopping at the first.
use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

mod ctx;
mod detect;
mod fields;
mod source;
mod target;

pub use ctx::Ctx;
use detect::{check_newest, detect, ops};
use fields::{check_abilities, check_keys_mapped, fields, rules};
use source::{connect_timeout, source};
use target::{connector_options, target, Section};

use super::diagnostic::SourceText;
use super::interpolate::interpolate_or_keep;
use super::raw::{self, S};
use super::registry::{one_of, Reads, Registry, Spec, Writes};
use super::*;

/// A name in one file that must refer to a job; checked once every job is known.
pub struct JobReference {
    pub span: Range<usize>,
    pub name: String,
    pub what: &'static str,
}

/// `sqlite://rel.db` and `sqlite:rel.db` resolve against the config folder.
pub fn resolve_sqlite_url(url: &str, dir: &Path) -> String {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path == ":memory:" || Path::new(path).is_absolute() {
        return url.to_string();
    }
    let joined = dir.join(path);
    match query {
        Some(q) => format!("sqlite://{}?{q}", joined.display()),
        None => format!("sqlite://{}", joined.display()),
    }
}

pub fn job(
    ctx: &mut Ctx,
    name: &str,
    file: &raw::JobFile,
    (source_keys, target_keys): &(raw::TableKeys, raw::TableKeys),
    refs: &mut Vec<JobReference>,
) -> Option<Job> {
    let errors_before = ctx.src.errors.len();
    let description = ctx.opt_text(&file.description).unwrap_or_default();
    for a in &file.after {
        if let Some(n) = ctx.text(a) {
            refs.push(JobReference {
                span: a.span(),
                name: n,
                what: "`after`",
            });
        }
    }

    let source = source(ctx, &file.source, source_keys);
    let detect = detect(ctx, file.detect.as_ref(), &source, file.source.span());
    let ops = ops(ctx, file.detect.as_ref(), &detect);
    let batch = batch(ctx, file.batch.as_ref());
    let snapshot = snapshot(ctx, file.snapshot.as_ref());
    let target = target(ctx, &file.target, target_keys, source.tables.is_some());
    if target.mode == Mode::Mirror && !matches!(detect, Detect::Diff { .. }) {
        let span = file
            .target
            .get_ref()
            .mode
            .as_ref()
            .map_or(file.target.span(), |m| m.span());
        ctx.src.error(span, "`mode = \"mirror\"` needs `[detect] strategy = \"diff\"`, which is what finds deleted objects");
    } else if target.mode == Mode::Mirror && !ops.delete {
        if let Some(o) = file.detect.as_ref().and_then(|d| d.get_ref().ops.as_ref()) {
            ctx.src.error(
                o.span(),
                "`mode = \"mirror\"` needs deletes, and `ops` leaves out \"delete\"",
            );
        }
    }
    let rules = rules(
        ctx,
        file.rules.as_ref(),
        file.fields.as_ref().map(|f| f.get_ref()),
    );
    let fields = fields(ctx, file.fields.as_ref(), &target, &rules, refs);
    warn_unseen_deletes(ctx, file, &detect, &rules);
    check_newest(ctx, file, &detect, &target, &rules, &fields);
    check_keys_mapped(ctx, file, &source, &target, &fields, &rules);
    check_abilities(ctx, file, &target, &fields, &rules);

    let tests = tests(ctx, name, &file.tests);
    let children = children(ctx, file, &source, &detect);
    let schema = schema_policy(ctx, file.schema.as_ref());

    if ctx.src.errors.len() > errors_before {
        return None;
    }
    Some(Job {
        name: name.to_string(),
        description,
        after: file.after.iter().map(|a| a.get_ref().clone()).collect(),
        source,
        detect,
        ops,
        batch,
        snapshot,
        target,
        fields,
        rules,
        schema,
        children,
        tests,
        echo: Vec::new(),
    })
}

/// A cursor reads rows that changed; a row deleted at the source is not
/// there to read, so a delete rule other than `ignore` never applies.
fn warn_unseen_deletes(ctx: &mut Ctx, file: &raw::JobFile, detect: &Detect, rules: &Rules) {
    if !matches!(detect, Detect::Cursor { .. }) || rules.deletes == Deletes::Ignore {
        return;
    }
    let rule = match rules.deletes {
        Deletes::Soft => "soft",
        _ => "propagate",
    };
    let span = file
        .rules
        .as_ref()
        .and_then(|r| r.get_ref().deletes.as_ref())
        .map(|d| d.span())
        .or_else(|| file.detect.as_ref().map(|d| d.get_ref().strategy.span()))
        .unwrap_or(0..0);
    ctx.src.warning(
        span,
        format!("`strategy = \"cursor\"` never sees a row deleted at the source, so `deletes = \"{rule}\"` never applies: use `strategy = \"diff\"` (or an outbox) to carry deletes, or say `deletes = \"ignore\"`"),
    );
}

/// `jobs/<file>.toml:<line>` of a byte offset in the file being read.
fn location(ctx: &Ctx, offset: usize) -> String {
    let (line, _) = super::diagnostic::line_col(ctx.src.text, offset);
    let file = ctx
        .src
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("jobs/{file}:{line}")
}

/// `[schema]`: the drift policy.
fn schema_policy(ctx: &mut Ctx, s: Option<&S<raw::SchemaRaw>>) -> SchemaPolicy {
    let Some(s) = s.map(|s| s.get_ref()) else {
        return SchemaPolicy::default();
    };
    SchemaPolicy {
        on_new_column: s
            .on_new_column
            .as_ref()
            .and_then(|v| {
                ctx.choice(
                    v,
                    "on_new_column",
                    &[
                        ("ignore", OnNewColumn::Ignore),
                        ("add", OnNewColumn::Add),
                        ("fail", OnNewColumn::Fail),
                    ],
                )
            })
            .unwrap_or_default(),
        on_type_change: s
            .on_type_change
            .as_ref()
            .and_then(|v| {
                ctx.choice(
                    v,
                    "on_type_change",
                    &[("fail", OnTypeChange::Fail), ("widen", OnTypeChange::Widen)],
                )
            })
            .unwrap_or_default(),
    }
}

/// `[children.NAME]`: a query comparing the parent column with `= $1`, a
/// key, and a parent with a one-column key from a SQL source.
fn children(
    ctx: &mut Ctx,
    file: &raw::JobFile,
    source: &SourceConfig,
    detect: &Detect,
) -> BTreeMap<String, Child> {
    let mut out = BTreeMap::new();
    for (name, spec) in &file.children {
        let (name, raw) = (name.get_ref(), spec.get_ref());
        let query = raw.query.get_ref();
        let Some((_, parent)) = Child::parent_comparison(query) else {
            ctx.src.error(raw.query.span(), format!("`[children.{name}]`: the query must compare the parent's key with `= $1` (e.g. `where order_id = $1`)"));
            continue;
        };
        if ctx.reads(&source.kind) != Some(Reads::Table) {
            let tables = one_of(&ctx.reg.sources_reading(Reads::Table));
            ctx.src.error(
                spec.span(),
                format!(
                    "`[children.{name}]` needs a {tables} source, not `{}`",
                    source.kind
                ),
            );
        }
        if source.key.len() != 1 {
            ctx.src.error(
                spec.span(),
                format!("`[children.{name}]` needs a one-column `[source] key` for `$1`"),
            );
        }
        if raw.key.get_ref().is_empty() {
            ctx.src.error(
                raw.key.span(),
                format!("`[children.{name}]`: `key` names the columns that identify a child"),
            );
        }
        if !matches!(detect, Detect::Diff { .. }) {
            ctx.src.error(spec.span(), format!("`[children.{name}]` needs `strategy = \"diff\"`: a changed child does not move its parent's cursor, so only a diff sees it"));
        }
        out.insert(
            name.clone(),
            Child {
                query: query.clone(),
                key: raw
                    .key
                    .get_ref()
                    .iter()
                    .map(|k| k.get_ref().clone())
                    .collect(),
                parent,
                table: raw
                    .table
                    .as_ref()
                    .map_or(name.clone(), |t| t.get_ref().clone()),
            },
        );
    }
    out
}

/// `[[tests]]` blocks: each names itself, expects one of the write kinds,
/// and gives a source object, a target row, or both.
fn tests(ctx: &mut Ctx, name: &str, blocks: &[S<raw::TestRaw>]) -> Vec<RuleTest> {
    let mut out = Vec::new();
    for block in blocks {
        let t = block.get_ref();
        let test_name = ctx.text(&t.name).unwrap_or_default();
        let expect = ctx.choice(
            &t.expect,
            "expect",
            &[
                ("insert", Some(WriteKind::Insert)),
                ("update", Some(WriteKind::Update)),
                ("delete", Some(WriteKind::Delete)),
                ("skip", Some(WriteKind::Skip)),
                ("conflict", Some(WriteKind::Conflict)),
            ],
        );
        if expect == Some(Some(WriteKind::Conflict))
            && (t.written.is_none() || t.target.is_none() || t.source.is_none())
        {
            ctx.src.error(t.expect.span(), format!("test `{test_name}`: `expect = \"conflict\"` needs `source`, `target` and `written` (what ferry last wrote): a conflict is a field both sides changed since then"));
        }
        if t.source.is_none() && t.target.is_none() {
            ctx.src.error(block.span(), format!("test `{test_name}` needs `source` (the object), `target` (the target's row), or both"));
        }
        if let (Some(f), Some(Some(kind))) = (&t.fields, expect) {
            if !matches!(
                kind,
                WriteKind::Insert | WriteKind::Update | WriteKind::Conflict
            ) {
                ctx.src.error(f.span(), format!("test `{test_name}`: `fields` applies to `expect = \"insert\"`, `\"update\"` or `\"conflict\"`"));
            }
        }
        let (line, _) = super::diagnostic::line_col(ctx.src.text, block.span().start);
        let record = |table: &Option<S<toml::Table>>| {
            table.as_ref().map(|t| {
                t.get_ref()
                    .iter()
                    .map(|(k, v)| (k.clone(), toml_to_json(v)))
                    .collect()
            })
        };
        if let Some(Some(expect)) = expect {
            out.push(RuleTest {
                name: test_name,
                location: format!("jobs/{name}.toml:{line}"),
                source: record(&t.source),
                target: record(&t.target),
                written: record(&t.written),
                expect,
                fields: record(&t.fields),
            });
        }
    }
    out
}

/// A TOML value as the JSON a source would give: datetimes as their text.
fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

fn span_of<T>(v: &Option<S<T>>) -> Option<Range<usize>> {
    v.as_ref().map(|v| v.span())
}

/// No key is accepted and ignored: one that `kind` does not read is an
/// error (unless that spot was already reported).
fn refuse_keys_of_other_kinds(
    ctx: &mut Ctx,
    what: &str,
    kind: &str,
    present: &[(&str, Option<Range<usize>>)],
    allowed: &[&str],
) {
    for (key, span) in present {
        let Some(span) = span else { continue };
        if allowed.contains(key) {
            continue;
        }
        let at = ctx.src.diagnostic(span.clone(), "");
        if ctx
            .src
            .errors
            .iter()
            .any(|e| e.line == at.line && e.col == at.col)
        {
            continue;
        }
        ctx.src.error(
            span.clone(),
            format!("`{key}` does not apply to a {what} of type `{kind}`"),
        );
    }
}

fn batch(ctx: &mut Ctx, b: Option<&S<raw::BatchRaw>>) -> Batch {
    let d = Batch::default();
    let Some(b) = b else { return d };
    let r = b.get_ref();
    let (initial, max) = match &r.backoff {
        Some(bo) => {
            let bo = bo.get_ref();
            (
                ctx.duration(&bo.initial, "backoff.initial", d.backoff_initial),
                ctx.duration(&bo.max, "backoff.max", d.backoff_max),
            )
        }
        None => (d.backoff_initial, d.backoff_max),
    };
    if initial > max {
        if let Some(bo) = &r.backoff {
            ctx.src
                .error(bo.span(), "`backoff.initial` is longer than `backoff.max`");
        }
    }
    Batch {
        size: ctx.int(&r.size, "size", (1, 100_000), d.size as i64) as usize,
        concurrency: ctx.int(
            &r.concurrency,
            "concurrency",
            (1, 256),
            d.concurrency as i64,
        ) as usize,
        max_attempts: ctx.int(
            &r.max_attempts,
            "max_attempts",
            (1, 1000),
            d.max_attempts as i64,
        ) as u32,
        backoff_initial: initial,
        backoff_max: max,
    }
}

fn snapshot(ctx: &mut Ctx, s: Option<&S<raw::SnapshotRaw>>) -> Snapshot {
    let d = Snapshot::default();
    let Some(s) = s else { return d };
    let r = s.get_ref();
    Snapshot {
        chunk_rows: ctx.int(
            &r.chunk_rows,
            "chunk_rows",
            (0, 100_000_000),
            d.chunk_rows as i64,
        ) as u64,
        parallelism: ctx.int(&r.parallelism, "parallelism", (1, 64), d.parallelism as i64) as usize,
    }
}

/// Keys of `[source]` and `[target]` that neither ferry nor any connector
/// reads, for a file whose other errors stop it before its sections are
/// checked against their connector's type.
pub fn unknown_section_keys(ctx: &mut Ctx, (source, target): &(raw::TableKeys, raw::TableKeys)) {
    let sections = [
        (Section::Source, source, raw::SOURCE_KEYS),
        (Section::Target, target, raw::TARGET_KEYS),
    ];
    for (section, given, ferry_keys) in sections {
        let declared = |c: &Spec, key: &str| match section {
            Section::Source => c.source.as_ref().is_some_and(|s| s.keys.contains(&key)),
            Section::Target => c.target.as_ref().is_some_and(|t| t.keys.contains(&key)),
        };
        let what = match section {
            Section::Source => "[source]",
            Section::Target => "[target]",
        };
        for (key, _) in given {
            let name = key.get_ref().as_str();
            if !ferry_keys.contains(&name) && !ctx.reg.connectors.iter().any(|c| declared(c, name))
            {
                ctx.src.error(
                    key.span(),
                    format!("unknown field `{name}` in {what}: no connector type reads it"),
                );
            }
        }
    }
}
