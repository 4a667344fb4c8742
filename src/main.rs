use clap::Parser;

use ferry::cli::{self, ExitCode};
use ferry::schedule::Signals;

fn main() {
    tune_malloc();
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
/// speed (bench/RESULTS.md).
///
/// glibc also raises its mmap threshold each time a large block is freed, so
/// that after the first task the megabyte-sized buffers of the next ones (a
/// task's items, a batch's write payload) come from the heap, where they
/// leave holes that grow with the run: S1 peaked at 61-67 MiB at 1M rows and
/// 69 at 10M. A fixed threshold maps each such buffer and returns it whole:
/// 49-54 MiB, at the same wall time (bench/NOTES.md). The environment's
/// `MALLOC_ARENA_MAX` / `MALLOC_MMAP_THRESHOLD_` win.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let unset = |name: &str| std::env::var_os(name).is_none();
        // SAFETY: mallopt only adjusts allocator tuning; called before any
        // other thread exists.
        unsafe {
            if unset("MALLOC_ARENA_MAX") {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
            if unset("MALLOC_MMAP_THRESHOLD_") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
            }
        }
    }
}
