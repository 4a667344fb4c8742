//! `ferry test`: the `[[tests]]` blocks of job files, run offline against the
//! jobs' rules; no source, target or state store is contacted.
use super::{load_config, select_jobs, Cli, ExitCode};
use crate::config::{RuleTest, WriteKind};
use crate::model::Record;
use crate::sync::{predict, Predicted};

pub fn test(cli: &Cli, names: &[String]) -> ExitCode {
    let config = match load_config(cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let jobs = match select_jobs(&config, names) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let (mut run, mut failed) = (0, 0);
    for job in jobs {
        for t in &job.tests {
            run += 1;
            let got = predict(
                job,
                t.source.as_ref(),
                t.target.as_ref(),
                t.written.as_ref(),
            );
            let differences = differences(t, &got);
            if differences.is_empty() {
                out!("ok    {}: {}", job.name, t.name);
            } else {
                failed += 1;
                out!("FAIL  {}: {} ({})", job.name, t.name, t.location);
                for d in differences {
                    out!("      {d}");
                }
            }
        }
    }
    out!("{run} test(s), {failed} failed");
    if failed > 0 {
        ExitCode::Failed
    } else {
        ExitCode::Ok
    }
}

/// What the rules make of the test's object, where it differs from the test.
fn differences(t: &RuleTest, got: &Predicted) -> Vec<String> {
    if got.kind != t.expect {
        let mut out = vec![format!(
            "expected {}, the rules make {}",
            t.expect.name(),
            describe(got)
        )];
        if got.kind == WriteKind::Skip {
            out.push(skip_reason(t).to_string());
        }
        return out;
    }
    let Some(expected) = &t.fields else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (field, want) in expected {
        match got.fields.get(field) {
            None => out.push(format!("field `{field}`: expected {want}, not written")),
            Some(v) if v != want => {
                out.push(format!("field `{field}`: expected {want}, written as {v}"))
            }
            Some(_) => {}
        }
    }
    for (field, v) in &got.fields {
        if !expected.contains_key(field) {
            out.push(format!("field `{field}`: not expected, written as {v}"));
        }
    }
    out
}

fn describe(p: &Predicted) -> String {
    match p.kind {
        WriteKind::Insert | WriteKind::Update | WriteKind::Conflict => {
            format!("{} {}", p.kind.name(), fields(&p.fields))
        }
        kind => kind.name().to_string(),
    }
}

fn fields(r: &Record) -> String {
    let parts: Vec<String> = r.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    format!("{{ {} }}", parts.join(", "))
}

fn skip_reason(t: &RuleTest) -> &'static str {
    match (&t.source, &t.target) {
        (Some(_), Some(_)) => "(nothing the rules may write differs from the target's row, or the mode does not update)",
        (Some(_), None) => "(the mode does not insert)",
        (None, _) => "(the delete rule writes nothing for this row)",
    }
}
