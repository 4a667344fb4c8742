//! Turns one raw job file into a typed [`Job`], collecting every error with its
//! location instead of stopping at the first.
use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use super::diagnostic::SourceText;
use super::interpolate::interpolate_or_keep;
use super::raw::{self, S};
use super::registry::{one_of, Reads, Registry, Writes};
use super::*;

/// A name in one file that must refer to a job; checked once every job is known.
pub struct JobReference {
    pub span: Range<usize>,
    pub name: String,
    pub what: &'static str,
}

/// Interpolation and located errors for one file.
pub struct Ctx<'a, 'e> {
    pub src: SourceText<'a>,
    pub env: &'e dyn Fn(&str) -> Option<String>,
    pub dir: &'a Path,
    /// Unset variables stay as `${VAR}` (see [`super::load_offline`]).
    pub keep_unset: bool,
    /// What the connectors of this build accept.
    pub reg: &'a Registry<'a>,
}

impl Ctx<'_, '_> {
    /// The interpolated string value, or None after recording why it failed.
    pub fn text(&mut self, v: &S<String>) -> Option<String> {
        match interpolate_or_keep(v.get_ref(), |n| (self.env)(n), self.keep_unset) {
            Ok(s) => Some(s),
            Err(e) => {
                self.src.error(v.span(), e.to_string());
                None
            }
        }
    }

    fn opt_text(&mut self, v: &Option<S<String>>) -> Option<String> {
        v.as_ref().and_then(|v| self.text(v))
    }

    fn choice<T: Copy>(&mut self, v: &S<String>, key: &str, options: &[(&str, T)]) -> Option<T> {
        let s = self.text(v)?;
        match options.iter().find(|(n, _)| *n == s) {
            Some((_, t)) => Some(*t),
            None => {
                let names: Vec<String> = options.iter().map(|(n, _)| format!("`{n}`")).collect();
                self.src.error(
                    v.span(),
                    format!("`{key}` is `{s}`; expected one of {}", names.join(", ")),
                );
                None
            }
        }
    }

    pub fn duration(&mut self, v: &Option<S<String>>, key: &str, default: Duration) -> Duration {
        let Some(v) = v else { return default };
        let Some(s) = self.text(v) else {
            return default;
        };
        match humantime::parse_duration(&s) {
            Ok(d) => d,
            Err(e) => {
                self.src.error(
                    v.span(),
                    format!("`{key}` = `{s}` is not a duration like \"5s\" or \"10m\": {e}"),
                );
                default
            }
        }
    }

    fn int(&mut self, v: &Option<S<i64>>, key: &str, range: (i64, i64), default: i64) -> i64 {
        match v {
            None => default,
            Some(v) if (range.0..=range.1).contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                self.src.error(
                    v.span(),
                    format!(
                        "`{key}` = {} is out of range {}..={}",
                        v.get_ref(),
                        range.0,
                        range.1
                    ),
                );
                default
            }
        }
    }

    /// A column list: present, not empty, no name twice.
    fn columns(
        &mut self,
        v: &Option<S<Vec<S<String>>>>,
        table_span: Range<usize>,
        what: &str,
    ) -> Vec<String> {
        let Some(list) = v else {
            self.src.error(
                table_span,
                format!("{what} needs `key`, the column(s) that identify an object"),
            );
            return Vec::new();
        };
        if list.get_ref().is_empty() {
            self.src
                .error(list.span(), format!("{what} `key` is empty"));
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for c in list.get_ref() {
            let Some(name) = self.text(c) else { continue };
            if name.is_empty() {
                self.src
                    .error(c.span(), format!("{what} `key` has an empty column name"));
            } else if !seen.insert(name.clone()) {
                self.src.error(
                    c.span(),
                    format!("{what} `key` names column `{name}` twice"),
                );
            } else {
                out.push(name);
            }
        }
        out
    }

    fn url(
        &mut self,
        v: &Option<S<String>>,
        kind: &str,
        table_span: Range<usize>,
        what: &str,
    ) -> Option<String> {
        let Some(v) = v else {
            self.src
                .error(table_span, format!("{what} of type `{kind}` needs `url`"));
            return None;
        };
        let url = self.text(v)?;
        // An unset variable kept as `${VAR}`: nothing to check yet.
        if self.keep_unset && url.contains("${") {
            return Some(url);
        }
        let schemes: &[&str] = self.reg.spec(kind).map_or(&[], |s| s.schemes);
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
        if !schemes.contains(&scheme) {
            self.src.error(
                v.span(),
                format!(
                    "{what} url `{}` must start with {} for type `{kind}`",
                    crate::redact::url(&url),
                    schemes
                        .iter()
                        .map(|s| format!("`{s}:`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            );
            return None;
        }
        Some(if scheme == "sqlite" {
            resolve_sqlite_url(&url, self.dir)
        } else {
            url
        })
    }

    fn path(
        &mut self,
        v: &Option<S<String>>,
        table_span: Range<usize>,
        what: &str,
    ) -> Option<std::path::PathBuf> {
        let Some(v) = v else {
            self.src
                .error(table_span, format!("{what} of type `file` needs `path`"));
            return None;
        };
        let p = self.text(v)?;
        Some(self.dir.join(p))
    }

    fn format(
        &mut self,
        v: &Option<S<String>>,
        path: Option<&Path>,
        table_span: Range<usize>,
        what: &str,
    ) -> Option<FileFormat> {
        const FORMATS: &[(&str, FileFormat)] =
            &[("csv", FileFormat::Csv), ("jsonl", FileFormat::Jsonl)];
        if let Some(v) = v {
            return self.choice(v, "format", FORMATS);
        }
        match path.and_then(|p| p.extension()).and_then(|e| e.to_str()) {
            Some("csv") => Some(FileFormat::Csv),
            Some("jsonl" | "ndjson") => Some(FileFormat::Jsonl),
            _ => {
                self.src.error(
                    table_span,
                    format!("{what} of type `file` needs `format = \"csv\"` or `\"jsonl\"`"),
                );
                None
            }
        }
    }

    fn kind(&mut self, v: &S<String>, what: &str) -> Option<String> {
        let k = self.text(v)?;
        let kinds = self.reg.kinds(what == "source");
        if !kinds.contains(&k.as_str()) {
            self.src.error(
                v.span(),
                format!(
                    "unknown {what} type `{k}`; expected one of {}",
                    kinds.join(", ")
                ),
            );
            return None;
        }
        Some(k)
    }

    /// How a source of `kind` (already checked) reads.
    fn reads(&self, kind: &str) -> Option<Reads> {
        self.reg.source(kind).map(|s| s.reads)
    }

    /// Whether a target of `kind` (already checked) writes table rows.
    fn writes_rows(&self, kind: &str) -> bool {
        self.reg
            .target(kind)
            .is_some_and(|t| t.writes == Writes::Table)
    }

    /// Records an error for a key that the connector type does not use.
    fn unused<T>(&mut self, v: &Option<S<T>>, key: &str, kind: &str, what: &str) {
        if let Some(v) = v {
            self.src.error(
                v.span(),
                format!("`{key}` does not apply to a {what} of type `{kind}`"),
            );
        }
    }
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
    target_keys: &raw::TableKeys,
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

    let source = source(ctx, &file.source);
    let detect = detect(ctx, file.detect.as_ref(), &source, file.source.span());
    let ops = ops(ctx, file.detect.as_ref(), &detect);
    let batch = batch(ctx, file.batch.as_ref());
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

/// `connect_timeout` of a source or target: how long connecting may take
/// (default 5 s); a file has nothing to connect to.
fn connect_timeout(ctx: &mut Ctx, v: &Option<S<String>>, kind: &str, what: &str) -> Duration {
    if ctx.reg.spec(kind).is_some_and(|s| s.schemes.is_empty()) {
        ctx.unused(v, "connect_timeout", kind, what);
    }
    let timeout = ctx.duration(v, "connect_timeout", crate::reach::DEFAULT_CONNECT_TIMEOUT);
    if let (Some(v), true) = (v, timeout.is_zero()) {
        ctx.src
            .error(v.span(), "`connect_timeout` must be longer than 0s");
    }
    timeout
}

fn source(ctx: &mut Ctx, s: &S<raw::SourceRaw>) -> SourceConfig {
    let span = s.span();
    let r = s.get_ref();
    let what = "[source]";
    let Some(kind) = ctx.kind(&r.kind, "source") else {
        return SourceConfig::default();
    };
    let table_source = ctx.reads(&kind) == Some(Reads::Table);
    let whole_schema = r.tables.is_some() && table_source;
    let key = match (&r.key, whole_schema) {
        (Some(k), true) => {
            ctx.src.error(
                k.span(),
                "with `tables`, each table's primary key is its key: leave `key` out",
            );
            vec![]
        }
        (None, true) => vec![],
        (_, false) => ctx.columns(&r.key, span.clone(), what),
    };
    let mut out = SourceConfig {
        key,
        connect_timeout: connect_timeout(ctx, &r.connect_timeout, &kind, "source"),
        ..Default::default()
    };
    if table_source {
        out.url = ctx.url(&r.url, &kind, span.clone(), what);
        out.table = ctx.opt_text(&r.table);
        out.query = ctx.opt_text(&r.query);
        out.filter = ctx.opt_text(&r.filter);
        if let Some(tables) = &r.tables {
            let patterns: Vec<String> = tables
                .get_ref()
                .iter()
                .filter_map(|t| ctx.text(t))
                .collect();
            if patterns.iter().all(|p| p.starts_with('!')) {
                ctx.src.error(
                    tables.span(),
                    "`tables` needs at least one pattern that includes tables (like \"public.*\"); `!` patterns only exclude",
                );
            }
            out.tables = Some(patterns);
        }
        match (&r.table, &r.query, &r.tables) {
            (None, None, None) => ctx
                .src
                .error(span.clone(), "[source] needs `table`, `query` or `tables`"),
            (Some(_), Some(q), _) => ctx
                .src
                .error(q.span(), "[source] takes `table` or `query`, not both"),
            (Some(_), _, Some(t)) | (_, Some(_), Some(t)) => ctx.src.error(
                t.span(),
                "[source] takes `tables` (one job per table) or a single `table` or `query`",
            ),
            _ => {}
        }
        if let (Some(q), Some(w)) = (&r.query, &r.filter) {
            let _ = q;
            ctx.src.error(
                w.span(),
                "`where` goes with `table`; put the condition in the `query`",
            );
        }
        ctx.unused(&r.path, "path", &kind, "source");
        ctx.unused(&r.format, "format", &kind, "source");
    } else if kind == "file" {
        out.path = ctx.path(&r.path, span.clone(), what);
        out.format = ctx.format(&r.format, out.path.as_deref(), span.clone(), what);
        out.types = file_types(ctx, &r.types, out.format);
        ctx.unused(&r.url, "url", &kind, "source");
        ctx.unused(&r.table, "table", &kind, "source");
        ctx.unused(&r.query, "query", &kind, "source");
    } else if kind == "amqp" {
        out.url = ctx.url(&r.url, &kind, span.clone(), what);
        match &r.queue {
            Some(q) => out.queue = ctx.text(q),
            None => ctx.src.error(
                span.clone(),
                "[source] of type `amqp` needs `queue`, the queue to consume",
            ),
        }
        out.prefetch = match &r.prefetch {
            Some(p) if !(1..=65_535).contains(p.get_ref()) => {
                ctx.src.error(
                    p.span(),
                    format!("`prefetch` = {} must be between 1 and 65535", p.get_ref()),
                );
                0
            }
            Some(p) => *p.get_ref() as u16,
            None => 0,
        };
        ctx.unused(&r.table, "table", &kind, "source");
        ctx.unused(&r.query, "query", &kind, "source");
    }
    if kind == "http" {
        out.url = ctx.url(&r.url, &kind, span.clone(), what);
        let pointer = |ctx: &mut Ctx, v: &Option<S<String>>, key: &str| {
            let text = ctx.opt_text(v)?;
            if !text.is_empty() && !text.starts_with('/') {
                if let Some(v) = v {
                    ctx.src.error(
                        v.span(),
                        format!("`{key}` is a JSON pointer (like `/data`), not `{text}`"),
                    );
                }
            }
            Some(text)
        };
        let items = pointer(ctx, &r.items, "items").unwrap_or_default();
        let next = pointer(ctx, &r.next, "next");
        if let (Some(_), Some(p)) = (&next, &r.page_param) {
            ctx.src.error(
                p.span(),
                "`page_param` pages by number, `next` by cursor: give one of them",
            );
        }
        out.http = Some(HttpSourceConfig {
            items,
            next,
            cursor_param: ctx
                .opt_text(&r.cursor_param)
                .unwrap_or_else(|| "cursor".to_string()),
            page_param: ctx.opt_text(&r.page_param),
            auth: r.auth.as_ref().and_then(|a| http_auth(ctx, a)),
            timeout: ctx.duration(&r.timeout, "timeout", Duration::from_secs(30)),
        });
        ctx.unused(&r.table, "table", &kind, "source");
        ctx.unused(&r.query, "query", &kind, "source");
    }
    if kind == "nats" {
        out.url = ctx.url(&r.url, &kind, span.clone(), what);
        for (value, name) in [(&r.stream, "stream"), (&r.consumer, "consumer")] {
            if value.is_none() {
                ctx.src.error(
                    span.clone(),
                    format!("[source] of type `nats` needs `{name}`"),
                );
            }
        }
        out.stream = ctx.opt_text(&r.stream);
        out.consumer = ctx.opt_text(&r.consumer);
        out.subject = ctx.opt_text(&r.subject);
        ctx.unused(&r.table, "table", &kind, "source");
        ctx.unused(&r.query, "query", &kind, "source");
    }
    let keys = [
        ("url", span_of(&r.url)),
        ("table", span_of(&r.table)),
        ("query", span_of(&r.query)),
        ("tables", span_of(&r.tables)),
        ("where", span_of(&r.filter)),
        ("path", span_of(&r.path)),
        ("format", span_of(&r.format)),
        ("types", span_of(&r.types)),
        ("items", span_of(&r.items)),
        ("next", span_of(&r.next)),
        ("page_param", span_of(&r.page_param)),
        ("cursor_param", span_of(&r.cursor_param)),
        ("auth", span_of(&r.auth)),
        ("timeout", span_of(&r.timeout)),
        ("queue", span_of(&r.queue)),
        ("prefetch", span_of(&r.prefetch)),
        ("stream", span_of(&r.stream)),
        ("consumer", span_of(&r.consumer)),
        ("subject", span_of(&r.subject)),
    ];
    let allowed = ctx.reg.source(&kind).map_or(&[][..], |s| s.keys);
    refuse_keys_of_other_kinds(ctx, "source", &kind, &keys, allowed);
    out.kind = kind;
    out
}

/// `types = { id = "bigint", balance = "numeric(12,2)" }` of a CSV file:
/// each a type ferry knows, in PostgreSQL's spelling.
fn file_types(
    ctx: &mut Ctx,
    types: &Option<S<toml::Table>>,
    format: Option<FileFormat>,
) -> Vec<(String, String)> {
    let Some(types) = types else {
        return vec![];
    };
    if format == Some(FileFormat::Jsonl) {
        ctx.src.error(
            types.span(),
            "`types` applies to CSV files; a JSON line carries its own types",
        );
        return vec![];
    }
    let mut out = Vec::new();
    for (column, declared) in types.get_ref() {
        match declared.as_str() {
            Some(d) if (ctx.reg.column_type)(d) => out.push((column.clone(), d.to_string())),
            _ => ctx.src.error(
                types.span(),
                format!(
                    "`types.{column}` = {declared}: give one of {}",
                    ctx.reg.column_types
                ),
            ),
        }
    }
    out
}

/// The keys of `[target]` a connector reads into its own typed options
/// (those its declaration lists and ferry's own `[target]` keys do not),
/// with every `${VAR}` resolved; each problem its check finds is located
/// at the key. A key no connector declares is an error (the file's keys
/// are otherwise checked by `raw::TargetRaw`).
fn target_options(
    ctx: &mut Ctx,
    kind: &str,
    given: &raw::TableKeys,
    table: Range<usize>,
) -> toml::Table {
    let Some(spec) = ctx.reg.target(kind) else {
        return toml::Table::new();
    };
    let mut options = toml::Table::new();
    let mut spans: BTreeMap<String, Range<usize>> = BTreeMap::new();
    for (key, value) in given {
        let name = key.get_ref();
        spans.insert(name.clone(), key.span());
        if spec.keys.contains(&name.as_str()) && spec.options.is_some() {
            if let Some(value) = interpolate_value(ctx, value) {
                options.insert(name.clone(), value);
            }
        } else if spec.keys.contains(&name.as_str()) || raw::TARGET_KEYS.contains(&name.as_str()) {
            // Read by ferry ([`target`] refuses those the kind does not use).
        } else if ctx.reg.connectors.iter().any(|c| {
            c.target
                .as_ref()
                .is_some_and(|t| t.keys.contains(&name.as_str()))
        }) {
            ctx.src.error(
                key.span(),
                format!("`{name}` does not apply to a target of type `{kind}`"),
            );
        } else {
            let takes: Vec<&str> = spec.keys.to_vec();
            ctx.src.error(
                key.span(),
                format!(
                    "unknown field `{name}`; a `{kind}` target takes {}, beside `type`, `key` and `connect_timeout`",
                    one_of(&takes)
                ),
            );
        }
    }
    if let Some(check) = spec.options {
        for problem in check(&options) {
            let span = problem
                .key
                .as_ref()
                .and_then(|k| spans.get(k).cloned())
                .unwrap_or_else(|| table.clone());
            ctx.src.error(span, problem.message);
        }
    }
    options
}

/// A TOML value with `${VAR}` resolved in every string in it.
fn interpolate_value(ctx: &mut Ctx, value: &S<toml::Value>) -> Option<toml::Value> {
    fn walk(
        v: &toml::Value,
        resolve: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<toml::Value, String> {
        Ok(match v {
            toml::Value::String(s) => toml::Value::String(resolve(s)?),
            toml::Value::Array(a) => toml::Value::Array(
                a.iter()
                    .map(|v| walk(v, resolve))
                    .collect::<Result<_, _>>()?,
            ),
            toml::Value::Table(t) => toml::Value::Table(
                t.iter()
                    .map(|(k, v)| Ok((k.clone(), walk(v, resolve)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }
    let (env, keep) = (ctx.env, ctx.keep_unset);
    let mut resolve = |s: &str| interpolate_or_keep(s, |n| env(n), keep).map_err(|e| e.to_string());
    match walk(value.get_ref(), &mut resolve) {
        Ok(v) => Some(v),
        Err(e) => {
            ctx.src.error(value.span(), e);
            None
        }
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

fn detect(
    ctx: &mut Ctx,
    d: Option<&S<raw::DetectRaw>>,
    source: &SourceConfig,
    source_span: Range<usize>,
) -> Detect {
    let Some(d) = d else {
        if ctx.reads(&source.kind) == Some(Reads::Queue) {
            return Detect::Outbox;
        }
        return Detect::Diff {
            max_delete_ratio: 0.5,
        };
    };
    let r = d.get_ref();
    let reads = ctx.reads(&source.kind);
    if reads == Some(Reads::Queue) && r.strategy.get_ref() != "outbox" {
        ctx.src.error(r.strategy.span(), format!("a queue (`type = \"{}\"`) is read with `strategy = \"outbox\"`: each message is a change, acknowledged once it is enqueued", source.kind));
    }
    #[derive(Clone, Copy)]
    enum K {
        Cursor,
        Diff,
        Outbox,
    }
    let kind = ctx.choice(
        &r.strategy,
        "strategy",
        &[
            ("cursor", K::Cursor),
            ("diff", K::Diff),
            ("outbox", K::Outbox),
        ],
    );
    let ratio = match &r.max_delete_ratio {
        Some(v) if !(0.0..=1.0).contains(v.get_ref()) => {
            ctx.src.error(
                v.span(),
                format!(
                    "`max_delete_ratio` = {} must be between 0 and 1",
                    v.get_ref()
                ),
            );
            0.5
        }
        Some(v) => *v.get_ref(),
        None => 0.5,
    };
    match kind {
        Some(K::Cursor) => {
            let column = match &r.cursor {
                Some(c) => ctx.text(c).unwrap_or_default(),
                None => {
                    ctx.src.error(d.span(), "`strategy = \"cursor\"` needs `cursor`, a column that grows on every change");
                    String::new()
                }
            };
            if reads == Some(Reads::Whole) {
                ctx.src.error(
                    r.strategy.span(),
                    format!("a `{}` source is read whole, with no cursor to resume from; use `strategy = \"diff\"`", source.kind),
                );
            }
            if let Some(m) = &r.max_delete_ratio {
                ctx.src.error(
                    m.span(),
                    "`max_delete_ratio` applies to `strategy = \"diff\"` only",
                );
            }
            let lag = ctx.duration(&r.lag, "lag", Duration::ZERO);
            Detect::Cursor { column, lag }
        }
        Some(K::Diff) => {
            ctx.unused(&r.cursor, "cursor", "diff", "strategy");
            ctx.unused(&r.lag, "lag", "diff", "strategy");
            Detect::Diff {
                max_delete_ratio: ratio,
            }
        }
        Some(K::Outbox) => {
            let _ = source_span;
            let outbox_table = ctx.reg.source(&source.kind).is_some_and(|s| s.outbox_table);
            match reads {
                Some(Reads::Queue) => {}
                _ if outbox_table && source.table.is_some() && source.filter.is_none() => {}
                _ if outbox_table => ctx.src.error(r.strategy.span(), "`strategy = \"outbox\"` reads an outbox `table` (columns `id`, `op`, `payload`) and deletes what it enqueued: give `table`, without `query` or `where`"),
                _ => {
                    let queues = one_of(&ctx.reg.sources_reading(Reads::Queue));
                    let tables: Vec<&str> = ctx.reg.connectors.iter().filter(|c| c.source.as_ref().is_some_and(|s| s.outbox_table)).map(|c| c.kind).collect();
                    ctx.src.error(r.strategy.span(), format!("`strategy = \"outbox\"` reads a queue ({queues}) or an outbox table ({}), not a `{}` source", one_of(&tables), source.kind))
                }
            }
            ctx.unused(&r.cursor, "cursor", "outbox", "strategy");
            ctx.unused(&r.lag, "lag", "outbox", "strategy");
            Detect::Outbox
        }
        None if reads == Some(Reads::Queue) => Detect::Outbox,
        None => Detect::Diff {
            max_delete_ratio: ratio,
        },
    }
}

/// `owner = "newest"` compares the source's change time (its cursor) with the
/// target's `updated_at`: both must exist. (Fields that name `newest` are
/// checked for `updated_at` where they are read.)
fn check_newest(
    ctx: &mut Ctx,
    file: &raw::JobFile,
    detect: &Detect,
    target: &TargetConfig,
    rules: &Rules,
    fields: &[FieldMap],
) {
    let default_newest = rules.owner == Owner::Newest && fields.is_empty();
    if !default_newest && !fields.iter().any(|f| f.owner == Owner::Newest) {
        return;
    }
    let owner_span = file
        .rules
        .as_ref()
        .and_then(|r| r.get_ref().owner.as_ref())
        .map_or(0..0, |o| o.span());
    if default_newest && target.updated_at.is_none() {
        ctx.src.error(
            owner_span.clone(),
            "`owner = \"newest\"` needs `[target] updated_at`, the target's own change time",
        );
    }
    if !matches!(detect, Detect::Cursor { .. }) {
        let span = file
            .detect
            .as_ref()
            .map_or(owner_span, |d| d.get_ref().strategy.span());
        ctx.src.error(span, "`owner = \"newest\"` compares the source's change time, its cursor, with the target's `updated_at`: it needs `strategy = \"cursor\"`");
    }
}

/// `[detect] ops`: a non-empty subset of create, update, delete (default all).
fn ops(ctx: &mut Ctx, d: Option<&S<raw::DetectRaw>>, detect: &Detect) -> Ops {
    let Some(list) = d.and_then(|d| d.get_ref().ops.as_ref()) else {
        return Ops::default();
    };
    let mut ops = Ops {
        create: false,
        update: false,
        delete: false,
    };
    #[derive(Clone, Copy)]
    enum O {
        Create,
        Update,
        Delete,
    }
    for op in list.get_ref() {
        match ctx.choice(
            op,
            "ops",
            &[
                ("create", O::Create),
                ("update", O::Update),
                ("delete", O::Delete),
            ],
        ) {
            Some(O::Create) => ops.create = true,
            Some(O::Update) => ops.update = true,
            Some(O::Delete) => ops.delete = true,
            None => return Ops::default(),
        }
    }
    if !(ops.create || ops.update || ops.delete) {
        ctx.src.error(
            list.span(),
            "`ops` is empty; name at least one of `create`, `update`, `delete` (or leave it out: all)",
        );
    } else if !(ops.create || ops.update) && matches!(detect, Detect::Cursor { .. }) {
        ctx.src.error(
            list.span(),
            "`ops` names only \"delete\", which a cursor never sees; use `strategy = \"diff\"`",
        );
    }
    ops
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

fn target(
    ctx: &mut Ctx,
    t: &S<raw::TargetRaw>,
    given: &raw::TableKeys,
    whole_schema: bool,
) -> TargetConfig {
    let span = t.span();
    let r = t.get_ref();
    let what = "[target]";
    let Some(kind) = ctx.kind(&r.kind, "target") else {
        return TargetConfig::default();
    };
    let rows = ctx.writes_rows(&kind);
    let mode = r
        .mode
        .as_ref()
        .and_then(|m| {
            ctx.choice(
                m,
                "mode",
                &[
                    ("upsert", Mode::Upsert),
                    ("insert", Mode::Insert),
                    ("update", Mode::Update),
                    ("mirror", Mode::Mirror),
                ],
            )
        })
        .unwrap_or_default();
    // Documents, files and messages record every change; the modes say how
    // a table's rows are written.
    if let (Some(m), false) = (&r.mode, rows) {
        ctx.src.error(
            m.span(),
            format!(
                "`mode` applies to SQL targets; a `{kind}` target records every change as it comes"
            ),
        );
    }
    if let (Some(u), false) = (&r.updated_at, rows) {
        ctx.src.error(
            u.span(),
            format!("`updated_at` applies to SQL targets, not to a `{kind}` target"),
        );
    }
    let mut out = TargetConfig {
        mode,
        updated_at: ctx.opt_text(&r.updated_at),
        connect_timeout: connect_timeout(ctx, &r.connect_timeout, &kind, "target"),
        ..Default::default()
    };
    let allowed = ctx.reg.target(&kind).map_or(&[][..], |t| t.keys);
    if rows {
        out.url = ctx.url(&r.url, &kind, span.clone(), what);
        // A whole-schema job keys each target table by its source table's key.
        out.key = match (&r.key, whole_schema) {
            (None, true) => vec![],
            _ => ctx.columns(&r.key, span.clone(), what),
        };
        match &r.table {
            Some(tb) => out.table = ctx.text(tb),
            None if whole_schema => out.table = Some("{table}".to_string()),
            None => ctx.src.error(
                span.clone(),
                format!("{what} of type `{kind}` needs `table`"),
            ),
        }
        ctx.unused(&r.path, "path", &kind, "target");
        match (&r.create, &r.create_table) {
            (Some(_), Some(old)) => ctx.src.error(
                old.span(),
                "`create_table` is the old name of `create`; give only `create`",
            ),
            (_, Some(c)) if !allowed.contains(&"create_table") => ctx.src.error(
                c.span(),
                "`create_table` is the old name of `create`, for `sqlite` only; write `create = true`",
            ),
            (Some(c), _) | (None, Some(c)) => out.create = *c.get_ref(),
            (None, None) => {}
        }
    } else {
        // Records: a key, when given, names the objects' key fields.
        if let Some(k) = &r.key {
            out.key = ctx.columns(&Some(k.clone()), span.clone(), what);
        }
        if !ctx.reg.spec(&kind).is_some_and(|s| s.schemes.is_empty()) {
            out.url = ctx.url(&r.url, &kind, span.clone(), what);
        }
    }
    if kind == "file" {
        out.path = ctx.path(&r.path, span.clone(), what);
        out.format = ctx.format(&r.format, None, span.clone(), what);
    } else if kind == "http" {
        out.http = Some(http_target(ctx, r));
    }
    let keys = [
        ("url", span_of(&r.url)),
        ("table", span_of(&r.table)),
        ("create", span_of(&r.create)),
        ("create_table", span_of(&r.create_table)),
        ("path", span_of(&r.path)),
        ("format", span_of(&r.format)),
        ("method", span_of(&r.method)),
        ("batch", span_of(&r.batch)),
        ("results", span_of(&r.results)),
        ("auth", span_of(&r.auth)),
        ("timeout", span_of(&r.timeout)),
    ];
    refuse_keys_of_other_kinds(ctx, "target", &kind, &keys, allowed);
    out.options = target_options(ctx, &kind, given, span.clone());
    out.kind = kind;
    out
}

/// `method`, `batch`, `results`, `auth`, `timeout` of an HTTP target.
fn http_target(ctx: &mut Ctx, r: &raw::TargetRaw) -> HttpTarget {
    let method = r
        .method
        .as_ref()
        .and_then(|m| {
            ctx.choice(
                m,
                "method",
                &[("POST", "POST"), ("PUT", "PUT"), ("PATCH", "PATCH")],
            )
        })
        .unwrap_or("POST")
        .to_string();
    let results = ctx.opt_text(&r.results);
    if let (Some(p), Some(v)) = (&results, &r.results) {
        if !p.starts_with('/') {
            ctx.src.error(
                v.span(),
                format!("`results` is a JSON pointer (like `/results`), not `{p}`"),
            );
        }
    }
    let auth = r.auth.as_ref().and_then(|a| http_auth(ctx, a));
    HttpTarget {
        method,
        batch: r.batch.as_ref().is_none_or(|b| *b.get_ref()),
        results,
        auth,
        timeout: ctx.duration(&r.timeout, "timeout", Duration::from_secs(30)),
    }
}

/// `auth = { bearer = "…" }` or `auth = { basic = { user = "…", password = "…" } }`.
fn http_auth(ctx: &mut Ctx, a: &S<toml::Table>) -> Option<HttpAuth> {
    let span = a.span();
    let text = |ctx: &mut Ctx, v: Option<&toml::Value>, what: &str| -> Option<String> {
        match v {
            Some(toml::Value::String(s)) => ctx.text(&S::new(span.clone(), s.clone())),
            _ => {
                ctx.src
                    .error(span.clone(), format!("`auth`: `{what}` must be a string"));
                None
            }
        }
    };
    let table = a.get_ref();
    match (table.get("bearer"), table.get("basic"), table.len()) {
        (Some(token), None, 1) => Some(HttpAuth::Bearer(text(ctx, Some(token), "bearer")?)),
        (None, Some(toml::Value::Table(basic)), 1) if basic.len() == 2 => Some(HttpAuth::Basic {
            user: text(ctx, basic.get("user"), "basic.user")?,
            password: text(ctx, basic.get("password"), "basic.password")?,
        }),
        _ => {
            ctx.src.error(span, "`auth` is `{ bearer = \"${TOKEN}\" }` or `{ basic = { user = \"…\", password = \"${PASSWORD}\" } }`");
            None
        }
    }
}

const OWNERS: &[(&str, Owner)] = &[
    ("source", Owner::Source),
    ("target", Owner::Target),
    ("fill", Owner::Fill),
    ("newest", Owner::Newest),
];

fn rules(
    ctx: &mut Ctx,
    r: Option<&S<raw::RulesRaw>>,
    fields: Option<&BTreeMap<S<String>, S<raw::FieldRaw>>>,
) -> Rules {
    let every_field_owned =
        fields.is_some_and(|f| !f.is_empty() && f.values().all(|v| v.get_ref().owner.is_some()));
    let owner = r
        .and_then(|r| r.get_ref().owner.as_ref())
        .and_then(|o| ctx.choice(o, "owner", OWNERS));
    let owner_given = r.is_some_and(|r| r.get_ref().owner.is_some());
    if !owner_given && !every_field_owned {
        let span = r.map_or(0..0, |r| r.span());
        ctx.src.error(span, "no owner for the fields: add `[rules] owner = \"source\"` (or name an `owner` on every field) so it is explicit which system wins");
    }
    let deletes = r
        .and_then(|r| r.get_ref().deletes.as_ref())
        .and_then(|d| {
            ctx.choice(
                d,
                "deletes",
                &[
                    ("propagate", Deletes::Propagate),
                    ("soft", Deletes::Soft),
                    ("ignore", Deletes::Ignore),
                ],
            )
        })
        .unwrap_or_default();
    let soft_delete = r
        .and_then(|r| r.get_ref().soft_delete.as_ref())
        .and_then(|s| ctx.text(s));
    if deletes == Deletes::Soft && soft_delete.is_none() {
        let span = r
            .and_then(|r| r.get_ref().deletes.as_ref())
            .map_or(0..0, |d| d.span());
        ctx.src.error(
            span,
            "`deletes = \"soft\"` needs `soft_delete`, the target column set to the deletion time",
        );
    }
    Rules {
        owner: owner.unwrap_or(Owner::Source),
        deletes,
        soft_delete,
    }
}

fn fields(
    ctx: &mut Ctx,
    f: Option<&S<BTreeMap<S<String>, S<raw::FieldRaw>>>>,
    target: &TargetConfig,
    rules: &Rules,
    refs: &mut Vec<JobReference>,
) -> Vec<FieldMap> {
    let Some(f) = f else { return Vec::new() };
    let mut out = Vec::new();
    for (name, spec) in f.get_ref() {
        let raw = spec.get_ref();
        let owner = match &raw.owner {
            Some(o) => match OWNERS.iter().find(|(n, _)| n == o) {
                Some((_, o)) => *o,
                None => {
                    ctx.src.error(spec.span(), format!("field `{}`: owner `{o}`; expected one of `source`, `target`, `fill`, `newest`", name.get_ref()));
                    continue;
                }
            },
            None => rules.owner,
        };
        if owner == Owner::Newest && target.updated_at.is_none() {
            ctx.src.error(spec.span(), format!("field `{}`: `owner = \"newest\"` needs `[target] updated_at`, the target's own change time", name.get_ref()));
        }
        if let Some(l) = &raw.lookup {
            refs.push(JobReference {
                span: spec.span(),
                name: l.clone(),
                what: "`lookup`",
            });
        }
        out.push(FieldMap {
            target: name.get_ref().clone(),
            from: raw.from.clone(),
            owner,
            lookup: raw.lookup.clone(),
            lossy: raw.lossy,
            location: location(ctx, spec.span().start),
        });
    }
    out
}

/// Upserts need the target key among the written fields, and deletes need
/// every target key field to come from a source key column.
fn check_keys_mapped(
    ctx: &mut Ctx,
    file: &raw::JobFile,
    source: &SourceConfig,
    target: &TargetConfig,
    fields: &[FieldMap],
    rules: &Rules,
) {
    if fields.is_empty()
        || source.kind.is_empty()
        || target.kind.is_empty()
        || source.tables.is_some()
    {
        return;
    }
    let span = file
        .fields
        .as_ref()
        .map_or(file.target.span(), |f| f.span());
    let deletes_matter = rules.deletes != Deletes::Ignore || target.mode == Mode::Mirror;
    // A one-column key no field maps is the target's own (serial, identity):
    // ferry keeps an id map instead.
    if let [key] = target.key.as_slice() {
        if !fields.iter().any(|f| &f.target == key) {
            if target.mode == Mode::Mirror {
                ctx.src.error(span, format!("target key `{key}` is generated by the target (no field maps it), which `mode = \"mirror\"` cannot compare with source keys; map it from the source key"));
            }
            return;
        }
    }
    for k in &target.key {
        match fields.iter().find(|f| &f.target == k) {
            None => ctx.src.error(span.clone(), format!("target key `{k}` is not among `[fields]`; map it from a source field")),
            Some(f) if deletes_matter && !source.key.contains(&f.from) => ctx.src.error(
                span.clone(),
                format!("target key `{k}` comes from `{}`, which is not a source key column, so deletes could not find the target row (set `[rules] deletes = \"ignore\"` or map it from the source key)", f.from),
            ),
            _ => {}
        }
    }
}
