//! Reads a configuration folder and validates all of it, reporting every error.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::diagnostic::{Diagnostic, SourceText};
use super::raw;
use super::registry::Registry;
use super::validate::{self, Ctx, JobReference};
use super::*;

/// Loads `dir/schedules.toml` and `dir/jobs/*.toml`. `env` resolves `${VAR}`.
/// `registry` says what the connectors of this build accept.
pub fn load(
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    registry: &Registry,
) -> Result<Config, ConfigErrors> {
    load_with(dir, env, registry, false)
}

/// As [`load`], for commands that read only the state store (`status`,
/// `jobs`, `tasks`, `pause`): an environment variable that is unset stays
/// as `${VAR}` instead of failing the whole configuration, since those
/// commands never contact the systems such values point at.
pub fn load_offline(
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    registry: &Registry,
) -> Result<Config, ConfigErrors> {
    load_with(dir, env, registry, true)
}

fn load_with(
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    registry: &Registry,
    keep_unset: bool,
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();

    let job_files = job_files(dir, &mut errors);

    let mut jobs = BTreeMap::new();
    let mut references: Vec<(PathBuf, String, JobReference)> = Vec::new();
    for path in &job_files {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(file_error(path, format!("cannot read: {e}")));
                continue;
            }
        };
        let mut ctx = Ctx {
            src: SourceText::new(path, &text),
            env,
            dir,
            keep_unset,
            reg: registry,
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            ctx.src.error(
                0..0,
                format!("job name `{name}` (the file name) must match [a-z0-9_]+"),
            );
        }
        match parse_reporting_all::<raw::JobFile>(&text) {
            Ok(file) => {
                let mut refs = Vec::new();
                // Parsed once already: this second pass cannot fail.
                let sections = toml::from_str::<raw::SectionTables>(&text)
                    .map(raw::SectionTables::keys)
                    .unwrap_or_default();
                if let Some(job) = validate::job(&mut ctx, &name, &file, &sections, &mut refs) {
                    jobs.insert(name.clone(), job);
                }
                references.extend(refs.into_iter().map(|r| (path.clone(), text.clone(), r)));
            }
            Err(structural) => {
                for (span, message) in structural {
                    ctx.src.error(span, message);
                }
                // The sections' keys are the connectors' to accept: a key
                // none of them reads is reported in the same run.
                if let Ok(sections) = toml::from_str::<raw::SectionTables>(&text) {
                    validate::unknown_section_keys(&mut ctx, &sections.keys());
                }
            }
        }
        errors.extend(ctx.src.errors);
        warnings.extend(ctx.src.warnings);
    }
    let known: Vec<String> = job_files
        .iter()
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
        .collect();
    check_references(&references, &jobs, &known, &mut errors);
    check_after_cycles(&jobs, &mut errors, dir);
    link_echo_partners(&mut jobs);

    let (engine, schedules) = schedules_file(dir, env, registry, keep_unset, &known, &mut errors);
    connections::size_pools(&mut jobs, &engine.connections, registry, &mut errors);
    if errors.is_empty() {
        Ok(Config {
            dir: dir.to_path_buf(),
            engine,
            jobs,
            schedules,
            skipped: Vec::new(),
            warnings,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

fn file_error(path: &Path, message: String) -> Diagnostic {
    Diagnostic {
        path: path.to_path_buf(),
        line: 1,
        col: 1,
        message,
    }
}

/// The toml crate's message without its own rendering of the location.
/// At most this many structural errors are reported per file.
const MAX_STRUCTURAL_ERRORS: usize = 50;

/// Parses a whole file, reporting every unknown key and wrong type rather
/// than the first: after each such error the offending lines are blanked
/// (spaces, so later spans still point into the user's text) and the file is
/// parsed again. A syntax error or a missing key ends the search, as what
/// follows it could only be a consequence of it.
fn parse_reporting_all<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<T, Vec<(std::ops::Range<usize>, String)>> {
    let mut text = text.to_string();
    let mut errors: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    while errors.len() < MAX_STRUCTURAL_ERRORS {
        let e = match toml::from_str::<T>(&text) {
            Ok(parsed) if errors.is_empty() => return Ok(parsed),
            Ok(_) => break,
            Err(e) => e,
        };
        let message = toml_message(&e);
        let span = e.span().unwrap_or(0..0);
        let recoverable = message.starts_with("unknown field")
            || message.starts_with("invalid type")
            || message.starts_with("invalid value");
        if !recoverable {
            // A missing key right after a blanked one is the blanking's doing.
            if errors.is_empty() || !message.starts_with("missing field") {
                errors.push((span, message));
            }
            break;
        }
        errors.push((span.clone(), message));
        if !blank(&mut text, span) {
            break;
        }
    }
    Err(errors)
}

/// Blanks the lines `span` touches: a table header with its whole table (so
/// that its keys do not fall into the table before it), else the key's lines.
/// False when there was nothing left to blank.
fn blank(text: &mut String, span: std::ops::Range<usize>) -> bool {
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line_end = |from: usize| text[from..].find('\n').map_or(text.len(), |i| from + i);
    let mut end = line_end(span.end.min(text.len()).max(start));
    if text[start..].trim_start().starts_with('[') {
        // The table runs until the next header.
        let mut at = end;
        while at < text.len() {
            let next = line_end(at + 1);
            if text[at + 1..next].trim_start().starts_with('[') {
                break;
            }
            at = next;
        }
        end = at;
    }
    if text[start..end].trim().is_empty() {
        return false;
    }
    let blanked: String = text[start..end]
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    // Multi-byte characters become one space each: pad to keep offsets.
    let pad = (end - start) - blanked.len();
    text.replace_range(start..end, &(blanked + &" ".repeat(pad)));
    true
}

fn toml_message(e: &toml::de::Error) -> String {
    e.message()
        .trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(": ")
}

/// For each job, its reverse jobs: those that read its target table as
/// their whole source and write back into its source table. A row it writes
/// there is theirs to recognise, not to send back. (A job that reads the
/// table and writes elsewhere is a next step in a chain, and must carry it.)
fn link_echo_partners(jobs: &mut BTreeMap<String, Job>) {
    let same = |kind: &str,
                url: Option<&String>,
                table: Option<&String>,
                k2: &str,
                u2: Option<&String>,
                t2: Option<&String>| {
        kind == k2 && url.is_some() && url == u2 && table.is_some() && table == t2
    };
    let all: Vec<Job> = jobs.values().cloned().collect();
    for a in jobs.values_mut() {
        a.echo = all
            .iter()
            .filter(|b| b.name != a.name)
            .filter(|b| {
                b.source.query.is_none() && b.source.filter.is_none() && b.children.is_empty()
            })
            .filter(|b| {
                let reads_our_target = same(
                    &b.source.kind,
                    b.source.url.as_ref(),
                    b.source.table.as_ref(),
                    &a.target.kind,
                    a.target.url.as_ref(),
                    a.target.table.as_ref(),
                );
                let writes_our_source = same(
                    &b.target.kind,
                    b.target.url.as_ref(),
                    b.target.table.as_ref(),
                    &a.source.kind,
                    a.source.url.as_ref(),
                    a.source.table.as_ref(),
                );
                reads_our_target && writes_our_source
            })
            .map(|b| EchoPartner {
                job: b.name.clone(),
                key: b.source.key.clone(),
                columns: b.read_columns(),
            })
            .collect();
    }
}

fn check_after_cycles(jobs: &BTreeMap<String, Job>, errors: &mut Vec<Diagnostic>, dir: &Path) {
    for start in jobs.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, path)) = stack.pop() {
            for next in jobs.get(&at).map(|j| j.after.clone()).unwrap_or_default() {
                if next == *start {
                    let cycle = path
                        .iter()
                        .chain(std::iter::once(&next))
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" → ");
                    errors.push(file_error(
                        &dir.join("jobs").join(format!("{start}.toml")),
                        format!("`after` forms a cycle: {cycle}"),
                    ));
                    return;
                }
                if !path.contains(&next) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next, p));
                }
            }
        }
    }
}

/// A schedule with no fire time this far ahead (`0 0 31 2 *`) is an error.
const NEVER_FIRES_HORIZON_YEARS: i32 = 5;

/// The job files in `dir/jobs`, sorted; a missing or unreadable folder is
/// an error.
fn job_files(dir: &Path, errors: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let jobs_dir = dir.join("jobs");
    let mut job_files: Vec<PathBuf> = match std::fs::read_dir(&jobs_dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            errors.push(file_error(
                &jobs_dir,
                format!(
                    "no jobs/ folder in {} — pass --config DIR or set FERRY_CONFIG",
                    dir.display()
                ),
            ));
            Vec::new()
        }
        Err(e) => {
            errors.push(file_error(
                &jobs_dir,
                format!("cannot read the jobs folder: {e}"),
            ));
            Vec::new()
        }
    };
    job_files.sort();
    job_files
}

/// Every job a job names (`after`, `lookup`) exists; a `lookup` job keeps
/// an id map.
fn check_references(
    references: &[(PathBuf, String, JobReference)],
    jobs: &BTreeMap<String, Job>,
    known: &[String],
    errors: &mut Vec<Diagnostic>,
) {
    for (path, text, r) in references {
        if !known.contains(&r.name) {
            let src = SourceText::new(path, text);
            errors.push(src.diagnostic(
                r.span.clone(),
                format!(
                    "{} names job `{}`, which does not exist (jobs: {})",
                    r.what,
                    r.name,
                    known.join(", ")
                ),
            ));
        } else if r.what == "`lookup`"
            && jobs
                .get(&r.name)
                .is_some_and(|j| j.generated_key().is_none())
        {
            errors.push(SourceText::new(path, text).diagnostic(
                r.span.clone(),
                format!(
                    "`lookup` names job `{}`, whose target key comes from its source: it keeps no id map to translate through (a lookup job's target generates its key: a one-column `[target] key` that no field maps)",
                    r.name
                ),
            ));
        }
    }
}

fn schedules_file(
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    registry: &Registry,
    keep_unset: bool,
    jobs: &[String],
    errors: &mut Vec<Diagnostic>,
) -> (Engine, BTreeMap<String, Schedule>) {
    let path = dir.join("schedules.toml");
    let mut engine = Engine {
        state: None,
        metrics: "0.0.0.0:9464".to_string(),
        pushgateway: None,
        timezone: chrono_tz::UTC,
        retention: Retention::default(),
        connect_timeout: crate::reach::DEFAULT_CONNECT_TIMEOUT,
        max_concurrent_runs: connections::DEFAULT_MAX_CONCURRENT_RUNS,
        connections: connections::Budget::default(),
    };
    let mut schedules = BTreeMap::new();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (engine, schedules),
        Err(e) => {
            errors.push(file_error(&path, format!("cannot read: {e}")));
            return (engine, schedules);
        }
    };
    let mut ctx = Ctx {
        src: SourceText::new(&path, &text),
        env,
        dir,
        keep_unset,
        reg: registry,
    };
    let file = match parse_reporting_all::<raw::SchedulesFile>(&text) {
        Ok(f) => f,
        Err(structural) => {
            for (span, message) in structural {
                ctx.src.error(span, message);
            }
            errors.extend(ctx.src.errors);
            return (engine, schedules);
        }
    };
    if let Some(e) = &file.engine {
        engine_section(&mut ctx, e.get_ref(), dir, &mut engine);
    }
    for (name, spec) in &file.schedules {
        let job = name.get_ref();
        if !jobs.contains(job) {
            ctx.src.error(
                name.span(),
                format!(
                    "schedule for job `{job}`, which does not exist (jobs: {})",
                    jobs.join(", ")
                ),
            );
            continue;
        }
        let raw = spec.get_ref();
        let (tz, missed, parsed) = schedule(job, raw, engine.timezone);
        let mut failed = false;
        for message in [tz.err(), missed.err(), parsed.as_ref().err().cloned()]
            .into_iter()
            .flatten()
        {
            ctx.src.error(spec.span(), message);
            failed = true;
        }
        if let (Ok(s), false) = (parsed, failed) {
            schedules.insert(job.clone(), s);
        }
    }
    errors.extend(ctx.src.errors);
    (engine, schedules)
}

/// `[engine]`: the state store, metrics address, Pushgateway, time zone,
/// retention and connect timeout.
fn engine_section(ctx: &mut Ctx, e: &raw::EngineRaw, dir: &Path, engine: &mut Engine) {
    if let Some(s) = &e.state {
        if let Some(url) = ctx.text(s) {
            if url.starts_with("sqlite:") {
                engine.state = Some(validate::resolve_sqlite_url(&url, dir));
            } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                engine.state = Some(url);
            } else if !url.is_empty() {
                ctx.src.error(
                    s.span(),
                    format!(
                        "`state` = `{}` must be a `sqlite:` or `postgres://` URL",
                        crate::redact::url(&url)
                    ),
                );
            }
        }
    }
    if let Some(m) = &e.metrics {
        if let Some(addr) = ctx.text(m) {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                ctx.src.error(
                    m.span(),
                    format!("`metrics` = `{addr}` is not an address like \"0.0.0.0:9464\""),
                );
            }
            engine.metrics = addr;
        }
    }
    if let Some(p) = &e.pushgateway {
        engine.pushgateway = ctx.text(p).filter(|s| !s.is_empty());
    }
    engine.retention.tasks = ctx.duration(&e.retain_tasks, "retain_tasks", engine.retention.tasks);
    engine.retention.runs = ctx.duration(&e.retain_runs, "retain_runs", engine.retention.runs);
    engine.connect_timeout = ctx.duration(
        &e.connect_timeout,
        "connect_timeout",
        engine.connect_timeout,
    );
    if let Some(tz) = &e.timezone {
        if let Some(tz) = timezone(ctx, tz) {
            engine.timezone = tz;
        }
    }
    connections::engine_limits(ctx, e, engine);
}

type Checked<T> = Result<T, String>;

/// One schedule's time zone, `missed` and cron, each checked on its own so
/// that every error of the schedule is reported, not only the first.
fn schedule(
    job: &str,
    raw: &raw::ScheduleRaw,
    default_tz: chrono_tz::Tz,
) -> (Checked<chrono_tz::Tz>, Checked<Missed>, Checked<Schedule>) {
    // Every error of the schedule is reported, not only the first.
    let tz = match &raw.timezone {
        Some(t) => t.parse::<chrono_tz::Tz>().map_err(|_| {
            format!("schedule `{job}`: unknown time zone `{t}`; use an IANA name like \"Europe/Prague\"")
        }),
        None => Ok(default_tz),
    };
    let missed = match raw.missed.as_deref() {
        None | Some("run_once") => Ok(Missed::RunOnce),
        Some("skip") => Ok(Missed::Skip),
        Some(m) => Err(format!(
            "schedule `{job}`: `missed` is `{m}`; expected `skip` or `run_once`"
        )),
    };
    let zone = *tz.as_ref().unwrap_or(&chrono_tz::UTC);
    let fires = |expression: &str, missed: Missed, what: &str| {
        Schedule::parse(expression, zone, missed)
            .map_err(|m| format!("schedule `{job}`: {what}{m}"))
            .and_then(|s| match s.fires_within(chrono::Utc::now(), NEVER_FIRES_HORIZON_YEARS) {
                true => Ok(s),
                false => Err(format!(
                    "schedule `{job}`: {what}`{expression}` never fires in the next {NEVER_FIRES_HORIZON_YEARS} years (is the day of the month one that month has?)"
                )),
            })
    };
    let verify = raw
        .verify
        .as_deref()
        .map(|v| fires(v, Missed::Skip, "verify: "))
        .transpose();
    let parsed =
        fires(&raw.cron, *missed.as_ref().unwrap_or(&Missed::RunOnce), "").and_then(|mut s| {
            s.verify = verify?.map(Box::new);
            Ok(s)
        });
    (tz, missed, parsed)
}

fn timezone(ctx: &mut Ctx, v: &raw::S<String>) -> Option<chrono_tz::Tz> {
    let s = ctx.text(v)?;
    match s.parse::<chrono_tz::Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            ctx.src.error(
                v.span(),
                format!("unknown time zone `{s}`; use an IANA name like \"Europe/Prague\""),
            );
            None
        }
    }
}
