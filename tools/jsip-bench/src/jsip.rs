//! The few JSIP shapes the scenarios send and read (JSIP.md §2).

use serde_json::{json, Value};

/// A request. `router` (the Router field) steers it to an SLP when the Request-URI's
/// host does not.
pub fn request(
    method: &str,
    uri: &str,
    from: &str,
    dialog: &str,
    cseq: u64,
    router: Option<&str>,
) -> Value {
    let mut m = json!({
        "Type": method, "Request-URI": uri, "From": from, "To": uri,
        "DialogueID": dialog, "CSeq": cseq,
    });
    if let Some(r) = router {
        m["Router"] = json!(r);
    }
    m
}

/// The 200 to a request the server sent us (a relayed chat MESSAGE, a keepalive UPDATE).
pub fn ok(request: &Value) -> String {
    json!({
        "Type": "RESPONSE", "Code": 200, "Desc": "OK",
        "From": request["From"], "To": request["To"],
        "DialogueID": request["DialogueID"], "CSeq": request["CSeq"],
    })
    .to_string()
}

/// What the scenarios need of a received frame.
pub enum Received {
    Response {
        dialog: String,
        cseq: u64,
        code: u64,
    },
    Request(Value),
    /// Not JSON or no DialogueID: counted as a transport error. Against the raw echo
    /// server this never happens, since it returns our own request.
    Garbled,
}

impl Received {
    /// Reads a frame.
    pub fn read(text: &str) -> Received {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return Received::Garbled;
        };
        let Some(dialog) = v["DialogueID"].as_str() else {
            return Received::Garbled;
        };
        let cseq = v["CSeq"].as_u64().unwrap_or(0);
        match v["Type"].as_str() {
            Some("RESPONSE") => Received::Response {
                dialog: dialog.to_string(),
                cseq,
                code: v["Code"].as_u64().unwrap_or(0),
            },
            Some(_) => Received::Request(v),
            None => Received::Garbled,
        }
    }
}
