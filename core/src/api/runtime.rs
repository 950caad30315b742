//! `runtime.v1`: what an operator asks a running daemon about itself.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use serde_json::{json, Value};
use warp::http::StatusCode;

use super::{table, Answer};
use crate::app::App;

/// `GET /runtime/v1/stats`
pub fn stats(app: &App) -> Answer {
    let mut data = app.stats.to_json();
    let extra = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_s": app.started.elapsed().as_secs_f64(),
        "rss_kib": rss_kib(),
    });
    if let (Value::Object(d), Value::Object(e)) = (&mut data, extra) {
        d.extend(e);
    }
    let mut rows = vec![vec!["stat".to_string(), "value".to_string()]];
    flatten("", &data, &mut rows);
    Answer::ok(data, table(&rows))
}

fn flatten(prefix: &str, v: &Value, rows: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, v, rows);
            }
        }
        Value::Null => rows.push(vec![prefix.to_string(), "-".into()]),
        other => rows.push(vec![prefix.to_string(), other.to_string()]),
    }
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `GET /runtime/v1/stack`: every async task's stack (tokio's task dump) and every
/// thread with its state, to find what is stuck in a running daemon.
/// The JSIP stack's view: connections, dialogs, transactions (asked of the node task).
pub async fn jstack(app: &App) -> Answer {
    let Some(data) = app.node.snapshot().await else {
        return Answer::error(
            warp::http::StatusCode::SERVICE_UNAVAILABLE,
            "the JSIP node has stopped",
        );
    };
    let mut text = String::new();
    let cell = |v: &Value, k: &str| match &v[k] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let section = |title: &str, list: &Value, cols: &[&str], text: &mut String| {
        let items = list.as_array().map(Vec::as_slice).unwrap_or_default();
        text.push_str(&format!("{title}: {}\n", items.len()));
        let mut rows = vec![cols.iter().map(|c| c.to_string()).collect::<Vec<_>>()];
        rows.extend(
            items
                .iter()
                .map(|i| cols.iter().map(|c| cell(i, c)).collect()),
        );
        text.push_str(&table(&rows));
        text.push('\n');
    };
    section(
        "connections",
        &data["connections"],
        &["name", "state", "remote", "queue", "for_ms"],
        &mut text,
    );
    section(
        "dialogs",
        &data["dialogs"],
        &["id", "peer", "state", "slp", "instance", "age_ms"],
        &mut text,
    );
    section(
        "transactions",
        &data["transactions"],
        &["dialog", "peer", "cseq", "method", "direction", "age_ms"],
        &mut text,
    );
    Answer::ok(data, text)
}

/// `DELETE /runtime/v1/connections?name=NAME`: closes that JSIP socket with 4001. The
/// name is then away as after a network drop, and its client may come back within
/// `reconnect_window`; what a plugin does on a drop (hid releases held keys) happens now.
pub async fn disconnect(app: &App, query: &str) -> Answer {
    let Some(name) = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.into_owned())
        .filter(|n| !n.is_empty())
    else {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            "say which: ?name=NAME (GET /runtime/v1/jstack lists the connections)",
        );
    };
    match app.node.disconnect(name.as_str().into()).await {
        Some(true) => {
            tracing::info!("JSIP socket {name} disconnected by an operator");
            Answer::ok(
                json!({ "disconnected": name }),
                format!("disconnected {name}\n"),
            )
        }
        Some(false) => Answer::error(
            StatusCode::NOT_FOUND,
            format!("no JSIP socket named {name} is connected"),
        ),
        None => Answer::error(StatusCode::SERVICE_UNAVAILABLE, "the JSIP node has stopped"),
    }
}

pub async fn stack() -> Answer {
    let threads = threads();
    let tasks = tasks().await;
    let mut text = String::new();
    match &tasks {
        Ok(list) => {
            text.push_str(&format!("tasks (tokio task dump): {}\n\n", list.len()));
            for t in list {
                text.push_str(&format!(
                    "task {}\n{}\n\n",
                    t["id"].as_str().unwrap_or("?"),
                    t["trace"].as_str().unwrap_or("")
                ));
            }
        }
        Err(why) => text.push_str(&format!("tasks: unavailable ({why})\n\n")),
    }
    let mut rows = vec![vec!["tid".to_string(), "state".into(), "thread".into()]];
    for t in &threads {
        rows.push(vec![
            t["tid"].to_string(),
            t["state"].as_str().unwrap_or("").into(),
            t["name"].as_str().unwrap_or("").into(),
        ]);
    }
    text.push_str(&format!("threads: {}\n", threads.len()));
    text.push_str(&table(&rows));
    let (tasks, tasks_error) = match tasks {
        Ok(t) => (Value::Array(t), Value::Null),
        Err(e) => (Value::Null, Value::String(e)),
    };
    Answer::ok(
        json!({ "tasks": tasks, "tasks_error": tasks_error, "threads": threads }),
        text,
    )
}

/// How long a task dump may take before we give up on it: it has to wait until every
/// worker reaches a yield point, and a worker stuck in blocking code never does.
const DUMP_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(all(
    tokio_unstable,
    target_os = "linux",
    any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")
))]
async fn tasks() -> Result<Vec<Value>, String> {
    let handle = tokio::runtime::Handle::current();
    let dump = tokio::time::timeout(DUMP_TIMEOUT, handle.dump())
        .await
        .map_err(|_| format!("the task dump did not finish within {DUMP_TIMEOUT:?}"))?;
    Ok(dump
        .tasks()
        .iter()
        .map(|t| json!({ "id": t.id().to_string(), "trace": t.trace().to_string() }))
        .collect())
}

#[cfg(not(all(
    tokio_unstable,
    target_os = "linux",
    any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")
)))]
async fn tasks() -> Result<Vec<Value>, String> {
    let _ = DUMP_TIMEOUT;
    Err("this build has no tokio task dump (needs --cfg tokio_unstable on Linux x86/x86_64/aarch64)".into())
}

/// Threads from `/proc/self/task`: tid, name and scheduler state.
fn threads() -> Vec<Value> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut out: Vec<(u64, Value)> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let tid: u64 = e.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(e.path().join("comm"))
                .unwrap_or_default()
                .trim()
                .to_string();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // The state letter follows the ")" that closes the (possibly spaced) name.
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').next())
                .unwrap_or("?");
            let state = match state {
                "R" => "running",
                "S" => "sleeping",
                "D" => "disk-wait",
                "T" | "t" => "stopped",
                "Z" => "zombie",
                other => other,
            };
            Some((tid, json!({ "tid": tid, "name": name, "state": state })))
        })
        .collect();
    out.sort_by_key(|(tid, _)| *tid);
    out.into_iter().map(|(_, v)| v).collect()
}

/// Largest body `PUT /runtime/v1/loglevel` reads; the real one is ~20 bytes.
const LOGLEVEL_BODY_MAX: usize = 1024;

/// `PUT /runtime/v1/loglevel` with `{"level":"debug"}`: changes the level until the
/// next SIGHUP, which goes back to the config file's `loglevel`.
pub async fn set_loglevel<S, B>(app: &Arc<App>, mut body: S) -> Answer
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: bytes::Buf,
{
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                return Answer::error(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
            }
        };
        if bytes.len() + chunk.remaining() > LOGLEVEL_BODY_MAX {
            return Answer::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body over {LOGLEVEL_BODY_MAX} bytes"),
            );
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            bytes.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    let level = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) => match v.get("level").and_then(Value::as_str) {
            Some(l) => l.to_string(),
            None => {
                return Answer::error(
                    StatusCode::BAD_REQUEST,
                    "body must be {\"level\": \"debug\"} (a string field 'level')",
                )
            }
        },
        Err(e) => return Answer::error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
    };
    let filter = match crate::config::parse_level(&level) {
        Ok(f) => f,
        Err(e) => return Answer::error(StatusCode::BAD_REQUEST, e),
    };
    if let Err(e) = app.logs.set_level(filter) {
        return Answer::error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
    }
    tracing::warn!(
        "log level set to {level} through the API (the next SIGHUP restores the config's loglevel)"
    );
    Answer::ok(json!({ "level": level }), format!("log level: {level}\n"))
}
