//! Names to connections (JSIP.md §1), owned by the node task alone.
//!
//! Dialogs are bound to a *name*, not a socket, so each name has a bounded queue that
//! outlives its sockets: while a client reconnects, what is sent to it waits in the
//! queue, and its next socket drains it in order. The queue's receiving end sits in an
//! `Outbox` behind an async mutex that the current socket task holds for its whole life;
//! a replacing socket waits for that lock, so two sockets never drain one queue.

use crate::hash::Map;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::task::AtomicWaker;
use jsipd_plugin_api::jsip::Message;
use serde_json::{json, Value};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use super::ws::ConnId;
use crate::jsip::PeerName;

/// A queued message. Behind a pointer because tokio's channel allocates its slots in
/// blocks of 32 up front: unboxed (a few hundred bytes each) that was ~11 KiB per idle
/// name. An `Arc` because the stack keeps the same message in its transaction.
pub type Queued = Arc<Message>;

/// What a frame's turn sends straight back to its own socket: nearly always one answer,
/// so it is kept inline. A `Vec` here allocated and freed a buffer per message.
pub type Replies = smallvec::SmallVec<[Queued; 2]>;

/// The receiving side of a name's queue.
pub struct Outbox {
    pub rx: mpsc::Receiver<Queued>,
    /// Messages taken from the queue (or handed back by the node) whose write failed,
    /// oldest first: the next socket sends them first.
    pub unsent: Vec<Queued>,
}

struct Socket {
    conn: ConnId,
    remote: String,
    replaced: CancellationToken,
    since: Instant,
    flags: Arc<SocketFlags>,
}

/// What the node and a socket's task both see of the socket.
#[derive(Default)]
pub struct SocketFlags {
    /// Bad frames seen on this socket, shown by jstack.
    pub bad_frames: AtomicU64,
    /// An operator closed it ([`Registry::disconnect`]): it closes with 4001, not 4000.
    pub disconnected: AtomicBool,
    /// Frames of this socket sent to the node task and not handled yet. While there are
    /// any, the socket's next frames go the same way, so none overtakes another
    /// (`NodeHandle::frame`).
    pub frames_queued: AtomicU32,
    /// Time to ping: set by [`Registry::ping_all`], taken by the socket as it pings.
    pub ping_due: AtomicBool,
    /// Its token was cancelled (replaced, disconnected, or the daemon stops): set with
    /// the poke by whoever cancels it ([`Registry`]'s `close_socket`), so
    /// the socket reads an atomic at the top of each turn rather than ask the token,
    /// which takes the token's lock (some 60 instructions a frame).
    pub closing: AtomicBool,
    /// Something for the socket to look at: `closing`, `ping_due` and its queue. See
    /// [`SocketFlags::poke`].
    poked: AtomicBool,
    waker: AtomicWaker,
}

impl SocketFlags {
    /// Wakes the socket's task to look at `closing`, `ping_due` and its queue. An idle
    /// socket waits on its peer and this: registering here is a compare of the
    /// waker it holds already, where a timer of its own and a `cancelled()` future
    /// registered (and the future unregistered, under a lock) on every frame, some 500
    /// instructions a round trip.
    pub fn poke(&self) {
        self.poked.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once poked (and un-pokes); else the task is woken by the next poke.
    pub fn poll_poked(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before the flag is read, so a poke in between is not lost.
        self.waker.register(cx.waker());
        if self.poked.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Tells a socket to close: its token, the flag its task reads, and a poke to wake it.
fn close_socket(s: &Socket) {
    s.replaced.cancel();
    s.flags.closing.store(true, Ordering::Release);
    s.flags.poke();
}

struct Entry {
    tx: mpsc::Sender<Queued>,
    outbox: Arc<tokio::sync::Mutex<Outbox>>,
    socket: Option<Socket>,
    /// Changes whenever the socket goes, so a stale window timer is ignored.
    epoch: u64,
    dialing: bool,
    away_since: Option<Instant>,
}

/// Result of [`Registry::send`].
pub enum Send {
    Queued,
    /// The name's queue is full: the message comes back.
    Full(Queued),
    /// No such name.
    Unknown(Queued),
}

pub struct Registry {
    entries: Map<PeerName, Entry>,
    qsize: usize,
    /// The name of the socket whose frame the node is handling on its own task, while
    /// what is sent to it goes to `direct` instead, to be written before anything in its
    /// queue (see `NodeHandle::frame`): set only when its queue was empty and it was
    /// still the name's socket as the turn began, which nothing can change during it.
    direct_to: Option<PeerName>,
    direct: Replies,
}

impl Registry {
    pub fn new(qsize: usize) -> Registry {
        Registry {
            entries: Map::default(),
            qsize,
            direct_to: None,
            direct: Replies::new(),
        }
    }

    /// Applies to queues created from now on.
    pub fn set_qsize(&mut self, qsize: usize) {
        self.qsize = qsize;
    }

    fn entry(&mut self, name: &PeerName) -> &mut Entry {
        let qsize = self.qsize;
        self.entries.entry(name.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(qsize);
            Entry {
                tx,
                outbox: Arc::new(tokio::sync::Mutex::new(Outbox {
                    rx,
                    unsent: Vec::new(),
                })),
                socket: None,
                epoch: 0,
                dialing: false,
                away_since: None,
            }
        })
    }

    /// A socket for `name` is up; a previous socket of that name is told to close
    /// (4000, replaced). Returns the queue the new socket must drain.
    pub fn attach(
        &mut self,
        name: &PeerName,
        conn: ConnId,
        remote: String,
        replaced: CancellationToken,
        flags: Arc<SocketFlags>,
    ) -> Arc<tokio::sync::Mutex<Outbox>> {
        let e = self.entry(name);
        if let Some(old) = e.socket.take() {
            close_socket(&old);
        }
        e.socket = Some(Socket {
            conn,
            remote,
            replaced,
            since: Instant::now(),
            flags,
        });
        e.epoch += 1;
        e.dialing = false;
        e.away_since = None;
        e.outbox.clone()
    }

    /// Tells `name`'s socket to close (an operator's `DELETE /runtime/v1/connections/NAME`).
    /// The name then is away as after any drop: its dialogs wait `reconnect_window` for
    /// the client to come back. False when `name` has no socket.
    pub fn disconnect(&mut self, name: &PeerName) -> bool {
        match self.entries.get(name).and_then(|e| e.socket.as_ref()) {
            Some(s) => {
                s.flags.disconnected.store(true, Ordering::Relaxed);
                close_socket(s);
                true
            }
            None => false,
        }
    }

    /// The signed-in people with a socket now (names `USER~TAB`, which only a session
    /// may take): each user with how many tabs, sorted by user.
    pub fn people(&self) -> Vec<(String, usize)> {
        let mut people: std::collections::BTreeMap<&str, usize> = Default::default();
        for (name, e) in &self.entries {
            if let (Some(_), Some((user, _))) = (&e.socket, name.split_once('~')) {
                *people.entry(user).or_default() += 1;
            }
        }
        people
            .into_iter()
            .map(|(u, n)| (u.to_string(), n))
            .collect()
    }

    /// Socket `conn` of `name` is gone. Returns the epoch that starts the reconnect
    /// window, or `None` if the socket had already been replaced.
    pub fn detach(&mut self, name: &PeerName, conn: ConnId) -> Option<u64> {
        let e = self.entries.get_mut(name)?;
        if e.socket.as_ref().map(|s| s.conn) != Some(conn) {
            return None;
        }
        e.socket = None;
        e.epoch += 1;
        e.away_since = Some(Instant::now());
        Some(e.epoch)
    }

    /// The window of `name` ended: if nobody came back, drop it and return what was queued.
    pub fn expire(&mut self, name: &PeerName, epoch: u64) -> Vec<Queued> {
        match self.entries.get(name) {
            Some(e) if e.epoch == epoch && e.socket.is_none() => self.remove(name),
            _ => Vec::new(),
        }
    }

    /// Drops `name` and returns its queued messages, oldest first.
    pub fn remove(&mut self, name: &PeerName) -> Vec<Queued> {
        let Some(e) = self.entries.remove(name) else {
            return Vec::new();
        };
        let mut left = Vec::new();
        // No socket holds the lock once the entry has no socket; if one still does
        // (it is closing), what it holds is lost with it.
        if let Ok(mut outbox) = e.outbox.try_lock() {
            left.append(&mut outbox.unsent);
            while let Ok(m) = outbox.rx.try_recv() {
                left.push(m);
            }
        }
        left
    }

    /// Marks `name` as being dialed, creating its queue.
    pub fn dialing(&mut self, name: &PeerName) {
        self.entry(name).dialing = true;
    }

    pub fn send(&mut self, name: &PeerName, msg: Queued) -> Send {
        // An answer to the frame is addressed by the very name the frame came with (the
        // stack keeps it as the dialog's peer): found by pointer, with no lookup
        // (callgrind: some 150 instructions a round trip). Bounded like the queue; once
        // `direct` is full, what follows is queued, and stays behind that.
        if let Some(to) = &self.direct_to {
            if (Arc::ptr_eq(to, name) || to == name) && self.direct.len() < self.qsize {
                self.direct.push(msg);
                return Send::Queued;
            }
        }
        let Some(e) = self.entries.get(name) else {
            return Send::Unknown(msg);
        };
        match e.tx.try_send(msg) {
            Ok(()) => {
                // A socket looks in its queue when poked, not on a waker of the queue's
                // own (`ws::next_queued`).
                if let Some(s) = &e.socket {
                    s.flags.poke();
                }
                Send::Queued
            }
            Err(TrySendError::Full(m)) | Err(TrySendError::Closed(m)) => Send::Full(m),
        }
    }

    /// Tells every connected socket to close: the daemon stops (their tokens, children
    /// of its own, were cancelled with it already).
    pub fn close_all(&self) {
        for s in self.entries.values().filter_map(|e| e.socket.as_ref()) {
            close_socket(s);
        }
    }

    /// Tells every connected socket to ping: the node's one timer for every socket,
    /// where each socket's own timer cost it a registration per frame and its memory
    /// while idle.
    pub fn ping_all(&self) {
        for s in self.entries.values().filter_map(|e| e.socket.as_ref()) {
            s.flags.ping_due.store(true, Ordering::Release);
            s.flags.poke();
        }
    }

    /// Sends to `name`, the socket being served, go straight back to it from now until
    /// [`Registry::take_direct`], if `open`: nothing is in its queue and it is still the
    /// name's socket (not `closing`). Both are asked with the node's lock held, under
    /// which alone either changes.
    pub fn reply_directly_to(&mut self, name: &PeerName, open: bool) {
        self.direct_to = open.then(|| name.clone());
    }

    /// What was sent straight back, oldest first; sends are queued again from now.
    pub fn take_direct(&mut self) -> Replies {
        self.direct_to = None;
        std::mem::take(&mut self.direct)
    }

    pub fn view(&self) -> Vec<Value> {
        let now = Instant::now();
        let mut v: Vec<(&PeerName, &Entry)> = self.entries.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.into_iter()
            .map(|(name, e)| {
                let depth = e.tx.max_capacity() - e.tx.capacity();
                let bad = e
                    .socket
                    .as_ref()
                    .map_or(0, |s| s.flags.bad_frames.load(Ordering::Relaxed));
                let (state, remote, secs) = match (&e.socket, e.dialing) {
                    (Some(s), _) => ("connected", s.remote.clone(), now - s.since),
                    (None, true) => ("dialing", String::new(), Default::default()),
                    (None, false) => (
                        "away",
                        String::new(),
                        e.away_since.map_or(Default::default(), |t| now - t),
                    ),
                };
                json!({
                    "name": name.as_ref(),
                    "state": state,
                    "remote": remote,
                    "queue": depth,
                    "for_ms": secs.as_millis() as u64,
                    "bad_frames": bad,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attach(r: &mut Registry, name: &str, conn: ConnId) -> (Arc<SocketFlags>, CancellationToken) {
        let flags = Arc::new(SocketFlags::default());
        let token = CancellationToken::new();
        r.attach(
            &name.into(),
            conn,
            "peer".into(),
            token.clone(),
            flags.clone(),
        );
        (flags, token)
    }

    /// Counts the wake-ups of the task it stands for.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A socket's task waiting on its flags: whether it was poked since it last looked.
    fn poked(flags: &SocketFlags, wakes: &Arc<Wakes>) -> bool {
        let waker = std::task::Waker::from(wakes.clone());
        flags
            .poll_poked(&mut Context::from_waker(&waker))
            .is_ready()
    }

    /// Whoever cancels a socket's token also wakes its task, which does not wait on the
    /// token; the node's ping tick wakes every connected socket with `ping_due`; and a
    /// message queued for a socket wakes it, since it does not wait on its queue.
    #[test]
    fn a_cancelled_pinged_or_queued_for_socket_is_woken() {
        let wakes = Arc::new(Wakes::default());
        let count = || wakes.0.load(Ordering::SeqCst);
        let mut r = Registry::new(4);
        let (ada, ada_token) = attach(&mut r, "ada", 1);
        assert!(!poked(&ada, &wakes), "nothing yet");
        let (ada2, _) = attach(&mut r, "ada", 2);
        assert!(ada_token.is_cancelled());
        assert!(ada.closing.load(Ordering::Acquire) && !ada2.closing.load(Ordering::Acquire));
        assert_eq!(count(), 1, "the replaced socket's task is woken");
        assert!(poked(&ada, &wakes));
        assert!(!poked(&ada, &wakes), "once");
        assert!(!poked(&ada2, &wakes));
        assert!(r.disconnect(&"ada".into()));
        assert!(ada2.closing.load(Ordering::Acquire));
        assert_eq!(count(), 2, "disconnected");
        assert!(poked(&ada2, &wakes));
        let (bob, _) = attach(&mut r, "bob", 3);
        let (vic, _) = attach(&mut r, "vic", 4);
        r.detach(&"vic".into(), 4);
        assert!(!poked(&bob, &wakes) && !poked(&vic, &wakes));
        r.ping_all();
        assert!(poked(&bob, &wakes) && bob.ping_due.load(Ordering::Acquire));
        assert!(
            !bob.closing.load(Ordering::Acquire),
            "a ping is not a close"
        );
        assert!(!poked(&vic, &wakes), "away: not pinged");
        assert!(!vic.ping_due.load(Ordering::Acquire));
        r.close_all();
        assert!(poked(&bob, &wakes), "stopping: every connected socket");
        assert!(bob.closing.load(Ordering::Acquire));
        assert!(!poked(&vic, &wakes));
        // A socket reads its queue when poked (`ws::next_queued`): a message queued for
        // it pokes it; one queued for a name whose socket is away pokes nobody.
        let msg = || {
            Arc::new(Message::request(
                jsipd_plugin_api::jsip::Method::Message,
                "u@h",
                "f",
                "t",
                "d",
                1,
            ))
        };
        assert!(matches!(r.send(&"bob".into(), msg()), Send::Queued));
        assert!(poked(&bob, &wakes), "queued for it");
        assert!(matches!(r.send(&"vic".into(), msg()), Send::Queued));
        assert!(!poked(&vic, &wakes), "away: waits in the queue");
    }

    #[test]
    fn people_are_the_signed_in_names_with_a_socket() {
        let mut r = Registry::new(8);
        attach(&mut r, "ada~t1", 1);
        attach(&mut r, "ada~t2", 2);
        attach(&mut r, "vic~t1", 3);
        attach(&mut r, "program", 4);
        r.detach(&"vic~t1".into(), 3);
        assert_eq!(r.people(), vec![("ada".to_string(), 2)]);
    }

    #[test]
    fn disconnect_tells_the_socket_why_and_only_a_connected_one() {
        let mut r = Registry::new(8);
        let (flags, token) = attach(&mut r, "ada~t1", 1);
        assert!(r.disconnect(&"ada~t1".into()));
        assert!(token.is_cancelled());
        assert!(flags.disconnected.load(Ordering::Relaxed));
        r.detach(&"ada~t1".into(), 1);
        assert!(!r.disconnect(&"ada~t1".into()), "away: nothing to close");
        assert!(!r.disconnect(&"nobody".into()));
        // A replaced socket is told to close too, but not as disconnected.
        let (old, old_token) = attach(&mut r, "bob", 2);
        attach(&mut r, "bob", 3);
        assert!(old_token.is_cancelled());
        assert!(!old.disconnected.load(Ordering::Relaxed));
    }

    /// The DialogueID of the next message in a queue.
    fn queued_id(rx: &mut mpsc::Receiver<Queued>) -> String {
        rx.try_recv()
            .expect("a message is queued")
            .dialogue_id
            .clone()
    }

    fn msg(id: &str) -> Queued {
        Arc::new(Message::request(
            jsipd_plugin_api::jsip::Method::Message,
            "a@b",
            "c",
            "a@b",
            id,
            1,
        ))
    }

    fn ids(msgs: &[Queued]) -> Vec<&str> {
        msgs.iter().map(|m| m.dialogue_id.as_str()).collect()
    }

    /// Straight back only to the socket being served, only while nothing is queued for
    /// it (so nothing overtakes what waits there), and no more than the queue holds;
    /// the same whether the name is the socket's own (found by pointer) or a copy of
    /// its text.
    #[test]
    fn replies_go_straight_back_only_to_the_served_socket_with_an_empty_queue() {
        let mut r = Registry::new(2);
        attach(&mut r, "ada", 1);
        attach(&mut r, "bob", 2);
        let outbox = r.entries[&PeerName::from("ada")].outbox.clone();
        let mut outbox = outbox.try_lock().unwrap();
        let own: PeerName = "ada".into();
        let own_copy = own.clone();

        r.reply_directly_to(&own, true);
        assert!(matches!(r.send(&own_copy, msg("d1")), Send::Queued));
        assert!(matches!(r.send(&"bob".into(), msg("b1")), Send::Queued));
        assert!(matches!(r.send(&"ada".into(), msg("d2")), Send::Queued));
        // The queue's bound holds for what goes straight back too, and once it is
        // reached the rest queue, by either name.
        assert!(matches!(r.send(&own_copy, msg("q1")), Send::Queued));
        assert!(matches!(r.send(&"ada".into(), msg("q1b")), Send::Queued));
        assert_eq!(ids(&r.take_direct()), ["d1", "d2"]);
        assert_eq!(queued_id(&mut outbox.rx), "q1");
        assert_eq!(queued_id(&mut outbox.rx), "q1b");

        // Something waits in the queue: it goes first, so the next ones queue behind
        // it, whichever name they come by (the node then says it is not `open`).
        for by in [own_copy.clone(), "ada".into()] {
            assert!(matches!(r.send(&own, msg("q2")), Send::Queued));
            r.reply_directly_to(&own, false);
            assert!(matches!(r.send(&by, msg("q3")), Send::Queued));
            assert!(r.take_direct().is_empty());
            assert_eq!(queued_id(&mut outbox.rx), "q2");
            assert_eq!(queued_id(&mut outbox.rx), "q3");
        }

        // A replaced socket (`closing`: not `open` either) gets nothing straight back:
        // what is sent to its name goes to the name's queue, for the newer socket.
        r.reply_directly_to(&own, false);
        assert!(matches!(r.send(&own_copy, msg("q4")), Send::Queued));
        assert!(matches!(r.send(&"ada".into(), msg("q5")), Send::Queued));
        assert!(r.take_direct().is_empty());
        assert_eq!(queued_id(&mut outbox.rx), "q4");
        assert_eq!(queued_id(&mut outbox.rx), "q5");

        // After the turn, nothing goes straight back, by pointer or by text.
        r.reply_directly_to(&own, true);
        assert!(r.take_direct().is_empty());
        assert!(matches!(r.send(&own_copy, msg("q6")), Send::Queued));
        assert!(matches!(r.send(&"ada".into(), msg("q7")), Send::Queued));
        assert!(r.take_direct().is_empty());
        assert_eq!(queued_id(&mut outbox.rx), "q6");
        assert_eq!(queued_id(&mut outbox.rx), "q7");
    }
}
