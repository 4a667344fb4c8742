use clap::Parser;

use ferry::cli::{self, ExitCode};
use ferry::schedule::Signals;

fn main() {
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start the async runtime: {e}");
            std::process::exit(ExitCode::Unavailable.code());
        }
    };
    // Signal handlers first: until they exist SIGUSR1/SIGHUP would kill us.
    let signals = match runtime.block_on(async { Signals::install() }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferry: cannot install signal handlers: {e}");
            std::process::exit(ExitCode::Unavailable.code());
        }
    };
    let args = cli::Cli::parse();
    cli::init_logging(args.log_format);
    let code = runtime.block_on(cli::main(args, signals));
    std::process::exit(code.code());
}

/// glibc gives each thread that allocates its own heap arena, up to 8 per
/// core; ferry's threads (the runtime's workers, sqlx's SQLite workers) then
/// keep ~30 MiB of freed memory between them. Two arenas cost no measurable
/// speed (bench/RESULTS.md). `MALLOC_ARENA_MAX` in the environment wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only adjusts allocator tuning; called before any
        // other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
