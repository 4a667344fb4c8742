//! The job's write rules in one place: which fields an insert and an
//! update write and under which condition (owners `source`, `fill`,
//! `newest`, `target`), and what a delete becomes. Targets render these
//! into their statements (`connectors::sql`, `connectors::mysql`), the
//! conflict check evaluates them on hashes, and `ferry test` on values
//! (`sync::predict`): a change to a rule is made here.
use std::collections::HashMap;

use crate::config::{Deletes, Job, Mode, Owner};

/// How a target applies writes: the job's mode, delete rule and field owners.
#[derive(Debug, Clone)]
pub struct WriteRules {
    pub table: String,
    pub key: Vec<String>,
    pub mode: Mode,
    pub deletes: Deletes,
    pub soft_delete: Option<String>,
    /// Owner of each target field; fields not listed use `default_owner`.
    pub owners: HashMap<String, Owner>,
    pub default_owner: Owner,
    /// `owner = "newest"`: the target's change-time column, which the write
    /// carries the source's change time in.
    pub updated_at: Option<String>,
    /// `[children.NAME]`: tables whose rows each parent's snapshot replaces.
    pub children: Vec<ChildTable>,
}

/// A child table of a SQL target.
#[derive(Debug, Clone)]
pub struct ChildTable {
    /// The field of the parent record that holds the child rows.
    pub name: String,
    pub table: String,
    /// The child column holding the parent's target key.
    pub parent: String,
}

impl WriteRules {
    pub fn from_job(job: &Job) -> WriteRules {
        WriteRules {
            table: job.target.table.clone().unwrap_or_default(),
            key: job.target.key.clone(),
            mode: job.target.mode,
            deletes: if job.target.mode == Mode::Mirror {
                Deletes::Propagate
            } else {
                job.rules.deletes
            },
            soft_delete: job.rules.soft_delete.clone(),
            owners: job
                .fields
                .iter()
                .map(|f| (f.target.clone(), f.owner))
                .collect(),
            default_owner: job.rules.owner,
            updated_at: job.newest_clock().map(|(u, _)| u.to_string()),
            children: job
                .children
                .iter()
                .map(|(name, c)| ChildTable {
                    name: name.clone(),
                    table: c.table.clone(),
                    parent: c.parent.clone(),
                })
                .collect(),
        }
    }

    pub fn owner(&self, field: &str) -> Owner {
        self.owners
            .get(field)
            .copied()
            .unwrap_or(self.default_owner)
    }

    /// A source object whose key has no row becomes a new row (not in
    /// `mode = "update"`).
    pub fn inserts_new_rows(&self) -> bool {
        self.mode != Mode::Update
    }

    /// How an update writes `column`; None: it leaves the column alone (a
    /// key column, or a target-owned one).
    pub fn condition(&self, column: &str) -> Option<Condition> {
        if self.key.iter().any(|k| k == column) {
            return None;
        }
        let clock = self.updated_at.is_some();
        if self.updated_at.as_deref() == Some(column) {
            // The change time itself keeps the later of the two.
            return Some(Condition::IfNewer);
        }
        match self.owner(column) {
            Owner::Newest if clock => Some(Condition::IfNewer),
            Owner::Source | Owner::Newest => Some(Condition::Always),
            Owner::Fill => Some(Condition::WhereEmpty),
            Owner::Target => None,
        }
    }

    /// The columns of `cols` an update writes, each with its condition, in
    /// an order every target can apply: the change-time column last (MySQL
    /// applies assignments in order and a later one reads the earlier ones'
    /// results, so the clock must change after every field it decides).
    pub fn update_fields<'c>(&self, cols: &'c [String]) -> Vec<(&'c str, Condition)> {
        let (mut fields, clock): (Vec<_>, Vec<_>) = cols
            .iter()
            .filter_map(|c| Some((c.as_str(), self.condition(c)?)))
            .partition(|(c, _)| self.updated_at.as_deref() != Some(*c));
        fields.extend(clock);
        fields
    }

    /// The column an upsert clears because the object is back at the
    /// source (soft deletes), if any.
    pub fn undelete(&self) -> Option<&str> {
        match self.delete_as() {
            DeleteAs::MarkDeleted(column) => Some(column),
            _ => None,
        }
    }

    /// What a delete at the source becomes in the target.
    pub fn delete_as(&self) -> DeleteAs<'_> {
        match (self.deletes, &self.soft_delete) {
            (Deletes::Ignore, _) => DeleteAs::Keep,
            (Deletes::Propagate, _) => DeleteAs::Remove,
            (Deletes::Soft, Some(column)) => DeleteAs::MarkDeleted(column),
            // Validation requires `soft_delete` with soft deletes.
            (Deletes::Soft, None) => DeleteAs::MarkDeleted("deleted_at"),
        }
    }
}

/// When an update writes a field's incoming value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Source-owned: always.
    Always,
    /// `fill`: only where the row's value is empty (NULL).
    WhereEmpty,
    /// `newest`, and the change-time column itself: only when the incoming
    /// change time is later than the row's (or the row has none).
    IfNewer,
}

impl Condition {
    /// Whether the incoming value is written, given whether the row's value
    /// is empty and whether the incoming change is the newer; `newer` is
    /// None where it cannot be known (hashes only), and then counts as true.
    pub fn writes(self, row_value_empty: bool, newer: Option<bool>) -> bool {
        match self {
            Condition::Always => true,
            Condition::WhereEmpty => row_value_empty,
            Condition::IfNewer => newer.unwrap_or(true),
        }
    }
}

/// What a delete at the source becomes in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteAs<'a> {
    /// The row is deleted.
    Remove,
    /// The row stays, this column set to the time of the delete.
    MarkDeleted(&'a str),
    /// `deletes = "ignore"`: the target keeps the row.
    Keep,
}

/// `deletes = "ignore"`: a delete at the source leaves the target as it is
/// (targets that record changes do not send it).
pub fn keeps_deleted_rows(job: &Job) -> bool {
    WriteRules::from_job(job).delete_as() == DeleteAs::Keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(deletes: Deletes, owners: &[(&str, Owner)]) -> WriteRules {
        WriteRules {
            table: "t".into(),
            key: vec!["id".into()],
            mode: Mode::Upsert,
            deletes,
            soft_delete: (deletes == Deletes::Soft).then(|| "deleted_at".to_string()),
            owners: owners.iter().map(|(f, o)| (f.to_string(), *o)).collect(),
            default_owner: Owner::Source,
            updated_at: owners
                .iter()
                .any(|(_, o)| *o == Owner::Newest)
                .then(|| "updated_at".to_string()),
            children: vec![],
        }
    }

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn an_update_writes_each_field_by_its_owner_and_the_clock_last() {
        let r = rules(
            Deletes::Propagate,
            &[
                ("note", Owner::Target),
                ("phone", Owner::Fill),
                ("price", Owner::Newest),
            ],
        );
        let columns = cols(&["id", "updated_at", "name", "note", "phone", "price"]);
        assert_eq!(
            r.update_fields(&columns),
            [
                ("name", Condition::Always),
                ("phone", Condition::WhereEmpty),
                ("price", Condition::IfNewer),
                ("updated_at", Condition::IfNewer),
            ]
        );
    }

    #[test]
    fn conditions_decide_on_emptiness_and_change_time() {
        assert!(Condition::Always.writes(false, Some(false)));
        assert!(Condition::WhereEmpty.writes(true, None));
        assert!(!Condition::WhereEmpty.writes(false, Some(true)));
        assert!(!Condition::IfNewer.writes(true, Some(false)));
        // On hashes the change time is unknown: the field counts as written.
        assert!(Condition::IfNewer.writes(false, None));
    }

    #[test]
    fn a_delete_becomes_what_the_rule_says() {
        assert_eq!(rules(Deletes::Propagate, &[]).delete_as(), DeleteAs::Remove);
        assert_eq!(rules(Deletes::Ignore, &[]).delete_as(), DeleteAs::Keep);
        let soft = rules(Deletes::Soft, &[]);
        assert_eq!(soft.delete_as(), DeleteAs::MarkDeleted("deleted_at"));
        assert_eq!(soft.undelete(), Some("deleted_at"));
        assert_eq!(rules(Deletes::Propagate, &[]).undelete(), None);
    }
}
