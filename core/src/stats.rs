//! Counters behind `GET /runtime/v1/stats`. Plain relaxed atomics: they are read for
//! display only, never to make decisions, so no ordering is needed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use serde_json::{json, Value};

/// Per-port connection counters.
#[derive(Default)]
pub struct PortStats {
    open: AtomicU64,
    accepted: AtomicU64,
    tls_failed: AtomicU64,
}

/// Decrements the open count when the connection ends, however it ends.
pub struct OpenConnection<'a>(&'a PortStats);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

impl PortStats {
    pub fn opened(&self) -> OpenConnection<'_> {
        self.accepted.fetch_add(1, Relaxed);
        self.open.fetch_add(1, Relaxed);
        OpenConnection(self)
    }

    pub fn tls_failed(&self) {
        self.tls_failed.fetch_add(1, Relaxed);
    }

    pub fn open(&self) -> u64 {
        self.open.load(Relaxed)
    }

    fn to_json(&self) -> Value {
        json!({
            "open": self.open.load(Relaxed),
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
    in_flight: AtomicU64,
    /// Index = status / 100 (1xx..5xx).
    by_class: [AtomicU64; 6],
    unauthorized: AtomicU64,
}

/// Counts a request as in flight until dropped.
pub struct InFlight<'a>(&'a RequestStats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl RequestStats {
    pub fn started(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self)
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
            "in_flight": self.in_flight.load(Relaxed),
            "2xx": c(2), "3xx": c(3), "4xx": c(4), "5xx": c(5),
            "unauthorized": self.unauthorized.load(Relaxed),
        })
    }
}

#[derive(Default)]
pub struct Stats {
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
            "reloads": { "applied": self.reloads.load(Relaxed), "rejected": self.reloads_rejected.load(Relaxed) },
        })
    }
}
