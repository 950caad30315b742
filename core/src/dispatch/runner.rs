//! One thread per SLP, on which all of that SLP's code runs.
//!
//! Plugin code must never run on the daemon's tokio workers (DESIGN.md "Where plugin code
//! runs"): a plugin that blocks would stall every connection. The runner owns the SLP and
//! its instances, calls them one event at a time, keeps their timers, and catches panics.
//! What an instance does during one event goes back to the node as one batch of
//! [`Action`]s, so the stack sees "answered the last request, then started a new dialog"
//! as one step (see `Stack::handle_slp`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jsipd_plugin_api::jsip::Message;
use jsipd_plugin_api::slp::{Event, Host, Instance, Slp};

use crate::jsip::{Action, InstanceId};

/// What the node tells a runner.
// Most values carry a `Message` (a few hundred bytes); boxing it would cost an
// allocation per message to shrink the rare small variants.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    Event {
        instance: InstanceId,
        event: Event,
    },
    /// The stack is done with this instance: drop it.
    Ended {
        instance: InstanceId,
    },
    Reload,
}

/// What a runner tells the node.
#[derive(Debug)]
pub enum Report {
    Actions {
        instance: InstanceId,
        actions: Vec<Action>,
    },
    /// The instance panicked; it has been dropped.
    Failed { instance: InstanceId },
}

/// Where reports go; the node passes a closure that feeds its input channel.
pub type ReportSink = Box<dyn Fn(Report) + Send>;

/// How much an SLP (generation) is used, for the listings: kept by its runner.
#[derive(Debug, Default)]
pub struct Usage {
    /// Instances alive now.
    pub using: AtomicU64,
    /// Instances that have ended.
    pub used: AtomicU64,
    /// Calls into the SLP that panicked.
    pub panics: AtomicU64,
}

pub struct Runner {
    tx: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl Runner {
    /// Starts the thread `slp-NAME` that owns `slp`.
    pub fn spawn(
        name: &str,
        slp: Box<dyn Slp>,
        usage: Arc<Usage>,
        report: ReportSink,
    ) -> std::io::Result<Runner> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("slp-{name}"))
            .spawn({
                let name = name.to_string();
                move || run(name, slp, rx, report, usage)
            })?;
        Ok(Runner {
            tx,
            thread: Some(thread),
        })
    }

    pub fn send(&self, cmd: Command) {
        // A runner only stops when this handle is dropped, so sending cannot fail
        // while we hold it; ignore the impossible error rather than panic.
        let _ = self.tx.send(cmd);
    }
}

impl Drop for Runner {
    /// Closing the channel ends the thread after it drops every instance and calls
    /// `on_unload`; joining here means nothing of the SLP runs after this returns.
    fn drop(&mut self) {
        let (dead_tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, dead_tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    name: String,
    mut slp: Box<dyn Slp>,
    rx: mpsc::Receiver<Command>,
    report: ReportSink,
    usage: Arc<Usage>,
) {
    let mut instances: HashMap<InstanceId, Box<dyn Instance>> = HashMap::new();
    let mut timers: BinaryHeap<Reverse<(Instant, u64, InstanceId, u64)>> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let cmd = match timers.peek() {
            Some(Reverse((at, ..))) => {
                let wait = at.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(c) => Some(c),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            None => match rx.recv() {
                Ok(c) => Some(c),
                Err(_) => break,
            },
        };
        let (instance, event) = match cmd {
            Some(Command::Event { instance, event }) => (instance, event),
            Some(Command::Ended { instance }) => {
                if let Some(i) = instances.remove(&instance) {
                    usage.used.fetch_add(1, Ordering::Relaxed);
                    if catch_unwind(AssertUnwindSafe(|| drop(i))).is_err() {
                        usage.panics.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            "SLP {name}: instance {instance} panicked while being dropped"
                        );
                    }
                }
                timers.retain(|Reverse((_, _, i, _))| *i != instance);
                usage.using.store(instances.len() as u64, Ordering::Relaxed);
                continue;
            }
            Some(Command::Reload) => {
                if catch_unwind(AssertUnwindSafe(|| slp.on_reload())).is_err() {
                    usage.panics.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("SLP {name}: on_reload panicked");
                }
                continue;
            }
            None => {
                let Some(Reverse((_, _, instance, token))) = timers.pop() else {
                    continue;
                };
                if !instances.contains_key(&instance) {
                    continue;
                }
                (instance, Event::Timer(token))
            }
        };
        let mut host = RunnerHost {
            instance,
            actions: Vec::new(),
            timers: Vec::new(),
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let inst = instances
                .entry(instance)
                .or_insert_with(|| slp.new_instance());
            inst.on_event(event, &mut host);
        }));
        usage.using.store(instances.len() as u64, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                for (after, token) in host.timers {
                    seq += 1;
                    timers.push(Reverse((Instant::now() + after, seq, instance, token)));
                }
                if !host.actions.is_empty() {
                    report(Report::Actions {
                        instance,
                        actions: host.actions,
                    });
                }
            }
            Err(panic) => {
                let what = panic_message(&panic);
                tracing::error!("SLP {name}: instance {instance} panicked: {what}");
                usage.panics.fetch_add(1, Ordering::Relaxed);
                if let Some(i) = instances.remove(&instance) {
                    usage.used.fetch_add(1, Ordering::Relaxed);
                    let _ = catch_unwind(AssertUnwindSafe(|| drop(i)));
                }
                timers.retain(|Reverse((_, _, i, _))| *i != instance);
                usage.using.store(instances.len() as u64, Ordering::Relaxed);
                report(Report::Failed { instance });
            }
        }
    }
    for (_, i) in instances.drain() {
        usage.used.fetch_add(1, Ordering::Relaxed);
        let _ = catch_unwind(AssertUnwindSafe(|| drop(i)));
    }
    usage.using.store(0, Ordering::Relaxed);
    if catch_unwind(AssertUnwindSafe(|| slp.on_unload())).is_err() {
        usage.panics.fetch_add(1, Ordering::Relaxed);
        tracing::error!("SLP {name}: on_unload panicked");
    }
    // The SLP is dropped here, on its own thread, before the thread ends.
    if catch_unwind(AssertUnwindSafe(|| drop(slp))).is_err() {
        tracing::error!("SLP {name}: panicked while being dropped");
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".into()
    }
}

/// Process-unique identifiers: a random prefix chosen at start, then a counter, so IDs
/// from two runs of the daemon (or two nodes) do not collide and are cheap to make.
fn unique_id(kind: &str) -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{kind}{prefix}-{n}")
}

struct RunnerHost {
    instance: InstanceId,
    actions: Vec<Action>,
    timers: Vec<(Duration, u64)>,
}

impl Host for RunnerHost {
    fn instance_id(&self) -> u64 {
        self.instance
    }

    fn send(&mut self, message: Message) {
        self.actions.push(Action::Send(message));
    }

    fn new_dialogue_id(&mut self) -> String {
        unique_id("d")
    }

    fn relid(&mut self) -> String {
        let id = unique_id("r");
        self.actions.push(Action::Relid(id.clone()));
        id
    }

    fn end(&mut self) {
        self.actions.push(Action::End);
    }

    fn set_timer(&mut self, after: Duration, token: u64) {
        self.timers.push((after, token));
    }
}
