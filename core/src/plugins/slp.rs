//! A `.so` plugin's SLP behind the same [`Slp`]/[`Instance`] traits as a compiled-in
//! one, so the runner (`dispatch::runner`) drives both alike.
//!
//! A failed call (the plugin caught a panic and returned `false`) is re-raised here as a
//! panic with `resume_unwind`, which skips the panic hook: the runner's `catch_unwind`
//! then does what it does for any panicking SLP (the instance ends, its requests get
//! 500, the panic is counted). One failure path, whatever side of the boundary.

use std::ffi::c_void;
use std::sync::Arc;
use std::time::Duration;

use jsipd_plugin_api::ffi::{self, FfiEvent, FfiHost, FfiMessage, FfiOwnedMessage, FfiStr};
use jsipd_plugin_api::jsip::{Message, ParseError};
use jsipd_plugin_api::slp::{Event, Host, Instance, Slp};

use super::image::{Delivery, Image};

pub struct ForeignSlp {
    image: Arc<Image>,
    slp: *mut c_void,
}

// SAFETY: the plugin's SLP is `Send` (the trait requires it); the host calls it from
// one thread at a time (its runner).
unsafe impl Send for ForeignSlp {}

impl ForeignSlp {
    /// The image's SLP, or `None` when the plugin offers none (or `slp()` panicked,
    /// which its log line says).
    pub fn new(image: Arc<Image>) -> Option<ForeignSlp> {
        // SAFETY: a live plugin object, called on a host thread.
        let slp = unsafe { (image.vtable().slp_new)(image.vtable().plugin) };
        (!slp.is_null()).then_some(ForeignSlp { image, slp })
    }
}

fn failed(image: &Image, what: &str) -> ! {
    std::panic::resume_unwind(Box::new(format!(
        "plugin [{}] panicked in {what} (its log line has the details)",
        image.tag()
    )))
}

impl Slp for ForeignSlp {
    fn never_blocks(&self) -> bool {
        self.image.never_blocks()
    }

    fn wants_dialog_events(&self) -> bool {
        self.image.wants_dialog_events()
    }

    fn new_instance(&mut self) -> Box<dyn Instance> {
        let Some((new_in, _)) = self.image.instance_in() else {
            // SAFETY: our live SLP, on its runner thread.
            let instance = unsafe { (self.image.vtable().instance_new)(self.slp) };
            if instance.is_null() {
                failed(&self.image, "Slp::new_instance");
            }
            return Box::new(ForeignInstance {
                image: self.image.clone(),
                instance,
                cell: None,
            });
        };
        // The handle goes into the box the runner keeps anyway: boxed first, so the
        // cell does not move.
        let mut boxed = Box::new(ForeignInstance {
            image: self.image.clone(),
            instance: std::ptr::null_mut(),
            cell: Some([std::mem::MaybeUninit::uninit(); ffi::INSTANCE_CELL_WORDS]),
        });
        let cell = boxed
            .cell
            .as_mut()
            .expect("just made")
            .as_mut_ptr()
            .cast::<c_void>();
        // SAFETY: our live SLP, on its runner thread; the cell is the words the
        // function asks for, and stays put until `Drop` drops what it holds.
        if !unsafe { new_in(self.slp, cell, ffi::INSTANCE_CELL_WORDS) } {
            // Nothing to drop: `instance` is still null.
            failed(&self.image, "Slp::new_instance");
        }
        boxed.instance = cell;
        boxed
    }

    fn on_reload(&mut self) {
        // SAFETY: as above.
        if !unsafe { (self.image.vtable().slp_reload)(self.slp) } {
            failed(&self.image, "Slp::on_reload");
        }
    }

    fn on_unload(&mut self) {
        // SAFETY: as above.
        if !unsafe { (self.image.vtable().slp_unload)(self.slp) } {
            failed(&self.image, "Slp::on_unload");
        }
    }
}

impl Drop for ForeignSlp {
    fn drop(&mut self) {
        // SAFETY: dropped once; every instance (each holding the image) is separate.
        if !unsafe { (self.image.vtable().slp_drop)(self.slp) } {
            tracing::error!("plugin [{}] panicked dropping its SLP", self.image.tag());
        }
    }
}

struct ForeignInstance {
    image: Arc<Image>,
    /// The plugin's handle: its box, or `cell` when the plugin keeps the handle there.
    instance: *mut c_void,
    /// Where the plugin put the instance's handle (`ffi::InstanceNewInFn`), so that it
    /// needs no box of its own; `None` for a plugin without `jsipd_instance_new_in`.
    cell: Option<[std::mem::MaybeUninit<usize>; ffi::INSTANCE_CELL_WORDS]>,
}

// SAFETY: plugin instances are `Send`; one thread at a time calls them.
unsafe impl Send for ForeignInstance {}

impl Instance for ForeignInstance {
    fn on_event(&mut self, event: Event, host: &mut dyn Host) {
        let delivery = self.image.delivery();
        let handed_over = matches!(delivery, Delivery::HandedOver | Delivery::Moved);
        let event = match event {
            // Whole: the plugin lays a message out as this build does.
            Event::Message(m) if delivery == Delivery::Moved => {
                let moved = Box::into_raw(Box::new(m));
                // The plugin takes the box first thing, whatever it does with it.
                let ok = self.deliver(
                    &FfiEvent {
                        moved_message: moved.cast(),
                        ..FfiEvent::new(ffi::event::MESSAGE_MOVED)
                    },
                    host,
                );
                return self.check(ok);
            }
            // The usual way: the message moves across with its text, as it would to a
            // compiled-in SLP.
            Event::Message(m) if handed_over => {
                // The plugin owns the message's text from the call on, whatever it does.
                let ok = m
                    .hand_over_to(self.image.abi_minor())
                    .send(|owned_message| {
                        self.deliver(
                            &FfiEvent {
                                owned_message,
                                ..FfiEvent::new(ffi::event::MESSAGE_OWNED)
                            },
                            host,
                        )
                    });
                return self.check(ok);
            }
            // Their DialogueID goes the same way.
            Event::DialogEnded { dialogue_id } if handed_over => {
                return self.deliver_id(ffi::event::DIALOG_ENDED, dialogue_id, host);
            }
            Event::PeerDisconnected { dialogue_id } if handed_over => {
                return self.deliver_id(ffi::event::PEER_DISCONNECTED, dialogue_id, host);
            }
            other => other,
        };
        let (json, lent);
        let mut message: *const FfiMessage = std::ptr::null();
        let (kind, text, token) = match &event {
            Event::Loaded => (ffi::event::LOADED, "", 0),
            Event::Message(m) if delivery == Delivery::Lent => {
                lent = m.lend();
                message = lent.as_ffi();
                (ffi::event::MESSAGE_FIELDS, "", 0)
            }
            // A plugin built before ABI 1.2 reads the message's JSON.
            Event::Message(m) => {
                json = m.to_json();
                (ffi::event::MESSAGE, json.as_str(), 0)
            }
            Event::DialogEnded { dialogue_id } => {
                (ffi::event::DIALOG_ENDED, dialogue_id.as_str(), 0)
            }
            Event::Timer(t) => (ffi::event::TIMER, "", *t),
            Event::PeerDisconnected { dialogue_id } => {
                (ffi::event::PEER_DISCONNECTED, dialogue_id.as_str(), 0)
            }
            Event::Draining => (ffi::event::DRAINING, "", 0),
        };
        if !self.image.knows_event(kind) {
            return;
        }
        let event = FfiEvent {
            text: FfiStr::new(text),
            token,
            message,
            ..FfiEvent::new(kind)
        };
        let ok = self.deliver(&event, host);
        self.check(ok);
    }
}

impl ForeignInstance {
    /// Calls the plugin's `instance_event` with `host` behind the C function table;
    /// `false` when the plugin panicked.
    fn deliver(&mut self, event: &FfiEvent, host: &mut dyn Host) -> bool {
        let mut bridge = Bridge {
            host,
            tag: self.image.tag(),
        };
        let ffi_host = FfiHost {
            ctx: (&mut bridge as *mut Bridge).cast(),
            instance_id: bridge.host.instance_id(),
            send: bridge_send,
            new_id: bridge_new_id,
            end: bridge_end,
            set_timer: bridge_set_timer,
            send_fields: bridge_send_fields,
            send_owned: bridge_send_owned,
            send_moved: bridge_send_moved,
        };
        // SAFETY: our live instance; `event` and `ffi_host` outlive the call.
        unsafe { (self.image.vtable().instance_event)(self.instance, event, &ffi_host) }
    }

    /// An event of `kind` whose text, `dialogue_id`, is handed over to the plugin.
    fn deliver_id(&mut self, kind: u8, dialogue_id: String, host: &mut dyn Host) {
        let (text, text_capacity) = FfiStr::give(dialogue_id);
        let ok = self.deliver(
            &FfiEvent {
                text,
                text_handed_over: true,
                text_capacity,
                ..FfiEvent::new(kind)
            },
            host,
        );
        self.check(ok);
    }

    fn check(&self, ok: bool) {
        if !ok {
            failed(&self.image, "Instance::on_event");
        }
    }
}

impl Drop for ForeignInstance {
    fn drop(&mut self) {
        if self.instance.is_null() {
            // The plugin failed to make it.
            return;
        }
        let ok = match (self.cell.is_some(), self.image.instance_in()) {
            (true, Some((_, drop_in))) => {
                // SAFETY: the cell holds the handle `new_in` wrote; dropped once.
                unsafe { drop_in(self.instance) }
            }
            // SAFETY: dropped once. (A cell is only made when the plugin has both.)
            _ => unsafe { (self.image.vtable().instance_drop)(self.instance) },
        };
        if !ok {
            tracing::error!(
                "plugin [{}] panicked dropping an instance",
                self.image.tag()
            );
        }
    }
}

/// The runner's [`Host`] for one event, seen from C.
struct Bridge<'a> {
    host: &'a mut dyn Host,
    tag: &'a str,
}

/// # Safety
/// `ctx` is the `Bridge` of the event being handled.
unsafe fn bridge<'a>(ctx: *mut c_void) -> &'a mut Bridge<'a> {
    // SAFETY: the caller's contract.
    unsafe { &mut *ctx.cast::<Bridge>() }
}

/// A plugin's `Host::send` (ABI 1.2 and later).
unsafe extern "C" fn bridge_send_fields(ctx: *mut c_void, message: *const FfiMessage) {
    // SAFETY: called by the plugin during the event.
    let b = unsafe { bridge(ctx) };
    if message.is_null() {
        return b.send(Err(ParseError::Unaddressable {
            reason: "the message pointer was null".into(),
        }));
    }
    // SAFETY: a message valid for the call (the vtable's contract).
    b.send(unsafe { Message::from_ffi(&*message) });
}

/// A plugin's `Host::send` when it shares the host's allocator (ABI 1.7 and later): the
/// message arrives with its text, which is the host's from now on.
unsafe extern "C" fn bridge_send_owned(ctx: *mut c_void, message: *const FfiOwnedMessage) {
    // SAFETY: called by the plugin during the event.
    let b = unsafe { bridge(ctx) };
    if message.is_null() {
        return b.send(Err(ParseError::Unaddressable {
            reason: "the message pointer was null".into(),
        }));
    }
    // SAFETY: a handed-over message (the vtable's contract), from our allocator.
    b.send(unsafe { Message::from_ffi_owned(&*message) });
}

/// A plugin's `Host::send` when its messages move (ABI 1.9): a `Box<Message>`, now the
/// host's, checked as a handed-over one would be.
unsafe extern "C" fn bridge_send_moved(ctx: *mut c_void, message: *mut c_void) {
    // SAFETY: called by the plugin during the event.
    let b = unsafe { bridge(ctx) };
    if message.is_null() {
        return b.send(Err(ParseError::Unaddressable {
            reason: "the message pointer was null".into(),
        }));
    }
    // SAFETY: the vtable's contract: a `Box<Message>` of the plugin's, which lays it
    // out as we do and allocated it with our allocator (`Delivery::Moved`).
    let message = unsafe { Box::from_raw(message.cast::<Message>()) };
    b.send(message.checked());
}

/// A plugin's `Host::send` before ABI 1.2: the message as JSON text.
unsafe extern "C" fn bridge_send(ctx: *mut c_void, json: FfiStr) {
    // SAFETY: called by the plugin during the event, with valid text.
    let (b, json) = unsafe { (bridge(ctx), json.to_text()) };
    b.send(Message::parse(&json));
}

impl Bridge<'_> {
    /// What a plugin sends is checked like what a peer sends: it never reaches the stack
    /// malformed.
    // Inlined, so the message is not copied once more on its way to the runner.
    #[inline(always)]
    fn send(&mut self, message: Result<Message, ParseError>) {
        match message {
            Ok(m) => self.host.send(m),
            Err(e) => tracing::warn!(
                "plugin [{}] sent an invalid JSIP message, dropped: {}",
                self.tag,
                e.reason()
            ),
        }
    }
}

unsafe extern "C" fn bridge_new_id(
    ctx: *mut c_void,
    relid: bool,
    buf: *mut u8,
    cap: usize,
) -> usize {
    // SAFETY: as in `bridge_send`; `buf` has room for `cap` bytes.
    let b = unsafe { bridge(ctx) };
    let id = if relid {
        b.host.relid()
    } else {
        b.host.new_dialogue_id()
    };
    let n = id.len().min(cap);
    // SAFETY: `n <= cap`.
    unsafe { std::ptr::copy_nonoverlapping(id.as_ptr(), buf, n) };
    n
}

unsafe extern "C" fn bridge_end(ctx: *mut c_void) {
    // SAFETY: as in `bridge_send`.
    unsafe { bridge(ctx) }.host.end();
}

unsafe extern "C" fn bridge_set_timer(ctx: *mut c_void, after_ms: u64, token: u64) {
    // SAFETY: as in `bridge_send`.
    unsafe { bridge(ctx) }
        .host
        .set_timer(Duration::from_millis(after_ms), token);
}
