//! The transaction and dialog layers (JSIP.md §3–§5) as one sans-IO state machine.
//!
//! Inputs: messages from peers (`handle_peer`), batches of actions from SLP instances
//! (`handle_slp`), a failed SLP call (`handle_slp_failure`) and the current time
//! (`handle_timeout`). Outputs, taken with `poll_output`: messages for a peer *name*
//! (the transport finds or dials the socket), events for SLP instances, and instances
//! that ended. `next_deadline` says when the driver must call `handle_timeout`.
//! Nothing here reads a clock or touches a socket, so tests drive it with made-up times.
//!
//! Dialogs are keyed by (peer name, DialogueID): two clients may pick the same
//! DialogueID without meeting. Within a dialog, transactions are keyed by direction and
//! CSeq, because each side numbers its own requests.

use std::collections::hash_map::Entry;
use std::collections::VecDeque;

use crate::hash::Map;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsipd_plugin_api::jsip::{router_first, Kind, Message, Method, UriRef};
use jsipd_plugin_api::slp::Event;

use super::dialog_index::{DialogIndex, Named};
use super::kept::Kept;
use super::timer::{TimerId, Timers};
use super::transactions::Transactions;
use crate::dispatch::select::{select, Target};

/// A registry name: a client's userid, or `user@host[:port]` of another node.
pub type PeerName = Arc<str>;
pub type InstanceId = u64;

/// Peer names that stand for an SLP instance of this node (local delivery, JSIP.md §1).
/// `local:N>` is the caller instance N's view of the callee, `local:N<` the callee's
/// view of the caller; a message sent to one arrives from the other.
const LOCAL: &str = "local:";

/// The stack's timers, from `[JSIPStack]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StackConfig {
    pub transtimer: Duration,
    pub prtimer: Duration,
    pub sessiontimer: Duration,
    /// This node's domain: `alice@REALM` is the client connected as `alice`.
    pub realm: String,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            transtimer: Duration::from_secs(5),
            prtimer: Duration::from_secs(60),
            sessiontimer: Duration::from_secs(600),
            realm: String::new(),
        }
    }
}

/// An [`Event`] on its way to an SLP instance, with its message boxed.
///
/// An `Event` is as large as a `Message` (some 370 bytes), and so is every value that
/// holds one: each step through the stack's and the runner's queues copied all of it,
/// even for a `DialogEnded`, some 40 copies per round trip (callgrind: 3,000
/// instructions in `memcpy`). A message from a peer is boxed once, when its frame is
/// read, and travels as a pointer until the runner hands the SLP its `Event`.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Loaded,
    Message(Box<Message>),
    /// The id shared with the stack's key: made a `String` only for an SLP that hears
    /// it ([`Slp::wants_dialog_events`](jsipd_plugin_api::slp::Slp::wants_dialog_events)).
    DialogEnded {
        dialogue_id: Arc<str>,
    },
    PeerDisconnected {
        dialogue_id: Arc<str>,
    },
    Draining,
}

impl Delivery {
    /// A DialogEnded or PeerDisconnected.
    pub fn is_dialog_event(&self) -> bool {
        matches!(
            self,
            Delivery::DialogEnded { .. } | Delivery::PeerDisconnected { .. }
        )
    }
}

impl From<Delivery> for Event {
    fn from(d: Delivery) -> Event {
        match d {
            Delivery::Loaded => Event::Loaded,
            Delivery::Message(m) => Event::Message(*m),
            // Not `to_string`, which goes through `Display` for an `Arc<str>`.
            Delivery::DialogEnded { dialogue_id } => Event::DialogEnded {
                dialogue_id: String::from(&*dialogue_id),
            },
            Delivery::PeerDisconnected { dialogue_id } => Event::PeerDisconnected {
                dialogue_id: String::from(&*dialogue_id),
            },
            Delivery::Draining => Event::Draining,
        }
    }
}

/// What the stack wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send to the connection registered under `name` (or dial it).
    /// Shared with the transaction that keeps it, so sending copies nothing.
    ToPeer { name: PeerName, msg: Arc<Message> },
    /// Deliver to an instance of SLP `slp`; the runner creates the instance on its first event.
    ToSlp {
        slp: Arc<str>,
        instance: InstanceId,
        event: Delivery,
    },
    /// Drop this instance; the stack will not mention it again.
    InstanceEnded { slp: Arc<str>, instance: InstanceId },
}

/// What an SLP instance did while handling one event, in order: nearly always one
/// action (its answer), so kept inline; a `Vec` allocated and freed a buffer per event.
pub type Actions = smallvec::SmallVec<[Action; 2]>;

/// One thing an SLP instance did while handling an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Shared from the start: what the stack sends to a peer it keeps too (a request
    /// for its transaction), and the one allocation is made where the SLP sends it,
    /// not after the message was copied through the batch.
    Send(Arc<Message>),
    /// Register a relid for this instance (`Host::relid`).
    Relid(String),
    End,
}

/// Counters for `/runtime/v1/stats` and `/runtime/v1/jstack`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub dialogs_started: u64,
    pub transactions_timed_out: u64,
    /// Responses with no transaction, 1xx after a final, second finals, stray ACKs.
    pub dropped: u64,
    pub instances_failed: u64,
}

/// Why an instance is ended by force, which decides how its open requests are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The SLP failed or ended itself: `500`.
    Failed,
    /// Its generation's drain_timeout ran out: `487` for an INVITE, else `408`.
    Drained,
}

/// A dialog's name: its peer and DialogueID, hashed once when the key is made. A
/// message looks its dialog up six to eight times on its way through the stack, and
/// hashing both strings each time cost some 500 instructions a MESSAGE; a key's copies
/// (in timers, in its instance's index) carry the hash with them.
#[derive(Debug, Clone)]
struct DialogKey {
    peer: PeerName,
    /// The DialogueID, shared: a key is copied into several indexes and timers.
    id: Arc<str>,
    /// Of `peer` and `id`, by the stack's randomly seeded hasher ([`KeyHasher`]), so
    /// peers still cannot choose DialogueIDs that collide.
    hash: u64,
}

impl DialogKey {
    fn new(hasher: &KeyHasher, peer: PeerName, id: Arc<str>) -> DialogKey {
        let hash = std::hash::BuildHasher::hash_one(&hasher.0, (&*peer, &*id));
        DialogKey { peer, id, hash }
    }
}

impl PartialEq for DialogKey {
    /// A key is mostly compared with a copy of itself (from a timer, an index, the
    /// dialog it was made for), whose strings are the same allocation: asked first,
    /// that saves the two string compares, some 16 `memcmp` calls a MESSAGE.
    fn eq(&self, other: &DialogKey) -> bool {
        fn same(a: &Arc<str>, b: &Arc<str>) -> bool {
            Arc::ptr_eq(a, b) || a == b
        }
        self.hash == other.hash && same(&self.peer, &other.peer) && same(&self.id, &other.id)
    }
}

impl Eq for DialogKey {}

impl std::hash::Hash for DialogKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl Named for DialogKey {
    type Name = Arc<str>;
    fn name(&self) -> &Arc<str> {
        &self.id
    }
}

/// Hashes [`DialogKey`]s when they are made.
struct KeyHasher(foldhash::fast::RandomState);

/// The hasher of the dialog map, whose keys are hashed already: it passes their hash on.
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, _: &[u8]) {
        unreachable!("only a DialogKey, which writes its hash, is hashed here");
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

type DialogMap =
    std::collections::HashMap<DialogKey, Dialog, std::hash::BuildHasherDefault<Prehashed>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The peer started the dialog; our SLP answers.
    Answering,
    /// Our SLP started the dialog.
    Calling,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Early,
    Confirmed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// A request from the peer, answered by the SLP.
    Received,
    /// A request to the peer.
    Sent,
}

#[derive(Debug)]
enum Timer {
    Transaction {
        key: DialogKey,
        dir: Dir,
        cseq: u64,
    },
    /// A non-2xx final to an INVITE waits for its ACK.
    AckWait {
        key: DialogKey,
        cseq: u64,
    },
    /// Answering side: no refresh within Expire ends the session.
    SessionExpired {
        key: DialogKey,
    },
    /// Calling side: time to send a keepalive UPDATE.
    Keepalive {
        key: DialogKey,
    },
}

struct Transaction {
    /// The request: a sent one whole, a received one as its head.
    request: Kept,
    timer: Option<TimerId>,
    /// Final status already sent or received.
    final_code: Option<u16>,
    /// Made by the stack (keepalive UPDATE, BYE), not by the SLP: its answer is not delivered.
    by_stack: bool,
    started: Instant,
}

struct Dialog {
    slp: Arc<str>,
    instance: InstanceId,
    /// Started by INVITE: has a session timer and ends with BYE.
    session: bool,
    role: Role,
    state: State,
    created: Instant,
    /// The dialog-starting request, for the fields of requests the stack makes: the
    /// same value as its transaction's `request`.
    first: Kept,
    /// Session refresh interval (JSIP.md §4 Expire).
    expire: Duration,
    session_timer: Option<TimerId>,
    missed_keepalives: u32,
    received: Transactions<Transaction>,
    sent: Transactions<Transaction>,
    /// Highest CSeq our side used, and the peer's: the stack numbers its own requests after them.
    local_cseq: u64,
    remote_cseq: u64,
}

impl Dialog {
    /// A dialog of `instance` (of SLP generation `slp`) started by `first`, which is
    /// what the dialog keeps of that request (its head, for a received one), with
    /// `expire` from [`Stack::session_expire`]. Not filed anywhere yet.
    fn new(
        now: Instant,
        slp: Arc<str>,
        instance: InstanceId,
        role: Role,
        first: Kept,
        expire: Duration,
    ) -> Dialog {
        let session = first.method() == Some(Method::Invite);
        let (local_cseq, remote_cseq) = match role {
            Role::Answering => (0, first.cseq()),
            Role::Calling => (first.cseq(), 0),
        };
        Dialog {
            slp,
            instance,
            session,
            role,
            state: State::Early,
            created: now,
            first,
            expire,
            session_timer: None,
            missed_keepalives: 0,
            received: Transactions::default(),
            sent: Transactions::default(),
            local_cseq,
            remote_cseq,
        }
    }

    /// CSeqs of received requests not answered finally yet.
    fn unanswered(&self) -> Vec<u64> {
        self.received
            .iter()
            .filter(|(_, t)| t.final_code.is_none())
            .map(|(c, _)| c)
            .collect()
    }

    /// (Request-URI, From, To) of a request the stack makes: in the direction of the
    /// dialog's first request, or back toward its sender.
    fn addressing(&self, as_first: bool) -> (String, String, String) {
        let f = &self.first;
        if as_first {
            let uri = f.request_uri().unwrap_or_default().to_string();
            (uri, f.from().to_string(), f.to().to_string())
        } else {
            (
                f.from().to_string(),
                f.to().to_string(),
                f.from().to_string(),
            )
        }
    }
}

struct InstanceInfo {
    slp: Arc<str>,
    /// Its dialogs: DialogueID → peer. Also how a message from the SLP finds its dialog,
    /// since the SLP names a dialog by its DialogueID alone.
    dialogs: DialogIndex<DialogKey>,
    /// Handed out a relid or is the on-load instance: lives until it ends itself.
    pinned: bool,
    /// Its SLP hears DialogEnded and PeerDisconnected
    /// ([`Slp::wants_dialog_events`](jsipd_plugin_api::slp::Slp::wants_dialog_events)).
    dialog_events: bool,
}

impl InstanceInfo {
    /// Whether `event` is sent to it: all but the dialog events of an SLP that wants none.
    fn hears(&self, event: &Delivery) -> bool {
        self.dialog_events || !event.is_dialog_event()
    }
}

/// A dialog that a peer's request has just opened, as what it is made of: not filed
/// yet in `dialogs` (nor its instance, when new, in `instances`), and its request's
/// timer not set.
///
/// Most such requests (a MESSAGE, an OPTIONS) are answered finally by an SLP that runs
/// inline, within the same turn, and the dialog ends with that answer. Filing it, with
/// its instance and its transaction's timer, only to take all three out again a moment
/// later cost some 1,300 instructions a message under callgrind: two maps' inserts and
/// removes, a timer set and cancelled, the instance's index looked up, the dialog built
/// and dropped. So the one such dialog of the last `handle_peer` with a new instance
/// waits in `Stack::fresh`. If the next call is that instance's batch, and the batch is
/// that final answer alone, it is served from there ([`Stack::answer_fresh`]). Any other
/// call files it first ([`Stack::file_fresh`]), and then nothing can tell it was ever
/// kept aside: that call sees the maps, and the timer it is given, as they would have
/// been. Every other new dialog from a peer is filed at once, the same way
/// ([`Stack::file`]).
struct Fresh {
    key: DialogKey,
    instance: InstanceId,
    /// A new instance, made for this dialog (with it in its index); `None` when the
    /// dialog joined one that is filed already.
    info: Option<InstanceInfo>,
    slp: Arc<str>,
    /// The request's head, its session interval, when it came and when it times out.
    head: Kept,
    expire: Duration,
    created: Instant,
    deadline: Instant,
}

impl Fresh {
    /// Whether `msg` from instance `from` is the final answer to the fresh request.
    fn answered_by(&self, from: InstanceId, msg: &Message) -> bool {
        from == self.instance
            && matches!(msg.kind, Kind::Response(code) if code >= 200)
            && msg.cseq == self.head.cseq()
            && msg.dialogue_id == *self.key.id
    }
}

/// Whether a dialog a peer's request opens may be kept aside ([`Fresh`]): only when
/// that request came in through [`Stack::handle_peer`] itself, which returns right
/// after it. One from the loopback arrives in the middle of other work that looks in
/// the maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filing {
    MayWait,
    Now,
}

/// The generation that serves an SLP name, as [`Stack::add_slp`] was told.
#[derive(Clone)]
struct Serving {
    key: Arc<str>,
    dialog_events: bool,
}

/// A snapshot row for `/runtime/v1/jstack`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DialogView {
    pub id: String,
    pub peer: String,
    pub state: &'static str,
    pub slp: String,
    pub instance: InstanceId,
    pub age_ms: u128,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TransactionView {
    pub dialog: String,
    pub peer: String,
    pub cseq: u64,
    pub method: String,
    pub direction: &'static str,
    pub age_ms: u128,
}

pub struct Stack {
    config: StackConfig,
    dialogs: DialogMap,
    key_hasher: KeyHasher,
    instances: Map<InstanceId, InstanceInfo>,
    relids: Map<String, InstanceId>,
    /// SLP name → the key (generation) that new dialogs for that name go to.
    slps: Map<Arc<str>, Serving>,
    next_instance: InstanceId,
    timers: Timers<Timer>,
    out: VecDeque<Output>,
    /// Messages between two local instances, processed before an input call returns.
    loopback: VecDeque<(PeerName, Arc<Message>)>,
    /// The instance whose batch `handle_slp` is applying: it is not ended for being
    /// idle until the whole batch is applied.
    in_batch: Option<InstanceId>,
    fresh: Option<Fresh>,
    pub counters: Counters,
}

impl Stack {
    pub fn new(config: StackConfig) -> Stack {
        Stack {
            config,
            dialogs: DialogMap::default(),
            key_hasher: KeyHasher(Default::default()),
            instances: Map::default(),
            relids: Map::default(),
            slps: Map::default(),
            next_instance: 0,
            timers: Timers::default(),
            out: VecDeque::new(),
            loopback: VecDeque::new(),
            in_batch: None,
            fresh: None,
            counters: Counters::default(),
        }
    }

    /// New timer values apply to timers armed from now on.
    pub fn set_config(&mut self, config: StackConfig) {
        self.file_fresh();
        self.config = config;
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.file_fresh();
        self.timers.next_deadline()
    }

    /// SLP `name` is now served by `key` (a generation; compiled-in SLPs use their name):
    /// new dialogs for `name` get instances of `key`, existing ones stay where they are.
    /// Returns the on-load instance of `key`, which is pinned (lives until it ends itself,
    /// or its generation drains) and gets [`Delivery::Loaded`].
    ///
    /// `dialog_events` is the SLP's
    /// [`wants_dialog_events`](jsipd_plugin_api::slp::Slp::wants_dialog_events): the
    /// instances of one that says no are not sent DialogEnded or PeerDisconnected. Decided
    /// here rather than by its runner, an out-of-dialog request's DialogEnded costs
    /// nothing at all, not a command queued, handed over and dropped.
    pub fn add_slp(
        &mut self,
        name: &str,
        key: impl Into<Arc<str>>,
        dialog_events: bool,
    ) -> InstanceId {
        self.file_fresh();
        let key: Arc<str> = key.into();
        self.slps.insert(
            name.into(),
            Serving {
                key: key.clone(),
                dialog_events,
            },
        );
        let (id, info) = self.new_instance(key.clone(), true, dialog_events, DialogIndex::None);
        self.instances.insert(id, info);
        self.out.push_back(Output::ToSlp {
            slp: key,
            instance: id,
            event: Delivery::Loaded,
        });
        id
    }

    /// No new dialogs for `name`; returns the key that served it.
    pub fn remove_slp(&mut self, name: &str) -> Option<Arc<str>> {
        self.file_fresh();
        self.slps.remove(name).map(|s| s.key)
    }

    /// Lets generation `key` run out: its instances are unpinned and lose their relids,
    /// so each ends with its last dialog; idle ones end now.
    pub fn drain(&mut self, key: &str) {
        self.file_fresh();
        for id in self.instances_of_key(key) {
            if let Some(info) = self.instances.get_mut(&id) {
                info.pinned = false;
            }
            self.relids.retain(|_, owner| *owner != id);
            self.end_instance_if_idle(id);
            // The ones with dialogs left hear it, and may end them now.
            if self.instances.contains_key(&id) {
                self.deliver_to(id, Delivery::Draining);
            }
        }
    }

    /// Ends every instance of generation `key` at once (its drain took too long):
    /// confirmed sessions get a BYE, unanswered INVITEs 487, other requests 408.
    pub fn end_all(&mut self, now: Instant, key: &str, reason: &str) {
        self.file_fresh();
        for id in self.instances_of_key(key) {
            self.end_instance_as(now, id, reason, Ending::Drained);
        }
        self.run_loopback(now);
    }

    /// Oldest first, not in the map's hashing order: what is done to each is seen.
    fn instances_of_key(&self, key: &str) -> Vec<InstanceId> {
        let mut ids: Vec<InstanceId> = self
            .instances
            .iter()
            .filter(|(_, i)| &*i.slp == key)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Live instances of generation `key`.
    pub fn instances_of(&self, key: &str) -> usize {
        // The fresh one counts: `retire_if_drained` asks in the middle of a turn.
        let fresh = self.fresh.as_ref().is_some_and(|f| &*f.slp == key);
        self.instances.values().filter(|i| &*i.slp == key).count() + usize::from(fresh)
    }

    /// A new instance of `slp` that owns `dialogs` from the start, and its id; the
    /// caller files it (or keeps it aside with its dialog, [`Fresh`]).
    fn new_instance(
        &mut self,
        slp: Arc<str>,
        pinned: bool,
        dialog_events: bool,
        dialogs: DialogIndex<DialogKey>,
    ) -> (InstanceId, InstanceInfo) {
        self.next_instance += 1;
        let info = InstanceInfo {
            slp,
            dialogs,
            pinned,
            dialog_events,
        };
        (self.next_instance, info)
    }

    // ---------------------------------------------------------------- from peers

    /// A valid message arrived on the connection registered as `peer`. Boxed where the
    /// frame was read (see [`Delivery`]).
    pub fn handle_peer(&mut self, now: Instant, peer: PeerName, msg: impl Into<Box<Message>>) {
        self.file_fresh();
        self.on_peer_message(now, peer, msg.into(), Filing::MayWait);
        self.run_loopback(now);
    }

    fn on_peer_message(&mut self, now: Instant, peer: PeerName, msg: Box<Message>, filing: Filing) {
        let key = DialogKey::new(&self.key_hasher, peer, msg.dialogue_id.as_str().into());
        match msg.kind {
            Kind::Request(method) => self.request_from_peer(now, key, method, msg, filing),
            Kind::Response(code) => self.response_from_peer(now, key, code, msg),
        }
    }

    fn request_from_peer(
        &mut self,
        now: Instant,
        key: DialogKey,
        method: Method,
        msg: Box<Message>,
        filing: Filing,
    ) {
        let Some(dialog) = self.dialogs.get_mut(&key) else {
            return self.new_dialog_from_peer(now, key, method, msg, filing);
        };
        dialog.remote_cseq = dialog.remote_cseq.max(msg.cseq);
        if method != Method::Ack && dialog.received.contains(msg.cseq) {
            // A retransmission of a request still pending (or answered and awaiting ACK).
            return;
        }
        let keepalive =
            dialog.role == Role::Answering && dialog.state == State::Confirmed && dialog.session;
        let answering = dialog.role == Role::Answering;
        let pending = dialog.unanswered();
        if let (Method::Update, true, Some(e)) = (method, keepalive, msg.expire) {
            if e > 0 {
                dialog.expire = Duration::from_secs(e);
            }
        }
        match method {
            Method::Ack => self.ack_from_peer(key, msg),
            Method::Cancel => self.cancel_from_peer(now, key, msg),
            Method::Bye => {
                self.answer_peer(&key.peer, &msg, 200, None);
                // An INVITE still pending is over too.
                for cseq in pending {
                    self.final_to_peer(now, &key, cseq, 487, "the dialog ended with BYE");
                }
                self.deliver(&key, Delivery::Message(msg));
                self.end_dialog(&key);
            }
            Method::Update if keepalive => {
                // The caller's keepalive: answered here, the SLP is not bothered.
                self.answer_peer(&key.peer, &msg, 200, None);
                self.arm_session_timer(now, &key);
            }
            _ => {
                if method == Method::Invite && answering {
                    // A re-INVITE refreshes the session too.
                    self.arm_session_timer(now, &key);
                }
                let head = Kept::received(method, &msg);
                self.open_received(now, &key, method, msg, head);
            }
        }
    }

    fn new_dialog_from_peer(
        &mut self,
        now: Instant,
        key: DialogKey,
        method: Method,
        msg: Box<Message>,
        filing: Filing,
    ) {
        if method == Method::Ack {
            self.counters.dropped += 1;
            return;
        }
        if !method.may_start_dialog() {
            return self.answer_peer(
                &key.peer,
                &msg,
                481,
                Some(format!(
                    "no dialog {} here for this {method}",
                    msg.dialogue_id
                )),
            );
        }
        let target = select(&msg, |n| self.slps.get(n), |r| self.relids.get(r).copied());
        // Either way the instance has the dialog in its index when this match is done.
        let (instance, slp, new_info) = match target {
            Err(refusal) => {
                return self.answer_peer(&key.peer, &msg, refusal.code, Some(refusal.reason))
            }
            Ok(Target::Join(id))
                if self
                    .instances
                    .get(&id)
                    .is_some_and(|i| i.dialogs.contains(&key.id)) =>
            {
                // The instance could not tell the two dialogs apart in what it sends.
                return self.answer_peer(
                    &key.peer,
                    &msg,
                    400,
                    Some(format!(
                        "the instance behind this relid already has a dialog {}; use another DialogueID",
                        msg.dialogue_id
                    )),
                );
            }
            Ok(Target::Join(id)) => match self.instances.get_mut(&id) {
                Some(info) => {
                    info.dialogs.insert(key.clone());
                    (id, info.slp.clone(), None)
                }
                None => {
                    return self.answer_peer(
                        &key.peer,
                        &msg,
                        404,
                        Some("relid's instance ended".into()),
                    )
                }
            },
            Ok(Target::New(serving)) => {
                let Serving {
                    key: slp,
                    dialog_events,
                } = serving.clone();
                // Made with the dialog in its index: no lookup to file it there.
                let dialogs = DialogIndex::One(key.clone());
                let (id, info) = self.new_instance(slp.clone(), false, dialog_events, dialogs);
                (id, slp, Some(info))
            }
        };
        let mut msg = msg;
        let expire = self.session_expire(&mut msg);
        self.counters.dialogs_started += 1;
        let fresh = Fresh {
            key,
            instance,
            info: new_info,
            slp: slp.clone(),
            head: Kept::received(method, &msg),
            expire,
            created: now,
            deadline: now + self.transaction_wait(method),
        };
        // Kept aside only when it ends with its first answer, as a non-INVITE does, and
        // its instance is its own.
        if filing == Filing::MayWait && fresh.info.is_some() && method != Method::Invite {
            self.fresh = Some(fresh);
        } else {
            self.file(fresh);
        }
        // Its request goes straight to the SLP.
        self.out.push_back(Output::ToSlp {
            slp,
            instance,
            event: Delivery::Message(msg),
        });
    }

    /// An INVITE without Expire gets `sessiontimer` (JSIP.md §4). Returns the interval;
    /// when the stack filled it in, the exact configured value is used (so milliseconds
    /// work in tests) while the field carries whole seconds.
    fn fill_expire(&self, msg: &mut Message) -> Duration {
        match msg.expire {
            Some(e) if e > 0 => Duration::from_secs(e),
            _ => {
                let t = self.config.sessiontimer;
                msg.expire = Some(t.as_secs_f64().ceil().max(1.0) as u64);
                t
            }
        }
    }

    /// A dialog-starting request's session interval: an INVITE gets its Expire filled in
    /// when it has none; other requests start no session.
    fn session_expire(&self, first: &mut Message) -> Duration {
        if first.method() == Some(Method::Invite) {
            self.fill_expire(first)
        } else {
            Duration::ZERO
        }
    }

    /// Records a new dialog started by `first` (what the dialog keeps of it: see
    /// [`head`] for a received one), with `expire` from [`Stack::session_expire`].
    /// The dialog belongs to `instance`'s SLP generation; false if that instance is gone.
    fn start_dialog(
        &mut self,
        now: Instant,
        key: DialogKey,
        instance: InstanceId,
        role: Role,
        first: Kept,
        expire: Duration,
    ) -> bool {
        let Some(info) = self.instances.get_mut(&instance) else {
            return false;
        };
        info.dialogs.insert(key.clone());
        let slp = info.slp.clone();
        self.counters.dialogs_started += 1;
        let dialog = Dialog::new(now, slp, instance, role, first, expire);
        self.dialogs.insert(key, dialog);
        true
    }

    /// Files a dialog a peer's request opened: its new instance, if it has one, and
    /// the dialog with that request's transaction in it, whose timer is set now. One
    /// insert into each map.
    fn file(&mut self, fresh: Fresh) {
        let Fresh {
            key,
            instance,
            info,
            slp,
            head,
            expire,
            created,
            deadline,
        } = fresh;
        if let Some(info) = info {
            self.instances.insert(instance, info);
        }
        let cseq = head.cseq();
        let transaction = self.received_transaction(&key, cseq, head.clone(), created, deadline);
        let mut dialog = Dialog::new(created, slp, instance, Role::Answering, head, expire);
        dialog.received.insert(cseq, transaction);
        self.dialogs.insert(key, dialog);
    }

    /// Files the dialog kept aside ([`Fresh`]), if any.
    fn file_fresh(&mut self) {
        // Asked first: `take` would move the whole (empty) slot out and back.
        if self.fresh.is_some() {
            let fresh = self.fresh.take().expect("just asked");
            self.file(fresh);
        }
    }

    /// The transaction of request `cseq` received on dialog `key` at `started`, its
    /// timer set for `deadline`; it keeps the request's head (`Kept::received`; for a
    /// dialog's first request, a copy of the dialog's).
    fn received_transaction(
        &mut self,
        key: &DialogKey,
        cseq: u64,
        head: Kept,
        started: Instant,
        deadline: Instant,
    ) -> Transaction {
        let timer = self.timers.set(
            deadline,
            Timer::Transaction {
                key: key.clone(),
                dir: Dir::Received,
                cseq,
            },
        );
        Transaction {
            request: head,
            timer: Some(timer),
            final_code: None,
            by_stack: false,
            started,
        }
    }

    /// How long a received request may wait for its answer.
    fn transaction_wait(&self, method: Method) -> Duration {
        if method == Method::Invite {
            self.config.prtimer
        } else {
            self.config.transtimer
        }
    }

    /// A request from the peer on a dialog it has, which the SLP must answer: its
    /// transaction is started and the SLP gets the request itself.
    fn open_received(
        &mut self,
        now: Instant,
        key: &DialogKey,
        method: Method,
        msg: Box<Message>,
        head: Kept,
    ) {
        let deadline = now + self.transaction_wait(method);
        let transaction = self.received_transaction(key, msg.cseq, head, now, deadline);
        if let Some(d) = self.dialogs.get_mut(key) {
            d.received.insert(msg.cseq, transaction);
            // As `deliver` does, with the dialog at hand.
            self.out.push_back(Output::ToSlp {
                slp: d.slp.clone(),
                instance: d.instance,
                event: Delivery::Message(msg),
            });
        }
    }

    fn ack_from_peer(&mut self, key: DialogKey, msg: Box<Message>) {
        let dialog = self.dialogs.get_mut(&key).expect("caller checked");
        let related = msg.related_id.unwrap_or(0);
        match dialog.received.get(related).map(|t| t.final_code) {
            Some(Some(code)) if code >= 300 => {
                // The ACK of a failed INVITE: nothing for the SLP; the attempt is over.
                let t = dialog.received.remove(related).expect("just seen");
                self.timers.cancel(t.timer);
                if related == dialog.first.cseq() {
                    self.end_dialog(&key);
                }
            }
            Some(Some(_)) => {
                // The ACK of a 2xx: may carry the answer, so the SLP gets it.
                if let Some(t) = dialog.received.remove(related) {
                    self.timers.cancel(t.timer);
                }
                self.deliver(&key, Delivery::Message(msg));
            }
            _ if dialog.state == State::Confirmed => self.deliver(&key, Delivery::Message(msg)),
            _ => self.counters.dropped += 1,
        }
    }

    fn cancel_from_peer(&mut self, now: Instant, key: DialogKey, msg: Box<Message>) {
        let dialog = self.dialogs.get(&key).expect("caller checked");
        let related = msg.related_id.unwrap_or(0);
        match dialog.received.get(related) {
            Some(invite) if invite.request.method() == Some(Method::Invite) => {
                let pending = invite.final_code.is_none();
                self.answer_peer(&key.peer, &msg, 200, None);
                if pending {
                    self.final_to_peer(now, &key, related, 487, "cancelled by the caller");
                    self.deliver(&key, Delivery::Message(msg));
                }
            }
            _ => self.answer_peer(
                &key.peer,
                &msg,
                481,
                Some(format!(
                    "no INVITE with CSeq {related} to cancel in this dialog"
                )),
            ),
        }
    }

    fn response_from_peer(&mut self, now: Instant, key: DialogKey, code: u16, msg: Box<Message>) {
        let Some(dialog) = self.dialogs.get_mut(&key) else {
            self.counters.dropped += 1;
            return;
        };
        let Some(txn) = dialog.sent.get_mut(msg.cseq) else {
            self.counters.dropped += 1;
            return;
        };
        if txn.final_code.is_some() {
            self.counters.dropped += 1;
            return;
        }
        let method = txn.request.method().expect("transactions hold requests");
        let by_stack = txn.by_stack;
        if code < 200 {
            // A provisional answer re-arms the timer.
            self.timers.cancel(txn.timer);
            txn.timer = Some(self.timers.set(
                now + provisional_wait(&self.config, method),
                Timer::Transaction {
                    key: key.clone(),
                    dir: Dir::Sent,
                    cseq: msg.cseq,
                },
            ));
            if !by_stack {
                self.deliver(&key, Delivery::Message(msg));
            }
            return;
        }
        let txn = dialog.sent.remove(msg.cseq).expect("just seen");
        self.timers.cancel(txn.timer);
        if by_stack {
            if method == Method::Update {
                dialog.missed_keepalives = 0;
            }
            return;
        }
        let first = msg.cseq == dialog.first.cseq() && dialog.role == Role::Calling;
        match method {
            Method::Invite if code < 300 => {
                let was_early = dialog.state == State::Early;
                dialog.state = State::Confirmed;
                self.deliver(&key, Delivery::Message(msg));
                if was_early {
                    self.arm_keepalive(now, &key);
                }
            }
            Method::Invite => {
                // 3xx–6xx: the stack ACKs for the SLP (JSIP.md §4).
                let ack = self.make_request(&key, Method::Ack, Some(msg.cseq));
                if let Some(ack) = ack {
                    self.send_to_peer(key.peer.clone(), ack);
                }
                self.deliver(&key, Delivery::Message(msg));
                if first {
                    self.end_dialog(&key);
                }
            }
            Method::Bye => {
                self.deliver(&key, Delivery::Message(msg));
                self.end_dialog(&key);
            }
            _ => {
                let session = dialog.session;
                self.deliver(&key, Delivery::Message(msg));
                if !session {
                    self.end_dialog(&key);
                }
            }
        }
    }

    // ---------------------------------------------------------------- from SLPs

    /// What instance `instance` did while handling one event. Checking whether the
    /// instance is finished only after the whole batch lets it answer the last request
    /// of a dialog and start a new dialog in the same event.
    pub fn handle_slp(
        &mut self,
        now: Instant,
        instance: InstanceId,
        actions: impl IntoIterator<Item = Action>,
    ) {
        let mut actions = actions.into_iter();
        let (first, second) = (actions.next(), actions.next());
        if let (Some(Action::Send(msg)), None) = (&first, &second) {
            if self
                .fresh
                .as_ref()
                .is_some_and(|f| f.answered_by(instance, msg))
            {
                let Some(Action::Send(msg)) = first else {
                    unreachable!("matched above")
                };
                return self.answer_fresh(now, msg);
            }
        }
        self.file_fresh();
        let actions = first.into_iter().chain(second).chain(actions);
        if !self.instances.contains_key(&instance) {
            // It ended (or failed) while this batch was on its way.
            self.counters.dropped += actions.count() as u64;
            return;
        }
        let mut end = false;
        self.in_batch = Some(instance);
        for action in actions {
            match action {
                Action::Send(msg) => self.on_slp_message(now, instance, msg),
                Action::Relid(relid) => {
                    self.relids.insert(relid, instance);
                    if let Some(info) = self.instances.get_mut(&instance) {
                        info.pinned = true;
                    }
                }
                Action::End => end = true,
            }
        }
        self.run_loopback(now);
        self.in_batch = None;
        if end {
            self.end_instance(now, instance, "the SLP instance ended");
        } else {
            self.end_instance_if_idle(instance);
        }
        self.run_loopback(now);
    }

    /// An SLP call panicked: the instance ends and every request it had not answered
    /// gets 500 (JSIP.md §5).
    pub fn handle_slp_failure(&mut self, now: Instant, instance: InstanceId) {
        self.file_fresh();
        if self.instances.contains_key(&instance) {
            self.counters.instances_failed += 1;
            self.end_instance(now, instance, "the SLP failed while handling this dialog");
            self.run_loopback(now);
        }
    }

    /// The batch `[Send(msg)]` of the fresh dialog's instance, `msg` the final answer to
    /// its request: what the other path does for it (`on_slp_message`, `end_dialog`,
    /// `end_instance_if_idle`), in the same order, with the dialog and its instance at
    /// hand rather than filed.
    fn answer_fresh(&mut self, now: Instant, msg: Arc<Message>) {
        // What is needed of it is copied out and the rest dropped where it is: taking
        // the whole of it out of `self.fresh` copied its 250 bytes.
        let fresh = self.fresh.as_ref().expect("the caller saw it");
        let (peer, instance, slp) = (fresh.key.peer.clone(), fresh.instance, fresh.slp.clone());
        let info = fresh
            .info
            .as_ref()
            .expect("kept aside with its own instance");
        let ended = Delivery::DialogEnded {
            dialogue_id: fresh.key.id.clone(),
        };
        let ended = info.hears(&ended).then_some(ended);
        self.fresh = None;
        self.send_to_peer(peer, msg);
        if let Some(event) = ended {
            self.out.push_back(Output::ToSlp {
                slp: slp.clone(),
                instance,
                event,
            });
        }
        self.run_loopback(now);
        self.out.push_back(Output::InstanceEnded { slp, instance });
        self.run_loopback(now);
    }

    fn on_slp_message(&mut self, now: Instant, instance: InstanceId, msg: Arc<Message>) {
        let existing = self
            .instances
            .get(&instance)
            .and_then(|i| i.dialogs.get(msg.dialogue_id.as_str()))
            .cloned();
        match (msg.kind, existing) {
            (Kind::Response(code), Some(key)) => self.response_from_slp(now, key, code, msg),
            (Kind::Response(_), None) => self.counters.dropped += 1,
            (Kind::Request(method), Some(key)) => self.send_in_dialog(now, key, method, msg),
            (Kind::Request(Method::Ack | Method::Cancel), None) => self.counters.dropped += 1,
            (Kind::Request(method), None) => {
                let peer = match self.route(instance, &msg) {
                    Ok(peer) => peer,
                    Err(reason) => {
                        let mut r = msg.response(400);
                        r.reason = Some(reason);
                        return self.deliver_to(instance, Delivery::Message(r.into()));
                    }
                };
                let key = DialogKey::new(&self.key_hasher, peer, msg.dialogue_id.as_str().into());
                if self.dialogs.contains_key(&key) {
                    // Another instance's dialog with the same peer and ID.
                    let mut r = msg.response(400);
                    r.reason = Some(
                        "DialogueID already in use with this peer; use Host::new_dialogue_id"
                            .into(),
                    );
                    return self.deliver_to(instance, Delivery::Message(r.into()));
                }
                let mut msg = msg;
                // Only the stack holds it yet, so this changes it in place.
                let expire = self.session_expire(Arc::make_mut(&mut msg));
                // The request the SLP sent is what the dialog and its transaction keep,
                // and what goes to the peer: one value, shared.
                let first = Kept::Sent(msg.clone());
                if self.start_dialog(now, key.clone(), instance, Role::Calling, first, expire) {
                    self.open_sent(now, &key, method, msg, false);
                }
            }
        }
    }

    /// The peer name a new request from an SLP goes to: `Router[0]`, else the
    /// Request-URI, as `user@host[:port]`; a local SLP named by `Router[0]` is reached
    /// through the loopback names.
    fn route(&self, instance: InstanceId, msg: &Message) -> Result<PeerName, String> {
        let target = match &msg.router {
            Some(r) => {
                let first = router_first(r).map_err(|e| format!("Router: {e}"))?;
                // An explicit port or an IP address names a node, even one that loads
                // an SLP of the same name; otherwise an SLP name means this node.
                let names_a_node = first.port.is_some()
                    || first.host.starts_with('[')
                    || first.host.parse::<std::net::Ipv4Addr>().is_ok();
                let local = !names_a_node
                    && first
                        .type_param()
                        .or(first.host_label())
                        .is_some_and(|n| self.slps.contains_key(n))
                    || first.relid().is_some_and(|r| self.relids.contains_key(r));
                if local {
                    return Ok(format!("{LOCAL}{instance}>").into());
                }
                first
            }
            None => {
                let uri = msg.request_uri.as_deref().unwrap_or("");
                UriRef::parse(uri).map_err(|e| format!("Request-URI: {e}"))?
            }
        };
        // A user of this node's own domain is the client connected under that userid.
        if let (Some(user), None) = (target.user, target.port) {
            if !self.config.realm.is_empty() && target.host == self.config.realm {
                return Ok(user.into());
            }
        }
        Ok(peer_name(&target).into())
    }

    fn send_in_dialog(&mut self, now: Instant, key: DialogKey, method: Method, msg: Arc<Message>) {
        let dialog = self.dialogs.get_mut(&key).expect("indexed");
        if method != Method::Ack && dialog.sent.contains(msg.cseq) {
            // Two pending requests cannot share a CSeq: the answer could not say which
            // one it is for. Refuse the second, toward the SLP that sent it.
            let instance = dialog.instance;
            let mut r = msg.response(400);
            r.reason = Some(format!(
                "CSeq {} is already used by a pending request in this dialog",
                msg.cseq
            ));
            return self.deliver_to(instance, Delivery::Message(r.into()));
        }
        dialog.local_cseq = dialog.local_cseq.max(msg.cseq);
        match method {
            Method::Ack => {
                // The INVITE it acknowledges completed with its final answer: an ACK
                // is a transaction of its own, without answer or timer.
                self.send_to_peer(key.peer.clone(), msg);
            }
            _ => self.open_sent(now, &key, method, msg, false),
        }
    }

    fn open_sent(
        &mut self,
        now: Instant,
        key: &DialogKey,
        method: Method,
        msg: impl Into<Arc<Message>>,
        by_stack: bool,
    ) {
        let msg: Arc<Message> = msg.into();
        let wait = if method == Method::Invite {
            self.config.prtimer * 2
        } else {
            self.config.transtimer
        };
        let timer = self.timers.set(
            now + wait,
            Timer::Transaction {
                key: key.clone(),
                dir: Dir::Sent,
                cseq: msg.cseq,
            },
        );
        if let Some(d) = self.dialogs.get_mut(key) {
            d.sent.insert(
                msg.cseq,
                Transaction {
                    request: Kept::Sent(msg.clone()),
                    timer: Some(timer),
                    final_code: None,
                    by_stack,
                    started: now,
                },
            );
        }
        self.send_to_peer(key.peer.clone(), msg);
    }

    fn response_from_slp(&mut self, now: Instant, key: DialogKey, code: u16, msg: Arc<Message>) {
        let dialog = self.dialogs.get_mut(&key).expect("indexed");
        let session = dialog.session;
        let Some(txn) = dialog.received.get_mut(msg.cseq) else {
            self.counters.dropped += 1;
            return;
        };
        if txn.final_code.is_some() {
            self.counters.dropped += 1;
            return;
        }
        let method = txn.request.method().expect("transactions hold requests");
        if code < 200 {
            self.timers.cancel(txn.timer.take());
            txn.timer = Some(self.timers.set(
                now + provisional_wait(&self.config, method),
                Timer::Transaction {
                    key: key.clone(),
                    dir: Dir::Received,
                    cseq: msg.cseq,
                },
            ));
            return self.send_to_peer(key.peer.clone(), msg);
        }
        let cseq = msg.cseq;
        self.send_to_peer(key.peer.clone(), msg);
        if method != Method::Invite && !session {
            // The dialog ends with this transaction, which goes with it (its timer
            // too): nothing of it to mark answered first.
            return self.end_dialog(&key);
        }
        self.complete_received(now, &key, cseq, code);
        if method == Method::Invite && code < 300 {
            if let Some(d) = self.dialogs.get_mut(&key) {
                d.state = State::Confirmed;
            }
            self.arm_session_timer(now, &key);
        }
    }

    /// Marks a received request answered finally. An INVITE's transaction stays for
    /// `transtimer` to catch its ACK (and recognise a retransmitted INVITE); any other
    /// is done.
    fn complete_received(&mut self, now: Instant, key: &DialogKey, cseq: u64, code: u16) {
        let Some(d) = self.dialogs.get_mut(key) else {
            return;
        };
        let Some(t) = d.received.get_mut(cseq) else {
            return;
        };
        t.final_code = Some(code);
        self.timers.cancel(t.timer.take());
        if t.request.method() == Some(Method::Invite) {
            t.timer = Some(self.timers.set(
                now + self.config.transtimer,
                Timer::AckWait {
                    key: key.clone(),
                    cseq,
                },
            ));
        } else {
            d.received.remove(cseq);
        }
    }

    // ---------------------------------------------------------------- timers

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.file_fresh();
        while let Some((id, timer)) = self.timers.pop_due(now) {
            self.fire(now, id, timer);
            self.run_loopback(now);
        }
    }

    fn fire(&mut self, now: Instant, id: TimerId, timer: Timer) {
        match timer {
            Timer::Transaction { key, dir, cseq } => self.transaction_timeout(id, key, dir, cseq),
            Timer::AckWait { key, cseq } => {
                let Some(d) = self.dialogs.get_mut(&key) else {
                    return;
                };
                let Some(t) = d.received.remove(cseq) else {
                    return;
                };
                // A failed first INVITE ends the dialog; a 2xx's missing ACK only ends
                // the wait (the session timer decides whether the peer is still there).
                let failed = t.final_code.is_some_and(|c| c >= 300);
                if cseq == d.first.cseq() && failed {
                    self.end_dialog(&key);
                }
            }
            Timer::SessionExpired { key } => {
                let Some(d) = self.dialogs.get_mut(&key) else {
                    return;
                };
                if d.session_timer != Some(id) {
                    return;
                }
                d.session_timer = None;
                self.bye_both_ways(
                    &key,
                    "session timer expired: no UPDATE or re-INVITE within Expire",
                );
            }
            Timer::Keepalive { key } => {
                let Some(d) = self.dialogs.get_mut(&key) else {
                    return;
                };
                if d.session_timer != Some(id) {
                    return;
                }
                d.session_timer = None;
                if let Some(update) = self.make_request(&key, Method::Update, None) {
                    self.open_sent(now, &key, Method::Update, update, true);
                }
                self.arm_keepalive(now, &key);
            }
        }
    }

    fn transaction_timeout(&mut self, id: TimerId, key: DialogKey, dir: Dir, cseq: u64) {
        let Some(d) = self.dialogs.get_mut(&key) else {
            return;
        };
        let txns = match dir {
            Dir::Received => &mut d.received,
            Dir::Sent => &mut d.sent,
        };
        if txns.get(cseq).map(|t| t.timer) != Some(Some(id)) {
            return;
        }
        let txn = txns.remove(cseq).expect("just seen");
        self.counters.transactions_timed_out += 1;
        let method = txn.request.method().expect("transactions hold requests");
        let first = cseq == d.first.cseq();
        let session = d.session;
        match dir {
            Dir::Received => {
                // The SLP did not answer in time: the peer gets 408, and for an INVITE
                // the SLP gets a CANCEL so it stops working on it.
                let mut r = txn.request.response(408);
                r.reason = Some(format!("the service did not answer this {method} in time"));
                self.send_to_peer(key.peer.clone(), r);
                if method == Method::Invite {
                    let mut cancel = txn.request.to_message();
                    cancel.kind = Kind::Request(Method::Cancel);
                    cancel.related_id = Some(cseq);
                    cancel.body = None;
                    cancel.reason =
                        Some("no final answer within prtimer; the caller got 408".into());
                    self.deliver(&key, Delivery::Message(cancel.into()));
                }
                if (first && method == Method::Invite) || !session {
                    self.end_dialog(&key);
                }
            }
            Dir::Sent if txn.by_stack => {
                if method == Method::Update {
                    d.missed_keepalives += 1;
                    if d.missed_keepalives >= 3 {
                        self.bye_both_ways(&key, "3 keepalive UPDATEs went unanswered");
                    }
                }
            }
            Dir::Sent => {
                if !matches!(method, Method::Bye | Method::Cancel) {
                    let mut r = txn.request.response(408);
                    r.reason = Some(format!("no answer from {} in time", key.peer));
                    self.deliver(&key, Delivery::Message(r.into()));
                }
                // An early dialog with nothing pending can never be confirmed.
                let stalled = self.dialogs.get(&key).is_some_and(|d| {
                    d.state == State::Early && d.sent.is_empty() && d.received.is_empty()
                });
                if (first && method == Method::Invite)
                    || !session
                    || method == Method::Bye
                    || stalled
                {
                    self.end_dialog(&key);
                }
            }
        }
    }

    fn arm_session_timer(&mut self, now: Instant, key: &DialogKey) {
        let Some(d) = self.dialogs.get_mut(key) else {
            return;
        };
        if !d.session || d.role != Role::Answering || d.state != State::Confirmed {
            return;
        }
        self.timers.cancel(d.session_timer.take());
        d.session_timer = Some(
            self.timers
                .set(now + d.expire, Timer::SessionExpired { key: key.clone() }),
        );
    }

    fn arm_keepalive(&mut self, now: Instant, key: &DialogKey) {
        let Some(d) = self.dialogs.get_mut(key) else {
            return;
        };
        if !d.session || d.role != Role::Calling || d.state != State::Confirmed {
            return;
        }
        self.timers.cancel(d.session_timer.take());
        d.session_timer = Some(
            self.timers
                .set(now + d.expire / 3, Timer::Keepalive { key: key.clone() }),
        );
    }

    // ---------------------------------------------------------------- helpers

    /// A request the stack makes in a dialog (keepalive UPDATE, BYE, ACK of a failure),
    /// addressed like the dialog's first request from our side.
    fn make_request(
        &mut self,
        key: &DialogKey,
        method: Method,
        related: Option<u64>,
    ) -> Option<Message> {
        let d = self.dialogs.get_mut(key)?;
        let (uri, from, to) = d.addressing(d.role == Role::Calling);
        // Every request the stack makes, an ACK included, takes the next CSeq of our side.
        d.local_cseq += 1;
        let cseq = d.local_cseq;
        let mut m = Message::request(method, &uri, &from, &to, &key.id, cseq);
        m.related_id = related;
        m.router = d
            .first
            .router()
            .filter(|_| d.role == Role::Calling)
            .map(String::from);
        Some(m)
    }

    /// Ends a session from our side: BYE to the peer and a BYE to the SLP, as if the
    /// peer had hung up (JSIP.md §4 "BYE both ways").
    fn bye_both_ways(&mut self, key: &DialogKey, reason: &str) {
        if let Some(mut bye) = self.make_request(key, Method::Bye, None) {
            bye.reason = Some(reason.into());
            self.send_to_peer(key.peer.clone(), bye);
        }
        if let Some(d) = self.dialogs.get(key) {
            let (uri, from, to) = d.addressing(d.role == Role::Answering);
            let mut bye =
                Message::request(Method::Bye, &uri, &from, &to, &key.id, d.remote_cseq + 1);
            bye.reason = Some(reason.into());
            self.deliver(key, Delivery::Message(bye.into()));
        }
        self.end_dialog(key);
    }

    /// Sends a final answer for a pending received request (the stack answering for the SLP).
    fn final_to_peer(&mut self, now: Instant, key: &DialogKey, cseq: u64, code: u16, reason: &str) {
        let Some(t) = self.dialogs.get(key).and_then(|d| d.received.get(cseq)) else {
            return;
        };
        if t.final_code.is_some() {
            return;
        }
        let mut r = t.request.response(code);
        r.reason = Some(reason.into());
        self.send_to_peer(key.peer.clone(), r);
        self.complete_received(now, key, cseq, code);
    }

    /// An answer the stack gives on its own, outside any SLP transaction.
    fn answer_peer(&mut self, peer: &PeerName, req: &Message, code: u16, reason: Option<String>) {
        let mut r = req.response(code);
        r.reason = reason;
        self.send_to_peer(peer.clone(), r);
    }

    fn deliver(&mut self, key: &DialogKey, event: Delivery) {
        // A dialog's instance is alive while it is (`check_invariants`), and serves the
        // dialog's SLP generation: no need to look the instance up.
        if let Some(d) = self.dialogs.get(key) {
            self.out.push_back(Output::ToSlp {
                slp: d.slp.clone(),
                instance: d.instance,
                event,
            });
        }
    }

    fn deliver_to(&mut self, instance: InstanceId, event: Delivery) {
        if let Some(info) = self.instances.get(&instance) {
            if !info.hears(&event) {
                return;
            }
            self.out.push_back(Output::ToSlp {
                slp: info.slp.clone(),
                instance,
                event,
            });
        }
    }

    fn end_dialog(&mut self, key: &DialogKey) {
        let Some(d) = self.dialogs.remove(key) else {
            return;
        };
        for t in d.received.values().chain(d.sent.values()) {
            self.timers.cancel(t.timer);
        }
        self.timers.cancel(d.session_timer);
        // As `deliver_to` would, with the instance at hand.
        if let Some(info) = self.instances.get_mut(&d.instance) {
            info.dialogs.remove(&key.id);
            let event = Delivery::DialogEnded {
                dialogue_id: key.id.clone(),
            };
            if info.hears(&event) {
                self.out.push_back(Output::ToSlp {
                    slp: info.slp.clone(),
                    instance: d.instance,
                    event,
                });
            }
        }
        // An instance between events is checked here; one inside `handle_slp` is
        // checked at the end of its batch.
        self.end_instance_if_idle(d.instance);
    }

    /// The socket of `peer` closed (not replaced): each of its dialogs' instances hears
    /// [`Delivery::PeerDisconnected`]. The dialogs stay; the peer may come back.
    pub fn peer_disconnected(&mut self, peer: &str) {
        self.file_fresh();
        let mut keys: Vec<&DialogKey> = self.dialogs.keys().filter(|k| &*k.peer == peer).collect();
        // Dialog order is the map's; make the events' order not depend on hashing.
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        let events: Vec<(InstanceId, Arc<str>)> = keys
            .into_iter()
            .map(|k| (self.dialogs[k].instance, k.id.clone()))
            .collect();
        for (instance, dialogue_id) in events {
            self.deliver_to(instance, Delivery::PeerDisconnected { dialogue_id });
        }
    }

    fn end_instance_if_idle(&mut self, instance: InstanceId) {
        if self.in_batch == Some(instance) {
            return;
        }
        // One lookup, to look and to take out.
        if let Entry::Occupied(e) = self.instances.entry(instance) {
            if e.get().dialogs.is_empty() && !e.get().pinned {
                self.out.push_back(Output::InstanceEnded {
                    slp: e.remove().slp,
                    instance,
                });
            }
        }
    }

    /// Ends an instance and everything it owns: unanswered requests get 500, confirmed
    /// sessions a BYE, pending sent requests are forgotten.
    fn end_instance(&mut self, now: Instant, instance: InstanceId, reason: &str) {
        self.end_instance_as(now, instance, reason, Ending::Failed)
    }

    fn end_instance_as(&mut self, now: Instant, instance: InstanceId, reason: &str, how: Ending) {
        let Some(info) = self.instances.remove(&instance) else {
            return;
        };
        self.relids.retain(|_, owner| *owner != instance);
        let mut keys: Vec<DialogKey> = info.dialogs.keys().cloned().collect();
        // The index's order is its hashing's; the peers hear in an order that is not.
        keys.sort_by(|a, b| (&a.id, &a.peer).cmp(&(&b.id, &b.peer)));
        for key in keys {
            let Some(d) = self.dialogs.get(&key) else {
                continue;
            };
            let pending: Vec<(u64, u16)> = d
                .unanswered()
                .into_iter()
                .map(|cseq| {
                    let invite = d.received.get(cseq).expect("unanswered").request.method()
                        == Some(Method::Invite);
                    let code = match how {
                        Ending::Failed => 500,
                        Ending::Drained if invite => 487,
                        Ending::Drained => 408,
                    };
                    (cseq, code)
                })
                .collect();
            let confirmed = d.session && d.state == State::Confirmed;
            for (cseq, code) in pending {
                self.final_to_peer(now, &key, cseq, code, reason);
            }
            if confirmed {
                if let Some(mut bye) = self.make_request(&key, Method::Bye, None) {
                    bye.reason = Some(reason.into());
                    self.send_to_peer(key.peer.clone(), bye);
                }
            }
            if let Some(d) = self.dialogs.remove(&key) {
                for t in d.received.values().chain(d.sent.values()) {
                    self.timers.cancel(t.timer);
                }
                self.timers.cancel(d.session_timer);
            }
        }
        self.out.push_back(Output::InstanceEnded {
            slp: info.slp,
            instance,
        });
    }

    /// The one way out to a peer. Names of local instances (see [`LOCAL`]) never
    /// leave the stack: their messages wait in `loopback` for [`Stack::run_loopback`].
    fn send_to_peer(&mut self, name: PeerName, msg: impl Into<Arc<Message>>) {
        let msg = msg.into();
        if name.starts_with(LOCAL) {
            self.loopback.push_back((name, msg));
        } else {
            self.out.push_back(Output::ToPeer { name, msg });
        }
    }

    /// Delivers what local instances sent each other, as if it came from a peer.
    /// Inlined for its first line: it is called after every input and nearly always
    /// has nothing to do.
    #[inline(always)]
    fn run_loopback(&mut self, now: Instant) {
        if !self.loopback.is_empty() {
            self.deliver_loopback(now);
        }
    }

    fn deliver_loopback(&mut self, now: Instant) {
        // What it delivers looks in the maps.
        self.file_fresh();
        while let Some((name, msg)) = self.loopback.pop_front() {
            let other: PeerName = match name.strip_suffix('>') {
                Some(base) => format!("{base}<").into(),
                None => format!("{}>", name.trim_end_matches('<')).into(),
            };
            self.on_peer_message(now, other, Box::new(Arc::unwrap_or_clone(msg)), Filing::Now);
        }
    }

    // ---------------------------------------------------------------- views

    /// Cross-checks the indexes; for tests and the fuzzer.
    #[cfg(test)]
    pub fn check_invariants(&self) -> Result<(), String> {
        for (key, d) in &self.dialogs {
            let info = self.instances.get(&d.instance).ok_or_else(|| {
                format!("dialog {key:?} belongs to ended instance {}", d.instance)
            })?;
            let fresh = DialogKey::new(&self.key_hasher, key.peer.clone(), key.id.clone());
            if fresh.hash != key.hash {
                return Err(format!("dialog {key:?} is filed under another hash"));
            }
            if info.dialogs.get(&key.id) != Some(key) {
                return Err(format!(
                    "instance {} does not list its dialog {key:?}",
                    d.instance
                ));
            }
            if info.slp != d.slp {
                return Err(format!("dialog {key:?} is not of its instance's SLP"));
            }
            for t in d.received.values().chain(d.sent.values()) {
                if t.final_code.is_none() && t.timer.is_none() {
                    return Err(format!("pending transaction without a timer in {key:?}"));
                }
            }
        }
        for (id, info) in &self.instances {
            for key in info.dialogs.keys() {
                if info.dialogs.get(&key.id) != Some(key)
                    || self.dialogs.get(key).map(|d| d.instance) != Some(*id)
                {
                    return Err(format!("instance {id} lists a dialog not its own: {key:?}"));
                }
            }
        }
        for owner in self.relids.values() {
            if !self.instances.contains_key(owner) {
                return Err(format!("a relid belongs to ended instance {owner}"));
            }
        }
        if let Some(f) = &self.fresh {
            let Some(info) = &f.info else {
                return Err(format!(
                    "fresh dialog {:?} is kept aside without its own instance",
                    f.key
                ));
            };
            if self.dialogs.contains_key(&f.key) || self.instances.contains_key(&f.instance) {
                return Err(format!("fresh dialog {:?} is filed too", f.key));
            }
            if info.dialogs.get(&f.key.id) != Some(&f.key)
                || info.dialogs.keys().count() != 1
                || info.slp != f.slp
                || info.pinned
                || f.head.method() == Some(Method::Invite)
            {
                return Err(format!(
                    "fresh dialog {:?} is not one new instance's only, out-of-session dialog",
                    f.key
                ));
            }
        }
        Ok(())
    }

    /// Whether a dialog is kept aside ([`Fresh`]), for tests of that path.
    #[cfg(test)]
    pub fn keeps_one_aside(&self) -> bool {
        self.fresh.is_some()
    }

    pub fn dialog_count(&mut self) -> usize {
        self.file_fresh();
        self.dialogs.len()
    }

    pub fn timer_count(&mut self) -> usize {
        self.file_fresh();
        self.timers.len()
    }

    pub fn instance_count(&mut self) -> usize {
        self.file_fresh();
        self.instances.len()
    }

    pub fn dialogs_view(&mut self, now: Instant) -> Vec<DialogView> {
        self.file_fresh();
        let mut v: Vec<DialogView> = self
            .dialogs
            .iter()
            .map(|(k, d)| DialogView {
                id: k.id.to_string(),
                peer: k.peer.to_string(),
                state: match d.state {
                    State::Early => "early",
                    State::Confirmed => "confirmed",
                },
                slp: d.slp.to_string(),
                instance: d.instance,
                age_ms: now.saturating_duration_since(d.created).as_millis(),
            })
            .collect();
        v.sort_by(|a, b| b.age_ms.cmp(&a.age_ms).then(a.id.cmp(&b.id)));
        v
    }

    pub fn transactions_view(&mut self, now: Instant) -> Vec<TransactionView> {
        self.file_fresh();
        let mut v = Vec::new();
        for (k, d) in &self.dialogs {
            for (dir, txns) in [("received", &d.received), ("sent", &d.sent)] {
                for (cseq, t) in txns.iter() {
                    v.push(TransactionView {
                        dialog: k.id.to_string(),
                        peer: k.peer.to_string(),
                        cseq,
                        method: t.request.method().map_or("?", Method::as_str).to_string(),
                        direction: dir,
                        age_ms: now.saturating_duration_since(t.started).as_millis(),
                    });
                }
            }
        }
        v.sort_by_key(|t| std::cmp::Reverse(t.age_ms));
        v
    }
}

/// How long a transaction may wait after a provisional answer (JSIP.md §3).
fn provisional_wait(config: &StackConfig, method: Method) -> Duration {
    if method == Method::Invite {
        config.prtimer * 2
    } else {
        config.prtimer
    }
}

/// `user@host[:port]`: the registry name of a URI (JSIP.md §1).
pub fn peer_name(uri: &UriRef) -> String {
    let mut name = uri.user_at_host();
    if let Some(p) = uri.port {
        name.push_str(&format!(":{p}"));
    }
    name
}
