//! Standard output that a closed pipe cannot crash: `ferry tasks | head -1`
//! closes stdout after one line, and `println!` would panic (exit 101). A
//! line that cannot be written is dropped; the command goes on and exits
//! with its own code, so a run piped into `head` still finishes its work.
use std::io::Write;

/// Writes one line to stdout, ignoring a reader that went away.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    // A failed write (EPIPE above all) only loses output nobody reads.
    let _ = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
}

/// `println!` for command output: never panics on a closed pipe.
macro_rules! out {
    () => {
        $crate::cli::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}
