//! The `stream` plugin end to end: the real daemon loads `stream.so` and real HTTP
//! clients watch its MJPEG stream, take snapshots, change settings, and stall; the
//! QEMU test guest's screen comes in through its real VNC server.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use jsipd_e2e::guest::{self, Guest, BOOT_TIMEOUT};
use jsipd_e2e::http::{get, request};
use jsipd_e2e::mjpeg::Mjpeg;
use jsipd_e2e::webdriver::{self, Browser};
use jsipd_e2e::ws::WAIT;
use jsipd_e2e::{loopback_config, wait_until, Daemon, Prefix};
use stream::framecode::{self, Stamp};

fn start(stream_ini: &str, plugins_section: &str) -> (Prefix, Daemon) {
    let prefix = Prefix::with_config(&format!(
        "{}\n[Plugins]\n{plugins_section}\n",
        loopback_config("")
    ));
    prefix.add_plugin("stream", "stream.so");
    std::fs::create_dir_all(prefix.path().join("conf/stream")).unwrap();
    std::fs::write(prefix.path().join("conf/stream/stream.ini"), stream_ini).unwrap();
    let d = Daemon::start(&prefix);
    load(&d);
    (prefix, d)
}

fn load(d: &Daemon) {
    let r = request(d.api, "POST", "/apim/v1/stream.v1?file=stream.so", &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
}

fn status(d: &Daemon) -> Value {
    get(d.api, "/stream/v1/status").json()["data"].clone()
}

fn decode(jpeg: &[u8]) -> (usize, usize, Vec<u8>) {
    stream::jpeg::decode_bgrx(jpeg)
        .unwrap_or_else(|e| panic!("not a JPEG ({} bytes): {e}", jpeg.len()))
}

fn stamp(jpeg: &[u8]) -> Stamp {
    let (w, _, px) = decode(jpeg);
    framecode::read_rgbx(&px, w, w * 4).expect("the frame carries a readable stamp")
}

fn snapshot(d: &Daemon) -> jsipd_e2e::http::Response {
    get(d.api, "/stream/v1/snapshot")
}

/// The mean colour of a decoded BGRX picture, as (r, g, b).
fn mean_rgb(px: &[u8]) -> (u64, u64, u64) {
    let n = (px.len() / 4) as u64;
    let (mut r, mut g, mut b) = (0u64, 0u64, 0u64);
    for p in px.chunks_exact(4) {
        b += p[0] as u64;
        g += p[1] as u64;
        r += p[2] as u64;
    }
    (r / n, g / n, b / n)
}

/// The daemon's CPU time so far (user + system), in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap()
}

fn capture_threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|n| n.trim() == "stream-capture")
        .count()
}

#[test]
fn testsrc_frames_reach_mjpeg_viewers_and_snapshots_with_advancing_stamps() {
    let (_p, d) = start("fps = 30\n", "");
    assert_eq!(status(&d)["capturing"], false, "nobody watches yet");

    let shot = snapshot(&d);
    assert_eq!(shot.status, 200, "{}", shot.body);
    assert_eq!(shot.header("content-type"), Some("image/jpeg"));
    let s = stamp(&shot.bytes);
    assert!(s.frame >= 1);
    assert!(s.age_ms(stream::source::now_ms()) < 5000, "{s:?}");
    let (w, h, _) = decode(&shot.bytes);
    assert_eq!((w, h), (1280, 720));

    let started = Instant::now();
    let mut viewer = Mjpeg::open(d.api, "/stream/v1/mjpeg");
    let first = viewer.next_part().unwrap();
    let first_frame_ms = started.elapsed().as_millis();
    assert_eq!(
        first.headers,
        vec![("content-type".into(), "image/jpeg".into())]
    );
    let mut last = stamp(&first.jpeg).frame;
    for _ in 0..30 {
        let part = viewer.next_part().expect("the stream goes on");
        let n = stamp(&part.jpeg).frame;
        assert!(n > last, "frame numbers advance: {n} after {last}");
        last = n;
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        first_frame_ms < 2000,
        "first frame after {first_frame_ms} ms"
    );
    let st = status(&d);
    assert_eq!(st["capturing"], true);
    assert_eq!(st["viewers"], 1);
    assert_eq!(st["source"], "testsrc");
    assert!(st["fps_in"].as_f64().unwrap() > 10.0, "{st}");
    assert!(31.0 / elapsed > 10.0, "31 frames in {elapsed:.1} s");

    // The classic form: every part has its Content-Length.
    let mut classic = Mjpeg::open(d.api, "/stream/v1/mjpeg?advance=0");
    for _ in 0..3 {
        let part = classic.next_part().unwrap();
        let len: usize = part
            .headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .expect("content-length")
            .1
            .parse()
            .unwrap();
        assert_eq!(len, part.jpeg.len());
        stamp(&part.jpeg);
    }

    let text = request(
        d.api,
        "GET",
        "/stream/v1/status",
        &[("Accept", "text/plain")],
        "",
    );
    assert!(text.body.contains("frames.encoded"), "{}", text.body);
    assert!(text
        .body
        .lines()
        .any(|l| l.starts_with("source ") && l.ends_with("testsrc")));
}

/// A TCP connection whose receive buffer is 4 KiB (set before connecting, so the window
/// is small from the start): a viewer on a slow link, once it stops reading.
fn connect_with_small_receive_buffer(addr: std::net::SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(v4) = addr else {
        panic!("the test API listens on IPv4")
    };
    // SAFETY: plain socket calls on a descriptor this function owns until it hands it
    // to TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

#[test]
fn ten_viewers_with_one_that_never_reads_keep_their_rate_and_memory_stays_bounded() {
    let (_p, d) = start("fps = 25\nwidth = 640\nheight = 360\n", "");
    // The stuck viewer: asks, then never reads a byte, with a small receive buffer.
    let mut stuck = connect_with_small_receive_buffer(d.api);
    stuck
        .write_all(b"GET /stream/v1/mjpeg HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let readers: Vec<_> = (0..9)
        .map(|_| {
            let api = d.api;
            std::thread::spawn(move || {
                let mut v = Mjpeg::open(api, "/stream/v1/mjpeg");
                v.next_part().unwrap();
                let started = Instant::now();
                let mut frames = 0u32;
                let mut last = 0;
                while started.elapsed() < Duration::from_secs(4) {
                    let n = stamp(&v.next_part().unwrap().jpeg).frame;
                    assert!(n > last);
                    last = n;
                    frames += 1;
                }
                (frames, frames as f64 / started.elapsed().as_secs_f64())
            })
        })
        .collect();
    wait_until("ten viewers", WAIT, || status(&d)["viewers"] == 10);
    // By now the stuck viewer's socket buffers have filled; the server's memory must
    // not grow with the frames it cannot send.
    std::thread::sleep(Duration::from_millis(1500));
    let rss_before = rss_kib(d.pid());
    let results: Vec<(u32, f64)> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let rates: Vec<f64> = results.iter().map(|r| r.1).collect();
    let rss_after = rss_kib(d.pid());
    let fps_in = status(&d)["fps_in"].as_f64().unwrap();
    for r in &rates {
        assert!(
            *r > 0.6 * 25.0,
            "a reading viewer got {r:.1} fps: {rates:?} (source {fps_in})"
        );
    }
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB while one viewer stalled"
    );
    // The stuck viewer was sent what fit into its socket's buffers (the kernel bounds
    // them), then nothing more: with the readers gone, nothing is sent at all.
    let sent = status(&d)["frames"]["sent"].as_u64().unwrap();
    let to_readers: u64 = results.iter().map(|r| r.0 as u64 + 1).sum();
    let to_stuck = sent - to_readers;
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        status(&d)["frames"]["sent"].as_u64().unwrap(),
        sent,
        "the stuck viewer ({to_stuck} frames so far) is not sent more"
    );
    assert!(
        to_stuck < results.iter().map(|r| r.0 as u64).min().unwrap(),
        "the stuck viewer got {to_stuck} frames, as many as a reader"
    );
    drop(stuck);
}

#[test]
fn without_viewers_the_capture_stops_and_costs_no_cpu() {
    let (_p, d) = start("fps = 30\n", "");
    {
        let mut v = Mjpeg::open(d.api, "/stream/v1/mjpeg");
        for _ in 0..5 {
            v.next_part().unwrap();
        }
        assert_eq!(capture_threads(d.pid()), 1);
    }
    wait_until("the capture stops", WAIT, || {
        status(&d)["capturing"] == false
    });
    wait_until("the capture thread is gone", WAIT, || {
        capture_threads(d.pid()) == 0
    });
    let before = cpu_ticks(d.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(d.pid()) - before;
    // A tick is 10 ms: 2 s of capture at 30 fps cost far more than this.
    assert!(used <= 3, "{used} ticks of CPU in 2 s with no viewer");
    assert_eq!(status(&d)["fps_in"], 0.0);
    // And it starts again for the next viewer, with a fresh frame.
    let shot = snapshot(&d);
    assert_eq!(shot.status, 200);
    assert!(stamp(&shot.bytes).age_ms(stream::source::now_ms()) < 2000);
}

#[test]
fn unchanged_frames_are_not_encoded_or_sent_until_drop_same_is_switched_off() {
    let (_p, d) = start("fps = 20\n[testsrc]\nmotion = off\n", "");
    let mut v = Mjpeg::open(d.api, "/stream/v1/mjpeg");
    let first = v.next_part().unwrap();
    let first_stamp = stamp(&first.jpeg);
    wait_until("unchanged frames", WAIT, || {
        status(&d)["frames"]["unchanged"].as_u64().unwrap() >= 10
    });
    let st = status(&d);
    assert_eq!(st["frames"]["encoded"], 1, "{st}");
    assert_eq!(st["frames"]["sent"], 1, "{st}");

    let r = request(
        d.api,
        "POST",
        "/stream/v1/settings",
        &[],
        r#"{"drop_same":false}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["drop_same"], false);
    let started = Instant::now();
    for _ in 0..10 {
        let part = v.next_part().unwrap();
        assert_eq!(stamp(&part.jpeg), first_stamp, "the same still picture");
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "frames flow again"
    );
    assert!(status(&d)["frames"]["encoded"].as_u64().unwrap() > 5);
}

#[test]
fn settings_apply_live_and_bad_input_is_named() {
    let (p, d) = start("fps = 30\n", "");
    let post = |body: &str| request(d.api, "POST", "/stream/v1/settings", &[], body);
    for (body, names) in [
        (r#"{"fps":500}"#, "fps must be"),
        (r#"{"quality":"best"}"#, "quality must be"),
        (r#"{"width":641}"#, "even"),
        (r#"{"bitrate":1}"#, "bitrate must be"),
        (r#"{"colour":1}"#, "unknown setting \"colour\""),
        (r#"[1,2]"#, "JSON object"),
        ("not json", "JSON object"),
    ] {
        let r = post(body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(
            r.json()["msg"].as_str().unwrap().contains(names),
            "{body}: {}",
            r.body
        );
    }
    assert_eq!(post(&"x".repeat(5000)).status, 413);
    assert_eq!(get(d.api, "/stream/v1/nothing").status, 404);
    assert_eq!(
        request(d.api, "DELETE", "/stream/v1/mjpeg", &[], "").status,
        405
    );
    assert_eq!(get(d.api, "/stream/v1/settings").json()["data"]["fps"], 30);

    let r = post(r#"{"width":640,"height":360,"quality":60}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let shot = snapshot(&d);
    let (w, h, _) = decode(&shot.bytes);
    assert_eq!((w, h), (640, 360), "the new size applies");
    assert_eq!(status(&d)["settings"]["quality"], 60);

    // The page that shows the stream.
    let page = get(d.api, "/stream/v1/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<img id=\"screen\" src=\"mjpeg\""));

    // A broken ini: SIGHUP keeps the running config, and it still serves.
    std::fs::write(
        p.path().join("conf/stream/stream.ini"),
        "fps = 30\nfps_max = 9\n",
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    let line = d.wait_log("stream.ini rejected, keeping the running config", WAIT);
    assert!(line.contains("stream.ini line 2"), "{line}");
    assert_eq!(snapshot(&d).status, 200);
    // A load with it is refused, naming the file and line.
    assert_eq!(
        request(d.api, "DELETE", "/apim/v1/stream.v1", &[], "").status,
        200
    );
    let r = request(d.api, "POST", "/apim/v1/stream.v1?file=stream.so", &[], "");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("stream.ini line 2"), "{}", r.body);
}

#[test]
fn viewers_of_a_replaced_or_deleted_plugin_see_their_stream_end_cleanly_at_once() {
    // drain_timeout is long: the streams must end because the plugin ends them.
    let (_p, d) = start("fps = 30\n", "drain_timeout = 60s");
    let mut old = Mjpeg::open(d.api, "/stream/v1/mjpeg");
    old.next_part().unwrap();
    let started = Instant::now();
    load(&d); // a new generation replaces the running one
    assert!(
        old.closed_cleanly(),
        "the old stream ends with its closing boundary"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it ended after {:?}",
        started.elapsed()
    );
    // The new generation serves at once, from the same capture.
    let mut new = Mjpeg::open(d.api, "/stream/v1/mjpeg");
    stamp(&new.next_part().unwrap().jpeg);
    stamp(&new.next_part().unwrap().jpeg);
    // DELETE with a viewer: it ends cleanly too, and the plugin leaves memory.
    let started = Instant::now();
    let r = request(d.api, "DELETE", "/apim/v1/stream.v1", &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(new.closed_cleanly());
    assert!(started.elapsed() < Duration::from_secs(5));
    d.wait_log("its image left memory", WAIT);
    wait_until("no capture thread", WAIT, || capture_threads(d.pid()) == 0);
}

/// The QEMU guest's screen through its VNC server: the text-mode console, a colour the
/// guest paints, a mode change, and QEMU going away and coming back.
#[test]
fn the_qemu_guest_screen_follows_what_the_guest_draws_and_its_mode_changes() {
    if let Err(why) = guest::available() {
        panic!("the QEMU test guest is not available: {why}");
    }
    let mut g = Guest::start(&[]);
    g.qmp().execute("cont", json!({}));
    g.serial().wait_for("jsipd-guest: ready", BOOT_TIMEOUT);
    // The plugin reads the socket through a link, so a restarted QEMU can take its place.
    let links = tempfile::tempdir().unwrap();
    let vnc = links.path().join("vnc.sock");
    std::os::unix::fs::symlink(g.vnc(), &vnc).unwrap();
    let (_p, d) = start(
        &format!("source = qemu\nfps = 30\n[qemu]\nvnc = {}\n", vnc.display()),
        "",
    );

    let shot = snapshot(&d);
    assert_eq!(shot.status, 200, "{}", shot.body);
    let (w, h, px) = decode(&shot.bytes);
    assert_eq!((w, h), (720, 400), "VGA text mode");
    let (r, _, b) = mean_rgb(&px);
    assert!(r < 60 && b < 60, "a dark console: {:?}", mean_rgb(&px));

    // The guest paints its console red.
    g.serial().run("printf '\\033[41m\\033[2J' > /dev/tty1");
    wait_until("a red screen", WAIT, || {
        let shot = snapshot(&d);
        let (_, _, px) = decode(&shot.bytes);
        let (r, g, b) = mean_rgb(&px);
        r > 100 && g < 60 && b < 60
    });

    // The guest switches to a framebuffer console: the picture follows the new size.
    let mut viewer = Mjpeg::open(d.api, "/stream/v1/mjpeg");
    viewer.next_part().unwrap();
    g.serial()
        .run("for m in $(cat /lib/modules/bochs.order); do insmod /lib/modules/$m.ko; done");
    let deadline = Instant::now() + WAIT * 2;
    loop {
        let (w, h, _) = decode(&viewer.next_part().expect("the stream goes on").jpeg);
        if (w, h) != (720, 400) {
            assert!(w >= 640 && h >= 480, "the new mode: {w}x{h}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the picture kept the text mode's size"
        );
    }
    let st = status(&d);
    assert!(
        st["describe"].as_str().unwrap().contains("qemu VNC"),
        "{st}"
    );

    // QEMU goes away: viewers get the no-signal picture, snapshots say why.
    drop(g);
    let deadline = Instant::now() + WAIT;
    loop {
        let part = viewer
            .next_part()
            .expect("the stream goes on without its source");
        let (_, _, px) = decode(&part.jpeg);
        if px[..4] == [48, 40, 40, 255][..] || status(&d)["no_signal"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "no no-signal picture");
    }
    let r = snapshot(&d);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("no signal") && r.body.contains("vnc.sock"),
        "{}",
        r.body
    );

    // A new QEMU at the same path: the stream comes back by itself.
    let mut g2 = Guest::start(&[]);
    g2.qmp().execute("cont", json!({}));
    std::fs::remove_file(&vnc).unwrap();
    std::os::unix::fs::symlink(g2.vnc(), &vnc).unwrap();
    wait_until("the picture comes back", WAIT * 2, || {
        status(&d)["no_signal"] == false
    });
    assert_eq!(snapshot(&d).status, 200);
}

/// A person's browser: Chromium's `<img>` shows the stream, and the page reads the
/// frame stamps back through a canvas: they advance, and their age is the latency
/// from capture to a decoded picture in the browser.
#[test]
fn chromium_shows_the_mjpeg_stream_and_its_frames_advance() {
    assert!(
        webdriver::available(),
        "needs Debian chromium and chromium-driver (test.sh installs them)"
    );
    let (_p, d) = start("fps = 30\n", "");
    let browser = Browser::start();
    browser.goto(&format!("http://{}/stream/v1/", d.api));
    browser.wait_for(
        "60 decoded frame stamps",
        "return window.stamps.length >= 60",
        WAIT,
    );
    let stamps = browser.eval("return window.stamps");
    let stamps = stamps.as_array().unwrap();
    let frames: Vec<u64> = stamps
        .iter()
        .map(|s| s["frame"].as_u64().unwrap())
        .collect();
    assert!(
        frames.windows(2).all(|w| w[1] > w[0]),
        "frames advance: {frames:?}"
    );
    let mut ages: Vec<i64> = stamps.iter().map(|s| s["age"].as_i64().unwrap()).collect();
    ages.sort();
    let median = ages[ages.len() / 2];
    eprintln!(
        "capture to canvas in Chromium: median {median} ms, max {} ms",
        ages[ages.len() - 1]
    );
    assert!(median < 500, "median age {median} ms: {ages:?}");
    let info = browser.eval("return document.getElementById('info').textContent");
    assert!(
        info.as_str().unwrap().contains("1280×720 · frame"),
        "{info}"
    );
    let shot = browser.screenshot("stream-watch");
    assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"));
}

/// ffmpeg, the other client people point at a stream, reads a frame from it.
#[test]
fn ffmpeg_reads_a_frame_from_the_mjpeg_stream() {
    let (_p, d) = start("fps = 30\n", "");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frame.jpg");
    let run = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(format!("http://{}/stream/v1/mjpeg", d.api))
        .args(["-frames:v", "1"])
        .arg(&out)
        .output()
        .expect("run ffmpeg (Debian ffmpeg)");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let s = stamp(&std::fs::read(&out).unwrap());
    assert!(s.frame >= 1);
}

/// The V4L2 source on a real kernel driver: inside the guest, the kernel's vivid
/// capture device gives YUYV and NV12 frames through the plugin's own code (stream-bench
/// v4l2), which encodes each to a JPEG of the device's size; vivid's moving test
/// pattern makes the frames differ.
#[test]
fn the_v4l2_source_captures_from_the_kernels_vivid_device() {
    guest::available().expect("the test guest needs its packages (see test.sh)");
    let files = guest::binary_for_the_guest(&jsipd_e2e::plugin_bin("stream-bench"));
    let extra: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    let mut g = Guest::start_with(&[], &extra);
    g.qmp().execute("cont", json!({}));
    let serial = g.serial();
    serial.wait_for("jsipd-guest: ready", BOOT_TIMEOUT);
    serial.run(
        "for m in $(cat /lib/modules/vivid.order); do insmod /lib/modules/$m.ko; done; \
         n=0; while [ ! -e /dev/video0 ] && [ $n -lt 100 ]; do usleep 100000; n=$((n+1)); done; echo vivid-$((2+2))-loaded",
    );
    serial.wait_for("vivid-4-loaded", Duration::from_secs(30));
    for format in ["yuyv", "nv12"] {
        serial.run(&format!(
            "stream-bench v4l2 /dev/video0 8 {format} 2>&1; echo v4l2-$((0+1))-{format}-done"
        ));
        let out = serial.wait_for(&format!("v4l2-1-{format}-done"), Duration::from_secs(60));
        let line = out
            .lines()
            .rev()
            .find(|l| l.starts_with("{\"v4l2\""))
            .unwrap_or_else(|| panic!("no result from the guest:\n{out}"));
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["format"], format.to_uppercase(), "{v}");
        assert_eq!(v["frames"], 8, "{v}");
        assert!(
            v["distinct"].as_u64().unwrap() >= 2,
            "the pattern moves: {v}"
        );
        assert_eq!(v["decoded"], "640x480", "{v}");
        assert!(v["v4l2"].as_str().unwrap().contains("vivid"), "{v}");
    }
    // A device that is no capture device is refused by name.
    serial.run("stream-bench v4l2 /dev/null 1 auto; echo null-$((1+1))-done");
    let out = serial.wait_for("null-2-done", Duration::from_secs(30));
    assert!(out.contains("/dev/null: not a V4L2 device"), "{out}");
}
