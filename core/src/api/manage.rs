//! `apim.v1` and `slpm.v1`: loading, listing and deleting plugin APIs and SLPs.

use serde_json::Value;
use warp::http::StatusCode;

use super::{table, Answer};
use crate::app::App;
use crate::plugins::Refusal;

fn refused(r: Refusal) -> Answer {
    Answer::error(
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        r.reason,
    )
}

/// `file=` from a raw query string (percent-decoded); empty when absent.
fn file_param(query: &str) -> String {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "file")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn answered(result: Result<Value, Refusal>) -> Answer {
    match result {
        Ok(data) => {
            let text = listing_table(std::slice::from_ref(&data));
            Answer::ok(data, text)
        }
        Err(r) => refused(r),
    }
}

/// `GET /slpm/v1/slps`
pub fn slps(app: &App) -> Answer {
    let data = app.plugins.slps_view();
    let text = listing_table(data.as_array().map_or(&[][..], |a| a.as_slice()));
    Answer::ok(data, text)
}

/// `GET /apim/v1/apis`
pub fn apis(app: &App) -> Answer {
    let data = app.plugins.apis_view();
    let text = listing_table(data.as_array().map_or(&[][..], |a| a.as_slice()));
    Answer::ok(data, text)
}

pub async fn load_slp(app: &App, name: &str, query: &str) -> Answer {
    answered(app.plugins.load_slp(name, &file_param(query)).await)
}

pub async fn unload_slp(app: &App, name: &str) -> Answer {
    answered(app.plugins.unload_slp(name).await)
}

pub async fn load_api(app: &App, name: &str, query: &str) -> Answer {
    answered(app.plugins.load_api(name, &file_param(query)).await)
}

pub async fn unload_api(app: &App, name: &str) -> Answer {
    answered(app.plugins.unload_api(name).await)
}

/// gortc-style table: one row per generation. Entries have `name` and either
/// `generations` (listings) or `generation` (a load or delete answer).
fn listing_table(entries: &[Value]) -> String {
    let mut rows = vec![[
        "NAME", "GEN", "FILE", "LOADED", "STATE", "USING", "USED", "PANICS", "UNMAPPED",
    ]
    .map(String::from)
    .to_vec()];
    let cell = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for e in entries {
        let gens: Vec<&Value> = match (&e["generations"], &e["generation"]) {
            (Value::Array(a), _) => a.iter().collect(),
            (_, g @ Value::Object(_)) => vec![g],
            _ => Vec::new(),
        };
        for g in gens {
            rows.push(vec![
                cell(&e["name"]),
                cell(&g["generation"]),
                cell(&g["file"]),
                cell(&g["loaded"]),
                cell(&g["state"]),
                cell(&g["using"]),
                cell(&g["used"]),
                cell(&g["panics"]),
                cell(&g["unmapped"]),
            ]);
        }
    }
    table(&rows)
}
