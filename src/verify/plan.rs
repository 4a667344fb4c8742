//! What a verify compares for a job: the key and the fields the source
//! owns, on each side in its own names and types, and which differences
//! the job's rules allow. Computed from the configuration and the two
//! tables' columns only.
use crate::config::{Deletes, Job, Mode};
use crate::connectors::checksum::Side;
use crate::connectors::sql::canonical::SqlKind;
use crate::connectors::{Column, ColumnType, TableSchema};
use crate::rules::{Condition, DeleteAs, WriteRules};

use super::translate::Translation;

#[derive(Debug, Clone)]
pub struct Plan {
    pub source: Side,
    pub target: Side,
    /// The compared fields' target names, in order.
    pub fields: Vec<String>,
    /// Target rows the source lacks are allowed (`deletes = "ignore"`,
    /// `ops.delete = false`, `mode = "insert"`).
    pub extra_allowed: bool,
    /// Source rows the target lacks are allowed (`mode = "update"`,
    /// `ops.create = false`).
    pub missing_allowed: bool,
    /// Fields left out, each with why.
    pub not_compared: Vec<String>,
    /// Keys and fields translated through id maps, if any: rows then pair
    /// by the target's keys.
    pub translation: Option<Translation>,
}

/// The plan, or every reason the job cannot be verified (exit 78).
pub fn plan(
    job: &Job,
    source: &TableSchema,
    target: &TableSchema,
    kinds: (SqlKind, SqlKind),
) -> Result<Plan, Vec<String>> {
    let rules = WriteRules::from_job(job);
    let mut problems = Vec::new();
    let mut not_compared = Vec::new();
    let pairs: Vec<(String, String)> = match job.fields.is_empty() {
        false => job
            .fields
            .iter()
            .map(|f| (f.target.clone(), f.from.clone()))
            .collect(),
        true => source
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.name.clone()))
            .collect(),
    };
    let mut translation = Translation::default();
    let (source_key, target_key) = keys(job, &pairs, (source, target), kinds, &mut problems);
    if job.generated_key().is_some() {
        translation.key = Some(job.name.clone());
    }
    let mut fields = Vec::new();
    let mut filled = Vec::new();
    let (mut source_fields, mut target_fields) = (Vec::new(), Vec::new());
    for (to, from) in &pairs {
        if job.target.key.contains(to) {
            continue;
        }
        if let Some(why) = left_out(&rules, to) {
            not_compared.push(format!("`{to}`: {why}"));
            continue;
        }
        if job.fields.is_empty() && target.column(to).is_none() {
            not_compared.push(format!("`{to}`: the target has no such column"));
            continue;
        }
        let (Some(s), Some(t)) = (
            column(source, from, "source", &mut problems),
            column(target, to, "target", &mut problems),
        ) else {
            continue;
        };
        let (s, t) = read_alike(s, t, kinds);
        let fill = rules.condition(to) == Some(Condition::WhereEmpty);
        // A filled field compares by presence, which translation keeps.
        if let (Some(other), false) = (job.fields.iter().find(|f| &f.target == to), fill) {
            if let Some(other) = &other.lookup {
                translatable(&s, &format!("lookup field `{to}`"), &mut problems);
                translation.fields.push((fields.len(), other.clone()));
            }
        }
        source_fields.push(s);
        target_fields.push(t);
        fields.push(to.clone());
        filled.push(fill);
    }
    if !job.children.is_empty() {
        not_compared.push("child tables: only the parent table is compared".to_string());
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let target_filter = match rules.delete_as() {
        DeleteAs::MarkDeleted(column) => Some(format!(
            "s.{} IS NULL",
            crate::connectors::sql::quote_ident(column)
        )),
        _ => None,
    };
    Ok(Plan {
        source: side(source_key, source_fields, &filled, None),
        target: side(target_key, target_fields, &filled, target_filter),
        fields,
        extra_allowed: rules.deletes == Deletes::Ignore
            || !job.ops.delete
            || job.target.mode == Mode::Insert,
        missing_allowed: job.target.mode == Mode::Update || !job.ops.create,
        not_compared,
        translation: translation.is_active().then_some(translation),
    })
}

/// The key columns each side pairs its rows by: the same key, or the
/// target's generated one beside the source's (the id map pairs them).
fn keys(
    job: &Job,
    pairs: &[(String, String)],
    (source, target): (&TableSchema, &TableSchema),
    kinds: (SqlKind, SqlKind),
    problems: &mut Vec<String>,
) -> (Vec<Column>, Vec<Column>) {
    let mut source_key = Vec::new();
    let mut target_key = Vec::new();
    if let Some(generated) = job.generated_key() {
        // The target's own key, paired with the source's through the job's id map.
        for k in &job.source.key {
            if let Some(mut s) = column(source, k, "source", problems) {
                // An untyped key (a file's, SQLite's) is read as the text
                // the id map holds it as: no target column types it.
                if s.ty == ColumnType::Any {
                    s.ty = ColumnType::Text(None);
                }
                translatable(&s, "source key", problems);
                source_key.push(s);
            }
        }
        if let Some(t) = column(target, generated, "target", problems) {
            target_key.push(t);
        }
    }
    for k in job
        .target
        .key
        .iter()
        .filter(|_| job.generated_key().is_none())
    {
        let from = pairs
            .iter()
            .find(|(t, _)| t == k)
            .map_or(k.as_str(), |(_, s)| s.as_str());
        if !job.source.key.iter().any(|s| s == from) {
            problems.push(format!(
                "target key `{k}` comes from `{from}`, which is not in the source's key: verify pairs rows by the key"
            ));
            continue;
        }
        if let (Some(s), Some(t)) = (
            column(source, from, "source", problems),
            column(target, k, "target", problems),
        ) {
            let (s, t) = read_alike(s, t, kinds);
            source_key.push(s);
            target_key.push(t);
        }
    }
    (source_key, target_key)
}

/// Why the field `to` is not compared, if it is not: only the fields an
/// update always writes must hold the source's value.
fn left_out(rules: &WriteRules, to: &str) -> Option<&'static str> {
    match rules.condition(to) {
        Some(Condition::Always) => None,
        // Compared by presence (see `Side::filled`).
        Some(Condition::WhereEmpty) => None,
        Some(Condition::IfNewer) => Some("owner newest (the target may hold a newer value)"),
        None => Some("owned by the target"),
    }
}

/// `name`'s column, or a problem said.
fn column(
    schema: &TableSchema,
    name: &str,
    side: &str,
    problems: &mut Vec<String>,
) -> Option<Column> {
    let found = schema.column(name).cloned();
    if found.is_none() {
        problems.push(format!("the {side} has no column `{name}`"));
    }
    found
}

/// Id maps hold keys as the source gave them: integers, text and UUIDs
/// read back as the same texts the verify compares.
fn translatable(column: &Column, what: &str, problems: &mut Vec<String>) {
    if !matches!(
        column.ty,
        ColumnType::Int(_) | ColumnType::Text(_) | ColumnType::Uuid
    ) {
        problems.push(format!(
            "{what} `{}` is {}: verify translates keys of integers, text and UUIDs through an id map",
            column.name, column.ty
        ));
    }
}

/// The two columns of a field, each typed for reading as the other
/// reads: SQLite keeps what it was given under any declared type (a
/// timestamp as text, a boolean as an integer), and so do a file's
/// objects, so such a column is read as the other side's type; a `char(n)` on either side compares without its
/// padding on both.
fn read_alike(mut s: Column, mut t: Column, (ks, kt): (SqlKind, SqlKind)) -> (Column, Column) {
    // Objects (a file) carry text, numbers and booleans, typed by nothing.
    let loose = |k| matches!(k, SqlKind::Sqlite | SqlKind::Objects);
    if loose(ks) && !loose(kt) {
        s.ty = t.ty.clone();
    } else if loose(kt) && !loose(ks) {
        t.ty = s.ty.clone();
    }
    if matches!(s.ty, ColumnType::Char(_)) || matches!(t.ty, ColumnType::Char(_)) {
        s.ty = ColumnType::Char(0);
        t.ty = ColumnType::Char(0);
    }
    (s, t)
}

fn side(key: Vec<Column>, fields: Vec<Column>, filled: &[bool], filter: Option<String>) -> Side {
    Side {
        key,
        fields,
        filled: filled.to_vec(),
        filter,
    }
}
