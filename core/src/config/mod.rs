//! `conf/jsipd.ini`: the schema, parsing and validation.
//!
//! The file is read with `rust-ini`, then every key is checked against
//! [`schema::KEYS`]. That table is the one list of what may appear in the file:
//! unknown sections and keys are errors (a typo must not silently fall back to a
//! default), and every error names the file, the line and the key, like `nginx -t`.
//!
//! A [`Config`] is immutable. SIGHUP builds a new one and the daemon swaps it in whole,
//! so a broken file never leaves the server half-reconfigured.

mod locate;
pub mod schema;
mod value;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ini::{Ini, ParseOption};
use tracing::level_filters::LevelFilter;

pub use value::{level as parse_level, LogTarget, RtcAuth};

/// One problem in a config file, with enough context for a person to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or `None` for built-in defaults.
    pub file: Option<PathBuf>,
    /// 1-based line number, when the problem sits on a line.
    pub line: Option<usize>,
    /// `[Section] key` (or `key` for the top level), when a key is at fault.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(p) => write!(f, "{}", p.display())?,
            None => write!(f, "<built-in defaults>")?,
        }
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one file; a config is accepted only when there is none.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// A server section (`[APIServer]`, `[RTCServer]`): where it listens and its TLS files.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenConfig {
    pub section: &'static str,
    pub listen: Option<SocketAddr>,
    pub tls_listen: Option<SocketAddr>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One address to bind, with the config key that asked for it (for logs and errors).
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub tls: bool,
    pub key: String,
}

impl ListenConfig {
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let mut out = Vec::new();
        for (addr, tls, name) in [
            (self.listen, false, "listen"),
            (self.tls_listen, true, "tlslisten"),
        ] {
            if let Some(addr) = addr {
                out.push(Endpoint {
                    addr,
                    tls,
                    key: format!("[{}] {name}", self.section),
                });
            }
        }
        out
    }
}

/// `[RTCServer]` keys beyond the listener: the WebSocket session.
#[derive(Debug, Clone, PartialEq)]
pub struct RtcConfig {
    pub reconnect_window: Duration,
    pub ping_interval: Duration,
    pub max_frame: usize,
    pub auth: value::RtcAuth,
    pub auth_secret_file: PathBuf,
    /// Accounts of the people's port (`jsipd user …`).
    pub users_file: PathBuf,
    /// A session unused this long is gone.
    pub session_idle: Duration,
    /// How long five failed sign-ins in a row lock a user out (per client address).
    pub lockout: Duration,
}

/// `[JSIPStack]`: timers and queues of the JSIP stack and outbound dialing.
#[derive(Debug, Clone, PartialEq)]
pub struct JsipConfig {
    /// This node's name toward other nodes; empty means the host name.
    pub realm: String,
    pub transtimer: Duration,
    pub prtimer: Duration,
    pub sessiontimer: Duration,
    pub qsize: usize,
    pub conntimeout: Duration,
    pub retry: u32,
    pub builtin_slps: Vec<String>,
}

/// `[Plugins]`: where plugins come from and how generations retire.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginsConfig {
    /// The only folder `file=` may name files in.
    pub dir: PathBuf,
    /// How long an old generation may take to finish its dialogs and requests before
    /// they are ended for it.
    pub drain_timeout: Duration,
    /// The loaded set, restored at start.
    pub state_file: PathBuf,
}

/// The whole validated configuration. Relative paths are already resolved against the
/// install prefix, so nothing downstream needs to know where the daemon was started.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this came from; `None` when running on built-in defaults.
    pub source: Option<PathBuf>,
    pub prefix: PathBuf,
    pub log_level: LevelFilter,
    pub log_file: LogTarget,
    pub stop_timeout: Duration,
    pub api: ListenConfig,
    /// File holding the key that non-loopback API listeners demand.
    pub api_key_file: PathBuf,
    pub access_log: LogTarget,
    pub rtc_listen: ListenConfig,
    /// URL path of the WebSocket endpoint, e.g. `/rtc`.
    pub rtc_location: String,
    pub rtc: RtcConfig,
    pub stack: JsipConfig,
    pub plugins: PluginsConfig,
    /// Every key's text as written (or its default), in [`schema::KEYS`] order; lets
    /// SIGHUP tell which keys changed without comparing each field by hand.
    raw: Vec<String>,
}

impl Config {
    /// The configuration used when there is no config file at all.
    pub fn defaults(prefix: &Path) -> Config {
        Config::from_ini_str("", None, prefix).expect("built-in defaults are valid")
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path, prefix: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: Some(path.to_owned()),
                line: None,
                key: None,
                message: format!("cannot read config file: {e}"),
            }])
        })?;
        Config::from_ini_str(&text, Some(path), prefix)
    }

    /// Parses and validates config text. `file` is only used in messages.
    pub fn from_ini_str(
        text: &str,
        file: Option<&Path>,
        prefix: &Path,
    ) -> Result<Config, ConfigErrors> {
        let mut p = Parser {
            file,
            lines: locate::Locator::new(text),
            raw: schema::KEYS.iter().map(|k| k.default.to_string()).collect(),
            errors: Vec::new(),
        };
        let opts = ParseOption {
            enabled_quote: true,
            // Backslashes stay literal so that paths are never mangled.
            enabled_escape: false,
            ..ParseOption::default()
        };
        let syntax: Vec<ConfigError> = p
            .lines
            .syntax_errors()
            .into_iter()
            .map(|(line, msg)| p.error(Some(line), None, msg))
            .collect();
        if !syntax.is_empty() {
            return Err(ConfigErrors(syntax));
        }
        let ini = Ini::load_from_str_opt(text, opts)
            .map_err(|e| ConfigErrors(vec![p.error(Some(e.line), None, e.msg.to_string())]))?;
        p.collect(&ini);

        let mut cfg = Config {
            source: file.map(Path::to_owned),
            prefix: prefix.to_owned(),
            log_level: p.get(None, "loglevel", value::level),
            log_file: p.get(None, "logfile", |v| value::log_target(v, prefix, false)),
            stop_timeout: p.get(Some("Main"), "stop_timeout", value::duration),
            api: p.server("APIServer", prefix),
            api_key_file: p.get(Some("APIServer"), "apikey_file", |v| value::path(v, prefix)),
            access_log: p.get(Some("APIServer"), "accesslog", |v| {
                value::log_target(v, prefix, true)
            }),
            rtc_listen: p.server("RTCServer", prefix),
            rtc_location: p.get(Some("RTCServer"), "location", value::location),
            rtc: RtcConfig {
                reconnect_window: p.get(Some("RTCServer"), "reconnect_window", value::duration),
                ping_interval: p.get(Some("RTCServer"), "ping_interval", value::duration),
                max_frame: p.get(Some("RTCServer"), "max_frame", value::size),
                auth: p.get(Some("RTCServer"), "auth", value::rtc_auth),
                auth_secret_file: p.get(Some("RTCServer"), "auth_secret_file", |v| {
                    value::path(v, prefix)
                }),
                users_file: p.get(Some("RTCServer"), "users_file", |v| value::path(v, prefix)),
                session_idle: p.get(Some("RTCServer"), "session_idle", value::duration),
                lockout: p.get(Some("RTCServer"), "lockout", value::duration),
            },
            stack: JsipConfig {
                realm: p.get(Some("JSIPStack"), "realm", |v| Ok(v.to_string())),
                transtimer: p.get(Some("JSIPStack"), "transtimer", value::duration),
                prtimer: p.get(Some("JSIPStack"), "prtimer", value::duration),
                sessiontimer: p.get(Some("JSIPStack"), "sessiontimer", value::duration),
                qsize: p.get(Some("JSIPStack"), "qsize", |v| value::number(v, 1, 1 << 20)) as usize,
                conntimeout: p.get(Some("JSIPStack"), "conntimeout", value::duration),
                retry: p.get(Some("JSIPStack"), "retry", |v| value::number(v, 0, 100)) as u32,
                builtin_slps: p.get(Some("JSIPStack"), "builtin_slps", |v| {
                    value::names(v, crate::slps::NAMES)
                }),
            },
            plugins: PluginsConfig {
                dir: p.get(Some("Plugins"), "dir", |v| value::path(v, prefix)),
                drain_timeout: p.get(Some("Plugins"), "drain_timeout", value::duration),
                state_file: p.get(Some("Plugins"), "state_file", |v| value::path(v, prefix)),
            },
            raw: Vec::new(),
        };
        if p.errors.is_empty() {
            cfg.raw = p.raw;
            Ok(cfg)
        } else {
            Err(ConfigErrors(p.errors))
        }
    }

    #[cfg(test)]
    fn with_source(mut self, source: Option<PathBuf>) -> Config {
        self.source = source;
        self
    }

    /// The listen section named `section` (`APIServer` or `RTCServer`).
    pub fn server(&self, section: &str) -> Option<&ListenConfig> {
        [&self.api, &self.rtc_listen]
            .into_iter()
            .find(|s| s.section == section)
    }

    /// Changed keys that SIGHUP cannot apply live (listen addresses, for example),
    /// as `[Section] key` names.
    pub fn restart_needed(&self, new: &Config) -> Vec<String> {
        self.changed_keys(new)
            .filter(|k| !k.live)
            .map(|k| schema::display(k.section, k.name))
            .collect()
    }

    /// Every key whose value differs between `self` and `new`.
    pub fn changed_keys<'a>(
        &'a self,
        new: &'a Config,
    ) -> impl Iterator<Item = &'static schema::Key> + 'a {
        schema::KEYS
            .iter()
            .zip(self.raw.iter().zip(&new.raw))
            .filter(|(_, (a, b))| a != b)
            .map(|(k, _)| k)
    }
}

/// Accumulates raw values and every error, so one run of `jsipd -t` reports them all.
struct Parser<'a> {
    file: Option<&'a Path>,
    lines: locate::Locator<'a>,
    raw: Vec<String>,
    errors: Vec<ConfigError>,
}

impl Parser<'_> {
    fn error(&self, line: Option<usize>, key: Option<String>, message: String) -> ConfigError {
        ConfigError {
            file: self.file.map(Path::to_owned),
            line,
            key,
            message,
        }
    }

    /// Copies every key of the file into `raw`, rejecting unknown and repeated keys.
    fn collect(&mut self, ini: &Ini) {
        let mut seen = std::collections::HashSet::new();
        for (section, props) in ini.iter() {
            if let Some(s) = section {
                if !schema::KEYS.iter().any(|k| k.section == Some(s)) {
                    let e = self.error(
                        self.lines.section(s),
                        Some(format!("[{s}]")),
                        format!("unknown section (known: {})", schema::section_names()),
                    );
                    self.errors.push(e);
                    continue;
                }
            }
            for (name, value) in props.iter() {
                if !seen.insert((section, name)) {
                    continue; // a repeated key: reported once, below
                }
                let shown = schema::display(section, name);
                let at = self.lines.key(section, name);
                match schema::index(section, name) {
                    None => {
                        let e = self.error(at.first().copied(), Some(shown), "unknown key".into());
                        self.errors.push(e);
                    }
                    Some(_) if at.len() > 1 => {
                        let msg = format!("set again (first set on line {})", at[0]);
                        let e = self.error(at.get(1).copied(), Some(shown), msg);
                        self.errors.push(e);
                    }
                    Some(i) => self.raw[i] = value.trim().to_string(),
                }
            }
        }
    }

    /// Parses one key's value; on error records it and returns the default's value.
    fn get<T>(
        &mut self,
        section: Option<&str>,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        let i = schema::index(section, name).expect("key is in the schema");
        match parse(&self.raw[i]) {
            Ok(v) => v,
            Err(message) => {
                let line = self.lines.key(section, name).first().copied();
                let e = self.error(line, Some(schema::display(section, name)), message);
                self.errors.push(e);
                parse(schema::KEYS[i].default).expect("defaults parse")
            }
        }
    }

    fn server(&mut self, section: &'static str, prefix: &Path) -> ListenConfig {
        let s = Some(section);
        ListenConfig {
            section,
            listen: self.get(s, "listen", value::listen),
            tls_listen: self.get(s, "tlslisten", value::listen),
            cert: self.get(s, "cert", |v| value::path(v, prefix)),
            key: self.get(s, "key", |v| value::path(v, prefix)),
        }
    }
}

#[cfg(test)]
mod tests;
