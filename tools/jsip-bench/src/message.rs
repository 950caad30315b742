//! `message`: MESSAGE → 200 round trips, closed loop (`--depth` in flight per socket)
//! or open loop (`--rate`, requests per second over all sockets, sent on schedule
//! whatever the answers do, so a slow server does not slow the offered load down).
//!
//! The schedule is kept by one pacer thread that hands out send permits round-robin
//! every 100 µs. tokio's timers tick in whole milliseconds: per-socket intervals would
//! fire together at each millisecond, sending the whole millisecond's requests as one
//! burst (30 at once at 30,000/s), and measure the client's bursts rather than the
//! server. Latency counts from the send.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as Frame;

use tokio::sync::mpsc;

use crate::conn::{self, Socket, Target};
use crate::jsip::{self, Received};
use crate::report::{self, Tally};
use crate::Args;

pub async fn run(a: &Args, target: &Target) -> i32 {
    let tally = Tally::limited(a.messages);
    let mut permits = pacer(a.rate, a.connections, &tally).into_iter();
    let mut tasks = Vec::new();
    for c in 0..a.connections {
        let ws = match target.connect(&format!("{}{c}", a.userid)).await {
            Ok(ws) => ws,
            Err(e) => {
                eprintln!("jsip-bench: {e}");
                return 1;
            }
        };
        let plan = Plan {
            c,
            kind: "m",
            pai: None,
            from: format!("{}{c}", a.userid),
            uri: a.uri.clone(),
            router: a.router.clone(),
            depth: a.depth,
            body: a.body.clone(),
            content_type: a.content_type.clone(),
            permits: permits.next().flatten(),
            timeout: Duration::from_secs_f64(a.timeout),
        };
        tasks.push(tokio::spawn(connection(ws, plan, tally.clone())));
    }
    report::measure("message", a, &tally, tasks, |_| Default::default()).await
}

/// What one socket sends. Shared with `chat`, whose members send MESSAGEs to the room
/// the same way.
pub struct Plan {
    pub c: usize,
    /// Prefix of DialogueIDs.
    pub kind: &'static str,
    /// P-Asserted-Identity of each MESSAGE (chat: the member).
    pub pai: Option<String>,
    pub from: String,
    pub uri: String,
    pub router: Option<String>,
    pub depth: usize,
    /// Each MESSAGE's Body and Content-Type (default `"ping"`, none).
    pub body: serde_json::Value,
    pub content_type: Option<String>,
    /// Open loop: send one request per permit (see [`pacer`]).
    pub permits: Option<mpsc::UnboundedReceiver<()>>,
    pub timeout: Duration,
}

/// Runs one socket until the tally says stop; returns its latency histogram.
pub async fn connection(
    mut ws: Socket,
    plan: Plan,
    tally: Arc<Tally>,
) -> hdrhistogram::Histogram<u64> {
    let mut local = report::histogram();
    let mut in_flight: HashMap<String, Instant> = HashMap::new();
    let mut n = 0u64;
    let next = |n: &mut u64| {
        *n += 1;
        let id = format!("{}{}-{n}", plan.kind, plan.c);
        let text = jsip::request(
            "MESSAGE",
            &plan.uri,
            &plan.from,
            &id,
            1,
            plan.router.as_deref(),
        );
        let mut text = text;
        text["Body"] = plan.body.clone();
        if let Some(t) = &plan.content_type {
            text["Content-Type"] = t.as_str().into();
        }
        if let Some(pai) = &plan.pai {
            text["P-Asserted-Identity"] = pai.as_str().into();
        }
        (id, text.to_string())
    };
    // Open loop: permits; closed loop: `depth` requests to start with.
    let mut schedule = plan.permits;
    if schedule.is_none() {
        for _ in 0..plan.depth {
            let (id, text) = next(&mut n);
            in_flight.insert(id, Instant::now());
            if ws.send(Frame::text(text)).await.is_err() {
                tally.transport("closed");
                return local;
            }
        }
    }
    let mut sweep = tokio::time::interval(Duration::from_millis(250));
    while !tally.stopped() {
        let frame = tokio::select! {
            f = ws.next() => f,
            Some(()) = async { schedule.as_mut().expect("open loop").recv().await }, if schedule.is_some() => {
                let (id, text) = next(&mut n);
                in_flight.insert(id, Instant::now());
                if ws.send(Frame::text(text)).await.is_err() {
                    tally.transport("closed");
                    break;
                }
                continue;
            }
            _ = sweep.tick() => {
                let before = in_flight.len();
                in_flight.retain(|_, t0| t0.elapsed() < plan.timeout);
                for _ in in_flight.len()..before {
                    if tally.measuring() {
                        tally.transport("timeout");
                    }
                    if schedule.is_none() {
                        let (id, text) = next(&mut n);
                        in_flight.insert(id, Instant::now());
                        if ws.send(Frame::text(text)).await.is_err() {
                            tally.transport("closed");
                            return local;
                        }
                    }
                }
                continue;
            }
        };
        let text = match conn::text(frame) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(()) => {
                tally.transport("closed");
                break;
            }
        };
        let answer = match Received::read(&text) {
            Received::Response { dialog, code, .. } => Some((dialog, code)),
            // Our own request coming back: the raw echo baseline. Counting it as the
            // answer lets the baseline run this exact client code.
            Received::Request(r)
                if r["DialogueID"]
                    .as_str()
                    .is_some_and(|d| in_flight.contains_key(d)) =>
            {
                r["DialogueID"].as_str().map(|d| (d.to_string(), 200))
            }
            Received::Request(r) => {
                // A relayed chat MESSAGE, or any request the server starts: answered.
                if r["Type"] == "MESSAGE" {
                    tally.relay();
                }
                if ws.send(Frame::text(jsip::ok(&r))).await.is_err() {
                    tally.transport("closed");
                    break;
                }
                None
            }
            Received::Garbled => {
                tally.transport("garbled frame");
                None
            }
        };
        let Some((dialog, code)) = answer else {
            continue;
        };
        let Some(t0) = in_flight.remove(&dialog) else {
            continue;
        };
        if (200..300).contains(&code) {
            tally.done(&mut local, t0);
        } else if code >= 300 {
            tally.code(code);
        } else {
            // Provisional: still waiting.
            in_flight.insert(dialog, t0);
            continue;
        }
        if schedule.is_none() && tally.wants_more() {
            let (id, text) = next(&mut n);
            in_flight.insert(id, Instant::now());
            if ws.send(Frame::text(text)).await.is_err() {
                tally.transport("closed");
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    local
}

/// Open loop: one permit channel per socket, fed by a thread that keeps `rate` per
/// second over all of them, round-robin. A socket that falls behind gets its permits
/// later, all at once: the offered load never drops. Closed loop: no channels.
pub fn pacer(
    rate: Option<f64>,
    sockets: usize,
    tally: &Arc<Tally>,
) -> Vec<Option<mpsc::UnboundedReceiver<()>>> {
    let Some(rate) = rate else {
        return (0..sockets).map(|_| None).collect();
    };
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..sockets).map(|_| mpsc::unbounded_channel()).unzip();
    let tally = tally.clone();
    std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            let start = Instant::now();
            let mut sent = 0u64;
            while !tally.stopped() {
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                while sent < due {
                    let _ = txs[(sent % txs.len() as u64) as usize].send(());
                    sent += 1;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        })
        .expect("start the pacer thread");
    rxs.into_iter().map(Some).collect()
}
