//! A live item of a task on its way to the target: its place in the task,
//! its operation and its row. Shared by the task's steps and key
//! translation, which rewrites rows before they are written.
use serde_json::value::RawValue;

use crate::model::{Op, Record};

/// A live item's target row.
pub(super) enum Row<'a> {
    Record(Record),
    /// The object's queued JSON, written as it is (see `Shape::json_rows`).
    Json(&'a RawValue),
}

/// (index of the item in its task, operation, row).
pub(super) type Live<'a> = (usize, Op, Row<'a>);

impl Row<'_> {
    /// The row's fields; None for a JSON row, which only jobs without key
    /// translation have (see `Shape::json_rows`).
    pub fn record(&self) -> Option<&Record> {
        match self {
            Row::Record(r) => Some(r),
            Row::Json(_) => None,
        }
    }

    pub fn record_mut(&mut self) -> Option<&mut Record> {
        match self {
            Row::Record(r) => Some(r),
            Row::Json(_) => None,
        }
    }
}
