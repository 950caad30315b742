//! The people's port end to end: accounts made with `jsipd user`, sign-in, sessions,
//! roles, lock-out, TOTP, CSRF and Origin checks, and the sign-in page in headless
//! Chromium, against the real daemon and real plugins (`echo`, `gpio` on its simulated
//! board, `hid`, and the ABI 1.2 fixture).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use jsipd_e2e::http::{request, Response};
use jsipd_e2e::webdriver::{self, Browser};
use jsipd_e2e::ws::{Refused, Ws};
use jsipd_e2e::{loopback_config, Daemon, Prefix};

/// `/rtc` as shipped (sessions and tokens), echo compiled in, a short lock-out.
fn config() -> String {
    format!(
        "{}lockout = 2s\n[JSIPStack]\nbuiltin_slps = echo\n",
        loopback_config("").replace("auth = none\n", "auth = session, token\n")
    )
}

/// A prefix with viewer `vic`, operator `olga` and admin `ada`, and the plugins.
fn start() -> (Prefix, Daemon) {
    let p = Prefix::with_config(&config());
    p.add_user("vic", "viewer", "viewer-password");
    p.add_user("olga", "operator", "operator-password");
    p.add_user("ada", "admin", "admin-password");
    p.add_plugin("echo", "echo.so");
    p.add_plugin("gpio", "gpio.so");
    p.add_plugin("abi_1_2", "old.so");
    let gpio = p.path().join("conf/gpio");
    std::fs::create_dir_all(&gpio).unwrap();
    std::fs::write(gpio.join("gpio.ini"), "backend = sim\n").unwrap();
    let d = Daemon::start(&p);
    for what in [
        "/apim/v1/echo.v1?file=echo.so",
        "/apim/v1/gpio.v1?file=gpio.so",
        "/apim/v1/old.v1?file=old.so",
    ] {
        let r = request(d.api, "POST", what, &[], "");
        assert_eq!(r.status, 200, "{what}: {}", r.body);
    }
    (p, d)
}

fn people(d: &Daemon) -> SocketAddr {
    d.rtc.expect("people's port")
}

/// Signs in with JSON; returns the answer and the `Cookie` header value it set.
fn login(d: &Daemon, user: &str, password: &str, totp: &str) -> (Response, Option<String>) {
    let body = json!({"username": user, "password": password, "totp": totp}).to_string();
    let r = request(
        people(d),
        "POST",
        "/auth/login",
        &[("content-type", "application/json")],
        &body,
    );
    let cookie = r
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .map(str::to_string);
    (r, cookie)
}

fn session(d: &Daemon, user: &str, password: &str) -> String {
    let (r, cookie) = login(d, user, password, "");
    assert_eq!(r.status, 200, "{}", r.body);
    cookie.expect("a session cookie")
}

/// The JSIP connections the daemon holds (`/runtime/v1/jstack`).
fn connections(d: &Daemon) -> Vec<Value> {
    let jstack = request(d.api, "GET", "/runtime/v1/jstack", &[], "").json();
    jstack["data"]["connections"].as_array().unwrap().clone()
}

fn with_cookie(d: &Daemon, method: &str, path: &str, cookie: &str, body: &str) -> Response {
    request(people(d), method, path, &[("cookie", cookie)], body)
}

#[test]
fn without_a_session_plugin_routes_and_me_answer_401_and_pages_go_to_sign_in() {
    let (_p, d) = start();
    for path in ["/echo/v1/x", "/gpio/v1/led", "/auth/me"] {
        let r = request(people(&d), "GET", path, &[], "");
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert!(r.body.contains("sign in"), "{}", r.body);
    }
    let r = request(people(&d), "POST", "/gpio/v1/power", &[], "");
    assert_eq!(r.status, 401);
    // A page (a browser asking for HTML) is sent to the sign-in form, and back after.
    let r = request(
        people(&d),
        "GET",
        "/echo/v1/page?a=1",
        &[("accept", "text/html")],
        "",
    );
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location"),
        Some("/?next=%2Fecho%2Fv1%2Fpage%3Fa%3D1")
    );
    let r = request(
        people(&d),
        "GET",
        "/?next=%2Fecho%2Fv1%2Fpage%3Fa%3D1",
        &[],
        "",
    );
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("id=\"signin\"") && r.body.contains("value=\"/echo/v1/page?a=1\""),
        "{}",
        r.body
    );
    // A forged session id is no session.
    let r = with_cookie(&d, "GET", "/auth/me", "jsipd_session=AAAA", "");
    assert_eq!(r.status, 401);
    assert_eq!(request(people(&d), "GET", "/nothing", &[], "").status, 404);
    // The operators' port is unchanged: loopback, no session needed.
    assert_eq!(request(d.api, "GET", "/gpio/v1/led", &[], "").status, 200);
}

#[test]
fn roles_decide_who_may_press_paste_and_use_a_plugin_that_knows_no_roles() {
    let (p, d) = start();
    p.add_plugin("hid", "hid.so");
    let r = request(d.api, "POST", "/apim/v1/hid.v1?file=hid.so", &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
    let (vic, olga, ada) = (
        session(&d, "vic", "viewer-password"),
        session(&d, "olga", "operator-password"),
        session(&d, "ada", "admin-password"),
    );
    let me = with_cookie(&d, "GET", "/auth/me", &vic, "").json();
    assert_eq!(
        (me["data"]["user"].as_str(), me["data"]["role"].as_str()),
        (Some("vic"), Some("viewer"))
    );

    // A viewer sees the LEDs but may not press or paste.
    assert_eq!(with_cookie(&d, "GET", "/gpio/v1/led", &vic, "").status, 200);
    for (path, body) in [("/gpio/v1/power", ""), ("/hid/v1/paste", r#"{"text":"x"}"#)] {
        let r = with_cookie(&d, "POST", path, &vic, body);
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert!(
            r.body.contains("needs the operator role; vic is a viewer"),
            "{}",
            r.body
        );
    }
    // An operator gets through to the plugins: the simulated board presses, and hid
    // answers for itself (whatever its backend can do here, it is not a refusal).
    let r = with_cookie(&d, "POST", "/gpio/v1/power", &olga, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = with_cookie(&d, "POST", "/hid/v1/paste", &olga, r#"{"text":"x"}"#);
    assert!(![401, 403].contains(&r.status), "{}: {}", r.status, r.body);

    // The plugin is told who calls: the user and role here, the operator on the API port.
    let r = with_cookie(&d, "GET", "/echo/v1/who", &olga, "").json();
    assert_eq!(r["caller"], json!({"user": "olga", "role": "operator"}));
    let r = request(d.api, "GET", "/echo/v1/who", &[], "").json();
    assert_eq!(r["caller"], json!({"user": "", "role": "admin"}));

    // A plugin built before ABI 1.3 states no roles: admins only on the people's port,
    // everyone on the operators' port, as before.
    let r = with_cookie(&d, "GET", "/old/v1/x", &olga, "");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("ABI 1.3"), "{}", r.body);
    let r = with_cookie(&d, "GET", "/old/v1/x", &ada, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"abi": "1.2", "method": "GET", "path": "/x"})
    );
    assert_eq!(
        request(d.api, "GET", "/old/v1/y", &[], "").json()["abi"],
        "1.2"
    );
}

#[test]
fn five_wrong_passwords_lock_the_user_out_until_the_lock_ends() {
    let (_p, d) = start();
    for i in 1..=5 {
        let (r, cookie) = login(&d, "olga", "wrong-password", "");
        assert_eq!(r.status, 401, "attempt {i}: {}", r.body);
        assert!(cookie.is_none());
    }
    d.wait_log("locked out: olga from 127.0.0.1", Duration::from_secs(5));
    let (r, cookie) = login(&d, "olga", "operator-password", "");
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("too many failed sign-ins"), "{}", r.body);
    assert!(cookie.is_none());
    // Another user is not locked.
    session(&d, "vic", "viewer-password");
    // The lock (2 s here) ends; the refusals meanwhile did not extend it.
    let locked_at = Instant::now();
    let cookie = loop {
        let (r, cookie) = login(&d, "olga", "operator-password", "");
        if r.status == 200 {
            break cookie.unwrap();
        }
        assert_eq!(r.status, 429, "{}", r.body);
        assert!(
            locked_at.elapsed() < Duration::from_secs(10),
            "still locked"
        );
        // The lock's end is a moment in the daemon only; ask again shortly.
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(with_cookie(&d, "GET", "/auth/me", &cookie, "").status, 200);
    d.wait_log(
        "sign-in: olga (operator) from 127.0.0.1",
        Duration::from_secs(1),
    );
}

#[test]
fn cross_origin_posts_and_foreign_websockets_are_refused() {
    let (_p, d) = start();
    let olga = session(&d, "olga", "operator-password");
    // The test client's requests go to Host "test"; its own origin is http://test.
    let login_body = r#"{"username":"olga","password":"operator-password"}"#;
    for origin in ["http://evil.example", "null", "http://test:1"] {
        let r = request(
            people(&d),
            "POST",
            "/auth/login",
            &[("origin", origin), ("content-type", "application/json")],
            login_body,
        );
        assert_eq!(r.status, 403, "{origin}: {}", r.body);
        assert!(r.body.contains("CSRF"), "{}", r.body);
        let r = request(
            people(&d),
            "POST",
            "/gpio/v1/power",
            &[("origin", origin), ("cookie", &olga)],
            "",
        );
        assert_eq!(r.status, 403, "{origin}: {}", r.body);
    }
    let r = request(
        people(&d),
        "POST",
        "/gpio/v1/power",
        &[("origin", "http://test"), ("cookie", &olga)],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = request(
        people(&d),
        "POST",
        "/gpio/v1/power",
        &[("sec-fetch-site", "cross-site"), ("cookie", &olga)],
        "",
    );
    assert_eq!(r.status, 403, "{}", r.body);

    // /rtc with the session: from this port's own origin only, named olga~TAB.
    let own = format!("http://{}", people(&d));
    let mut ws = Ws::try_connect_with(
        people(&d),
        "/rtc?tab=t1",
        &[("cookie", &olga), ("origin", &own)],
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    match Ws::try_connect_with(
        people(&d),
        "/rtc?tab=t2",
        &[("cookie", &olga), ("origin", "http://evil.example")],
    ) {
        Err(Refused::Http(403, body)) => assert!(body.contains("evil.example"), "{body}"),
        other => panic!("expected 403, got {:?}", other.map(|_| "a socket")),
    }
    // A session may not take another user's name; nobody may take a USER~TAB name
    // without one; and without a session or token there is no socket at all.
    for (q, headers, want) in [
        (
            "/rtc?userid=vic~t1",
            vec![("cookie", olga.as_str()), ("origin", own.as_str())],
            403,
        ),
        ("/rtc?userid=olga~t1", vec![], 400),
        ("/rtc?userid=robot", vec![], 401),
    ] {
        match Ws::try_connect_with(people(&d), q, &headers) {
            Err(Refused::Http(code, body)) => assert_eq!(code, want, "{q}: {body}"),
            other => panic!("{q}: expected {want}, got {:?}", other.map(|_| "a socket")),
        }
    }
    // The socket works and carries the derived name.
    ws.send(
        &json!({"Type": "MESSAGE", "Request-URI": "x@echo.test", "From": "olga",
        "To": "x@echo.test", "DialogueID": "d1", "CSeq": 1}),
    );
    assert_eq!(ws.recv()["Code"], 200);
    let conns = connections(&d);
    assert!(conns.iter().any(|c| c["name"] == "olga~t1"), "{conns:?}");
}

#[test]
fn sessions_end_when_the_user_is_deleted_or_the_password_changes_at_sighup() {
    let (p, d) = start();
    let (olga, vic, ada) = (
        session(&d, "olga", "operator-password"),
        session(&d, "vic", "viewer-password"),
        session(&d, "ada", "admin-password"),
    );
    let out = p.user(&["del", "vic"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = p.user(&["passwd", "olga", "--password-stdin"], "a-new-password\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Until SIGHUP, the daemon works on the accounts it read.
    assert_eq!(with_cookie(&d, "GET", "/auth/me", &vic, "").status, 200);
    d.signal(libc::SIGHUP);
    d.wait_log(
        "sessions of changed or deleted users end",
        Duration::from_secs(5),
    );
    for cookie in [&olga, &vic] {
        assert_eq!(with_cookie(&d, "GET", "/auth/me", cookie, "").status, 401);
        assert_eq!(with_cookie(&d, "GET", "/echo/v1/x", cookie, "").status, 401);
    }
    assert_eq!(
        with_cookie(&d, "GET", "/auth/me", &ada, "").status,
        200,
        "ada is unchanged"
    );
    assert_eq!(login(&d, "olga", "operator-password", "").0.status, 401);
    session(&d, "olga", "a-new-password");
    assert_eq!(login(&d, "vic", "viewer-password", "").0.status, 401);
    // Signing out ends the session at once.
    let r = with_cookie(&d, "POST", "/auth/logout", &ada, "");
    assert_eq!(r.status, 200);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(with_cookie(&d, "GET", "/auth/me", &ada, "").status, 401);
}

/// RFC 6238's code for `secret` at `unix` seconds, computed here independently.
fn totp_code(secret: &[u8], unix: u64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = ring::hmac::sign(&key, &(unix / 30).to_be_bytes());
    let m = mac.as_ref();
    let o = usize::from(m[19] & 15);
    let n = u32::from_be_bytes([m[o] & 0x7f, m[o + 1], m[o + 2], m[o + 3]]) % 1_000_000;
    format!("{n:06}")
}

#[test]
fn totp_takes_a_right_code_once_and_refuses_a_wrong_or_reused_one() {
    let (p, d) = start();
    let out = p.user(&["totp", "olga"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uri = String::from_utf8(out.stdout).unwrap();
    assert!(
        uri.starts_with("otpauth://totp/jsipd:olga?secret="),
        "{uri}"
    );
    let secret = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let secret = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log(
        "sessions of changed or deleted users end",
        Duration::from_secs(5),
    );

    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let right = totp_code(&secret, now);
    let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 1) % 1_000_000);
    for code in ["", wrong.as_str()] {
        let (r, _) = login(&d, "olga", "operator-password", code);
        assert_eq!(r.status, 401, "code {code:?}: {}", r.body);
        assert!(r.body.contains("one-time code"), "{}", r.body);
    }
    let (r, cookie) = login(&d, "olga", "operator-password", &right);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(cookie.is_some());
    let (r, _) = login(&d, "olga", "operator-password", &right);
    assert_eq!(r.status, 401, "a reused code: {}", r.body);
}

#[test]
fn the_users_file_is_0600_and_a_readable_one_is_refused() {
    let p = Prefix::with_config(&config());
    p.add_user("olga", "operator", "operator-password");
    let file = p.path().join("conf/users");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("olga operator $argon2id$v=19$m=19456,t=2,p=1$"),
        "{text}"
    );
    assert!(!text.contains("operator-password"));
    assert!(p.run(&["-t"]).status.success());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = p.run(&["-t"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mode 0644") && err.contains("chmod 600"),
        "{err}"
    );
    // The daemon does not start on it either.
    let out = p.run(&[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("chmod 600")
            || String::from_utf8_lossy(&out.stderr).contains("chmod 600")
    );
}

#[test]
fn user_add_prints_a_password_when_none_is_given_and_refuses_bad_input() {
    let p = Prefix::with_config(&config());
    let out = p.user(&["add", "olga"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let password = stdout
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap_or_else(|| panic!("no password printed: {stdout}"))
        .to_string();
    assert_eq!(password.len(), 16);
    for (args, stdin, says) in [
        (&["add", "olga"][..], "", "exists"),
        (
            &["add", "a~b", "--password-stdin"][..],
            "long-enough-pw\n",
            "not a user name",
        ),
        (
            &["add", "carl", "--password-stdin"][..],
            "short\n",
            "at least 8",
        ),
        (&["add", "carl", "--role", "root"][..], "", "not a role"),
        (&["del", "nobody"][..], "", "no user nobody"),
        (&["frobnicate"][..], "", "not a user command"),
    ] {
        let out = p.user(args, stdin);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let out = p.user(&["list"], "");
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(
        list.starts_with("olga") && list.contains("operator"),
        "{list}"
    );
    let d = Daemon::start(&p);
    session(&d, "olga", &password);
}

#[test]
fn the_first_start_without_accounts_says_how_to_make_one() {
    let p = Prefix::with_config(&config());
    let d = Daemon::start(&p);
    d.wait_log("user add NAME --role admin", Duration::from_secs(1));
    let r = request(people(&d), "GET", "/", &[], "");
    assert!(r.body.contains("No account exists yet"), "{}", r.body);
    let (r, _) = login(&d, "admin", "admin", "");
    assert_eq!(r.status, 401, "no default password");
}

#[test]
fn sign_in_through_the_form_in_chromium_and_two_tabs_hold_two_sockets() {
    if !webdriver::available() {
        panic!("chromium and chromium-driver are missing: run ./test.sh, which installs them");
    }
    let (_p, d) = start();
    let site = format!("http://{}", people(&d));
    let b = Browser::start();
    b.goto(&format!("{site}/"));
    b.wait_for(
        "the sign-in form",
        "return !!document.querySelector('#signin')",
        Duration::from_secs(10),
    );
    b.screenshot("people-signin");
    b.type_into("#username", "olga");
    b.type_into("#password", "wrong-password\u{E007}");
    b.wait_for(
        "the refusal",
        "return !!document.querySelector('#message')",
        Duration::from_secs(10),
    );
    let message = b.eval("return document.querySelector('#message').textContent");
    assert_eq!(message, "wrong user name or password");
    b.screenshot("people-signin-refused");
    assert_eq!(
        b.eval("return document.querySelector('#username').value"),
        "olga",
        "kept"
    );
    b.type_into("#password", "operator-password\u{E007}");
    b.wait_for(
        "the signed-in page",
        "return !!document.querySelector('#user')",
        Duration::from_secs(10),
    );
    assert_eq!(
        b.eval("return document.querySelector('#user').textContent"),
        "olga"
    );
    assert_eq!(
        b.eval("return document.querySelector('#role').textContent"),
        "operator"
    );
    b.screenshot("people-signed-in");
    // The cookie is HttpOnly: the page's script cannot read it, but its requests carry it.
    assert_eq!(b.eval("return document.cookie"), "");
    let me = b.eval("return fetch('/auth/me').then(r => r.json());");
    assert_eq!(me["data"]["user"], "olga", "{me}");

    // Two tabs, one JSIP socket each, both live at once.
    let open = |tab: &str| {
        b.eval(&format!(
            "window.ws = new WebSocket('ws://' + location.host + '/rtc?tab={tab}');
             window.answers = [];
             window.ws.onmessage = e => window.answers.push(JSON.parse(e.data));
             return true;"
        ));
        b.wait_for(
            "the socket to open",
            "return window.ws.readyState === 1",
            Duration::from_secs(10),
        );
    };
    let first = b.tab();
    open("one");
    let second = b.new_tab();
    b.switch_to(&second);
    b.goto(&format!("{site}/"));
    b.wait_for(
        "the page",
        "return !!document.querySelector('#user')",
        Duration::from_secs(10),
    );
    open("two");
    for (tab, id) in [(&first, "a"), (&second, "b")] {
        b.switch_to(tab);
        assert_eq!(
            b.eval("return window.ws.readyState"),
            json!(1),
            "tab {id} kept its socket"
        );
        b.eval(&format!(
            "window.ws.send(JSON.stringify({{Type: 'MESSAGE', 'Request-URI': 'x@echo.test', From: 'olga',
              To: 'x@echo.test', DialogueID: 'tab-{id}', CSeq: 1}})); return true;"
        ));
        b.wait_for(
            "the echo's answer",
            "return window.answers.some(a => a.Code === 200)",
            Duration::from_secs(10),
        );
    }
    let conns = connections(&d);
    for name in ["olga~one", "olga~two"] {
        assert!(
            conns
                .iter()
                .any(|c| c["name"] == name && c["state"] != "away"),
            "{name}: {conns:?}"
        );
    }

    // Sign out: back to the form, and the session is gone.
    b.switch_to(&first);
    b.eval("document.querySelector('#signout').click(); return true;");
    b.wait_for(
        "the sign-in form again",
        "return !!document.querySelector('#signin')",
        Duration::from_secs(10),
    );
    let me = b.eval("return fetch('/auth/me').then(r => r.status);");
    assert_eq!(me, json!(401));
    d.wait_log("sign-out: olga", Duration::from_secs(1));
}

/// A JSIP request from `from`, to `uri`.
fn jsip(method: &str, uri: &str, dialog: &str) -> Value {
    json!({"Type": method, "Request-URI": uri, "From": "me@kvm.test", "To": uri,
           "DialogueID": dialog, "CSeq": 1})
}

#[test]
fn jsip_requests_carry_the_signed_in_caller_and_hid_refuses_a_viewer() {
    let (p, d) = start();
    p.add_plugin("hid", "hid.so");
    let r = request(d.api, "POST", "/slpm/v1/hid?file=hid.so", &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
    let own = format!("http://{}", people(&d));
    let socket = |cookie: &str, tab: &str| {
        Ws::try_connect_with(
            people(&d),
            &format!("/rtc?tab={tab}"),
            &[("cookie", cookie), ("origin", &own)],
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
    };
    let mut vic = socket(&session(&d, "vic", "viewer-password"), "v");
    let mut olga = socket(&session(&d, "olga", "operator-password"), "o");

    // The daemon asserts who sent a request, and a client cannot forge it.
    let mut forged = jsip("MESSAGE", "whoami@echo.test", "w1");
    forged["Caller"] = json!({"user": "ada", "role": "admin"});
    olga.send(&forged);
    let r = olga.recv();
    assert_eq!(
        r["Body"],
        json!({"user": "olga", "role": "operator"}),
        "{r}"
    );
    let token = String::from_utf8(p.run(&["token", "robot"]).stdout).unwrap();
    let mut robot = Ws::try_connect(
        people(&d),
        &format!("/rtc?userid=robot&token={}", token.trim()),
        None,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    robot.send(&forged);
    let r = robot.recv();
    assert_eq!(r["Code"], 200);
    assert!(
        r.get("Body").is_none_or(Value::is_null),
        "a program has no asserted caller: {r}"
    );

    // hid's SLP: a viewer may not open a keyboard dialog; an operator may.
    vic.send(&jsip("INVITE", "keyboard@hid.kvm.test", "k1"));
    let r = vic.recv();
    assert_eq!(r["Code"], 403, "{r}");
    assert!(
        r["Reason"]
            .as_str()
            .unwrap()
            .contains("needs the operator role; vic is a viewer"),
        "{r}"
    );
    olga.send(&jsip("INVITE", "keyboard@hid.kvm.test", "k2"));
    let r = olga.recv();
    assert_eq!(r["Code"], 200, "{r}");
}
