//! `jsip-bench`: a load generator for JSIP over WebSocket.
//!
//! Scenarios so far:
//! - `message`: MESSAGE → 200 round trips over N connections with D in flight each;
//! - `idle`: open N connections and hold them (for memory per connection);
//! - `echo-server`: a raw tokio-tungstenite echo server, the baseline every jsipd
//!   figure is divided by (same client, same connection count, same run).
//!
//! Against the echo server, `message` counts the echoed frame as the answer, so both
//! measurements run the exact same client code.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as Frame;

const USAGE: &str = "\
Usage: jsip-bench message --url WS_URL [--connections N] [--depth D] [--duration SECS]
                          [--warmup SECS] [--uri REQUEST_URI] [--router ROUTER] [--json]
       jsip-bench idle --url WS_URL [--connections N] [--duration SECS]
       jsip-bench echo-server --listen ADDR

  --url          ws://HOST:PORT/rtc (userid is added per connection)
  --connections  sockets to open (default 16)
  --depth        requests in flight per socket (default 1)
  --duration     measured seconds (default 10; idle: how long to hold, 0 = until killed)
  --warmup       seconds before measuring (default 2)
  --uri          Request-URI of each MESSAGE (default bench@echo: SLP echo by host label)
  --router       Router of each MESSAGE (default none)
  --json         print the summary as JSON: throughput, latency_ms, errors
";

struct Args {
    scenario: String,
    url: String,
    listen: String,
    connections: usize,
    depth: usize,
    duration: f64,
    warmup: f64,
    uri: String,
    router: Option<String>,
    json: bool,
}

fn parse() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        scenario: String::new(),
        url: String::new(),
        listen: "127.0.0.1:0".into(),
        connections: 16,
        depth: 1,
        duration: 10.0,
        warmup: 2.0,
        uri: "bench@echo".into(),
        router: None,
        json: false,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("url") => a.url = p.value()?.string()?,
            Long("listen") => a.listen = p.value()?.string()?,
            Long("connections") => a.connections = p.value()?.parse()?,
            Long("depth") => a.depth = p.value()?.parse()?,
            Long("duration") => a.duration = p.value()?.parse()?,
            Long("warmup") => a.warmup = p.value()?.parse()?,
            Long("uri") => a.uri = p.value()?.string()?,
            Long("router") => a.router = Some(p.value()?.string()?),
            Long("json") => a.json = true,
            Short('h') | Long("help") => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            Value(v) if a.scenario.is_empty() => a.scenario = v.string()?,
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("jsip-bench: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(async {
        match args.scenario.as_str() {
            "message" => message(&args).await,
            "idle" => idle(&args).await,
            "echo-server" => echo_server(&args).await,
            other => {
                eprintln!("jsip-bench: unknown scenario '{other}'\n\n{USAGE}");
                2
            }
        }
    });
    std::process::exit(code);
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn connect(url: &str, userid: &str) -> Result<Socket, String> {
    let sep = if url.contains('?') { '&' } else { '?' };
    let full = format!("{url}{sep}userid={userid}");
    tokio_tungstenite::connect_async_with_config(full.as_str(), Some(ws_config()), true)
        .await
        .map(|(s, _)| s)
        .map_err(|e| format!("connect {full}: {e}"))
}

#[derive(Default)]
struct Tally {
    done: AtomicU64,
    transport_errors: AtomicU64,
    codes: Mutex<HashMap<u64, u64>>,
}

async fn message(a: &Args) -> i32 {
    if a.url.is_empty() {
        eprintln!("jsip-bench: message needs --url");
        return 2;
    }
    let tally = Arc::new(Tally::default());
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
    ));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..a.connections {
        let mut ws = match connect(&a.url, &format!("bench{c}")).await {
            Ok(ws) => ws,
            Err(e) => {
                eprintln!("jsip-bench: {e}");
                return 1;
            }
        };
        let (tally, measuring, stop) = (tally.clone(), measuring.clone(), stop.clone());
        let (uri, router, depth) = (a.uri.clone(), a.router.clone(), a.depth);
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut sent: HashMap<String, Instant> = HashMap::new();
            let mut n = 0u64;
            let frame = |n: u64| {
                let id = format!("c{c}-{n}");
                let mut m = json!({
                    "Type": "MESSAGE", "Request-URI": uri, "From": format!("bench{c}"),
                    "To": uri, "DialogueID": id, "CSeq": 1, "Body": "ping",
                });
                if let Some(r) = &router {
                    m["Router"] = json!(r);
                }
                (id, m.to_string())
            };
            for _ in 0..depth {
                n += 1;
                let (id, text) = frame(n);
                sent.insert(id, Instant::now());
                if ws.send(Frame::text(text)).await.is_err() {
                    tally.transport_errors.fetch_add(1, Ordering::Relaxed);
                    return local;
                }
            }
            while !stop.load(Ordering::Relaxed) {
                let f = match ws.next().await {
                    Some(Ok(Frame::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    _ => {
                        tally.transport_errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                };
                let v: Value = match serde_json::from_str(&f) {
                    Ok(v) => v,
                    Err(_) => {
                        tally.transport_errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                let Some(t0) = v["DialogueID"].as_str().and_then(|id| sent.remove(id)) else {
                    continue;
                };
                let code = v["Code"].as_u64().unwrap_or(200);
                if measuring.load(Ordering::Relaxed) {
                    if code == 200 {
                        tally.done.fetch_add(1, Ordering::Relaxed);
                        let _ = local.record(t0.elapsed().as_micros().max(1) as u64);
                    } else {
                        *tally.codes.lock().unwrap().entry(code).or_default() += 1;
                    }
                }
                n += 1;
                let (id, text) = frame(n);
                sent.insert(id, Instant::now());
                if ws.send(Frame::text(text)).await.is_err() {
                    tally.transport_errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            let _ = ws.close(None).await;
            local
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    let cpu0 = Cpu::now();
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let mut last = 0;
    let end = t0 + Duration::from_secs_f64(a.duration);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
        if !a.json {
            let d = tally.done.load(Ordering::Relaxed);
            eprint!(
                "\r{:>6.1}s  {:>9} done  {:>9}/s   ",
                t0.elapsed().as_secs_f64(),
                d,
                d - last
            );
            last = d;
        }
    }
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = Cpu::now().since(&cpu0);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        // A task waiting for an answer that never comes is not waited for.
        if let Ok(Ok(h)) = tokio::time::timeout(Duration::from_secs(2), t).await {
            let _ = hist.lock().unwrap().add(&h);
        }
    }
    let done = tally.done.load(Ordering::Relaxed);
    let h = hist.lock().unwrap();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let codes = tally.codes.lock().unwrap().clone();
    let summary = json!({
        "scenario": "message",
        "url": a.url,
        "connections": a.connections,
        "depth": a.depth,
        "duration_s": elapsed,
        "completed": done,
        "throughput": done as f64 / elapsed,
        "latency_ms": { "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p99.9": ms(0.999), "max": h.max() as f64 / 1000.0 },
        "errors": {
            "by_code": codes.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "transport": tally.transport_errors.load(Ordering::Relaxed),
        },
        "client_cpu_s": cpu,
    });
    if a.json {
        println!("{summary}");
    } else {
        eprintln!();
        println!(
            "{} round trips in {:.1}s: {:.0}/s  p50 {:.3} ms  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  errors {}",
            done,
            elapsed,
            done as f64 / elapsed,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            summary["errors"]
        );
    }
    0
}

/// CPU seconds this process used, from /proc/self/stat (utime+stime).
struct Cpu(f64);

impl Cpu {
    fn now() -> Cpu {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // Fields 14 and 15 (utime, stime) are at 11 and 12 after the ')'; 100 ticks/s.
        Cpu((ticks(11) + ticks(12)) / 100.0)
    }

    fn since(&self, earlier: &Cpu) -> f64 {
        self.0 - earlier.0
    }
}

async fn idle(a: &Args) -> i32 {
    if a.url.is_empty() {
        eprintln!("jsip-bench: idle needs --url");
        return 2;
    }
    let mut held = Vec::with_capacity(a.connections);
    let t0 = Instant::now();
    for c in 0..a.connections {
        match connect(&a.url, &format!("idle{c}")).await {
            Ok(ws) => held.push(ws),
            Err(e) => {
                eprintln!("jsip-bench: after {c} connections: {e}");
                return 1;
            }
        }
    }
    println!(
        "{}",
        json!({"scenario": "idle", "open": held.len(), "connect_s": t0.elapsed().as_secs_f64()})
    );
    if a.duration > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
    } else {
        std::future::pending::<()>().await;
    }
    0
}

async fn echo_server(a: &Args) -> i32 {
    let listener = match TcpListener::bind(&a.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("jsip-bench: cannot listen on {}: {e}", a.listen);
            return 1;
        }
    };
    let local: SocketAddr = listener.local_addr().expect("bound");
    println!("echo-server listening on {local}");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())).await
            else {
                return;
            };
            while let Some(Ok(f)) = ws.next().await {
                if f.is_text() && ws.send(f).await.is_err() {
                    break;
                }
            }
        });
    }
}
