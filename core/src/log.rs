//! Logging: the main log (tracing events) and the API access log (JSON lines).
//!
//! Both go through `tracing-appender`'s non-blocking worker, so a slow disk never stalls
//! a tokio worker. The worker is built **lossless** (`lossy(false)`): when its queue is
//! full, callers wait instead of dropping lines, because "no line lost" is a promise
//! logrotate users rely on.
//!
//! tracing-appender cannot reopen a file, so the worker writes into a [`Sink`] that can.
//! Each log line reaches the sink as one `write` call and is written whole under the
//! sink's lock. Reopening opens the new file first and swaps it in under the same lock,
//! so every line lands in exactly one file: the renamed one (before SIGUSR1) or the new
//! one (after), never both and never neither.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tracing::level_filters::LevelFilter;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, Registry};

use crate::config::{Config, LogTarget};

/// An output that can be pointed elsewhere or reopened while lines flow into it.
pub struct Sink {
    out: Mutex<Output>,
}

enum Output {
    Off,
    Stdout,
    Stderr,
    File {
        path: std::path::PathBuf,
        file: File,
    },
}

impl Output {
    fn open(target: &LogTarget) -> io::Result<Output> {
        Ok(match target {
            LogTarget::Off => Output::Off,
            LogTarget::Stdout => Output::Stdout,
            LogTarget::Stderr => Output::Stderr,
            LogTarget::File(path) => Output::File {
                path: path.clone(),
                file: open_append(path)?,
            },
        })
    }

    fn target(&self) -> LogTarget {
        match self {
            Output::Off => LogTarget::Off,
            Output::Stdout => LogTarget::Stdout,
            Output::Stderr => LogTarget::Stderr,
            Output::File { path, .. } => LogTarget::File(path.clone()),
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

impl Sink {
    pub fn open(target: &LogTarget) -> io::Result<Arc<Sink>> {
        Ok(Arc::new(Sink {
            out: Mutex::new(Output::open(target)?),
        }))
    }

    /// Points the sink at `target`. The new output is opened before the old one is
    /// let go, so a failure leaves logging where it was.
    pub fn retarget(&self, target: &LogTarget) -> io::Result<()> {
        let new = Output::open(target)?;
        *self.out.lock().unwrap_or_else(|p| p.into_inner()) = new;
        Ok(())
    }

    /// Reopens the current file by name (after logrotate renamed it).
    pub fn reopen(&self) -> io::Result<()> {
        let target = self.target();
        self.retarget(&target)
    }

    pub fn target(&self) -> LogTarget {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).target()
    }

    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *out {
            Output::Off => Ok(()),
            Output::Stdout => {
                let mut s = io::stdout().lock();
                s.write_all(line)?;
                s.flush()
            }
            Output::Stderr => io::stderr().lock().write_all(line),
            Output::File { file, .. } => file.write_all(line),
        }
    }
}

/// The `Write` end handed to the non-blocking worker thread.
struct SinkWriter(Arc<Sink>);

impl Write for SinkWriter {
    /// Writes the whole buffer (one log line) under one lock, so a reopen can never
    /// split a line between two files.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_line(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn lossless_worker(sink: &Arc<Sink>, thread: &str) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(false)
        .thread_name(thread)
        .finish(SinkWriter(sink.clone()))
}

/// The daemon's logs. Dropping it flushes every queued line.
pub struct Logs {
    main: Arc<Sink>,
    access: Arc<Sink>,
    access_writer: NonBlocking,
    level: reload::Handle<LevelFilter, Registry>,
    /// Dropping a guard makes its worker write out everything queued, then stop.
    guards: Mutex<Option<[WorkerGuard; 2]>>,
}

impl Logs {
    /// Opens both logs and installs the global tracing subscriber.
    pub fn init(cfg: &Config) -> anyhow::Result<Logs> {
        let main = Sink::open(&cfg.log_file)
            .with_context(|| format!("cannot open logfile {}", describe(&cfg.log_file)))?;
        let access = Sink::open(&cfg.access_log).with_context(|| {
            format!(
                "cannot open [APIServer] accesslog {}",
                describe(&cfg.access_log)
            )
        })?;
        let (main_writer, main_guard) = lossless_worker(&main, "log-writer");
        let (access_writer, access_guard) = lossless_worker(&access, "accesslog-writer");
        let (level, handle) = reload::Layer::new(cfg.log_level);
        tracing_subscriber::registry()
            .with(level)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(main_writer),
            )
            .try_init()
            .context("a tracing subscriber is already installed")?;
        Ok(Logs {
            main,
            access,
            access_writer,
            level: handle,
            guards: Mutex::new(Some([main_guard, access_guard])),
        })
    }

    /// Applies the log keys of a reloaded config: level, log file and access log.
    pub fn apply(&self, cfg: &Config) -> anyhow::Result<()> {
        self.set_level(cfg.log_level)?;
        if self.main.target() != cfg.log_file {
            self.main
                .retarget(&cfg.log_file)
                .with_context(|| format!("cannot open logfile {}", describe(&cfg.log_file)))?;
        }
        if self.access.target() != cfg.access_log {
            self.access.retarget(&cfg.access_log).with_context(|| {
                format!(
                    "cannot open [APIServer] accesslog {}",
                    describe(&cfg.access_log)
                )
            })?;
        }
        Ok(())
    }

    /// Changes the level alone (the API's live override).
    pub fn set_level(&self, level: LevelFilter) -> anyhow::Result<()> {
        self.level
            .modify(|l| *l = level)
            .context("cannot change the log level")
    }

    /// Reopens every log file (SIGUSR1).
    pub fn reopen(&self) -> anyhow::Result<()> {
        for sink in [&self.main, &self.access] {
            sink.reopen()
                .with_context(|| format!("cannot reopen {}", describe(&sink.target())))?;
        }
        Ok(())
    }

    /// Writes out every queued line and stops the writer threads. Called once, at
    /// exit: the process ends right after, so later lines have nowhere to go.
    pub fn flush_and_stop(&self) {
        drop(self.guards.lock().unwrap_or_else(|p| p.into_inner()).take());
    }

    /// A handle for writing access-log lines.
    pub fn access_log(&self) -> AccessLog {
        AccessLog(self.access_writer.clone())
    }
}

/// Writes one JSON object per line into the access log, off the request's task.
#[derive(Clone)]
pub struct AccessLog(NonBlocking);

impl AccessLog {
    pub fn write(&self, entry: &serde_json::Value) {
        let mut line = entry.to_string();
        line.push('\n');
        // Lossless worker: this only fails once the worker is gone at shutdown.
        let _ = self.0.clone().write_all(line.as_bytes());
    }
}

fn describe(t: &LogTarget) -> String {
    match t {
        LogTarget::File(p) => p.display().to_string(),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_after_rename_splits_lines_between_files_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let sink = Sink::open(&LogTarget::File(path.clone())).unwrap();
        let mut w = SinkWriter(sink.clone());
        w.write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        w.write_all(b"two\n").unwrap(); // still the renamed file: not reopened yet
        sink.reopen().unwrap();
        w.write_all(b"three\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.log.1")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
    }

    #[test]
    fn failed_retarget_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let sink = Sink::open(&LogTarget::File(path.clone())).unwrap();
        let blocked = dir.path().join("file-not-dir");
        std::fs::write(&blocked, "").unwrap();
        assert!(sink
            .retarget(&LogTarget::File(blocked.join("x.log")))
            .is_err());
        SinkWriter(sink.clone()).write_all(b"kept\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "kept\n");
    }
}
