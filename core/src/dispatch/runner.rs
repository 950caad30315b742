//! One thread per SLP, on which all of that SLP's code runs.
//!
//! Plugin code must never run on the daemon's tokio workers (DESIGN.md "Where plugin code
//! runs"): a plugin that blocks would stall every connection. The runner owns the SLP and
//! its instances, calls them one event at a time, keeps their timers, and catches panics.
//! What an instance does during one event goes back to the node as one batch of
//! [`Action`]s, so the stack sees "answered the last request, then started a new dialog"
//! as one step (see `Stack::handle_slp`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::hash::{Map, Set};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jsipd_plugin_api::jsip::Message;
use jsipd_plugin_api::slp::{Event, Host, Instance, Slp};

use crate::jsip::{Action, Actions, Delivery, InstanceId};

/// What the node tells a runner.
pub enum Command {
    Event {
        instance: InstanceId,
        event: Delivery,
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
        actions: Actions,
    },
    /// The instance panicked; it has been dropped.
    Failed { instance: InstanceId },
}

/// Where reports go; the node passes a closure that feeds its input channel. Reports
/// come in batches: everything the runner did since it last woke up, so a busy runner
/// wakes the node once per batch rather than once per event.
pub type ReportSink = Box<dyn Fn(Vec<Report>) + Send>;

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

/// Where an SLP's code runs: a thread of its own (the default), or the caller's own
/// thread (the node task) for an SLP that says it never blocks.
pub struct Runner(Kind);

enum Kind {
    Thread {
        tx: mpsc::Sender<Vec<Command>>,
        thread: Option<JoinHandle<()>>,
    },
    /// `None` once unloaded (in `Drop`).
    Inline(Option<RunnerState>),
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
        Ok(Runner(Kind::Thread {
            tx,
            thread: Some(thread),
        }))
    }

    /// Runs `slp` on the caller's thread: each [`Runner::send`] calls it at once and
    /// returns its reports. For SLPs that never block (`Slp::never_blocks`) only; it
    /// saves a thread wake-up each way per message. Dropping it unloads the SLP, so
    /// drop it where plugin code may run (the retire thread).
    pub fn inline(name: &str, slp: Box<dyn Slp>, usage: Arc<Usage>) -> Runner {
        Runner(Kind::Inline(Some(RunnerState::new(
            name.to_string(),
            slp,
            usage,
        ))))
    }

    /// Hands the runner a batch of commands, run in order. The node sends one batch
    /// per turn, so a runner thread is woken once however many events it got. An
    /// inline runner runs them now and returns its reports (a thread's come later,
    /// through its report sink).
    ///
    /// `batch` is left empty and `reports` only grows: an inline runner's turn reuses
    /// both lists' buffers instead of allocating new ones for every message.
    pub fn send(&mut self, batch: &mut Vec<Command>, reports: &mut Vec<Report>) {
        match &mut self.0 {
            // A runner only stops when this handle is dropped, so sending cannot fail
            // while we hold it; ignore the impossible error rather than panic.
            Kind::Thread { tx, .. } => {
                let _ = tx.send(std::mem::take(batch));
            }
            Kind::Inline(Some(state)) => {
                state.run_batch(batch.drain(..));
                reports.append(&mut state.reports);
            }
            Kind::Inline(None) => batch.clear(),
        }
    }

    /// Runs `cmd` now on an inline runner, adding what its instance did to `reports`; a
    /// runner thread's command is given back, for the turn's batch ([`Runner::send`]).
    /// An inline runner is called as each event comes out of the stack, not through a
    /// batch list filled and drained per turn.
    pub fn run_inline(&mut self, cmd: Command, reports: &mut Vec<Report>) -> Option<Command> {
        match &mut self.0 {
            Kind::Thread { .. } => Some(cmd),
            Kind::Inline(Some(state)) => {
                state.run(cmd);
                reports.append(&mut state.reports);
                None
            }
            Kind::Inline(None) => None,
        }
    }

    /// When an inline runner's next timer is due (a thread keeps its own).
    pub fn next_timer(&self) -> Option<Instant> {
        match &self.0 {
            Kind::Inline(Some(state)) => state.timers.peek().map(|Reverse((at, ..))| *at),
            _ => None,
        }
    }

    /// Fires an inline runner's due timers; returns what the instances did.
    pub fn fire_timers(&mut self, now: Instant) -> Vec<Report> {
        match &mut self.0 {
            Kind::Inline(Some(state)) => {
                state.fire_due_timers(now);
                std::mem::take(&mut state.reports)
            }
            _ => Vec::new(),
        }
    }
}

impl Drop for Runner {
    /// A thread: closing the channel ends it after it drops every instance and calls
    /// `on_unload`; joining here means nothing of the SLP runs after this returns.
    /// Inline: the same, here.
    fn drop(&mut self) {
        match &mut self.0 {
            Kind::Thread { tx, thread } => {
                let (dead_tx, _) = mpsc::channel();
                drop(std::mem::replace(tx, dead_tx));
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
            Kind::Inline(state) => {
                if let Some(state) = state.take() {
                    state.unload();
                }
            }
        }
    }
}

fn run(
    name: String,
    slp: Box<dyn Slp>,
    rx: mpsc::Receiver<Vec<Command>>,
    report: ReportSink,
    usage: Arc<Usage>,
) {
    let mut state = RunnerState::new(name, slp, usage);
    loop {
        // Block for the first batch (or the next timer), then take whatever else is
        // already queued without blocking: under load the node sends batch after batch,
        // and one report batch answers all of them.
        let first = match state.timers.peek() {
            Some(Reverse((at, ..))) => {
                let wait = at.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(b) => Some(b),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            None => match rx.recv() {
                Ok(b) => Some(b),
                Err(_) => break,
            },
        };
        let mut closed = false;
        if let Some(batch) = first {
            state.run_batch(batch);
            loop {
                match rx.try_recv() {
                    Ok(batch) => state.run_batch(batch),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        state.fire_due_timers(Instant::now());
        if !state.reports.is_empty() {
            report(std::mem::take(&mut state.reports));
        }
        if closed {
            break;
        }
    }
    state.unload();
}

/// What a runner thread owns: the SLP, its instances and their timers.
struct RunnerState {
    name: String,
    slp: Box<dyn Slp>,
    usage: Arc<Usage>,
    instances: Map<InstanceId, Box<dyn Instance>>,
    /// The instance made last, kept out of `instances` until the next one is made.
    /// Most instances live for one event (an out-of-dialog request's) and end right
    /// after it; this one is neither filed in the map nor looked up there, about 80
    /// instructions a message less under callgrind.
    newest: Option<(InstanceId, Box<dyn Instance>)>,
    /// (due, tie-breaking sequence, instance, token), earliest first.
    timers: BinaryHeap<Reverse<(Instant, u64, InstanceId, u64)>>,
    seq: u64,
    /// Reports not yet sent to the node.
    reports: Vec<Report>,
    /// Instances that panicked, until the stack says they ended: events already queued
    /// for them are dropped rather than making a new instance under the old id.
    failed: Set<InstanceId>,
}

impl RunnerState {
    fn new(name: String, slp: Box<dyn Slp>, usage: Arc<Usage>) -> RunnerState {
        RunnerState {
            name,
            slp,
            usage,
            instances: Map::default(),
            newest: None,
            timers: BinaryHeap::new(),
            seq: 0,
            reports: Vec::new(),
            failed: Set::default(),
        }
    }

    fn run_batch(&mut self, batch: impl IntoIterator<Item = Command>) {
        for cmd in batch {
            self.run(cmd);
        }
    }

    fn run(&mut self, cmd: Command) {
        match cmd {
            Command::Event { instance, event } => self.deliver(instance, event),
            Command::Ended { instance } => {
                self.failed.remove(&instance);
                self.drop_instance(instance);
            }
            Command::Reload => {
                if catch_unwind(AssertUnwindSafe(|| self.slp.on_reload())).is_err() {
                    self.usage.panics.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("SLP {}: on_reload panicked", self.name);
                }
            }
        }
    }

    fn fire_due_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, ..))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, _, instance, token))) = self.timers.pop() else {
                break;
            };
            if self.is_live(instance) {
                self.deliver(instance, Event::Timer(token));
            }
        }
    }

    fn is_newest(&self, instance: InstanceId) -> bool {
        self.newest.as_ref().is_some_and(|(id, _)| *id == instance)
    }

    fn is_live(&self, instance: InstanceId) -> bool {
        self.is_newest(instance) || self.instances.contains_key(&instance)
    }

    fn live(&self) -> u64 {
        (self.instances.len() + usize::from(self.newest.is_some())) as u64
    }

    fn forget(&mut self, instance: InstanceId) -> Option<Box<dyn Instance>> {
        let gone = if self.is_newest(instance) {
            self.newest.take().map(|(_, i)| i)
        } else {
            self.instances.remove(&instance)
        };
        if !self.timers.is_empty() {
            self.timers.retain(|Reverse((_, _, i, _))| *i != instance);
        }
        self.usage.using.store(self.live(), Ordering::Relaxed);
        if gone.is_some() {
            self.usage.used.fetch_add(1, Ordering::Relaxed);
        }
        gone
    }

    /// The stack is done with `instance`: drop it (its `Drop` is SLP code too).
    fn drop_instance(&mut self, instance: InstanceId) {
        if let Some(i) = self.forget(instance) {
            if catch_unwind(AssertUnwindSafe(|| drop(i))).is_err() {
                self.usage.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "SLP {}: instance {instance} panicked while being dropped",
                    self.name
                );
            }
        }
    }

    /// Calls the instance (made on its first event) and queues what it did.
    ///
    /// `event` becomes an `Event` only inside the call: a `Delivery` is a pointer-sized
    /// box where an `Event` holds a whole `Message` (370 bytes), which moving into the
    /// panic guard's closure copied twice more per message.
    fn deliver(&mut self, instance: InstanceId, event: impl Into<Event>) {
        // Nearly always empty: asked first, no hash is made.
        if !self.failed.is_empty() && self.failed.contains(&instance) {
            return;
        }
        let mut host = RunnerHost {
            instance,
            actions: Actions::new(),
            timers: Vec::new(),
        };
        let newest = self.is_newest(instance);
        let (slp, instances, kept) = (&mut self.slp, &mut self.instances, &mut self.newest);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let inst = if newest {
                &mut kept.as_mut().expect("just asked").1
            } else if let Some(inst) = instances.get_mut(&instance) {
                inst
            } else {
                // A new one is the newest; the one before it is filed now.
                let made = slp.new_instance();
                if let Some((id, before)) = kept.replace((instance, made)) {
                    instances.insert(id, before);
                }
                &mut kept.as_mut().expect("just put").1
            };
            inst.on_event(event.into(), &mut host);
        }));
        self.usage.using.store(self.live(), Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                for (after, token) in host.timers {
                    self.seq += 1;
                    let due = Instant::now() + after;
                    self.timers.push(Reverse((due, self.seq, instance, token)));
                }
                if !host.actions.is_empty() {
                    self.reports.push(Report::Actions {
                        instance,
                        actions: host.actions,
                    });
                }
            }
            Err(panic) => {
                let what = panic_message(&panic);
                tracing::error!("SLP {}: instance {instance} panicked: {what}", self.name);
                self.usage.panics.fetch_add(1, Ordering::Relaxed);
                if let Some(i) = self.forget(instance) {
                    let _ = catch_unwind(AssertUnwindSafe(|| drop(i)));
                }
                self.failed.insert(instance);
                self.reports.push(Report::Failed { instance });
            }
        }
    }

    /// The channel closed: drop every instance, call `on_unload`, drop the SLP, all on
    /// this thread, before it ends.
    fn unload(self) {
        let RunnerState {
            name,
            mut slp,
            usage,
            mut instances,
            newest,
            ..
        } = self;
        for i in newest
            .map(|(_, i)| i)
            .into_iter()
            .chain(instances.drain().map(|(_, i)| i))
        {
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
    actions: Actions,
    timers: Vec<(Duration, u64)>,
}

impl Host for RunnerHost {
    fn instance_id(&self) -> u64 {
        self.instance
    }

    fn send(&mut self, message: Message) {
        // Written straight into the `Arc`'s memory: `Arc::new` copied the 370 bytes
        // twice on the way.
        let mut shared = Arc::<Message>::new_uninit();
        Arc::get_mut(&mut shared)
            .expect("just made, not shared")
            .write(message);
        // SAFETY: written just above.
        let shared = unsafe { shared.assume_init() };
        self.actions.push(Action::Send(shared));
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

#[cfg(test)]
mod tests {
    use super::*;
    use jsipd_plugin_api::slp::Host;
    use std::sync::atomic::AtomicUsize;

    /// An SLP whose instances panic on a Message and count how many were made.
    struct Fragile(Arc<AtomicUsize>);
    struct FragileInstance;

    impl Slp for Fragile {
        fn new_instance(&mut self) -> Box<dyn Instance> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::new(FragileInstance)
        }
    }

    impl Instance for FragileInstance {
        fn on_event(&mut self, event: Event, _host: &mut dyn Host) {
            if matches!(event, Event::Message(_)) {
                panic!("the test instance fails on a message");
            }
        }
    }

    #[test]
    fn events_queued_for_a_failed_instance_do_not_make_a_new_one() {
        let made = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let mut runner = Runner::spawn(
            "fragile",
            Box::new(Fragile(made.clone())),
            Arc::default(),
            Box::new(move |reports| {
                let _ = tx.send(reports);
            }),
        )
        .unwrap();
        let msg = jsipd_plugin_api::jsip::Message::parse(
            r#"{"Type":"MESSAGE","Request-URI":"a@b","From":"c","To":"a@b","DialogueID":"d","CSeq":1}"#,
        )
        .unwrap();
        let id: InstanceId = 7;
        runner.send(
            &mut vec![
                Command::Event {
                    instance: id,
                    event: Delivery::Message(msg.into()),
                },
                // Already queued when the instance failed: must not revive it.
                Command::Event {
                    instance: id,
                    event: Delivery::DialogEnded {
                        dialogue_id: "d".into(),
                    },
                },
                Command::Event {
                    instance: id,
                    event: Delivery::PeerDisconnected {
                        dialogue_id: "d".into(),
                    },
                },
            ],
            &mut Vec::new(),
        );
        let reports = rx.recv().unwrap();
        assert!(matches!(reports[..], [Report::Failed { instance }] if instance == id));
        drop(runner); // joins the thread: every command was handled
        assert_eq!(made.load(Ordering::SeqCst), 1, "one instance, not a zombie");
    }

    /// Answers each message 200 after a timer, and notes its unload.
    struct Later(Arc<AtomicUsize>);
    struct LaterInstance(Option<jsipd_plugin_api::jsip::Message>);

    impl Slp for Later {
        fn new_instance(&mut self) -> Box<dyn Instance> {
            Box::new(LaterInstance(None))
        }
        fn on_unload(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Instance for LaterInstance {
        fn on_event(&mut self, event: Event, host: &mut dyn Host) {
            match event {
                Event::Message(m) => {
                    self.0 = Some(m);
                    host.set_timer(Duration::ZERO, 9);
                }
                Event::Timer(9) => {
                    let m = self.0.take().expect("the message waits");
                    host.send(m.response(200));
                }
                _ => {}
            }
        }
    }

    #[test]
    fn an_inline_runner_answers_at_once_keeps_timers_for_the_caller_and_unloads_on_drop() {
        let unloaded = Arc::new(AtomicUsize::new(0));
        let mut runner = Runner::inline("later", Box::new(Later(unloaded.clone())), Arc::default());
        let msg = jsipd_plugin_api::jsip::Message::parse(
            r#"{"Type":"MESSAGE","Request-URI":"a@b","From":"c","To":"a@b","DialogueID":"d","CSeq":1}"#,
        )
        .unwrap();
        let mut batch = vec![Command::Event {
            instance: 3,
            event: Delivery::Message(msg.into()),
        }];
        let mut reports = Vec::new();
        runner.send(&mut batch, &mut reports);
        assert!(batch.is_empty(), "the batch was taken");
        assert!(reports.is_empty(), "it answers from the timer");
        let due = runner
            .next_timer()
            .expect("the timer is the caller's to wait for");
        let reports = runner.fire_timers(due);
        assert!(
            matches!(&reports[..], [Report::Actions { instance: 3, actions }] if actions.len() == 1),
            "{reports:?}"
        );
        assert_eq!(runner.next_timer(), None);
        drop(runner);
        assert_eq!(unloaded.load(Ordering::SeqCst), 1);
    }

    /// Counts the instances it makes; each instance answers a message with how many it
    /// has had.
    struct Counting(Arc<AtomicUsize>);
    struct CountingInstance(u64);

    impl Slp for Counting {
        fn new_instance(&mut self) -> Box<dyn Instance> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::new(CountingInstance(0))
        }
    }

    impl Instance for CountingInstance {
        fn on_event(&mut self, event: Event, host: &mut dyn Host) {
            if let Event::Message(m) = event {
                self.0 += 1;
                let mut r = m.response(200);
                r.body = Some(self.0.into());
                host.send(r);
            }
        }
    }

    #[test]
    fn an_instance_keeps_its_state_whether_it_is_the_newest_or_filed() {
        let made = Arc::new(AtomicUsize::new(0));
        let usage = Arc::new(Usage::default());
        let mut runner =
            Runner::inline("counting", Box::new(Counting(made.clone())), usage.clone());
        let msg = jsipd_plugin_api::jsip::Message::parse(
            r#"{"Type":"MESSAGE","Request-URI":"a@b","From":"c","To":"a@b","DialogueID":"d","CSeq":1}"#,
        )
        .unwrap();
        let event = |instance| Command::Event {
            instance,
            event: Delivery::Message(msg.clone().into()),
        };
        let mut reports = Vec::new();
        // 2 is made while 1 is the newest (1 is filed), then each is found again:
        // 1 in the map, 2 kept aside; 1 again after that.
        for id in [1, 2, 1, 2, 1] {
            assert!(runner.run_inline(event(id), &mut reports).is_none());
        }
        let answers: Vec<(InstanceId, u64)> = reports
            .drain(..)
            .map(|r| match r {
                Report::Actions { instance, actions } => match &actions[..] {
                    [Action::Send(m)] => {
                        (instance, m.body.as_ref().and_then(|b| b.as_u64()).unwrap())
                    }
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(answers, [(1, 1), (2, 1), (1, 2), (2, 2), (1, 3)]);
        assert_eq!(made.load(Ordering::SeqCst), 2);
        assert_eq!(usage.using.load(Ordering::Relaxed), 2);
        // The newest ends, then the filed one.
        runner.run_inline(Command::Ended { instance: 2 }, &mut reports);
        assert_eq!(usage.using.load(Ordering::Relaxed), 1);
        runner.run_inline(Command::Ended { instance: 1 }, &mut reports);
        assert_eq!(usage.using.load(Ordering::Relaxed), 0);
        assert_eq!(usage.used.load(Ordering::Relaxed), 2);
        // An ended id gets a new instance, which starts counting again.
        runner.run_inline(event(1), &mut reports);
        assert!(
            matches!(&reports[..], [Report::Actions { instance: 1, actions }]
            if matches!(&actions[..], [Action::Send(m)] if m.body == Some(1.into())))
        );
        assert_eq!(made.load(Ordering::SeqCst), 3);
    }
}
