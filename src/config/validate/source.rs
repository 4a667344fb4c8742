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

pub(super) fn source(ctx: &mut Ctx, s: &S<raw::SourceRaw>) -> SourceConfig {
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
    match kind.as_str() {
        _ if table_source => table_source_keys(ctx, s, &kind, &mut out),
        "file" => file_source(ctx, s, &kind, &mut out),
        "amqp" => amqp_source(ctx, s, &kind, &mut out),
        "http" => http_source(ctx, s, &kind, &mut out),
        "nats" => nats_source(ctx, s, &kind, &mut out),
        _ => {}
    }
    let keys = source_key_spans(r);
    let allowed = ctx.reg.source(&kind).map_or(&[][..], |s| s.keys);
    refuse_keys_of_other_kinds(ctx, "source", &kind, &keys, allowed);
    out.kind = kind;
    out
}

/// A SQL table source: `table`, `query` or `tables`, and `where`.
fn table_source_keys(ctx: &mut Ctx, r: &S<raw::SourceRaw>, kind: &str, out: &mut SourceConfig) {
    let (span, r, what) = (r.span(), r.get_ref(), "[source]");
    out.url = ctx.url(&r.url, kind, span.clone(), what);
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
    ctx.unused(&r.path, "path", kind, "source");
    ctx.unused(&r.format, "format", kind, "source");
}

/// A file source: its path, format and CSV column types.
fn file_source(ctx: &mut Ctx, r: &S<raw::SourceRaw>, kind: &str, out: &mut SourceConfig) {
    let (span, r, what) = (r.span(), r.get_ref(), "[source]");
    out.path = ctx.path(&r.path, span.clone(), what);
    out.format = ctx.format(&r.format, out.path.as_deref(), span.clone(), what);
    out.types = file_types(ctx, &r.types, out.format);
    ctx.unused(&r.url, "url", kind, "source");
    ctx.unused(&r.table, "table", kind, "source");
    ctx.unused(&r.query, "query", kind, "source");
}

/// A RabbitMQ source: the queue and its prefetch.
fn amqp_source(ctx: &mut Ctx, r: &S<raw::SourceRaw>, kind: &str, out: &mut SourceConfig) {
    let (span, r, what) = (r.span(), r.get_ref(), "[source]");
    out.url = ctx.url(&r.url, kind, span.clone(), what);
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
    ctx.unused(&r.table, "table", kind, "source");
    ctx.unused(&r.query, "query", kind, "source");
}

/// An HTTP source: where the items are, how pages follow, auth.
fn http_source(ctx: &mut Ctx, r: &S<raw::SourceRaw>, kind: &str, out: &mut SourceConfig) {
    let (span, r, what) = (r.span(), r.get_ref(), "[source]");
    out.url = ctx.url(&r.url, kind, span.clone(), what);
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
    ctx.unused(&r.table, "table", kind, "source");
    ctx.unused(&r.query, "query", kind, "source");
}

/// A NATS JetStream source: stream, consumer and subject.
fn nats_source(ctx: &mut Ctx, r: &S<raw::SourceRaw>, kind: &str, out: &mut SourceConfig) {
    let (span, r, what) = (r.span(), r.get_ref(), "[source]");
    out.url = ctx.url(&r.url, kind, span.clone(), what);
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
    ctx.unused(&r.table, "table", kind, "source");
    ctx.unused(&r.query, "query", kind, "source");
}

/// Every `[source]` key with where it was written, for refusing the keys
/// the connector does not declare.
fn source_key_spans(r: &raw::SourceRaw) -> [(&'static str, Option<std::ops::Range<usize>>); 19] {
    [
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
    ]
}

/// `types = { id = "bigint", balance = "numeric(12,2)" }` of a CSV file:
/// each a type ferry knows, in PostgreSQL's spelling.
pub(super) fn file_types(
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
