//! `call`: INVITE → 200 → ACK, hold for `--hold` ms, BYE → 200; `--depth` calls at a
//! time per socket. A completed call is one unit; its latency is the INVITE's (call
//! setup), the figure a caller feels.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::conn::{self, Socket, Target};
use crate::jsip::{self, Received};
use crate::report::{self, Tally};
use crate::Args;

pub async fn run(a: &Args, target: &Target) -> i32 {
    let tally = Tally::new();
    let mut tasks = Vec::new();
    for c in 0..a.connections {
        let from = format!("{}{c}", a.userid);
        let ws = match target.connect(&from).await {
            Ok(ws) => ws,
            Err(e) => {
                eprintln!("jsip-bench: {e}");
                return 1;
            }
        };
        let plan = Plan {
            c,
            from,
            uri: a.uri.clone(),
            router: a.router.clone(),
            depth: a.depth,
            hold: Duration::from_millis(a.hold_ms),
            timeout: Duration::from_secs_f64(a.timeout),
        };
        tasks.push(tokio::spawn(connection(ws, plan, tally.clone())));
    }
    report::measure("call", a, &tally, tasks, |_| Default::default()).await
}

struct Plan {
    c: usize,
    from: String,
    uri: String,
    router: Option<String>,
    depth: usize,
    hold: Duration,
    timeout: Duration,
}

enum Phase {
    Inviting,
    Holding { setup: Duration },
    Ending { setup: Duration },
}

struct Call {
    phase: Phase,
    /// When the current request (INVITE or BYE) went out.
    since: Instant,
}

async fn connection(mut ws: Socket, plan: Plan, tally: Arc<Tally>) -> hdrhistogram::Histogram<u64> {
    let mut local = report::histogram();
    let mut calls: HashMap<String, Call> = HashMap::new();
    let mut byes: BinaryHeap<Reverse<(Instant, String)>> = BinaryHeap::new();
    let mut n = 0u64;
    // Starts a call: the INVITE's text, with the call recorded as inviting.
    let invite = |n: &mut u64, calls: &mut HashMap<String, Call>| {
        *n += 1;
        let id = format!("call{}-{n}", plan.c);
        let mut m = jsip::request(
            "INVITE",
            &plan.uri,
            &plan.from,
            &id,
            1,
            plan.router.as_deref(),
        );
        m["Content-Type"] = json!("sdp");
        m["Body"] = json!("v=0");
        calls.insert(
            id,
            Call {
                phase: Phase::Inviting,
                since: Instant::now(),
            },
        );
        m.to_string()
    };
    for _ in 0..plan.depth {
        let text = invite(&mut n, &mut calls);
        if ws.send(Frame::text(text)).await.is_err() {
            tally.transport("closed");
            return local;
        }
    }
    let mut sweep = tokio::time::interval(Duration::from_millis(250));
    while !tally.stopped() {
        let next_bye = byes.peek().map(|Reverse((at, _))| *at);
        let frame = tokio::select! {
            f = ws.next() => f,
            _ = tokio::time::sleep_until(next_bye.unwrap_or_else(Instant::now).into()), if next_bye.is_some() => {
                let Some(Reverse((_, id))) = byes.pop() else { continue };
                let mut bye = jsip::request("BYE", &plan.uri, &plan.from, &id, 3, plan.router.as_deref());
                bye["Reason"] = json!("bench call over");
                if let Some(call) = calls.get_mut(&id) {
                    if let Phase::Holding { setup } = call.phase {
                        call.phase = Phase::Ending { setup };
                        call.since = Instant::now();
                    }
                }
                if ws.send(Frame::text(bye.to_string())).await.is_err() {
                    tally.transport("closed");
                    break;
                }
                continue;
            }
            _ = sweep.tick() => {
                let stale: Vec<String> = calls
                    .iter()
                    .filter(|(_, c)| !matches!(c.phase, Phase::Holding { .. }) && c.since.elapsed() > plan.timeout)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in stale {
                    calls.remove(&id);
                    if tally.measuring() {
                        tally.transport("timeout");
                    }
                    let text = invite(&mut n, &mut calls);
                    if ws.send(Frame::text(text)).await.is_err() {
                        tally.transport("closed");
                        return local;
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
        let (dialog, cseq, code) = match Received::read(&text) {
            Received::Response { dialog, cseq, code } => (dialog, cseq, code),
            Received::Request(r) => {
                // The server's own requests in a call (UPDATE keepalives, a session
                // timer's BYE) are answered.
                if r["Type"] != "ACK" && ws.send(Frame::text(jsip::ok(&r))).await.is_err() {
                    tally.transport("closed");
                    break;
                }
                continue;
            }
            Received::Garbled => {
                tally.transport("garbled frame");
                continue;
            }
        };
        if code < 200 {
            continue;
        }
        let Some(call) = calls.get_mut(&dialog) else {
            continue;
        };
        let mut finished = false;
        match (&call.phase, cseq) {
            (Phase::Inviting, 1) if (200..300).contains(&code) => {
                let mut ack = jsip::request(
                    "ACK",
                    &plan.uri,
                    &plan.from,
                    &dialog,
                    2,
                    plan.router.as_deref(),
                );
                ack["RelatedID"] = json!(1);
                if ws.send(Frame::text(ack.to_string())).await.is_err() {
                    tally.transport("closed");
                    break;
                }
                call.phase = Phase::Holding {
                    setup: call.since.elapsed(),
                };
                byes.push(Reverse((Instant::now() + plan.hold, dialog.clone())));
            }
            (Phase::Ending { setup }, 3) => {
                if (200..300).contains(&code) {
                    if tally.measuring() {
                        tally
                            .done
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let _ = local.record(setup.as_micros().max(1) as u64);
                    }
                } else {
                    tally.code(code);
                }
                finished = true;
            }
            (Phase::Inviting, 1) => {
                tally.code(code);
                finished = true;
            }
            _ => {}
        }
        if finished {
            calls.remove(&dialog);
            let text = invite(&mut n, &mut calls);
            if ws.send(Frame::text(text)).await.is_err() {
                tally.transport("closed");
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    local
}
