//! JSIP.md §2: message syntax and the "bad input" rules.

use serde_json::json;

use super::*;

fn invite() -> serde_json::Value {
    json!({"Type":"INVITE","Request-URI":"kvm:console@kvm.example.com","From":"alice@example.com",
           "To":"kvm:console@kvm.example.com","DialogueID":"d-71c2","CSeq":1,"Expire":300,
           "Router":"kvm.example.com;type=kvm","Content-Type":"sdp","Body":"v=0\r\n..."})
}

#[test]
fn parses_the_spec_example_invite() {
    let m = Message::parse(&invite().to_string()).unwrap();
    assert_eq!(m.kind, Kind::Request(Method::Invite));
    assert_eq!(
        m.request_uri.as_deref(),
        Some("kvm:console@kvm.example.com")
    );
    assert_eq!(
        (m.dialogue_id.as_str(), m.cseq, m.expire),
        ("d-71c2", 1, Some(300))
    );
    assert_eq!(m.router.as_deref(), Some("kvm.example.com;type=kvm"));
    assert_eq!(m.content_type.as_deref(), Some("sdp"));
    assert_eq!(m.body, Some(json!("v=0\r\n...")));
    assert!(m.extra.is_empty());
}

#[test]
fn serialize_then_parse_is_identity_and_unknown_keys_survive() {
    let mut v = invite();
    v["X-Trace"] = json!({"hops": [1, 2]});
    v["P-Asserted-Identity"] = json!("alice");
    v["Event"] = json!("led");
    let m = Message::parse(&v.to_string()).unwrap();
    assert_eq!(m.extra.get("X-Trace"), Some(&json!({"hops": [1, 2]})));
    let again: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
    assert_eq!(
        again, v,
        "every key, known or not, is written back unchanged"
    );
    assert_eq!(Message::parse(&m.to_json()).unwrap(), m);
}

#[test]
fn a_float_is_read_to_the_bit_and_written_back_as_sent() {
    // serde_json without float_roundtrip read this one bit off (…806e243).
    let mut v = invite();
    v["Body"] = json!({"x": 1.4312448162570804e243});
    let m = Message::parse(&v.to_string()).unwrap();
    assert_eq!(m.body, Some(json!({"x": 1.4312448162570804e243})));
    assert!(
        m.to_json().contains("1.4312448162570804e+243"),
        "{}",
        m.to_json()
    );
}

#[test]
fn response_copies_the_transaction_and_fills_desc() {
    let req = Message::parse(&invite().to_string()).unwrap();
    let r = req.response(487);
    assert_eq!(r.kind, Kind::Response(487));
    assert_eq!(r.desc.as_deref(), Some("Request Terminated"));
    assert_eq!(
        (r.from.as_str(), r.to.as_str()),
        ("alice@example.com", "kvm:console@kvm.example.com")
    );
    assert_eq!((r.dialogue_id.as_str(), r.cseq), ("d-71c2", 1));
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["Type"], "RESPONSE");
    assert_eq!(v["Code"], 487);
    assert!(v.get("Request-URI").is_none());
    assert_eq!(Message::parse(&r.to_json()).unwrap(), r);
}

#[test]
fn into_response_is_the_response_made_from_the_request_itself() {
    let mut v = invite();
    v["Router"] = json!("echo@kvm.example.com");
    v["Body"] = json!({"sdp": "v=0"});
    v["X-Unknown"] = json!(7);
    // Request-URIs shorter and longer than the reason phrases, whose buffer it reuses.
    for uri in ["a@b", "a-long-user@a-long-host.example.com;type=echo"] {
        v["Request-URI"] = json!(uri);
        let req = Message::parse(&v.to_string()).unwrap();
        for code in [100, 200, 487, 599] {
            assert_eq!(req.clone().into_response(code), req.response(code));
        }
    }
}

fn invalid(v: serde_json::Value) -> (String, u64, String) {
    match Message::parse(&v.to_string()) {
        Err(ParseError::Invalid {
            dialogue_id,
            cseq,
            reason,
            ..
        }) => (dialogue_id, cseq, reason),
        other => panic!("expected a 400 on the transaction, got {other:?}"),
    }
}

fn unaddressable(frame: &str) -> String {
    match Message::parse(frame) {
        Err(ParseError::Unaddressable { reason }) => reason,
        other => panic!("expected a bare 400, got {other:?}"),
    }
}

#[test]
fn addressable_errors_name_the_field() {
    let cases = [
        ("Type", json!("PUBLISH"), "unknown Type 'PUBLISH'"),
        ("From", json!(null), "From must be a string"),
        ("To", json!(7), "To must be a string, not a number"),
        ("Request-URI", json!(""), "Request-URI is empty"),
        (
            "Expire",
            json!("300"),
            "Expire must be a number, not a string",
        ),
        ("Expire", json!(-1), "Expire must be a whole number"),
        (
            "Router",
            json!(["a"]),
            "Router must be a string, not an array",
        ),
    ];
    for (field, value, want) in cases {
        let mut v = invite();
        v[field] = value;
        let (d, c, reason) = invalid(v);
        assert_eq!((d.as_str(), c), ("d-71c2", 1));
        assert!(reason.contains(want), "{field}: {reason}");
    }
    for missing in ["From", "To", "Request-URI", "Type"] {
        let mut v = invite();
        v.as_object_mut().unwrap().remove(missing);
        assert!(invalid(v).2.contains(&format!("{missing} is missing")));
    }
}

#[test]
fn responses_need_a_code_in_range() {
    let base = json!({"Type":"RESPONSE","From":"a","To":"b","DialogueID":"d","CSeq":3});
    for (code, want) in [
        (json!(99), "outside 100-699"),
        (json!(700), "outside 100-699"),
        (json!("200"), "must be a number"),
    ] {
        let mut v = base.clone();
        v["Code"] = code;
        assert!(invalid(v).2.contains(want));
    }
    assert!(invalid(base.clone()).2.contains("Code is missing"));
    let mut ok = base;
    ok["Code"] = json!(699);
    assert_eq!(Message::parse(&ok.to_string()).unwrap().code(), Some(699));
}

#[test]
fn ack_and_cancel_need_related_id() {
    for method in ["ACK", "CANCEL"] {
        let v = json!({"Type":method,"Request-URI":"x@y","From":"a","To":"b","DialogueID":"d","CSeq":2});
        assert!(invalid(v).2.contains("RelatedID is missing"));
    }
    let ack = json!({"Type":"ACK","Request-URI":"x@y","From":"a","To":"b","DialogueID":"d","CSeq":2,"RelatedID":1});
    assert_eq!(
        Message::parse(&ack.to_string()).unwrap().related_id,
        Some(1)
    );
}

#[test]
fn unaddressable_frames_get_a_bare_400() {
    assert!(unaddressable("not json").starts_with("not JSON"));
    assert!(unaddressable("[1,2]").contains("not an array"));
    assert!(unaddressable("\"hi\"").contains("not a string"));
    assert!(unaddressable(r#"{"Type":"MESSAGE","CSeq":1}"#).contains("DialogueID is missing"));
    assert!(unaddressable(r#"{"DialogueID":"d"}"#).contains("CSeq is missing"));
    assert!(unaddressable(r#"{"DialogueID":"d","CSeq":"1"}"#).contains("CSeq must be a number"));
    assert!(unaddressable(r#"{"DialogueID":5,"CSeq":1}"#).contains("DialogueID must be a string"));
}

#[test]
fn answers_to_bad_frames() {
    let bare = Message::parse("{").unwrap_err().answer();
    let v: serde_json::Value = serde_json::from_str(&bare).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 4, "only Type, Code, Desc and Reason: {v}");
    assert_eq!(
        (v["Type"].as_str(), v["Code"].as_u64(), v["Desc"].as_str()),
        (Some("RESPONSE"), Some(400), Some("Bad Request"))
    );
    assert!(v["Reason"].as_str().unwrap().starts_with("not JSON"));

    let mut f = invite();
    f["Type"] = json!("FOO");
    let on_tx: serde_json::Value =
        serde_json::from_str(&Message::parse(&f.to_string()).unwrap_err().answer()).unwrap();
    assert_eq!(
        (on_tx["DialogueID"].as_str(), on_tx["CSeq"].as_u64()),
        (Some("d-71c2"), Some(1))
    );
    assert_eq!(on_tx["From"], "alice@example.com");
    assert!(on_tx["Reason"]
        .as_str()
        .unwrap()
        .contains("unknown Type 'FOO'"));
}

#[test]
fn method_classes_follow_the_spec() {
    let session: Vec<_> = Method::ALL
        .into_iter()
        .filter(|m| m.is_session_layer())
        .map(Method::as_str)
        .collect();
    assert_eq!(
        session,
        ["INVITE", "ACK", "BYE", "CANCEL", "INFO", "UPDATE", "PRACK"]
    );
    let starters: Vec<_> = Method::ALL
        .into_iter()
        .filter(|m| m.may_start_dialog())
        .map(Method::as_str)
        .collect();
    assert_eq!(
        starters,
        ["INVITE", "REGISTER", "OPTIONS", "SUBSCRIBE", "MESSAGE"]
    );
    for m in Method::ALL {
        assert_eq!(Method::parse(m.as_str()), Some(m));
    }
    assert_eq!(Method::parse("invite"), None, "methods are case-sensitive");
}

#[test]
fn a_repeated_key_keeps_its_last_value_and_extra_never_shadows_a_field() {
    let m = Message::parse(
        r#"{"Type":"MESSAGE","Request-URI":"a@b","From":"x","To":"y","DialogueID":"d",
            "CSeq":1,"From":"z","X-Tag":1,"X-Tag":2}"#,
    )
    .unwrap();
    assert_eq!(m.from, "z");
    assert_eq!(m.extra["X-Tag"], 2);

    let mut m = m;
    m.extra.insert("Type".into(), "BYE".into());
    let text = m.to_json();
    assert_eq!(text.matches("\"Type\"").count(), 1, "{text}");
    assert_eq!(
        Message::parse(&text).unwrap().method(),
        Some(Method::Message)
    );
    assert_eq!(m.to_object()["Type"], "MESSAGE");
}

#[test]
fn the_frame_text_starts_with_type_and_escapes_strings() {
    let mut m = Message::request(Method::Info, "u@h", "a\"b", "c\\d", "d\n1", 7);
    m.body = Some(json!({"k": [1, "two"]}));
    let text = m.to_json();
    assert!(text.starts_with(r#"{"Type":"INFO","#), "{text}");
    let back: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back["From"], "a\"b");
    assert_eq!(back["DialogueID"], "d\n1");
    assert_eq!(Message::parse(&text).unwrap(), m);
}
