//! jsip-bench against the real daemon: every scenario completes work with no errors,
//! and the errors it reports are the real ones (JSIP codes and transport failures).
//! These check the tool's counting, not speed: speed is `bench/run.sh`'s job.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use jsipd_e2e::http::request;
use jsipd_e2e::{loopback_config, repo_root, target_dir, Daemon, Prefix};

fn bench_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "jsip-bench"])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building jsip-bench failed");
        target_dir().join("debug/jsip-bench")
    })
    .clone()
}

/// Runs a scenario for `secs` (after a short warm-up) and returns its `--json` summary.
fn bench(args: &[&str], secs: &str) -> Value {
    let out = Command::new(bench_bin())
        .args(args)
        .args(["--duration", secs, "--warmup", "0.3", "--json"])
        .output()
        .expect("run jsip-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "not a JSON summary ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    summary
}

fn start() -> (Prefix, Daemon) {
    let ini = loopback_config("")
        .replace("[RTCServer]\n", "[RTCServer]\ntlslisten = 127.0.0.1:0\n")
        + "[JSIPStack]\nrealm = bench.test\nbuiltin_slps = echo\ntranstimer = 300ms\n";
    let prefix = Prefix::with_config(&ini);
    let out = prefix.run(&["gencert"]);
    assert!(out.status.success());
    prefix.add_plugin("chatroom", "chatroom.so");
    std::fs::create_dir_all(prefix.path().join("conf/chatroom")).unwrap();
    std::fs::write(
        prefix.path().join("conf/chatroom/chatroom.ini"),
        "rooms = 888\n",
    )
    .unwrap();
    let d = Daemon::start(&prefix);
    let r = request(d.api, "POST", "/slpm/v1/chatroom?file=chatroom.so", &[], "");
    assert_eq!(r.status, 200);
    (prefix, d)
}

fn url(d: &Daemon) -> String {
    format!("ws://{}/rtc", d.rtc.expect("RTC port"))
}

fn completed(v: &Value) -> u64 {
    v["completed"].as_u64().unwrap()
}

fn jsip_stats(d: &Daemon) -> Value {
    request(d.api, "GET", "/runtime/v1/stats", &[], "").json()["data"]["jsip"].clone()
}

fn no_errors(v: &Value) {
    assert_eq!(v["errors"]["total"], 0, "{v}");
}

#[test]
fn message_closed_and_open_loop_and_over_tls() {
    let (prefix, d) = start();
    let u = url(&d);
    let v = bench(
        &["message", "--url", &u, "--connections", "4", "--depth", "2"],
        "1",
    );
    assert!(completed(&v) > 100, "{v}");
    no_errors(&v);
    let p99 = v["latency_ms"]["p99"].as_f64().unwrap();
    assert!(
        p99 > 0.0 && p99 >= v["latency_ms"]["p50"].as_f64().unwrap(),
        "{v}"
    );

    // A fixed amount of work (bench/callgrind.sh): N round trips, counted from the first,
    // one socket and one in flight, so exactly N; it ends when they are done, long before
    // the 60 s limit, and the daemon's own count agrees.
    let before = jsip_stats(&d)["frames_in"].as_u64().unwrap();
    let started = std::time::Instant::now();
    let v = bench(
        &[
            "message",
            "--url",
            &u,
            "--connections",
            "1",
            "--messages",
            "300",
        ],
        "60",
    );
    assert_eq!(completed(&v), 300, "{v}");
    no_errors(&v);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{v}"
    );
    let frames = jsip_stats(&d)["frames_in"].as_u64().unwrap() - before;
    assert_eq!(frames, 300, "the server saw exactly the requests counted");

    // Open loop: what is offered is what completes (2 s at 300/s is about 600).
    let v = bench(&["message", "--url", &u, "--rate", "300"], "2");
    let done = completed(&v);
    assert!((500..=700).contains(&done), "{v}");
    no_errors(&v);

    let tls = d
        .log()
        .iter()
        .find_map(|l| {
            l.split("listening on ")
                .nth(1)?
                .strip_suffix(" for [RTCServer] tlslisten")?
                .parse::<std::net::SocketAddr>()
                .ok()
        })
        .expect("TLS listener");
    let wss = format!("wss://localhost:{}/rtc", tls.port());
    let ca = prefix.path().join("certs/jsipd.crt");
    let v = bench(
        &[
            "message",
            "--url",
            &wss,
            "--ca",
            ca.to_str().unwrap(),
            "--connections",
            "2",
        ],
        "1",
    );
    assert!(completed(&v) > 50, "{v}");
    no_errors(&v);
}

#[test]
fn errors_are_broken_down_by_jsip_code_and_by_transport() {
    let (_prefix, d) = start();
    let u = url(&d);
    // An SLP that never answers: the stack answers 408 after transtimer (300 ms).
    let v = bench(
        &[
            "message",
            "--url",
            &u,
            "--uri",
            "silent@echo",
            "--connections",
            "2",
        ],
        "1",
    );
    assert_eq!(completed(&v), 0, "{v}");
    assert!(v["errors"]["by_code"]["408"].as_u64().unwrap() >= 2, "{v}");
    // No such SLP: 404 at once.
    let v = bench(
        &[
            "message",
            "--url",
            &u,
            "--uri",
            "x@nosuch",
            "--connections",
            "1",
        ],
        "0.5",
    );
    assert!(v["errors"]["by_code"]["404"].as_u64().unwrap() > 10, "{v}");
    // An answer later than --timeout (the 408 comes at transtimer, 300 ms): counted
    // as a transport timeout, and the tool goes on rather than hang.
    let v = bench(
        &[
            "message",
            "--url",
            &u,
            "--uri",
            "silent@echo",
            "--timeout",
            "0.1",
        ],
        "1",
    );
    assert!(
        v["errors"]["transport"]["timeout"].as_u64().unwrap() >= 16,
        "{v}"
    );
    // Nothing listening: the tool says so and exits non-zero.
    let out = Command::new(bench_bin())
        .args([
            "message",
            "--url",
            "ws://127.0.0.1:1/rtc",
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connect ws://127.0.0.1:1/rtc"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn call_chat_and_connect_scenarios() {
    let (_prefix, d) = start();
    let u = url(&d);
    let v = bench(
        &["call", "--url", &u, "--connections", "4", "--hold", "20"],
        "1",
    );
    assert!(completed(&v) > 20, "{v}");
    no_errors(&v);

    let v = bench(
        &[
            "chat",
            "--url",
            &u,
            "--uri",
            "room:888@bench.test",
            "--router",
            "bench.test;type=chatroom",
            "--connections",
            "5",
        ],
        "1",
    );
    no_errors(&v);
    assert_eq!(v["members"], 5);
    let relays = v["relays"].as_u64().unwrap();
    // Every answered MESSAGE fans out to the 4 other members; relays of MESSAGEs sent
    // just before or after the window blur the edges a little.
    let expected = v["relays_expected"].as_u64().unwrap();
    assert!(completed(&v) > 20, "{v}");
    assert!(relays.abs_diff(expected) <= 5 * 8, "{v}");

    let v = bench(&["connect", "--url", &u, "--connections", "2"], "1");
    assert!(completed(&v) > 50, "{v}");
    no_errors(&v);
}
