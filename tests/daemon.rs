//! The core daemon end to end: config check, signals, logs, API auth, bad input.
//! Every test starts the real `jsipd` binary and talks to it over its ports.

use std::io::Write as _;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::time::{Duration, Instant};

use jsipd_e2e::http::{self, get, request};
use jsipd_e2e::{jsipd_bin, loopback_config, repo_root, Daemon, Prefix};

const WAIT: Duration = Duration::from_secs(10);

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn config_test_accepts_good_and_names_file_line_key_of_bad() {
    let good = Prefix::with_config(&loopback_config("loglevel = debug"));
    let out = good.run(&["-t"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is ok"));

    let bad = Prefix::with_config(
        "loglevel = info\n[APIServer]\nlistn = 127.0.0.1:1\n[Main]\nstop_timeout = soon\n",
    );
    let out = bad.run(&["-t"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let file = bad.config_path().display().to_string();
    assert!(
        err.contains(&format!("{file}:3: [APIServer] listn: unknown key")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:5: [Main] stop_timeout: 'soon' is not a duration"
        )),
        "{err}"
    );
    assert!(err.contains("test failed"), "{err}");

    // The shipped config is valid as it stands.
    let shipped = std::fs::read_to_string(repo_root().join("conf/jsipd.ini")).unwrap();
    let out = Prefix::with_config(&shipped).run(&["-t"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn malformed_ini_line_stops_start_with_its_line() {
    let prefix = Prefix::with_config("logfile = stdout\n[APIServer\nlisten = 127.0.0.1:0\n");
    let out = prefix.run(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("jsipd.ini:2: malformed section header '[APIServer'"),
        "{err}"
    );
}

#[test]
fn port_in_use_is_named_and_exits_nonzero() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let prefix = Prefix::with_config(&format!(
        "logfile = stdout\n[APIServer]\nlisten = 127.0.0.1:{port}\n[RTCServer]\nlisten = 127.0.0.1:0\nauth = none\n"
    ));
    let out = prefix.run(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port} ([APIServer] listen)"
        )),
        "{err}"
    );
    assert!(err.contains("in use"), "{err}");
    assert!(
        !prefix.path().join("logs/jsipd.pid").exists(),
        "no pid file for a daemon that never started"
    );
}

#[test]
fn missing_cert_file_is_named_by_check_and_by_start() {
    let prefix = Prefix::with_config(&format!(
        "{}tlslisten = 127.0.0.1:0\ncert = certs/none.crt\n",
        loopback_config("")
    ));
    let out = prefix.run(&["-t"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("[RTCServer] cert: cannot read certificate"),
        "{}",
        stderr(&out)
    );
    let out = prefix.run(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("[RTCServer] cert: cannot read certificate") && err.contains("certs/none.crt"),
        "{err}"
    );
}

#[test]
fn api_answers_json_envelope_text_and_404() {
    let prefix = Prefix::with_config(&loopback_config(""));
    let d = Daemon::start(&prefix);
    let stats = get(d.api, "/runtime/v1/stats");
    assert_eq!(stats.status, 200);
    let j = stats.json();
    assert_eq!(j["code"], 0);
    assert_eq!(j["msg"], "OK");
    assert_eq!(j["data"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(j["data"]["pid"], d.pid());
    assert!(
        j["data"]["connections"]["api"]["accepted"]
            .as_u64()
            .unwrap()
            >= 1
    );

    let text = request(
        d.api,
        "GET",
        "/runtime/v1/stats",
        &[("Accept", "text/plain")],
        "",
    );
    assert!(text
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    assert!(
        text.body
            .lines()
            .any(|l| l.starts_with("pid") && l.ends_with(&d.pid().to_string())),
        "{}",
        text.body
    );

    let missing = get(d.api, "/no/such/api");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], 404);
    assert!(missing.json()["msg"]
        .as_str()
        .unwrap()
        .contains("/no/such/api"));

    let wrong = request(d.api, "DELETE", "/runtime/v1/stats", &[], "");
    assert_eq!(wrong.status, 405);

    let stack = get(d.api, "/runtime/v1/stack").json();
    let threads = stack["data"]["threads"].as_array().unwrap();
    assert!(
        threads.iter().any(|t| t["name"] == "jsipd-worker"),
        "{stack}"
    );
    // This build has tokio_unstable: the dump lists the connection task serving us.
    let tasks = stack["data"]["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("no task dump: {stack}"));
    assert!(
        tasks
            .iter()
            .any(|t| t["trace"].as_str().unwrap().contains("jsipd::serve")),
        "{stack}"
    );

    let bad = request(
        d.api,
        "PUT",
        "/runtime/v1/loglevel",
        &[],
        "{\"level\":\"loud\"}",
    );
    assert_eq!(bad.status, 400);
    assert!(bad.json()["msg"]
        .as_str()
        .unwrap()
        .contains("not a log level"));
}

#[test]
fn rtc_port_refuses_missing_userid_before_upgrade() {
    let prefix = Prefix::with_config(&loopback_config(""));
    let d = Daemon::start(&prefix);
    let r = get(d.rtc.unwrap(), "/rtc");
    assert_eq!(r.status, 400);
    assert_eq!(r.body.lines().count(), 1, "one-line reason: {:?}", r.body);
    assert!(r.body.contains("userid"));
    assert_eq!(get(d.rtc.unwrap(), "/elsewhere?userid=a").status, 404);
}

#[test]
fn sighup_applies_log_level_and_rejects_broken_file_whole() {
    let prefix = Prefix::with_config(&loopback_config("loglevel = info"));
    let d = Daemon::start(&prefix);
    assert_eq!(get(d.api, "/before-reload").status, 404);
    // Debug lines ("API … -> 404") are off at info.
    prefix.write_config(&loopback_config("loglevel = debug"));
    d.signal(libc::SIGHUP);
    d.wait_log("SIGHUP: config reloaded; changed: loglevel", WAIT);
    assert_eq!(get(d.api, "/after-reload").status, 404);
    d.wait_log("/after-reload -> 404", WAIT);
    assert!(
        !d.log().iter().any(|l| l.contains("/before-reload")),
        "debug line logged at info level"
    );

    // A broken file: rejected, logged with its line, the old config (debug) stays.
    prefix.write_config("loglevel = info\n[APIServer]\nlisten = 127.0.0.1:0\nbogus = 1\n");
    d.signal(libc::SIGHUP);
    d.wait_log("SIGHUP: config rejected", WAIT);
    d.wait_log("jsipd.ini:4: [APIServer] bogus: unknown key", WAIT);
    assert_eq!(get(d.api, "/still-debug").status, 404);
    d.wait_log("/still-debug -> 404", WAIT);
    let stats = get(d.api, "/runtime/v1/stats").json();
    assert_eq!(stats["data"]["reloads"]["applied"], 1);
    assert_eq!(stats["data"]["reloads"]["rejected"], 1);

    // Changing a listen address is reported as needing a restart.
    prefix.write_config(&loopback_config("loglevel = debug").replace(
        "[RTCServer]\nlisten = 127.0.0.1:0",
        "[RTCServer]\nlisten = 127.0.0.1:1",
    ));
    d.signal(libc::SIGHUP);
    d.wait_log(
        "[RTCServer] listen changed; it takes effect after a restart",
        WAIT,
    );
}

/// A request whose head has arrived and whose body is still on its way: the server is
/// waiting on it, so it is in flight. Returns once the server counts it as in flight.
fn half_sent_loglevel_request(api: std::net::SocketAddr) -> (TcpStream, &'static str) {
    let body = "{\"level\":\"info\"}";
    let mut s = TcpStream::connect(api).unwrap();
    s.write_all(http::head("PUT", "/runtime/v1/loglevel", &[], body.len()).as_bytes())
        .unwrap();
    s.write_all(&body.as_bytes()[..5]).unwrap();
    let deadline = Instant::now() + WAIT;
    // The stats request itself is in flight too, hence 2.
    while get(api, "/runtime/v1/stats").json()["data"]["api_requests"]["in_flight"] != 2 {
        assert!(
            Instant::now() < deadline,
            "the half-sent request never reached the server"
        );
    }
    (s, &body[5..])
}

#[test]
fn sigquit_lets_requests_in_flight_finish_then_exits() {
    let prefix = Prefix::with_config(&loopback_config(""));
    let mut d = Daemon::start(&prefix);
    // The access log of the request proves the server answered it before exiting.
    let (mut inflight, rest) = half_sent_loglevel_request(d.api);
    let quit_at = Instant::now();
    d.signal(libc::SIGQUIT);
    d.wait_log("SIGQUIT: stopping gracefully", WAIT);
    d.wait_log(
        &format!("closed listener {} ([APIServer] listen)", d.api),
        WAIT,
    );
    assert!(
        TcpStream::connect(d.api).is_err(),
        "listener must be closed during a graceful stop"
    );
    inflight.write_all(rest.as_bytes()).unwrap();
    let resp = http::read_response(&mut inflight);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["data"]["level"], "info");
    let status = d
        .wait_exit(Duration::from_secs(5))
        .expect("exit within 5 s of SIGQUIT");
    assert!(status.success(), "{status:?}");
    assert!(quit_at.elapsed() < Duration::from_secs(5));
    d.wait_log("stopped: all work finished", WAIT);
    assert!(
        !prefix.path().join("logs/jsipd.pid").exists(),
        "pid file removed at exit"
    );
}

#[test]
fn sigquit_forces_exit_after_stop_timeout() {
    let prefix = Prefix::with_config(&loopback_config("[Main]\nstop_timeout = 300ms"));
    let mut d = Daemon::start(&prefix);
    let (_stuck, _) = half_sent_loglevel_request(d.api);
    let quit_at = Instant::now();
    d.signal(libc::SIGQUIT);
    d.wait_exit(Duration::from_secs(5)).expect("forced exit");
    let took = quit_at.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "exited before stop_timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "forced exit too late: {took:?}"
    );
    assert!(
        d.log()
            .iter()
            .any(|l| l.contains("stop_timeout (300ms) reached")),
        "{:?}",
        d.log()
    );
}

#[test]
fn sigterm_exits_at_once_despite_work_in_flight() {
    let prefix = Prefix::with_config(&loopback_config(""));
    let mut d = Daemon::start(&prefix);
    let (_stuck, _) = half_sent_loglevel_request(d.api);
    let term_at = Instant::now();
    d.signal(libc::SIGTERM);
    d.wait_exit(Duration::from_secs(5))
        .expect("exit on SIGTERM");
    let took = term_at.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "SIGTERM took {took:?} (stop_timeout is 5 s)"
    );
    d.wait_log("SIGTERM: exiting at once", WAIT);
}

#[test]
fn dash_s_signals_the_daemon_through_its_pid_file() {
    let prefix = Prefix::with_config(&loopback_config(""));
    let mut d = Daemon::start(&prefix);
    let out = prefix.run(&["-s", "reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    d.wait_log("SIGHUP: config reloaded, nothing changed", WAIT);
    let out = prefix.run(&["-s", "quit"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(d.wait_exit(Duration::from_secs(5)).unwrap().success());
    let out = prefix.run(&["-s", "quit"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is jsipd running?"),
        "{}",
        stderr(&out)
    );
    assert_eq!(prefix.run(&["-s", "explode"]).status.code(), Some(2));
}

#[test]
fn non_loopback_api_demands_the_generated_key() {
    let prefix = Prefix::with_config(
        "logfile = stdout\n[APIServer]\nlisten = 0.0.0.0:0\n[RTCServer]\nlisten = 127.0.0.1:0\nauth = none\n",
    );
    let d = Daemon::start(&prefix);
    let key_file = prefix.path().join("conf/api.key");
    d.wait_log(&format!("generated one into {}", key_file.display()), WAIT);
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_string();
    let api = std::net::SocketAddr::from(([127, 0, 0, 1], d.api.port()));

    let none = get(api, "/runtime/v1/stats");
    assert_eq!(none.status, 401);
    assert!(none.json()["msg"].as_str().unwrap().contains("X-API-Key"));
    assert_eq!(
        request(
            api,
            "GET",
            "/runtime/v1/stats",
            &[("X-API-Key", "wrong-key-wrong-key")],
            ""
        )
        .status,
        401
    );
    assert_eq!(
        request(api, "GET", "/runtime/v1/stats", &[("X-API-Key", &key)], "").status,
        200
    );
    let bearer = format!("Bearer {key}");
    let ok = request(
        api,
        "GET",
        "/runtime/v1/stats",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["data"]["api_requests"]["unauthorized"], 2);
}

#[test]
fn tls_api_serves_with_a_generated_certificate() {
    let prefix = Prefix::with_config(
        &loopback_config("").replace("[APIServer]\n", "[APIServer]\ntlslisten = 127.0.0.1:0\n"),
    );
    let out = prefix.run(&["gencert"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let d = Daemon::start(&prefix);
    let tls = d
        .log()
        .iter()
        .find_map(|l| {
            l.split("listening on ")
                .nth(1)?
                .strip_suffix(" for [APIServer] tlslisten")?
                .parse::<std::net::SocketAddr>()
                .ok()
        })
        .expect("TLS listener");
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(prefix.path().join("certs/jsipd.crt"))
        .arg(format!("https://localhost:{}/runtime/v1/stats", tls.port()))
        .output()
        .expect("curl is installed by the test command");
    assert!(out.status.success(), "{}", stderr(&out));
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["code"], 0);
}

/// logrotate renames the files and runs `jsipd -s reopen` while requests stream in:
/// every request's main-log line and access-log line appears exactly once across the
/// rotated and the new file.
#[test]
fn logrotate_and_sigusr1_lose_and_duplicate_no_line() {
    let prefix = Prefix::with_config(
        "loglevel = debug\n[APIServer]\nlisten = 127.0.0.1:0\n[RTCServer]\nlisten = 127.0.0.1:0\nauth = none\n",
    );
    let logs = prefix.path().join("logs");
    let d = Daemon::start_with_log(&prefix, Some(logs.join("jsipd.log")));

    // The shipped snippet, pointed at this prefix and this build.
    let template = std::fs::read_to_string(repo_root().join("dist/logrotate.in")).unwrap();
    let bin_dir = prefix.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(jsipd_bin(), bin_dir.join("jsipd")).unwrap();
    let conf = prefix.path().join("logrotate.conf");
    std::fs::write(
        &conf,
        template.replace("@PREFIX@", prefix.path().to_str().unwrap()),
    )
    .unwrap();

    // The client sends until told to stop: it stops 100 requests after the reopen was
    // seen, so both files get lines however slow the machine is.
    let api = d.api;
    let stop_at = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = {
        let (stop_at, sent) = (stop_at.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while i < stop_at.load(std::sync::atomic::Ordering::SeqCst) {
                assert_eq!(get(api, &format!("/seq/{i}/end")).status, 404);
                i += 1;
                sent.store(i, std::sync::atomic::Ordering::SeqCst);
            }
            i
        })
    };
    d.wait_log("/seq/100/end", WAIT); // rotate mid-stream, not before it starts
    let out = Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(prefix.path().join("logrotate.state"))
        .arg(&conf)
        .output()
        .expect("logrotate is installed by the test command");
    assert!(out.status.success(), "logrotate: {}", stderr(&out));
    assert!(
        logs.join("jsipd.log.1").exists(),
        "logrotate renamed the log"
    );
    // The reopen line is in the new file, written after the rotation.
    d.wait_log("SIGUSR1: log files reopened", WAIT);
    stop_at.store(
        sent.load(std::sync::atomic::Ordering::SeqCst) + 100,
        std::sync::atomic::Ordering::SeqCst,
    );
    let n = client.join().unwrap();
    d.wait_log(&format!("/seq/{}/end", n - 1), WAIT);
    let main_marker = |i: usize| format!("/seq/{i}/end -> 404");
    let access_marker = |i: usize| format!("\"/seq/{i}/end\"");
    let markers: [(&str, &dyn Fn(usize) -> String); 2] =
        [("jsipd.log", &main_marker), ("access.log", &access_marker)];
    for (name, marker) in markers {
        let old = std::fs::read_to_string(logs.join(format!("{name}.1"))).unwrap();
        // The access log flushes on its own thread: wait for its last line too.
        let deadline = Instant::now() + WAIT;
        let mut new = String::new();
        while Instant::now() < deadline {
            new = std::fs::read_to_string(logs.join(name)).unwrap_or_default();
            if new.contains(&marker(n - 1)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (mut in_old, mut in_new) = (0, 0);
        for i in 0..n {
            let m = marker(i);
            let (a, b) = (old.matches(&m).count(), new.matches(&m).count());
            assert_eq!(
                a + b,
                1,
                "{name}: request {i} logged {a} times in the old file and {b} in the new one"
            );
            in_old += a;
            in_new += b;
        }
        assert!(
            in_old > 0 && in_new > 0,
            "{name}: rotation was not mid-stream ({in_old} old, {in_new} new)"
        );
    }
}

#[test]
fn runs_with_no_config_file_on_built_in_defaults() {
    // Default ports are fixed (API 127.0.0.1:2539, RTC :8080); skip nothing, but say
    // clearly if something else on this machine holds them.
    for port in [2539, 8080] {
        if let Err(e) = std::net::TcpListener::bind(("0.0.0.0", port)) {
            panic!("port {port} is taken on this machine ({e}); this test needs the built-in default ports");
        }
    }
    let prefix = Prefix::with_config("");
    std::fs::remove_file(prefix.config_path()).unwrap();
    let log = prefix.path().join("logs/jsipd.log");
    let mut d = Daemon::start_with_log(&prefix, Some(log));
    assert_eq!(d.api, "127.0.0.1:2539".parse().unwrap());
    assert_eq!(d.rtc, Some("0.0.0.0:8080".parse().unwrap()));
    assert!(d
        .log()
        .iter()
        .any(|l| l.contains("config <built-in defaults>")));
    assert_eq!(get(d.api, "/runtime/v1/stats").status, 200);
    d.signal(libc::SIGQUIT);
    assert!(d.wait_exit(Duration::from_secs(5)).unwrap().success());
}
