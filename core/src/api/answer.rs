//! The one shape every API answer takes: `{"code":0,"msg":"OK","data":…}` with an
//! honest HTTP status, or readable text when the client asks for `text/plain`
//! (people at a terminal, as gortc printed).

use serde_json::{json, Value};
use warp::http::{header, HeaderValue, StatusCode};

use crate::serve::Response;

/// Output format chosen from the request's `Accept` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

impl Format {
    /// Text only when the client names `text/plain` first; `*/*` (curl's default)
    /// and anything else get JSON.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept.and_then(|a| a.split(',').next()) {
            Some(first) if first.trim().starts_with("text/plain") => Format::Text,
            _ => Format::Json,
        }
    }
}

/// A success or an error, renderable as JSON or text.
pub struct Answer {
    status: StatusCode,
    msg: String,
    data: Value,
    text: Option<String>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Answer {
    /// 200 with `data`; `text` is what `Accept: text/plain` shows.
    pub fn ok(data: Value, text: String) -> Answer {
        Answer {
            status: StatusCode::OK,
            msg: "OK".into(),
            data,
            text: Some(text),
            headers: Vec::new(),
        }
    }

    /// An error: `code` is the HTTP status, `msg` the reason a person can act on.
    pub fn error(status: StatusCode, reason: impl Into<String>) -> Answer {
        Answer {
            status,
            msg: reason.into(),
            data: Value::Null,
            text: None,
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: header::HeaderName, value: &'static str) -> Answer {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    pub fn render(self, format: Format) -> Response {
        let code = if self.status.is_success() {
            0
        } else {
            self.status.as_u16()
        };
        let (body, content_type) = match format {
            Format::Json => {
                let mut s = json!({ "code": code, "msg": self.msg, "data": self.data }).to_string();
                s.push('\n');
                (s, "application/json")
            }
            Format::Text => {
                let s = match self.text {
                    Some(t) if self.status.is_success() => t,
                    _ => format!(
                        "{} {}: {}\n",
                        self.status.as_u16(),
                        self.status.canonical_reason().unwrap_or(""),
                        self.msg
                    ),
                };
                (s, "text/plain; charset=utf-8")
            }
        };
        let mut resp = Response::new(body.into());
        *resp.status_mut() = self.status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        for (name, value) in self.headers {
            resp.headers_mut().insert(name, value);
        }
        resp
    }
}

/// Lays rows out in aligned columns, the first row being the header.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, s)| format!("{s:<w$}", w = widths[c]))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_text_only_when_asked_first() {
        assert_eq!(Format::from_accept(None), Format::Json);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Json);
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Text);
        assert_eq!(
            Format::from_accept(Some("text/plain;q=0.9, application/json")),
            Format::Text
        );
        assert_eq!(
            Format::from_accept(Some("application/json, text/plain")),
            Format::Json
        );
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&[
            vec!["name".into(), "v".into()],
            vec!["x".into(), "long".into()],
        ]);
        assert_eq!(t, "name  v\nx     long\n");
    }
}
