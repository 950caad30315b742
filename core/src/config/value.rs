//! Parsers for the value syntaxes used in `jsipd.ini`. Each returns a message that
//! says what was expected, so the caller only has to add the file, line and key.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::level_filters::LevelFilter;

/// Where a log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Off,
    Stdout,
    Stderr,
    File(PathBuf),
}

/// `5s`, `250ms`, `2m`, `1h`; a bare number is seconds. Millisecond precision lets
/// tests shorten every timer.
pub fn duration(v: &str) -> Result<Duration, String> {
    let bad = || format!("'{v}' is not a duration (examples: 5s, 250ms, 2m, 1h)");
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(bad()),
    };
    ms.map(Duration::from_millis).ok_or_else(bad)
}

/// A listen address: `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT`, `:PORT` or `*:PORT`
/// (all IPv4 interfaces), or empty for "do not listen". Host names other than
/// localhost are refused: resolving at start-up makes the bound address depend on DNS.
pub fn listen(v: &str) -> Result<Option<SocketAddr>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| {
        format!(
            "'{v}' is not a listen address ({why}; examples: 127.0.0.1:2539, :8080, [::1]:2539)"
        )
    };
    let (host, port) = v.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
    let ip: IpAddr = match host {
        "" | "*" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| bad("host must be an IP address"))?,
    };
    Ok(Some(SocketAddr::new(ip, port)))
}

pub fn level(v: &str) -> Result<LevelFilter, String> {
    match v.to_ascii_lowercase().as_str() {
        "off" => Ok(LevelFilter::OFF),
        "error" => Ok(LevelFilter::ERROR),
        "warn" => Ok(LevelFilter::WARN),
        "info" => Ok(LevelFilter::INFO),
        "debug" => Ok(LevelFilter::DEBUG),
        "trace" => Ok(LevelFilter::TRACE),
        _ => Err(format!(
            "'{v}' is not a log level (off, error, warn, info, debug, trace)"
        )),
    }
}

/// `stdout`, `stderr`, `off` (where allowed) or a file path.
pub fn log_target(v: &str, prefix: &Path, allow_off: bool) -> Result<LogTarget, String> {
    match v {
        "stdout" => Ok(LogTarget::Stdout),
        "stderr" => Ok(LogTarget::Stderr),
        "off" if allow_off => Ok(LogTarget::Off),
        "" => Err(format!(
            "empty; use {}stdout, stderr or a file path",
            if allow_off { "off, " } else { "" }
        )),
        p => Ok(LogTarget::File(path(p, prefix)?)),
    }
}

/// A path; relative ones resolve against the install prefix.
pub fn path(v: &str, prefix: &Path) -> Result<PathBuf, String> {
    if v.is_empty() {
        return Err("empty path".into());
    }
    let p = Path::new(v);
    Ok(if p.is_absolute() {
        p.to_owned()
    } else {
        prefix.join(p)
    })
}

/// The WebSocket URL path: absolute, no query, no spaces.
pub fn location(v: &str) -> Result<String, String> {
    if !v.starts_with('/') || v.contains(['?', '#', ' ']) {
        return Err(format!(
            "'{v}' is not a URL path (it must start with '/', e.g. /rtc)"
        ));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert!(duration("").is_err());
        assert!(duration("5 sec").is_err());
        assert!(duration("-1s").is_err());
        assert!(duration("99999999999999999h").is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            listen(":8080").unwrap(),
            Some("0.0.0.0:8080".parse().unwrap())
        );
        assert_eq!(
            listen("*:8080").unwrap(),
            Some("0.0.0.0:8080".parse().unwrap())
        );
        assert_eq!(
            listen("localhost:1").unwrap(),
            Some("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(
            listen("[::1]:2539").unwrap(),
            Some("[::1]:2539".parse().unwrap())
        );
        assert_eq!(listen("").unwrap(), None);
        assert!(listen("8080").is_err());
        assert!(listen("example.com:80").is_err());
        assert!(listen("127.0.0.1:99999").is_err());
    }

    #[test]
    fn targets() {
        let pre = Path::new("/opt/j");
        assert_eq!(log_target("stdout", pre, false), Ok(LogTarget::Stdout));
        assert_eq!(
            log_target("logs/a.log", pre, false),
            Ok(LogTarget::File("/opt/j/logs/a.log".into()))
        );
        assert_eq!(
            log_target("/var/log/a", pre, false),
            Ok(LogTarget::File("/var/log/a".into()))
        );
        assert_eq!(log_target("off", pre, true), Ok(LogTarget::Off));
        assert_eq!(
            log_target("off", pre, false),
            Ok(LogTarget::File("/opt/j/off".into()))
        );
        assert!(log_target("", pre, true).is_err());
    }
}

/// A byte size: `65536`, `64k`, `1m` (k and m are 1024 and 1024², either case).
pub fn size(v: &str) -> Result<usize, String> {
    let bad = || format!("'{v}' is not a size in bytes (examples: 65536, 64k, 1m)");
    let lower = v.to_ascii_lowercase();
    let (num, mult) = match lower.strip_suffix('k') {
        Some(n) => (n, 1024),
        None => match lower.strip_suffix('m') {
            Some(n) => (n, 1024 * 1024),
            None => (lower.as_str(), 1),
        },
    };
    let n: usize = num.trim().parse().map_err(|_| bad())?;
    n.checked_mul(mult).filter(|n| *n > 0).ok_or_else(bad)
}

/// A whole number within `min..=max`.
pub fn number(v: &str, min: u64, max: u64) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("'{v}' is not a whole number from {min} to {max}")),
    }
}

/// How WebSocket clients may prove who they are: any of the listed ways will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtcAuth {
    /// A signed-in person's session cookie; the JSIP name is then `USER~TAB`.
    pub session: bool,
    /// A token bound to the userid (`jsipd token USERID`), for programs.
    pub token: bool,
    /// Nothing: any userid is taken as given (a closed network, tests, benchmarks).
    pub none: bool,
}

/// `session, token`: a comma-separated list of the ways `/rtc` accepts.
pub fn rtc_auth(v: &str) -> Result<RtcAuth, String> {
    let mut auth = RtcAuth::default();
    for way in v.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match way {
            "session" => auth.session = true,
            "token" => auth.token = true,
            "none" => auth.none = true,
            _ => {
                return Err(format!(
                    "'{way}' is not an auth mode (session, token, none; a list takes several)"
                ))
            }
        }
    }
    if auth == RtcAuth::default() {
        return Err("name at least one of session, token, none".into());
    }
    Ok(auth)
}

/// Comma-separated names of compiled-in SLPs, each from `known`.
pub fn names(v: &str, known: &[&str]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for n in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !known.contains(&n) {
            return Err(format!(
                "unknown compiled-in SLP '{n}' (known: {})",
                known.join(", ")
            ));
        }
        if !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    }
    Ok(out)
}
