//! The `hid` plugin end to end: the real daemon and `hid.so`, a browser-like WebSocket
//! client speaking JSIP, and as the target either FIFOs standing in for `/dev/hidg0..2`
//! (every report decoded and compared) or the QEMU test guest (the text it receives
//! compared byte for byte on its serial port).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use jsipd_e2e::guest::{self, Guest, BOOT_TIMEOUT};
use jsipd_e2e::http::request;
use jsipd_e2e::ws::Ws;
use jsipd_e2e::{loopback_config, Daemon, Prefix};
use serde_json::{json, Value};

fn start(hid_ini: &str) -> (Prefix, Daemon) {
    let p = Prefix::with_config(&(loopback_config("") + "[JSIPStack]\nrealm = kvm.test\n"));
    p.add_plugin("hid", "hid.so");
    let dir = p.path().join("conf/hid");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hid.ini"), hid_ini).unwrap();
    let d = Daemon::start(&p);
    for what in ["/apim/v1/hid.v1?file=hid.so", "/slpm/v1/hid?file=hid.so"] {
        let (status, v) = call(&d, "POST", what, "");
        assert_eq!(status, 200, "{what}: {v}");
    }
    (p, d)
}

fn call(d: &Daemon, method: &str, path: &str, body: &str) -> (u16, Value) {
    let r = request(d.api, method, path, &[], body);
    let v = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {path:?}"
    );
}

/// A FIFO standing in for a `/dev/hidgN`: a thread keeps every byte written to it.
struct Fifo {
    name: &'static str,
    size: usize,
    bytes: Arc<(Mutex<Vec<u8>>, Condvar)>,
    taken: usize,
}

impl Fifo {
    fn new(dir: &Path, name: &'static str, size: usize) -> Fifo {
        let path = dir.join(name);
        mkfifo(&path);
        // Read and write: the open does not wait for a writer, and reads block rather
        // than see end-of-file between the plugin's opens.
        let mut file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(0)
            .open(&path)
            .unwrap();
        let bytes = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let shared = bytes.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok(n) = file.read(&mut buf) {
                let (b, grew) = &*shared;
                b.lock().unwrap().extend_from_slice(&buf[..n]);
                grew.notify_all();
            }
        });
        Fifo {
            name,
            size,
            bytes,
            taken: 0,
        }
    }

    /// The next `n` reports, waiting up to 10 s for them.
    fn next(&mut self, n: usize) -> Vec<Vec<u8>> {
        let want = self.taken + n * self.size;
        let deadline = Instant::now() + Duration::from_secs(10);
        let (lock, grew) = &*self.bytes;
        let mut b = lock.lock().unwrap();
        while b.len() < want {
            let now = Instant::now();
            assert!(
                now < deadline,
                "{}: wanted {n} more reports, got {:02x?}",
                self.name,
                b[self.taken..].chunks(self.size).collect::<Vec<_>>()
            );
            b = grew.wait_timeout(b, deadline - now).unwrap().0;
        }
        let out = b[self.taken..want]
            .chunks(self.size)
            .map(<[u8]>::to_vec)
            .collect();
        self.taken = want;
        out
    }

    /// Reports written and not taken yet.
    fn pending(&self) -> usize {
        (self.bytes.0.lock().unwrap().len() - self.taken) / self.size
    }
}

/// A boot keyboard report: modifiers and keys.
fn kbd(mods: u8, keys: &[u8]) -> Vec<u8> {
    let mut r = vec![mods, 0, 0, 0, 0, 0, 0, 0];
    r[2..2 + keys.len()].copy_from_slice(keys);
    r
}

fn tablet(buttons: u8, x: u16, y: u16) -> Vec<u8> {
    let [xl, xh] = x.to_le_bytes();
    let [yl, yh] = y.to_le_bytes();
    vec![buttons, xl, xh, yl, yh, 0]
}

fn jsip(method: &str, who: &str, dialog: &str, cseq: u64) -> Value {
    json!({"Type": method, "Request-URI": "keyboard@hid.kvm.test", "From": format!("{who}@kvm.test"),
        "To": "keyboard@hid.kvm.test", "DialogueID": dialog, "CSeq": cseq})
}

/// Sends `m` and returns the answer to it (skipping anything else).
fn transact(ws: &mut Ws, m: &Value) -> Value {
    ws.send(m);
    loop {
        let r = ws.recv();
        if r["Type"] == "RESPONSE" && r["DialogueID"] == m["DialogueID"] && r["CSeq"] == m["CSeq"] {
            return r;
        }
    }
}

fn answered_200(r: Value) {
    assert_eq!(r["Code"], 200, "{r}");
}

/// Opens a session with the hid SLP: INVITE, 200, ACK.
fn session(ws: &mut Ws, who: &str, dialog: &str) {
    let ok = transact(ws, &jsip("INVITE", who, dialog, 1));
    assert_eq!(ok["Code"], 200, "{ok}");
    let mut ack = jsip("ACK", who, dialog, 2);
    ack["RelatedID"] = json!(1);
    ws.send(&ack);
}

/// Sends HID events as an INFO (or MESSAGE) and returns the answer.
fn hid(ws: &mut Ws, method: &str, who: &str, dialog: &str, cseq: u64, body: Value) -> Value {
    let mut m = jsip(method, who, dialog, cseq);
    m["Content-Type"] = json!("hid");
    m["Body"] = body;
    transact(ws, &m)
}

#[test]
fn gadget_reports_are_exact_and_every_key_is_released_on_disconnect_bye_and_failure() {
    let dir = tempfile::tempdir().unwrap();
    let mut keyboard = Fifo::new(dir.path(), "hidg0", 8);
    let mut tab = Fifo::new(dir.path(), "hidg2", 6);
    // The host's LED reports: a FIFO of their own here (hidg0 itself on a real gadget).
    let leds_path = dir.path().join("leds");
    mkfifo(&leds_path);
    // No hidg1: relative motion fails, as it does when the gadget is gone.
    let (_p, d) = start(&format!(
        "backend = gadget\npaste_max = 100\npaste_interval_ms = 2\n[gadget]\nkeyboard = {}\nmouse = {}\ntablet = {}\nleds = {}\n",
        dir.path().join("hidg0").display(),
        dir.path().join("missing-hidg1").display(),
        dir.path().join("hidg2").display(),
        leds_path.display(),
    ));

    // A browser session: Shift+A typed, then Ctrl and C held, the pointer moved and the
    // left button held.
    let mut alice = Ws::connect(d.rtc.unwrap(), "alice");
    session(&mut alice, "alice", "d1");
    answered_200(hid(
        &mut alice,
        "INFO",
        "alice",
        "d1",
        3,
        json!([
        {"key": "ShiftLeft", "down": true}, {"key": "KeyA", "down": true},
        {"key": "KeyA", "down": true}, // the browser's auto-repeat: nothing new
        {"key": "KeyA", "down": false}, {"key": "ShiftLeft", "down": false}]),
    ));
    assert_eq!(
        keyboard.next(4),
        [kbd(2, &[]), kbd(2, &[4]), kbd(2, &[]), kbd(0, &[])]
    );
    answered_200(hid(
        &mut alice,
        "INFO",
        "alice",
        "d1",
        4,
        json!([
        {"key": "ControlLeft", "down": true}, {"key": "KeyC", "down": true}]),
    ));
    assert_eq!(keyboard.next(2), [kbd(1, &[]), kbd(1, &[6])]);
    answered_200(hid(
        &mut alice,
        "INFO",
        "alice",
        "d1",
        5,
        json!({"x": 16384, "y": 8192}),
    ));
    answered_200(hid(
        &mut alice,
        "INFO",
        "alice",
        "d1",
        6,
        json!({"button": "left", "down": true}),
    ));
    assert_eq!(
        tab.next(2),
        [tablet(0, 16384, 8192), tablet(1, 16384, 8192)]
    );

    // Bad input is refused with a reason, and changes nothing.
    let mut m = jsip("INFO", "alice", "d1", 7);
    m["Content-Type"] = json!("text/plain");
    m["Body"] = json!("hello");
    let r = transact(&mut alice, &m);
    assert_eq!(r["Code"], 415, "{r}");
    let r = hid(
        &mut alice,
        "INFO",
        "alice",
        "d1",
        8,
        json!([{"key": "KeyB", "down": true}, {"key": "NoSuchKey", "down": true}]),
    );
    assert_eq!(r["Code"], 400, "{r}");
    assert!(r["Reason"].as_str().unwrap().contains("event 1"), "{r}");
    assert_eq!(keyboard.pending(), 0, "a refused batch writes nothing");

    // The socket drops: Ctrl, C and the left button come up at once.
    drop(alice);
    assert_eq!(keyboard.next(1), [kbd(0, &[])]);
    assert_eq!(tab.next(1), [tablet(0, 16384, 8192)]);
    d.wait_log(
        "released 3 keys and buttons of dialog d1: its peer's socket closed",
        Duration::from_secs(10),
    );

    // A session that ends with BYE lets go of its keys; another session's stay down.
    let mut bob = Ws::connect(d.rtc.unwrap(), "bob");
    let mut carol = Ws::connect(d.rtc.unwrap(), "carol");
    session(&mut bob, "bob", "d2");
    session(&mut carol, "carol", "d3");
    answered_200(hid(
        &mut bob,
        "INFO",
        "bob",
        "d2",
        3,
        json!({"key": "KeyZ", "down": true}),
    ));
    answered_200(hid(
        &mut carol,
        "INFO",
        "carol",
        "d3",
        3,
        json!({"key": "ShiftRight", "down": true}),
    ));
    assert_eq!(keyboard.next(2), [kbd(0, &[0x1d]), kbd(0x20, &[0x1d])]);
    let bye = transact(&mut bob, &jsip("BYE", "bob", "d2", 4));
    assert_eq!(bye["Code"], 200, "{bye}");
    assert_eq!(
        keyboard.next(1),
        [kbd(0x20, &[])],
        "carol's Shift stays down"
    );

    // A MESSAGE is a batch of its own: what it leaves down comes up when it ends.
    answered_200(hid(
        &mut bob,
        "MESSAGE",
        "bob",
        "m1",
        1,
        json!([{"key": "KeyB", "down": true}]),
    ));
    assert_eq!(keyboard.next(2), [kbd(0x20, &[5]), kbd(0x20, &[])]);

    // A write that fails releases everything, carol's Shift included, and says why.
    let r = hid(
        &mut carol,
        "INFO",
        "carol",
        "d3",
        4,
        json!({"dx": 5, "dy": -5}),
    );
    assert_eq!(r["Code"], 503, "{r}");
    assert!(
        r["Reason"].as_str().unwrap().contains("jsipd-gadget up"),
        "{r}"
    );
    assert_eq!(keyboard.next(1), [kbd(0, &[])]);

    // The API: a combination pressed in order and released in reverse.
    let (status, v) = call(&d, "POST", "/hid/v1/keys", r#"{"keys":"ctrl+alt+delete"}"#);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        keyboard.next(6),
        [
            kbd(1, &[]),
            kbd(5, &[]),
            kbd(5, &[0x4c]),
            kbd(5, &[]),
            kbd(1, &[]),
            kbd(0, &[])
        ]
    );
    let (status, v) = call(&d, "POST", "/hid/v1/keys", r#"{"keys":"ctrl+banana"}"#);
    assert_eq!(status, 400, "{v}");

    // Paste: US, then German (AltGr+Q is @), then what a layout cannot type.
    let (status, v) = call(&d, "POST", "/hid/v1/paste", r#"{"content":"Hi!\n"}"#);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        keyboard.next(8),
        [
            kbd(2, &[0x0b]),
            kbd(0, &[]),
            kbd(0, &[0x0c]),
            kbd(0, &[]),
            kbd(2, &[0x1e]),
            kbd(0, &[]),
            kbd(0, &[0x28]),
            kbd(0, &[])
        ]
    );
    let (status, v) = call(
        &d,
        "POST",
        "/hid/v1/paste",
        r#"{"content":"@z","layout":"de"}"#,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        keyboard.next(4),
        [
            kbd(0x40, &[0x14]),
            kbd(0, &[]),
            kbd(0, &[0x1c]),
            kbd(0, &[])
        ]
    );
    let (status, v) = call(
        &d,
        "POST",
        "/hid/v1/paste",
        r#"{"content":"a€bä€","layout":"us"}"#,
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["data"]["unsupported"], json!(["€", "ä"]), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("U+20AC"), "{v}");
    let (status, v) = call(
        &d,
        "POST",
        "/hid/v1/paste",
        r#"{"content":"a","layout":"klingon"}"#,
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .contains("us, uk, de, fr, es, it, ru"),
        "{v}"
    );
    let long = json!({"content": "x".repeat(101)}).to_string();
    let (status, v) = call(&d, "POST", "/hid/v1/paste", &long);
    assert_eq!(status, 413, "{v}");
    assert_eq!(keyboard.pending(), 0, "refused pastes type nothing");

    // Caps Lock on at the target (its LED report says so): letters swap their Shift, so
    // the text still comes out as given; digits do not.
    let mut host = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&leds_path)
        .unwrap();
    std::io::Write::write_all(&mut host, &[0x02]).unwrap();
    let (status, v) = call(&d, "POST", "/hid/v1/paste", r#"{"content":"aB1"}"#);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["caps_lock"], true, "{v}");
    assert_eq!(
        keyboard.next(6),
        [
            kbd(2, &[0x04]),
            kbd(0, &[]),
            kbd(0, &[0x05]),
            kbd(0, &[]),
            kbd(0, &[0x1e]),
            kbd(0, &[])
        ]
    );
    let (_, v) = call(&d, "GET", "/hid/v1/stats", "");
    assert_eq!(v["data"]["leds"]["caps_lock"], true, "{v}");
    std::io::Write::write_all(&mut host, &[0x00]).unwrap();
    let (status, v) = call(&d, "POST", "/hid/v1/paste", r#"{"content":"a"}"#);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["caps_lock"], false, "{v}");
    assert_eq!(keyboard.next(2), [kbd(0, &[0x04]), kbd(0, &[])]);

    // One paste at a time: a second gets 409, a queued one types after the first.
    let first = json!({"content": "a".repeat(100)}).to_string();
    let api = d.api;
    let typing = std::thread::spawn(move || request(api, "POST", "/hid/v1/paste", &[], &first));
    // The first paste is typing once its first report is out.
    keyboard.next(1);
    let (status, v) = call(&d, "POST", "/hid/v1/paste", r#"{"content":"b"}"#);
    assert_eq!(status, 409, "{v}");
    let (status, v) = call(
        &d,
        "POST",
        "/hid/v1/paste",
        r#"{"content":"b","queue":true}"#,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(typing.join().unwrap().status, 200);
    let rest = keyboard.next(199 + 2);
    assert!(rest[..199]
        .iter()
        .all(|r| *r == kbd(0, &[4]) || *r == kbd(0, &[])));
    assert_eq!(
        rest[199..],
        [kbd(0, &[5]), kbd(0, &[])],
        "the queued paste came last"
    );

    // Reset writes the empty state even when nothing is held.
    let (status, _) = call(&d, "POST", "/hid/v1/reset", "");
    assert_eq!(status, 200);
    assert_eq!(keyboard.next(1), [kbd(0, &[])]);
    assert_eq!(tab.next(1), [tablet(0, 16384, 8192)]);

    let (status, v) = call(&d, "GET", "/hid/v1/layouts", "");
    assert_eq!(status, 200);
    assert_eq!(v["data"]["default"], "us");
    let names: Vec<&str> = v["data"]["layouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["us", "uk", "de", "fr", "es", "it", "ru"]);
    let (status, v) = call(&d, "GET", "/hid/v1/stats", "");
    assert_eq!(status, 200);
    assert!(v["data"]["failures"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        v["data"]["latency_us"]["samples"].as_u64().unwrap() >= 10,
        "{v}"
    );
    println!(
        "input→report latency in the plugin: {}",
        v["data"]["latency_us"]
    );
    assert_eq!(call(&d, "GET", "/hid/v1/paste", "").0, 405);
    assert_eq!(call(&d, "GET", "/hid/v1/nothing", "").0, 404);
}

fn paste(d: &Daemon, text: &str, layout: &str) -> Value {
    let (status, v) = call(
        d,
        "POST",
        "/hid/v1/paste",
        &json!({"content": text, "layout": layout}).to_string(),
    );
    assert_eq!(status, 200, "paste {text:?}: {v}");
    v["data"].clone()
}

fn keys(d: &Daemon, keys: &str) {
    let (status, v) = call(
        d,
        "POST",
        "/hid/v1/keys",
        &json!({ "keys": keys }).to_string(),
    );
    assert_eq!(status, 200, "{keys}: {v}");
}

/// Pastes `text` into `cat > /dev/ttyS0` running on the guest's tty1, and checks that the
/// serial port received exactly its bytes. Returns characters per second.
fn paste_through_cat(d: &Daemon, serial: &guest::Serial, text: &str, layout: &str) -> f64 {
    // While cat runs, the serial line passes bytes unchanged (no \n → \r\n); the serial
    // shell stays untouched, as it would not survive -opost.
    paste(d, "stty -opost < /dev/ttyS0; cat > /dev/ttyS0\n", layout);
    let from = serial.len();
    let typed = paste(d, text, layout);
    // What cat wrote must be exactly the text.
    let got = serial.wait_for_ending(from, text.as_bytes(), Duration::from_secs(60));
    assert_eq!(
        String::from_utf8_lossy(&got),
        text,
        "the guest received other bytes than were pasted ({layout}); all since the paste: {:?}",
        String::from_utf8_lossy(&got)
    );
    // Ctrl+C ends cat; the shell is back.
    keys(d, "ctrl+c");
    paste(d, "stty opost < /dev/ttyS0\n", layout);
    let chars = typed["chars"].as_f64().unwrap();
    chars / (typed["ms"].as_f64().unwrap() / 1000.0)
}

#[test]
fn qemu_guest_receives_exact_text_in_us_and_german_ctrl_c_interrupts_and_the_pointer_moves() {
    guest::available().expect("the test guest needs its packages (see test.sh)");
    let mut g = Guest::start(&["hid"]);
    let (_p, d) = start(&format!(
        "backend = qemu\n[qemu]\nqmp = {}\n",
        g.plugin_qmp("hid").display()
    ));
    g.qmp().execute("cont", json!({}));
    let serial = g.serial();
    serial.wait_for("jsipd-guest: ready", BOOT_TIMEOUT);

    // Every printable ASCII character and a newline, on the US layout, 8 times: 760
    // characters, 1,520 reports, 5 ms apart on QEMU (`key_gap_ms`): under 20 s, the
    // answer's timeout, even at the 73 chars/s seen with 4 busy loops beside.
    let ascii: String = (0x20u8..0x7f).map(char::from).collect::<String>() + "\n";
    let ascii = ascii.repeat(8);
    let us_rate = paste_through_cat(&d, &serial, &ascii, "us");

    // Ctrl+C interrupts a running command: the echo after it runs at once, not in 600 s.
    paste(&d, "sleep 600\n", "us");
    // Only once it runs (on a loaded machine the shell may still be reading the line,
    // and a Ctrl+C then only clears it).
    serial.run("while ! ps | grep -q '[s]leep 600'; do usleep 10000; done; echo sleeping-$((1+1))");
    serial.wait_for("sleeping-2", Duration::from_secs(30));
    keys(&d, "ctrl+c");
    paste(&d, "echo $((6*7))-interrupted > /dev/ttyS0\n", "us");
    serial.wait_for("42-interrupted", Duration::from_secs(30));

    // German: the guest's console keymap is set to de, and the text is typed with de.
    serial.run("loadkmap < /etc/de.bmap && echo kmap-$((2+3))");
    serial.wait_for("kmap-5", Duration::from_secs(20));
    let german = "Grüße aus Köln: ÄÖÜ äöü ß @ € | {[]} \\ ~ <> µ ²³ 'quotes\" #1+2=3? â ^ é\n";
    let de_rate = paste_through_cat(&d, &serial, german, "de");

    // The absolute pointer: QEMU's current mouse is the USB tablet, and a move reaches
    // the guest's evdev as ABS_X / ABS_Y with the same values.
    let mice = g.qmp().execute("query-mice", json!({}));
    assert!(
        mice.as_array()
            .unwrap()
            .iter()
            .any(|m| m["absolute"] == true && m["current"] == true),
        "the current mouse is not absolute: {mice}"
    );
    serial.watch_tablet();
    let (status, v) = call(&d, "POST", "/hid/v1/mouse", r#"{"x":12345,"y":23456}"#);
    assert_eq!(status, 200, "{v}");
    // struct input_event on x86_64: 16 bytes of time, then type, code (u16) and value (i32).
    serial.wait_for("0300000039300000", Duration::from_secs(20)); // EV_ABS ABS_X 12345
    serial.wait_for("03000100a05b0000", Duration::from_secs(20)); // EV_ABS ABS_Y 23456
    let (status, v) = call(&d, "POST", "/hid/v1/mouse", r#"{"click":"left"}"#);
    assert_eq!(status, 200, "{v}");
    serial.wait_for("0100100101000000", Duration::from_secs(20)); // EV_KEY BTN_LEFT down
    serial.wait_for("0100100100000000", Duration::from_secs(20)); // and up

    println!(
        "paste on the QEMU guest: us {us_rate:.0} chars/s, de {de_rate:.0} chars/s, zero errors"
    );
}

/// jsipd-gadget on a real kernel: inside the guest, on its dummy USB device controller,
/// the guest's own USB host side enumerates the gadget, binds usbhid to the three HID
/// functions (so it accepted their report descriptors), and reports written to
/// /dev/hidg0..2 in the plugin's formats come out of evdev as the expected events.
#[test]
fn jsipd_gadget_makes_a_gadget_the_kernel_enumerates_and_its_reports_become_input_events() {
    guest::available().expect("the test guest needs its packages (see test.sh)");
    let files = guest::binary_for_the_guest(&jsipd_e2e::plugin_bin("jsipd-gadget"));
    let extra: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    let mut g = Guest::start_with(&[], &extra);
    g.qmp().execute("cont", json!({}));
    let serial = g.serial();
    serial.wait_for("jsipd-guest: ready", BOOT_TIMEOUT);

    serial.run("jsipd-gadget up && echo gadget-$((1+1))-up");
    let out = serial.wait_for("gadget-2-up", Duration::from_secs(30));
    assert!(out.contains("bound to dummy_udc.0"), "{out}");
    // Enumeration: one input device per HID function, named after the gadget's strings.
    serial.run(
        "n=0; while [ $(grep -c 'jsipd KVM' /proc/bus/input/devices) -lt 3 ] && [ $n -lt 200 ]; \
         do usleep 100000; n=$((n+1)); done; echo hid-inputs-$(grep -c 'jsipd KVM' /proc/bus/input/devices)-found",
    );
    // (On failure the serial shows how many were found.)
    serial.wait_for("hid-inputs-3-found", Duration::from_secs(40));

    // A reader per function's event device (interface N is hid.usbN), prefixed evN.
    serial.run(
        "evs=; for i in 0 1 2; do ev=$(grep -A4 \"Phys=.*dummy.*/input$i\\$\" /proc/bus/input/devices | grep -o 'event[0-9]*' | head -1); evs=\"$evs $ev\"; \
         dd if=/dev/input/$ev bs=24 2>/dev/null | hexdump -v -e \"\\\"ev$i \\\" 24/1 \\\"%02x\\\" \\\"\\\\n\\\"\" & done; \
         for ev in $evs; do while ! ls -l /proc/[0-9]*/fd 2>/dev/null | grep -q \"input/$ev\\$\"; do usleep 10000; done; done; echo readers-$((2*3))-open",
    );
    serial.wait_for("readers-6-open", Duration::from_secs(20));

    // Keyboard: Shift+A down, then all up (8-byte boot reports).
    serial.run("printf '\\002\\000\\004\\000\\000\\000\\000\\000' > /dev/hidg0; printf '\\000\\000\\000\\000\\000\\000\\000\\000' > /dev/hidg0");
    serial.wait_for("01002a0001000000", Duration::from_secs(20)); // EV_KEY KEY_LEFTSHIFT down
    serial.wait_for("01001e0001000000", Duration::from_secs(20)); // EV_KEY KEY_A down
    serial.wait_for("01001e0000000000", Duration::from_secs(20)); // KEY_A up
                                                                  // The plugin's own code (Hid over Gadget: poll, then a non-blocking write) on the real
                                                                  // f_hid device: Ctrl down, B down, B up, Ctrl up.
    serial.run("jsipd-gadget press ctrl+b && echo pressed-$((3+3))");
    serial.wait_for("pressed-6", Duration::from_secs(20));
    for event in [
        "01001d0001000000",
        "0100300001000000",
        "0100300000000000",
        "01001d0000000000",
    ] {
        serial.wait_for(event, Duration::from_secs(20));
    }
    // Relative mouse: left button, dx 5, dy -5 (4-byte reports).
    serial.run(
        "printf '\\001\\005\\373\\000' > /dev/hidg1; printf '\\000\\000\\000\\000' > /dev/hidg1",
    );
    serial.wait_for("0100100101000000", Duration::from_secs(20)); // BTN_LEFT down
    serial.wait_for("0200000005000000", Duration::from_secs(20)); // REL_X 5
    serial.wait_for("02000100fbffffff", Duration::from_secs(20)); // REL_Y -5
                                                                  // Absolute mouse: x 12345, y 23456 (6-byte reports, little-endian).
    serial.run("printf '\\000\\071\\060\\240\\133\\000' > /dev/hidg2");
    serial.wait_for("0300000039300000", Duration::from_secs(20)); // ABS_X 12345
    serial.wait_for("03000100a05b0000", Duration::from_secs(20)); // ABS_Y 23456

    // Caps Lock pressed through the gadget: the guest's kernel lights the LED, and the
    // output report it sends back is what hid reads (jsipd-gadget leds uses the same code).
    serial.run(
        "jsipd-gadget press capslock >/dev/null; n=0; \
         until jsipd-gadget leds | grep -q 'caps_lock on' || [ $n -ge 200 ]; do usleep 50000; n=$((n+1)); done; \
         jsipd-gadget press capslock >/dev/null; \
         until jsipd-gadget leds | grep -q 'caps_lock off' || [ $n -ge 400 ]; do usleep 50000; n=$((n+1)); done; \
         echo led-polls-$n-end$((9*9))",
    );
    let out = serial.wait_for("-end81", Duration::from_secs(60));
    let polls: u32 = out
        .rsplit("led-polls-")
        .next()
        .and_then(|t| t.split('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(999);
    assert!(
        polls < 200,
        "the Caps Lock LED report never came (or never went):\n{out}"
    );

    // The mass-storage LUN the storage plugin uses is there and removable.
    serial.run("echo removable-$(cat /sys/kernel/config/usb_gadget/jsipd/functions/mass_storage.usb0/lun.0/removable)-lun");
    serial.wait_for("removable-1-lun", Duration::from_secs(20));

    serial.run("jsipd-gadget down && [ ! -e /sys/kernel/config/usb_gadget/jsipd ] && echo gadget-$((2+2))-gone");
    serial.wait_for("gadget-4-gone", Duration::from_secs(30));
}
