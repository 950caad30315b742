//! The plugin system end to end: the real binary loading real `.so` files (the `echo`
//! and `chatroom` plugins and two broken fixtures) over its management API, and clients
//! talking to them over real WebSockets and HTTP.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsipd_plugin_api::ffi;
use serde_json::{json, Value};

use jsipd_e2e::http::{get, request};
use jsipd_e2e::ws::{Ws, WAIT};
use jsipd_e2e::{loopback_config, repo_root, target_dir, Daemon, Prefix};

fn config(extra: &str) -> String {
    format!(
        "{}\n[JSIPStack]\nrealm = node.test\ntranstimer = 500ms\n[Plugins]\n{extra}\n",
        loopback_config("")
    )
}

fn start(extra: &str) -> (Prefix, Daemon) {
    let prefix = Prefix::with_config(&config(extra));
    prefix.add_plugin("echo", "echo.so");
    let d = Daemon::start(&prefix);
    (prefix, d)
}

fn post(d: &Daemon, path: &str) -> (u16, Value) {
    let r = request(d.api, "POST", path, &[], "");
    (r.status, r.json())
}

fn delete(d: &Daemon, path: &str) -> (u16, Value) {
    let r = request(d.api, "DELETE", path, &[], "");
    (r.status, r.json())
}

/// Loads `name` from `file` as an SLP; returns the new generation's number.
fn load_slp(d: &Daemon, name: &str, file: &str) -> u64 {
    let (status, v) = post(d, &format!("/slpm/v1/{name}?file={file}"));
    assert_eq!(status, 200, "{v}");
    v["data"]["generation"]["generation"].as_u64().unwrap()
}

/// The listing entry of SLP `name`.
fn slp_entry(d: &Daemon, name: &str) -> Value {
    let v = get(d.api, "/slpm/v1/slps").json();
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn generation(d: &Daemon, name: &str, id: u64) -> Value {
    slp_entry(d, name)["generations"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["generation"] == id).cloned())
        .unwrap_or(Value::Null)
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

fn rtc(d: &Daemon) -> SocketAddr {
    d.rtc.unwrap()
}

/// A request to `user@echo.test`: the host label routes it to the SLP named `echo`.
fn req(method: &str, user: &str, dialog: &str, cseq: u64) -> Value {
    json!({
        "Type": method, "Request-URI": format!("{user}@echo.test"), "From": "alice",
        "To": format!("{user}@echo.test"), "DialogueID": dialog, "CSeq": cseq,
        "Body": {"n": cseq},
    })
}

fn call(ws: &mut Ws, m: Value) -> Value {
    ws.send(&m);
    let r = ws.recv();
    assert_eq!(r["DialogueID"], m["DialogueID"], "{r}");
    assert_eq!(r["CSeq"], m["CSeq"], "{r}");
    r
}

/// INVITE answered 200, then ACK: a confirmed session.
fn open_session(ws: &mut Ws, dialog: &str) -> Value {
    let ok = call(ws, req("INVITE", "svc", dialog, 1));
    assert_eq!(ok["Code"], 200, "{ok}");
    ws.send(
        &json!({"Type": "ACK", "Request-URI": "svc@echo.test", "From": "alice",
        "To": "svc@echo.test", "DialogueID": dialog, "CSeq": 2, "RelatedID": 1}),
    );
    ok
}

#[test]
fn load_list_call_and_delete_an_slp_and_an_api() {
    let (_p, d) = start("");
    let g = load_slp(&d, "echo", "echo.so");
    let (status, v) = post(&d, "/apim/v1/echo.v1?file=echo.so");
    assert_eq!(status, 200, "{v}");

    // Listings, JSON and text.
    let e = slp_entry(&d, "echo");
    assert_eq!(e["generations"][0]["state"], "active", "{e}");
    assert_eq!(e["generations"][0]["file"], "echo.so");
    // Built with today's plugin-api, by the host's compiler, on the host's allocator:
    // its messages move across whole, not taken apart.
    assert_eq!(e["generations"][0]["abi"], "1.9", "{e}");
    assert_eq!(e["generations"][0]["messages"], "moved", "{e}");
    let apis = get(d.api, "/apim/v1/apis").json();
    let names: Vec<&str> = apis["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["runtime.v1", "apim.v1", "slpm.v1", "echo.v1"]);
    let text = request(
        d.api,
        "GET",
        "/slpm/v1/slps",
        &[("Accept", "text/plain")],
        "",
    );
    assert!(text.body.starts_with("NAME"), "{}", text.body);
    assert!(
        text.body
            .lines()
            .any(|l| l.starts_with("echo ") && l.contains("echo.so") && l.contains("active")),
        "{}",
        text.body
    );

    // The SLP answers over a WebSocket; the API over HTTP.
    let mut ws = Ws::connect(rtc(&d), "alice");
    let a = call(&mut ws, req("MESSAGE", "svc", "m1", 1));
    assert_eq!(a["Code"], 200, "{a}");
    assert_eq!(a["Body"], json!({"n": 1}));
    assert_eq!(a["Echo-Marker"], "default");
    let r = request(d.api, "POST", "/echo/v1/some/path?x=1", &[], "hello");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (
            v["method"].as_str(),
            v["path"].as_str(),
            v["query"].as_str(),
            v["body"].as_str()
        ),
        (Some("POST"), Some("/some/path"), Some("x=1"), Some("hello"))
    );
    assert_eq!(get(d.api, "/echo/v1").json()["path"], "/");
    // A body larger than one read, and an answer larger than the 64 KiB the host
    // collects, stream both ways (the answer arrives chunked).
    let big = "x".repeat(300 * 1024);
    let r = request(d.api, "PUT", "/echo/v1/big", &[], &big);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.json()["body"].as_str().map(str::len), Some(big.len()));
    // Past the plugin's own limit, the plugin answers 413; the daemon is unharmed.
    let r = request(
        d.api,
        "POST",
        "/echo/v1/big",
        &[],
        &"y".repeat(1024 * 1024 + 1),
    );
    assert_eq!(r.status, 413, "{}", r.body);

    // The plugin's own tracing reached the host log, tagged with name and generation.
    d.wait_log(&format!("[echo#{g}] echo: echo plugin loaded"), WAIT);
    // It allocates with the host's allocator: the entry point, which runs before that
    // line, would have said otherwise.
    assert!(
        !d.log()
            .iter()
            .any(|l| l.contains("keeps the C library's allocator")),
        "echo.so allocated before its entry point"
    );

    // Delete both: they retire, the image leaves memory, and the names are gone.
    let (status, v) = delete(&d, "/apim/v1/echo.v1");
    assert_eq!(status, 200, "{v}");
    // On a loaded machine the 413's handler may still be returning after its answer
    // went out: then the generation drains first (the image's unmapping below waits).
    let state = &v["data"]["generation"]["state"];
    assert!(state == "retired" || state == "draining", "{v}");
    let (status, v) = delete(&d, "/slpm/v1/echo");
    assert_eq!(status, 200, "{v}");
    wait_until("echo retired and unmapped", || {
        let g = generation(&d, "echo", g);
        g["state"] == "retired" && g["unmapped"] == true
    });
    let a = call(&mut ws, req("MESSAGE", "svc", "m2", 1));
    assert_eq!(a["Code"], 404, "{a}");
    assert_eq!(get(d.api, "/echo/v1/x").status, 404);
    assert_eq!(delete(&d, "/slpm/v1/echo").0, 404);
    assert_eq!(delete(&d, "/apim/v1/echo.v1").0, 404);
}

#[test]
fn a_plugin_built_for_an_older_abi_minor_is_served_json_text() {
    // The fixture's handler is written against ABI 1.1: it fails any event kind 1.1
    // did not have (the host would answer 500) and answers through the JSON `send`.
    let (p, d) = start("");
    p.add_plugin("abi_1_1", "old.so");
    load_slp(&d, "old", "old.so");
    load_slp(&d, "echo", "echo.so");
    let mut ws = Ws::connect(rtc(&d), "/rtc?userid=alice");
    let to_old = |method: &str, dialog: &str, cseq: u64| {
        let mut m = req(method, "svc", dialog, cseq);
        m["Request-URI"] = json!("svc@old.test");
        m["To"] = json!("svc@old.test");
        m
    };
    for (i, method) in ["MESSAGE", "OPTIONS", "INVITE"].into_iter().enumerate() {
        let a = call(&mut ws, to_old(method, &format!("old-{i}"), 1));
        assert_eq!(a["Code"], 200, "{method}: {a}");
        assert_eq!(a["Abi"], "1.1", "{method}: {a}");
    }
    // The current ABI's echo, in the same daemon, gets the fields and answers in kind.
    let a = call(&mut ws, req("MESSAGE", "svc", "new-1", 1));
    assert_eq!(a["Code"], 200, "{a}");
    assert_eq!(a["Body"], json!({"n": 1}), "{a}");
    assert!(a.get("Abi").is_none(), "{a}");
    let old = slp_entry(&d, "old");
    assert_eq!(old["generations"][0]["panics"], 0, "{old}");
    assert_eq!(old["generations"][0]["abi"], "1.1", "{old}");
    assert_eq!(old["generations"][0]["messages"], "json", "{old}");
}

#[test]
fn a_plugin_that_lays_a_message_out_otherwise_gets_it_handed_over_not_moved() {
    // echo.so as another compiler would have built it: the same file, but for its
    // message layout (`JSIPD_MESSAGE_LAYOUT`, this build's `ffi::MESSAGE_LAYOUT`).
    let (p, d) = start("");
    let mut image = std::fs::read(jsipd_e2e::plugin_lib("echo")).unwrap();
    let layout = jsipd_plugin_api::ffi::MESSAGE_LAYOUT.to_le_bytes();
    let at: Vec<usize> = image
        .windows(8)
        .enumerate()
        .filter(|(_, w)| *w == layout)
        .map(|(i, _)| i)
        .collect();
    // The exported static, and the constant the plugin compares the host's with.
    assert!(!at.is_empty(), "the layout's value is in the image");
    for i in at {
        image[i] ^= 0xff;
    }
    std::fs::write(p.path().join("plugins/otherlayout.so"), &image).unwrap();
    let g = load_slp(&d, "echo", "otherlayout.so");
    let gen = generation(&d, "echo", g);
    assert_eq!(gen["abi"], "1.9", "{gen}");
    assert_eq!(gen["messages"], "handed over", "{gen}");
    // Served all the same, both ways, unknown keys included.
    let mut ws = Ws::connect(rtc(&d), "alice");
    let mut m = req("MESSAGE", "svc", "other", 1);
    m["X-Kept"] = json!([1, "two"]);
    let a = call(&mut ws, m);
    assert_eq!(a["Code"], 200, "{a}");
    assert_eq!(a["Body"], json!({"n": 1}));
    assert_eq!(a["Echo-Marker"], "default", "{a}");
}

#[test]
fn a_plugin_on_the_c_librarys_allocator_is_lent_its_messages_not_handed_them() {
    // The fixture allocates at dlopen, before its entry point, so it cannot take the
    // host's allocator: a buffer handed across would be freed by the wrong allocator.
    let (p, d) = start("");
    p.add_plugin("early_alloc", "early.so");
    let g = load_slp(&d, "early", "early.so");
    d.wait_log("keeps the C library's allocator", WAIT);
    let gen = generation(&d, "early", g);
    assert_eq!(gen["abi"], "1.9", "{gen}");
    assert_eq!(gen["messages"], "lent", "{gen}");
    // Every kind of text still crosses whole: fields, a string and an object Body,
    // non-ASCII text, unknown keys, and (in the answers) the ended dialogs' IDs.
    let mut ws = Ws::connect(rtc(&d), "alice");
    let to_early = |dialog: &str, body: Value| {
        json!({
            "Type": "MESSAGE", "Request-URI": "svc@early.test", "From": "alice",
            "To": "svc@early.test", "DialogueID": dialog, "CSeq": 1, "Body": body,
        })
    };
    let a = call(&mut ws, to_early("early-1", json!("héllo \"quoted\"\n")));
    assert_eq!(a["Code"], 200, "{a}");
    assert_eq!(a["Body"], "héllo \"quoted\"\n", "{a}");
    assert_eq!(a["From"], "alice", "{a}");
    let mut n = 2;
    wait_until("the first dialog's end in an answer", || {
        let a = call(
            &mut ws,
            to_early(&format!("early-{n}"), json!({"n": n, "x": [1.5]})),
        );
        assert_eq!(a["Code"], 200, "{a}");
        assert_eq!(a["Body"], json!({"n": n, "x": [1.5]}), "{a}");
        n += 1;
        a["Early-Alloc"]
            .as_str()
            .is_some_and(|ended| ended.split(',').any(|id| id == "early-1"))
    });
    assert_eq!(generation(&d, "early", g)["panics"], 0);
}

#[test]
fn refusals_name_the_problem_and_the_daemon_keeps_serving() {
    let (p, d) = start("");
    p.add_plugin("not_a_plugin", "plain.so");
    p.add_plugin("abi_next", "next.so");
    std::fs::write(p.path().join("outside.so"), b"x").unwrap();
    let refused = |path: &str, status: u16, needle: &str| {
        let r = request(d.api, "POST", path, &[], "");
        assert_eq!(r.status, status, "{path}: {}", r.body);
        let msg = r.json()["msg"].as_str().unwrap().to_string();
        assert!(msg.contains(needle), "{path}: {msg}");
    };
    refused(
        "/slpm/v1/echo?file=../outside.so",
        400,
        "not a bare file name",
    );
    refused("/slpm/v1/echo?file=%2Fetc%2Fpasswd", 400, "absolute path");
    refused("/slpm/v1/echo?file=missing.so", 404, "does not exist");
    refused("/slpm/v1/echo?file=plain.so", 400, "not a jsipd plugin");
    let speaks = format!(
        "(ABI {}.0), but this jsipd speaks ABI {}.{}",
        ffi::ABI_MAJOR + 1,
        ffi::ABI_MAJOR,
        ffi::ABI_MINOR
    );
    refused("/slpm/v1/echo?file=next.so", 400, &speaks);
    refused("/apim/v1/echo.v1?file=next.so", 400, "rebuild it");
    refused("/slpm/v1/echo", 400, "file= is missing");
    refused(
        "/slpm/v1/bad.name?file=echo.so",
        400,
        "not a valid SLP name",
    );
    refused("/apim/v1/echo?file=echo.so", 400, "NAME.vN");
    for b in ["runtime.v1", "apim.v1", "slpm.v1"] {
        let r = request(d.api, "DELETE", &format!("/apim/v1/{b}"), &[], "");
        assert_eq!(r.status, 409, "{}", r.body);
        assert!(r.body.contains("built in"), "{}", r.body);
        assert_eq!(post(&d, &format!("/apim/v1/{b}?file=echo.so")).0, 409);
    }
    // Still serving: the same daemon loads a good plugin and answers with it.
    load_slp(&d, "echo", "echo.so");
    let mut ws = Ws::connect(rtc(&d), "alice");
    assert_eq!(call(&mut ws, req("MESSAGE", "svc", "m", 1))["Code"], 200);
    // A refused load leaves no trace in the listing or the loaded set.
    assert_eq!(
        slp_entry(&d, "echo")["generations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let saved = std::fs::read_to_string(p.path().join("conf/.plugins")).unwrap();
    assert_eq!(
        saved
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>(),
        ["slp echo echo.so"]
    );
}

/// Rebuilds the echo plugin with `marker` through the repo's pcompile into `prefix`.
fn pcompile_echo(prefix: &Prefix, marker: &str) {
    let out = Command::new(repo_root().join("pcompile"))
        .args(["--debug", "--prefix"])
        .arg(prefix.path())
        .arg(repo_root().join("plugins/echo"))
        .env("JSIPD_ECHO_MARKER", marker)
        .env("CARGO_TARGET_DIR", target_dir().join("e2e-echo-marker"))
        .output()
        .expect("run pcompile");
    assert!(
        out.status.success(),
        "pcompile failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_new_build_under_the_same_file_name_takes_new_dialogs_while_old_ones_finish() {
    let (p, d) = start("");
    let first = load_slp(&d, "echo", "echo.so");
    let mut ws = Ws::connect(rtc(&d), "alice");
    assert_eq!(open_session(&mut ws, "old")["Echo-Marker"], "default");

    pcompile_echo(&p, "second-build");
    let second = load_slp(&d, "echo", "echo.so");
    assert!(second > first);
    assert_eq!(generation(&d, "echo", first)["state"], "draining");

    // New dialogs get the new code; the old dialog stays on the old code.
    let a = call(&mut ws, req("MESSAGE", "svc", "new", 1));
    assert_eq!(a["Echo-Marker"], "second-build", "{a}");
    let a = call(&mut ws, req("INFO", "svc", "old", 3));
    assert_eq!(a["Echo-Marker"], "default", "{a}");

    // The old dialog ends: its generation retires and its image leaves memory.
    let bye = call(&mut ws, req("BYE", "svc", "old", 4));
    assert_eq!(bye["Code"], 200, "{bye}");
    wait_until("the first generation retired", || {
        let g = generation(&d, "echo", first);
        g["state"] == "retired" && g["unmapped"] == true
    });
    assert_eq!(generation(&d, "echo", second)["state"], "active");
}

#[test]
fn delete_drains_live_dialogs_and_drain_timeout_ends_them() {
    let (_p, d) = start("drain_timeout = 1500ms");
    let g = load_slp(&d, "echo", "echo.so");
    let mut ws = Ws::connect(rtc(&d), "alice");
    open_session(&mut ws, "kept");
    open_session(&mut ws, "abandoned");

    let (status, v) = delete(&d, "/slpm/v1/echo");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["generation"]["state"], "draining", "{v}");
    // No new dialogs, but the live ones are still served.
    assert_eq!(call(&mut ws, req("MESSAGE", "svc", "new", 1))["Code"], 404);
    assert_eq!(call(&mut ws, req("INFO", "svc", "kept", 3))["Code"], 200);
    assert_eq!(call(&mut ws, req("BYE", "svc", "kept", 4))["Code"], 200);
    assert_eq!(generation(&d, "echo", g)["state"], "draining");

    // The other session outlives drain_timeout: the server ends it with a BYE.
    let bye = ws
        .recv_within(Duration::from_secs(10))
        .expect("a BYE at drain_timeout");
    assert_eq!(
        (bye["Type"].as_str(), bye["DialogueID"].as_str()),
        (Some("BYE"), Some("abandoned")),
        "{bye}"
    );
    assert!(
        bye["Reason"].as_str().unwrap().contains("drain_timeout"),
        "{bye}"
    );
    wait_until("the generation retired", || {
        generation(&d, "echo", g)["state"] == "retired"
    });
}

#[test]
fn a_panicking_plugin_fails_only_its_dialog() {
    let (p, d) = start("");
    p.add_plugin("chatroom", "chatroom.so");
    let g = load_slp(&d, "echo", "echo.so");
    let mut ws = Ws::connect(rtc(&d), "alice");
    open_session(&mut ws, "bystander");

    let a = call(&mut ws, req("INVITE", "panic", "boom", 1));
    assert_eq!(a["Code"], 500, "{a}");
    d.wait_log(&format!("[echo#{g}] panic"), WAIT);
    wait_until("the panic counted", || {
        generation(&d, "echo", g)["panics"] == 1
    });

    // The other dialog of the same plugin, new dialogs, and other plugins carry on.
    assert_eq!(
        call(&mut ws, req("INFO", "svc", "bystander", 3))["Code"],
        200
    );
    assert_eq!(
        call(&mut ws, req("MESSAGE", "svc", "after", 1))["Code"],
        200
    );
    assert_eq!(post(&d, "/apim/v1/chatroom.v1?file=chatroom.so").0, 200);
    assert_eq!(get(d.api, "/chatroom/v1/rooms").status, 200);

    // An API request that panics gets 500; the API keeps answering and counts it.
    assert_eq!(post(&d, "/apim/v1/echo.v1?file=echo.so").0, 200);
    let r = get(d.api, "/echo/v1/panic");
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.body.contains("failed while handling this request"),
        "{}",
        r.body
    );
    assert_eq!(get(d.api, "/echo/v1/fine").json()["path"], "/fine");
    let apis = get(d.api, "/apim/v1/apis").json();
    let echo = apis["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "echo.v1")
        .unwrap()
        .clone();
    wait_until("the API panic counted", || {
        let apis = get(d.api, "/apim/v1/apis").json();
        apis["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "echo.v1" && a["generations"][0]["panics"] == 1)
    });
    assert_eq!(echo["generations"][0]["state"], "active");
}

#[test]
fn plugins_survive_a_restart() {
    let (p, mut d) = start("");
    p.add_plugin("chatroom", "chatroom.so");
    load_slp(&d, "echo", "echo.so");
    assert_eq!(post(&d, "/apim/v1/chatroom.v1?file=chatroom.so").0, 200);
    // A plugin whose file disappears is skipped at start, not fatal.
    p.add_plugin("echo", "gone.so");
    load_slp(&d, "gone", "gone.so");
    std::fs::remove_file(p.path().join("plugins/gone.so")).unwrap();

    d.signal(libc::SIGINT);
    assert!(d
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let d = Daemon::start(&p);
    d.wait_log(
        "not restored (slp gone gone.so): plugins/gone.so does not exist",
        WAIT,
    );
    assert_eq!(slp_entry(&d, "echo")["generations"][0]["state"], "active");
    let mut ws = Ws::connect(rtc(&d), "alice");
    assert_eq!(call(&mut ws, req("MESSAGE", "svc", "m", 1))["Code"], 200);
    assert_eq!(get(d.api, "/chatroom/v1/rooms").status, 200);
    assert_eq!(slp_entry(&d, "gone"), Value::Null);
}

fn rss_kib(d: &Daemon) -> u64 {
    get(d.api, "/runtime/v1/stats").json()["data"]["rss_kib"]
        .as_u64()
        .unwrap()
}

/// 200 generations of `echo`, alternating between two files so that each load is a new
/// image and each replaced generation is really unloaded, while a client keeps
/// MESSAGE round trips going through `echo`.
#[test]
fn two_hundred_load_unload_cycles_under_traffic() {
    let (p, d) = start("");
    p.add_plugin("echo", "echo-b.so");
    load_slp(&d, "echo", "echo.so");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let traffic = {
        let (stop, done, addr) = (stop.clone(), done.clone(), rtc(&d));
        std::thread::spawn(move || {
            let mut ws = Ws::connect(addr, "loader");
            let mut failures = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let a = call(&mut ws, req("MESSAGE", "svc", &format!("t{n}"), 1));
                if a["Code"] != 200 {
                    failures.push(a);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            failures
        })
    };
    wait_until("traffic flowing", || done.load(Ordering::Relaxed) > 100);
    let rss_before = rss_kib(&d);
    let started = Instant::now();
    let cycles = 200;
    for i in 0..cycles {
        let file = if i % 2 == 0 { "echo-b.so" } else { "echo.so" };
        load_slp(&d, "echo", file);
    }
    let load_time = started.elapsed() / cycles;
    stop.store(true, Ordering::Relaxed);
    let failures = traffic.join().unwrap();
    let (status, _) = delete(&d, "/slpm/v1/echo");
    assert_eq!(status, 200);
    wait_until("every generation unloaded", || {
        d.log()
            .iter()
            .filter(|l| l.contains("SLP echo generation") && l.contains("retired"))
            .count()
            == cycles as usize + 1
    });
    // Each retired image's fate (unmapped, or still mapped) is logged after its
    // retirement, so wait for the last one's line too. A load of the same bytes while
    // an older generation still holds their image shares that image (one "loaded
    // from" line, one fate), which a busy machine's slow retirements make likely: so
    // every image made, not every generation, must have its fate.
    let count = |d: &Daemon, what: &[&str]| {
        d.log()
            .iter()
            .filter(|l| what.iter().any(|w| l.contains(w)))
            .count()
    };
    let fates = |d: &Daemon| count(d, &["its image left memory", "is still mapped"]);
    let images = count(&d, &["] loaded from plugins/"]);
    assert!(
        images > cycles as usize / 2,
        "only {images} images for {cycles} loads"
    );
    wait_until("every image's fate logged", || fates(&d) >= images);
    let round_trips = done.load(Ordering::Relaxed);
    let rss_after = rss_kib(&d);
    let unmapped = d
        .log()
        .iter()
        .filter(|l| l.contains("its image left memory"))
        .count();
    let still_mapped = d
        .log()
        .iter()
        .filter(|l| l.contains("is still mapped"))
        .count();
    eprintln!(
        "FIGURES 200 cycles: {round_trips} round trips, {} failed; load+replace {load_time:?} per cycle; RSS {rss_before} KiB -> {rss_after} KiB; {images} images made, {unmapped} left memory, {still_mapped} stayed mapped",
        failures.len()
    );
    // Traffic kept flowing the whole time (the daemon shut none of it out).
    assert!(
        failures.is_empty(),
        "{} failed transactions, the first: {}",
        failures.len(),
        failures[0]
    );
    assert!(round_trips > 200, "only {round_trips} round trips");
    assert_eq!(unmapped + still_mapped, images);
    // Memory stays bounded: 200 images of ~6 MB each came and went.
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
}

#[test]
fn chatroom_joins_relays_lists_and_expires() {
    let (p, d) = start("");
    p.add_plugin("chatroom", "chatroom.so");
    std::fs::create_dir_all(p.path().join("conf/chatroom")).unwrap();
    std::fs::write(p.path().join("conf/chatroom/chatroom.ini"), "rooms = 888\n").unwrap();
    load_slp(&d, "chatroom", "chatroom.so");
    assert_eq!(post(&d, "/apim/v1/chatroom.v1?file=chatroom.so").0, 200);

    let sub = |who: &str, expire: Option<u64>, room: &str, cseq: u64| {
        let mut m = json!({"Type": "SUBSCRIBE", "Request-URI": format!("room:{room}@node.test"),
            "From": format!("{who}@node.test"), "To": format!("room:{room}@node.test"),
            "DialogueID": format!("sub-{who}-{cseq}"), "CSeq": cseq, "Event": "message-push",
            "P-Asserted-Identity": format!("{who}@node.test"), "Router": "node.test;type=chatroom"});
        if let Some(e) = expire {
            m["Expire"] = json!(e);
        }
        m
    };
    let mut alice = Ws::connect(rtc(&d), "alice");
    let mut bob = Ws::connect(rtc(&d), "bob");
    let a = call(&mut alice, sub("alice", None, "888", 1));
    assert_eq!(a["Code"], 400, "{a}");
    assert!(a["Reason"].as_str().unwrap().contains("Expire"), "{a}");
    let mut no_pai = sub("alice", Some(60), "888", 2);
    no_pai
        .as_object_mut()
        .unwrap()
        .remove("P-Asserted-Identity");
    let a = call(&mut alice, no_pai);
    assert_eq!(a["Code"], 400, "{a}");
    assert!(
        a["Reason"]
            .as_str()
            .unwrap()
            .contains("P-Asserted-Identity"),
        "{a}"
    );
    let a = call(&mut alice, sub("alice", Some(60), "999", 3));
    assert_eq!(a["Code"], 404, "{a}");
    assert!(a["Reason"].as_str().unwrap().contains("no room 999"), "{a}");

    assert_eq!(
        call(&mut alice, sub("alice", Some(60), "888", 4))["Code"],
        200
    );
    assert_eq!(call(&mut bob, sub("bob", Some(1), "888", 1))["Code"], 200);
    let rooms = get(d.api, "/chatroom/v1/rooms").json();
    let members = &rooms["data"]["rooms"][0]["members"];
    assert_eq!(members.as_array().unwrap().len(), 2, "{rooms}");

    // A MESSAGE from alice is answered and relayed to bob, keeping From and Body.
    let msg = json!({"Type": "MESSAGE", "Request-URI": "room:888@node.test", "From": "alice@node.test",
        "To": "room:888@node.test", "DialogueID": "chat-1", "CSeq": 1, "Body": {"text": "hi"},
        "P-Asserted-Identity": "alice@node.test", "Router": "node.test;type=chatroom"});
    assert_eq!(call(&mut alice, msg.clone())["Code"], 200);
    let relayed = bob.recv();
    assert_eq!(relayed["Type"], "MESSAGE", "{relayed}");
    assert_eq!(relayed["Request-URI"], "bob@node.test");
    assert_eq!(
        (relayed["From"].clone(), relayed["Body"].clone()),
        (json!("alice@node.test"), json!({"text": "hi"}))
    );
    bob.send(
        &json!({"Type": "RESPONSE", "Code": 200, "From": relayed["From"], "To": relayed["To"],
        "DialogueID": relayed["DialogueID"], "CSeq": relayed["CSeq"]}),
    );
    assert!(
        alice.recv_within(Duration::from_millis(200)).is_none(),
        "alice must not get her own message"
    );

    // Bob did not refresh his 1 s subscription: he is dropped. Alice leaves with Expire 0.
    wait_until("bob's subscription expired", || {
        get(d.api, "/chatroom/v1/rooms").json()["data"]["rooms"][0]["members"]
            .as_array()
            .unwrap()
            .len()
            == 1
    });
    assert_eq!(
        call(&mut alice, sub("alice", Some(0), "888", 5))["Code"],
        200
    );
    // Its last member left: the room is gone (it opens again at the next SUBSCRIBE).
    let rooms = get(d.api, "/chatroom/v1/rooms").json();
    assert_eq!(rooms["data"]["rooms"], json!([]), "{rooms}");
    assert_eq!(rooms["data"]["allowed"], json!(["888"]), "{rooms}");
    // Not a member any more: her MESSAGE is refused.
    let a = call(
        &mut alice,
        json!({"Type": "MESSAGE", "Request-URI": "room:888@node.test", "From": "alice@node.test",
        "To": "room:888@node.test", "DialogueID": "chat-2", "CSeq": 1, "P-Asserted-Identity": "alice@node.test",
        "Router": "node.test;type=chatroom"}),
    );
    assert_eq!(a["Code"], 404, "{a}");
}

/// gortc's chat rooms: with no `rooms =`, the first SUBSCRIBE to any name opens its room,
/// members talk both ways, and the room is gone when the last one leaves. `max_rooms`
/// caps how many exist; a SIGHUP that adds an allow-list closes the rooms it leaves out.
#[test]
fn chatroom_opens_rooms_on_demand_and_closes_them_when_empty() {
    let (p, d) = start("");
    p.add_plugin("chatroom", "chatroom.so");
    std::fs::create_dir_all(p.path().join("conf/chatroom")).unwrap();
    std::fs::write(
        p.path().join("conf/chatroom/chatroom.ini"),
        "max_rooms = 2\n",
    )
    .unwrap();
    load_slp(&d, "chatroom", "chatroom.so");
    assert_eq!(post(&d, "/apim/v1/chatroom.v1?file=chatroom.so").0, 200);
    let rooms = || get(d.api, "/chatroom/v1/rooms").json()["data"].clone();
    assert_eq!(rooms()["rooms"], json!([]));
    assert_eq!(rooms()["allowed"], Value::Null, "any name may open a room");
    assert_eq!(rooms()["max_rooms"], 2);

    let sub = |who: &str, room: &str, expire: u64, cseq: u64| {
        json!({"Type": "SUBSCRIBE", "Request-URI": format!("room:{room}@node.test"),
            "From": format!("{who}@node.test"), "To": format!("room:{room}@node.test"),
            "DialogueID": format!("sub-{who}-{cseq}"), "CSeq": cseq, "Event": "message-push",
            "Expire": expire, "P-Asserted-Identity": format!("{who}@node.test"),
            "Router": "node.test;type=chatroom"})
    };
    let say = |who: &str, room: &str, n: u64, text: &str| {
        json!({"Type": "MESSAGE", "Request-URI": format!("room:{room}@node.test"),
            "From": format!("{who}@node.test"), "To": format!("room:{room}@node.test"),
            "DialogueID": format!("say-{who}-{n}"), "CSeq": 1, "Body": {"text": text},
            "P-Asserted-Identity": format!("{who}@node.test"), "Router": "node.test;type=chatroom"})
    };
    // Answers a relayed MESSAGE and returns what it said.
    let heard = |ws: &mut Ws| {
        let m = ws.recv();
        assert_eq!(m["Type"], "MESSAGE", "{m}");
        ws.send(
            &json!({"Type": "RESPONSE", "Code": 200, "From": m["From"], "To": m["To"],
            "DialogueID": m["DialogueID"], "CSeq": m["CSeq"]}),
        );
        (
            m["From"].as_str().unwrap().to_string(),
            m["Body"]["text"].clone(),
        )
    };

    let mut alice = Ws::connect(rtc(&d), "alice");
    let mut bob = Ws::connect(rtc(&d), "bob");
    // Nobody configured "tea-room": alice's SUBSCRIBE opens it, bob's joins it.
    assert_eq!(
        call(&mut alice, sub("alice", "tea-room", 60, 1))["Code"],
        200
    );
    assert_eq!(call(&mut bob, sub("bob", "tea-room", 60, 1))["Code"], 200);
    let listed = rooms();
    assert_eq!(listed["rooms"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["rooms"][0]["name"], "tea-room");
    assert_eq!(
        listed["rooms"][0]["members"].as_array().unwrap().len(),
        2,
        "{listed}"
    );

    assert_eq!(
        call(&mut alice, say("alice", "tea-room", 1, "hi bob"))["Code"],
        200
    );
    assert_eq!(heard(&mut bob), ("alice@node.test".into(), json!("hi bob")));
    assert_eq!(
        call(&mut bob, say("bob", "tea-room", 1, "hi alice"))["Code"],
        200
    );
    assert_eq!(
        heard(&mut alice),
        ("bob@node.test".into(), json!("hi alice"))
    );

    // The cap: a second room opens, a third does not (503), and a name too long is 400.
    assert_eq!(call(&mut alice, sub("alice", "second", 60, 2))["Code"], 200);
    let a = call(&mut bob, sub("bob", "third", 60, 2));
    assert_eq!(a["Code"], 503, "{a}");
    assert!(a["Reason"].as_str().unwrap().contains("max_rooms"), "{a}");
    let a = call(&mut bob, sub("bob", &"x".repeat(129), 60, 3));
    assert_eq!(a["Code"], 400, "{a}");
    assert_eq!(call(&mut alice, sub("alice", "second", 0, 3))["Code"], 200);

    // Both leave: the room is gone, and a MESSAGE to it says there is no such room.
    assert_eq!(
        call(&mut alice, sub("alice", "tea-room", 0, 4))["Code"],
        200
    );
    assert_eq!(rooms()["rooms"][0]["members"].as_array().unwrap().len(), 1);
    assert_eq!(call(&mut bob, sub("bob", "tea-room", 0, 4))["Code"], 200);
    assert_eq!(rooms()["rooms"], json!([]), "the last member left");
    let a = call(&mut bob, say("bob", "tea-room", 2, "anyone?"));
    assert_eq!(a["Code"], 404, "{a}");
    assert!(
        a["Reason"].as_str().unwrap().contains("no room tea-room"),
        "{a}"
    );

    // An allow-list added on SIGHUP closes the open rooms it does not list.
    assert_eq!(call(&mut alice, sub("alice", "lobby", 60, 5))["Code"], 200);
    assert_eq!(call(&mut bob, sub("bob", "gone", 60, 5))["Code"], 200);
    std::fs::write(
        p.path().join("conf/chatroom/chatroom.ini"),
        "rooms = lobby\n",
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log("closed room gone: no longer in rooms =", WAIT);
    let listed = rooms();
    assert_eq!(listed["allowed"], json!(["lobby"]), "{listed}");
    assert_eq!(listed["rooms"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["rooms"][0]["name"], "lobby");
    let a = call(&mut bob, sub("bob", "gone", 60, 6));
    assert_eq!(a["Code"], 404, "{a}");
}

/// The names of the daemon's threads.
fn thread_names(d: &Daemon) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{}/task", d.pid()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

/// An SLP that says it never blocks (echo) runs inline under the node's lock: no thread of its own,
/// and it still answers, from timers too. One that does not say so (hid, whose device
/// writes may wait) gets its `slp-NAME#GEN` thread.
#[test]
fn a_never_blocking_slp_runs_without_a_thread_and_others_get_one() {
    let (p, d) = start("");
    p.add_plugin("hid", "hid.so");
    let echo = load_slp(&d, "echo", "echo.so");
    let hid = load_slp(&d, "hid", "hid.so");
    d.wait_log(
        &format!("SLP echo#{echo} never blocks: it runs inline, under the node's lock"),
        Duration::from_secs(5),
    );
    let hid_thread = format!("slp-hid#{hid}");
    wait_until("the hid runner thread", || {
        thread_names(&d).contains(&hid_thread)
    });
    let names = thread_names(&d);
    assert!(
        !names.iter().any(|n| n.starts_with("slp-echo")),
        "echo has a thread: {names:?}"
    );
    // It answers, at once and after a timer (delay-N), on the node task.
    let mut ws = Ws::connect(rtc(&d), "alice");
    let r = call(&mut ws, req("MESSAGE", "now", "m1", 1));
    assert_eq!(r["Code"], 200, "{r}");
    let r = call(&mut ws, req("MESSAGE", "delay-50", "m2", 1));
    assert_eq!(r["Code"], 200, "{r}");
    let r = call(&mut ws, req("MESSAGE", "panic", "m3", 1));
    assert_eq!(r["Code"], 500, "a panic in an inline SLP is caught: {r}");
    let r = call(&mut ws, req("MESSAGE", "again", "m4", 1));
    assert_eq!(r["Code"], 200, "and the node serves on: {r}");
}
