//! `idle` (hold connections open, for memory per connection) and `echo-server` (the raw
//! tokio-tungstenite baseline).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpListener;

use crate::conn::{ws_config, Target};
use crate::Args;

/// Opens `--connections` sockets, prints one JSON line when all are open, then holds
/// them for `--duration` seconds (0: until killed).
pub async fn idle(a: &Args, target: &Target) -> i32 {
    let mut held = Vec::with_capacity(a.connections);
    let t0 = Instant::now();
    for c in 0..a.connections {
        match target.connect(&format!("{}{c}", a.userid)).await {
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

/// Echoes every text frame back: what jsipd is measured against. Same WebSocket stack,
/// Nagle off as in jsipd. Its read buffer is 4 KiB unless `--read-buffer` says
/// otherwise, where jsipd's is 512 bytes: tungstenite zero-fills the buffer before each
/// read, about 3,000 of this server's 9,000 instructions per round trip at 4 KiB
/// (`bench/callgrind.sh` measures both sizes).
pub async fn echo_server(a: &Args) -> i32 {
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
        let config = ws_config().read_buffer_size(a.read_buffer);
        tokio::spawn(async move {
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
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
