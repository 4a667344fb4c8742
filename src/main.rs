use clap::Parser;

use ferry::cli::{self, ExitCode};
use ferry::schedule::Signals;

fn main() {
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
