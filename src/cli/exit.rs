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
}
