//! `[target]`: the connector type, its URL, table or path, its keys, and
//! the keys a connector reads into its own options.
use super::*;

/// The keys of `[source]` or `[target]` a connector reads into its own
/// typed options (those its declaration lists, when it has options), with
/// every `${VAR}` resolved; each problem its check finds is located at the
/// key. A key that ferry reads (`ferry_keys`) is left to the section's own
/// checks; one another connector declares does not apply; one no connector
/// declares is unknown.
pub(super) fn connector_options(
    ctx: &mut Ctx,
    section: Section,
    kind: &str,
    given: &raw::TableKeys,
    table: Range<usize>,
) -> toml::Table {
    let declared = |c: &Spec| match section {
        Section::Source => c.source.as_ref().map(|s| (s.keys, s.options)),
        Section::Target => c.target.as_ref().map(|t| (t.keys, t.options)),
    };
    let (what, ferry_keys) = match section {
        Section::Source => ("source", raw::SOURCE_KEYS),
        Section::Target => ("target", raw::TARGET_KEYS),
    };
    let Some((keys, check)) = ctx.reg.spec(kind).and_then(declared) else {
        return toml::Table::new();
    };
    let mut options = toml::Table::new();
    let mut spans: BTreeMap<String, Range<usize>> = BTreeMap::new();
    for (key, value) in given {
        let name = key.get_ref();
        // A problem the connector finds is in the value it was given.
        spans.insert(name.clone(), value.span());
        if keys.contains(&name.as_str()) && check.is_some() {
            if let Some(value) = interpolate_value(ctx, value) {
                options.insert(name.clone(), value);
            }
        } else if keys.contains(&name.as_str()) || ferry_keys.contains(&name.as_str()) {
            // Read by ferry (the section refuses those the kind does not use).
        } else if ctx
            .reg
            .connectors
            .iter()
            .any(|c| declared(c).is_some_and(|(k, _)| k.contains(&name.as_str())))
        {
            ctx.src.error(
                key.span(),
                format!("`{name}` does not apply to a {what} of type `{kind}`"),
            );
        } else {
            // A file has nothing to connect to.
            let beside = match ctx.reg.spec(kind).is_some_and(|s| s.schemes.is_empty()) {
                true => "`type` and `key`",
                false => "`type`, `key` and `connect_timeout`",
            };
            ctx.src.error(
                key.span(),
                format!(
                    "unknown field `{name}`; a `{kind}` {what} takes {}, beside {beside}",
                    one_of(keys)
                ),
            );
        }
    }
    if let Some(check) = check {
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

/// Which section a connector's keys are in.
#[derive(Debug, Clone, Copy)]
pub(super) enum Section {
    Source,
    Target,
}

/// A TOML value with `${VAR}` resolved in every string in it.
pub(super) fn interpolate_value(ctx: &mut Ctx, value: &S<toml::Value>) -> Option<toml::Value> {
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

pub(super) fn target(
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
        table_target(ctx, t, &kind, whole_schema, allowed, &mut out);
    } else {
        // Records: a key, when given, names the objects' key fields.
        if let Some(k) = &r.key {
            out.key = ctx.columns(&Some(k.clone()), span.clone(), what);
        }
        if !ctx.reg.spec(&kind).is_some_and(|s| s.schemes.is_empty()) {
            out.url = ctx.url(&r.url, &kind, span.clone(), what);
        }
    }
    // A folder in the configuration folder.
    if allowed.contains(&"path") {
        out.path = ctx.path(&r.path, span.clone(), what);
    }
    let keys = [
        ("url", span_of(&r.url)),
        ("table", span_of(&r.table)),
        ("create", span_of(&r.create)),
        ("create_table", span_of(&r.create_table)),
        ("path", span_of(&r.path)),
    ];
    refuse_keys_of_other_kinds(ctx, "target", &kind, &keys, allowed);
    out.options = connector_options(ctx, Section::Target, &kind, given, span.clone());
    out.kind = kind;
    out
}

/// `method`, `batch`, `results`, `auth`, `timeout` of an HTTP target.
/// A SQL table target: its URL, key, table and whether to create it.
fn table_target(
    ctx: &mut Ctx,
    t: &S<raw::TargetRaw>,
    kind: &str,
    whole_schema: bool,
    allowed: &[&str],
    out: &mut TargetConfig,
) {
    let (span, r, what) = (t.span(), t.get_ref(), "[target]");
    out.url = ctx.url(&r.url, kind, span.clone(), what);
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
}
