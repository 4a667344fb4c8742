//! The command line: argument parsing, loading config and state, exit codes,
//! and what each command prints. Nothing below this module knows about it.
#[macro_use]
mod output;
mod check;
mod inspect;
mod pending;
mod resync;
mod run;
mod status;
mod test;
mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use crate::exit::ExitCode;

use crate::config::{self, Config};
use crate::schedule::Signals;
use crate::state::Store;

#[derive(Parser, Debug)]
#[command(
    name = "ferry",
    version,
    about = "Scheduled batch sync: snapshot changes, queue them durably, sync them under explicit rules"
)]
pub struct Cli {
    /// Folder with schedules.toml and jobs/.
    #[arg(long, global = true, env = "FERRY_CONFIG", default_value = ".")]
    pub config: PathBuf,
    /// State store URL (sqlite://… or postgres://…); default from [engine] state.
    /// Give it before the command: `ferry tasks --state` filters by task state.
    #[arg(long, env = "FERRY_STATE_URL")]
    pub state: Option<String>,
    #[arg(
        long,
        global = true,
        env = "FERRY_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// What commands print: tables for people, or one JSON document
    /// (`run --once`, `plan`, `status`, `jobs`, `tasks`, `tasks show`).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub output: OutputFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate all configuration; print every error as path:line:col: message.
    Check {
        /// Also contact the systems: every mapped column exists in the
        /// source and the target, each target type holds the source's
        /// values, tables exist (or `create = true` would make them).
        #[arg(long)]
        connect: bool,
    },
    /// List jobs: source → target, strategy, schedule, next fire times.
    Jobs,
    /// Run the `[[tests]]` blocks of job files offline: exit 0 when every
    /// expected write is what the job's rules make, 1 otherwise.
    Test {
        /// Jobs to test (all when none).
        jobs: Vec<String>,
    },
    /// Dry run: detect changes and print what would be written; writes nothing.
    Plan {
        /// Preview the deletes a diff would refuse (max_delete_ratio, an empty source).
        #[arg(long)]
        allow_mass_delete: bool,
        /// Keys shown per kind of change (insert, update, delete).
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// What `run --once --full` would resend and delete.
        #[arg(long)]
        full: bool,
        /// Jobs to plan (all when none).
        jobs: Vec<String>,
    },
    /// Run the daemon (cron schedules, signals, /metrics), or with --once run jobs and exit.
    Run {
        /// Run the named jobs (all when none) once, then exit.
        #[arg(long)]
        once: bool,
        /// With --once: PUT the metrics to this Pushgateway before exiting
        /// (default: [engine] pushgateway).
        #[arg(long)]
        pushgateway: Option<String>,
        /// Daemon: how long SIGTERM waits for runs in flight before exiting.
        #[arg(long, default_value = "25s", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
        /// Re-read every table and file source whole: resend every object,
        /// whatever the ledger says, and delete what the source no longer
        /// has (the repair after a target lost or changed data).
        #[arg(long)]
        full: bool,
        /// Allow a diff run to delete more than max_delete_ratio, or from an empty source.
        #[arg(long)]
        allow_mass_delete: bool,
        jobs: Vec<String>,
    },
    /// Re-read a part of a job's source (or all of it) and resend every
    /// object in it under the job's rules, whatever the ledger says was
    /// written: repairs a target that drifted.
    Resync {
        job: String,
        /// Only rows matching this SQL predicate over the source's columns
        /// (SQL sources).
        #[arg(long = "where", value_name = "PREDICATE")]
        predicate: Option<String>,
        /// Only keys from LO to HI, both included (LO.. and ..HI leave an
        /// end open; a composite key's bound is a JSON array: [1,"a"]).
        #[arg(long, value_name = "LO..HI")]
        keys: Option<String>,
        /// Count what would be resent; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: keys shown per kind of change.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Delete more than max_delete_ratio of the part's keys, or all of
        /// them when the part of the source is empty.
        #[arg(long)]
        allow_mass_delete: bool,
    },
    /// Compare each job's target with its source, trusting only the two
    /// databases: exit 0 when they match, 1 when rows are missing, extra
    /// or different.
    Verify(verify::VerifyArgs),
    /// Ask the daemon(s) on the same state store to run jobs now.
    Trigger {
        /// Wait for the runs and exit with their outcome.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after this long (exit 75; the runs go on).
        #[arg(long, value_parser = humantime::parse_duration, requires = "wait")]
        timeout: Option<std::time::Duration>,
        jobs: Vec<String>,
    },
    /// Per job: last run and outcome, watermark, queue depth by state.
    Status { job: Option<String> },
    /// List queue tasks, or inspect one.
    Tasks {
        #[arg(long)]
        job: Option<String>,
        /// pending, running, failed, dead or done.
        #[arg(long = "state", id = "task_state")]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(subcommand)]
        action: Option<TasksAction>,
    },
    /// Stop sending for a job; changes are still detected and queued.
    Pause { job: String },
    /// Start sending again for a paused job.
    Resume { job: String },
    /// Create or upgrade the state-store schema.
    Migrate,
}

#[derive(Subcommand, Debug)]
pub enum TasksAction {
    /// Print a task and its items (with their last errors) as JSON.
    Show { id: i64 },
    /// Queue failed or dead tasks again, due now, attempts reset.
    Retry {
        ids: Vec<i64>,
        /// Every dead task (of --job, if given).
        #[arg(long, conflicts_with = "ids")]
        dead: bool,
        #[arg(long)]
        job: Option<String>,
    },
    /// Delete tasks and their items for good (what they held is not sent).
    Discard {
        #[arg(required = true)]
        ids: Vec<i64>,
        /// Confirm: the items are lost.
        #[arg(long)]
        yes: bool,
    },
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,sqlx=warn,tokio_cron_scheduler=warn")
    });
    // Colour codes only where a person reads them: a terminal, unless
    // NO_COLOR (no-color.org) says otherwise; never into a file or a pipe.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub async fn main(cli: Cli, signals: Signals) -> ExitCode {
    match &cli.command {
        Command::Check { connect } => check::check(&cli, *connect).await,
        Command::Jobs => inspect::jobs(&cli).await,
        Command::Test { jobs } => test::test(&cli, jobs),
        Command::Plan {
            jobs,
            allow_mass_delete,
            limit,
            full,
        } => {
            let detect = crate::detect::DetectOptions {
                dry_run: true,
                repair: *full,
                allow_mass_delete: *allow_mass_delete,
                sample: *limit,
                ..Default::default()
            };
            run::plan(&cli, jobs, detect, None).await
        }
        Command::Run {
            once: true,
            full,
            allow_mass_delete,
            jobs,
            pushgateway,
            ..
        } => {
            let detect = crate::detect::DetectOptions {
                repair: *full,
                allow_mass_delete: *allow_mass_delete,
                ..Default::default()
            };
            run::once(&cli, signals, jobs, detect, None, pushgateway.as_deref()).await
        }
        Command::Run {
            once: false,
            grace,
            jobs,
            full,
            allow_mass_delete,
            pushgateway,
        } => {
            if !jobs.is_empty() || *full || *allow_mass_delete || pushgateway.is_some() {
                eprintln!("ferry: job names, --full, --allow-mass-delete and --pushgateway go with `run --once`; the daemon runs every job on its schedule");
                return ExitCode::Usage;
            }
            run::daemon(&cli, signals, *grace).await
        }
        Command::Resync {
            job,
            predicate,
            keys,
            dry_run,
            limit,
            allow_mass_delete,
        } => {
            let part = resync::Part {
                predicate: predicate.as_deref(),
                keys: keys.as_deref(),
                dry_run: *dry_run,
                limit: *limit,
                allow_mass_delete: *allow_mass_delete,
            };
            resync::resync(&cli, signals, job, part).await
        }
        Command::Verify(args) => verify::verify(&cli, args).await,
        Command::Trigger {
            wait,
            timeout,
            jobs,
        } => run::trigger(&cli, signals, jobs, *wait, *timeout).await,
        Command::Status { job } => status::status(&cli, job.as_deref()).await,
        Command::Tasks {
            job,
            state,
            limit,
            action,
        } => {
            inspect::tasks(
                &cli,
                job.as_deref(),
                state.as_deref(),
                *limit,
                action.as_ref(),
            )
            .await
        }
        Command::Pause { job } => inspect::pause(&cli, job, true).await,
        Command::Resume { job } => inspect::pause(&cli, job, false).await,
        Command::Migrate => run::migrate(&cli).await,
    }
}

fn load_config(cli: &Cli) -> Result<Config, ExitCode> {
    load_config_with(cli, config::load)
}

/// The configuration for a command that reads only the state store: an
/// unset environment variable stays `${VAR}` instead of failing it.
fn load_config_offline(cli: &Cli) -> Result<Config, ExitCode> {
    load_config_with(cli, config::load_offline)
}

type Loader = fn(
    &std::path::Path,
    &dyn Fn(&str) -> Option<String>,
    &config::Registry,
) -> Result<Config, config::ConfigErrors>;

fn load_config_with(cli: &Cli, load: Loader) -> Result<Config, ExitCode> {
    let env = |name: &str| std::env::var(name).ok();
    load(&cli.config, &env, &crate::connectors::REGISTRY)
        .map_err(|errors| {
            for d in &errors.0 {
                eprintln!("{d}");
            }
            eprintln!("ferry: {} configuration error(s)", errors.0.len());
            ExitCode::Config
        })
        .inspect(|config| {
            // Located like errors, in the same place; they do not fail a command.
            for d in &config.warnings {
                eprintln!(
                    "{}:{}:{}: warning: {}",
                    d.path.display(),
                    d.line,
                    d.col,
                    d.message
                );
            }
        })
}

/// The configuration with its whole-schema jobs expanded into one job per
/// table: what every command that runs or names jobs works with. (The
/// tables are listed from the sources, so `check` and `test` use
/// [`load_config`] and stay offline.)
async fn load_jobs(cli: &Cli) -> Result<Config, ExitCode> {
    let mut config = load_config(cli)?;
    crate::schema::expand::expand(&mut config).await;
    Ok(config)
}

/// [`load_jobs`] for commands that read only the state store
/// ([`load_config_offline`]).
async fn load_jobs_offline(cli: &Cli) -> Result<Config, ExitCode> {
    let mut config = load_config_offline(cli)?;
    crate::schema::expand::expand(&mut config).await;
    Ok(config)
}

/// The state-store URL: `--state`/`FERRY_STATE_URL`, else `[engine] state`,
/// else `ferry-state.db` in the config folder.
fn state_url(cli: &Cli, config: Option<&Config>) -> String {
    if let Some(url) = &cli.state {
        return if url.starts_with("sqlite:") {
            config::resolve_sqlite_url(url, &cli.config)
        } else {
            url.clone()
        };
    }
    config
        .and_then(|c| c.engine.state.clone())
        .unwrap_or_else(|| format!("sqlite://{}", cli.config.join("ferry-state.db").display()))
}

async fn open_store(url: &str, config: Option<&Config>) -> Result<Store, ExitCode> {
    let store = Store::open_within(url, state_connect_timeout(config))
        .await
        .map_err(state_failed)?;
    store.migrate().await.map_err(state_failed)?;
    Ok(store)
}

/// `[engine] connect_timeout`, or the default without a configuration.
fn state_connect_timeout(config: Option<&Config>) -> std::time::Duration {
    config.map_or(crate::reach::DEFAULT_CONNECT_TIMEOUT, |c| {
        c.engine.connect_timeout
    })
}

/// A state store that refuses our credentials needs a new configuration
/// (78); one that cannot be reached now, a retry (75).
fn state_failed(e: crate::state::StateError) -> ExitCode {
    eprintln!("ferry: {e}");
    if e.is_refused() {
        ExitCode::Config
    } else {
        ExitCode::Unavailable
    }
}

/// The named jobs (all when none), or exit 2 naming the unknown ones.
fn select_jobs<'c>(config: &'c Config, names: &[String]) -> Result<Vec<&'c config::Job>, ExitCode> {
    if names.is_empty() {
        return Ok(config.jobs.values().collect());
    }
    let unknown: Vec<&String> = names
        .iter()
        .filter(|n| !config.jobs.contains_key(*n))
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&String> = config.jobs.keys().collect();
        eprintln!(
            "ferry: unknown job(s): {}; jobs: {}",
            unknown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            known
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Err(ExitCode::Usage);
    }
    Ok(names.iter().filter_map(|n| config.jobs.get(n)).collect())
}
