//! Unix signals, installed in one place, first thing in `main`: until a
//! handler exists, SIGUSR1 and SIGHUP would kill the process (and PID 1 in a
//! container ignores what it does not handle).
use std::sync::{Arc, OnceLock};

use tokio::signal::unix::{signal, Signal, SignalKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// SIGUSR1: run every job now. Several may arrive as one: a request, not a count.
    RunAll,
    /// SIGHUP: reload the configuration.
    Reload,
    /// SIGTERM: drain and exit 143.
    Terminate,
    /// SIGINT: drain and exit 130.
    Interrupt,
}

impl Received {
    /// The exit code of a process stopped by this signal.
    pub fn exit_code(self) -> crate::exit::ExitCode {
        match self {
            Received::Interrupt => crate::exit::ExitCode::Interrupted,
            _ => crate::exit::ExitCode::Terminated,
        }
    }
}

pub struct Signals {
    usr1: Signal,
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Registers the handlers; call inside the runtime, before anything else.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            usr1: signal(SignalKind::user_defined1())?,
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    pub async fn next(&mut self) -> Received {
        tokio::select! {
            _ = self.usr1.recv() => Received::RunAll,
            _ = self.hup.recv() => Received::Reload,
            _ = self.term.recv() => Received::Terminate,
            _ = self.int.recv() => Received::Interrupt,
        }
    }

    /// For one-shot commands: the first SIGTERM/SIGINT cancels `shutdown`
    /// (stop claiming, finish what is in flight) and is kept in the returned
    /// cell; a second one exits at once. SIGUSR1 and SIGHUP are ignored.
    pub fn drain_on_stop(
        mut self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Arc<OnceLock<Received>> {
        let first = Arc::new(OnceLock::new());
        let cell = first.clone();
        tokio::spawn(async move {
            let received = loop {
                match self.next().await {
                    s @ (Received::Terminate | Received::Interrupt) => break s,
                    _ => continue,
                }
            };
            tracing::warn!(
                "{received:?}: finishing the tasks in flight; send it again to stop at once"
            );
            let _ = cell.set(received);
            shutdown.cancel();
            loop {
                if let s @ (Received::Terminate | Received::Interrupt) = self.next().await {
                    std::process::exit(s.exit_code().code());
                }
            }
        });
        first
    }
}
