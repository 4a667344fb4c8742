//! `[detect]`: the strategy, and which operations the job carries.
use super::*;

pub(super) fn detect(
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
            max_delete_ratio: super::super::DEFAULT_MAX_DELETE_RATIO,
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
            super::super::DEFAULT_MAX_DELETE_RATIO
        }
        Some(v) => *v.get_ref(),
        None => super::super::DEFAULT_MAX_DELETE_RATIO,
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
pub(super) fn check_newest(
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
pub(super) fn ops(ctx: &mut Ctx, d: Option<&S<raw::DetectRaw>>, detect: &Detect) -> Ops {
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
