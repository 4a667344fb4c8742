//! Conflicts: a field that both the target (since ferry last wrote it) and
//! the source changed. The owner rule has already decided the value inside
//! the write; this counts the conflict and remembers what ferry wrote, so
//! the next run compares against it instead of flip-flopping.
use std::collections::BTreeMap;

use crate::config::{Job, Mode};
use crate::connectors::Images;

/// Per field, the hashes of the value ferry sent and of the value the
/// target held after the write: the ledger's `written` column.
type WrittenFields = BTreeMap<String, (u32, u32)>;

/// Whether a job's writes can meet a row someone else changed: an insert
/// never touches an existing row.
pub fn tracked(job: &Job) -> bool {
    job.target.mode != Mode::Insert
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Assessment {
    /// Fields changed on both sides since ferry last wrote them.
    pub conflicts: u64,
    /// The write left the row as it was (for example the echo of ferry's own
    /// write coming back through the reverse job of a pair).
    pub unchanged: bool,
    /// The ledger's new `written` value.
    pub written: Option<String>,
}

/// Compares one upserted row's images with what ferry last wrote for its key
/// (`prior`, the ledger's `written`).
pub fn assess(fields: &[String], prior: Option<&str>, images: &Images) -> Assessment {
    // The ledger's own JSON; should it ever be unreadable, the only loss is
    // that this one write is not checked for a conflict.
    let prior: WrittenFields = prior
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_default();
    let mut conflicts = 0;
    if let Some(before) = &images.before {
        for (i, field) in fields.iter().enumerate() {
            let Some(&(sent, stored)) = prior.get(field) else {
                continue;
            };
            let (incoming, current) = (images.incoming[i], before[i]);
            let target_changed = current != stored;
            let source_changed = incoming != sent;
            if target_changed && source_changed && current != incoming {
                conflicts += 1;
            }
        }
    }
    let written = images.after.as_ref().map(|after| {
        let fields: WrittenFields = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.clone(), (images.incoming[i], after[i])))
            .collect();
        // A map of strings to number pairs always serialises.
        serde_json::to_string(&fields).expect("written fields serialise")
    });
    Assessment {
        conflicts,
        unchanged: images.before.is_some() && images.before == images.after,
        written,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Vec<String> {
        vec!["email".into(), "tier".into()]
    }

    fn images(incoming: [u32; 2], before: Option<[u32; 2]>, after: [u32; 2]) -> Images {
        Images {
            incoming: incoming.to_vec(),
            before: before.map(|b| b.to_vec()),
            after: Some(after.to_vec()),
        }
    }

    #[test]
    fn a_field_changed_on_both_sides_is_one_conflict() {
        let first = assess(&fields(), None, &images([1, 2], None, [1, 2]));
        assert_eq!(first.conflicts, 0);
        // The target changed email to 5, the source changed it to 3.
        let second = assess(
            &fields(),
            first.written.as_deref(),
            &images([3, 2], Some([5, 2]), [3, 2]),
        );
        assert_eq!(second.conflicts, 1);
        assert!(!second.unchanged);
    }

    #[test]
    fn a_change_on_one_side_only_is_no_conflict() {
        let first = assess(&fields(), None, &images([1, 2], None, [1, 2]));
        let target_only = assess(
            &fields(),
            first.written.as_deref(),
            &images([1, 2], Some([5, 2]), [1, 2]),
        );
        let source_only = assess(
            &fields(),
            first.written.as_deref(),
            &images([3, 2], Some([1, 2]), [3, 2]),
        );
        let same_value = assess(
            &fields(),
            first.written.as_deref(),
            &images([3, 2], Some([3, 2]), [3, 2]),
        );
        assert_eq!(
            (
                target_only.conflicts,
                source_only.conflicts,
                same_value.conflicts
            ),
            (0, 0, 0)
        );
        assert!(same_value.unchanged);
    }

    #[test]
    fn the_target_keeping_its_value_is_remembered_so_the_next_run_sees_no_conflict() {
        let first = assess(&fields(), None, &images([1, 2], None, [1, 2]));
        // Target owns email: it changed to 5 and keeps it against the source's 3.
        let conflict = assess(
            &fields(),
            first.written.as_deref(),
            &images([3, 2], Some([5, 2]), [5, 2]),
        );
        assert_eq!(conflict.conflicts, 1);
        let again = assess(
            &fields(),
            conflict.written.as_deref(),
            &images([3, 7], Some([5, 2]), [5, 7]),
        );
        assert_eq!(again.conflicts, 0);
    }
}
