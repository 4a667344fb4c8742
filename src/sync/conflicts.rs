//! Conflicts: a field that both the target (since ferry last wrote it) and
//! the source changed. The owner rule has already decided the value inside
//! the write; this counts the conflict and remembers what ferry wrote, so
//! the next run compares against it instead of flip-flopping.
use crate::config::{Job, Mode, Owner};
use crate::connectors::Images;

/// The ledger's `written` column, compact because every synced key has one:
/// hex of a fingerprint of the field names, a bit mask of the fields whose
/// sent value differs from the stored one, each field's stored hash, then
/// the sent hash of each masked field. Fields past the 32nd always carry
/// both. Per field: (sent, stored).
fn encode(fields: &[String], pairs: &[(u32, u32)]) -> String {
    let differs = |i: usize, (sent, stored): (u32, u32)| i >= 32 || sent != stored;
    let mask = pairs
        .iter()
        .enumerate()
        .take(32)
        .filter(|(i, p)| differs(*i, **p))
        .fold(0u32, |m, (i, _)| m | 1 << i);
    let mut out = String::with_capacity(16 + pairs.len() * 16);
    hex8(&mut out, fingerprint(fields));
    hex8(&mut out, mask);
    for (_, stored) in pairs {
        hex8(&mut out, *stored);
    }
    for (i, (sent, stored)) in pairs.iter().enumerate() {
        if differs(i, (*sent, *stored)) {
            hex8(&mut out, *sent);
        }
    }
    out
}

/// `{word:08x}`, without the formatting machinery (a word per field of
/// every synced row).
fn hex8(out: &mut String, word: u32) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..8).rev() {
        out.push(DIGITS[(word >> (shift * 4)) as usize & 0xf] as char);
    }
}

/// The inverse of [`encode`] for the same fields; None when the fields
/// changed since (another mapping) or the text is not ours.
fn decode(fields: &[String], text: &str) -> Option<Vec<(u32, u32)>> {
    let word = |i: usize| {
        text.get(i * 8..i * 8 + 8)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    if word(0)? != fingerprint(fields) {
        return None;
    }
    let mask = word(1)?;
    let mut next_sent = 2 + fields.len();
    (0..fields.len())
        .map(|i| {
            let stored = word(2 + i)?;
            let sent = if i >= 32 || mask & (1 << i) != 0 {
                next_sent += 1;
                word(next_sent - 1)?
            } else {
                stored
            };
            Some((sent, stored))
        })
        .collect()
}

fn fingerprint(fields: &[String]) -> u32 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for f in fields {
        h.update(f.as_bytes());
        h.update(&[0]);
    }
    h.digest() as u32
}

/// Whether a job's writes can meet a row someone else changed: an insert
/// never touches an existing row.
pub fn tracked(job: &Job) -> bool {
    job.target.mode != Mode::Insert
}

/// Whether a job's first writes need the rows as they were before: only to
/// keep a value the rules leave alone (a field owned by the target, `fill`,
/// `newest`) or to find the row an update writes. With every field owned by
/// the source, what the target holds after an upsert is what was sent.
pub fn first_writes_need_before(job: &Job) -> bool {
    let owner_of_all = if job.fields.is_empty() {
        job.rules.owner == Owner::Source
    } else {
        job.fields.iter().all(|f| f.owner == Owner::Source)
    };
    !owner_of_all || job.target.mode == Mode::Update || job.newest_clock().is_some()
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
    // Written under other fields (the mapping changed) or unreadable: the
    // only loss is that this one write is not checked for a conflict.
    let prior = prior.and_then(|p| decode(fields, p));
    let mut conflicts = 0;
    if let (Some(before), Some(prior)) = (&images.before, &prior) {
        for (i, &(sent, stored)) in prior.iter().enumerate() {
            let (incoming, current) = (images.incoming[i], before[i]);
            let target_changed = current != stored;
            let source_changed = incoming != sent;
            if target_changed && source_changed && current != incoming {
                conflicts += 1;
            }
        }
    }
    let written = images.after.as_ref().map(|after| {
        let pairs: Vec<(u32, u32)> = images
            .incoming
            .iter()
            .copied()
            .zip(after.iter().copied())
            .collect();
        encode(fields, &pairs)
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
    fn hex8_writes_what_format_writes() {
        for word in [0, 1, 0xabcdef, 0x8000_0000, u32::MAX] {
            let mut out = String::new();
            hex8(&mut out, word);
            assert_eq!(out, format!("{word:08x}"));
        }
    }

    #[test]
    fn written_round_trips_and_belongs_to_its_fields() {
        let pairs = [(1, 1), (2, 3), (u32::MAX, 0)];
        let names: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let text = encode(&names, &pairs);
        assert_eq!(
            text.len(),
            8 * (2 + 3 + 2),
            "only differing pairs carry both"
        );
        assert_eq!(decode(&names, &text).unwrap(), pairs);
        assert_eq!(decode(&names[..2], &text), None, "other fields");
        let many: Vec<String> = (0..40).map(|i| format!("f{i}")).collect();
        let pairs: Vec<(u32, u32)> = (0..40).map(|i| (i, i)).collect();
        assert_eq!(decode(&many, &encode(&many, &pairs)).unwrap(), pairs);
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
