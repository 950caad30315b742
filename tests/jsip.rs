//! JSIP over WebSocket end to end (JSIP.md): the real binary, real sockets, the
//! compiled-in `echo` and `relay` SLPs, and timers shortened by config.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;

use jsipd_e2e::http::{self, get};
use jsipd_e2e::ws::{Refused, Ws, WAIT};
use jsipd_e2e::{loopback_config, Daemon, Prefix};

/// Loopback ports, echo and relay, and fast timers; `rtc` and `stack` add keys.
fn config(rtc: &str, stack: &str) -> String {
    format!(
        "{}ping_interval = 30s\n{rtc}\n[JSIPStack]\nrealm = node-a.test\nbuiltin_slps = echo, relay\ntranstimer = 200ms\nprtimer = 1s\n{stack}\n",
        loopback_config("")
    )
}

fn start(rtc: &str, stack: &str) -> (Prefix, Daemon) {
    let prefix = Prefix::with_config(&config(rtc, stack));
    let d = Daemon::start(&prefix);
    (prefix, d)
}

fn rtc(d: &Daemon) -> SocketAddr {
    d.rtc.expect("RTC listener")
}

/// A request from `alice` to `user@echo.test` (so the host label picks `echo`).
fn req(method: &str, user: &str, dialog: &str, cseq: u64) -> Value {
    json!({
        "Type": method, "Request-URI": format!("{user}@echo.test"), "From": "alice",
        "To": format!("{user}@echo.test"), "DialogueID": dialog, "CSeq": cseq,
    })
}

fn with(mut v: Value, key: &str, val: Value) -> Value {
    v[key] = val;
    v
}

fn code(v: &Value) -> u64 {
    v["Code"]
        .as_u64()
        .unwrap_or_else(|| panic!("not a response: {v}"))
}

/// Answers a request the server sent.
fn answer(ws: &mut Ws, req: &Value, code: u16) {
    ws.send(&json!({
        "Type": "RESPONSE", "Code": code, "From": req["From"], "To": req["To"],
        "DialogueID": req["DialogueID"], "CSeq": req["CSeq"],
    }));
}

/// Sends `m` and returns the next message, which must be its final answer.
fn call(ws: &mut Ws, m: Value) -> Value {
    ws.send(&m);
    let r = ws.recv();
    assert_eq!(r["DialogueID"], m["DialogueID"], "{r}");
    assert_eq!(r["CSeq"], m["CSeq"], "{r}");
    r
}

fn jstack(d: &Daemon) -> Value {
    let r = get(d.api, "/runtime/v1/jstack");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["data"].clone()
}

fn stats(d: &Daemon) -> Value {
    get(d.api, "/runtime/v1/stats").json()["data"].clone()
}

/// Polls `cond` until it holds (each poll asks the daemon over its API).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn missing_userid_is_400_before_any_websocket() {
    let (_p, d) = start("", "");
    match Ws::try_connect(rtc(&d), "/rtc", None) {
        Err(Refused::Http(400, body)) => assert!(body.contains("missing userid"), "{body}"),
        other => panic!("expected 400, got {:?}", other.map(|_| "a socket")),
    }
    match Ws::try_connect(rtc(&d), "/rtc?userid=", None) {
        Err(Refused::Http(400, _)) => {}
        other => panic!("expected 400, got {:?}", other.map(|_| "a socket")),
    }
    match Ws::try_connect(rtc(&d), "/wrong?userid=a", None) {
        Err(Refused::Http(404, body)) => assert!(body.contains("/rtc"), "{body}"),
        other => panic!("expected 404, got {:?}", other.map(|_| "a socket")),
    }
}

#[test]
fn in_dialog_requests_on_unknown_dialogs_get_481() {
    let (_p, d) = start("", "");
    let mut ws = Ws::connect(rtc(&d), "alice");
    for (i, m) in ["BYE", "CANCEL", "INFO", "UPDATE"].into_iter().enumerate() {
        let mut r = req(m, "svc", "no-such-dialog", i as u64 + 1);
        if m == "CANCEL" {
            r = with(r, "RelatedID", json!(1));
        }
        let a = call(&mut ws, r);
        assert_eq!(code(&a), 481, "{m}: {a}");
        assert!(a["Reason"].as_str().unwrap().contains("no dialog"), "{a}");
    }
}

#[test]
fn message_gets_200_with_its_body() {
    let (_p, d) = start("", "");
    let mut ws = Ws::connect(rtc(&d), "alice");
    let m = with(
        req("MESSAGE", "svc", "m1", 1),
        "Body",
        json!({"hello": [1, 2]}),
    );
    let m = with(m, "X-Custom", json!("kept"));
    let a = call(&mut ws, m);
    assert_eq!(code(&a), 200);
    assert_eq!(a["Desc"], "OK");
    assert_eq!(a["Body"], json!({"hello": [1, 2]}));
    assert_eq!(a["From"], "alice");
}

/// A client frame as a browser sends it: FIN, text, masked.
fn masked_text(text: &str) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x81];
    match text.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A WebSocket opened by hand on a raw TCP socket: the handshake for `userid` and then
/// `early` in one write. Gives the socket and what came after the 101's head.
fn raw_upgrade(d: &Daemon, userid: &str, early: &[u8]) -> (std::net::TcpStream, Vec<u8>) {
    use std::io::{Read, Write};
    let mut packet = format!(
        "GET /rtc?userid={userid} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .into_bytes();
    packet.extend_from_slice(early);
    let mut s = std::net::TcpStream::connect(rtc(d)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&packet).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = s.read(&mut buf).expect("the handshake's answer");
        assert!(n > 0, "closed before the handshake's answer");
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..end]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (s, got[end..].to_vec())
}

#[test]
fn frames_sent_with_the_handshake_in_one_packet_are_served() {
    let (_p, d) = start("", "");
    let mut early = Vec::new();
    for cseq in [1, 2] {
        let m = with(req("MESSAGE", "svc", "early", cseq), "Body", json!(cseq));
        early.extend(masked_text(&m.to_string()));
    }
    // One write: hyper reads the frames with the handshake, and must pass them on.
    let (s, got) = raw_upgrade(&d, "alice", &early);
    let mut ws = tungstenite::WebSocket::from_partially_read(
        s,
        got,
        tungstenite::protocol::Role::Client,
        None,
    );
    for cseq in [1, 2] {
        let frame = ws.read().expect("an answer to each early frame");
        let a: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        assert_eq!(
            (code(&a), &a["CSeq"], &a["Body"]),
            (200, &json!(cseq), &json!(cseq))
        );
    }
}

/// The daemon's resident memory, in KiB, as it reports it.
fn rss_kib(d: &Daemon) -> u64 {
    stats(d)["rss_kib"].as_u64().expect("rss_kib in the stats")
}

/// An idle socket costs the daemon a few KiB (the timed suite measures 10,000 of them at
/// about 4.3 KiB each). A buffer kept for each socket by mistake shows here: a view of
/// hyper's 8 KiB read buffer, held for the socket's life, made it 12.5 KiB. Enough
/// sockets that the allocator's own steps (it takes memory from the system megabytes at
/// a time) come to about a KiB a socket at most.
#[test]
fn an_idle_socket_holds_a_few_kib() {
    const WARM: usize = 200;
    // Each socket is a descriptor here and one in the daemon.
    let idle = (raise_open_files() as usize / 2)
        .saturating_sub(WARM + 200)
        .min(3000);
    assert!(
        idle >= 1000,
        "too few open files allowed for {idle} sockets"
    );
    let (_p, d) = start("", "");
    let served = |n: usize| stats(&d)["jsip"]["sockets"] == n;
    // The first sockets grow the runtime's and the allocator's own tables.
    let mut sockets: Vec<Ws> = (0..WARM)
        .map(|i| Ws::connect(rtc(&d), &format!("warm{i}")))
        .collect();
    wait_until("the first sockets to be served", || served(WARM));
    let before = rss_kib(&d);
    sockets.extend((0..idle).map(|i| Ws::connect(rtc(&d), &format!("idle{i}"))));
    wait_until("every socket to be served", || served(WARM + idle));
    let per_socket = (rss_kib(&d) - before) as f64 / idle as f64;
    eprintln!("FIGURES {idle} idle sockets: {per_socket:.2} KiB each");
    assert!(per_socket < 8.0, "{per_socket:.2} KiB per idle socket");
    drop(sockets);
}

/// This process's open-file limit raised to its hard limit, which it returns; the
/// daemon it starts inherits it (and raises its own too).
fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    lim.rlim_cur
}

#[test]
fn invite_ack_update_reinvite_bye() {
    let (_p, d) = start("", "");
    let mut ws = Ws::connect(rtc(&d), "alice");
    let invite = with(
        req("INVITE", "svc", "call-1", 1),
        "Body",
        json!("v=0 offer"),
    );
    let invite = with(invite, "Expire", json!(30));
    let ok = call(&mut ws, invite);
    assert_eq!((code(&ok), ok["Body"].clone()), (200, json!("v=0 offer")));
    ws.send(&with(req("ACK", "svc", "call-1", 2), "RelatedID", json!(1)));
    // In-dialog UPDATE is answered by the stack.
    assert_eq!(code(&call(&mut ws, req("UPDATE", "svc", "call-1", 3))), 200);
    let dialogs = jstack(&d)["dialogs"].clone();
    assert_eq!(dialogs[0]["id"], "call-1");
    assert_eq!(dialogs[0]["state"], "confirmed");
    assert_eq!(dialogs[0]["slp"], "echo");
    // re-INVITE, answered by the SLP.
    let re = with(req("INVITE", "svc", "call-1", 4), "Body", json!("v=0 new"));
    let ok = call(&mut ws, re);
    assert_eq!((code(&ok), ok["Body"].clone()), (200, json!("v=0 new")));
    ws.send(&with(req("ACK", "svc", "call-1", 5), "RelatedID", json!(4)));
    assert_eq!(code(&call(&mut ws, req("BYE", "svc", "call-1", 6))), 200);
    wait_until("the dialog to end", || {
        jstack(&d)["dialogs"].as_array().unwrap().is_empty()
    });
}

#[test]
fn cancel_gives_200_and_487() {
    let (_p, d) = start("", "");
    let mut ws = Ws::connect(rtc(&d), "alice");
    ws.send(&req("INVITE", "delay-5000", "c1", 1));
    ws.send(&with(
        req("CANCEL", "delay-5000", "c1", 2),
        "RelatedID",
        json!(1),
    ));
    let a = ws.recv();
    let b = ws.recv();
    assert_eq!((a["CSeq"].as_u64(), code(&a)), (Some(2), 200), "{a}");
    assert_eq!((b["CSeq"].as_u64(), code(&b)), (Some(1), 487), "{b}");
    ws.send(&with(
        req("ACK", "delay-5000", "c1", 3),
        "RelatedID",
        json!(1),
    ));
}

#[test]
fn an_slp_that_never_answers_gives_408() {
    let (_p, d) = start("", "");
    let mut ws = Ws::connect(rtc(&d), "alice");
    let started = Instant::now();
    let a = call(&mut ws, req("MESSAGE", "silent", "s1", 1));
    assert_eq!(code(&a), 408, "{a}");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "408 before transtimer"
    );
    let a = call(&mut ws, req("INVITE", "silent", "s2", 1));
    assert_eq!(code(&a), 408, "{a}");
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "408 before prtimer"
    );
}

#[test]
fn session_timer_without_update_ends_in_a_bye_from_the_server() {
    let (_p, d) = start("", "sessiontimer = 300ms");
    let mut ws = Ws::connect(rtc(&d), "alice");
    let ok = call(&mut ws, req("INVITE", "svc", "st1", 1));
    assert_eq!(code(&ok), 200);
    ws.send(&with(req("ACK", "svc", "st1", 2), "RelatedID", json!(1)));
    let t0 = Instant::now();
    let bye = ws.recv();
    assert_eq!(bye["Type"], "BYE", "{bye}");
    assert_eq!(bye["DialogueID"], "st1");
    assert!(
        bye["Reason"].as_str().unwrap().contains("session timer"),
        "{bye}"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "BYE too early: {:?}",
        t0.elapsed()
    );
}

#[test]
fn server_invite_keeps_alive_with_update_and_byes_after_three_unanswered() {
    let (_p, d) = start("", "");
    let mut ws = Ws::connect(rtc(&d), "alice");
    // echo's `callback` user answers, then calls the sender with Expire 1 s.
    let m = with(
        req("MESSAGE", "callback", "cb", 1),
        "Body",
        json!({"expire": 1}),
    );
    let m = with(m, "From", json!("alice"));
    assert_eq!(code(&call(&mut ws, m)), 200);
    let invite = ws.recv();
    assert_eq!(invite["Type"], "INVITE", "{invite}");
    assert_eq!(invite["Request-URI"], "alice");
    assert_eq!(invite["Expire"], 1);
    answer(&mut ws, &invite, 200);
    let ack = ws.recv();
    assert_eq!(
        (ack["Type"].as_str(), ack["RelatedID"].as_u64()),
        (Some("ACK"), invite["CSeq"].as_u64())
    );
    // The first UPDATE is answered; then three go unanswered and a BYE follows.
    let u = ws.recv();
    assert_eq!(u["Type"], "UPDATE", "{u}");
    answer(&mut ws, &u, 200);
    for n in 0..3 {
        let u = ws.recv();
        assert_eq!(u["Type"], "UPDATE", "unanswered keepalive {n}: {u}");
    }
    let bye = ws.recv();
    assert_eq!(bye["Type"], "BYE", "{bye}");
    assert_eq!(bye["DialogueID"], invite["DialogueID"]);
    assert!(
        bye["Reason"].as_str().unwrap().contains("unanswered"),
        "{bye}"
    );
}

#[test]
fn router_type_nosuch_is_404_and_relid_joins_an_instance() {
    let (_p, d) = start("", "");
    let mut ws = Ws::connect(rtc(&d), "alice");
    let m = with(
        req("MESSAGE", "svc", "n1", 1),
        "Router",
        json!("x.test;type=nosuch"),
    );
    let a = call(&mut ws, m);
    assert_eq!(code(&a), 404);
    assert!(a["Reason"].as_str().unwrap().contains("nosuch"), "{a}");

    let ok = call(&mut ws, req("INVITE", "relid", "r1", 1));
    let relid = ok["Body"]["relid"]
        .as_str()
        .expect("relid in Body")
        .to_string();
    let owner = ok["Instance"].clone();
    ws.send(&with(req("ACK", "relid", "r1", 2), "RelatedID", json!(1)));
    // Another dialog joins the same instance with relid=.
    let m = with(
        req("MESSAGE", "svc", "r2", 1),
        "Router",
        json!(format!("x.test;relid={relid}")),
    );
    let a = call(&mut ws, m);
    assert_eq!(code(&a), 200);
    assert_eq!(a["Instance"], owner);
    // Without relid, a new instance answers.
    let a = call(&mut ws, req("MESSAGE", "svc", "r3", 1));
    assert_ne!(a["Instance"], owner);
}

#[test]
fn bad_frames_get_400_and_the_socket_stays_usable() {
    let (_p, d) = start("", "");
    let mut ws = Ws::connect(rtc(&d), "alice");
    ws.send_text("{not json");
    let a = ws.recv();
    assert_eq!(code(&a), 400);
    assert!(a["Reason"].as_str().unwrap().starts_with("not JSON"), "{a}");
    assert!(a.get("DialogueID").is_none());
    ws.send_text("[1,2]");
    assert_eq!(code(&ws.recv()), 400);
    let mut no_cseq = req("MESSAGE", "svc", "b1", 1);
    no_cseq.as_object_mut().unwrap().remove("CSeq");
    ws.send(&no_cseq);
    let a = ws.recv();
    assert_eq!(code(&a), 400);
    assert!(a["Reason"].as_str().unwrap().contains("CSeq"), "{a}");
    // Invalid but addressable: the 400 names the transaction and the field.
    let a = call(
        &mut ws,
        with(req("MESSAGE", "svc", "b2", 7), "Type", json!("FROB")),
    );
    assert_eq!(code(&a), 400);
    assert!(a["Reason"].as_str().unwrap().contains("FROB"), "{a}");
    assert_eq!(code(&call(&mut ws, req("MESSAGE", "svc", "b3", 1))), 200);
    assert_eq!(stats(&d)["jsip"]["bad_frames"], 4);
    assert_eq!(jstack(&d)["connections"][0]["bad_frames"], 4);
}

#[test]
fn reconnect_replays_queued_frames_in_order_exactly_once_and_replaces_the_old_socket() {
    let (_p, d) = start("", "");
    let mut bob = Ws::connect(rtc(&d), "bob");
    // A second socket with the same userid replaces the first (close 4000).
    let bob2 = Ws::connect(rtc(&d), "bob");
    assert_eq!(bob.recv_close(), Some(4000));
    bob2.close();
    wait_until("bob to be away", || {
        jstack(&d)["connections"][0]["state"] == "away"
    });
    // While bob is away, echo calls him back three times: the INVITEs queue.
    let mut alice = Ws::connect(rtc(&d), "alice");
    for i in 1..=3 {
        let m = with(
            req("MESSAGE", "callback", &format!("q{i}"), 1),
            "From",
            json!("bob"),
        );
        assert_eq!(code(&call(&mut alice, m)), 200);
    }
    wait_until("3 queued frames", || {
        jstack(&d)["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "bob" && c["queue"] == 3)
    });
    let mut bob = Ws::connect(rtc(&d), "bob");
    let ids: Vec<Value> = (0..3).map(|_| bob.recv()["DialogueID"].clone()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|v| {
        v.as_str()
            .unwrap()
            .rsplit('-')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    });
    assert_eq!(
        ids, sorted,
        "queued INVITEs arrive in the order they were sent"
    );
    // Exactly once: the next thing bob sees is the answer to his own request.
    let a = call(
        &mut bob,
        with(req("MESSAGE", "svc", "after", 1), "From", json!("bob")),
    );
    assert_eq!(code(&a), 200);
}

/// JSIP.md §1: the newer socket of a userid replaces the older. "Newer" is what the
/// client sees: the socket whose handshake completed later. So a socket is registered
/// before its 101 is sent; registered from its task after the 101, the older one won
/// whenever the newer one's task ran first (a CI run under load caught it).
#[test]
fn a_socket_is_registered_before_its_handshake_is_answered_so_the_later_one_wins() {
    let (_p, d) = start("", "");
    let state = |d: &Daemon| {
        jstack(d)["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "carol")
            .map(|c| c["state"].clone())
    };
    for round in 0..20 {
        let mut first = Ws::connect(rtc(&d), "carol");
        // Its 101 came, so it is registered: no waiting for its task.
        assert_eq!(state(&d), Some(json!("connected")), "round {round}");
        let mut second = Ws::connect(rtc(&d), "carol");
        assert_eq!(first.recv_close(), Some(4000), "round {round}");
        let m = with(
            req("MESSAGE", "svc", &format!("r{round}"), 1),
            "From",
            json!("carol"),
        );
        assert_eq!(code(&call(&mut second, m)), 200, "round {round}");
        second.close();
        wait_until("carol to be away", || state(&d) == Some(json!("away")));
    }
}

#[test]
fn a_user_gone_past_the_reconnect_window_gives_480_to_the_sender() {
    let (_p, d) = start("reconnect_window = 100ms", "");
    let bob = Ws::connect(rtc(&d), "bob");
    bob.close();
    let mut alice = Ws::connect(rtc(&d), "alice");
    // relay forwards to Router[1] = bob, who is in his window: queued, then 480.
    let m = with(
        req("MESSAGE", "svc", "w1", 1),
        "Router",
        json!("n.test;type=relay, bob"),
    );
    let t0 = Instant::now();
    let a = call(&mut alice, m);
    assert_eq!(code(&a), 480, "{a}");
    assert!(
        a["Reason"].as_str().unwrap().contains("reconnect_window"),
        "{a}"
    );
    assert!(t0.elapsed() >= Duration::from_millis(80));
    // Never connected: 480 at once.
    let m = with(
        req("MESSAGE", "svc", "w2", 1),
        "Router",
        json!("n.test;type=relay, nobody"),
    );
    let a = call(&mut alice, m);
    assert_eq!(code(&a), 480, "{a}");
    assert!(a["Reason"].as_str().unwrap().contains("nobody"), "{a}");
}

#[test]
fn an_oversized_frame_closes_with_1009_and_others_keep_going() {
    let (_p, d) = start("max_frame = 1k", "");
    let mut big = Ws::connect(rtc(&d), "big");
    let mut other = Ws::connect(rtc(&d), "other");
    let body = "x".repeat(2000);
    big.send(&with(req("MESSAGE", "svc", "o1", 1), "Body", json!(body)));
    assert_eq!(big.recv_close(), Some(1009));
    assert_eq!(code(&call(&mut other, req("MESSAGE", "svc", "o2", 1))), 200);
    assert_eq!(stats(&d)["jsip"]["oversized"], 1);
}

#[test]
fn a_panicking_slp_answers_500_and_keeps_serving() {
    let (_p, d) = start("", "");
    let mut ws = Ws::connect(rtc(&d), "alice");
    let a = call(&mut ws, req("MESSAGE", "panic", "p1", 1));
    assert_eq!(code(&a), 500, "{a}");
    assert_eq!(code(&call(&mut ws, req("MESSAGE", "svc", "p2", 1))), 200);
    assert_eq!(jstack(&d)["counters"]["instances_failed"], 1);
    d.wait_log("panicked: echo: asked to panic", WAIT);
}

/// A daemon that pings its sockets every 100 ms (the others: every 30 s).
fn start_pinging_every_100ms() -> (Prefix, Daemon) {
    let prefix = Prefix::with_config(
        &config("", "").replace("ping_interval = 30s", "ping_interval = 100ms"),
    );
    let d = Daemon::start(&prefix);
    (prefix, d)
}

#[test]
fn a_silent_peer_is_dropped_after_three_ping_intervals() {
    let (_p, d) = start_pinging_every_100ms();
    // This client never reads, so it never answers a ping.
    let _mute = Ws::connect(rtc(&d), "mute");
    wait_until("the mute peer to be dropped", || {
        stats(&d)["jsip"]["dead_peers"] == 1
    });
    assert_eq!(jstack(&d)["connections"][0]["state"], "away");
}

#[test]
fn a_peer_that_answers_pings_is_pinged_and_kept() {
    let (_p, d) = start_pinging_every_100ms();
    let mut ws = Ws::connect(rtc(&d), "alice");
    // Eight intervals: pinged (by the node's one timer for every socket) at least
    // three times, answered, and never taken for dead.
    let pings = ws.pings_within(Duration::from_millis(800));
    assert!(pings >= 3, "{pings} pings in 8 ping intervals");
    let a = call(&mut ws, req("MESSAGE", "svc", "still-here", 1));
    assert_eq!(code(&a), 200);
    assert_eq!(stats(&d)["jsip"]["dead_peers"], 0);
}

/// A server frame's opcode and payload from the front of `buf` (server frames are not
/// masked), and how many bytes it took; `None` until the whole frame is there.
fn server_frame(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    let (opcode, len7) = (buf.first()? & 0x0f, buf.get(1)? & 0x7f);
    let (len, at) = match len7 {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    Some((opcode, buf.get(at..at + len)?, at + len))
}

/// A peer whose frames never stop coming is still closed at once when an operator
/// asks. The peer writes without pause from one thread and reads every answer on
/// another; the close must come while it is still writing, long before its last frame.
/// (The socket asks its `closing` flag at the top of every turn; its select, which takes
/// the peer's frames first, gets to the poke too, whenever tokio's cooperative budget
/// makes the read wait: without the first, the close came 3 frames later here, and
/// without both, never.)
#[test]
fn an_operator_closes_a_flooding_socket_with_4001() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let (_p, d) = start("", "");
    let (mut reader, mut got) = raw_upgrade(&d, "flood", &[]);
    let mut writer = reader.try_clone().unwrap();
    // A batch of requests, each its own dialog, written again and again.
    let batch: Vec<u8> = (0..500)
        .flat_map(|i| masked_text(&req("MESSAGE", "svc", &format!("f{i}"), 1).to_string()))
        .collect();
    const BATCHES: u64 = 2000; // a million frames: seconds of the daemon's work
    let written = std::sync::Arc::new(AtomicU64::new(0));
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writing = {
        let (written, stop) = (written.clone(), stop.clone());
        std::thread::spawn(move || {
            for _ in 0..BATCHES {
                if stop.load(Ordering::Relaxed) || writer.write_all(&batch).is_err() {
                    break;
                }
                written.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let (mut answers, mut asked) = (0u64, false);
    let close;
    let mut buf = vec![0u8; 1 << 16];
    'read: loop {
        while let Some((opcode, payload, used)) = server_frame(&got) {
            match opcode {
                0x1 => answers += 1,
                0x8 => {
                    close = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    break 'read;
                }
                _ => {}
            }
            got.drain(..used);
        }
        if answers >= 2000 && !asked {
            // Well into the flood: the daemon is reading frame after frame.
            asked = true;
            let cut = http::request(
                d.api,
                "DELETE",
                "/runtime/v1/connections?name=flood",
                &[],
                "",
            );
            assert_eq!(cut.status, 200, "{}", cut.body);
        }
        let n = reader
            .read(&mut buf)
            .expect("the daemon's frames, then its close");
        assert!(
            n > 0,
            "the connection ended without a close frame, after {answers} answers (asked: {asked}); {} bytes left: {:?}",
            got.len(),
            &got[..got.len().min(64)]
        );
        got.extend_from_slice(&buf[..n]);
    }
    let batches_then = written.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    drop(reader);
    writing.join().unwrap();
    assert_eq!(close, Some(4001), "after {answers} answers");
    assert!(
        batches_then < BATCHES,
        "closed only after all {BATCHES} batches were written ({answers} answers)"
    );
    eprintln!(
        "FIGURES closed after {answers} answers, {batches_then} of {BATCHES} batches written"
    );
}

#[test]
fn an_operator_closes_an_idle_socket_with_4001_at_once() {
    let (_p, d) = start("", "");
    let mut ws = Ws::connect(rtc(&d), "alice");
    // Served, then idle: waiting on its peer and its queue, not on a timer.
    let a = call(&mut ws, req("MESSAGE", "svc", "before", 1));
    assert_eq!(code(&a), 200);
    let asked = Instant::now();
    let cut = http::request(
        d.api,
        "DELETE",
        "/runtime/v1/connections?name=alice",
        &[],
        "",
    );
    assert_eq!(cut.status, 200, "{}", cut.body);
    assert_eq!(ws.recv_close(), Some(4001));
    // Woken at once, not at its next ping (30 s here).
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn token_auth_binds_the_token_to_the_userid() {
    let p = Prefix::with_config(&config("", "").replace("auth = none", "auth = token"));
    let d = Daemon::start(&p);
    let out = p.run(&["token", "alice"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(token.len(), 64);
    for (q, bearer) in [
        ("/rtc?userid=alice".to_string(), None),
        (format!("/rtc?userid=bob&token={token}"), None),
        ("/rtc?userid=alice&token=00".to_string(), None),
    ] {
        match Ws::try_connect(rtc(&d), &q, bearer) {
            Err(Refused::Http(401, body)) => assert!(body.contains("token"), "{body}"),
            other => panic!("{q}: expected 401, got {:?}", other.map(|_| "a socket")),
        }
    }
    let mut ws =
        Ws::try_connect(rtc(&d), &format!("/rtc?userid=alice&token={token}"), None).unwrap();
    assert_eq!(code(&call(&mut ws, req("MESSAGE", "svc", "t1", 1))), 200);
    let mut ws = Ws::try_connect(rtc(&d), "/rtc?userid=alice", Some(&token)).unwrap();
    assert_eq!(code(&call(&mut ws, req("MESSAGE", "svc", "t2", 1))), 200);
    assert_eq!(stats(&d)["jsip"]["auth_failed"], 3);
}

#[test]
fn two_nodes_route_a_message_by_router() {
    let (_pb, b) = start("", "");
    let (_pa, a) = start("", "");
    let mut alice = Ws::connect(rtc(&a), "alice");
    let m = with(
        req("MESSAGE", "bob", "n2n", 1),
        "Router",
        json!(format!("node-a.test;type=relay, {};type=echo", rtc(&b))),
    );
    let m = with(m, "Body", json!("across"));
    let r = call(&mut alice, m);
    assert_eq!(code(&r), 200, "{r}");
    assert_eq!(r["Body"], "across");
    // B saw node A connect under A's realm.
    let conns = jstack(&b)["connections"].clone();
    assert!(
        conns
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "node-a.test"),
        "{conns}"
    );
    // A dialed B under B's address.
    let conns = jstack(&a)["connections"].clone();
    assert!(
        conns
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == rtc(&b).to_string()),
        "{conns}"
    );
}

#[test]
fn jstack_lists_connections_dialogs_and_transactions_as_json_and_text() {
    let (_p, d) = start("", "");
    let mut ws = Ws::connect(rtc(&d), "alice");
    ws.send(&req("INVITE", "delay-5000", "j1", 1));
    wait_until("the INVITE transaction", || {
        jstack(&d)["transactions"].as_array().unwrap().len() == 1
    });
    let j = jstack(&d);
    assert_eq!(j["connections"][0]["name"], "alice");
    assert_eq!(j["dialogs"][0]["state"], "early");
    assert_eq!(j["transactions"][0]["method"], "INVITE");
    assert_eq!(j["transactions"][0]["direction"], "received");
    let text = http::request(
        d.api,
        "GET",
        "/runtime/v1/jstack",
        &[("Accept", "text/plain")],
        "",
    );
    assert!(text.body.contains("dialogs: 1"), "{}", text.body);
    assert!(text.body.contains("j1"), "{}", text.body);
}

#[test]
fn close_frame_from_the_client_is_clean() {
    let (_p, d) = start("", "");
    let mut ws = Ws::connect(rtc(&d), "alice");
    ws.send_frame(tungstenite::Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })));
    assert_eq!(ws.recv_close(), Some(1000));
    wait_until("the socket to close", || stats(&d)["jsip"]["sockets"] == 0);
}

#[test]
fn sighup_applies_new_stack_timers_to_new_transactions() {
    let prefix =
        Prefix::with_config(&config("", "").replace("transtimer = 200ms", "transtimer = 30s"));
    let d = Daemon::start(&prefix);
    prefix.write_config(&config("", ""));
    d.signal(libc::SIGHUP);
    d.wait_log("changed: [JSIPStack] transtimer", WAIT);
    let mut ws = Ws::connect(rtc(&d), "alice");
    let t0 = Instant::now();
    let a = call(&mut ws, req("MESSAGE", "silent", "h1", 1));
    assert_eq!(code(&a), 408);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the new 200 ms transtimer applied"
    );
}

#[test]
fn a_plugin_request_to_a_local_slp_is_delivered_without_a_socket() {
    let (_p, d) = start("", "");
    let mut ws = Ws::connect(rtc(&d), "alice");
    // relay forwards to Router[1], which names SLP echo on this node.
    let m = with(
        req("MESSAGE", "svc", "l1", 1),
        "Router",
        json!("n.test;type=relay, here.test;type=echo"),
    );
    let a = call(&mut ws, with(m, "Body", json!("local")));
    assert_eq!((code(&a), a["Body"].clone()), (200, json!("local")));
    let j = jstack(&d);
    assert_eq!(
        j["connections"].as_array().unwrap().len(),
        1,
        "no socket was dialed: {j}"
    );
    assert_eq!(stats(&d)["jsip"]["dials"], 0);
}

#[test]
fn graceful_stop_closes_websockets_with_1001_and_exits() {
    let (_p, mut d) = start("", "");
    let mut ws = Ws::connect(rtc(&d), "alice");
    assert_eq!(code(&call(&mut ws, req("MESSAGE", "svc", "g1", 1))), 200);
    d.signal(libc::SIGQUIT);
    assert_eq!(ws.recv_close(), Some(1001));
    let status = d
        .wait_exit(Duration::from_secs(5))
        .expect("exits after QUIT");
    assert!(status.success(), "{status:?}");
}
