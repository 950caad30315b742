//! `connect`: a connection storm. `--connections` openers each connect (TCP, TLS when
//! wss://, the WebSocket upgrade that registers the userid), close, and start again.
//! The figure is handshakes completed per second; latency is the time to open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::conn::Target;
use crate::report::{self, Tally};
use crate::Args;

pub async fn run(a: &Args, target: &Target) -> i32 {
    let tally = Tally::new();
    let mut tasks = Vec::new();
    for c in 0..a.connections {
        let target = target.clone();
        let userid = format!("{}{c}", a.userid);
        tasks.push(tokio::spawn(opener(target, userid, tally.clone())));
    }
    report::measure("connect", a, &tally, tasks, |_| Default::default()).await
}

async fn opener(target: Target, userid: String, tally: Arc<Tally>) -> hdrhistogram::Histogram<u64> {
    let mut local = report::histogram();
    while !tally.stopped() {
        let t0 = Instant::now();
        match target.connect(&userid).await {
            Ok(mut ws) => {
                tally.done(&mut local, t0);
                // Close cleanly and wait for the server's close, so the next socket
                // under this userid is a reconnect, not a replacement.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = ws.close(None).await;
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
            }
            Err(_) => {
                if tally.measuring() {
                    tally.transport("connect");
                }
                // Do not spin on a refusing server.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    local
}
