//! The schema stage: before a run reads or writes anything, the job's
//! fields are checked against the columns the source and the target have
//! now, and against the source's columns at the job's last run.
//!
//! Why: a mapped column dropped at the source used to arrive as NULL in
//! every target row, under a run that reported success. Now a run that
//! cannot be exact stops here and says why (exit 78); a change the job's
//! `[schema]` policy allows is made, logged, counted and recorded. The
//! stage also decides which columns the source reads, so that a column no
//! field maps changes no content hash.
pub mod expand;
mod plan;

use crate::config::{Detect, Job};
use crate::connectors::{self, ConnectorError, SchemaChange, Shape, Target};
use crate::state::{StateError, Store};

pub use plan::{Known, Plan};

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The job's fields do not fit the systems' columns: only a change of
    /// the job or of a schema helps (exit 78). Every problem found is listed.
    #[error("{}; nothing was read or written", problems.join("; "))]
    Refused { job: String, problems: Vec<String> },
    #[error("source {0}")]
    Source(ConnectorError),
    #[error("target {0}")]
    Target(ConnectorError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl SchemaError {
    pub fn connector(&self) -> Option<&ConnectorError> {
        match self {
            SchemaError::Source(e) | SchemaError::Target(e) => Some(e),
            _ => None,
        }
    }
}

/// A change the stage made to the target table, or (dry run) would make.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    /// `table_created`, `column_added`, `type_widened`.
    pub change: &'static str,
    pub detail: String,
    /// The statements, in the target's dialect.
    pub statements: Vec<String>,
}

/// What the stage found: the job as this run executes it, and what it
/// changed or warns about.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// With the columns the source reads, and any fields `on_new_column =
    /// "add"` added.
    pub job: Job,
    pub changes: Vec<Applied>,
    /// Accepted differences (`lossy = true`), new columns left unread.
    pub notes: Vec<String>,
    /// The job's fields or rules changed since the rows were last written
    /// under them: this run writes every row again (then
    /// [`record_rewritten`]).
    pub rewrite: bool,
}

/// Checks the job against its systems and, unless `dry_run`, makes the
/// changes its policy allows and records the source's columns. With no
/// `store` (a check without a state store) the job counts as never run.
pub async fn prepare(
    job: &Job,
    store: Option<&Store>,
    dry_run: bool,
) -> Result<Prepared, SchemaError> {
    let source = connectors::source(job).map_err(SchemaError::Source)?;
    let known = match store.map(|store| store.job_schema(&job.name)) {
        Some(read) => match read.await {
            Ok(json) => Known::parse(json.as_deref()),
            // A plan reads a state store it does not migrate, which may
            // predate the record: the job counts as never checked.
            Err(_) if dry_run => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    // An outbox table holds change messages, not the job's columns.
    let shape = match job.detect {
        Detect::Outbox => Shape::Schemaless,
        _ => source.schema().await.map_err(SchemaError::Source)?,
    };
    let columns = match shape {
        Shape::Schemaless => {
            return Ok(Prepared {
                job: job.clone(),
                changes: vec![],
                notes: vec![],
                rewrite: false,
            })
        }
        // Often a deployment's order (the table comes with the next
        // release): the run fails, and the next one finds the table.
        Shape::Missing => {
            let described = source.describe();
            let (system, object) = described
                .split_once(" table ")
                .map_or((described.as_str(), "table"), |(s, t)| (s, t));
            return Err(SchemaError::Source(ConnectorError::MissingObject {
                system: system.to_string(),
                object: format!("table {object}"),
                detail: "no such table".to_string(),
            }));
        }
        Shape::Table(table) => table,
    };
    let target = connectors::target(job).map_err(SchemaError::Target)?;
    let target_table = match target.has_columns() {
        true => target_shape(job, target.as_ref()).await?,
        false => Some(Shape::Schemaless),
    };
    let plan = Plan::new(
        job,
        &source.describe(),
        &columns,
        known.as_ref(),
        target_table.as_ref(),
        target.as_ref(),
    );
    if !plan.problems.is_empty() {
        return Err(SchemaError::Refused {
            job: job.name.clone(),
            problems: plan.problems,
        });
    }
    let mut changes = Vec::new();
    for (detail, change) in &plan.changes {
        let label = label(change);
        let statements = target
            .schema_statements(change)
            .map_err(SchemaError::Target)?;
        if !dry_run {
            target
                .change_schema(change)
                .await
                .map_err(SchemaError::Target)?;
            tracing::warn!(job = %job.name, change = label, "{}", sentence(label, detail, true));
            if let Some(metric) = crate::metrics::SCHEMA_CHANGES.iter().find(|c| **c == label) {
                crate::metrics::schema_changed(&job.name, metric);
            }
        }
        changes.push(Applied {
            change: label,
            detail: detail.clone(),
            statements,
        });
    }
    for note in &plan.notes {
        tracing::info!(job = %job.name, "{note}");
    }
    let recorded = plan.known.to_json();
    let unchanged = known.as_ref().is_some_and(|k| k.to_json() == recorded);
    if let (Some(store), false, false) = (store, dry_run, unchanged && changes.is_empty()) {
        let records: Vec<(String, String)> = changes
            .iter()
            .map(|c| (c.change.to_string(), c.sentence(true)))
            .collect();
        store
            .save_job_schema(&job.name, &recorded, &records)
            .await?;
    }
    Ok(Prepared {
        rewrite: known.as_ref().is_some_and(|k| k.rules_changed(job)),
        job: plan.job,
        changes,
        notes: plan.notes,
    })
}

/// The run that rewrote the job's rows under its new fields or rules has
/// detected them all: later runs compare with these.
pub async fn record_rewritten(job: &Job, store: &Store) -> Result<(), StateError> {
    let Some(mut known) = Known::parse(store.job_schema(&job.name).await?.as_deref()) else {
        return Ok(());
    };
    known.fingerprint = Some(job.write_fingerprint());
    store
        .save_job_schema(&job.name, &known.to_json(), &[])
        .await
}

/// The target table's columns; None when the target cannot be reached now:
/// the drain waits for it, detection goes on, and nothing can be written
/// meanwhile.
async fn target_shape(job: &Job, target: &dyn Target) -> Result<Option<Shape>, SchemaError> {
    let reachable = match &job.target.url {
        Some(url) => crate::reach::probe(url, "target", job.target.connect_timeout).await,
        None => Ok(()),
    };
    let shape = match reachable {
        Ok(()) => target.schema().await,
        Err(detail) => Err(ConnectorError::Unreachable {
            system: target.describe(),
            detail,
        }),
    };
    match shape {
        Ok(shape) => Ok(Some(shape)),
        Err(e) if e.is_unreachable() => {
            tracing::info!(job = %job.name, "target columns not checked: {e}");
            Ok(None)
        }
        Err(e) => Err(SchemaError::Target(e)),
    }
}

/// The job with the fields earlier runs added (`on_new_column = "add"`),
/// from the state store alone: what the drain maps queued items with when
/// the schema stage could not run (the source was unreachable).
pub async fn with_added_fields(job: &Job, store: &Store) -> Result<Job, StateError> {
    let known = Known::parse(store.job_schema(&job.name).await?.as_deref());
    Ok(match known {
        Some(known) => plan::add_fields(job, &known.added),
        None => job.clone(),
    })
}

impl Applied {
    /// `created the target table …` (done) or `create the target table …`.
    pub fn sentence(&self, done: bool) -> String {
        sentence(self.change, &self.detail, done)
    }
}

fn sentence(label: &str, detail: &str, done: bool) -> String {
    let verb = match (label, done) {
        ("table_created", true) => "created",
        ("table_created", false) => "create",
        ("column_added", true) => "added",
        ("column_added", false) => "add",
        (_, true) => "widened",
        (_, false) => "widen",
    };
    format!("{verb} {detail}")
}

/// A target change's name for logs and `ferry status`.
fn label(change: &SchemaChange) -> &'static str {
    match change {
        SchemaChange::CreateTable { .. } => "table_created",
        SchemaChange::AddColumn(_) => "column_added",
        SchemaChange::WidenColumn(_) => "type_widened",
    }
}
