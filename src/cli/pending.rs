//! `ferry status`'s line on a snapshot or resync that has not finished:
//! its chunk tasks counted from the state store, so any process shows how
//! far a snapshot another one runs has come.
use super::inspect::{iso, time};

pub(super) struct PendingSnapshot {
    part: String,
    started_at: i64,
    /// Its chunk tasks, and the rows it split (the snapshot lane only).
    chunks: Option<(crate::state::ChunkCounts, i64)>,
}

pub(super) async fn pending_snapshot(
    store: &crate::state::Store,
    job: &str,
) -> Result<Option<PendingSnapshot>, crate::state::StateError> {
    let Some(open) = store.open_snapshot(job).await? else {
        return Ok(None);
    };
    let chunks = match open.lane.as_deref() {
        Some("chunks") => Some((
            store.chunk_counts(open.id).await?,
            open.rows.unwrap_or_default(),
        )),
        _ => None,
    };
    let part = serde_json::from_str::<crate::connectors::Subset>(&open.scope)
        .map_or(open.scope, |subset| subset.to_string());
    Ok(Some(PendingSnapshot {
        part,
        started_at: open.started_at,
        chunks,
    }))
}

impl PendingSnapshot {
    pub(super) fn json(&self) -> serde_json::Value {
        let mut doc = serde_json::json!({
            "part": self.part, "started_at": iso(Some(self.started_at)),
        });
        if let Some((c, rows)) = &self.chunks {
            doc["chunks"] = serde_json::json!({
                "done": c.done, "open": c.open, "dead": c.dead, "total": c.done + c.open + c.dead,
            });
            doc["rows"] = serde_json::json!({"written": c.rows_done, "planned": rows});
        }
        doc
    }

    pub(super) fn print(&self) {
        let Some((c, rows)) = &self.chunks else {
            out!(
                "  resync       of {}, started {}, did not finish: the next run does it",
                self.part,
                time(Some(self.started_at))
            );
            return;
        };
        let total = c.done + c.open + c.dead;
        let share = match rows {
            0 => String::new(),
            _ => format!(" ({:.0}%)", 100.0 * c.rows_done as f64 / *rows as f64),
        };
        let dead = match c.dead {
            0 => String::new(),
            n => format!(", {n} dead (`ferry tasks --state dead`)"),
        };
        out!(
            "  snapshot     of {}, started {}: {} of {total} chunk(s) done, {} of {rows} row(s) written{share}{dead}; \
             a running process or the next run does the rest",
            self.part,
            time(Some(self.started_at)),
            c.done,
            c.rows_done
        );
    }
}
