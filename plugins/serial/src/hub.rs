//! One reader per target, many clients (cloud-console's multiplexer).
//!
//! The reader thread owns the backend: it appends what the target writes to a history
//! ring and to every client's queue. Each queue is bounded: a client that does not keep
//! up has its queue dropped, is told how many bytes it lost, and is resynchronised from
//! the ring, so it is never handed a garbled stream and never slows the others. Input
//! from any client is written to the target in arrival order, under one lock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jsipd_plugin_api::tracing;

use crate::port::{self, Backend, Fd};

/// How often a gone backend is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How long a write to the target may take before the input is refused.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Something a client is told besides output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// It lost this many bytes; the history follows as a fresh start.
    Lost(u64),
    Connected(String),
    Disconnected(String),
}

/// What a client takes from the hub next.
#[derive(Debug, PartialEq, Eq)]
pub enum Out {
    Notice(Notice),
    Data(Vec<u8>),
}

#[derive(Debug, Default)]
struct Client {
    peer: String,
    queue: VecDeque<u8>,
    notices: VecDeque<Notice>,
    lost: u64,
    drops: u64,
}

#[derive(Debug, Default)]
struct State {
    ring: VecDeque<u8>,
    clients: BTreeMap<u64, Client>,
    connected: bool,
    error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub backend: Backend,
    pub history: usize,
    pub client_queue: usize,
}

struct Inner {
    settings: Mutex<Settings>,
    /// Set by [`Hub::reconfigure`]: the reader reconnects with the new settings.
    changed: AtomicBool,
    state: Mutex<State>,
    /// The backend's descriptor for input, while connected.
    writer: Mutex<Option<Arc<Fd>>>,
    stop: AtomicBool,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    drops: AtomicU64,
}

#[derive(Clone)]
pub struct Hub(Arc<Inner>);

pub struct Status {
    pub backend: String,
    pub connected: bool,
    pub error: Option<String>,
    pub clients: Vec<(u64, String, usize, u64)>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub drops: u64,
    pub history: usize,
}

impl Hub {
    /// Starts the reader thread.
    pub fn start(settings: Settings) -> (Hub, JoinHandle<()>) {
        let hub = Hub(Arc::new(Inner {
            settings: Mutex::new(settings),
            changed: AtomicBool::new(false),
            state: Mutex::default(),
            writer: Mutex::new(None),
            stop: AtomicBool::new(false),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            drops: AtomicU64::new(0),
        }));
        let reader = hub.clone();
        let handle = std::thread::Builder::new()
            .name("serial-reader".into())
            .spawn(move || reader.run())
            .expect("spawn the serial reader");
        (hub, handle)
    }

    fn settings(&self) -> Settings {
        self.0
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// New settings (SIGHUP): a changed backend is reconnected within 200 ms; clients
    /// stay attached and are told of the switch.
    pub fn reconfigure(&self, settings: Settings) {
        let mut current = self.0.settings.lock().unwrap_or_else(|p| p.into_inner());
        if *current != settings {
            *current = settings;
            self.0.changed.store(true, Ordering::Release);
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::Release);
    }

    /// A new client: it gets the history first, then everything live.
    pub fn attach(&self, id: u64, peer: &str) {
        let mut s = self.state();
        let history: VecDeque<u8> = s.ring.clone();
        let notice = if s.connected {
            Notice::Connected(self.settings().backend.describe())
        } else {
            Notice::Disconnected(s.error.clone().unwrap_or_else(|| "connecting".into()))
        };
        s.clients.insert(
            id,
            Client {
                peer: peer.to_string(),
                queue: history,
                notices: VecDeque::from([notice]),
                ..Client::default()
            },
        );
    }

    pub fn detach(&self, id: u64) -> bool {
        self.state().clients.remove(&id).is_some()
    }

    /// The client's next notice, or up to `max` bytes of output.
    pub fn take(&self, id: u64, max: usize) -> Option<Out> {
        let mut s = self.state();
        let c = s.clients.get_mut(&id)?;
        if let Some(n) = c.notices.pop_front() {
            return Some(Out::Notice(n));
        }
        if c.queue.is_empty() {
            return None;
        }
        let n = max.min(c.queue.len());
        Some(Out::Data(c.queue.drain(..n).collect()))
    }

    /// The history ring as it is now.
    pub fn history(&self) -> Vec<u8> {
        self.state().ring.iter().copied().collect()
    }

    /// Writes `data` to the target (in order with every other client's input).
    pub fn send(&self, data: &[u8]) -> Result<(), String> {
        let writer = self.0.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(fd) = writer.as_ref() else {
            let why = self
                .state()
                .error
                .clone()
                .unwrap_or_else(|| "not connected yet".into());
            return Err(format!(
                "the target's serial console is not connected: {why}"
            ));
        };
        fd.write_all(data, Instant::now() + WRITE_TIMEOUT)
            .map_err(|e| format!("writing to {}: {e}", self.settings().backend.describe()))?;
        self.0
            .bytes_out
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    pub fn status(&self) -> Status {
        let s = self.state();
        Status {
            backend: self.settings().backend.describe(),
            connected: s.connected,
            error: s.error.clone(),
            clients: s
                .clients
                .iter()
                .map(|(id, c)| (*id, c.peer.clone(), c.queue.len(), c.drops))
                .collect(),
            bytes_in: self.0.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.0.bytes_out.load(Ordering::Relaxed),
            drops: self.0.drops.load(Ordering::Relaxed),
            history: s.ring.len(),
        }
    }

    /// What the target wrote: into the ring and every client's queue.
    fn output(&self, data: &[u8]) {
        self.0
            .bytes_in
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let (history, bound) = {
            let s = self.0.settings.lock().unwrap_or_else(|p| p.into_inner());
            (s.history, s.client_queue)
        };
        let mut s = self.state();
        s.ring.extend(data);
        let over = s.ring.len().saturating_sub(history);
        s.ring.drain(..over);
        let State { ring, clients, .. } = &mut *s;
        for c in clients.values_mut() {
            if c.queue.len() + data.len() <= bound {
                c.queue.extend(data);
                continue;
            }
            // Too far behind: drop what it has not taken, tell it, restart it from the
            // ring (which already holds `data`).
            let lost = (c.queue.len() + data.len()) as u64;
            c.lost += lost;
            c.drops += 1;
            self.0.drops.fetch_add(1, Ordering::Relaxed);
            c.queue.clear();
            c.queue.extend(ring.iter());
            c.notices.retain(|n| !matches!(n, Notice::Lost(_)));
            c.notices.push_back(Notice::Lost(c.lost));
        }
    }

    fn notify(&self, n: Notice) {
        for c in self.state().clients.values_mut() {
            c.notices.push_back(n.clone());
        }
    }

    /// A client took its loss notice: its count starts again.
    pub fn lost_told(&self, id: u64) {
        if let Some(c) = self.state().clients.get_mut(&id) {
            c.lost = 0;
        }
    }

    fn run(self) {
        let mut buf = vec![0u8; 64 * 1024];
        while !self.0.stop.load(Ordering::Acquire) {
            self.0.changed.store(false, Ordering::Release);
            let backend = self.settings().backend;
            match port::open(&backend) {
                Ok(port) => {
                    let port = Arc::new(port);
                    let fd = Arc::new(Fd(port
                        .fd
                        .0
                        .try_clone()
                        .expect("dup the serial descriptor")));
                    *self.0.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(fd.clone());
                    {
                        let mut s = self.state();
                        s.connected = true;
                        s.error = None;
                    }
                    tracing::info!("serial console {} connected", backend.describe());
                    self.notify(Notice::Connected(backend.describe()));
                    let why = loop {
                        if self.0.stop.load(Ordering::Acquire) {
                            break "the plugin unloads".to_string();
                        }
                        if self.0.changed.load(Ordering::Acquire) {
                            break "the configuration changed (SIGHUP)".to_string();
                        }
                        match fd.read(&mut buf, Duration::from_millis(200)) {
                            Ok(0) => {}
                            Ok(n) => self.output(&buf[..n]),
                            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                                break format!(
                                    "{} closed (the target went away)",
                                    backend.describe()
                                )
                            }
                            Err(e) => break format!("{}: {e}", backend.describe()),
                        }
                    };
                    *self.0.writer.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    drop(port);
                    self.disconnected(why);
                }
                Err(e) => self.disconnected(e),
            }
            let until = Instant::now() + RETRY;
            while !self.0.stop.load(Ordering::Acquire)
                && !self.0.changed.load(Ordering::Acquire)
                && Instant::now() < until
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn disconnected(&self, why: String) {
        let mut s = self.state();
        let was = s.connected || s.error.as_deref() != Some(&why);
        s.connected = false;
        s.error = Some(why.clone());
        drop(s);
        if was {
            tracing::warn!(
                "serial console: {why}; retrying every {} s",
                RETRY.as_secs()
            );
            self.notify(Notice::Disconnected(why));
        }
    }
}
