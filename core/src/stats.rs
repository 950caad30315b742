//! Counters behind `GET /runtime/v1/stats`. Plain relaxed atomics: they are read for
//! display only, never to make decisions, so no ordering is needed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use serde_json::{json, Value};

/// A level that goes up when something starts and down when it ends.
#[derive(Default)]
pub struct Gauge(AtomicU64);

/// Holds one unit of a [`Gauge`]; dropping it (however the work ends) releases it.
pub struct Held<'a>(&'a Gauge);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Relaxed);
    }
}

impl Gauge {
    pub fn hold(&self) -> Held<'_> {
        self.0.fetch_add(1, Relaxed);
        Held(self)
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Per-port connection counters.
#[derive(Default)]
pub struct PortStats {
    open: Gauge,
    accepted: AtomicU64,
    tls_failed: AtomicU64,
}

impl PortStats {
    /// Counts an accepted connection; it stays open until the result is dropped.
    pub fn opened(&self) -> Held<'_> {
        self.accepted.fetch_add(1, Relaxed);
        self.open.hold()
    }

    pub fn tls_failed(&self) {
        self.tls_failed.fetch_add(1, Relaxed);
    }

    fn to_json(&self) -> Value {
        json!({
            "open": self.open.get(),
            "accepted": self.accepted.load(Relaxed),
            "tls_failed": self.tls_failed.load(Relaxed),
        })
    }
}

/// API request counters, by status class.
#[derive(Default)]
pub struct RequestStats {
    total: AtomicU64,
    /// Requests whose head has arrived and whose answer has not been produced yet.
    in_flight: Gauge,
    /// Index = status / 100 (1xx..5xx).
    by_class: [AtomicU64; 6],
    unauthorized: AtomicU64,
}

impl RequestStats {
    /// Counts a request as in flight until the result is dropped.
    pub fn started(&self) -> Held<'_> {
        self.in_flight.hold()
    }

    pub fn record(&self, status: u16) {
        self.total.fetch_add(1, Relaxed);
        let class = usize::from(status / 100).min(5);
        self.by_class[class].fetch_add(1, Relaxed);
        if status == 401 {
            self.unauthorized.fetch_add(1, Relaxed);
        }
    }

    fn to_json(&self) -> Value {
        let c = |i: usize| self.by_class[i].load(Relaxed);
        json!({
            "total": self.total.load(Relaxed),
            "in_flight": self.in_flight.get(),
            "2xx": c(2), "3xx": c(3), "4xx": c(4), "5xx": c(5),
            "unauthorized": self.unauthorized.load(Relaxed),
        })
    }
}

/// JSIP over WebSocket: sockets and frames.
#[derive(Default)]
pub struct JsipStats {
    pub sockets: Gauge,
    pub sockets_total: AtomicU64,
    pub replaced: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    /// Frames answered 400 (not JSON, not an object, invalid fields).
    pub bad_frames: AtomicU64,
    pub oversized: AtomicU64,
    pub dead_peers: AtomicU64,
    /// Requests answered 480 because the name's queue was full or the name gone.
    pub unavailable: AtomicU64,
    pub auth_failed: AtomicU64,
    pub dials: AtomicU64,
    pub dials_failed: AtomicU64,
}

/// One open WebSocket, counted until dropped; owns its `Arc` so it can live in a task.
pub struct OpenSocket(Arc<JsipStats>);

impl OpenSocket {
    pub fn new(stats: Arc<JsipStats>) -> OpenSocket {
        stats.sockets.0.fetch_add(1, Relaxed);
        stats.sockets_total.fetch_add(1, Relaxed);
        OpenSocket(stats)
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.sockets.0.fetch_sub(1, Relaxed);
    }
}

impl JsipStats {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    fn to_json(&self) -> Value {
        let g = |c: &AtomicU64| c.load(Relaxed);
        json!({
            "sockets": self.sockets.get(),
            "sockets_total": g(&self.sockets_total),
            "replaced": g(&self.replaced),
            "frames_in": g(&self.frames_in),
            "frames_out": g(&self.frames_out),
            "bad_frames": g(&self.bad_frames),
            "oversized": g(&self.oversized),
            "dead_peers": g(&self.dead_peers),
            "unavailable": g(&self.unavailable),
            "auth_failed": g(&self.auth_failed),
            "dials": g(&self.dials),
            "dials_failed": g(&self.dials_failed),
        })
    }
}

#[derive(Default)]
pub struct Stats {
    pub jsip: Arc<JsipStats>,
    pub api: Arc<PortStats>,
    pub rtc: Arc<PortStats>,
    pub api_requests: RequestStats,
    pub reloads: AtomicU64,
    pub reloads_rejected: AtomicU64,
}

impl Stats {
    pub fn to_json(&self) -> Value {
        json!({
            "connections": { "api": self.api.to_json(), "rtc": self.rtc.to_json() },
            "api_requests": self.api_requests.to_json(),
            "jsip": self.jsip.to_json(),
            "reloads": { "applied": self.reloads.load(Relaxed), "rejected": self.reloads_rejected.load(Relaxed) },
        })
    }
}
