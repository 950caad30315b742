//! Property tests ("fuzzing") of the parser and the stack.
//!
//! The parser gets arbitrary text and arbitrary JSON objects built from JSIP's keys; it
//! must never panic, and what it accepts must survive a serialize/parse round trip.
//! A message must cross the `.so` boundary unchanged either way.
//! The stack gets arbitrary interleavings of peer messages, SLP actions, failures and
//! time; it must never panic, its indexes must stay consistent after every step, and
//! once inputs stop it must wind down to no dialogs and no timers.
//!
//! `cargo test -p jsipd fuzz` runs a few hundred cases; `bench/fuzz.sh` runs them for
//! as long as you like with fresh seeds.

use std::time::{Duration, Instant};

use jsipd_plugin_api::jsip::{Kind, Message, Method};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::*;

const KEYS: &[&str] = &[
    "Type",
    "Request-URI",
    "Code",
    "Desc",
    "From",
    "To",
    "DialogueID",
    "CSeq",
    "Router",
    "RelatedID",
    "Expire",
    "Body",
    "Content-Type",
    "Reason",
    "X-Other",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..1000).prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[A-Z]{3,9}".prop_map(Value::from),
        prop_oneof![
            Just("INVITE"),
            Just("RESPONSE"),
            Just("ACK"),
            Just("a@b;type=echo"),
            Just("x;relid=1,y"),
            Just("[::1]:80"),
            Just("@;"),
            Just("")
        ]
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        // What JSON escapes, or must not: quotes, backslashes, control characters.
        r#"[a"\\\t\n\x01\x7fé ]{0,8}"#.prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn jsip_object() -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..14).prop_map(|kv| {
        let m: Map<String, Value> = kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        Value::Object(m).to_string()
    })
}

proptest! {
    #[test]
    fn parser_never_panics_on_text(text in ".{0,200}") {
        let _ = Message::parse(&text);
    }

    #[test]
    fn parser_accepts_only_what_round_trips(frame in jsip_object()) {
        match Message::parse(&frame) {
            Ok(m) => {
                // The hand-written writer gives serde_json's bytes.
                prop_assert_eq!(m.to_json(), serde_json::to_string(&m).unwrap());
                let again = Message::parse(&m.to_json()).expect("serialized message parses");
                prop_assert_eq!(again, m);
            }
            Err(e) => {
                // Every refusal is a 400 with a reason, and is itself valid JSON.
                let answer: Value = serde_json::from_str(&e.answer()).unwrap();
                prop_assert_eq!(&answer["Code"], &json!(400));
                prop_assert!(!e.reason().is_empty());
            }
        }
    }
}

proptest! {
    /// A message crosses the `.so` boundary unchanged both ways, lent or handed over,
    /// whatever its Body and unknown keys: the fast paths for plain strings and flat
    /// objects agree with serde_json's writer and parser.
    #[test]
    fn a_message_crosses_the_boundary_unchanged(
        body in prop::option::of(json_value()),
        extra in prop::collection::btree_map(r#"[a-z"\\\t-]{0,6}"#, json_value(), 0..4),
        from in r#"[a-z@"\\\x01é]{1,8}"#,
    ) {
        let mut m = Message::request(Method::Message, "svc@echo", &from, "svc@echo", "d-1", 1);
        m.body = body;
        // Lower case: no unknown key names a JSIP field (those are capitalised).
        m.extra = extra.into_iter().collect();
        let lent = m.lend();
        // SAFETY: `lent` outlives both calls; its text comes from Rust strings.
        let (to_host, to_plugin) =
            unsafe { (Message::from_ffi(lent.as_ffi()), Message::from_host(lent.as_ffi())) };
        prop_assert_eq!(&to_host.expect("a plugin's valid message is accepted"), &m);
        prop_assert_eq!(&to_plugin.expect("the host's message is taken"), &m);
        // Handed over with its text (ABI 1.7), both ways: the same message arrives; and
        // to a receiver of 1.8, which may get a single unknown key lent.
        // SAFETY: a handed-over message from this process's own allocator, taken once.
        let (to_host, to_plugin) = unsafe {
            (
                m.clone().hand_over().send(|h| Message::from_ffi_owned(&*h)),
                m.clone().hand_over_to(8).send(|h| Message::from_host_owned(&*h)),
            )
        };
        prop_assert_eq!(&to_host.expect("a plugin's valid message is accepted"), &m);
        prop_assert_eq!(&to_plugin.expect("the host's message is taken"), &m);
    }
}

/// A message as a plugin may build one, valid or not.
fn any_message() -> impl Strategy<Value = Message> {
    let kind = prop_oneof![
        prop::sample::select(Method::ALL.to_vec()).prop_map(Kind::Request),
        prop_oneof![0u16..1000, 100u16..700].prop_map(Kind::Response),
    ];
    let text = || "[ab]{0,2}";
    let key = prop_oneof![
        prop::sample::select(KEYS).prop_map(String::from),
        "[a-z-]{1,4}"
    ];
    (
        (
            kind,
            text(),
            text(),
            text(),
            prop::option::of(text()),
            prop::option::of(text()),
        ),
        (
            prop::option::of(any::<u64>()),
            prop::option::of(json_value()),
            prop::collection::btree_map(key, json_value(), 0..3),
            prop::option::of(text()),
        ),
    )
        .prop_map(
            |((kind, from, to, id, uri, desc), (related, body, extra, reason))| {
                let mut m = Message::request(Method::Message, "", &from, &to, &id, 7);
                m.kind = kind;
                m.request_uri = uri;
                m.desc = desc;
                m.related_id = related;
                m.body = body;
                m.extra = extra.into_iter().collect();
                m.reason = reason;
                m
            },
        )
}

proptest! {
    /// A message a plugin moves across whole (ABI 1.9) is taken as the same message
    /// handed over field by field: the same refusals in the same words, and otherwise
    /// the same message.
    #[test]
    fn a_moved_message_is_checked_as_a_handed_over_one(m in any_message()) {
        // SAFETY: a handed-over message from this process's own allocator, taken once.
        let handed = unsafe { m.clone().hand_over().send(|h| Message::from_ffi_owned(&*h)) };
        prop_assert_eq!(m.checked(), handed);
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A request (or, with `code`, a response) from peer `peer`.
    Peer {
        peer: u8,
        method: Method,
        code: Option<u16>,
        dialog: u8,
        cseq: u8,
        related: Option<u8>,
        expire: Option<u8>,
        router: Option<&'static str>,
    },
    /// The SLP answers the n-th request it was given.
    Answer {
        pick: usize,
        code: u16,
    },
    /// The SLP answers the last request it was given, as an inline SLP does in the
    /// request's own turn (the stack's kept-aside dialog, `Fresh`).
    AnswerLast {
        code: u16,
    },
    /// An instance starts a new request.
    Send {
        pick: usize,
        method: Method,
        to: u8,
        dialog: u8,
        cseq: u8,
        /// Through Router to a local SLP (loopback delivery) instead of a peer.
        local: bool,
    },
    End {
        pick: usize,
    },
    Fail {
        pick: usize,
    },
    Relid {
        pick: usize,
    },
    Advance(u16),
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(Method::ALL.to_vec())
}

fn op() -> impl Strategy<Value = Op> {
    let peer = (
        0u8..3,
        method(),
        prop::option::weighted(
            0.3,
            prop::sample::select(vec![100u16, 180, 200, 302, 486, 500]),
        ),
        0u8..4,
        1u8..6,
        prop::option::of(1u8..6),
        prop::option::of(0u8..4),
        prop::option::of(prop::sample::select(vec![
            "h;type=echo",
            "h;type=other",
            "h;type=nosuch",
            "h;relid=r1",
            ";;",
            "echo.x, b",
        ])),
    )
        .prop_map(
            |(peer, method, code, dialog, cseq, related, expire, router)| Op::Peer {
                peer,
                method,
                code,
                dialog,
                cseq,
                related,
                expire,
                router,
            },
        );
    prop_oneof![
        4 => peer,
        3 => (any::<usize>(), prop::sample::select(vec![100u16, 180, 200, 200, 404, 486, 500]))
            .prop_map(|(pick, code)| Op::Answer { pick, code }),
        2 => prop::sample::select(vec![100u16, 200, 200, 404]).prop_map(|code| Op::AnswerLast { code }),
        1 => (any::<usize>(), method(), 0u8..3, 0u8..4, 1u8..6, prop::bool::weighted(0.3))
            .prop_map(|(pick, method, to, dialog, cseq, local)| Op::Send { pick, method, to, dialog, cseq, local }),
        1 => any::<usize>().prop_map(|pick| Op::End { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Fail { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Relid { pick }),
        2 => (0u16..3000).prop_map(Op::Advance),
    ]
}

/// Runs `ops` against a fresh stack, checking its invariants after each; returns every
/// output, in order. With `file_each_turn`, a count is asked for after each op, which
/// files a dialog the stack kept aside (`Fresh`): the outputs must not change.
fn run_ops(ops: Vec<Op>, file_each_turn: bool) -> Result<Vec<Output>, TestCaseError> {
    let mut stack = Stack::new(StackConfig {
        transtimer: Duration::from_millis(200),
        prtimer: Duration::from_millis(1000),
        sessiontimer: Duration::from_millis(1500),
        realm: "node".into(),
    });
    let mut now = Instant::now();
    let mut instances: Vec<InstanceId> = vec![
        stack.add_slp("echo", "echo", true),
        stack.add_slp("other", "other", false),
    ];
    // Requests delivered to SLPs, for `Answer` to pick from.
    let mut requests: Vec<(InstanceId, Message)> = Vec::new();
    let mut outputs = Vec::new();
    let mut drain = |stack: &mut Stack,
                     instances: &mut Vec<InstanceId>,
                     requests: &mut Vec<(InstanceId, Message)>| {
        while let Some(out) = stack.poll_output() {
            outputs.push(out.clone());
            if let Output::ToSlp {
                instance,
                event: Delivery::Message(m),
                ..
            } = out
            {
                if !instances.contains(&instance) {
                    instances.push(instance);
                }
                if m.is_request() {
                    requests.push((instance, *m));
                }
            }
        }
    };
    drain(&mut stack, &mut instances, &mut requests);
    for op in ops {
        match op {
            Op::Peer {
                peer,
                method,
                code,
                dialog,
                cseq,
                related,
                expire,
                router,
            } => {
                let mut m = Message::request(
                    method,
                    "u@echo.x",
                    "a",
                    "b",
                    &format!("d{dialog}"),
                    cseq.into(),
                );
                if let Some(c) = code {
                    m = m.response(c);
                }
                m.related_id =
                    related
                        .map(u64::from)
                        .or(matches!(method, Method::Ack | Method::Cancel).then_some(1));
                m.expire = expire.map(u64::from);
                m.router = router.map(String::from);
                stack.handle_peer(now, format!("p{peer}").into(), m);
            }
            Op::Answer { pick, code } => {
                if !requests.is_empty() {
                    let (i, req) = requests[pick % requests.len()].clone();
                    stack.handle_slp(now, i, vec![Action::Send(req.response(code).into())]);
                }
            }
            Op::AnswerLast { code } => {
                if let Some((i, req)) = requests.last().cloned() {
                    stack.handle_slp(now, i, vec![Action::Send(req.response(code).into())]);
                }
            }
            Op::Send {
                pick,
                method,
                to,
                dialog,
                cseq,
                local,
            } => {
                let i = instances[pick % instances.len()];
                let mut m = Message::request(
                    method,
                    &format!("p{to}"),
                    "svc",
                    "x",
                    &format!("s{dialog}"),
                    cseq.into(),
                );
                if local {
                    m.router = Some("h;type=other".into());
                }
                m.related_id = matches!(method, Method::Ack | Method::Cancel).then_some(1);
                stack.handle_slp(now, i, vec![Action::Send(m.into())]);
            }
            Op::End { pick } => {
                let i = instances[pick % instances.len()];
                stack.handle_slp(now, i, vec![Action::End]);
            }
            Op::Fail { pick } => {
                let i = instances[pick % instances.len()];
                stack.handle_slp_failure(now, i);
            }
            Op::Relid { pick } => {
                let i = instances[pick % instances.len()];
                stack.handle_slp(now, i, vec![Action::Relid("r1".into())]);
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(ms.into());
                stack.handle_timeout(now);
            }
        }
        drain(&mut stack, &mut instances, &mut requests);
        if let Err(e) = stack.check_invariants() {
            return Err(TestCaseError::fail(e));
        }
        if file_each_turn {
            stack.timer_count();
        }
    }
    // Left alone, every dialog ends: timers answer, keepalives fail, sessions expire.
    for _ in 0..40 {
        now += Duration::from_millis(500);
        stack.handle_timeout(now);
        drain(&mut stack, &mut instances, &mut requests);
    }
    // ...except a session between two local instances: its keepalives are answered
    // by the other side, so it rightly lives on.
    let left = stack.dialogs_view(now);
    prop_assert!(
        left.iter()
            .all(|d| d.peer.starts_with("local:") && d.state == "confirmed"),
        "dialogs left after all timers: {:?} {:?}",
        left,
        stack.transactions_view(now)
    );
    if left.is_empty() {
        prop_assert_eq!(
            stack.timer_count(),
            0,
            "timers left after all dialogs ended"
        );
    }
    stack.check_invariants().map_err(TestCaseError::fail)?;
    Ok(outputs)
}

proptest! {
    #[test]
    fn stack_survives_any_interleaving(ops in prop::collection::vec(op(), 1..60)) {
        let kept_aside = run_ops(ops.clone(), false)?;
        let filed = run_ops(ops, true)?;
        prop_assert_eq!(kept_aside, filed, "a dialog kept aside changed what the stack did");
    }
}
