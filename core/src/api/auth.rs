//! The API key demanded on listeners beyond loopback.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use warp::http::{header, HeaderMap};

use crate::app::App;
use crate::config::Config;

/// True when the request carries the current API key.
pub fn authorized(app: &App, headers: &HeaderMap) -> bool {
    let Some(key) = app.api_key() else {
        return false;
    };
    let given = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)?
                .to_str()
                .ok()?
                .strip_prefix("Bearer ")
        });
    given.is_some_and(|g| constant_time_eq(g.trim().as_bytes(), key.as_bytes()))
}

/// Compares without an early exit, so response timing does not reveal how much of a
/// guessed key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Returns the API key when some API listener is beyond loopback: read from
/// `apikey_file`, or generated into it (mode 0600) when the file does not exist.
/// `None` when every API listener is on loopback.
pub fn ensure_key(cfg: &Config) -> anyhow::Result<Option<Arc<str>>> {
    let exposed = cfg
        .api
        .endpoints()
        .iter()
        .any(|ep| !ep.addr.ip().is_loopback());
    if !exposed {
        return Ok(None);
    }
    secret_file(
        &cfg.api_key_file,
        "[APIServer] apikey_file",
        "the API listens beyond loopback",
    )
    .map(|k| Some(Arc::from(k.as_str())))
}

/// Reads a secret (an API key, the RTC token secret) from `path`, or generates a random
/// one into it (mode 0600) when the file does not exist, logging `why` and where.
pub fn secret_file(path: &Path, key: &str, why: &str) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let secret = text.trim();
            if secret.len() < 16 {
                bail!(
                    "{key}: {} holds a secret shorter than 16 characters",
                    path.display()
                );
            }
            Ok(secret.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = generate()?;
            write_key(path, &secret)?;
            tracing::warn!(
                "{why} and had no secret: generated one into {} (mode 0600)",
                path.display()
            );
            Ok(secret)
        }
        Err(e) => Err(e).with_context(|| format!("{key}: cannot read {}", path.display())),
    }
}

fn generate() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no randomness for the API key: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_key(path: &Path, key: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::tls::write_private(path, format!("{key}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn loopback_needs_no_key_and_exposed_generates_one_once() {
        let dir = tempfile::tempdir().unwrap();
        let local =
            Config::from_ini_str("[APIServer]\nlisten=127.0.0.1:0\n", None, dir.path()).unwrap();
        assert!(ensure_key(&local).unwrap().is_none());
        let exposed = Config::from_ini_str("[APIServer]\nlisten=:0\n", None, dir.path()).unwrap();
        let first = ensure_key(&exposed).unwrap().unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(
            ensure_key(&exposed).unwrap().unwrap(),
            first,
            "the stored key is reused"
        );
    }
}
