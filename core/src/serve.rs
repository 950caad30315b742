//! The accept loop shared by both ports (API and RTC): TCP, optional TLS, HTTP/1.1 via
//! hyper, and graceful stop.
//!
//! Both ports speak HTTP first (the RTC port upgrades to WebSocket), so one loop serves
//! both and a port only differs in the [`Handler`] it is given. Every connection task is
//! spawned on a shared [`TaskTracker`]; a graceful stop cancels the `Shutdown` token,
//! which closes the listening sockets and asks hyper to finish the request in flight,
//! and then waits on the tracker for at most `stop_timeout`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config;
use crate::stats::PortStats;

pub type Request = hyper::Request<Incoming>;
pub type Response = warp::reply::Response;
pub type BoxFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// What a port does with each request.
pub type Handler = Arc<dyn Fn(Request, Peer) -> BoxFuture + Send + Sync>;

/// Facts about the connection a request came in on.
#[derive(Clone)]
pub struct Peer {
    pub remote: SocketAddr,
    /// The listener is not on loopback, so requests must prove who they are.
    pub exposed: bool,
    pub tls: bool,
    /// For work that outlives the HTTP exchange (an upgraded WebSocket): spawn it here
    /// so that a graceful stop waits for it too.
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
}

/// A TLS acceptor that SIGHUP can replace (new certificate) while the port stays open.
#[derive(Clone)]
pub struct TlsSlot(Arc<RwLock<TlsAcceptor>>);

impl TlsSlot {
    pub fn new(acceptor: TlsAcceptor) -> Self {
        TlsSlot(Arc::new(RwLock::new(acceptor)))
    }

    pub fn replace(&self, acceptor: TlsAcceptor) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = acceptor;
    }

    fn get(&self) -> TlsAcceptor {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A bound, not yet serving, listening socket.
pub struct Bound {
    listener: TcpListener,
    pub local: SocketAddr,
    pub key: String,
    tls: Option<TlsSlot>,
}

/// Binds one configured endpoint. The error names the address and the config key,
/// because "address in use" alone does not tell an operator which line to change.
pub async fn bind(ep: &config::Endpoint, tls: Option<TlsSlot>) -> anyhow::Result<Bound> {
    let listener = TcpListener::bind(ep.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} ({}): {e}", ep.addr, ep.key))?;
    let local = listener.local_addr()?;
    Ok(Bound {
        listener,
        local,
        key: ep.key.clone(),
        tls,
    })
}

/// Everything a port's accept loop needs besides the socket.
#[derive(Clone)]
pub struct Serving {
    pub handler: Handler,
    pub stats: Arc<PortStats>,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
}

/// How long a client may take to send a request head or finish a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes a socket may hold written but not yet sent (TCP_NOTSENT_LOWAT).
const UNSENT_LIMIT: libc::c_int = 128 * 1024;

/// Keeps what the kernel queues for a slow peer small. Without it, Linux grows a
/// socket's send buffer to megabytes: an MJPEG viewer on a slow link would be handed
/// seconds of old frames, and a JSIP peer seconds of stale messages, none of which can
/// be skipped once queued. With it, a write waits until the queue drains below the
/// limit, so the backlog stays in user space, where `stream` skips frames and the JSIP
/// queue answers 480. Throughput is unaffected: the writer is woken while a full
/// window is still queued.
fn limit_unsent(stream: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket and a c_int option value of the size given.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            &UNSENT_LIMIT as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        tracing::debug!("TCP_NOTSENT_LOWAT: {}", std::io::Error::last_os_error());
    }
}

/// Accepts until shutdown; the socket is closed as soon as shutdown is requested.
pub fn spawn(bound: Bound, serving: Serving) {
    let tasks = serving.tasks.clone();
    tasks.spawn(async move {
        let Bound {
            listener,
            local,
            key,
            tls,
        } = bound;
        loop {
            let accepted = tokio::select! {
                _ = serving.shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    limit_unsent(&stream);
                    let peer = Peer {
                        remote,
                        exposed: !local.ip().is_loopback(),
                        tls: tls.is_some(),
                        tasks: serving.tasks.clone(),
                        shutdown: serving.shutdown.clone(),
                    };
                    serving
                        .tasks
                        .spawn(connection(stream, tls.clone(), peer, serving.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    tracing::error!("accept on {local} ({key}): {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        // Close the socket before saying so: the log line promises it is closed.
        drop(listener);
        tracing::info!("closed listener {local} ({key})");
    });
}

async fn connection(
    stream: tokio::net::TcpStream,
    tls: Option<TlsSlot>,
    peer: Peer,
    serving: Serving,
) {
    let _open = serving.stats.opened();
    match tls {
        None => serve_http(stream, peer, serving.clone()).await,
        Some(slot) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, slot.get().accept(stream)).await {
                Ok(Ok(stream)) => serve_http(stream, peer, serving.clone()).await,
                Ok(Err(e)) => {
                    serving.stats.tls_failed();
                    tracing::debug!("TLS handshake with {} failed: {e}", peer.remote);
                }
                Err(_) => {
                    serving.stats.tls_failed();
                    tracing::debug!("TLS handshake with {} timed out", peer.remote);
                }
            }
        }
    }
}

async fn serve_http<S>(stream: S, peer: Peer, serving: Serving)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handler = serving.handler.clone();
    let remote = peer.remote;
    let shutdown = serving.shutdown.clone();
    let service = service_fn(move |req| {
        let fut = handler(req, peer.clone());
        async move { Ok::<_, std::convert::Infallible>(fut.await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            // Finish the request in flight, then close; idle connections close now.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection from {remote}: {e}");
    }
}
