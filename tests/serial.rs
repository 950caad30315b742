//! The `serial` plugin end to end: the real daemon loads `serial.so`, its backend is the
//! QEMU test guest's second serial port (a shell on ttyS1), and JSIP clients join over
//! real WebSockets.

use std::time::{Duration, Instant};

use data_encoding::BASE64;
use serde_json::{json, Value};

use jsipd_e2e::guest::{self, Guest, BOOT_TIMEOUT};
use jsipd_e2e::http::{get, request};
use jsipd_e2e::webdriver::{self, Browser};
use jsipd_e2e::ws::{Ws, WAIT};
use jsipd_e2e::{loopback_config, Daemon, Prefix};

/// A JSIP client of the serial console: what it has read, in order.
struct Console {
    ws: Ws,
    name: String,
    dialog: String,
    cseq: u64,
    out: Vec<u8>,
    notices: Vec<Value>,
}

impl Console {
    fn join(d: &Daemon, name: &str) -> Console {
        let mut ws = Ws::connect(d.rtc.unwrap(), name);
        let dialog = format!("ser-{name}");
        ws.send(
            &json!({"Type": "INVITE", "Request-URI": "console@serial", "From": name,
            "To": "console@serial", "DialogueID": dialog, "CSeq": 1}),
        );
        let mut c = Console {
            ws,
            name: name.into(),
            dialog,
            cseq: 2,
            out: Vec::new(),
            notices: Vec::new(),
        };
        let ok = c.until_response(1);
        assert_eq!(ok["Code"], 200, "{ok}");
        assert_eq!(ok["Body"]["encoding"], "base64");
        c.ws.send(
            &json!({"Type": "ACK", "Request-URI": "console@serial", "From": name,
            "To": "console@serial", "DialogueID": c.dialog, "CSeq": 2, "RelatedID": 1}),
        );
        c
    }

    /// Joins, then waits until the backend is connected: input before that is refused
    /// (503), and on a loaded machine the plugin may still be connecting to the port
    /// when the join is answered (seen while a benchmark ran beside the tests).
    fn join_connected(d: &Daemon, name: &str) -> Console {
        let mut c = Console::join(d, name);
        c.wait_notice("connected", WAIT);
        c
    }

    /// Takes one message: output and notices are kept (and answered), a response is
    /// returned.
    fn step(&mut self, limit: Duration) -> Option<Value> {
        let m = self.ws.recv_within(limit)?;
        if m["Type"] == "INFO" {
            assert_eq!(m["Content-Type"], "serial", "{m}");
            if let Some(d) = m["Body"]["data"].as_str() {
                self.out.extend(BASE64.decode(d.as_bytes()).unwrap());
            } else {
                self.notices.push(m["Body"].clone());
            }
            self.ws.send(
                &json!({"Type": "RESPONSE", "Code": 200, "From": m["From"], "To": m["To"],
                "DialogueID": m["DialogueID"], "CSeq": m["CSeq"]}),
            );
            return None;
        }
        Some(m)
    }

    fn until_response(&mut self, cseq: u64) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "no response to CSeq {cseq}");
            if let Some(m) = self.step(Duration::from_millis(200)) {
                if m["Type"] == "RESPONSE" && m["CSeq"] == cseq {
                    return m;
                }
            }
        }
    }

    /// Types `bytes` (one INFO) and checks it was taken.
    fn input(&mut self, bytes: &[u8]) {
        self.cseq += 1;
        let cseq = self.cseq;
        self.ws.send(
            &json!({"Type": "INFO", "Request-URI": "console@serial", "From": self.name,
            "To": "console@serial", "DialogueID": self.dialog, "CSeq": cseq,
            "Content-Type": "serial", "Body": {"data": BASE64.encode(bytes)}}),
        );
        let r = self.until_response(cseq);
        assert_eq!(r["Code"], 200, "{r}");
    }

    /// Reads until `needle` is in the output.
    fn wait_for(&mut self, needle: &[u8], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        // Only what came since the last look is searched: output can be megabytes.
        let mut searched: usize = 0;
        loop {
            if contains(&self.out[searched.saturating_sub(needle.len())..], needle) {
                break;
            }
            searched = self.out.len();
            assert!(
                Instant::now() < deadline,
                "{} never saw {:?}; it has {:?}",
                self.name,
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&self.out[self.out.len().saturating_sub(300)..])
            );
            self.step(Duration::from_millis(100));
        }
    }

    fn wait_notice(&mut self, key: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(n) = self.notices.iter().find(|n| n.get(key).is_some()) {
                return n.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{} got no {key} notice: {:?}",
                self.name,
                self.notices
            );
            self.step(Duration::from_millis(100));
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn between<'a>(hay: &'a [u8], start: &[u8], end: &[u8]) -> &'a [u8] {
    let s = hay
        .windows(start.len())
        .position(|w| w == start)
        .expect("start marker")
        + start.len();
    let e = hay[s..]
        .windows(end.len())
        .position(|w| w == end)
        .expect("end marker")
        + s;
    &hay[s..e]
}

/// The daemon with the serial plugin on QEMU's chardev `socket`.
fn start(socket: &std::path::Path, plugins: &str) -> (Prefix, Daemon) {
    start_with(
        &format!("backend = qemu\n[qemu]\nsocket = {}\n", socket.display()),
        plugins,
    )
}

/// The daemon with the serial plugin loaded, its `conf/serial/serial.ini` being `ini`.
fn start_with(ini: &str, plugins: &str) -> (Prefix, Daemon) {
    let prefix = Prefix::with_config(&format!(
        "{}\n[JSIPStack]\nrealm = node.test\n[Plugins]\n{plugins}\n",
        loopback_config("")
    ));
    prefix.add_plugin("serial", "serial.so");
    std::fs::create_dir_all(prefix.path().join("conf/serial")).unwrap();
    std::fs::write(prefix.path().join("conf/serial/serial.ini"), ini).unwrap();
    let d = Daemon::start(&prefix);
    load(&d);
    (prefix, d)
}

fn load(d: &Daemon) {
    for path in [
        "/slpm/v1/serial?file=serial.so",
        "/apim/v1/serial.v1?file=serial.so",
    ] {
        let r = request(d.api, "POST", path, &[], "");
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
}

fn booted_guest() -> Guest {
    guest::available().expect("the test guest needs its packages (see test.sh)");
    let mut g = Guest::start(&[]);
    g.qmp().execute("cont", json!({}));
    g.serial().wait_for("jsipd-guest: ready", BOOT_TIMEOUT);
    g
}

fn status(d: &Daemon) -> Value {
    get(d.api, "/serial/v1/status").json()["data"].clone()
}

#[test]
fn clients_share_the_console_byte_for_byte_and_a_late_one_gets_the_history_first() {
    let g = booted_guest();
    let (_p, d) = start(&g.serial1(), "");
    let mut alice = Console::join_connected(&d, "alice");
    let mut bob = Console::join(&d, "bob");
    assert!(alice
        .notices
        .iter()
        .chain(&bob.notices)
        .all(|n| n.get("lost").is_none()));
    // A command typed by alice runs on the guest; both see its output.
    alice.input(b"echo ran-$((6*7))-here\n");
    alice.wait_for(b"ran-42-here", WAIT);
    bob.wait_for(b"ran-42-here", WAIT);
    // Every byte value, written raw (no output processing) by the guest. (The command
    // stays short: busybox's line editor keeps 1024 characters.)
    bob.input(
        b"stty -opost; printf '%s' BEG IN; i=0; while [ $i -lt 256 ]; do printf \"\\\\$(printf %03o $i)\"; \
          i=$((i+1)); done; printf '%s' E ND; stty opost; echo\n",
    );
    let all: Vec<u8> = (0..=255).collect();
    for c in [&mut alice, &mut bob] {
        c.wait_for(b"END", WAIT);
        assert_eq!(
            between(&c.out, b"BEGIN", b"END"),
            &all[..],
            "{} got every byte",
            c.name
        );
    }
    // carol joins later: the history first, then live, nothing lost or doubled.
    let mut carol = Console::join(&d, "carol");
    alice.input(b"echo after-$((2*3))-carol\n");
    for c in [&mut alice, &mut carol] {
        c.wait_for(b"after-6-carol", WAIT);
    }
    let seen = |c: &Console| {
        let end = c
            .out
            .windows(13)
            .rposition(|w| w == b"after-6-carol")
            .unwrap()
            + 13;
        c.out[..end].to_vec()
    };
    assert_eq!(
        seen(&carol),
        seen(&alice),
        "carol's history plus live output is alice's stream"
    );
    let history = get(d.api, "/serial/v1/history");
    assert!(contains(&history.bytes, &all), "the ring has the raw bytes");
    let st = status(&d);
    assert_eq!(st["connected"], true, "{st}");
    assert_eq!(st["clients"].as_array().unwrap().len(), 3, "{st}");
    // POST /send types for scripts.
    let r = request(
        d.api,
        "POST",
        "/serial/v1/send",
        &[],
        "echo sent-$((5*5))-by-api\n",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    bob.wait_for(b"sent-25-by-api", WAIT);
    // A bad input is refused, and the console goes on.
    bob.cseq += 1;
    let cseq = bob.cseq;
    bob.ws.send(
        &json!({"Type": "INFO", "Request-URI": "console@serial", "From": "bob",
        "To": "console@serial", "DialogueID": bob.dialog, "CSeq": cseq,
        "Content-Type": "serial", "Body": {"data": "not base64!"}}),
    );
    let r = bob.until_response(cseq);
    assert_eq!(r["Code"], 400, "{r}");
    // Leaving: a dropped socket and a BYE both detach.
    drop(carol);
    bob.cseq += 1;
    let cseq = bob.cseq;
    bob.ws.send(
        &json!({"Type": "BYE", "Request-URI": "console@serial", "From": "bob",
        "To": "console@serial", "DialogueID": bob.dialog, "CSeq": cseq}),
    );
    assert_eq!(bob.until_response(cseq)["Code"], 200);
    let deadline = Instant::now() + WAIT;
    while status(&d)["clients"].as_array().unwrap().len() != 1 {
        assert!(Instant::now() < deadline, "{}", status(&d));
        alice.step(Duration::from_millis(50));
    }
}

#[test]
fn a_client_that_stops_reading_is_told_what_it_lost_while_the_others_keep_up() {
    let g = booted_guest();
    let (_p, d) = start(&g.serial1(), "");
    let mut alice = Console::join_connected(&d, "alice");
    let mut stalled = Console::join(&d, "stalled");
    // 1 MB of output while `stalled` reads nothing.
    alice.input(
        b"printf '%s' BEG IN; head -c 1000000 /dev/zero | tr '\\000' x; printf '%s' E ND; echo\n",
    );
    alice.wait_for(b"END", Duration::from_secs(120));
    let got = between(&alice.out, b"BEGIN", b"END");
    assert_eq!(got.len(), 1_000_000, "alice got every byte");
    assert!(got.iter().all(|b| *b == b'x'));
    let st = status(&d);
    assert!(st["drops"].as_u64().unwrap() >= 1, "{st}");
    // Now it reads: it is told how much it lost, then gets the history.
    let lost = stalled.wait_notice("lost", WAIT);
    assert!(lost["lost"].as_u64().unwrap() > 100_000, "{lost}");
    stalled.wait_for(b"END", WAIT);
}

#[test]
fn a_reload_ends_the_sessions_cleanly_and_a_rejoin_gets_the_history() {
    let g = booted_guest();
    let (_p, d) = start(&g.serial1(), "drain_timeout = 1s");
    let mut alice = Console::join_connected(&d, "alice");
    alice.input(b"echo before-$((3*3))-reload\n");
    alice.wait_for(b"before-9-reload", WAIT);
    load(&d);
    // The old generation's session ends with a BYE from the server.
    let deadline = Instant::now() + WAIT;
    let bye = loop {
        assert!(Instant::now() < deadline, "no BYE");
        if let Some(m) = alice.step(Duration::from_millis(100)) {
            if m["Type"] == "BYE" {
                break m;
            }
        }
    };
    assert_eq!(bye["DialogueID"], "ser-alice");
    alice.ws.send(
        &json!({"Type": "RESPONSE", "Code": 200, "From": bye["From"], "To": bye["To"],
        "DialogueID": bye["DialogueID"], "CSeq": bye["CSeq"]}),
    );
    let mut again = Console::join_connected(&d, "alice2");
    again.wait_for(b"before-9-reload", WAIT);
    again.input(b"echo after-$((4*4))-reload\n");
    again.wait_for(b"after-16-reload", WAIT);
}

#[test]
fn a_vanished_backend_is_reported_and_retried() {
    let g = booted_guest();
    let links = tempfile::tempdir().unwrap();
    let socket = links.path().join("serial.sock");
    std::os::unix::fs::symlink(g.serial1(), &socket).unwrap();
    let (_p, d) = start(&socket, "");
    let mut alice = Console::join_connected(&d, "alice");
    alice.input(b"echo up-$((1+1))\n");
    alice.wait_for(b"up-2", WAIT);
    // Only what comes after the guest is gone counts: if alice joined before the port
    // was connected, her first notice was `{"disconnected":"connecting"}`.
    alice.notices.clear();
    drop(g);
    let gone = alice.wait_notice("disconnected", WAIT);
    assert!(
        gone["disconnected"]
            .as_str()
            .unwrap()
            .contains("serial.sock"),
        "{gone}"
    );
    assert_eq!(status(&d)["connected"], false);
    // Input meanwhile is refused with the reason, not queued or hung.
    alice.cseq += 1;
    let cseq = alice.cseq;
    alice.ws.send(
        &json!({"Type": "INFO", "Request-URI": "console@serial", "From": "alice",
        "To": "console@serial", "DialogueID": alice.dialog, "CSeq": cseq,
        "Content-Type": "serial", "Body": {"text": "echo lost\n"}}),
    );
    assert_eq!(alice.until_response(cseq)["Code"], 503);
    // A new QEMU at the same path: the plugin reconnects by itself.
    let g2 = booted_guest();
    std::fs::remove_file(&socket).unwrap();
    std::os::unix::fs::symlink(g2.serial1(), &socket).unwrap();
    alice.notices.clear();
    alice.wait_notice("connected", Duration::from_secs(20));
    alice.input(b"echo back-$((2+5))\n");
    alice.wait_for(b"back-7", WAIT);
}

/// The `command` backend, and SIGHUP: a changed backend is switched to while clients
/// stay attached, and they are told; a broken file keeps the running one.
#[test]
fn sighup_switches_the_backend_and_attached_clients_are_told() {
    let (prefix, d) = start_with("backend = command\n[command]\nrun = /bin/cat\n", "");
    let ini = prefix.path().join("conf/serial/serial.ini");
    let mut c = Console::join_connected(&d, "alice");
    c.input(b"typed-into-cat\n");
    // The pty's echo, then cat's copy.
    c.wait_for(b"typed-into-cat\r\ntyped-into-cat\r\n", WAIT);

    std::fs::write(
        &ini,
        "backend = command\n[command]\nrun = /bin/sh -c echo${IFS}other-backend;cat\n",
    )
    .unwrap();
    // Only what comes after the SIGHUP counts: alice may have joined before cat was
    // up, and then her first notice was `{"disconnected":"connecting"}` (seen in CI).
    // It came before cat's echo above, so it is among those already read.
    c.notices.clear();
    d.signal(libc::SIGHUP);
    let gone = c.wait_notice("disconnected", WAIT);
    assert!(
        gone["disconnected"].as_str().unwrap().contains("SIGHUP"),
        "{gone}"
    );
    c.wait_for(b"other-backend", WAIT);
    assert!(status(&d)["backend"].as_str().unwrap().contains("/bin/sh"));

    std::fs::write(&ini, "backend = nothing\n").unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log("serial.ini rejected, keeping the running config", WAIT);
    c.input(b"still-here\n");
    c.wait_for(b"still-here\r\nstill-here", WAIT);
}

/// The console page in a real browser: Chromium joins over JSIP, a line typed into
/// the page reaches the backend, and its output shows on the page.
#[test]
fn the_console_page_in_chromium_types_and_shows_the_output() {
    assert!(
        webdriver::available(),
        "needs Debian chromium and chromium-driver (test.sh installs them)"
    );
    let (p, d) = start_with("backend = command\n[command]\nrun = /bin/cat\n", "");
    // A person opens the console on the people's port, signed in as an operator.
    p.add_user("olga", "operator", "console-password");
    d.signal(libc::SIGHUP);
    d.wait_log("sessions of changed or deleted users end", WAIT);
    let site = format!("http://{}", d.rtc.unwrap());
    let browser = Browser::start();
    browser.sign_in(
        &format!("{site}/?next=/serial/v1/"),
        "olga",
        "console-password",
    );
    browser.wait_for(
        "the page to join",
        "return document.getElementById('state').textContent.startsWith('connected')",
        WAIT,
    );
    browser.type_into("#input", "hello from chromium \u{e007}");
    // The pty's echo and cat's copy, both shown.
    browser.wait_for(
        "the line twice on the page",
        "return window.received.split('hello from chromium').length === 3",
        WAIT,
    );
    let st = status(&d);
    assert_eq!(st["clients"].as_array().unwrap().len(), 1, "{st}");
    assert!(st["bytes_out"].as_u64().unwrap() >= 20, "{st}");
    let shot = browser.screenshot("serial-console");
    assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"));
}
