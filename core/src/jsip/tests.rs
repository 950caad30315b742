//! JSIP.md §3–§5, rule by rule, driven without sockets or clocks.

use std::time::{Duration, Instant};

use jsipd_plugin_api::jsip::{Message, Method};

use super::*;

const MS: Duration = Duration::from_millis(1);

struct Harness {
    stack: Stack,
    now: Instant,
}

fn msg(json: &str) -> Message {
    Message::parse(json).expect("test message is valid")
}

fn req(method: &str, id: &str, cseq: u64, extra: &str) -> Message {
    msg(&format!(
        r#"{{"Type":"{method}","Request-URI":"svc@echo.example.com","From":"alice","To":"svc@echo.example.com","DialogueID":"{id}","CSeq":{cseq}{extra}}}"#
    ))
}

impl Harness {
    fn new() -> Harness {
        Harness::with(StackConfig {
            transtimer: 100 * MS,
            prtimer: 1000 * MS,
            sessiontimer: 3000 * MS,
            realm: "node.example.com".into(),
        })
    }

    fn with(config: StackConfig) -> Harness {
        let mut stack = Stack::new(config);
        stack.add_slp("echo", "echo", true);
        stack.add_slp("other", "other", true);
        let mut h = Harness {
            stack,
            now: Instant::now(),
        };
        h.drain(); // the on-load events
        h
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.stack.poll_output()).collect()
    }

    fn peer(&mut self, name: &str, m: Message) -> Vec<Output> {
        self.stack.handle_peer(self.now, name.into(), m);
        self.drain()
    }

    fn slp(&mut self, instance: InstanceId, actions: Vec<Action>) -> Vec<Output> {
        self.stack.handle_slp(self.now, instance, actions);
        self.drain()
    }

    /// Moves the clock and fires what is due.
    fn advance(&mut self, by: Duration) -> Vec<Output> {
        self.now += by;
        self.stack.handle_timeout(self.now);
        self.drain()
    }
}

/// The messages sent to peers, as (peer, Type or Code, CSeq).
fn to_peers(out: &[Output]) -> Vec<(String, String, u64)> {
    out.iter()
        .filter_map(|o| match o {
            Output::ToPeer { name, msg } => Some((name.to_string(), label(msg), msg.cseq)),
            _ => None,
        })
        .collect()
}

fn label(m: &Message) -> String {
    match m.code() {
        Some(c) => c.to_string(),
        None => m.method().unwrap().as_str().to_string(),
    }
}

/// The messages delivered to SLP instances, as (instance, Type or Code).
fn to_slps(out: &[Output]) -> Vec<(InstanceId, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::ToSlp {
                instance,
                event: Delivery::Message(m),
                ..
            } => Some((*instance, label(m))),
            _ => None,
        })
        .collect()
}

fn delivered(out: &[Output]) -> Vec<Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::ToSlp {
                event: Delivery::Message(m),
                ..
            } => Some((**m).clone()),
            _ => None,
        })
        .collect()
}

fn sent(out: &[Output]) -> Vec<Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::ToPeer { msg, .. } => Some(Message::clone(msg)),
            _ => None,
        })
        .collect()
}

fn ended(out: &[Output]) -> Vec<InstanceId> {
    out.iter()
        .filter_map(|o| match o {
            Output::InstanceEnded { instance, .. } => Some(*instance),
            _ => None,
        })
        .collect()
}

fn instance_of(out: &[Output]) -> InstanceId {
    to_slps(out).first().expect("something was delivered").0
}

fn answer(m: &Message, code: u16) -> Action {
    Action::Send(m.response(code).into())
}

/// Opens an answered INVITE dialog "d" from peer "p"; returns the instance.
fn confirmed_invite(h: &mut Harness, extra: &str) -> (InstanceId, Message) {
    let invite = req("INVITE", "d", 1, extra);
    let out = h.peer("p", invite.clone());
    let i = instance_of(&out);
    let out = h.slp(i, vec![answer(&invite, 200)]);
    assert_eq!(to_peers(&out), [("p".into(), "200".into(), 1)]);
    let out = h.peer("p", req("ACK", "d", 2, r#","RelatedID":1"#));
    assert_eq!(to_slps(&out), [(i, "ACK".into())]);
    (i, invite)
}

#[test]
fn in_dialog_requests_on_an_unknown_dialog_get_481_and_ack_is_dropped() {
    let mut h = Harness::new();
    for (m, extra) in [
        ("BYE", ""),
        ("CANCEL", r#","RelatedID":1"#),
        ("INFO", ""),
        ("UPDATE", ""),
        ("PRACK", ""),
        ("NOTIFY", ""),
    ] {
        let out = h.peer("p", req(m, "nope", 5, extra));
        assert_eq!(to_peers(&out), [("p".into(), "481".into(), 5)], "{m}");
        assert!(sent(&out)[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("no dialog nope"));
        assert!(to_slps(&out).is_empty());
    }
    let out = h.peer("p", req("ACK", "nope", 6, r#","RelatedID":1"#));
    assert!(out.is_empty());
    assert_eq!(h.stack.counters.dropped, 1);
}

#[test]
fn message_dispatches_to_a_new_instance_which_ends_with_the_transaction() {
    let mut h = Harness::new();
    let m = req("MESSAGE", "m1", 1, r#","Body":"hi","X-Kept":[1]"#);
    let out = h.peer("p", m.clone());
    let i = instance_of(&out);
    let got = &delivered(&out)[0];
    assert_eq!(got.extra.get("X-Kept"), m.extra.get("X-Kept"));
    // The SLP gets the request itself, whole (the stack keeps only its head).
    assert_eq!(got, &m);
    assert_eq!(h.stack.dialog_count(), 1);
    let out = h.slp(i, vec![answer(&m, 200)]);
    assert_eq!(to_peers(&out), [("p".into(), "200".into(), 1)]);
    assert_eq!(ended(&out), [i]);
    assert!(out.iter().any(|o| matches!(o, Output::ToSlp { event: Delivery::DialogEnded { dialogue_id }, .. } if &**dialogue_id == "m1")));
    assert_eq!(h.stack.dialog_count(), 0);
    assert_eq!(
        h.stack.instance_count(),
        2,
        "only the two on-load instances remain"
    );
}

/// The dialog events an output list holds, as (instance, DialogueID).
fn dialog_events(out: &[Output]) -> Vec<(InstanceId, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::ToSlp {
                instance,
                event:
                    Delivery::DialogEnded { dialogue_id } | Delivery::PeerDisconnected { dialogue_id },
                ..
            } => Some((*instance, dialogue_id.to_string())),
            _ => None,
        })
        .collect()
}

#[test]
fn an_slp_that_wants_no_dialog_events_is_not_sent_them() {
    let mut h = Harness::new();
    h.stack.add_slp("quiet", "quiet", false);
    h.drain();
    // One dialog each that ends (a MESSAGE answered) and one each that stays, to hear
    // its peer go away (an INVITE not answered yet).
    let mut instances = Vec::new();
    for (slp, n) in [("echo", "e"), ("quiet", "q")] {
        let uri = format!(r#","Request-URI":"svc@{slp}.example.com""#);
        let m = req("MESSAGE", &format!("{n}-m"), 1, &uri);
        let i = instance_of(&h.peer("p", m.clone()));
        let out = h.slp(i, vec![answer(&m, 200)]);
        assert_eq!(to_peers(&out), [("p".into(), "200".into(), 1)], "{slp}");
        assert_eq!(ended(&out), [i], "{slp}: the instance ends all the same");
        let wanted = (slp == "echo").then(|| (i, format!("{n}-m")));
        assert_eq!(dialog_events(&out), Vec::from_iter(wanted), "{slp}");
        let invite = req("INVITE", &format!("{n}-i"), 1, &uri);
        instances.push(instance_of(&h.peer("p", invite)));
    }
    h.stack.peer_disconnected("p");
    assert_eq!(dialog_events(&h.drain()), [(instances[0], "e-i".into())]);
}

#[test]
fn retransmitted_request_is_ignored() {
    let mut h = Harness::new();
    let m = req("MESSAGE", "m1", 1, "");
    assert_eq!(to_slps(&h.peer("p", m.clone())).len(), 1);
    assert!(h.peer("p", m).is_empty());
}

#[test]
fn same_dialogue_id_from_two_peers_are_two_dialogs() {
    let mut h = Harness::new();
    let a = instance_of(&h.peer("p1", req("MESSAGE", "same", 1, "")));
    let b = instance_of(&h.peer("p2", req("MESSAGE", "same", 1, "")));
    assert_ne!(a, b);
    let out = h.slp(b, vec![answer(&req("MESSAGE", "same", 1, ""), 200)]);
    assert_eq!(to_peers(&out), [("p2".into(), "200".into(), 1)]);
}

#[test]
fn dispatch_refusals_answer_with_a_reason() {
    let mut h = Harness::new();
    let out = h.peer("p", req("MESSAGE", "x", 1, r#","Router":"h;type=nosuch""#));
    let r = &sent(&out)[0];
    assert_eq!(r.code(), Some(404));
    assert!(r.reason.as_deref().unwrap().contains("type=nosuch"));
    let out = h.peer("p", req("MESSAGE", "y", 1, r#","Router":"h;relid=gone""#));
    assert_eq!(sent(&out)[0].code(), Some(404));
    assert_eq!(h.stack.dialog_count(), 0);
}

#[test]
fn invite_without_expire_gets_sessiontimer() {
    let mut h = Harness::new();
    let out = h.peer("p", req("INVITE", "d", 1, ""));
    assert_eq!(delivered(&out)[0].expire, Some(3));
    let out = h.peer("p", req("INVITE", "d2", 1, r#","Expire":42"#));
    assert_eq!(delivered(&out)[0].expire, Some(42));
}

#[test]
fn invite_ack_update_reinvite_bye() {
    let mut h = Harness::new();
    let (i, _) = confirmed_invite(&mut h, r#","Expire":30"#);
    // UPDATE in a confirmed dialog on the answering side: 200 from the stack, SLP not told.
    let out = h.peer("p", req("UPDATE", "d", 3, ""));
    assert_eq!(to_peers(&out), [("p".into(), "200".into(), 3)]);
    assert!(to_slps(&out).is_empty());
    // re-INVITE goes to the SLP, which answers.
    let reinvite = req("INVITE", "d", 4, r#","Expire":30"#);
    let out = h.peer("p", reinvite.clone());
    assert_eq!(to_slps(&out), [(i, "INVITE".into())]);
    let out = h.slp(i, vec![answer(&reinvite, 200)]);
    assert_eq!(to_peers(&out), [("p".into(), "200".into(), 4)]);
    h.peer("p", req("ACK", "d", 5, r#","RelatedID":4"#));
    // BYE: 200 from the stack, the SLP gets the BYE, the dialog and instance end.
    let out = h.peer("p", req("BYE", "d", 6, ""));
    assert_eq!(to_peers(&out), [("p".into(), "200".into(), 6)]);
    assert_eq!(to_slps(&out), [(i, "BYE".into())]);
    assert_eq!(ended(&out), [i]);
    assert_eq!(h.stack.dialog_count(), 0);
    // Nothing left armed: no timers fire later.
    assert!(h.advance(Duration::from_secs(100)).is_empty());
}

#[test]
fn cancel_before_the_final_gives_200_and_487() {
    let mut h = Harness::new();
    let invite = req("INVITE", "d", 1, "");
    let i = instance_of(&h.peer("p", invite.clone()));
    let out = h.peer("p", req("CANCEL", "d", 2, r#","RelatedID":1"#));
    assert_eq!(
        to_peers(&out),
        [("p".into(), "200".into(), 2), ("p".into(), "487".into(), 1)]
    );
    assert_eq!(to_slps(&out), [(i, "CANCEL".into())]);
    // The SLP's late 200 is dropped: the INVITE already has its final.
    let out = h.slp(i, vec![answer(&invite, 200)]);
    assert!(to_peers(&out).is_empty());
    // The 487 waits for its ACK, which ends the dialog.
    let out = h.peer("p", req("ACK", "d", 3, r#","RelatedID":1"#));
    assert!(to_slps(&out).is_empty());
    assert_eq!(ended(&out), [i]);
}

#[test]
fn cancel_of_an_unknown_invite_is_481() {
    let mut h = Harness::new();
    confirmed_invite(&mut h, "");
    let out = h.peer("p", req("CANCEL", "d", 9, r#","RelatedID":7"#));
    assert_eq!(to_peers(&out), [("p".into(), "481".into(), 9)]);
}

/// A dialog a peer's request opens waits aside until the next call (`Fresh`): answered
/// at once, it never touches the maps; left unanswered, the driver still learns when its
/// request times out.
#[test]
fn a_request_answered_in_its_own_turn_leaves_nothing_and_one_left_waiting_has_its_deadline() {
    let mut h = Harness::new();
    let m = req("MESSAGE", "m1", 1, "");
    let i = instance_of(&h.peer("p", m.clone()));
    assert!(h.stack.keeps_one_aside(), "kept aside, not filed");
    let out = h.slp(i, vec![answer(&m, 200)]);
    assert!(!h.stack.keeps_one_aside());
    assert_eq!(to_peers(&out), [("p".into(), "200".into(), 1)]);
    assert_eq!(dialog_events(&out), [(i, "m1".to_string())]);
    assert_eq!(ended(&out), [i]);
    assert_eq!(h.stack.next_deadline(), None, "no timer left behind");
    assert_eq!((h.stack.dialog_count(), h.stack.instance_count()), (0, 2));

    let m = req("MESSAGE", "m2", 1, "");
    let i = instance_of(&h.peer("p", m.clone()));
    assert_eq!(h.stack.next_deadline(), Some(h.now + 100 * MS));
    assert!(
        !h.stack.keeps_one_aside(),
        "asking for the deadline filed it"
    );
    let out = h.slp(i, vec![answer(&m, 200)]);
    assert_eq!(to_peers(&out), [("p".into(), "200".into(), 1)]);
    assert_eq!(ended(&out), [i]);
    assert_eq!(h.stack.next_deadline(), None);
}

#[test]
fn unanswered_non_invite_gets_408_after_transtimer() {
    let mut h = Harness::new();
    let i = instance_of(&h.peer("p", req("MESSAGE", "m", 1, "")));
    assert!(h.advance(99 * MS).is_empty());
    let out = h.advance(MS);
    assert_eq!(to_peers(&out), [("p".into(), "408".into(), 1)]);
    assert_eq!(ended(&out), [i]);
    assert_eq!(h.stack.counters.transactions_timed_out, 1);
}

#[test]
fn unanswered_invite_gets_408_after_prtimer_and_the_slp_a_cancel() {
    let mut h = Harness::new();
    let i = instance_of(&h.peer("p", req("INVITE", "d", 1, "")));
    assert!(h.advance(999 * MS).is_empty());
    let out = h.advance(MS);
    assert_eq!(to_peers(&out), [("p".into(), "408".into(), 1)]);
    assert_eq!(to_slps(&out), [(i, "CANCEL".into())]);
    assert_eq!(delivered(&out)[0].related_id, Some(1));
    assert_eq!(ended(&out), [i]);
}

#[test]
fn provisional_answer_rearms_the_timer() {
    let mut h = Harness::new();
    let m = req("MESSAGE", "m", 1, "");
    let i = instance_of(&h.peer("p", m.clone()));
    h.advance(90 * MS);
    let out = h.slp(i, vec![answer(&m, 180)]);
    assert_eq!(to_peers(&out), [("p".into(), "180".into(), 1)]);
    // Re-armed to prtimer (1 s) for a non-INVITE.
    assert!(h.advance(500 * MS).is_empty());
    assert_eq!(
        to_peers(&h.advance(500 * MS)),
        [("p".into(), "408".into(), 1)]
    );
}

#[test]
fn non_2xx_final_waits_transtimer_for_the_ack() {
    let mut h = Harness::new();
    let invite = req("INVITE", "d", 1, "");
    let i = instance_of(&h.peer("p", invite.clone()));
    let out = h.slp(i, vec![answer(&invite, 486)]);
    assert_eq!(to_peers(&out), [("p".into(), "486".into(), 1)]);
    assert_eq!(h.stack.dialog_count(), 1);
    let out = h.advance(100 * MS);
    assert_eq!(ended(&out), [i]);
    assert_eq!(h.stack.dialog_count(), 0);
}

#[test]
fn session_timer_without_update_ends_with_bye_both_ways() {
    let mut h = Harness::new();
    let (i, _) = confirmed_invite(&mut h, r#","Expire":2"#);
    // An UPDATE at 1.5 s refreshes; without another one the session ends 2 s later.
    h.advance(1500 * MS);
    h.peer("p", req("UPDATE", "d", 3, ""));
    assert!(h.advance(1999 * MS).is_empty());
    let out = h.advance(MS);
    let bye = &sent(&out)[0];
    assert_eq!((bye.method(), bye.cseq), (Some(Method::Bye), 1));
    assert_eq!(bye.to, "alice", "the BYE goes back to the caller");
    assert!(bye.reason.as_deref().unwrap().contains("session timer"));
    assert_eq!(to_slps(&out), [(i, "BYE".into())]);
    // The SLP's BYE comes as if from the caller, to the INVITE's Request-URI: the
    // dialog kept that of its first request.
    let to_slp = &delivered(&out)[0];
    assert_eq!(
        (to_slp.request_uri.as_deref(), to_slp.from.as_str()),
        (Some("svc@echo.example.com"), "alice")
    );
    assert_eq!(ended(&out), [i]);
}

/// An SLP-originated INVITE to "bob"; returns (instance, the INVITE as sent).
fn outgoing_invite(h: &mut Harness, expire: Option<u64>) -> (InstanceId, Message) {
    // The on-load instance of "echo" is 1.
    let mut invite = Message::request(Method::Invite, "bob", "svc", "bob", "o1", 1);
    invite.expire = expire;
    let out = h.slp(1, vec![Action::Send(invite.into())]);
    let s = sent(&out);
    assert_eq!(to_peers(&out), [("bob".into(), "INVITE".into(), 1)]);
    (1, s[0].clone())
}

#[test]
fn calling_side_sends_keepalive_updates_and_byes_after_three_unanswered() {
    let mut h = Harness::new();
    let (i, invite) = outgoing_invite(&mut h, Some(3));
    let out = h.peer("bob", invite.response(200));
    assert_eq!(to_slps(&out), [(i, "200".into())]);
    h.slp(
        i,
        vec![Action::Send(
            {
                let mut ack = Message::request(Method::Ack, "bob", "svc", "bob", "o1", 2);
                ack.related_id = Some(1);
                ack
            }
            .into(),
        )],
    );
    // Every Expire/3 = 1 s an UPDATE; an answered one resets the count.
    let out = h.advance(1000 * MS);
    let u = sent(&out);
    assert_eq!(to_peers(&out), [("bob".into(), "UPDATE".into(), 3)]);
    assert!(to_slps(&h.peer("bob", u[0].response(200))).is_empty());
    for n in 0..3 {
        let out = h.advance(1000 * MS);
        assert_eq!(to_peers(&out)[0].1, "UPDATE", "keepalive {n}");
        if n < 2 {
            assert!(to_slps(&out).is_empty());
        }
    }
    // The third unanswered UPDATE times out (transtimer 100 ms): BYE both ways.
    let out = h.advance(100 * MS);
    assert_eq!(to_peers(&out)[0].1, "BYE");
    assert_eq!(to_slps(&out), [(i, "BYE".into())]);
    assert_eq!(h.stack.dialog_count(), 0);
    // The on-load instance is pinned: the dialog ending does not end it.
    assert!(ended(&out).is_empty());
}

#[test]
fn slp_invite_gets_expire_and_failure_answers_are_acked_by_the_stack() {
    let mut h = Harness::new();
    let (i, invite) = outgoing_invite(&mut h, None);
    assert_eq!(invite.expire, Some(3));
    let out = h.peer("bob", invite.response(486));
    assert_eq!(to_slps(&out), [(i, "486".into())]);
    let ack = &sent(&out)[0];
    assert_eq!((ack.method(), ack.related_id), (Some(Method::Ack), Some(1)));
    assert_eq!(h.stack.dialog_count(), 0);
}

#[test]
fn sent_request_timeout_gives_408_to_the_slp_but_a_sent_bye_just_ends() {
    let mut h = Harness::new();
    let m = Message::request(Method::Message, "bob", "svc", "bob", "o2", 1);
    h.slp(1, vec![Action::Send(m.into())]);
    let out = h.advance(100 * MS);
    let r = delivered(&out);
    assert_eq!(r[0].code(), Some(408));
    assert!(to_peers(&out).is_empty());

    let (i, invite) = outgoing_invite(&mut h, Some(30));
    h.peer("bob", invite.response(200));
    let bye = Message::request(Method::Bye, "bob", "svc", "bob", "o1", 3);
    h.slp(i, vec![Action::Send(bye.into())]);
    let out = h.advance(100 * MS);
    assert!(to_slps(&out).is_empty(), "no 408 for a BYE");
    assert_eq!(h.stack.dialog_count(), 0);
}

#[test]
fn stray_and_duplicate_responses_are_dropped() {
    let mut h = Harness::new();
    let before = h.stack.counters.dropped;
    assert!(h
        .peer("bob", req("MESSAGE", "zz", 1, "").response(200))
        .is_empty());
    let (i, invite) = outgoing_invite(&mut h, Some(30));
    assert_eq!(
        to_slps(&h.peer("bob", invite.response(200))),
        [(i, "200".into())]
    );
    assert!(to_slps(&h.peer("bob", invite.response(200))).is_empty());
    assert!(to_slps(&h.peer("bob", invite.response(180))).is_empty());
    assert_eq!(h.stack.counters.dropped, before + 3);
}

#[test]
fn relid_joins_the_instance_that_handed_it_out() {
    let mut h = Harness::new();
    let (i, _) = confirmed_invite(&mut h, "");
    h.slp(i, vec![Action::Relid("r-1".into())]);
    let out = h.peer(
        "q",
        req("MESSAGE", "m9", 1, r#","Router":"echo;relid=r-1""#),
    );
    assert_eq!(to_slps(&out), [(i, "MESSAGE".into())]);
    // Pinned by the relid: the instance outlives its dialogs until it ends itself.
    h.peer("p", req("BYE", "d", 7, ""));
    let out = h.slp(i, vec![answer(&req("MESSAGE", "m9", 1, ""), 200)]);
    assert!(ended(&out).is_empty());
    let out = h.slp(i, vec![Action::End]);
    assert_eq!(ended(&out), [i]);
    let out = h.peer(
        "q",
        req("MESSAGE", "m10", 1, r#","Router":"echo;relid=r-1""#),
    );
    assert_eq!(sent(&out)[0].code(), Some(404));
}

#[test]
fn slp_failure_answers_pending_requests_500_and_ends_the_instance() {
    let mut h = Harness::new();
    let i = instance_of(&h.peer("p", req("MESSAGE", "m", 1, "")));
    h.stack.handle_slp_failure(h.now, i);
    let out = h.drain();
    assert_eq!(to_peers(&out), [("p".into(), "500".into(), 1)]);
    assert_eq!(ended(&out), [i]);
    assert_eq!(h.stack.counters.instances_failed, 1);
    // Later actions of the dead instance are ignored.
    assert!(h
        .slp(i, vec![answer(&req("MESSAGE", "m", 1, ""), 200)])
        .is_empty());
}

#[test]
fn ending_an_instance_byes_its_confirmed_sessions() {
    let mut h = Harness::new();
    let (i, _) = confirmed_invite(&mut h, "");
    let out = h.slp(i, vec![Action::End]);
    assert_eq!(to_peers(&out)[0].1, "BYE");
    assert_eq!(ended(&out), [i]);
}

#[test]
fn a_request_routed_to_a_local_slp_never_leaves_the_node() {
    let mut h = Harness::new();
    // The on-load instance of "echo" (1) sends to SLP "other" through Router.
    let mut m = Message::request(Method::Message, "x@other", "svc", "x@other", "l1", 1);
    m.router = Some("node;type=other".into());
    let out = h.slp(1, vec![Action::Send(m.clone().into())]);
    assert!(to_peers(&out).is_empty());
    let (j, _) = to_slps(&out)[0].clone();
    assert_ne!(j, 1);
    let out = h.slp(j, vec![answer(&m, 200)]);
    assert!(to_peers(&out).is_empty());
    assert_eq!(to_slps(&out), [(1, "200".into())]);
    assert_eq!(h.stack.dialog_count(), 0);
}

#[test]
fn unparseable_router_from_an_slp_is_answered_400_to_it() {
    let mut h = Harness::new();
    let mut m = Message::request(Method::Message, "bob", "svc", "bob", "l2", 1);
    m.router = Some(";;".into());
    let out = h.slp(1, vec![Action::Send(m.into())]);
    assert!(to_peers(&out).is_empty());
    assert_eq!(to_slps(&out), [(1, "400".into())]);
}

#[test]
fn a_user_of_our_realm_is_the_client_with_that_userid() {
    let mut h = Harness::new();
    let m = Message::request(
        Method::Message,
        "carol@node.example.com",
        "svc",
        "carol",
        "c1",
        1,
    );
    let out = h.slp(1, vec![Action::Send(m.into())]);
    assert_eq!(to_peers(&out), [("carol".into(), "MESSAGE".into(), 1)]);
    let m = Message::request(
        Method::Message,
        "carol@other.example.com",
        "svc",
        "carol",
        "c2",
        1,
    );
    let out = h.slp(1, vec![Action::Send(m.into())]);
    assert_eq!(to_peers(&out)[0].0, "carol@other.example.com");
}

#[test]
fn peer_names_are_user_at_host_with_port() {
    let u = jsipd_plugin_api::jsip::UriRef::parse("bob@10.0.0.1:9000;type=x").unwrap();
    assert_eq!(peer_name(&u), "bob@10.0.0.1:9000");
    let u = jsipd_plugin_api::jsip::UriRef::parse("alice").unwrap();
    assert_eq!(peer_name(&u), "alice");
    let u = jsipd_plugin_api::jsip::UriRef::parse("[::1]:9000").unwrap();
    assert_eq!(peer_name(&u), "[::1]:9000");
}

#[test]
fn an_instance_may_answer_its_last_request_and_start_a_dialog_in_one_event() {
    let mut h = Harness::new();
    let m = req("MESSAGE", "m", 1, "");
    let i = instance_of(&h.peer("p", m.clone()));
    let invite = Message::request(Method::Invite, "alice", "svc", "alice", "cb", 1);
    let out = h.slp(i, vec![answer(&m, 200), Action::Send(invite.into())]);
    assert_eq!(
        to_peers(&out),
        [
            ("p".into(), "200".into(), 1),
            ("alice".into(), "INVITE".into(), 1)
        ]
    );
    assert!(ended(&out).is_empty(), "the instance owns the new dialog");
    assert_eq!(h.stack.dialog_count(), 1);
}

#[test]
fn a_router_with_a_port_goes_to_that_node_even_if_the_slp_is_loaded_here() {
    let mut h = Harness::new();
    let mut m = Message::request(Method::Message, "x@other", "svc", "x@other", "r1", 1);
    m.router = Some("10.1.2.3:9000;type=other".into());
    let out = h.slp(1, vec![Action::Send(m.into())]);
    assert_eq!(
        to_peers(&out),
        [("10.1.2.3:9000".into(), "MESSAGE".into(), 1)]
    );
}

#[test]
fn a_2xx_waits_transtimer_for_its_ack_then_only_the_wait_ends() {
    let mut h = Harness::new();
    let invite = req("INVITE", "d", 1, r#","Expire":30"#);
    let i = instance_of(&h.peer("p", invite.clone()));
    h.slp(i, vec![answer(&invite, 200)]);
    assert_eq!(h.stack.transactions_view(h.now).len(), 1);
    h.advance(100 * MS);
    assert!(h.stack.transactions_view(h.now).is_empty());
    assert_eq!(h.stack.dialog_count(), 1, "the session goes on");
}

#[test]
fn a_peer_disconnect_is_told_to_its_dialogs_which_live_on() {
    let mut h = Harness::new();
    let (i, _) = confirmed_invite(&mut h, "");
    // Another peer's dialog hears nothing.
    let other = h.peer("q", req("INVITE", "e", 1, ""));
    let j = instance_of(&other);
    h.stack.peer_disconnected("p");
    let out = h.drain();
    let told: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::ToSlp {
                instance,
                event: Delivery::PeerDisconnected { dialogue_id },
                ..
            } => Some((*instance, dialogue_id.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(told, [(i, "d".into())]);
    assert!(told.iter().all(|(inst, _)| *inst != j));
    // The dialog is still there: the peer may come back and carry on.
    let out = h.peer("p", req("INFO", "d", 3, ""));
    assert_eq!(to_slps(&out), [(i, "INFO".into())]);
}

#[test]
fn a_draining_generation_tells_the_instances_that_still_have_dialogs() {
    let mut h = Harness::new();
    let (i, _) = confirmed_invite(&mut h, "");
    h.stack.drain("echo");
    let told: Vec<InstanceId> = h
        .drain()
        .iter()
        .filter_map(|o| match o {
            Output::ToSlp {
                instance,
                event: Delivery::Draining,
                ..
            } => Some(*instance),
            _ => None,
        })
        .collect();
    // The session's instance hears it; the idle on-load instance just ends.
    assert_eq!(told, [i]);
    assert_eq!(
        h.stack.dialog_count(),
        1,
        "its dialog goes on until it ends it"
    );
}
