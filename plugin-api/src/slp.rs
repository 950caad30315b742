//! The SLP (service logic plugin) contract: what the host calls, and what it offers back.
//!
//! The host's dispatch layer drives every SLP through these two traits, whether the SLP is
//! compiled into the daemon or loaded from a `.so`; the `.so` boundary wraps them, it does
//! not replace them. All calls for one SLP happen on one thread at a time. By default
//! that is a thread the host owns (the SLP's *runner*), never one of the daemon's async
//! workers, so an SLP may block briefly without stalling the network; it must not block
//! for long, as its other dialogs wait. An SLP that never blocks can say so
//! ([`Slp::never_blocks`], or `Plugin::SLP_NEVER_BLOCKS` for a `.so`) and is then called
//! inline, under the daemon's node lock, on the task of the socket whose frame it
//! answers (or the node task's, for timers and the other inputs), which saves two
//! thread wake-ups per message. Calls are still one at a time, but not always on the
//! same OS thread.
//!
//! Life of an SLP (JSIP.md §5):
//! - At load the host creates one instance and gives it [`Event::Loaded`]: the "on load"
//!   instance, for work that belongs to no dialog (timers, announcing itself).
//! - The first request of a new dialog that dispatch picks this SLP for creates a new
//!   instance ([`Slp::new_instance`]); every later message of that dialog goes to it.
//! - An instance may own many dialogs: the ones it starts and the ones that join it with
//!   `relid=`. It ends when it calls [`Host::end`], or on its own once its last dialog has
//!   ended and it has never handed out a relid.
//! - State shared by all instances (the SLP's *context*) lives in the `Slp` value and is
//!   handed to instances when they are created, typically as an `Rc` or `Arc`.

use std::time::Duration;

use crate::jsip::Message;

/// A service: makes instances and hears about load, reload and unload.
pub trait Slp: Send {
    /// A fresh instance, for a new dialog or for the on-load instance.
    fn new_instance(&mut self) -> Box<dyn Instance>;

    /// The daemon re-read its configuration (SIGHUP); re-read your own files.
    fn on_reload(&mut self) {}

    /// Called once, after the last instance was dropped and before the SLP is dropped.
    fn on_unload(&mut self) {}

    /// Whether the host may run this SLP on its network task rather than on a thread of
    /// its own: only for SLPs that never block (see `Plugin::SLP_NEVER_BLOCKS`, which
    /// is how a `.so` says it).
    fn never_blocks(&self) -> bool {
        false
    }

    /// Whether its instances act on [`Event::DialogEnded`] and
    /// [`Event::PeerDisconnected`]. An SLP that keeps nothing per dialog (an echo, a
    /// lookup, a service that answers each request and forgets it) says `false`, and
    /// the host then does not call its instances with them: for an out-of-dialog
    /// request, that is one call of the two it costs. `Plugin::SLP_WANTS_DIALOG_EVENTS`
    /// is how a `.so` says it.
    fn wants_dialog_events(&self) -> bool {
        true
    }
}

/// The per-dialog (or per-relid group) state of an SLP.
pub trait Instance: Send {
    /// Handles one event. Answers and new requests go out through `host`.
    ///
    /// A panic here ends this instance: each request it had not answered is answered
    /// `500`, and the SLP keeps serving its other instances.
    fn on_event(&mut self, event: Event, host: &mut dyn Host);
}

/// What happens to an instance.
// Nearly every event is a `Message`; boxing it would add an allocation per message to
// save a few hundred bytes on the rare other events.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// This is the SLP's on-load instance, created when the SLP was loaded.
    Loaded,
    /// A request or response for one of this instance's dialogs.
    ///
    /// The stack has already done its part (JSIP.md §3–§4): a CANCEL arrives after the
    /// INVITE was answered 487, a BYE after it was answered 200, a 408 when a request
    /// you sent timed out, and a CANCEL when you did not answer an INVITE in time.
    Message(Message),
    /// A dialog of this instance ended (after its last transaction, a BYE, a timeout).
    DialogEnded { dialogue_id: String },
    /// A timer set with [`Host::set_timer`] fired.
    Timer(u64),
    /// The socket of this dialog's peer closed. The dialog itself lives on: the peer may
    /// reconnect with the same userid within `reconnect_window` (JSIP.md §1), and its
    /// dialogs carry on then. This is for what must not outlive the peer's presence, such
    /// as keys it holds down on a remote keyboard. A replaced socket (a reconnect) is not
    /// a disconnect.
    PeerDisconnected { dialogue_id: String },
    /// This instance's SLP generation drains: a newer one was loaded, or the SLP is
    /// being unloaded. New dialogs go elsewhere; this instance's go on until they end
    /// or `drain_timeout` ends them. An instance whose dialogs last as long as someone
    /// watches (a video, a console) should end them now ([`Host::end`]), so that its
    /// peers come back on the new generation at once. Since ABI minor 4; instances
    /// that ignore it drain as before.
    Draining,
}

/// Services the host offers an instance while it handles an event.
pub trait Host {
    /// This instance's number, unique in the daemon's lifetime.
    fn instance_id(&self) -> u64;

    /// Sends a JSIP message: an answer to a request this instance received, a request in
    /// one of its dialogs, or the first request of a new dialog (routed by `Router[0]`,
    /// else the `Request-URI`; a `Router` naming an SLP of this node is delivered locally).
    fn send(&mut self, message: Message);

    /// A new DialogueID, unique in this daemon.
    fn new_dialogue_id(&mut self) -> String;

    /// An ID that routes requests carrying `relid=ID` in `Router[0]` to this instance.
    /// An instance that handed out a relid lives until it calls [`Host::end`].
    fn relid(&mut self) -> String;

    /// Ends this instance after the current event: its confirmed sessions get a BYE and
    /// requests it has not answered get `500`.
    fn end(&mut self);

    /// Calls [`Instance::on_event`] with [`Event::Timer`]`(token)` after `after`.
    fn set_timer(&mut self, after: Duration, token: u64);
}
