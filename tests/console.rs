//! The browser console, end to end: real headless Chromium on the people's port of the
//! real daemon, with `stream`, `hid`, `gpio` and `storage` loaded as `.so` plugins and
//! driving the QEMU test guest. Each step is done the way a person does it, through
//! the page (its form, its buttons, its keyboard capture, its file input), and checked
//! on the guest (its serial port, its power state, its CD drive). Screenshots of each
//! step are kept in `target/test-artifacts/console-*.png`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use jsipd_e2e::guest::{self, iso_with_marker, Guest, Serial, BOOT_TIMEOUT};
use jsipd_e2e::http::{get, request};
use jsipd_e2e::webdriver::{self, Browser};
use jsipd_e2e::{kvm, loopback_config, Daemon, Prefix};

const SHOWS: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The daemon with the four KVM plugins on the guest, and two accounts.
fn start(g: &Guest) -> (Prefix, Daemon) {
    let p = kvm::guest_prefix(g, &[]);
    let d = Daemon::start(&p);
    kvm::load(&d, &kvm::PLUGINS, false);
    kvm::load(&d, &["stream", "hid", "gpio"], true);
    (p, d)
}

fn browser() -> Browser {
    assert!(
        webdriver::available(),
        "needs Debian chromium and chromium-driver (test.sh installs them)"
    );
    Browser::start()
}

/// `window.jsipdConsole.PATH`, the page's own view of itself.
fn seen(b: &Browser, path: &str) -> Value {
    b.eval(&format!("return window.jsipdConsole.{path}"))
}

fn wait_seen(b: &Browser, what: &str, condition: &str, timeout: Duration) {
    b.wait_for(
        what,
        &format!("const c = window.jsipdConsole; return !!c && !!({condition})"),
        timeout,
    );
}

/// Whether the element is shown (not `display: none`, itself or an ancestor).
fn shown(b: &Browser, css: &str) -> bool {
    b.eval(&format!(
        "const e = document.querySelector({css:?}); return !!e && e.getClientRects().length > 0"
    )) == json!(true)
}

/// A fetch from the page, with its cookie: the status.
fn page_fetch(b: &Browser, method: &str, path: &str, body: &str) -> u64 {
    b.eval(&format!(
        "return fetch({path:?}, {{method: {method:?}, headers: {{'Content-Type': 'application/json'}}, body: {body}}}).then(r => r.status)",
        body = if body.is_empty() { "undefined".to_string() } else { format!("{body:?}") }
    ))
    .as_u64()
    .unwrap_or(0)
}

/// The mean colour of the page's video (WebRTC) frame, from a canvas.
const MEAN_RGB: &str = "const v = document.getElementById('video');
  if (!v.videoWidth) return [0, 0, 0, 0, 0];
  const c = document.createElement('canvas'); c.width = 64; c.height = 36;
  const x = c.getContext('2d'); x.drawImage(v, 0, 0, 64, 36);
  const d = x.getImageData(0, 0, 64, 36).data; let r = 0, g = 0, b = 0;
  for (let i = 0; i < d.length; i += 4) { r += d[i]; g += d[i + 1]; b += d[i + 2]; }
  const n = d.length / 4; return [r / n, g / n, b / n, v.videoWidth, v.videoHeight];";

fn wait_colour(b: &Browser, what: &str, want: impl Fn(f64, f64, f64) -> bool) {
    let deadline = Instant::now() + SHOWS;
    loop {
        let m = b.eval(MEAN_RGB);
        let c = |i: usize| m[i].as_f64().unwrap_or(0.0);
        if want(c(0), c(1), c(2)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the video never showed {what}: {m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Types `text` on the page's screen (which has the focus) and checks that the guest's
/// `cat > /dev/ttyS0` passed exactly those bytes to the serial port. In -icanon mode
/// each key reaches cat at once; returns each key's latency from the page's keydown
/// to its byte on the serial port, in ms.
fn type_and_compare(b: &Browser, serial: &Serial, text: &str) -> Vec<u64> {
    let mut latencies = Vec::new();
    for c in text.chars() {
        let from = serial.len();
        let keys_before = seen(b, "keys.length").as_u64().unwrap();
        b.type_keys(&c.to_string());
        let byte = c.to_string().into_bytes();
        let tail = serial.wait_for_ending(from, &byte, Duration::from_secs(20));
        let arrived = now_ms();
        assert!(
            tail == byte,
            "typed {c:?} on the page; the guest's serial got {:?}",
            String::from_utf8_lossy(&tail)
        );
        // The page's own stamp of the key's keydown (the last non-Shift key).
        let pressed = b.eval(&format!(
            "return window.jsipdConsole.keys.slice({keys_before}).filter(k => !k.code.startsWith('Shift')).map(k => k.at)"
        ));
        if let Some(at) = pressed
            .as_array()
            .and_then(|a| a.last())
            .and_then(Value::as_u64)
        {
            latencies.push(arrived.saturating_sub(at));
        }
    }
    latencies
}

/// Closes the page's JSIP socket from the server side, as an operator does
/// (`DELETE /runtime/v1/connections`): the socket of `user`'s one console tab.
fn cut_socket(d: &Daemon, user: &str) {
    let jstack = get(d.api, "/runtime/v1/jstack").json();
    let name = jstack["data"]["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .find(|n| n.starts_with(&format!("{user}~")))
        .expect("the page's socket")
        .to_string();
    let cut = request(
        d.api,
        "DELETE",
        &format!("/runtime/v1/connections?name={}", name.replace('~', "%7E")),
        &[],
        "",
    );
    assert_eq!(cut.status, 200, "{}", cut.body);
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn a_person_runs_the_guest_from_the_console_page() {
    guest::available().expect("the test guest needs its packages (see test.sh)");
    let mut g = Guest::start(&["hid", "gpio", "storage"]);
    let serial = g.serial();
    let (p, d) = start(&g);
    let site = format!("http://{}", d.rtc.expect("people's port"));

    // The page and its files, as the browser gets them: the size a person downloads.
    let b = browser();
    b.goto(&format!("{site}/"));
    b.wait_for(
        "the sign-in form",
        "return !!document.querySelector('#signin')",
        SHOWS,
    );
    b.type_into("#username", "ada");
    b.type_into("#password", "admin-password-1");
    let submitted = now_ms();
    b.type_into("#password", "\u{E007}");
    wait_seen(&b, "the connection", "c.conn === 'connected'", SHOWS);
    assert_eq!(
        b.eval("return document.querySelector('#user').textContent"),
        "ada"
    );
    wait_seen(&b, "the first video frame", "c.firstFrameAt", SHOWS);
    let first_frame_ms = seen(&b, "firstFrameAt").as_u64().unwrap() - submitted;
    assert_eq!(seen(&b, "video.mode"), "webrtc", "{}", seen(&b, "video"));
    // The guest is off (-S): the LED says so.
    wait_seen(&b, "the power LED", "c.leds && c.leds.pwr === false", SHOWS);
    let page_bytes = b
        .eval(
            "return Promise.all(['/', '/console/console.css', '/console/app.js', '/console/jsip.js',
             '/console/keys.js', '/console/pointer.js'].map(u => fetch(u).then(r => r.text())))
             .then(t => t.reduce((n, s) => n + new TextEncoder().encode(s).length, 0))",
        )
        .as_u64()
        .unwrap();
    b.screenshot("console-1-signed-in");

    // Power: the button asks once more, then presses; the guest boots and the LED follows.
    b.click("#power");
    assert_eq!(
        b.eval("return document.querySelector('#power').textContent"),
        "Press power?"
    );
    b.click("#power");
    wait_seen(
        &b,
        "the power LED on",
        "c.leds && c.leds.pwr === true",
        SHOWS,
    );
    assert_eq!(
        b.eval("return document.querySelector('#led-pwr').dataset.on"),
        "true"
    );
    serial.wait_for("jsipd-guest: ready", BOOT_TIMEOUT);

    // The video shows the guest's screen: it follows the guest painting its console red.
    assert_eq!(seen(&b, "video.width"), 720, "VGA text mode");
    serial.run("printf '\\033[41m\\033[2J' > /dev/tty1");
    wait_colour(&b, "the red console", |r, g, b| {
        r > 100.0 && g < 60.0 && b < 60.0
    });
    serial.run("printf '\\033[0m\\033[2J' > /dev/tty1");
    wait_colour(&b, "the black console again", |r, _, _| r < 60.0);
    b.screenshot("console-2-booted");

    // The keyboard: click the screen, type. On tty1, cat copies each key to the serial
    // port at once (-icanon), without newline translation (-opost).
    b.click("#screen");
    wait_seen(&b, "the keyboard session", "c.hidReady", SHOWS);
    b.type_keys("stty -opost < /dev/ttyS0; stty -icanon; cat > /dev/ttyS0\n");
    serial.run("while ! ps | grep -q '[c]at$'; do usleep 10000; done; echo cat-$((2+2))-runs");
    // The whole line: its newline must not count as typed (-opost: no \r).
    serial.wait_for("cat-4-runs\n", Duration::from_secs(30));
    let mut latencies = type_and_compare(
        &b,
        &serial,
        "Hello, KVM! 0123 ~!@#$%^&*()_+ {}|:\"<>? -=[]\\;',./`\n",
    );
    b.screenshot("console-3-typed");

    // A held key is released on the guest when the connection is cut: Shift goes down,
    // the server closes the page's socket, the page says so and reconnects by itself,
    // and a key typed then comes out unshifted.
    let from = serial.len();
    b.key_actions(&[
        ("\u{E008}".into(), true),
        ("a".into(), true),
        ("a".into(), false),
    ]);
    let shifted = serial.bytes_after(from, 1, Duration::from_secs(20));
    assert_eq!(String::from_utf8_lossy(&shifted), "A", "Shift is held");
    cut_socket(&d, "ada");
    wait_seen(&b, "the page to see the loss", "c.conn === 'lost'", SHOWS);
    assert!(b
        .eval("return document.querySelector('#conn').textContent")
        .as_str()
        .unwrap()
        .contains("Connection lost"),);
    b.screenshot("console-4-connection-lost");
    wait_seen(
        &b,
        "the reconnect",
        "c.conn === 'connected' && c.reconnects >= 1 && c.hidReady",
        SHOWS,
    );
    let from = serial.len();
    b.key_actions(&[("b".into(), true), ("b".into(), false)]);
    let after = serial.bytes_after(from, 1, Duration::from_secs(20));
    assert_eq!(
        String::from_utf8_lossy(&after),
        "b",
        "Shift was released on the guest"
    );
    b.release_actions();
    latencies.extend(type_and_compare(&b, &serial, "back\n"));
    // Ctrl+C ends cat; the shell is back.
    b.key_actions(&[
        ("\u{E009}".into(), true),
        ("c".into(), true),
        ("c".into(), false),
        ("\u{E009}".into(), false),
    ]);
    b.type_keys("stty icanon; stty opost < /dev/ttyS0\n");
    // A person sees that line run before pasting; the test watches the serial port's
    // mode. (Keys typed at WebDriver's speed are still being sent 5 ms apart, and a
    // paste started meanwhile would type between them.)
    serial.run("while stty -a < /dev/ttyS0 | grep -q -- -opost; do usleep 10000; done; echo opost-$((3+4))-back");
    serial.wait_for("opost-7-back", Duration::from_secs(30));

    // Paste: the panel, the layout chooser, the text typed on the guest.
    b.click("#open-paste");
    b.wait_for(
        "the layouts",
        "return document.querySelector('#paste-layout').options.length > 0",
        SHOWS,
    );
    b.type_into("#paste-text", "echo pasted-$((6*7)) > /dev/ttyS0\n");
    b.click("#paste-send");
    serial.wait_for("pasted-42", Duration::from_secs(60));
    b.wait_for(
        "the paste's result",
        "return document.querySelector('#paste-result').classList.contains('good')",
        SHOWS,
    );
    b.screenshot("console-5-pasted");

    // The mouse: a click on the picture, a quarter across and three quarters down,
    // reaches the guest's USB tablet at that place (0..=32767 on both axes).
    serial.watch_tablet();
    let r = b.eval(
        "const v = document.getElementById('video'), r = v.getBoundingClientRect();
         const s = Math.min(r.width / v.videoWidth, r.height / v.videoHeight);
         const w = v.videoWidth * s, h = v.videoHeight * s;
         return [r.left + (r.width - w) / 2, r.top + (r.height - h) / 2, w, h]",
    );
    let f = |i: usize| r[i].as_f64().unwrap();
    let (x, y) = ((f(0) + f(2) * 0.25).round(), (f(1) + f(3) * 0.75).round());
    b.click_at(x as i64, y as i64);
    // struct input_event on x86_64: 16 bytes of time, then type, code (u16), value (i32).
    let event = |kind: &str, code: &str, value: i32| {
        let v: String = value
            .to_le_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{kind}{code}{v}")
    };
    let abs = |at: f64, from: f64, size: f64| (((at - from) / size) * 32767.0).round() as i32;
    serial.wait_for(
        &event("0300", "0000", abs(x, f(0), f(2))),
        Duration::from_secs(20),
    );
    serial.wait_for(
        &event("0300", "0100", abs(y, f(1), f(3))),
        Duration::from_secs(20),
    );
    serial.wait_for(&event("0100", "1001", 1), Duration::from_secs(20)); // BTN_LEFT down
    serial.wait_for(&event("0100", "1001", 0), Duration::from_secs(20)); // and up

    // Virtual media: upload through the file input, progress to 100%, plug in as CD,
    // and the guest mounts it and prints its marker.
    b.click("#open-media");
    let iso = iso_with_marker(g.dir(), "console-marker-5c1e");
    b.type_into("#upload-file", iso.to_str().unwrap());
    b.wait_for(
        "the upload to finish",
        "return document.querySelector('#upload-percent').textContent === '100%'
           && document.querySelector('#upload-progress').value === 100
           && !!document.querySelector('li[data-name=\"marker.iso\"] button')",
        SHOWS,
    );
    b.click("li[data-name=\"marker.iso\"] .actions button");
    serial.wait_for(
        "jsipd-guest: cdrom mounted: console-marker-5c1e",
        Duration::from_secs(60),
    );
    b.wait_for(
        "the mounted line",
        "return document.querySelector('#mounted').textContent.includes('marker.iso')",
        SHOWS,
    );
    b.screenshot("console-6-media");
    // Unplug, then delete (it asks once more).
    b.click("#mounted button");
    serial.wait_for("jsipd-guest: cdrom gone", Duration::from_secs(60));
    b.wait_for(
        "nothing plugged in",
        "return document.querySelector('#mounted').textContent === 'Nothing is plugged in.'",
        SHOWS,
    );
    let delete = "li[data-name=\"marker.iso\"] .actions button:last-child";
    assert_eq!(
        b.eval(&format!(
            "return document.querySelector({delete:?}).textContent"
        )),
        "Delete"
    );
    b.click(delete);
    b.click(delete);
    b.wait_for(
        "the image gone from the list",
        "return !document.querySelector('li[data-name=\"marker.iso\"]')",
        SHOWS,
    );
    assert!(!p.path().join("images/marker.iso").exists());

    // A viewer, at the same time: sees the screen and who is here, no controls, and the
    // server refuses what the page does not show.
    let v = browser();
    v.sign_in(&format!("{site}/"), "vic", "viewer-password-1");
    wait_seen(&v, "the viewer's video", "c.frames > 0", SHOWS);
    for control in [
        "#power",
        "#reset",
        "#power-long",
        "#open-paste",
        "#open-media",
        "#paste-panel",
        "#media-panel",
        "#combo",
    ] {
        assert!(!shown(&v, control), "a viewer sees {control}");
    }
    assert!(shown(&b, "#power"), "the admin does see the power button");
    assert_eq!(page_fetch(&v, "POST", "/gpio/v1/power", ""), 403);
    assert_eq!(
        page_fetch(&v, "POST", "/hid/v1/paste", r#"{"content":"x"}"#),
        403
    );
    assert_eq!(page_fetch(&v, "POST", "/storage/v1/unmount", ""), 403);
    let invite = v.eval(
        "return window.jsipdConsole.jsip.request({Type: 'INVITE', 'Request-URI': 'kbd@hid', DialogueID: 'sneaky'}).then(r => r.Code)",
    );
    assert_eq!(invite, 403, "hid refuses a viewer's keyboard session");
    wait_seen(
        &b,
        "both people listed",
        "c.people && c.people.length === 2",
        SHOWS,
    );
    let people = b.eval("return document.querySelector('#people').textContent");
    assert!(
        people.as_str().unwrap().contains("vic (viewer)"),
        "{people}"
    );
    v.screenshot("console-7-viewer");
    drop(v);

    // Power off: a short press is the ACPI button; the guest shuts down, the LED follows.
    b.click("#open-media");
    b.click("#power");
    b.click("#power");
    serial.wait_for("jsipd-guest: acpi power button", Duration::from_secs(30));
    wait_seen(
        &b,
        "the power LED off",
        "c.leds && c.leds.pwr === false",
        SHOWS,
    );
    g.wait_status("shutdown", Duration::from_secs(30));
    b.screenshot("console-8-off");

    let p50 = percentile(&mut latencies, 0.5);
    let p95 = percentile(&mut latencies, 0.95);
    eprintln!(
        "console figures: sign-in to first video frame {first_frame_ms} ms; key press to the \
         guest's serial echo p50 {p50} ms, p95 {p95} ms ({} keys); page {page_bytes} bytes \
         (HTML+JS+CSS, uncompressed)",
        latencies.len()
    );
    assert!(p50 < 1000, "key to serial p50 {p50} ms");
}

/// The console without WebRTC and through a reload of the stream plugin: with the
/// stream loaded as an API only (no SLP to take the INVITE), the page says so and shows
/// MJPEG; with the SLP loaded, WebRTC; and when the plugin is reloaded, the page gets a
/// BYE and asks again by itself, without a reload of the page.
#[test]
fn the_console_falls_back_to_mjpeg_and_survives_a_stream_reload() {
    let p = Prefix::with_config(&format!(
        "{}\n[Plugins]\ndrain_timeout = 60s\n",
        loopback_config("").replace("auth = none\n", "auth = session\n")
    ));
    p.add_user("vic", "viewer", "viewer-password-1");
    p.add_plugin("stream", "stream.so");
    p.write_plugin_conf("stream", "fps = 30\n[webrtc]\naddresses = 127.0.0.1\n");
    let d = Daemon::start(&p);
    let api = request(d.api, "POST", "/apim/v1/stream.v1?file=stream.so", &[], "");
    assert_eq!(api.status, 200, "{}", api.body);
    let site = format!("http://{}", d.rtc.expect("people's port"));

    // Without a session the files are there (they hold nothing secret), who is here is not.
    assert_eq!(get(d.rtc.unwrap(), "/console/app.js").status, 200);
    assert_eq!(get(d.rtc.unwrap(), "/console/nothing.js").status, 404);
    assert_eq!(get(d.rtc.unwrap(), "/auth/people").status, 401);

    let b = browser();
    b.sign_in(&format!("{site}/"), "vic", "viewer-password-1");
    wait_seen(
        &b,
        "the MJPEG fallback",
        "c.video.mode === 'mjpeg' && c.video.width > 0",
        SHOWS,
    );
    let why = b.eval("return document.querySelector('#screen-note').textContent + ' / ' + document.querySelector('#video-info').title");
    assert!(
        why.as_str().unwrap().contains("WebRTC did not play (404"),
        "the page says why: {why}"
    );
    assert!(shown(&b, "#mjpeg") && !shown(&b, "#video"));
    b.screenshot("console-mjpeg-fallback");

    // With the SLP, WebRTC, chosen in the page's Video menu.
    let slp = request(d.api, "POST", "/slpm/v1/stream?file=stream.so", &[], "");
    assert_eq!(slp.status, 200, "{}", slp.body);
    b.eval("const s = document.querySelector('#video-mode'); s.value = 'webrtc'; s.dispatchEvent(new Event('change')); return true");
    wait_seen(
        &b,
        "WebRTC frames",
        "c.video.mode === 'webrtc' && c.frames > 10",
        SHOWS,
    );
    assert!(shown(&b, "#video") && !shown(&b, "#mjpeg"));
    // The page's keepalive: an UPDATE in its video dialog is answered 200 (the stack
    // resets the session timer); in a dialog the server does not know, 481.
    let update = |dialog: &str| {
        b.eval(&format!(
            "return window.jsipdConsole.jsip.request({{Type: 'UPDATE', 'Request-URI': 'screen@stream', \
             DialogueID: {dialog}, Expire: 120}}).then(r => r.Code)"
        ))
    };
    assert_eq!(update("window.jsipdConsole.video.dialog"), 200);
    assert_eq!(update("'no-such-dialog'"), 481);

    // A reload: the page is told (BYE), and plays again on the new generation.
    let frames = seen(&b, "frames").as_u64().unwrap();
    let r = request(d.api, "POST", "/slpm/v1/stream?file=stream.so", &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
    d.wait_log("WebRTC session ends", SHOWS);
    wait_seen(
        &b,
        "WebRTC frames after the reload",
        &format!("c.video.mode === 'webrtc' && c.frames > {frames} + 30"),
        SHOWS,
    );
    let status = get(d.api, "/stream/v1/status").json();
    assert_eq!(status["data"]["webrtc"]["viewers"], 1, "{status}");

    // The session ends elsewhere, then the socket drops: the page cannot come back, so it
    // goes to the sign-in form instead of retrying for ever.
    assert_eq!(page_fetch(&b, "POST", "/auth/logout", ""), 200);
    cut_socket(&d, "vic");
    b.wait_for(
        "the sign-in form",
        "return !!document.querySelector('#signin')",
        SHOWS,
    );
}
