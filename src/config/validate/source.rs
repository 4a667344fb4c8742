//! `[source]`: the connector type, its URL or path, and its keys.
use super::*;

/// `connect_timeout` of a source or target: how long connecting may take
/// (default 5 s); a file has nothing to connect to.
pub(super) fn connect_timeout(
    ctx: &mut Ctx,
    v: &Option<S<String>>,
    kind: &str,
    what: &str,
) -> Duration {
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

pub(super) fn source(ctx: &mut Ctx, s: &S<raw::SourceRaw>, given: &raw::TableKeys) -> SourceConfig {
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
    let allowed = ctx.reg.source(&kind).map_or(&[][..], |s| s.keys);
    // Where the system is: a URL, or a path in the configuration folder.
    if ctx.reg.spec(&kind).is_some_and(|s| !s.schemes.is_empty()) {
        out.url = ctx.url(&r.url, &kind, span.clone(), what);
    }
    if allowed.contains(&"path") {
        out.path = ctx.path(&r.path, span.clone(), what);
    }
    if table_source {
        table_source_keys(ctx, s, &mut out);
    }
    out.options = connector_options(ctx, Section::Source, &kind, given, span.clone());
    let keys = source_key_spans(r);
    refuse_keys_of_other_kinds(ctx, "source", &kind, &keys, allowed);
    out.kind = kind;
    out
}

/// A SQL table source: `table`, `query` or `tables`, and `where`.
fn table_source_keys(ctx: &mut Ctx, r: &S<raw::SourceRaw>, out: &mut SourceConfig) {
    let (span, r) = (r.span(), r.get_ref());
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
    if let (Some(_), Some(w)) = (&r.query, &r.filter) {
        ctx.src.error(
            w.span(),
            "`where` goes with `table`; put the condition in the `query`",
        );
    }
}

/// The `[source]` keys ferry reads, with where they were written, for
/// refusing those the connector does not declare.
fn source_key_spans(r: &raw::SourceRaw) -> [(&'static str, Option<std::ops::Range<usize>>); 6] {
    [
        ("url", span_of(&r.url)),
        ("table", span_of(&r.table)),
        ("query", span_of(&r.query)),
        ("tables", span_of(&r.tables)),
        ("where", span_of(&r.filter)),
        ("path", span_of(&r.path)),
    ]
}
