//! One WebSocket, inbound or dialed: frames in, the name's queue out, pings, close codes.
//!
//! Each socket is one task that reads, writes and pings, so an idle connection costs a
//! task, a socket and two small buffers. When to ping comes from the node's one timer
//! for all sockets (`Registry::ping_all`), not from a timer of its own. The socket never
//! blocks another one: what the node sends to it goes through the name's bounded queue
//! (`Outbox`), which it looks in when the node pokes it, and a slow reader only fills
//! its own queue. A frame is handled on this task when the node's lock is free
//! (`NodeHandle::frame`; else it is queued for the node task), and the answers to this
//! socket that it gives back are written before the queue is read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use jsipd_plugin_api::jsip::{Message, ParseError, CALLER_KEY};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::jsip::PeerName;
use crate::node::{Framed, NodeHandle};
use crate::stats::{JsipStats, OpenSocket};
use crate::transport::registry::{Outbox, Queued, Replies, SocketFlags};

/// A socket's place in the node's registry, under its name.
///
/// An inbound socket takes it before its handshake is answered (`transport::upgrade`),
/// so that of two sockets with the same name, the one whose 101 came later replaces
/// the other, as their clients saw it (JSIP.md §1). Taken on the socket's task after
/// the 101, the older socket won whenever the newer one's task happened to register
/// first (a CI run under load caught it: the first socket was never closed).
pub struct Registration {
    name: PeerName,
    conn: ConnId,
    /// The peer's address, for the log.
    remote: String,
    replaced: CancellationToken,
    flags: Arc<SocketFlags>,
    outbox: Arc<tokio::sync::Mutex<Outbox>>,
}

impl Registration {
    /// Registers a socket as `name`, replacing the one it had; `None` when the node
    /// has stopped.
    pub async fn take(
        node: &NodeHandle,
        name: PeerName,
        remote: String,
        shutdown: &CancellationToken,
    ) -> Option<Registration> {
        let conn = next_conn_id();
        // A child of `shutdown`: cancelled when this socket is replaced or the daemon
        // stops, so the socket's loop waits on one token, not two.
        let replaced = shutdown.child_token();
        let flags = Arc::new(SocketFlags::default());
        let outbox = node
            .connected(
                name.clone(),
                conn,
                remote.clone(),
                replaced.clone(),
                flags.clone(),
            )
            .await?;
        Some(Registration {
            name,
            conn,
            remote,
            replaced,
            flags,
            outbox,
        })
    }

    /// No socket came of it (the upgrade failed after its 101): the name is away, as
    /// after any drop.
    pub async fn give_up(self, node: &NodeHandle) {
        node.disconnected(self.name, self.conn).await;
    }
}

/// Per-socket settings from `[RTCServer]`.
#[derive(Debug, Clone, Copy)]
pub struct SocketParams {
    pub ping_interval: Duration,
    pub max_frame: usize,
}

/// Read buffer size. tungstenite zero-fills the whole buffer before every read, so all
/// of it is resident even on an idle socket: its default 128 KiB cost 135 KiB of RSS per
/// connection, 4 KiB cost 3 KiB more than 1 KiB does, and 1 KiB 0.45 KiB more than 512
/// bytes (10,000 idle sockets: 4.9-5.1 KiB each, against 4.5-4.7). JSIP frames are a
/// few hundred bytes; larger ones are still read whole (the buffer grows for them).
const READ_BUFFER: usize = 512;

pub fn ws_config(max_frame: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // Every send is flushed at once anyway; do not grow a buffer to batch into.
        .write_buffer_size(0)
        .max_frame_size(Some(max_frame))
        .max_message_size(Some(max_frame))
}

/// Identifies one socket among the several a name may have over time.
pub type ConnId = u64;

fn next_conn_id() -> ConnId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Close code for a socket replaced by a newer one with the same userid (JSIP.md §1).
pub const CLOSE_REPLACED: u16 = 4000;

/// Close code for a socket an operator closed (`DELETE /runtime/v1/connections/NAME`).
/// A client reconnects as after a network drop; its dialogs wait `reconnect_window`.
pub const CLOSE_DISCONNECTED: u16 = 4001;

/// Serves a registered socket until it closes, is replaced, or the daemon stops.
/// `caller`, for a signed-in person, is what their requests carry as `Caller` (see
/// `inbound`).
pub async fn serve<S>(
    mut ws: WebSocketStream<S>,
    registration: Registration,
    caller: Option<Arc<Value>>,
    node: NodeHandle,
    params: SocketParams,
    shutdown: CancellationToken,
    stats: Arc<JsipStats>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Registration {
        name,
        conn,
        remote,
        replaced,
        flags,
        outbox,
    } = registration;
    let _open = OpenSocket::new(stats.clone());
    // The socket this one replaces lets go of the queue when it has closed; anything it
    // could not write stays in `unsent` and goes first here. This one may be replaced
    // itself while it waits: the newer socket's task may have run first and taken the
    // queue, and then this one must close (4000), not wait for it.
    let outbox = tokio::select! {
        g = Box::pin(outbox.lock_owned()) => Some(g),
        _ = replaced.cancelled() => None,
    };
    let Some(mut outbox) = outbox else {
        let why = end(&mut ws, cancelled_because(&shutdown, &flags), &stats).await;
        Box::pin(node.disconnected(name.clone(), conn)).await;
        tracing::debug!("JSIP socket {name} from {remote} closed before it was served ({why})");
        return;
    };
    let mut last_heard = Instant::now();
    let why: String = loop {
        if !outbox.unsent.is_empty() {
            let unsent = std::mem::take(&mut outbox.unsent);
            if let Err(left) = write_all(&mut ws, unsent, &stats).await {
                outbox.unsent = left;
                break "write failed".into();
            }
            continue;
        }
        // Asked at the top of every turn, not only after a poke: the select below looks
        // at the peer's frames first, and a peer whose frames are always ready lets it
        // take the poke only when tokio's cooperative budget makes the read wait.
        // `closing`, not the token: see there. (Tested with a flooding peer.)
        if flags.closing.load(Ordering::Acquire) {
            break end(&mut ws, cancelled_because(&shutdown, &flags), &stats)
                .await
                .into();
        }
        // The select only says what happened; acting on it comes after, so the state
        // kept while an idle socket waits is just the branch futures. In a fixed order,
        // the peer's frames first: a socket woken by a frame then polls nothing else (in
        // select's random order it polled half the other branches, some 600
        // instructions a frame). A peer that never stops sending can only hold up what
        // is queued for itself, and the ping it does not need; the token is asked above.
        let event = tokio::select! {
            biased;
            frame = ws.next() => Event::Frame(frame),
            queued = std::future::poll_fn(|_| next_queued(&mut outbox.rx)) => Event::Queued(queued),
            // `closing`, `ping_due` or the queue: whoever changes one pokes the socket
            // (`SocketFlags::poke`).
            _ = std::future::poll_fn(|cx| flags.poll_poked(cx)) => Event::Poked,
        };
        match event {
            Event::Frame(frame) => {
                if !matches!(frame, Some(Err(_)) | None) {
                    last_heard = Instant::now();
                }
                // Waited for below, once the frame is dropped: what the task holds
                // across an await is what every idle socket pays for.
                let mut backlog = None;
                let bad = match frame {
                    Some(Ok(Frame::Text(text))) => {
                        JsipStats::count(&stats.frames_in);
                        match inbound(&text, caller.as_deref()) {
                            Ok(msg) => {
                                // What went straight back to this socket is written
                                // before anything in its queue.
                                // `last_heard` is this frame's arrival.
                                let replies =
                                    match node.frame(&name, &flags, &outbox.rx, msg, last_heard) {
                                        Framed::Handled(replies) => replies,
                                        Framed::Queued => Replies::new(),
                                        Framed::Backlog(input) => {
                                            backlog = Some(input);
                                            Replies::new()
                                        }
                                    };
                                if let Err(left) = write_all(&mut ws, replies, &stats).await {
                                    outbox.unsent = left;
                                    break "write failed".into();
                                }
                                None
                            }
                            Err(e) => Some(e),
                        }
                    }
                    Some(Ok(Frame::Binary(_))) => Some(Box::new(ParseError::Unaddressable {
                        reason: "JSIP travels in text frames; this was a binary frame".into(),
                    })),
                    Some(Ok(Frame::Close(_))) => {
                        // tungstenite queued the answering Close frame; send it before
                        // leaving.
                        let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), ws.flush()))
                            .await;
                        break "closed by the peer".into();
                    }
                    None => break "closed by the peer".into(),
                    // Pings are answered by tungstenite itself.
                    Some(Ok(_)) => None,
                    Some(Err(WsError::Capacity(e))) => {
                        JsipStats::count(&stats.oversized);
                        let reason =
                            format!("frame larger than max_frame ({} bytes)", params.max_frame);
                        close(&mut ws, 1009, &reason).await;
                        break format!("{reason}: {e}");
                    }
                    Some(Err(e)) => break format!("read error: {e}"),
                };
                if let Some(input) = backlog {
                    // The node is behind: wait (backpressure on this peer).
                    Box::pin(node.backlog(input)).await;
                }
                if let Some(e) = bad {
                    flags.bad_frames.fetch_add(1, Ordering::Relaxed);
                    if reject(&mut ws, *e, &stats).await.is_err() {
                        break "write failed".into();
                    }
                }
            }
            Event::Queued(Some(m)) => {
                if let Err(m) = write(&mut ws, m, &stats).await {
                    outbox.unsent.push(m);
                    break "write failed".into();
                }
            }
            Event::Queued(None) => break "queue closed".into(),
            // Replaced, disconnected or stopping: the top of the turn ends it.
            Event::Poked if flags.closing.load(Ordering::Acquire) => {}
            Event::Poked if !flags.ping_due.swap(false, Ordering::AcqRel) => {}
            Event::Poked => {
                if last_heard.elapsed() > params.ping_interval * 3 {
                    JsipStats::count(&stats.dead_peers);
                    break format!(
                        "silent for 3 ping intervals ({:?})",
                        params.ping_interval * 3
                    );
                }
                if ws.send(Frame::Ping(Default::default())).await.is_err() {
                    break "write failed".into();
                }
            }
        }
    };
    drop(outbox);
    Box::pin(node.disconnected(name.clone(), conn)).await;
    let bad = flags.bad_frames.load(Ordering::Relaxed);
    tracing::debug!("JSIP socket {name} from {remote} closed ({why}); {bad} bad frames");
}

/// Why a socket is told to close: its `replaced` token was cancelled.
enum Ending {
    /// A newer socket took its name.
    Replaced,
    /// An operator closed it.
    Disconnected,
    /// The daemon stops.
    Shutdown,
}

/// Why a socket's `replaced` token was cancelled (it is a child of `shutdown`).
fn cancelled_because(shutdown: &CancellationToken, flags: &SocketFlags) -> Ending {
    if shutdown.is_cancelled() {
        Ending::Shutdown
    } else if flags.disconnected.load(Ordering::Relaxed) {
        Ending::Disconnected
    } else {
        Ending::Replaced
    }
}

/// Closes a socket that was replaced, disconnected or stopped, with that close code;
/// returns why, for the log.
async fn end<S>(ws: &mut WebSocketStream<S>, ending: Ending, stats: &JsipStats) -> &'static str
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (code, reason, why) = match ending {
        Ending::Replaced => {
            JsipStats::count(&stats.replaced);
            (
                CLOSE_REPLACED,
                "replaced",
                "replaced by a newer connection with the same userid",
            )
        }
        Ending::Disconnected => (
            CLOSE_DISCONNECTED,
            "disconnected by an operator",
            "disconnected by an operator",
        ),
        Ending::Shutdown => (1001, "server stopping", "server stopping"),
    };
    close(ws, code, reason).await;
    why
}

/// What woke a socket task.
enum Event {
    Frame(Option<Result<Frame, WsError>>),
    Queued(Option<Queued>),
    /// Its `closing`, `ping_due` or queue to look at.
    Poked,
}

/// Parses a text frame. A request from a signed-in person carries `caller` under
/// [`CALLER_KEY`]; a `Caller` a client wrote itself is removed, so an SLP can trust the
/// key. The error is boxed: this is held across awaits.
fn inbound(text: &str, caller: Option<&Value>) -> Result<Box<Message>, Box<ParseError>> {
    // Boxed here, once: it travels as a pointer to the SLP (`jsip::Delivery`).
    let mut msg = Message::parse_boxed(text).map_err(Box::new)?;
    if !msg.extra.is_empty() {
        msg.extra.remove(CALLER_KEY);
    }
    if let (Some(c), true) = (caller, msg.is_request()) {
        msg.extra.insert(CALLER_KEY.into(), c.clone());
    }
    Ok(msg)
}

/// The next message in the socket's queue, if one is there: asked, not awaited.
///
/// `Pending` here registers no waker, which is sound only inside the socket's select:
/// whoever queues a message also pokes the socket (`Registry::send`), and the poke's
/// branch registers the task's waker, after this branch looked. Awaiting the queue's
/// own `recv` registered a second waker on every turn, frames or not (callgrind: about
/// 100 instructions a round trip).
fn next_queued(rx: &mut tokio::sync::mpsc::Receiver<Queued>) -> std::task::Poll<Option<Queued>> {
    use tokio::sync::mpsc::error::TryRecvError;
    match rx.try_recv() {
        Ok(m) => std::task::Poll::Ready(Some(m)),
        Err(TryRecvError::Empty) => std::task::Poll::Pending,
        Err(TryRecvError::Disconnected) => std::task::Poll::Ready(None),
    }
}

/// Writes messages in order; gives back those not written if the socket failed.
async fn write_all<S>(
    ws: &mut WebSocketStream<S>,
    msgs: impl IntoIterator<Item = Queued>,
    stats: &JsipStats,
) -> Result<(), Vec<Queued>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut msgs = msgs.into_iter();
    while let Some(m) = msgs.next() {
        if let Err(m) = write(ws, m, stats).await {
            return Err(std::iter::once(m).chain(msgs).collect());
        }
    }
    Ok(())
}

/// Writes one queued message; gives it back if the socket failed, so it is not lost.
async fn write<S>(ws: &mut WebSocketStream<S>, m: Queued, stats: &JsipStats) -> Result<(), Queued>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut text = m.to_json();
    // To its length: `Bytes` takes such a buffer over as it is, where one with room to
    // spare gets a shared header allocated, and later freed, for it (callgrind: about
    // 90 instructions a message more than shrinking, which mimalloc does in place).
    text.shrink_to_fit();
    match ws.send(Frame::text(text)).await {
        Ok(()) => {
            JsipStats::count(&stats.frames_out);
            Ok(())
        }
        Err(_) => Err(m),
    }
}

/// Answers a bad frame with 400 (JSIP.md §2 "Bad input"); the socket stays open.
async fn reject<S>(
    ws: &mut WebSocketStream<S>,
    e: ParseError,
    stats: &JsipStats,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    JsipStats::count(&stats.bad_frames);
    tracing::debug!("bad JSIP frame: {e}");
    let answer = e.answer();
    drop(e);
    ws.send(Frame::text(answer)).await
}

async fn close<S>(ws: &mut WebSocketStream<S>, code: u16, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    // Then read on until the peer's own Close (RFC 6455 §7.1.1: the server closes the
    // TCP connection after both): a socket closed with the peer's frames still unread
    // is reset, and a peer still sending lost our Close frame with the rest (a flooding
    // peer, disconnected, saw its connection end without one: the e2e test of it).
    // Bounded: a peer that does not read, or never answers, must not hold the task.
    let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    }))
    .await;
}
