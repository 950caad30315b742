//! `chat`: `--connections` members join a room of the `chatroom` plugin (SUBSCRIBE,
//! JSIP.md §6), then each sends MESSAGEs to the room like `message` does. Every MESSAGE
//! is relayed to every other member, who answers it; the figure is relays delivered per
//! second. A member's identity is `USERIDn@DOMAIN`, DOMAIN being the room URI's host,
//! which must be jsipd's realm so that relays reach the member's socket.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map};
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::conn::{Socket, Target};
use crate::jsip::{self, Received};
use crate::message::{self, Plan};
use crate::report::{self, Tally};
use crate::Args;

pub async fn run(a: &Args, target: &Target) -> i32 {
    let domain = a
        .uri
        .rsplit_once('@')
        .map(|(_, h)| h.split([';', ':']).next().unwrap_or(h).to_string())
        .unwrap_or_default();
    if !a.uri.starts_with("room:") || domain.is_empty() {
        eprintln!(
            "jsip-bench: chat needs --uri room:NAME@REALM (REALM: jsipd's [JSIPStack] realm)"
        );
        return 2;
    }
    let tally = Tally::new();
    let mut members = Vec::new();
    for c in 0..a.connections {
        let from = format!("{}{c}", a.userid);
        let identity = format!("{from}@{domain}");
        let joined = async {
            let mut ws = target.connect(&from).await?;
            join(&mut ws, a, c, &from, &identity).await?;
            Ok::<_, String>(ws)
        };
        match joined.await {
            Ok(ws) => members.push((c, from, identity, ws)),
            Err(e) => {
                eprintln!("jsip-bench: member {c}: {e}");
                return 1;
            }
        }
    }
    let n = members.len();
    let mut permits = message::pacer(a.rate, n, &tally).into_iter();
    let mut tasks = Vec::new();
    for (c, from, identity, ws) in members {
        let plan = Plan {
            c,
            kind: "chat",
            pai: Some(identity),
            from,
            uri: a.uri.clone(),
            router: a.router.clone(),
            depth: a.depth,
            body: a.body.clone(),
            content_type: a.content_type.clone(),
            permits: permits.next().flatten(),
            timeout: Duration::from_secs_f64(a.timeout),
        };
        tasks.push(tokio::spawn(message::connection(ws, plan, tally.clone())));
    }
    let t = tally.clone();
    report::measure("chat", a, &tally, tasks, move |elapsed| {
        let relays = t.relays.load(Ordering::Relaxed);
        let sent = t.done.load(Ordering::Relaxed);
        let mut m = Map::new();
        m.insert("members".into(), json!(n));
        m.insert("relays".into(), json!(relays));
        m.insert("relays_per_s".into(), json!(relays as f64 / elapsed));
        // Relays that should have arrived for the MESSAGEs answered in the window.
        m.insert("relays_expected".into(), json!(sent * (n as u64 - 1)));
        m
    })
    .await
}

/// SUBSCRIBEs to the room and waits for the 200 (answering anything else meanwhile).
async fn join(
    ws: &mut Socket,
    a: &Args,
    c: usize,
    from: &str,
    identity: &str,
) -> Result<(), String> {
    let dialog = format!("join{c}");
    let mut sub = jsip::request("SUBSCRIBE", &a.uri, from, &dialog, 1, a.router.as_deref());
    sub["Event"] = json!("message-push");
    sub["Expire"] = json!(3600);
    sub["P-Asserted-Identity"] = json!(identity);
    ws.send(Frame::text(sub.to_string()))
        .await
        .map_err(|e| format!("SUBSCRIBE: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .map_err(|_| "no answer to SUBSCRIBE within 10 s".to_string())?;
        let text = match frame {
            Some(Ok(Frame::Text(t))) => t,
            Some(Ok(_)) => continue,
            _ => return Err("socket closed while joining".into()),
        };
        match Received::read(&text) {
            Received::Response {
                dialog: d, code, ..
            } if d == dialog && code >= 200 => {
                return if code < 300 {
                    Ok(())
                } else {
                    Err(format!("SUBSCRIBE answered {code}: {text}"))
                };
            }
            Received::Request(r) => {
                let _ = ws.send(Frame::text(jsip::ok(&r))).await;
            }
            _ => {}
        }
    }
}
