//! The NanoKVM facade (`plugins/nanokvm`), end to end: a bash script written the way
//! NanoKVM users write theirs (`tests/nanokvm/nanokvm-script.sh`: openssl, jq, curl,
//! ffmpeg) runs against the real daemon's people's port with `stream`, `hid`, `gpio`
//! and `storage` driving the QEMU guest, and each answer and each effect on the guest
//! is checked. Then NanoKVM's input WebSocket, and bad input.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use jsipd_e2e::guest::{self, iso_with_marker, Guest, BOOT_TIMEOUT};
use jsipd_e2e::http::request;
use jsipd_e2e::{kvm, repo_root, wait_until, Daemon, Prefix};

fn start(g: &Guest) -> (Prefix, Daemon) {
    let p = kvm::guest_prefix(g, &["nanokvm"]);
    let d = Daemon::start(&p);
    kvm::load(&d, &kvm::PLUGINS, false);
    kvm::load(&d, &["nanokvm"], false);
    d.wait_log("and at /api/ on the people's port", Duration::from_secs(10));
    (p, d)
}

/// Runs one phase of the script; its answers by name.
fn script(
    d: &Daemon,
    out: &std::path::Path,
    user: &str,
    pass: &str,
    phase: &str,
) -> BTreeMap<String, Value> {
    let run = Command::new("bash")
        .arg(repo_root().join("tests/nanokvm/nanokvm-script.sh"))
        .arg(phase)
        .env("KVM", format!("http://{}", d.rtc.unwrap()))
        .env("KVM_USER", user)
        .env("KVM_PASS", pass)
        .env("OUT", out)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the script's {phase} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((
                k.to_string(),
                serde_json::from_str(v).unwrap_or_else(|e| panic!("{k}: {v}: {e}")),
            ))
        })
        .collect()
}

fn success(answers: &BTreeMap<String, Value>, name: &str) -> Value {
    let v = &answers[name];
    assert_eq!(
        (&v["code"], &v["msg"]),
        (&json!(0), &json!("success")),
        "{name}: {v}"
    );
    v.get("data").cloned().unwrap_or(Value::Null)
}

/// A NanoKVM login's JSON body for `user`/`password`, encrypted by openssl.
fn login_body(user: &str, password: &str) -> String {
    let out = Command::new("openssl")
        .args([
            "enc",
            "-aes-256-cbc",
            "-base64",
            "-A",
            "-salt",
            "-md",
            "md5",
        ])
        .args(["-pass", "pass:nanokvm-sipeed-2024"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(password.as_bytes())?;
            c.wait_with_output()
        })
        .expect("run openssl");
    let sealed = String::from_utf8(out.stdout).unwrap();
    let uri: String = sealed
        .trim()
        .bytes()
        .map(|b| match b {
            b'+' => "%2B".to_string(),
            b'/' => "%2F".to_string(),
            b'=' => "%3D".to_string(),
            b => (b as char).to_string(),
        })
        .collect();
    json!({"username": user, "password": uri}).to_string()
}

fn people(d: &Daemon, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let cookie = token.map(|t| format!("nano-kvm-token={t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(c) = &cookie {
        headers.push(("Cookie", c));
    }
    let r = request(d.rtc.unwrap(), method, path, &headers, body);
    (r.status, r.json())
}

fn login(d: &Daemon, user: &str, password: &str) -> String {
    let (status, v) = people(
        d,
        "POST",
        "/api/auth/login",
        None,
        &login_body(user, password),
    );
    assert_eq!(status, 200, "{v}");
    v["data"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {v}"))
        .to_string()
}

/// NanoKVM's input socket, with the token cookie.
fn input_socket(d: &Daemon, token: &str) -> WebSocket<TcpStream> {
    let addr = d.rtc.unwrap();
    let stream = TcpStream::connect(addr).unwrap();
    let req = tungstenite::handshake::client::Request::builder()
        .uri(format!("ws://{addr}/api/ws"))
        .header("Host", addr.to_string())
        .header("Cookie", format!("nano-kvm-token={token}"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header(
            "Sec-WebSocket-Key",
            tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .unwrap();
    tungstenite::client(req, stream)
        .expect("the /api/ws upgrade")
        .0
}

/// The US keyboard usages of `c` (shift, usage), for the few characters typed here.
fn usage(c: char) -> (bool, u8) {
    match c {
        'a'..='z' => (false, 0x04 + (c as u8 - b'a')),
        'A'..='Z' => (true, 0x04 + (c as u8 - b'A')),
        '1'..='9' => (false, 0x1e + (c as u8 - b'1')),
        '0' => (false, 0x27),
        ' ' => (false, 0x2c),
        '\n' => (false, 0x28),
        '/' => (false, 0x38),
        '>' => (true, 0x37),
        '-' => (false, 0x2d),
        _ => panic!("no usage for {c:?} here"),
    }
}

fn type_on(ws: &mut WebSocket<TcpStream>, text: &str) {
    for c in text.chars() {
        let (shift, key) = usage(c);
        let modifiers = if shift { 0x02 } else { 0 };
        ws.send(Message::Binary(
            vec![1, modifiers, 0, key, 0, 0, 0, 0, 0].into(),
        ))
        .unwrap();
        ws.send(Message::Binary(vec![1, 0, 0, 0, 0, 0, 0, 0, 0].into()))
            .unwrap();
    }
    ws.flush().unwrap();
}

fn hid_holders(d: &Daemon) -> u64 {
    let r = request(d.api, "GET", "/hid/v1/stats", &[], "");
    r.json()["data"]["holders"].as_u64().unwrap()
}

/// Waits until the guest's network card reports `carrier` (1 link, 0 none), asking the
/// guest's own shell; `tag` keeps each answer apart in the serial output, and the `""`
/// keeps the typed command's echo from matching its answer.
fn carrier_becomes(serial: &guest::Serial, tag: &str, carrier: u8) {
    let file = "/sys/class/net/eth0/carrier";
    serial.run(&format!(
        "n=0; until [ \"$(cat {file})\" = {carrier} ] || [ $n -ge 50 ]; do usleep 200000; n=$((n+1)); done; echo carrier-{tag}-\"\"is-$(cat {file})"
    ));
    serial.wait_for(
        &format!("carrier-{tag}-is-{carrier}"),
        Duration::from_secs(30),
    );
}

#[test]
fn a_nanokvm_users_script_runs_unchanged_against_the_guest() {
    guest::available().expect("the test guest needs its packages (see test.sh)");
    let g = Guest::start(&["hid", "gpio", "storage"]);
    let serial = g.serial();
    let (p, d) = start(&g);
    let out = tempfile::tempdir().unwrap();
    let iso = iso_with_marker(g.dir(), "nanokvm-marker-7d3f");
    std::fs::copy(&iso, p.path().join("images/marker.iso")).unwrap();

    // Phase 1: sign in, read the host, press power and see the LED follow.
    let a = script(&d, out.path(), "ada", "admin-password-1", "power");
    let token = success(&a, "login")["token"].as_str().unwrap().to_string();
    assert!(token.len() >= 32, "{token}");
    assert_eq!(success(&a, "account"), json!({"username": "ada"}));
    let info = success(&a, "info");
    assert_eq!(
        info["deviceKey"].as_str().unwrap(),
        std::fs::read_to_string("/etc/machine-id").unwrap().trim()
    );
    assert!(
        info["firmware"].as_str().unwrap().starts_with("jsipd "),
        "{info}"
    );
    assert_eq!(success(&a, "led-before")["pwr"], json!(false));
    assert_eq!(success(&a, "power"), Value::Null);
    assert_eq!(success(&a, "led-after")["pwr"], json!(true));
    serial.wait_for("jsipd-guest: ready", BOOT_TIMEOUT);

    // Phase 2: paste, MJPEG through ffmpeg, frame detect, virtual media, logout.
    let a = script(&d, out.path(), "ada", "admin-password-1", "media");
    success(&a, "paste");
    serial.wait_for("nanokvm-paste-42", Duration::from_secs(60));
    success(&a, "reset");
    let jpeg = std::fs::read(out.path().join("frame.jpg")).expect("ffmpeg wrote no frame.jpg");
    assert!(jpeg.len() > 500 && jpeg.starts_with(&[0xff, 0xd8]) && jpeg.ends_with(&[0xff, 0xd9]));
    let detect = success(&a, "detect")["enabled"].as_bool().unwrap();
    assert_eq!(success(&a, "detect-toggle"), json!({"enabled": !detect}));
    assert_eq!(success(&a, "detect-stop"), json!({"enabled": false}));
    let folder = std::fs::canonicalize(p.path().join("images")).unwrap();
    let wanted = format!("{}/marker.iso", folder.display());
    assert_eq!(success(&a, "images"), json!({"files": [wanted]}));
    success(&a, "mount");
    serial.wait_for(
        "jsipd-guest: cdrom mounted: nanokvm-marker-7d3f",
        Duration::from_secs(60),
    );
    assert_eq!(success(&a, "mounted"), json!({"file": wanted}));
    assert_eq!(success(&a, "mounted-too"), json!({"file": wanted}));
    assert_eq!(
        success(&a, "virtual"),
        json!({"network": true, "disk": true})
    );
    carrier_becomes(&serial, "up", 1);

    // Phase 3: pull the target's network cable (QMP set_link) and eject the disk.
    let a = script(&d, out.path(), "ada", "admin-password-1", "eject");
    assert_eq!(success(&a, "virtual-network"), json!({"on": false}));
    carrier_becomes(&serial, "pulled", 0);
    assert_eq!(success(&a, "virtual-disk"), json!({"on": false}));
    serial.wait_for("jsipd-guest: cdrom gone", Duration::from_secs(60));
    assert_eq!(success(&a, "mounted-after"), json!({"file": ""}));
    assert_eq!(
        success(&a, "virtual-after"),
        json!({"network": false, "disk": false})
    );

    // Phase 4: plug the cable back in, sign out.
    let a = script(&d, out.path(), "ada", "admin-password-1", "network");
    assert_eq!(success(&a, "virtual-network-again"), json!({"on": true}));
    carrier_becomes(&serial, "plugged", 1);
    assert_eq!(
        success(&a, "virtual-again"),
        json!({"network": true, "disk": false})
    );
    success(&a, "logout");
    assert_eq!(
        a["after-logout"],
        json!({"code": -1, "msg": "unauthorized"})
    );

    // NanoKVM's input socket types on the guest; a dropped socket lets go of its keys.
    let token = login(&d, "ada", "admin-password-1");
    let mut ws = input_socket(&d, &token);
    ws.send(Message::Binary(vec![0].into())).unwrap();
    type_on(&mut ws, "echo ws-typed-1 >/dev/ttyS0\n");
    serial.wait_for("ws-typed-1", Duration::from_secs(60));
    // Shift held, then the socket cut without a close frame.
    ws.send(Message::Binary(vec![1, 0x02, 0, 0, 0, 0, 0, 0, 0].into()))
        .unwrap();
    ws.flush().unwrap();
    wait_until(
        "hid holds the socket's Shift",
        Duration::from_secs(10),
        || hid_holders(&d) == 1,
    );
    drop(ws);
    wait_until(
        "the dropped socket's keys released",
        Duration::from_secs(10),
        || hid_holders(&d) == 0,
    );
    d.wait_log("/api/ws: ada closed", Duration::from_secs(10));
    let mut ws = input_socket(&d, &token);
    // Were Shift still down, this would be typed as ECHO and fail.
    type_on(&mut ws, "echo lower-after-drop >/dev/ttyS0\n");
    serial.wait_for("lower-after-drop", Duration::from_secs(60));
    drop(ws);

    // Bad input: NanoKVM's error envelope, and nothing changes.
    let refused = json!({"code": -2, "msg": "invalid username or password"});
    let (_, v) = people(
        &d,
        "POST",
        "/api/auth/login",
        None,
        &login_body("ada", "wrong-password"),
    );
    assert_eq!(v, refused);
    let bad_cipher = json!({"username": "ada", "password": "U2FsdGVkX1%2Bnotreally"}).to_string();
    assert_eq!(
        people(&d, "POST", "/api/auth/login", None, &bad_cipher).1,
        refused
    );
    let invalid = json!({"code": -1, "msg": "invalid arguments"});
    assert_eq!(
        people(&d, "POST", "/api/auth/login", None, "{\"username\":").1,
        invalid
    );
    let unauthorized = (401, json!({"code": -1, "msg": "unauthorized"}));
    assert_eq!(
        people(&d, "GET", "/api/vm/gpio/led", None, ""),
        unauthorized
    );
    assert_eq!(
        people(&d, "GET", "/api/vm/gpio/led", Some("forged-token"), ""),
        unauthorized
    );
    let t = Some(token.as_str());
    let (_, v) = people(
        &d,
        "POST",
        "/api/storage/image/mount",
        t,
        r#"{"file":"/etc/passwd"}"#,
    );
    assert_eq!(v["code"], json!(-2), "{v}");
    let escape = format!(r#"{{"file":"{}/../marker.iso"}}"#, folder.display());
    assert_eq!(
        people(&d, "POST", "/api/storage/image/mount", t, &escape).1["code"],
        json!(-2)
    );
    assert_eq!(
        people(&d, "GET", "/api/storage/image/mounted", t, "").1["data"],
        json!({"file": ""})
    );
    assert_eq!(
        people(&d, "POST", "/api/vm/gpio", t, "{not json").1,
        invalid
    );
    assert_eq!(
        people(&d, "POST", "/api/vm/gpio", t, r#"{"type":"kick"}"#).1,
        invalid
    );
    // A viewer may look but neither press nor pull the cable.
    let viewer = login(&d, "vic", "viewer-password-1");
    for (path, body) in [
        ("/api/vm/gpio", r#"{"type":"power"}"#),
        ("/api/vm/device/virtual", r#"{"device":"network"}"#),
    ] {
        let (status, v) = people(&d, "POST", path, Some(&viewer), body);
        assert_eq!((status, &v["code"]), (403, &json!(-1)), "{path}: {v}");
    }
    carrier_becomes(&serial, "after-viewer", 1);
    let (_, v) = people(&d, "GET", "/api/vm/gpio/led", Some(&viewer), "");
    assert_eq!(v["data"]["pwr"], json!(true), "the LED changed: {v}");
    assert_eq!(people(&d, "GET", "/api/nothing", t, "").0, 404);
}
