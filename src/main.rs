use clap::Parser;

fn main() {
    let cli = ferry::cli::Cli::parse();
    ferry::cli::init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start the async runtime: {e}");
            std::process::exit(ferry::cli::ExitCode::Unavailable.code());
        }
    };
    let code = runtime.block_on(ferry::cli::main(cli));
    std::process::exit(code.code());
}
