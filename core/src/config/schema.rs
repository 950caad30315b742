//! The table of every key `jsipd.ini` may hold.
//!
//! Keeping the schema as data (not as scattered `get()` calls) lets one loop reject
//! unknown keys, lets SIGHUP report which changed keys need a restart, and lets a test
//! check that the shipped `conf/jsipd.ini` documents every key with its real default.

/// One config key.
#[derive(Debug)]
pub struct Key {
    /// `None` for top-level keys (before any `[Section]`).
    pub section: Option<&'static str>,
    pub name: &'static str,
    /// The built-in default, in the same syntax a person would write in the file.
    pub default: &'static str,
    /// Whether SIGHUP applies a change to this key without a restart.
    pub live: bool,
}

const fn key(
    section: Option<&'static str>,
    name: &'static str,
    default: &'static str,
    live: bool,
) -> Key {
    Key {
        section,
        name,
        default,
        live,
    }
}

const MAIN: Option<&str> = Some("Main");
const API: Option<&str> = Some("APIServer");
const RTC: Option<&str> = Some("RTCServer");
const STACK: Option<&str> = Some("JSIPStack");
const PLUGINS: Option<&str> = Some("Plugins");

/// Every key, in the order `conf/jsipd.ini` documents them.
pub const KEYS: &[Key] = &[
    key(None, "loglevel", "info", true),
    key(None, "logfile", "logs/jsipd.log", true),
    key(MAIN, "stop_timeout", "5s", true),
    key(API, "listen", "127.0.0.1:2539", false),
    key(API, "tlslisten", "", false),
    key(API, "cert", "certs/jsipd.crt", true),
    key(API, "key", "certs/jsipd.key", true),
    key(API, "apikey_file", "conf/api.key", true),
    key(API, "accesslog", "logs/access.log", true),
    key(RTC, "listen", ":8080", false),
    key(RTC, "tlslisten", "", false),
    key(RTC, "cert", "certs/jsipd.crt", true),
    key(RTC, "key", "certs/jsipd.key", true),
    key(RTC, "location", "/rtc", false),
    key(RTC, "reconnect_window", "30s", true),
    key(RTC, "ping_interval", "30s", true),
    key(RTC, "max_frame", "64k", true),
    key(RTC, "auth", "session, token", true),
    key(RTC, "auth_secret_file", "conf/rtc.secret", true),
    key(RTC, "users_file", "conf/users", true),
    key(RTC, "session_idle", "1h", true),
    key(RTC, "lockout", "5m", true),
    key(STACK, "realm", "", true),
    key(STACK, "transtimer", "5s", true),
    key(STACK, "prtimer", "60s", true),
    key(STACK, "sessiontimer", "600s", true),
    key(STACK, "qsize", "1024", true),
    key(STACK, "conntimeout", "5s", true),
    key(STACK, "retry", "2", true),
    key(STACK, "builtin_slps", "", false),
    key(PLUGINS, "dir", "plugins", false),
    key(PLUGINS, "drain_timeout", "60s", true),
    key(PLUGINS, "state_file", "conf/.plugins", false),
];

/// Position of a key in [`KEYS`], if it exists.
pub fn index(section: Option<&str>, name: &str) -> Option<usize> {
    KEYS.iter()
        .position(|k| k.section == section && k.name == name)
}

/// `[Section] key`, or `key` for the top level: how keys are named in messages.
pub fn display(section: Option<&str>, name: &str) -> String {
    match section {
        Some(s) => format!("[{s}] {name}"),
        None => name.to_string(),
    }
}

/// Comma-separated known section names, for the "unknown section" message.
pub fn section_names() -> String {
    let mut names: Vec<&str> = KEYS.iter().filter_map(|k| k.section).collect();
    names.dedup();
    names
        .iter()
        .map(|s| format!("[{s}]"))
        .collect::<Vec<_>>()
        .join(", ")
}
