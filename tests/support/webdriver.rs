//! Headless Chromium driven over W3C WebDriver (Debian `chromium` and
//! `chromium-driver`), for tests of what a person sees in a browser.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One WebDriver call. ChromeDriver keeps connections open whatever the request says,
/// so the answer is read by its Content-Length, not to the end of the stream.
fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap();
            }
        }
    }
    let mut data = vec![0u8; length];
    reader.read_exact(&mut data).unwrap();
    let value = serde_json::from_slice(&data).unwrap_or_else(|e| {
        panic!(
            "WebDriver {method} {path}: not JSON ({e}): {}",
            String::from_utf8_lossy(&data)
        )
    });
    (code, value)
}

pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a port it picks and a headless Chromium session, at the
    /// size of a 1366x768 laptop screen.
    pub fn start() -> Browser {
        // ChromeDriver has been seen, once in CI, to exit before it announced its port.
        // That is the test rig failing, not the code under test, so it gets two more
        // tries; what it printed and how it ended goes to the test's output either way.
        let mut failures = Vec::new();
        let (driver, out, port) = loop {
            match Self::start_driver() {
                Ok(started) => break started,
                Err(why) => {
                    eprintln!("chromedriver did not start: {why}");
                    failures.push(why);
                    assert!(failures.len() < 3, "chromedriver exited: {failures:?}");
                }
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // Do not wait for every subresource: a page with an endless MJPEG <img>
            // would never finish loading.
            "pageLoadStrategy": "eager",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1366,768",
                    // WebRTC on loopback, as the stream tests need it: no mDNS names for
                    // host candidates, loopback candidates allowed, video plays unmuted.
                    "--allow-loopback-in-peer-connection",
                    "--disable-features=WebRtcHideLocalIpsWithMdns",
                    "--autoplay-policy=no-user-gesture-required",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let (_, v) = call(addr, "POST", "/session", &caps.to_string());
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        Browser {
            driver,
            addr,
            session,
            _profile: profile,
        }
    }

    /// Runs chromedriver on a port it picks and waits for the line that names the port.
    /// On failure, says how it ended and what it wrote to stderr.
    fn start_driver() -> Result<(Child, BufReader<std::process::ChildStdout>, u16), String> {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut driver = Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("run chromedriver (Debian chromium-driver)");
        let mut out = BufReader::new(driver.stdout.take().unwrap());
        let mut said = String::new();
        let port = loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                break None;
            }
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                break rest.trim().trim_end_matches('.').parse::<u16>().ok();
            }
            said.push_str(&line);
        };
        match port {
            Some(port) => Ok((driver, out, port)),
            None => {
                let _ = driver.kill();
                let status = driver.wait().map(|s| s.to_string()).unwrap_or_default();
                let stderr = std::fs::read_to_string(log.path()).unwrap_or_default();
                Err(format!(
                    "{status}; stdout {said:?}; stderr {:?}",
                    stderr.trim()
                ))
            }
        }
    }

    fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (code, v) = call(
            self.addr,
            method,
            &format!("/session/{}{path}", self.session),
            &body,
        );
        assert_eq!(code, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", json!({ "url": url }));
    }

    /// Opens a new tab and returns its handle (the current tab stays current).
    pub fn new_tab(&self) -> String {
        let v = self.command("POST", "/window/new", json!({"type": "tab"}));
        v["handle"].as_str().expect("window handle").to_string()
    }

    /// The current tab's handle.
    pub fn tab(&self) -> String {
        let v = self.command("GET", "/window", Value::Null);
        v.as_str().expect("window handle").to_string()
    }

    /// Makes tab `handle` the one commands go to.
    pub fn switch_to(&self, handle: &str) {
        self.command("POST", "/window", json!({ "handle": handle }));
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    /// The WebDriver id of the element `css` selects.
    fn element(&self, css: &str) -> String {
        let found = self.command(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    /// Types `text` into the element `css` selects, as keystrokes ("\u{E007}" is Enter).
    /// For a file input, `text` is the file's path.
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.command(
            "POST",
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        );
    }

    /// Clicks the element `css` selects, as a person's mouse would (WebDriver Element
    /// Click: scrolled into view, refused when something covers it).
    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.command("POST", &format!("/element/{id}/click"), json!({}));
    }

    /// Key actions on whatever has the focus: `keys` as WebDriver key values, each
    /// `(value, down)`. The browser makes real key events of them (with `code` set).
    pub fn key_actions(&self, keys: &[(String, bool)]) {
        let actions: Vec<Value> = keys
            .iter()
            .map(|(value, down)| {
                json!({"type": if *down { "keyDown" } else { "keyUp" }, "value": value})
            })
            .collect();
        self.command(
            "POST",
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}),
        );
    }

    /// Types `text` on the focused element key by key as on a US keyboard: Shift is
    /// pressed around the characters that need it, as a person's hand would.
    pub fn type_keys(&self, text: &str) {
        let mut keys = Vec::new();
        for c in text.chars() {
            let value = match c {
                '\n' => "\u{E007}".to_string(),
                c => c.to_string(),
            };
            let shifted = c.is_ascii_uppercase() || "~!@#$%^&*()_+{}|:\"<>?".contains(c);
            if shifted {
                keys.push(("\u{E008}".to_string(), true));
            }
            keys.push((value.clone(), true));
            keys.push((value, false));
            if shifted {
                keys.push(("\u{E008}".to_string(), false));
            }
        }
        self.key_actions(&keys);
    }

    /// A left click at viewport position (`x`, `y`), the pointer moved there first.
    pub fn click_at(&self, x: i64, y: i64) {
        self.command(
            "POST",
            "/actions",
            json!({"actions": [{"type": "pointer", "id": "mouse",
            "parameters": {"pointerType": "mouse"},
            "actions": [
                {"type": "pointerMove", "x": x, "y": y, "origin": "viewport", "duration": 0},
                {"type": "pointerDown", "button": 0},
                {"type": "pointerUp", "button": 0},
            ]}]}),
        );
    }

    /// Lets go of every key and button the action state holds.
    pub fn release_actions(&self) {
        self.command("DELETE", "/actions", Value::Null);
    }

    /// Signs in on the people's port through its form: opens `url` (its sign-in page,
    /// `/` or `/?next=…`) and types the name and the password with Enter. The caller
    /// waits for what the signed-in page shows.
    pub fn sign_in(&self, url: &str, user: &str, password: &str) {
        self.goto(url);
        self.wait_for(
            "the sign-in form",
            "return !!document.querySelector('#signin')",
            Duration::from_secs(10),
        );
        self.type_into("#username", user);
        self.type_into("#password", &format!("{password}\u{E007}"));
    }

    /// Evaluates `script` until it returns true, or panics after `timeout`.
    pub fn wait_for(&self, what: &str, script: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.eval(script) != json!(true) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting in the browser for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Saves a PNG of the window as `target/test-artifacts/NAME.png` and returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.command("GET", "/screenshot", Value::Null);
        let png = base64_decode(b64.as_str().expect("base64 PNG"));
        let dir = crate::target_dir().join("test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Browser {
    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) every process of this browser, as if its
    /// machine froze or its network went dark: it sends nothing, answers nothing and
    /// reads nothing until resumed.
    pub fn freeze(&self, frozen: bool) {
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        for pid in descendants(self.driver.id() as i32) {
            // SAFETY: kill(2) with a pid and a signal number has no memory effects.
            unsafe { libc::kill(pid, signal) };
        }
    }
}

/// Every process below `root` (not `root` itself), from /proc's parent links.
fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A frozen browser would not quit.
        self.freeze(false);
        let _ = call(
            self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            "",
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Whether Chromium and its driver are installed (test.sh installs them).
pub fn available() -> bool {
    Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists()
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().fold(0u32, |acc, &c| acc << 6 | value(c)) << (6 * (4 - chunk.len()));
        let got = chunk.len() * 6 / 8;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + got]);
    }
    out
}
