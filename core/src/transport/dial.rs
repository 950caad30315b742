//! Outbound sockets to other nodes (JSIP.md §1 "Node-to-node").
//!
//! A request for a name we have no socket for, when the name looks like another node,
//! is queued under that name and the node dials `ws://host:port/LOCATION?userid=REALM`.
//! The dialed socket is then served like an inbound one, under that name. When every
//! attempt fails, the queued requests are answered 503 with the last error.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ws::{self, SocketParams};
use crate::jsip::PeerName;
use crate::node::{Input, NodeHandle};
use crate::stats::JsipStats;

/// Port dialed when a URI has none: jsipd's default RTC port.
pub const DEFAULT_PORT: u16 = 8080;

/// Pause before the next attempt, times the attempt number.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

pub struct Dial {
    pub name: PeerName,
    pub url: String,
    pub conntimeout: Duration,
    pub retry: u32,
    pub params: SocketParams,
}

pub fn spawn(
    dial: Dial,
    node: NodeHandle,
    stats: Arc<JsipStats>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) {
    tasks.spawn(async move {
        let mut last_error = String::new();
        for attempt in 0..=dial.retry {
            if shutdown.is_cancelled() {
                return;
            }
            JsipStats::count(&stats.dials);
            let connect = tokio_tungstenite::connect_async_with_config(
                dial.url.as_str(),
                Some(ws::ws_config(dial.params.max_frame)),
                true,
            );
            match tokio::time::timeout(dial.conntimeout, connect).await {
                Ok(Ok((socket, _))) => {
                    tracing::info!("dialed {} for {}", dial.url, dial.name);
                    let registration = ws::Registration::take(
                        &node,
                        dial.name.clone(),
                        dial.url.clone(),
                        &shutdown,
                    );
                    if let Some(registration) = Box::pin(registration).await {
                        // Another node's requests: no person signed in here.
                        let caller = None;
                        ws::serve(
                            socket,
                            registration,
                            caller,
                            node,
                            dial.params,
                            shutdown,
                            stats,
                        )
                        .await;
                    }
                    return;
                }
                Ok(Err(e)) => last_error = format!("cannot reach {}: {e}", dial.url),
                Err(_) => {
                    last_error = format!(
                        "cannot reach {}: no connection within conntimeout ({:?})",
                        dial.url, dial.conntimeout
                    )
                }
            }
            JsipStats::count(&stats.dials_failed);
            tracing::warn!(
                "{last_error} (attempt {} of {})",
                attempt + 1,
                dial.retry + 1
            );
            if attempt < dial.retry {
                // A refused connection fails at once; do not hammer the other node.
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_PAUSE * (attempt + 1)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
        node.input(Input::DialFailed {
            name: dial.name,
            error: last_error,
        })
        .await;
    });
}
