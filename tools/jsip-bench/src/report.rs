//! Counting and reporting: a shared tally, per-task latency histograms merged at the
//! end, the progress line, and the summary (text or `--json`).

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

use crate::Args;

/// Latency in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// What every connection task adds to. Only work done while `measuring` counts, so the
/// warm-up and the drain at the end are left out.
#[derive(Default)]
pub struct Tally {
    /// Completed round trips (scenario-specific: a MESSAGE answered 2xx, a whole call,
    /// a connection opened).
    pub done: AtomicU64,
    /// Chat only: relayed MESSAGEs that reached a member.
    pub relays: AtomicU64,
    measuring: AtomicBool,
    stop: AtomicBool,
    /// `--messages`: stop sending new requests once this many are done.
    limit: Option<u64>,
    /// Final answers other than 2xx, by JSIP code.
    codes: Mutex<BTreeMap<u64, u64>>,
    /// Failures below JSIP: connect, closed, timeout, unparsable frames.
    transport: Mutex<BTreeMap<&'static str, u64>>,
}

impl Tally {
    pub fn new() -> Arc<Tally> {
        Arc::new(Tally::default())
    }

    /// A tally for a fixed number of round trips, counted from the first.
    pub fn limited(limit: Option<u64>) -> Arc<Tally> {
        Arc::new(Tally {
            measuring: AtomicBool::new(limit.is_some()),
            limit,
            ..Tally::default()
        })
    }

    /// Whether a socket should send another request (`--messages` not yet reached).
    pub fn wants_more(&self) -> bool {
        self.limit
            .is_none_or(|l| self.done.load(Ordering::Relaxed) < l)
    }

    pub fn measuring(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Counts one completed unit and its latency (`into` is the task's own histogram).
    pub fn done(&self, into: &mut Histogram<u64>, since: Instant) {
        if self.measuring() {
            self.done.fetch_add(1, Ordering::Relaxed);
            let _ = into.record(since.elapsed().as_micros().max(1) as u64);
        }
    }

    pub fn relay(&self) {
        if self.measuring() {
            self.relays.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A final answer that is not 2xx.
    pub fn code(&self, code: u64) {
        if self.measuring() {
            *self.codes.lock().unwrap().entry(code).or_default() += 1;
        }
    }

    /// A failure below JSIP. Counted whenever it happens, warm-up included: a dropped
    /// connection matters whenever it happens (callers skip what only matters while
    /// measuring, such as timeouts).
    pub fn transport(&self, kind: &'static str) {
        *self.transport.lock().unwrap().entry(kind).or_default() += 1;
    }

    fn errors(&self) -> Value {
        let codes = self.codes.lock().unwrap();
        let transport = self.transport.lock().unwrap();
        let total: u64 = codes.values().sum::<u64>() + transport.values().sum::<u64>();
        json!({
            "total": total,
            "by_code": codes.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<_, _>>(),
            "transport": transport.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<_, _>>(),
        })
    }
}

/// CPU seconds this process used (utime + stime from /proc/self/stat, 100 ticks/s).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs the warm-up and the measured window (with a progress line), stops the tasks and
/// prints the summary. `extra` adds scenario-specific fields. Returns the exit code: 0,
/// or 1 when nothing completed.
pub async fn measure(
    scenario: &str,
    a: &Args,
    tally: &Arc<Tally>,
    tasks: Vec<JoinHandle<Histogram<u64>>>,
    extra: impl FnOnce(f64) -> Map<String, Value>,
) -> i32 {
    if tally.limit.is_none() {
        tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    }
    let cpu0 = cpu_seconds();
    tally.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let mut end = t0 + Duration::from_secs_f64(a.duration);
    if tally.limit.is_some() {
        // A fixed amount of work: done when it is done (checked often, as the last
        // answers decide the end), or at --duration.
        while tally.wants_more() && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        end = Instant::now();
    }
    let progress = !a.json;
    let tty = std::io::stderr().is_terminal();
    let mut last = 0;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
        if progress {
            let d = tally.done.load(Ordering::Relaxed);
            let errors = tally.errors()["total"].as_u64().unwrap_or(0);
            eprint!(
                "{:>6.1}s  {:>9} done  {:>9}/s  {:>6} errors{}",
                t0.elapsed().as_secs_f64(),
                d,
                d - last,
                errors,
                if tty { "   \r" } else { "\n" }
            );
            last = d;
        }
    }
    tally.measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    tally.stop.store(true, Ordering::Relaxed);
    let mut h = histogram();
    for t in tasks {
        // A task waiting on an answer that never comes is not waited for long.
        if let Ok(Ok(local)) = tokio::time::timeout(Duration::from_secs(3), t).await {
            let _ = h.add(&local);
        }
    }
    if progress && tty {
        eprintln!();
    }
    let done = tally.done.load(Ordering::Relaxed);
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut summary = json!({
        "scenario": scenario,
        "url": a.url,
        "connections": a.connections,
        "depth": a.depth,
        "rate": a.rate,
        "duration_s": elapsed,
        "completed": done,
        "throughput": done as f64 / elapsed,
        "latency_ms": {
            "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p99.9": ms(0.999),
            "max": h.max() as f64 / 1000.0,
        },
        "errors": tally.errors(),
        "client_cpu_s": cpu,
    });
    if let Value::Object(m) = &mut summary {
        m.extend(extra(elapsed));
    }
    if a.json {
        println!("{summary}");
    } else {
        println!(
            "{scenario}: {done} in {elapsed:.1}s = {:.0}/s; latency ms p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}",
            done as f64 / elapsed,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0,
        );
        if let Value::Object(m) = &summary {
            for (k, v) in m {
                if k.starts_with("relay") || k.starts_with("accept") {
                    println!("  {k}: {v}");
                }
            }
        }
        println!("  errors: {}", summary["errors"]);
    }
    i32::from(done == 0)
}
