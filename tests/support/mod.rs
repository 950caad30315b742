//! Test support: start the real `jsipd` binary in a temporary install prefix and talk to
//! it over its real ports.
//!
//! Ports are never guessed: test configs listen on port 0 and the support reads the
//! addresses jsipd logs ("listening on ADDR for [APIServer] listen"). Every wait is on a
//! real condition (a log line, a process exit, a socket state) with a deadline, never a
//! bare sleep.

pub mod guest;
pub mod http;
pub mod kvm;
pub mod mjpeg;
pub mod webdriver;
pub mod ws;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The workspace root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Path of the freshly built `jsipd` binary. Builds it once per test process, so a test
/// run never exercises a stale binary.
pub fn jsipd_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "jsipd", "--bin", "jsipd"])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building jsipd failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| repo_root().join("target"), PathBuf::from);
        target.join("debug/jsipd")
    })
    .clone()
}

/// The target folder cargo builds into.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from)
}

/// Path of a freshly built plugin or fixture library, by its lib name (`echo`,
/// `chatroom`, `gpio`, `storage`, `hid`, `stream`, `serial`, `abi_1_1`, `abi_1_2`, `abi_next`, `not_a_plugin`). Builds them all
/// once per test process, with the plugins' own binaries (`jsipd-gadget`, see
/// [`plugin_bin`]).
pub fn plugin_lib(lib: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--lib", "--bins"])
            .args(["-p", "jsipd-echo", "-p", "jsipd-chatroom"])
            .args(["-p", "jsipd-gpio", "-p", "jsipd-storage", "-p", "jsipd-hid"])
            .args([
                "-p",
                "jsipd-stream",
                "-p",
                "jsipd-serial",
                "-p",
                "jsipd-nanokvm",
            ])
            .args([
                "-p",
                "jsipd-fixture-abi-1-1",
                "-p",
                "jsipd-fixture-abi-1-2",
                "-p",
                "jsipd-fixture-abi-next",
                "-p",
                "jsipd-fixture-not-a-plugin",
                "-p",
                "jsipd-fixture-early-alloc",
            ])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the plugins failed");
    });
    target_dir().join(format!("debug/lib{lib}.so"))
}

/// Path of a plugin package's binary (`jsipd-gadget`), built with the plugins.
pub fn plugin_bin(name: &str) -> PathBuf {
    plugin_lib("echo");
    target_dir().join("debug").join(name)
}

/// A temporary install prefix: `conf/`, `logs/`, removed when dropped.
pub struct Prefix {
    dir: tempfile::TempDir,
}

impl Prefix {
    /// A prefix whose `conf/jsipd.ini` is `ini`.
    pub fn with_config(ini: &str) -> Prefix {
        let p = Prefix {
            dir: tempfile::Builder::new()
                .prefix("jsipd-e2e-")
                .tempdir()
                .unwrap(),
        };
        std::fs::create_dir_all(p.path().join("conf")).unwrap();
        std::fs::create_dir_all(p.path().join("logs")).unwrap();
        std::fs::create_dir_all(p.path().join("plugins")).unwrap();
        p.write_config(ini);
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("conf/jsipd.ini")
    }

    pub fn write_config(&self, ini: &str) {
        std::fs::write(self.config_path(), ini).unwrap();
    }

    /// Copies the plugin library `lib` (see [`plugin_lib`]) to `plugins/FILE`, mode 0644,
    /// by rename (as pcompile does), so a loaded copy is never written over.
    pub fn add_plugin(&self, lib: &str, file: &str) {
        copy_plugin(&plugin_lib(lib), &self.path().join("plugins").join(file));
    }

    /// Writes `conf/PLUGIN/PLUGIN.ini`.
    pub fn write_plugin_conf(&self, plugin: &str, text: &str) {
        let dir = self.path().join("conf").join(plugin);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{plugin}.ini")), text).unwrap();
    }

    /// Runs `jsipd -p PREFIX ARGS…` to completion (`-t`, `-s`, `gencert`, or a start
    /// that is expected to fail).
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(jsipd_bin())
            .arg("-p")
            .arg(self.path())
            .args(args)
            .output()
            .unwrap()
    }
}

impl Prefix {
    /// Runs `jsipd -p PREFIX user ARGS…` with `stdin` as its input.
    pub fn user(&self, args: &[&str], stdin: &str) -> std::process::Output {
        use std::io::Write as _;
        let mut child = Command::new(jsipd_bin())
            .arg("-p")
            .arg(self.path())
            .arg("user")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A command that refuses its arguments exits without reading its input, and
        // writing to it then fails with a broken pipe. That is the command's right:
        // what it printed and its exit status are what the tests judge.
        match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.unwrap(),
        }
        child.wait_with_output().unwrap()
    }

    /// Adds a people's account (`jsipd user add NAME --role ROLE --password-stdin`).
    pub fn add_user(&self, name: &str, role: &str, password: &str) {
        let out = self.user(
            &["add", name, "--role", role, "--password-stdin"],
            &format!("{password}\n"),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Copies a library to `to` with mode 0644, through a temporary name and a rename.
pub fn copy_plugin(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// A config that logs to stdout and listens on loopback ports chosen by the kernel. Its
/// `/rtc` takes any userid (`auth = none`), as most tests' clients are programs with
/// made-up names; the people's port's own tests replace that line.
/// Polls `cond` until it holds, or panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn loopback_config(extra_top: &str) -> String {
    format!(
        "logfile = stdout\n{extra_top}\n[APIServer]\nlisten = 127.0.0.1:0\naccesslog = off\n[RTCServer]\nlisten = 127.0.0.1:0\nauth = none\n"
    )
}

/// Lines the daemon printed on stdout/stderr, shared with reader threads.
#[derive(Default)]
struct Output {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

pub struct Daemon {
    child: Child,
    output: Arc<Output>,
    /// Where the main log goes when it is a file; `None` when it is stdout.
    log_file: Option<PathBuf>,
    pub api: SocketAddr,
    pub rtc: Option<SocketAddr>,
}

pub const START_TIMEOUT: Duration = Duration::from_secs(20);

impl Daemon {
    /// Starts jsipd in `prefix` and waits until it logged that it started.
    pub fn start(prefix: &Prefix) -> Daemon {
        Daemon::start_with_log(prefix, None)
    }

    /// Like [`Daemon::start`], for a config whose `logfile` is `log_file`.
    pub fn start_with_log(prefix: &Prefix, log_file: Option<PathBuf>) -> Daemon {
        Daemon::start_in(prefix.path(), log_file)
    }

    /// Starts jsipd with `-p DIR` (any install tree).
    pub fn start_in(dir: &Path, log_file: Option<PathBuf>) -> Daemon {
        let mut child = Command::new(jsipd_bin())
            .arg("-p")
            .arg(dir)
            // A developer's RUST_BACKTRACE=1 makes each caught plugin panic take a
            // quarter second in a debug build (symbolizing), past the tests' 200 ms
            // transtimer; the daemon logs panics itself.
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn jsipd");
        let output = Arc::new(Output::default());
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    output.lines.lock().unwrap().push(line);
                    output.grew.notify_all();
                }
            });
        }
        let mut d = Daemon {
            child,
            output,
            log_file,
            api: "0.0.0.0:0".parse().unwrap(),
            rtc: None,
        };
        d.wait_log("started, pid", START_TIMEOUT);
        d.api = d.listening_on("[APIServer] listen").expect("API listener");
        d.rtc = d.listening_on("[RTCServer] listen");
        d
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn listening_on(&self, key: &str) -> Option<SocketAddr> {
        let suffix = format!(" for {key}");
        self.log().iter().find_map(|l| {
            let rest = l.split("listening on ").nth(1)?;
            rest.strip_suffix(&suffix)?.parse().ok()
        })
    }

    /// Everything logged so far (stdout+stderr, or the log file).
    pub fn log(&self) -> Vec<String> {
        match &self.log_file {
            Some(p) => std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect(),
            None => self.output.lines.lock().unwrap().clone(),
        }
    }

    /// What the process printed on stdout/stderr (whatever the log target).
    pub fn console(&self) -> Vec<String> {
        self.output.lines.lock().unwrap().clone()
    }

    /// Waits until some log line contains `needle`; returns that line.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_log_count(needle, 1, timeout)
    }

    /// Waits until `count` log lines contain `needle`; returns the last of them.
    pub fn wait_log_count(&self, needle: &str, count: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<String> = self
                .log()
                .into_iter()
                .filter(|l| l.contains(needle))
                .collect();
            if found.len() >= count {
                return found.last().unwrap().clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "no {count} log lines with {needle:?} within {timeout:?}; log:\n{}\nconsole:\n{}",
                self.log().join("\n"),
                self.console().join("\n")
            );
            // Stdout lines wake us at once; a log file is re-read every 20 ms.
            let lines = self.output.lines.lock().unwrap();
            let _ = self
                .output
                .grew
                .wait_timeout(lines, (deadline - now).min(Duration::from_millis(20)))
                .unwrap();
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill({sig})");
    }

    /// Waits for the process to exit; `None` if it is still running at the deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // No portable way to block on a child with a timeout; poll it finely.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failing test shows what the daemon said; a passing one stays quiet.
        if std::thread::panicking() {
            eprintln!(
                "--- jsipd {} console ---\n{}",
                self.pid(),
                self.console().join("\n")
            );
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
