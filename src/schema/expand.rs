//! Whole-schema jobs: a job file whose source names `tables = [patterns]`
//! becomes one job per matching table, each keyed by its primary key,
//! when the configuration loads (and on every reload).
use crate::config::{Config, Job, SkippedTable};
use crate::connectors::{self, ConnectorError, ListedTable};

use super::SchemaError;

/// Replaces each whole-schema job of `config` by its tables' jobs, named
/// `<file>.<table>`, with the file's schedule. A job whose tables cannot be
/// listed now stays as it is: its runs fail with the reason.
pub async fn expand(config: &mut Config) {
    let templates: Vec<Job> = config
        .jobs
        .values()
        .filter(|j| j.source.tables.is_some())
        .cloned()
        .collect();
    for template in templates {
        let listed = match list(&template).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(job = %template.name, "cannot list the tables of a whole-schema job: {e}");
                continue;
            }
        };
        let (jobs, skipped) = jobs_for(&template, &listed);
        config.jobs.remove(&template.name);
        let schedule = config.schedules.remove(&template.name);
        for job in jobs {
            if let Some(schedule) = &schedule {
                config.schedules.insert(job.name.clone(), schedule.clone());
            }
            config.jobs.insert(job.name.clone(), job);
        }
        config.skipped.extend(skipped);
    }
}

async fn list(template: &Job) -> Result<Vec<ListedTable>, ConnectorError> {
    let source = connectors::source(template)?;
    Ok(source.list_tables().await?.unwrap_or_default())
}

/// Why a whole-schema job that was not expanded cannot run.
pub async fn unexpanded(job: &Job) -> SchemaError {
    match list(job).await {
        Err(e) => SchemaError::Source(e),
        Ok(_) => SchemaError::Refused {
            job: job.name.clone(),
            problems: vec!["its tables could not be listed when the configuration was loaded; they can now: reload the configuration (SIGHUP) or run again".to_string()],
        },
    }
}

/// One job per matching table with a primary key; the others skipped.
fn jobs_for(template: &Job, listed: &[ListedTable]) -> (Vec<Job>, Vec<SkippedTable>) {
    let patterns = template.source.tables.clone().unwrap_or_default();
    let matching: Vec<&ListedTable> = listed.iter().filter(|t| selected(&patterns, t)).collect();
    let mut jobs = Vec::new();
    let mut skipped = Vec::new();
    for table in &matching {
        // The state store may share the source's database.
        if table.short().starts_with("ferry_") || table.short() == "_sqlx_migrations" {
            skipped.push(SkippedTable {
                job: template.name.clone(),
                table: table.name.clone(),
                reason: "a table of ferry's state store (name it in a job of its own to sync it)"
                    .to_string(),
            });
            continue;
        }
        if table.primary_key.is_empty() {
            skipped.push(SkippedTable {
                job: template.name.clone(),
                table: table.name.clone(),
                reason: "no primary key: give it one, or sync it with a job of its own that names a `key`".to_string(),
            });
            continue;
        }
        // Two schemas may hold tables of one name: those keep the schema.
        let short = table.short();
        let unique = matching.iter().filter(|t| t.short() == short).count() == 1;
        let label = if unique {
            short.to_string()
        } else {
            table.name.clone()
        };
        let mut job = template.clone();
        job.name = format!("{}.{label}", template.name);
        job.source.tables = None;
        job.source.table = Some(table.name.clone());
        job.source.key = table.primary_key.clone();
        job.target.table = template
            .target
            .table
            .as_ref()
            .map(|t| t.replace("{table}", short));
        if job.target.key.is_empty() {
            job.target.key = table.primary_key.clone();
        }
        jobs.push(job);
    }
    (jobs, skipped)
}

/// Included by a pattern and excluded by none (`!pattern`). A pattern with
/// a `.` matches `schema.table`, one without it the table's name alone.
fn selected(patterns: &[String], table: &ListedTable) -> bool {
    let matches = |pattern: &str| {
        let text = if pattern.contains('.') {
            &table.name
        } else {
            table.short()
        };
        glob(pattern, text)
    };
    patterns
        .iter()
        .filter(|p| !p.starts_with('!'))
        .any(|p| matches(p))
        && !patterns
            .iter()
            .filter_map(|p| p.strip_prefix('!'))
            .any(matches)
}

/// `*` any run of characters, `?` any one; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> ListedTable {
        ListedTable {
            name: name.to_string(),
            primary_key: vec!["id".to_string()],
        }
    }

    #[test]
    fn globs_include_then_exclude() {
        let patterns = vec!["public.*".to_string(), "!public.audit_*".to_string()];
        assert!(selected(&patterns, &table("public.orders")));
        assert!(!selected(&patterns, &table("public.audit_log")));
        assert!(!selected(&patterns, &table("sales.orders")));
        assert!(selected(&["ord?rs".to_string()], &table("sales.orders")));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b", "axxbc"));
    }
}
