//! The schema stage's decisions, from columns already read: which source
//! columns the job reads, what is wrong, and what the target needs.
use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::config::{Deletes, Detect, FieldMap, Job, OnNewColumn, OnTypeChange};
use crate::connectors::{Column, ColumnType, SchemaChange, Shape, TableSchema, Target};

/// The source's columns as the job's last run saw them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Known {
    /// Every column of the source, read or not, with its declared type.
    seen: Vec<KnownColumn>,
    /// The columns the job read.
    read: Vec<String>,
    /// Fields `on_new_column = "add"` added to a job with `[fields]`.
    pub added: Vec<String>,
    /// [`Job::write_fingerprint`] of the last run that detected in full
    /// under it; None from versions before it was kept.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KnownColumn {
    name: String,
    declared: String,
}

impl Known {
    /// None before the first run (or from a record this version cannot read).
    pub fn parse(json: Option<&str>) -> Option<Known> {
        serde_json::from_str(json?).ok()
    }

    /// Whether the job's fields or rules changed since the last run that
    /// wrote under them.
    pub fn rules_changed(&self, job: &Job) -> bool {
        self.fingerprint
            .as_ref()
            .is_some_and(|f| *f != job.write_fingerprint())
    }

    pub fn to_json(&self) -> String {
        // Strings and lists of strings always serialise.
        serde_json::to_string(self).expect("known schema serialises")
    }

    fn seen(&self, name: &str) -> Option<&KnownColumn> {
        self.seen.iter().find(|c| c.name == name)
    }
}

/// The job with fields for `names` that it does not map yet, each under
/// its own name and the default owner (only a job with `[fields]`: without
/// them every read column is sent anyway).
pub fn add_fields(job: &Job, names: &[String]) -> Job {
    let mut job = job.clone();
    if job.fields.is_empty() {
        return job;
    }
    for name in names {
        if !job
            .fields
            .iter()
            .any(|f| &f.from == name || &f.target == name)
        {
            job.fields.push(FieldMap {
                target: name.clone(),
                from: name.clone(),
                owner: job.rules.owner,
                lookup: None,
                lossy: false,
                location: String::new(),
            });
        }
    }
    job
}

/// ` at jobs/j.toml:12`, or nothing for a field without a definition.
fn at(location: &str) -> String {
    match location {
        "" => String::new(),
        l => format!(" at {l}"),
    }
}

/// What a target field is written from.
struct Written<'a> {
    target: String,
    /// Where the field is defined (`at jobs/j.toml:12`), or empty.
    at: String,
    source: Option<&'a Column>,
    lossy: bool,
    /// A lookup writes the other job's target key, not the source value.
    translated: bool,
}

pub struct Plan {
    /// The job as the run executes it: the columns its source reads, and
    /// fields added by `on_new_column = "add"`.
    pub job: Job,
    /// Why the run cannot be exact; empty: it can.
    pub problems: Vec<String>,
    /// Differences accepted or left alone, for the log and `check --connect`.
    pub notes: Vec<String>,
    /// (what, change) for the target, in order.
    pub changes: Vec<(String, SchemaChange)>,
    /// The source's columns, as the next run compares them.
    pub known: Known,
}

impl Plan {
    /// Every column the job cannot do without is in the source; returns
    /// the columns the job names.
    fn check_required(
        &mut self,
        job: &Job,
        source_name: &str,
        source: &TableSchema,
        known: Option<&Known>,
    ) -> HashSet<String> {
        let plan = self;
        let fields_given = !job.fields.is_empty();
        // Every column the job cannot do without.
        let mut required: Vec<(String, String)> = plan
            .job
            .fields
            .iter()
            .map(|f| {
                (
                    f.from.clone(),
                    format!("mapped to `{}`{}", f.target, at(&f.location)),
                )
            })
            .collect();
        required.extend(
            job.source
                .key
                .iter()
                .map(|k| (k.clone(), "[source] key".into())),
        );
        if let Detect::Cursor { column, .. } = &job.detect {
            required.push((column.clone(), "[detect] cursor".into()));
        }
        if let (false, Some(known)) = (fields_given, known) {
            required.extend(known.read.iter().map(|r| {
            (r.clone(), "synced by earlier runs; to stop syncing it, list the columns to sync under [fields]".into())
        }));
        }
        let mut listed = HashSet::new();
        required.retain(|(name, _)| listed.insert(name.clone()));
        for (name, why) in &required {
            if source.column(name).is_none() {
                plan.problems.push(format!(
                    "source column `{name}` ({why}) is missing from {source_name}"
                ));
            }
        }
        listed
    }

    /// Columns the source gained since the last run: noted, refused, or
    /// returned to be added, per `[schema] on_new_column`.
    fn new_columns<'s>(
        &mut self,
        job: &Job,
        source_name: &str,
        source: &'s TableSchema,
        known: Option<&Known>,
        listed: &HashSet<String>,
    ) -> Vec<&'s Column> {
        let plan = self;
        // Columns the source gained since the last run.
        let mut added_now: Vec<&Column> = vec![];
        if let Some(known) = known {
            for column in source
                .columns
                .iter()
                .filter(|c| known.seen(&c.name).is_none())
            {
                let name = &column.name;
                match job.schema.on_new_column {
                OnNewColumn::Ignore if !listed.contains(name) => plan.notes.push(format!(
                    "new source column `{name}` ({}) is not synced ([schema] on_new_column = \"ignore\")",
                    column.declared
                )),
                OnNewColumn::Ignore => {}
                OnNewColumn::Fail => plan.problems.push(format!(
                    "{source_name} has a new column `{name}` ({}) and [schema] on_new_column = \"fail\"; map it under [fields], or set on_new_column to \"ignore\" or \"add\"",
                    column.declared
                )),
                OnNewColumn::Add => added_now.push(column),
            }
            }
        }
        added_now
    }

    /// Columns whose declared type changed: refused, or followed when
    /// `[schema] on_type_change = "widen"` and the change is a widening.
    fn type_changes(
        &mut self,
        job: &Job,
        source: &TableSchema,
        known: Option<&Known>,
        read: &[String],
    ) -> HashSet<String> {
        let plan = self;
        // Columns whose declared type changed.
        let mut widened: HashSet<String> = HashSet::new();
        if let Some(known) = known {
            for name in read {
                let (Some(old), Some(new)) = (known.seen(name), source.column(name)) else {
                    continue;
                };
                // A CSV column that gains a declared type held text as
                // given: its target column is checked like any other.
                if old.declared == new.declared || (new.system == "file" && old.declared == "text")
                {
                    continue;
                }
                let before = ColumnType::of(new.system, &old.declared);
                let change = format!(
                    "source column `{name}` changed type from {} to {}",
                    old.declared, new.declared
                );
                match job.schema.on_type_change {
                OnTypeChange::Fail => plan.problems.push(format!(
                    "{change} and [schema] on_type_change = \"fail\"; check the target column, then set on_type_change = \"widen\" to follow widenings"
                )),
                OnTypeChange::Widen if before.widens_to(&new.ty) => {
                    widened.insert(name.clone());
                }
                OnTypeChange::Widen => plan.problems.push(format!(
                    "{change}, which is not a widening (one that keeps every value); fix the target column and the job by hand"
                )),
            }
            }
        }
        widened
    }

    pub fn new(
        job: &Job,
        source_name: &str,
        source: &TableSchema,
        known: Option<&Known>,
        target_table: Option<&Shape>,
        target: &dyn Target,
    ) -> Plan {
        let mut plan = Plan {
            job: add_fields(job, known.map_or(&[][..], |k| &k.added)),
            problems: vec![],
            notes: vec![],
            changes: vec![],
            known: Known::default(),
        };
        let fields_given = !job.fields.is_empty();

        let listed = plan.check_required(job, source_name, source, known);
        let added_now = plan.new_columns(job, source_name, source, known, &listed);
        let added_names: Vec<String> = added_now.iter().map(|c| c.name.clone()).collect();
        plan.job = add_fields(&plan.job, &added_names);

        // What the source reads, in its own column order.
        let read: Vec<String> = source
            .columns
            .iter()
            .map(|c| &c.name)
            .filter(|name| {
                listed.contains(*name)
                    || added_names.contains(name)
                    || (!fields_given && known.is_none())
            })
            .cloned()
            .collect();

        let widened = plan.type_changes(job, source, known, &read);

        let written = written(&plan.job, source, &read);
        match target_table {
            None | Some(Shape::Schemaless) => {}
            Some(Shape::Missing) => plan.create(job, &written, target),
            Some(Shape::Table(table)) => {
                plan.check_target(table, &written, &added_names, &widened, target)
            }
        }

        plan.known = Known {
            seen: source
                .columns
                .iter()
                .map(|c| KnownColumn {
                    name: c.name.clone(),
                    declared: c.declared.clone(),
                })
                .collect(),
            read: read.clone(),
            added: known
                .map(|k| k.added.clone())
                .unwrap_or_default()
                .into_iter()
                .chain(added_names.iter().filter(|_| fields_given).cloned())
                .collect(),
            // Recorded here only the first time: after a change, once the
            // run that rewrites the rows has detected them all (the runner).
            fingerprint: match known {
                Some(k) if k.fingerprint.is_some() => k.fingerprint.clone(),
                _ => Some(job.write_fingerprint()),
            },
        };
        plan.job.source.columns = Some(read);
        plan
    }

    /// `[target] create = true` and no table: the table from the source's
    /// columns, under the target's names.
    fn create(&mut self, job: &Job, written: &[Written<'_>], target: &dyn Target) {
        if !job.target.create {
            self.problems.push(format!(
                "the target table does not exist: {}; create it, or set [target] create = true",
                target.describe()
            ));
            return;
        }
        if let Some(key) = job.generated_key() {
            self.problems.push(format!(
                "create = true cannot make `{key}`, the key column the target generates; create the table {} yourself",
                target.describe()
            ));
            return;
        }
        let mut columns: Vec<Column> = written
            .iter()
            .filter_map(|w| {
                w.source.map(|c| Column {
                    name: w.target.clone(),
                    ..c.clone()
                })
            })
            .collect();
        if let (Deletes::Soft, Some(column)) = (job.rules.deletes, &job.rules.soft_delete) {
            if !columns.iter().any(|c| &c.name == column) {
                columns.push(Column::postgres(
                    column.clone(),
                    "timestamp with time zone".into(),
                ));
            }
        }
        let missing_key: Vec<&String> = job
            .target
            .key
            .iter()
            .filter(|k| !columns.iter().any(|c| &c.name == *k))
            .collect();
        if !missing_key.is_empty() {
            self.problems.push(format!(
                "create = true: no source column gives the target key {missing_key:?}"
            ));
            return;
        }
        self.changes.push((
            format!(
                "the target table {} with {} column(s), typed from the source",
                target.describe(),
                columns.len()
            ),
            SchemaChange::CreateTable {
                columns,
                key: job.target.key.clone(),
            },
        ));
    }

    fn check_target(
        &mut self,
        table: &TableSchema,
        written: &[Written<'_>],
        added: &[String],
        widened: &HashSet<String>,
        target: &dyn Target,
    ) {
        let name = target.describe();
        for w in written {
            let Some(column) = table.column(&w.target) else {
                match w.source {
                    Some(source) if added.contains(&source.name) => self.changes.push((
                        format!(
                            "column `{}` ({}) to {name}: the source gained it",
                            w.target, source.declared
                        ),
                        SchemaChange::AddColumn(Column {
                            name: w.target.clone(),
                            ..source.clone()
                        }),
                    )),
                    _ => self.problems.push(format!(
                        "target column `{}`{} is missing from {name}",
                        w.target, w.at
                    )),
                }
                continue;
            };
            let Some(source) = w.source.filter(|_| !w.translated) else {
                continue;
            };
            if widened.contains(&source.name) && !column.ty.fits(&source.ty) {
                self.changes.push((
                    format!(
                        "column `{}` of {name} from {} to the source's {}",
                        w.target, column.declared, source.declared
                    ),
                    SchemaChange::WidenColumn(Column {
                        name: w.target.clone(),
                        ..source.clone()
                    }),
                ));
                continue;
            }
            let Err(why) = target.holds(column, source) else {
                continue;
            };
            if w.lossy {
                self.notes.push(format!(
                    "field `{}`{}: {why} (accepted: lossy = true)",
                    w.target, w.at
                ));
            } else {
                self.problems.push(format!(
                    "field `{}`{}: {why} (source column `{}` is {}, target column is {}); change the target column, or set `lossy = true` on the field to accept it",
                    w.target, w.at, source.name, source.declared, column.declared
                ));
            }
        }
    }
}

/// Every target column a write touches, with the source column it comes from.
fn written<'a>(job: &Job, source: &'a TableSchema, read: &[String]) -> Vec<Written<'a>> {
    let mut out: Vec<Written<'a>> = if job.fields.is_empty() {
        read.iter()
            .map(|r| Written {
                target: r.clone(),
                at: String::new(),
                source: source.column(r),
                lossy: false,
                translated: false,
            })
            .collect()
    } else {
        job.fields
            .iter()
            .map(|f| Written {
                target: f.target.clone(),
                at: at(&f.location),
                source: source.column(&f.from),
                lossy: f.lossy,
                translated: f.lookup.is_some(),
            })
            .collect()
    };
    let mut also = |name: &str, from: Option<&'a Column>| {
        if !out.iter().any(|w| w.target == name) {
            out.push(Written {
                target: name.to_string(),
                at: String::new(),
                source: from,
                lossy: false,
                translated: false,
            });
        }
    };
    for key in &job.target.key {
        also(key, None);
    }
    if let (Deletes::Soft, Some(column)) = (job.rules.deletes, &job.rules.soft_delete) {
        also(column, None);
    }
    if let Some((updated_at, cursor)) = job.newest_clock() {
        also(updated_at, source.column(cursor));
    }
    out
}
