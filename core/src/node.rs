//! The node: the JSIP stack, the connection registry and the SLP runners behind one
//! lock, and the task that moves everything but frames between them.
//!
//! A message's path: a socket task (`transport::ws`) parses a frame and hands it to the
//! node with [`NodeHandle::frame`], which handles it at once, on the socket's own task
//! (a turn of its own), when the node's lock is free, and else queues it for the node
//! task, in order; the [`Stack`] decides; its outputs go
//! to a name's queue (and from there to that name's socket task), or to an SLP runner
//! thread (`dispatch::runner`), whose answers come back as [`Input::Slp`]. An SLP that
//! never blocks has an inline runner instead: it is called within the turn, and its
//! answers go straight back to the stack, saving both thread wake-ups. A message for the
//! very socket whose frame is being handled, whose queue is empty, is not queued but
//! handed back to it to write (the echo of a request costs no task wake-up at all).
//!
//! Everything else (runner reports, timers, sockets coming and going, loads) reaches
//! the node task as an [`Input`], and it handles those in turns under the same lock.
//! The lock is a plain mutex held only for CPU work, never across an await; and
//! because the node only ever `try_send`s into a per-name bounded queue, a slow peer
//! cannot hold it up.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, Weak};
use std::time::Instant;

use jsipd_plugin_api::jsip::{Message, Method, Uri};
use serde_json::{json, Value};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::dispatch::runner::{Command, Report, Runner, Usage};
use crate::hash::ShortMap;
use crate::jsip::{Output, PeerName, Stack, StackConfig};
use crate::plugins::image::Image;
use crate::plugins::{refuse, GenState, Generation, Refusal};
use crate::stats::JsipStats;
use crate::transport::dial;
use crate::transport::registry::{Outbox, Queued, Registry, Replies, Send, SocketFlags};
use crate::transport::ws::{ConnId, SocketParams};
use jsipd_plugin_api::slp::Slp;

/// Everything the node reacts to.
// Most values carry a `Message` (a few hundred bytes); boxing it would cost an
// allocation per message to shrink the rare small variants.
#[allow(clippy::large_enum_variant)]
pub enum Input {
    /// A valid message from the socket registered as `name`, when its task could not
    /// take the node's lock at once (see [`NodeHandle::frame`]).
    /// Boxed: every input is as large as the largest variant, and a `Message` would
    /// make each `Connected` carry some 400 bytes it does not use (1 KiB more per idle
    /// connection, measured).
    Frame {
        name: PeerName,
        msg: Box<Message>,
        flags: Arc<SocketFlags>,
    },
    Connected {
        name: PeerName,
        conn: ConnId,
        remote: String,
        replaced: CancellationToken,
        flags: Arc<SocketFlags>,
        reply: oneshot::Sender<Arc<tokio::sync::Mutex<Outbox>>>,
    },
    /// An operator closes `name`'s socket; the reply says whether it had one.
    Disconnect {
        name: PeerName,
        reply: oneshot::Sender<bool>,
    },
    /// The signed-in people connected now: user and tabs.
    People(oneshot::Sender<Vec<(String, usize)>>),
    Disconnected {
        name: PeerName,
        conn: ConnId,
    },
    /// The reconnect window of `name` (as of `epoch`) is over.
    WindowExpired {
        name: PeerName,
        epoch: u64,
    },
    /// Dialing `name` failed for good.
    DialFailed {
        name: PeerName,
        error: String,
    },
    /// What one SLP runner did since it last reported, in order.
    Slp(Vec<Report>),
    Snapshot(oneshot::Sender<Value>),
    Reconfigure(Arc<Config>),
    /// A new generation of SLP `name` (from `plugins`).
    LoadSlp {
        name: String,
        generation: Arc<Generation>,
        slp: Box<dyn Slp>,
        image: Arc<Image>,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    /// No new dialogs for SLP `name`; its generation drains.
    UnloadSlp {
        name: String,
        reply: oneshot::Sender<Result<Arc<Generation>, Refusal>>,
    },
    /// The drain_timeout of the SLP generation `key` ran out.
    DrainExpired {
        key: Arc<str>,
    },
}

/// How other tasks talk to the node.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Input>,
    shared: Arc<Shared>,
}

/// The node's state, and how an inline turn wakes the node task.
struct Shared {
    node: Mutex<Node>,
    /// Told when a turn on a socket's task left a deadline earlier than the one the node
    /// task's timer waits for (or it waits for none), so that it arms its timer anew.
    rearm: tokio::sync::Notify,
}

impl Shared {
    /// The node, locked. A panic under the lock (a bug in the stack: SLP panics are
    /// caught per instance) must not take every later message down with it, so a
    /// poisoned lock is taken as it is.
    fn lock(&self) -> MutexGuard<'_, Node> {
        self.node.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What became of a frame given to [`NodeHandle::frame`].
pub enum Framed {
    /// Handled at once: the messages for this same socket, to write now, in order.
    Handled(Replies),
    /// In the node task's queue.
    Queued,
    /// The node task's queue is full: wait with [`NodeHandle::backlog`]. Boxed: the
    /// socket's task holds it across that wait.
    Backlog(Box<Input>),
}

/// The node task: [`NodeTask::run`] it on the daemon's task tracker.
pub struct NodeTask {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Input>,
}

impl NodeHandle {
    /// Registers a socket under `name`; `None` when the node has stopped.
    pub async fn connected(
        &self,
        name: PeerName,
        conn: ConnId,
        remote: String,
        replaced: CancellationToken,
        flags: Arc<SocketFlags>,
    ) -> Option<Arc<tokio::sync::Mutex<Outbox>>> {
        let (reply, rx) = oneshot::channel();
        let input = Input::Connected {
            name,
            conn,
            remote,
            replaced,
            flags,
            reply,
        };
        self.tx.send(input).await.ok()?;
        rx.await.ok()
    }

    /// Closes `name`'s socket (4001); `None` when the node has stopped.
    pub async fn disconnect(&self, name: PeerName) -> Option<bool> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::Disconnect { name, reply }).await.ok()?;
        rx.await.ok()
    }

    /// Who is signed in with a socket now (user, tabs); `None` when the node has stopped.
    pub async fn people(&self) -> Option<Vec<(String, usize)>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::People(reply)).await.ok()?;
        rx.await.ok()
    }

    /// Handles a message from socket `conn` of `name`: now, on the calling task, if the
    /// node's lock is free, else through the node task's queue.
    ///
    /// Now: the stack, the SLPs that never block and the queues, all in one turn under
    /// the lock. What that turn sent to this same socket while its queue was empty comes
    /// back (`Handled`) instead of being queued, for the caller to write before it reads
    /// its queue (the order it was sent in). That saves two task wake-ups and a channel
    /// per message (callgrind: about 5,000 instructions per round trip).
    ///
    /// When the lock is taken (another socket's turn, or the node task's), the frame goes
    /// to the node task, which handles what is queued in turns of up to 256 inputs: a
    /// socket's task never waits for the lock (only the node task does, for the turn
    /// in progress), and under load (a chat room's fan-out,
    /// where every member answers every relay) the frames are handled in batches again.
    /// Waiting for the lock instead cost a chat room of 100 a tenth of its relays and
    /// doubled its p99. Once a frame of this socket is queued, its next ones follow it
    /// there until the node task has handled it (`SocketFlags::frames_queued`), so none
    /// overtakes another. A full queue gives the frame back (`Backlog`), for the caller
    /// to wait with.
    ///
    /// `now` is when the frame was read: the socket asked the clock already.
    pub fn frame(
        &self,
        name: &PeerName,
        flags: &Arc<SocketFlags>,
        queue: &tokio::sync::mpsc::Receiver<Queued>,
        msg: Box<Message>,
        now: Instant,
    ) -> Framed {
        if flags.frames_queued.load(Ordering::Acquire) == 0 {
            let node = match self.shared.node.try_lock() {
                Ok(node) => Some(node),
                Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(mut node) = node {
                let (replies, rearm) = node.frame(name, flags, queue, msg, now);
                drop(node);
                if rearm {
                    self.shared.rearm.notify_one();
                }
                return Framed::Handled(replies);
            }
        }
        flags.frames_queued.fetch_add(1, Ordering::AcqRel);
        let input = Input::Frame {
            name: name.clone(),
            msg,
            flags: flags.clone(),
        };
        match self.tx.try_send(input) {
            Ok(()) => Framed::Queued,
            Err(TrySendError::Full(input) | TrySendError::Closed(input)) => {
                Framed::Backlog(Box::new(input))
            }
        }
    }

    /// Waits until the node task's queue takes a frame [`NodeHandle::frame`] gave back.
    pub async fn backlog(&self, input: Box<Input>) {
        let _ = self.tx.send(*input).await;
    }

    /// The compiled-in SLPs and their usage, for `plugins`' listing.
    pub fn builtin_usage(&self) -> Vec<(String, Arc<Usage>)> {
        self.shared.lock().builtin_usage.clone()
    }

    pub async fn disconnected(&self, name: PeerName, conn: ConnId) {
        let _ = self.tx.send(Input::Disconnected { name, conn }).await;
    }

    pub async fn input(&self, input: Input) {
        let _ = self.tx.send(input).await;
    }

    /// The `/runtime/v1/jstack` view.
    pub async fn snapshot(&self) -> Option<Value> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::Snapshot(reply)).await.ok()?;
        rx.await.ok()
    }

    pub fn reconfigure(&self, config: Arc<Config>) {
        let _ = self.tx.try_send(Input::Reconfigure(config));
    }

    /// Makes `generation` the one new dialogs for `name` go to; the previous one drains.
    pub async fn load_slp(
        &self,
        name: &str,
        generation: Arc<Generation>,
        slp: Box<dyn Slp>,
        image: Arc<Image>,
    ) -> Result<(), Refusal> {
        let (reply, rx) = oneshot::channel();
        let input = Input::LoadSlp {
            name: name.to_string(),
            generation,
            slp,
            image,
            reply,
        };
        if let Err(mpsc::error::SendError(Input::LoadSlp { slp, image, .. })) =
            self.tx.send(input).await
        {
            // The node has stopped: unload off the async workers.
            let _ = std::thread::spawn(move || {
                drop(slp);
                drop(image);
            });
            return Err(refuse(503, "the daemon is stopping"));
        }
        rx.await
            .map_err(|_| refuse(503, "the daemon is stopping"))?
    }

    /// Stops new dialogs for `name`; its generation drains and retires.
    pub async fn unload_slp(&self, name: &str) -> Result<Arc<Generation>, Refusal> {
        let (reply, rx) = oneshot::channel();
        let input = Input::UnloadSlp {
            name: name.to_string(),
            reply,
        };
        self.tx
            .send(input)
            .await
            .map_err(|_| refuse(503, "the daemon is stopping"))?;
        rx.await
            .map_err(|_| refuse(503, "the daemon is stopping"))?
    }
}

/// An SLP as the node runs it: its runner (a thread, or inline) and, for a plugin, its
/// generation and the image that must outlive the runner.
struct SlpRun {
    runner: Runner,
    plugin: Option<(Arc<Generation>, Arc<Image>)>,
    /// A runner thread's commands of this turn, sent as one batch when the turn ends
    /// ([`Node::flush`]); an inline runner's run as they come ([`SlpRun::command`]).
    pending: Vec<Command>,
}

impl SlpRun {
    fn new(runner: Runner, plugin: Option<(Arc<Generation>, Arc<Image>)>) -> SlpRun {
        SlpRun {
            runner,
            plugin,
            pending: Vec::new(),
        }
    }

    /// A plugin's generation that is being unloaded or replaced.
    fn is_draining(&self) -> bool {
        matches!(&self.plugin, Some((g, _)) if g.state() == GenState::Draining)
    }

    /// Runs `cmd` now on an inline runner, adding what its instance did to `reports`,
    /// or keeps it for a runner thread's batch.
    fn command(&mut self, cmd: Command, reports: &mut Vec<Report>) {
        if let Some(cmd) = self.runner.run_inline(cmd, reports) {
            self.pending.push(cmd);
        }
    }

    /// Sends this turn's commands; an inline runner has run them, and returns what its
    /// instances did.
    fn send_pending(&mut self, reports: &mut Vec<Report>) {
        if !self.pending.is_empty() {
            self.runner.send(&mut self.pending, reports);
        }
    }
}

/// How many inputs may wait for the node before socket readers wait too.
const INPUT_QUEUE: usize = 4096;

pub struct Node {
    stack: Stack,
    registry: Registry,
    /// By stack key: the SLP name for compiled-in ones, `NAME#GENERATION` for plugins.
    /// The stack is given the same `Arc`s, so the keys it hands back are found by
    /// pointer.
    runners: ShortMap<SlpRun>,
    /// Usage of the compiled-in SLPs, for the listings.
    builtin_usage: Vec<(String, Arc<Usage>)>,
    config: Arc<Config>,
    realm: String,
    /// The node task's queue, for what the node starts (timers, dials, runners).
    tx: mpsc::Sender<Input>,
    /// For handles to give to sockets the node dials. Weak: the node is inside it.
    shared: Weak<Shared>,
    /// The deadline the node task's timer is armed for, if any.
    armed: Option<Instant>,
    /// Empty between turns; `flush` reuses its buffer.
    spare_reports: Vec<Report>,
    stats: Arc<JsipStats>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

fn stack_config(c: &Config, realm: &str) -> StackConfig {
    StackConfig {
        transtimer: c.stack.transtimer,
        prtimer: c.stack.prtimer,
        sessiontimer: c.stack.sessiontimer,
        realm: realm.to_string(),
    }
}

/// `[JSIPStack] realm`, or the host name when empty.
fn realm(c: &Config) -> String {
    if !c.stack.realm.is_empty() {
        return c.stack.realm.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "jsipd".into())
}

impl Node {
    /// Creates the node and starts the compiled-in SLPs; run the [`NodeTask`] on `tasks`.
    pub fn start(
        config: Arc<Config>,
        stats: Arc<JsipStats>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> anyhow::Result<(NodeHandle, NodeTask)> {
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        let mut started = Ok(());
        let shared = Arc::new_cyclic(|weak| {
            let mut node = Node::new(config, stats, tasks, shutdown, tx.clone(), weak.clone());
            started = node.start_builtins();
            Shared {
                node: Mutex::new(node),
                rearm: tokio::sync::Notify::new(),
            }
        });
        started?;
        let handle = NodeHandle {
            tx,
            shared: shared.clone(),
        };
        Ok((handle, NodeTask { shared, rx }))
    }

    fn new(
        config: Arc<Config>,
        stats: Arc<JsipStats>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
        tx: mpsc::Sender<Input>,
        shared: Weak<Shared>,
    ) -> Node {
        let realm = realm(&config);
        Node {
            stack: Stack::new(stack_config(&config, &realm)),
            registry: Registry::new(config.stack.qsize),
            runners: ShortMap::default(),
            builtin_usage: Vec::new(),
            config,
            realm,
            tx,
            shared,
            armed: None,
            spare_reports: Vec::new(),
            stats,
            tasks,
            shutdown,
        }
    }

    fn start_builtins(&mut self) -> anyhow::Result<()> {
        let config = self.config.clone();
        for name in &config.stack.builtin_slps {
            let slp = crate::slps::make(name).expect("config checked the name");
            let dialog_events = slp.wants_dialog_events();
            let usage = Arc::new(Usage::default());
            let runner = self.spawn_runner(name, slp, usage.clone())?;
            let key: Arc<str> = name.as_str().into();
            self.runners.insert(key.clone(), SlpRun::new(runner, None));
            self.stack.add_slp(name, key, dialog_events);
            self.builtin_usage.push((name.clone(), usage));
            tracing::info!("SLP {name} loaded (compiled in)");
        }
        Ok(())
    }

    /// A handle for a socket the node dials (the node lives while its task runs).
    fn handle(&self) -> NodeHandle {
        NodeHandle {
            tx: self.tx.clone(),
            shared: self.shared.upgrade().expect("the node is alive"),
        }
    }

    /// One frame's turn, for [`NodeHandle::frame`]: what went straight back to `conn`,
    /// and whether the node task must arm its timer anew.
    fn frame(
        &mut self,
        name: &PeerName,
        flags: &SocketFlags,
        queue: &tokio::sync::mpsc::Receiver<Queued>,
        msg: Box<Message>,
        now: Instant,
    ) -> (Replies, bool) {
        // Both asked with the lock held: only under it is a message queued or the name
        // given to another socket.
        let open = queue.is_empty() && !flags.closing.load(Ordering::Acquire);
        self.registry.reply_directly_to(name, open);
        self.stack.handle_peer(now, name.clone(), msg);
        self.flush(now);
        let replies = self.registry.take_direct();
        // The node task sleeps until `armed`; a later deadline it meets when it wakes
        // then, so only an earlier one (or one when it sleeps without a deadline) needs
        // it woken. Timers are set seconds ahead, so this is rare.
        let rearm = match (self.next_deadline(), self.armed) {
            (Some(d), Some(armed)) => d < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        (replies, rearm)
    }

    fn spawn_runner(
        &self,
        key: &str,
        slp: Box<dyn Slp>,
        usage: Arc<Usage>,
    ) -> std::io::Result<Runner> {
        if slp.never_blocks() {
            tracing::info!("SLP {key} never blocks: it runs inline, under the node's lock");
            return Ok(Runner::inline(key, slp, usage));
        }
        let tx = self.tx.clone();
        Runner::spawn(
            key,
            slp,
            usage,
            Box::new(move |reports| {
                // Runner threads are not async; waiting here is backpressure on the SLP.
                let _ = tx.blocking_send(Input::Slp(reports));
            }),
        )
    }

    fn load_slp(
        &mut self,
        name: String,
        generation: Arc<Generation>,
        slp: Box<dyn Slp>,
        image: Arc<Image>,
    ) -> Result<(), Refusal> {
        let key = generation.key();
        // Read from the image (the symbol it exports), not a call into the plugin.
        let dialog_events = slp.wants_dialog_events();
        let runner = self
            .spawn_runner(&key, slp, generation.usage.clone())
            .map_err(|e| refuse(503, format!("cannot start the SLP's thread: {e}")))?;
        let key: Arc<str> = key.into();
        self.runners.insert(
            key.clone(),
            SlpRun::new(runner, Some((generation.clone(), image))),
        );
        let previous = self.stack.remove_slp(&name);
        self.stack.add_slp(&name, key, dialog_events);
        tracing::info!("SLP {name} generation {} serves new dialogs", generation.id);
        if let Some(old) = previous {
            self.drain(old);
        }
        Ok(())
    }

    /// Starts draining generation `key`: no new dialogs (already), the on-load and
    /// relid instances unpinned, and a deadline.
    fn drain(&mut self, key: Arc<str>) {
        let Some(SlpRun {
            plugin: Some((generation, _)),
            ..
        }) = self.runners.get(&key)
        else {
            return;
        };
        generation.set_state(GenState::Draining);
        tracing::info!(
            "SLP {} generation {} draining ({} instances)",
            generation.name,
            generation.id,
            self.stack.instances_of(&key)
        );
        self.stack.drain(&key);
        let tx = self.tx.clone();
        let timeout = self.config.plugins.drain_timeout;
        let shutdown = self.shutdown.clone();
        let expired = key.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {
                    let _ = tx.send(Input::DrainExpired { key: expired }).await;
                }
                _ = shutdown.cancelled() => {}
            }
        });
        self.retire_if_drained(&key);
    }

    fn retire_if_drained(&mut self, key: &Arc<str>) {
        let draining = self.runners.get(key).is_some_and(SlpRun::is_draining);
        if !draining || self.stack.instances_of(key) > 0 {
            return;
        }
        if let Some(mut run) = self.runners.remove(key) {
            // Its last `Ended` commands go before the runner is retired (they report
            // nothing).
            run.send_pending(&mut Vec::new());
            let SlpRun {
                runner,
                plugin: Some((generation, image)),
                ..
            } = run
            else {
                return;
            };
            if generation.start_retiring() {
                crate::plugins::retire_slp(generation, runner, image);
            }
        }
    }

    /// Inputs taken per turn: the node handles what is queued (up to this many) and then
    /// flushes once, so one wake-up of a runner or a socket carries many messages.
    const TURN: usize = 256;
}

impl NodeTask {
    pub async fn run(self) {
        let NodeTask { shared, mut rx } = self;
        shared.lock().flush(Instant::now());
        // One timer and one cancellation future for the node's whole life: making them
        // anew each turn would register and cancel a timer per message.
        let shutdown = shared.lock().shutdown.clone();
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        let timer = tokio::time::sleep(std::time::Duration::ZERO);
        tokio::pin!(timer);
        // One timer for every socket's pings (`Registry::ping_all`), at the interval
        // the config says now (a reload changes it from the next ping on).
        let ping_every = || shared.lock().config.rtc.ping_interval;
        let ping = tokio::time::sleep(ping_every());
        tokio::pin!(ping);
        let mut inputs = Vec::with_capacity(Node::TURN);
        loop {
            // Armed under the lock, so a turn on a socket's task sees what the timer
            // waits for, and wakes this task through `rearm` if that is too late.
            let armed = {
                let mut node = shared.lock();
                let deadline = node.next_deadline();
                if deadline != node.armed {
                    if let Some(d) = deadline {
                        timer.as_mut().reset(tokio::time::Instant::from_std(d));
                    }
                    node.armed = deadline;
                }
                deadline.is_some()
            };
            tokio::select! {
                n = rx.recv_many(&mut inputs, Node::TURN) => {
                    if n == 0 {
                        break;
                    }
                    let mut node = shared.lock();
                    for input in inputs.drain(..) {
                        node.handle_input(input);
                    }
                    node.flush(Instant::now());
                }
                _ = &mut timer, if armed => {
                    let mut node = shared.lock();
                    node.armed = None;
                    let now = Instant::now();
                    node.stack.handle_timeout(now);
                    let reports: Vec<Report> = node
                        .runners
                        .values_mut()
                        .flat_map(|r| r.runner.fire_timers(now))
                        .collect();
                    node.handle_reports(now, reports);
                    node.flush(now);
                }
                _ = &mut ping => {
                    shared.lock().registry.ping_all();
                    ping.as_mut().reset(tokio::time::Instant::now() + ping_every());
                }
                _ = shared.rearm.notified() => {}
                _ = &mut stopping => {
                    // The sockets' tokens went with the daemon's; they do not wait
                    // on them, so they are told.
                    shared.lock().registry.close_all();
                    break;
                }
            }
        }
        // Joining runner threads blocks, and dropping the last reference to an image
        // runs plugin code: both on a thread of their own, off the async workers.
        let runners = std::mem::take(&mut shared.lock().runners);
        let (done, wait) = oneshot::channel::<()>();
        let _ = std::thread::Builder::new()
            .name("unload-slps".into())
            .spawn(move || {
                drop(runners);
                let _ = done.send(());
            });
        let _ = wait.await;
    }
}

impl Node {
    fn handle_input(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Frame { name, msg, flags } => {
                self.stack.handle_peer(now, name, msg);
                // Under the lock: the socket's next frame may be handled on its own task
                // only once the node's lock is free again, so after this turn's flush.
                flags.frames_queued.fetch_sub(1, Ordering::AcqRel);
            }
            Input::Connected {
                name,
                conn,
                remote,
                replaced,
                flags,
                reply,
            } => {
                let outbox = self.registry.attach(&name, conn, remote, replaced, flags);
                let _ = reply.send(outbox);
            }
            Input::Disconnect { name, reply } => {
                let _ = reply.send(self.registry.disconnect(&name));
            }
            Input::People(reply) => {
                let _ = reply.send(self.registry.people());
            }
            Input::Disconnected { name, conn } => {
                if let Some(epoch) = self.registry.detach(&name, conn) {
                    self.stack.peer_disconnected(&name);
                    let tx = self.tx.clone();
                    let window = self.config.rtc.reconnect_window;
                    let shutdown = self.shutdown.clone();
                    self.tasks.spawn(async move {
                        tokio::select! {
                            _ = tokio::time::sleep(window) => {
                                let _ = tx.send(Input::WindowExpired { name, epoch }).await;
                            }
                            _ = shutdown.cancelled() => {}
                        }
                    });
                }
            }
            Input::WindowExpired { name, epoch } => {
                let left = self.registry.expire(&name, epoch);
                let reason = format!(
                    "{name} went away and did not come back within reconnect_window ({:?})",
                    self.config.rtc.reconnect_window
                );
                self.unavailable(&name, left, 480, &reason);
            }
            Input::DialFailed { name, error } => {
                let left = self.registry.remove(&name);
                self.unavailable(&name, left, 503, &error);
            }
            Input::Slp(reports) => self.handle_reports(now, reports),
            Input::Snapshot(reply) => {
                let _ = reply.send(self.snapshot(now));
            }
            Input::LoadSlp {
                name,
                generation,
                slp,
                image,
                reply,
            } => {
                let _ = reply.send(self.load_slp(name, generation, slp, image));
            }
            Input::UnloadSlp { name, reply } => {
                let found =
                    self.stack
                        .remove_slp(&name)
                        .and_then(|key| match self.runners.get(&key) {
                            Some(SlpRun {
                                plugin: Some((g, _)),
                                ..
                            }) => Some((key, g.clone())),
                            _ => None,
                        });
                match found {
                    Some((key, generation)) => {
                        self.drain(key);
                        let _ = reply.send(Ok(generation));
                    }
                    None => {
                        let _ =
                            reply.send(Err(refuse(404, format!("no SLP named {name} is loaded"))));
                    }
                }
            }
            Input::DrainExpired { key } => {
                let n = self.stack.instances_of(&key);
                if n > 0 {
                    tracing::warn!(
                        "SLP generation {key}: drain_timeout reached with {n} instances; ending them"
                    );
                    self.stack
                        .end_all(now, &key, "the SLP was unloaded (drain_timeout)");
                }
                self.retire_if_drained(&key);
            }
            Input::Reconfigure(config) => {
                self.realm = realm(&config);
                self.stack.set_config(stack_config(&config, &self.realm));
                self.registry.set_qsize(config.stack.qsize);
                if config.stack.builtin_slps != self.config.stack.builtin_slps {
                    tracing::warn!(
                        "[JSIPStack] builtin_slps changed; it takes effect after a restart"
                    );
                }
                self.config = config;
                for run in self.runners.values_mut() {
                    run.pending.push(Command::Reload);
                }
            }
        }
    }

    /// What SLP instances did, for the stack.
    fn handle_reports(&mut self, now: Instant, reports: impl IntoIterator<Item = Report>) {
        for report in reports {
            match report {
                Report::Actions { instance, actions } => {
                    self.stack.handle_slp(now, instance, actions)
                }
                Report::Failed { instance } => self.stack.handle_slp_failure(now, instance),
            }
        }
    }

    /// The next moment the node task must wake: the stack's next deadline, or an inline
    /// SLP's next timer.
    fn next_deadline(&mut self) -> Option<Instant> {
        self.runners
            .values()
            .filter_map(|r| r.runner.next_timer())
            .chain(self.stack.next_deadline())
            .min()
    }

    /// Carries out everything the stack asked for, ending the turn: each runner thread
    /// with work gets it as one batch. Inline runners answer each event as it comes
    /// out of the stack, so their reports go back into the stack and the turn goes on
    /// until nothing is left. `now` is the turn's time, which their actions are applied
    /// at: not a clock read per turn more.
    fn flush(&mut self, now: Instant) {
        // One list for every turn's reports, emptied and kept, not allocated anew.
        let mut reports = std::mem::take(&mut self.spare_reports);
        loop {
            self.flush_outputs(&mut reports);
            for run in self.runners.values_mut() {
                run.send_pending(&mut reports);
            }
            if reports.is_empty() {
                break;
            }
            self.handle_reports(now, reports.drain(..));
        }
        self.spare_reports = reports;
    }

    /// Hands the stack's outputs on: to peers, and to the runners ([`SlpRun::command`]),
    /// whose inline ones add what their instances did to `reports`.
    fn flush_outputs(&mut self, reports: &mut Vec<Report>) {
        while let Some(out) = self.stack.poll_output() {
            match out {
                Output::ToPeer { name, msg } => self.send(name, msg),
                Output::ToSlp {
                    slp,
                    instance,
                    event,
                } => match self.runners.get_mut(&slp) {
                    Some(r) => r.command(Command::Event { instance, event }, reports),
                    None => tracing::warn!("event for SLP {slp}, which is not loaded"),
                },
                Output::InstanceEnded { slp, instance } => {
                    // One lookup for the command and the question, per ended instance.
                    let draining = self.runners.get_mut(&slp).is_some_and(|r| {
                        r.command(Command::Ended { instance }, reports);
                        r.is_draining()
                    });
                    if draining {
                        self.retire_if_drained(&slp);
                    }
                }
            }
        }
    }

    /// Queues a message for `name`, dialing it when it is another node we have no
    /// socket to; a request that cannot be queued is answered toward its sender.
    fn send(&mut self, name: PeerName, msg: Arc<Message>) {
        match self.registry.send(&name, msg) {
            Send::Queued => {}
            Send::Full(msg) => {
                let reason = format!(
                    "the queue for {name} is full ({} messages)",
                    self.config.stack.qsize
                );
                self.unavailable(&name, vec![msg], 480, &reason);
            }
            Send::Unknown(msg) => match dial_target(&name) {
                Some(uri) => {
                    let url = format!(
                        "ws://{}:{}{}?userid={}",
                        uri.host,
                        uri.port.unwrap_or(dial::DEFAULT_PORT),
                        self.config.rtc_location,
                        self.realm
                    );
                    self.registry.dialing(&name);
                    let _ = self.registry.send(&name, msg);
                    dial::spawn(
                        dial::Dial {
                            name,
                            url,
                            conntimeout: self.config.stack.conntimeout,
                            retry: self.config.stack.retry,
                            params: SocketParams {
                                ping_interval: self.config.rtc.ping_interval,
                                max_frame: self.config.rtc.max_frame,
                            },
                        },
                        self.handle(),
                        self.stats.clone(),
                        &self.tasks,
                        self.shutdown.clone(),
                    );
                }
                None => {
                    let reason = format!("nobody named {name} is connected to this node");
                    self.unavailable(&name, vec![msg], 480, &reason);
                }
            },
        }
    }

    /// Answers requests that will never reach `name` with `code`, as if `name` had:
    /// the stack then treats it like any other answer (delivers it to the SLP).
    fn unavailable(&mut self, name: &PeerName, msgs: Vec<Arc<Message>>, code: u16, reason: &str) {
        let now = Instant::now();
        for msg in msgs {
            if !msg.is_request() || msg.method() == Some(Method::Ack) {
                continue;
            }
            JsipStats::count(&self.stats.unavailable);
            let mut r = msg.response(code);
            r.reason = Some(reason.to_string());
            self.stack.handle_peer(now, name.clone(), r);
        }
    }

    fn snapshot(&mut self, now: Instant) -> Value {
        let c = self.stack.counters;
        json!({
            "realm": self.realm,
            "connections": self.registry.view(),
            "dialogs": self.stack.dialogs_view(now),
            "transactions": self.stack.transactions_view(now),
            "slps": self.runners.keys().map(|k| json!({"key": k.as_ref(), "instances": self.stack.instances_of(k)})).collect::<Vec<_>>(),
            "counters": {
                "dialogs_started": c.dialogs_started,
                "transactions_timed_out": c.transactions_timed_out,
                "dropped": c.dropped,
                "instances_failed": c.instances_failed,
                "timers": self.stack.timer_count(),
            },
        })
    }
}

/// The address to dial for a name with no socket: only names that look like another
/// node (an explicit port, a dotted host name or an IP). A bare userid that is not
/// connected is just absent.
fn dial_target(name: &str) -> Option<Uri> {
    let uri = Uri::parse(name).ok()?;
    let looks_like_node = uri.port.is_some()
        || uri.host.contains('.')
        || uri.host.starts_with('[')
        || uri.host == "localhost";
    looks_like_node.then_some(uri)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn message(id: &str) -> Message {
        Message::parse(&format!(
            r#"{{"Type":"MESSAGE","Request-URI":"t@echo","From":"ada","To":"t@echo","DialogueID":"{id}","CSeq":1}}"#
        ))
        .unwrap()
    }

    /// A frame is handled on the caller's task when the node's lock is free; when it is
    /// not, the frame goes to the node task, and the socket's next frames follow it
    /// there until it is handled, even with the lock free again: answers come in the
    /// order of the requests. (A current-thread runtime: the node task runs only when
    /// the test waits, so "not handled yet" is certain.)
    #[tokio::test]
    async fn a_frame_waits_its_turn_behind_one_the_node_task_has_not_handled() {
        let config = Config::from_ini_str(
            "[JSIPStack]\nbuiltin_slps = echo\nrealm = test\n",
            None,
            Path::new("/nonexistent"),
        )
        .unwrap();
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let (node, task) = Node::start(
            Arc::new(config),
            Arc::new(JsipStats::default()),
            tasks.clone(),
            shutdown.clone(),
        )
        .unwrap();
        tasks.spawn(task.run());
        let (name, conn, flags): (PeerName, ConnId, _) =
            ("ada".into(), 7, Arc::new(SocketFlags::default()));
        let outbox = node
            .connected(
                name.clone(),
                conn,
                "test".into(),
                CancellationToken::new(),
                flags.clone(),
            )
            .await
            .unwrap();
        let mut outbox = outbox.lock().await;

        let held = node.shared.lock();
        assert!(matches!(
            node.frame(
                &name,
                &flags,
                &outbox.rx,
                Box::new(message("d1")),
                Instant::now()
            ),
            Framed::Queued
        ));
        drop(held);
        // The lock is free, but d1 is not handled yet: d2 must not overtake it.
        assert!(matches!(
            node.frame(
                &name,
                &flags,
                &outbox.rx,
                Box::new(message("d2")),
                Instant::now()
            ),
            Framed::Queued
        ));
        assert_eq!(flags.frames_queued.load(Ordering::Acquire), 2);
        for id in ["d1", "d2"] {
            let answer = outbox.rx.recv().await.unwrap();
            assert_eq!(
                (answer.code(), answer.dialogue_id.as_str()),
                (Some(200), id)
            );
        }
        assert_eq!(flags.frames_queued.load(Ordering::Acquire), 0);

        // Nothing queued any more: handled here, the answer handed straight back.
        match node.frame(
            &name,
            &flags,
            &outbox.rx,
            Box::new(message("d3")),
            Instant::now(),
        ) {
            Framed::Handled(replies) => {
                assert_eq!(replies.len(), 1);
                assert_eq!(replies[0].dialogue_id, "d3");
            }
            _ => panic!("d3 should have been handled at once"),
        }
        assert!(
            outbox.rx.try_recv().is_err(),
            "nothing went through the queue"
        );
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
    }
}
