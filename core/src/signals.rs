//! Operator signals, nginx-style. Only the host installs signal handlers; plugins never
//! see them (DESIGN.md).
//!
//! | signal        | meaning                                   |
//! |---------------|-------------------------------------------|
//! | SIGHUP        | re-read the config                        |
//! | SIGUSR1       | reopen log files (logrotate `postrotate`) |
//! | SIGINT/QUIT   | graceful stop                             |
//! | SIGTERM       | exit at once                              |

use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Reload,
    Reopen,
    /// Graceful stop; carries the signal's name for the log.
    Stop(&'static str),
    Exit,
}

pub struct Signals {
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers. Done first thing at start-up, so that a signal sent the
    /// moment the pid file appears is handled rather than killing the process.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.hup.recv() => Signal::Reload,
            _ = self.usr1.recv() => Signal::Reopen,
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.quit.recv() => Signal::Stop("SIGQUIT"),
            _ = self.term.recv() => Signal::Exit,
        }
    }
}

/// The `-s` names and the signal each sends.
pub fn by_name(name: &str) -> Option<libc::c_int> {
    match name {
        "reload" => Some(libc::SIGHUP),
        "reopen" => Some(libc::SIGUSR1),
        "quit" => Some(libc::SIGQUIT),
        "stop" => Some(libc::SIGTERM),
        _ => None,
    }
}
