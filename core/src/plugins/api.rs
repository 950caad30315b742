//! A `.so` plugin's API, and how one HTTP request reaches it and comes back.
//!
//! Each request gets a thread of its own (`api-NAME`), so a handler may block, stream an
//! endless MJPEG answer or swallow a multi-GiB upload without touching the async
//! workers. The body is read on that thread with `Handle::block_on` one frame at a time,
//! and the answer goes back through a small bounded channel: memory stays at a few
//! chunks whatever the size, and a slow client slows the handler, not the daemon.
//!
//! A handler that answers `101 Switching Protocols` to an upgrade request gets the
//! connection itself: after the answer, its body reads and answer writes are the raw
//! bytes of the socket (the plugin speaks WebSocket, say, with a library of its own).

use std::ffi::c_void;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jsipd_plugin_api::api::Role;
use jsipd_plugin_api::ffi::{FfiHeader, FfiRequest, FfiResponse, FfiStr};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use warp::http::{HeaderName, HeaderValue, StatusCode};

use super::image::Image;
use super::Generation;
use crate::serve::{Request, Response};

/// Who sent a request to a plugin's API: what the plugin is told (ABI 1.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The signed-in user; empty for the management port's operator.
    pub user: Arc<str>,
    pub role: Role,
    /// The client's address, for the plugin's own logs and lock-outs (ABI 1.5).
    pub remote: Option<std::net::IpAddr>,
}

impl Caller {
    /// Whoever reaches the management port: trusted with everything.
    pub fn operator() -> Caller {
        Caller {
            user: Arc::from(""),
            role: Role::Admin,
            remote: None,
        }
    }
}

pub struct ForeignApi {
    image: Arc<Image>,
    api: *mut c_void,
    pub generation: Arc<Generation>,
    /// Request threads; finished ones are pruned as new ones start.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Cancelled when the drain timed out: body reads and writes fail from then on.
    pub cancel: CancellationToken,
}

// SAFETY: the plugin's API is `Send + Sync` (the trait requires it).
unsafe impl Send for ForeignApi {}
// SAFETY: as above.
unsafe impl Sync for ForeignApi {}

impl ForeignApi {
    /// The image's API, or `None` when the plugin offers none (or `api()` panicked).
    pub fn new(image: Arc<Image>, generation: Arc<Generation>) -> Option<ForeignApi> {
        // SAFETY: a live plugin object, called on a host thread.
        let api = unsafe { (image.vtable().api_new)(image.vtable().plugin) };
        (!api.is_null()).then(|| ForeignApi {
            image,
            api,
            generation,
            threads: Mutex::new(Vec::new()),
            cancel: CancellationToken::new(),
        })
    }

    pub fn reload(&self) {
        // SAFETY: our live API.
        if !unsafe { (self.image.vtable().api_reload)(self.api) } {
            self.generation.usage.panics.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Tells the plugin this generation drains (`Api::on_drain`), on a thread of its
    /// own (plugin code never runs on the async workers), so it can end its endless
    /// answers now instead of at `drain_timeout`. Plugins built without the hook are
    /// not called.
    pub fn drain(self: &Arc<Self>) {
        let Some(drain) = self.image.api_drain() else {
            return;
        };
        let api = self.clone();
        let _ = std::thread::Builder::new()
            .name(format!("drain-{}", self.generation.name))
            .spawn(move || {
                // SAFETY: our live API (the Arc keeps it from being dropped meanwhile).
                if !unsafe { drain(api.api) } {
                    api.generation.usage.panics.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("plugin [{}] panicked in Api::on_drain", api.image.tag());
                }
            });
    }

    /// `Plugin::PEOPLE_ROOT` of the plugin, if it has one.
    pub fn people_root(&self) -> Option<&str> {
        self.image.people_root()
    }

    /// Another plugin's request, on its thread (`LoadArgs::call_api`): the callee gets
    /// the caller's request and response as they are. `false` when the callee panicked.
    ///
    /// # Safety
    /// `request` and `response` are valid for the call.
    pub unsafe fn call_direct(&self, request: &FfiRequest, response: &FfiResponse) -> bool {
        let usage = &self.generation.usage;
        usage.using.fetch_add(1, Ordering::AcqRel);
        // SAFETY: our live API; the caller's values are valid for the call.
        let ok = unsafe { (self.image.vtable().api_handle)(self.api, request, response) };
        if !ok {
            usage.panics.fetch_add(1, Ordering::Relaxed);
        }
        usage.used.fetch_add(1, Ordering::Relaxed);
        usage.using.fetch_sub(1, Ordering::AcqRel);
        ok
    }

    /// Joins every request thread; then nothing of this API runs any more.
    pub fn join_requests(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    /// Serves one request whose path below the mount point is `path`. `done` runs on the
    /// request thread after the handler returned (the registry's drain check).
    pub async fn serve(
        self: Arc<Self>,
        req: Request,
        path: String,
        caller: Caller,
        done: impl FnOnce(&Arc<ForeignApi>) + Send + 'static,
    ) -> Response {
        if caller.role < Role::Admin && !self.image.knows_roles() {
            // Built before ABI 1.3, the plugin states no roles and never sees who calls,
            // so on the people's port only an admin may use it.
            return plain(
                StatusCode::FORBIDDEN,
                &format!(
                    "[{}] was built before plugins were told who calls (ABI 1.3): only an admin may use it here; {} is a {}",
                    self.image.tag(),
                    caller.user,
                    caller.role
                ),
            );
        }
        let (mut parts, body) = req.into_parts();
        // A plugin that answers 101 gets the raw connection (a WebSocket it speaks
        // itself, as NanoKVM's `/api/ws`).
        let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let (head_tx, head_rx) = oneshot::channel();
        let (body_tx, body_rx) = mpsc::channel(4);
        let usage = &self.generation.usage;
        usage.using.fetch_add(1, Ordering::Relaxed);
        let call = Call {
            method: parts.method.as_str().to_string(),
            path,
            query: parts.uri.query().unwrap_or("").to_string(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: Some(body),
            caller,
            pending: Bytes::new(),
            runtime: tokio::runtime::Handle::current(),
            cancel: self.cancel.clone(),
            head: Head::default(),
            head_tx: Some(head_tx),
            buffer: Vec::new(),
            body_tx,
            upgrade,
            upgraded: None,
        };
        let tag = self.image.tag().to_string();
        let api = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("api-{}", self.generation.name))
            .spawn(move || {
                let ok = api.call(call);
                let usage = &api.generation.usage;
                if !ok {
                    usage.panics.fetch_add(1, Ordering::Relaxed);
                }
                usage.using.fetch_sub(1, Ordering::Relaxed);
                usage.used.fetch_add(1, Ordering::Relaxed);
                done(&api);
            });
        match spawned {
            Ok(t) => {
                let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
                threads.retain(|t| !t.is_finished());
                threads.push(t);
            }
            Err(e) => {
                usage.using.fetch_sub(1, Ordering::Relaxed);
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("no thread for the request: {e}"),
                );
            }
        }
        // Only request threads hold the API from here on, so its last reference is never
        // dropped on an async worker.
        drop(self);
        match head_rx.await {
            Ok(head) => response(head, body_rx),
            Err(_) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!(
                    "the plugin [{tag}] failed while handling this request (see the daemon log)"
                ),
            ),
        }
    }

    /// On the request thread: runs the handler. `false` when it panicked.
    fn call(&self, mut call: Call) -> bool {
        let remote = call
            .caller
            .remote
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        let headers = FfiHeader::lend_all(&call.headers);
        let request = FfiRequest {
            method: FfiStr::new(&call.method),
            path: FfiStr::new(&call.path),
            query: FfiStr::new(&call.query),
            headers: headers.as_ptr(),
            header_count: headers.len(),
            body_ctx: (&mut call as *mut Call).cast(),
            read_body,
            caller_user: FfiStr::new(&call.caller.user),
            caller_role: call.caller.role.to_ffi(),
            remote: FfiStr::new(&remote),
        };
        let response = FfiResponse {
            ctx: (&mut call as *mut Call).cast(),
            set_status,
            add_header,
            write,
        };
        // SAFETY: our live API; `request` and `response` outlive the call.
        let ok = unsafe { (self.image.vtable().api_handle)(self.api, &request, &response) };
        if ok {
            call.finish();
        } else if call.head_tx.is_none() {
            // The head is out: cut the body so the client sees the failure.
            let _ = call
                .body_tx
                .blocking_send(Err(std::io::Error::other("plugin failed")));
        }
        ok
    }
}

impl Drop for ForeignApi {
    fn drop(&mut self) {
        // SAFETY: our live API, dropped once after its last request.
        unsafe {
            if !(self.image.vtable().api_unload)(self.api) {
                tracing::error!("plugin [{}] panicked in Api::on_unload", self.image.tag());
            }
            if !(self.image.vtable().api_drop)(self.api) {
                tracing::error!("plugin [{}] panicked dropping its API", self.image.tag());
            }
        }
    }
}

#[derive(Default)]
struct Head {
    status: Option<u16>,
    headers: Vec<(String, String)>,
    /// The whole body, when the handler returned before it outgrew [`BUFFERED`]: sent
    /// with a Content-Length instead of chunked.
    complete: Option<Bytes>,
}

/// Answers up to this size are sent whole (with a Content-Length); beyond it, or on an
/// explicit flush, the body streams.
const BUFFERED: usize = 64 * 1024;

/// One request, as the request thread sees it.
struct Call {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Option<Incoming>,
    caller: Caller,
    /// Rest of the last body frame, not yet read by the plugin.
    pending: Bytes,
    runtime: tokio::runtime::Handle,
    cancel: CancellationToken,
    head: Head,
    head_tx: Option<oneshot::Sender<Head>>,
    /// Body written before the head was sent.
    buffer: Vec<u8>,
    body_tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    /// Resolves to the connection once a 101 answer went out.
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// After a 101: the connection itself, which the plugin's body reads and answer
    /// writes now go to.
    upgraded: Option<TokioIo<hyper::upgrade::Upgraded>>,
}

impl Call {
    fn switching(&self) -> bool {
        self.head.status == Some(101)
    }

    /// Sends the 101 answer and waits for the connection. `false` when there is none
    /// (not an upgrade request, or the client left).
    fn upgrade_now(&mut self) -> bool {
        let Some(upgrade) = self.upgrade.take() else {
            tracing::warn!("a plugin answered 101 to a request that asked for no upgrade");
            return false;
        };
        if let Some(tx) = self.head_tx.take() {
            let mut head = std::mem::take(&mut self.head);
            head.complete = Some(Bytes::new());
            let _ = tx.send(head);
        }
        let cancel = self.cancel.clone();
        let upgraded = self.runtime.block_on(async {
            tokio::select! {
                u = upgrade => u.ok(),
                _ = cancel.cancelled() => None,
            }
        });
        self.upgraded = upgraded.map(TokioIo::new);
        self.upgraded.is_some()
    }

    /// Reads from the upgraded connection: the count, or `None` when it failed.
    fn read_upgraded(&mut self, buf: &mut [u8]) -> Option<usize> {
        use tokio::io::AsyncReadExt;
        let (io, cancel) = (self.upgraded.as_mut()?, self.cancel.clone());
        self.runtime.block_on(async {
            tokio::select! {
                r = io.read(buf) => r.ok(),
                _ = cancel.cancelled() => None,
            }
        })
    }

    /// Writes to the upgraded connection; `false` once it failed.
    fn write_upgraded(&mut self, data: &[u8]) -> bool {
        use tokio::io::AsyncWriteExt;
        let (Some(io), cancel) = (self.upgraded.as_mut(), self.cancel.clone()) else {
            return false;
        };
        self.runtime.block_on(async {
            tokio::select! {
                r = async { io.write_all(data).await?; io.flush().await } => r.is_ok(),
                _ = cancel.cancelled() => false,
            }
        })
    }

    /// The handler returned: a body that was never streamed goes out whole.
    fn finish(&mut self) {
        if self.switching() && self.head_tx.is_some() {
            // 101 and nothing else: the connection is handed over and closed.
            self.upgrade_now();
            return;
        }
        if let Some(tx) = self.head_tx.take() {
            let mut head = std::mem::take(&mut self.head);
            head.complete = Some(Bytes::from(std::mem::take(&mut self.buffer)));
            let _ = tx.send(head);
        }
    }

    /// Starts streaming: the head, then what was buffered. `false` once the client is gone.
    fn start_stream(&mut self) -> bool {
        if let Some(tx) = self.head_tx.take() {
            let _ = tx.send(std::mem::take(&mut self.head));
            if !self.buffer.is_empty() {
                let first = Bytes::from(std::mem::take(&mut self.buffer));
                return self.send_chunk(first);
            }
        }
        !self.body_tx.is_closed()
    }

    /// Sends one chunk, waiting while the client is slow.
    fn send_chunk(&self, chunk: Bytes) -> bool {
        let tx = self.body_tx.clone();
        let cancel = self.cancel.clone();
        self.runtime.block_on(async move {
            tokio::select! {
                r = tx.send(Ok(chunk)) => r.is_ok(),
                _ = cancel.cancelled() => false,
            }
        })
    }

    /// The next body bytes: `Some(empty)` at the end, `None` when the body failed.
    fn next_chunk(&mut self) -> Option<Bytes> {
        while self.pending.is_empty() {
            let body = self.body.as_mut()?;
            if body.is_end_stream() {
                return Some(Bytes::new());
            }
            let cancel = self.cancel.clone();
            // `None`: the drain timed out; `Some(None)`: the body ended.
            let frame = self.runtime.block_on(async {
                tokio::select! {
                    f = http_body_util::BodyExt::frame(body) => Some(f),
                    _ = cancel.cancelled() => None,
                }
            });
            match frame {
                Some(None) => return Some(Bytes::new()),
                Some(Some(Ok(f))) => {
                    if let Ok(data) = f.into_data() {
                        self.pending = data;
                    }
                }
                Some(Some(Err(_))) | None => {
                    self.body = None;
                    return None;
                }
            }
        }
        Some(std::mem::take(&mut self.pending))
    }
}

/// # Safety
/// `ctx` is the `Call` of the request being handled.
unsafe fn call<'a>(ctx: *mut c_void) -> &'a mut Call {
    // SAFETY: the caller's contract.
    unsafe { &mut *ctx.cast::<Call>() }
}

unsafe extern "C" fn read_body(ctx: *mut c_void, buf: *mut u8, cap: usize) -> isize {
    // SAFETY: called by the plugin during its request.
    let c = unsafe { call(ctx) };
    if c.upgraded.is_some() {
        // SAFETY: `buf` has room for `cap` bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(buf, cap) };
        return c.read_upgraded(buf).map_or(-1, |n| n as isize);
    }
    let Some(mut chunk) = c.next_chunk() else {
        return -1;
    };
    let n = chunk.len().min(cap);
    // SAFETY: `buf` has room for `cap >= n` bytes.
    unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), buf, n) };
    c.pending = chunk.split_off(n);
    n as isize
}

unsafe extern "C" fn set_status(ctx: *mut c_void, status: u16) {
    // SAFETY: as in `read_body`.
    unsafe { call(ctx) }.head.status = Some(status);
}

unsafe extern "C" fn add_header(ctx: *mut c_void, name: FfiStr, value: FfiStr) {
    // SAFETY: as in `read_body`; the strings are valid for this call.
    let (c, name, value) = unsafe { (call(ctx), name.to_text(), value.to_text()) };
    c.head.headers.push((name.into_owned(), value.into_owned()));
}

/// Body bytes; empty `data` is a flush (start streaming now).
unsafe extern "C" fn write(ctx: *mut c_void, data: FfiStr) -> bool {
    // SAFETY: as in `read_body`.
    let (c, data) = unsafe { (call(ctx), data.as_bytes()) };
    if c.head_tx.is_some() && c.switching() && !c.upgrade_now() {
        return false;
    }
    if c.upgraded.is_some() {
        return data.is_empty() || c.write_upgraded(data);
    }
    if c.head_tx.is_some() {
        if !data.is_empty() && c.buffer.len() + data.len() <= BUFFERED {
            c.buffer.extend_from_slice(data);
            return true;
        }
        if !c.start_stream() {
            return false;
        }
    }
    if data.is_empty() {
        return !c.body_tx.is_closed();
    }
    c.send_chunk(Bytes::copy_from_slice(data))
}

/// The HTTP answer from the plugin's head and its body stream.
fn response(head: Head, body: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Response {
    use warp::Reply;
    let mut resp = match head.complete {
        Some(whole) => warp::reply::Response::new(whole.into()),
        None => warp::reply::stream(Chunks(body)).into_response(),
    };
    let status = head
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    *resp.status_mut() = status;
    for (k, v) in head.headers {
        match (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            (Ok(k), Ok(v)) => {
                resp.headers_mut().append(k, v);
            }
            _ => tracing::warn!("a plugin set an invalid header {k:?}; dropped"),
        }
    }
    resp
}

fn plain(status: StatusCode, reason: &str) -> Response {
    crate::api::Answer::error(status, reason).render(crate::api::Format::Json)
}

/// The answer's body chunks as a `Stream` (a `Sync` one, as warp requires).
struct Chunks(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_util::Stream for Chunks {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
