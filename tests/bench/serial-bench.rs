//! `serial-bench`: the serial plugin's figures over real JSIP sockets (bench/serial.sh
//! starts the daemon and says which backend the plugin has).
//!
//! - `echo RTC N`: N single keystrokes into a console whose backend echoes (a pty), each
//!   timed from the INFO sent to the echoed byte received; then N MESSAGE round trips
//!   to the compiled-in echo SLP on the same daemon, the JSIP path without the plugin.
//! - `fanout RTC CLIENTS SECS`: CLIENTS consoles read a backend that writes without
//!   pause; the bytes each receives per second, and the losses they were told of.
//!
//! Each prints one JSON object.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use data_encoding::BASE64;
use jsipd_e2e::ws::Ws;
use serde_json::{json, Value};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let rtc: SocketAddr = a
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage());
    match a.first().map(String::as_str) {
        Some("echo") => echo(rtc, a.get(2).and_then(|n| n.parse().ok()).unwrap_or(300)),
        Some("fanout") => fanout(
            rtc,
            a.get(2).and_then(|n| n.parse().ok()).unwrap_or(10),
            a.get(3).and_then(|n| n.parse().ok()).unwrap_or(5.0),
        ),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: serial-bench echo RTC_ADDR N | fanout RTC_ADDR CLIENTS SECS");
    std::process::exit(2)
}

struct Console {
    ws: Ws,
    name: String,
    cseq: u64,
    bytes: u64,
    lost: u64,
}

impl Console {
    fn join(rtc: SocketAddr, name: &str) -> Console {
        let mut ws = Ws::connect(rtc, name);
        ws.send(
            &json!({"Type": "INVITE", "Request-URI": "console@serial", "From": name,
            "To": "console@serial", "DialogueID": "bench", "CSeq": 1}),
        );
        let mut c = Console {
            ws,
            name: name.into(),
            cseq: 1,
            bytes: 0,
            lost: 0,
        };
        while c
            .next(Duration::from_secs(10))
            .is_none_or(|m| m["CSeq"] != 1)
        {}
        c
    }

    /// The next message (`None`: nothing within `limit`). INFOs are answered and
    /// counted, and returned as `{"data": bytes}` or `{"notice": body}`; anything
    /// else as it is.
    fn next(&mut self, limit: Duration) -> Option<Value> {
        let m = self.ws.recv_within(limit)?;
        if m["Type"] != "INFO" {
            return Some(m);
        }
        self.ws.send(
            &json!({"Type": "RESPONSE", "Code": 200, "From": m["From"], "To": m["To"],
            "DialogueID": m["DialogueID"], "CSeq": m["CSeq"]}),
        );
        if let Some(n) = m["Body"]["lost"].as_u64() {
            self.lost += n;
        }
        let Some(data) = m["Body"]["data"].as_str() else {
            return Some(json!({ "notice": m["Body"] }));
        };
        let data = BASE64.decode(data.as_bytes()).unwrap();
        self.bytes += data.len() as u64;
        Some(json!({ "data": data }))
    }

    fn input(&mut self, bytes: &[u8]) {
        self.cseq += 1;
        self.ws.send(
            &json!({"Type": "INFO", "Request-URI": "console@serial", "From": self.name,
            "To": "console@serial", "DialogueID": "bench", "CSeq": self.cseq,
            "Content-Type": "serial", "Body": {"data": BASE64.encode(bytes)}}),
        );
    }
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

fn echo(rtc: SocketAddr, n: usize) {
    let mut c = Console::join(rtc, "typist");
    // Let the history and the backend's first output pass.
    while c.next(Duration::from_millis(300)).is_some() {}
    let mut serial = Vec::with_capacity(n);
    for i in 0..n {
        let key = [b'a' + (i % 26) as u8];
        let sent = Instant::now();
        c.input(&key);
        loop {
            let m = c
                .next(Duration::from_secs(5))
                .expect("the keystroke came back");
            if m["data"]
                .as_array()
                .is_some_and(|d| d.iter().any(|b| b == key[0]))
            {
                break;
            }
        }
        serial.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    // The same daemon's JSIP path alone: MESSAGE to the compiled-in echo SLP.
    let mut ws = Ws::connect(rtc, "baseline");
    let mut base = Vec::with_capacity(n);
    for i in 0..n {
        let sent = Instant::now();
        ws.send(
            &json!({"Type": "MESSAGE", "Request-URI": "bench@echo", "From": "baseline",
            "To": "bench@echo", "DialogueID": format!("m{i}"), "CSeq": 1, "Body": "a"}),
        );
        let r = ws.recv();
        assert_eq!(r["Code"], 200, "{r}");
        base.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    let (s50, s99) = percentiles(serial);
    let (b50, b99) = percentiles(base);
    println!(
        r#"{{"keystrokes":{n},"echo_p50_ms":{s50:.2},"echo_p99_ms":{s99:.2},"jsip_echo_p50_ms":{b50:.3},"jsip_echo_p99_ms":{b99:.3}}}"#
    );
}

fn fanout(rtc: SocketAddr, clients: usize, secs: f64) {
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Console::join(rtc, &format!("reader{i}"));
                // Warm up, then count.
                let warm = Instant::now();
                while warm.elapsed() < Duration::from_millis(500) {
                    c.next(Duration::from_millis(100));
                }
                let (b0, l0, t0) = (c.bytes, c.lost, Instant::now());
                while t0.elapsed().as_secs_f64() < secs {
                    c.next(Duration::from_millis(100));
                }
                (
                    (c.bytes - b0) as f64 / t0.elapsed().as_secs_f64(),
                    c.lost - l0,
                )
            })
        })
        .collect();
    let results: Vec<(f64, u64)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let rates: Vec<f64> = results.iter().map(|r| r.0).collect();
    let min = rates.iter().cloned().fold(f64::MAX, f64::min);
    let sum: f64 = rates.iter().sum();
    let lost: u64 = results.iter().map(|r| r.1).sum();
    println!(
        r#"{{"clients":{clients},"per_client_min_kib_s":{:.0},"total_kib_s":{:.0},"lost_bytes":{lost}}}"#,
        min / 1024.0,
        sum / 1024.0
    );
}
