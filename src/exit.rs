//! The process exit codes, documented for users in `docs/commands.md`.

/// Exit codes (sysexits), so that a Kubernetes podFailurePolicy can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything synced.
    Ok = 0,
    /// The run finished but items failed (dead, or awaiting retry).
    Failed = 1,
    /// Bad command line.
    Usage = 2,
    /// A system could not be reached; nothing was lost, retry later.
    Unavailable = 75,
    /// Invalid configuration.
    Config = 78,
    Interrupted = 130,
    Terminated = 143,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        self as i32
    }

    /// How bad an outcome is, to pick the exit code of several runs: a
    /// configuration someone must fix beats unreachable (retry later) beats
    /// failed beats ok.
    fn severity(self) -> u8 {
        match self {
            ExitCode::Ok => 0,
            ExitCode::Failed => 1,
            ExitCode::Unavailable => 2,
            ExitCode::Usage | ExitCode::Config => 3,
            ExitCode::Interrupted | ExitCode::Terminated => 4,
        }
    }

    /// The exit code of a command that did several things.
    pub fn worst(codes: impl IntoIterator<Item = ExitCode>) -> ExitCode {
        codes
            .into_iter()
            .max_by_key(|c| c.severity())
            .unwrap_or(ExitCode::Ok)
    }
}
