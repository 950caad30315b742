//! The plugin's side of the boundary: the functions [`export_plugin!`] puts behind
//! [`ffi::PluginVTable`]. Each one turns FFI values into the crate's types, calls the
//! plugin inside `catch_unwind`, and reports a panic as `false`/null.
//!
//! [`export_plugin!`]: crate::export_plugin

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::api::{Api, Caller, Request, Response, ResponseSink, Role};
use crate::ffi::{
    self, FfiEvent, FfiHost, FfiRequest, FfiResponse, FfiStr, LoadArgs, PluginVTable,
};
use crate::jsip::Message;
use crate::plugin::{Context, Plugin};
use crate::slp::{Event, Host, Instance, Slp};

/// Exports a [`Plugin`](crate::plugin::Plugin) type from a `cdylib`: the ABI record the
/// loader checks first, and the entry point it calls next. Use it once per crate.
///
/// ```ignore
/// jsipd_plugin_api::export_plugin!(MyPlugin);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        /// The plugin allocates with the host's allocator (ABI 1.6; see `alloc.rs`). A
        /// plugin cannot have a global allocator of its own.
        #[global_allocator]
        static JSIPD_ALLOCATOR: $crate::alloc::HostAllocator = $crate::alloc::HostAllocator;

        /// Read by jsipd's loader before anything else.
        #[no_mangle]
        pub static JSIPD_PLUGIN_ABI: $crate::ffi::AbiRecord = $crate::ffi::AbiRecord::current(
            concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION")),
        );

        /// Read by jsipd's loader when present (older plugins lack it): 1 when the SLP
        /// never blocks and may run on the host's network task ([`Plugin::SLP_NEVER_BLOCKS`]).
        #[no_mangle]
        pub static JSIPD_SLP_NEVER_BLOCKS: u8 = <$plugin as $crate::Plugin>::SLP_NEVER_BLOCKS as u8;

        /// Read by jsipd's loader when present (older plugins lack it): 0 when the SLP's
        /// instances want no DialogEnded and PeerDisconnected events
        /// ([`Plugin::SLP_WANTS_DIALOG_EVENTS`]).
        #[no_mangle]
        pub static JSIPD_SLP_DIALOG_EVENTS: u8 =
            <$plugin as $crate::Plugin>::SLP_WANTS_DIALOG_EVENTS as u8;

        /// Read by jsipd's loader when present (older plugins lack it): how this build
        /// lays a message out ([`MESSAGE_LAYOUT`](crate::ffi::MESSAGE_LAYOUT)); the same
        /// as the host's, and messages move across whole.
        #[no_mangle]
        pub static JSIPD_MESSAGE_LAYOUT: u64 = $crate::ffi::MESSAGE_LAYOUT;

        /// Read by jsipd's loader when present (older plugins lack it): the top-level
        /// path of the people's port the API is also served at ([`Plugin::PEOPLE_ROOT`]).
        #[no_mangle]
        pub static JSIPD_PEOPLE_ROOT: [u8; 32] =
            $crate::ffi::padded(<$plugin as $crate::Plugin>::PEOPLE_ROOT);

        /// Read by jsipd's loader when present (older plugins lack it): tells an API
        /// object its generation drains ([`Api::on_drain`](crate::api::Api::on_drain)).
        ///
        /// # Safety
        /// Called by jsipd only, with an API pointer this plugin made.
        #[no_mangle]
        pub unsafe extern "C" fn jsipd_api_drain(api: *const ::std::ffi::c_void) -> bool {
            // SAFETY: forwarded; the host passes an API object of this plugin.
            unsafe { $crate::export::api_drain(api) }
        }

        /// Read by jsipd's loader when present (older plugins lack it): makes an
        /// instance whose handle the host keeps (`ffi::InstanceNewInFn`).
        ///
        /// # Safety
        /// Called by jsipd only, with an SLP this plugin made and a cell of `words`
        /// pointer-aligned words.
        #[no_mangle]
        pub unsafe extern "C" fn jsipd_instance_new_in(
            slp: *mut ::std::ffi::c_void,
            cell: *mut ::std::ffi::c_void,
            words: usize,
        ) -> bool {
            // SAFETY: forwarded.
            unsafe { $crate::export::instance_new_in(slp, cell, words) }
        }

        /// Read by jsipd's loader when present: drops an instance made by
        /// `jsipd_instance_new_in`.
        ///
        /// # Safety
        /// Called by jsipd only, once per cell `jsipd_instance_new_in` filled.
        #[no_mangle]
        pub unsafe extern "C" fn jsipd_instance_drop_in(cell: *mut ::std::ffi::c_void) -> bool {
            // SAFETY: forwarded.
            unsafe { $crate::export::instance_drop_in(cell) }
        }

        /// jsipd's entry point into this plugin.
        ///
        /// # Safety
        /// Called by jsipd's loader only, with valid [`LoadArgs`].
        #[no_mangle]
        pub unsafe extern "C" fn jsipd_plugin_entry_v1(
            args: *const $crate::ffi::LoadArgs,
        ) -> $crate::ffi::PluginVTable {
            // SAFETY: forwarded; the loader passes valid arguments, and this image's
            // global allocator is `JSIPD_ALLOCATOR` above.
            unsafe { $crate::export::entry_with_host_allocator::<$plugin>(args) }
        }
    };
}

/// What the entry point does, for an image whose global allocator is not known to be
/// [`HostAllocator`](crate::alloc::HostAllocator) (an entry point written by hand): it
/// is lent every message, never handed one.
///
/// # Safety
/// `args` must be valid, and stay valid until `plugin_drop` returns.
pub unsafe fn entry<P: Plugin>(args: *const LoadArgs) -> PluginVTable {
    // SAFETY: the caller's contract.
    unsafe { entry_with::<P>(args, false) }
}

/// [`entry`] for [`export_plugin!`], which makes
/// [`HostAllocator`](crate::alloc::HostAllocator) the image's global allocator.
///
/// # Safety
/// As [`entry`], and the image's global allocator is `HostAllocator`.
#[doc(hidden)]
pub unsafe fn entry_with_host_allocator<P: Plugin>(args: *const LoadArgs) -> PluginVTable {
    // SAFETY: the caller's contract.
    unsafe { entry_with::<P>(args, true) }
}

/// Whether this image and the host hand each other allocations (ABI 1.7): set once, at
/// the entry point, when the image's global allocator took the host's.
static SHARES_ALLOCATOR: AtomicBool = AtomicBool::new(false);

/// Whether messages move across whole, as `Box<Message>` (ABI 1.9): set once, at the
/// entry point, when this image shares the host's allocator and lays a `Message` out
/// as the host does ([`ffi::MESSAGE_LAYOUT`]). The host decides alike from the same two
/// facts.
static MOVES_MESSAGES: AtomicBool = AtomicBool::new(false);

/// # Safety
/// As [`entry`]; `host_allocator`: the image's global allocator is `HostAllocator`.
unsafe fn entry_with<P: Plugin>(args: *const LoadArgs, host_allocator: bool) -> PluginVTable {
    // SAFETY: the caller's contract.
    let args = unsafe { &*args };
    // First, before this image allocates anything it could not free afterwards.
    let offered = crate::alloc::CHOICE.offer_host(args.alloc, args.dealloc, args.realloc);
    crate::log::install(args);
    if host_allocator && offered {
        SHARES_ALLOCATOR.store(true, Ordering::Release);
        // SAFETY: the host's function, with its own context (ABI 1.7: this plugin's
        // minor, which the host accepted, so it has the function).
        unsafe { (args.shares_allocator)(args.ctx) };
        // The host is of this minor or later (1.9), so it passed its layout.
        if ffi::MESSAGE_LAYOUT != 0 && args.message_layout == ffi::MESSAGE_LAYOUT {
            MOVES_MESSAGES.store(true, Ordering::Release);
        }
    } else if host_allocator {
        tracing::warn!(
            "this plugin allocated before its entry point, so it keeps the C library's allocator (slower than the host's)"
        );
    }
    crate::host::install(args);
    // SAFETY: valid for this call.
    let (name, dir) = unsafe { (args.name.to_text(), args.config_dir.to_text()) };
    let context = Context::new(name.into_owned(), dir.into_owned());
    let plugin = match catch_unwind(|| P::load(&context)) {
        Ok(Ok(p)) => Box::into_raw(Box::new(p)).cast::<c_void>(),
        Ok(Err(reason)) => {
            // SAFETY: the host's function, with its own context.
            unsafe { (args.error)(args.ctx, FfiStr::new(&reason)) };
            ptr::null_mut()
        }
        Err(_) => {
            // SAFETY: as above.
            unsafe { (args.error)(args.ctx, FfiStr::new("Plugin::load panicked")) };
            ptr::null_mut()
        }
    };
    PluginVTable {
        plugin,
        plugin_drop: plugin_drop::<P>,
        slp_new: slp_new::<P>,
        slp_reload,
        slp_unload,
        slp_drop,
        instance_new,
        instance_event,
        instance_drop,
        api_new: api_new::<P>,
        api_handle,
        api_reload,
        api_unload,
        api_drop,
    }
}

/// Runs `f`, turning a panic into `false` (the panic hook already logged it).
fn guarded(f: impl FnOnce()) -> bool {
    catch_unwind(AssertUnwindSafe(f)).is_ok()
}

fn guarded_ptr(f: impl FnOnce() -> *mut c_void) -> *mut c_void {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(ptr::null_mut())
}

unsafe extern "C" fn plugin_drop<P: Plugin>(plugin: *mut c_void) -> bool {
    // SAFETY: `plugin` came from `entry::<P>` and is dropped once.
    guarded(|| drop(unsafe { Box::from_raw(plugin.cast::<P>()) }))
}

unsafe extern "C" fn slp_new<P: Plugin>(plugin: *mut c_void) -> *mut c_void {
    guarded_ptr(|| {
        // SAFETY: `plugin` is a live `P` from `entry::<P>`.
        let plugin = unsafe { &*plugin.cast::<P>() };
        match plugin.slp() {
            Some(slp) => Box::into_raw(Box::new(slp)).cast(),
            None => ptr::null_mut(),
        }
    })
}

/// # Safety
/// `slp` came from `slp_new` and was not dropped.
unsafe fn slp_ref<'a>(slp: *mut c_void) -> &'a mut Box<dyn Slp> {
    // SAFETY: the caller's contract; the host calls one SLP from one thread.
    unsafe { &mut *slp.cast::<Box<dyn Slp>>() }
}

unsafe extern "C" fn slp_reload(slp: *mut c_void) -> bool {
    // SAFETY: the vtable's contract.
    guarded(|| unsafe { slp_ref(slp) }.on_reload())
}

unsafe extern "C" fn slp_unload(slp: *mut c_void) -> bool {
    // SAFETY: the vtable's contract.
    guarded(|| unsafe { slp_ref(slp) }.on_unload())
}

unsafe extern "C" fn slp_drop(slp: *mut c_void) -> bool {
    // SAFETY: the vtable's contract: dropped once.
    guarded(|| drop(unsafe { Box::from_raw(slp.cast::<Box<dyn Slp>>()) }))
}

unsafe extern "C" fn instance_new(slp: *mut c_void) -> *mut c_void {
    guarded_ptr(|| {
        // SAFETY: the vtable's contract.
        let instance = unsafe { slp_ref(slp) }.new_instance();
        Box::into_raw(Box::new(instance)).cast()
    })
}

/// [`InstanceNewInFn`](crate::ffi::InstanceNewInFn), behind `export_plugin!`'s
/// `jsipd_instance_new_in`.
///
/// # Safety
/// `slp` is an SLP of this plugin; `cell` is `words` writable pointer-aligned words.
#[doc(hidden)]
pub unsafe fn instance_new_in(slp: *mut c_void, cell: *mut c_void, words: usize) -> bool {
    let fits = words * std::mem::size_of::<usize>() >= std::mem::size_of::<Box<dyn Instance>>()
        && std::mem::align_of::<Box<dyn Instance>>() <= std::mem::align_of::<usize>();
    fits && guarded(|| {
        // SAFETY: the vtable's contract.
        let instance = unsafe { slp_ref(slp) }.new_instance();
        // SAFETY: the cell has room and alignment for the handle (checked above).
        unsafe { cell.cast::<Box<dyn Instance>>().write(instance) };
    })
}

/// [`InstanceDropInFn`](crate::ffi::InstanceDropInFn), behind `export_plugin!`'s
/// `jsipd_instance_drop_in`.
///
/// # Safety
/// `cell` holds a handle [`instance_new_in`] wrote, dropped once.
#[doc(hidden)]
pub unsafe fn instance_drop_in(cell: *mut c_void) -> bool {
    // SAFETY: the caller's contract.
    guarded(|| unsafe { std::ptr::drop_in_place(cell.cast::<Box<dyn Instance>>()) })
}

unsafe extern "C" fn instance_event(
    instance: *mut c_void,
    event: *const FfiEvent,
    host: *const FfiHost,
) -> bool {
    guarded(|| {
        // SAFETY: the vtable's contract: valid for this call.
        let (instance, event, host) =
            unsafe { (&mut *instance.cast::<Box<dyn Instance>>(), &*event, &*host) };
        // Valid for this call, and UTF-8 as all the host's text (see
        // `Message::from_host`); read only by the kinds that carry text, at most once.
        let text = || {
            if event.text_handed_over {
                // SAFETY: handed over from the host's allocator, which this image uses.
                unsafe { event.text.adopt(event.text_capacity) }.unwrap_or_default()
            } else {
                // SAFETY: as above, lent for the call.
                unsafe { event.text.to_optional_str_unchecked() }
                    .unwrap_or_default()
                    .to_owned()
            }
        };
        let event = match event.kind {
            ffi::event::LOADED => Event::Loaded,
            // The host only sends what its own parser accepted: a refusal here means the
            // host and plugin disagree on JSIP, which must not pass silently.
            ffi::event::MESSAGE_FIELDS => {
                // SAFETY: the vtable's contract: this kind carries a message, valid for
                // this call.
                match unsafe { Message::from_host(&*event.message) } {
                    Ok(m) => Event::Message(m),
                    Err(reason) => {
                        panic!("the host passed a message this plugin-api rejects: {reason}")
                    }
                }
            }
            // Handed over only when this image shares the host's allocator (it said so
            // at its entry point), which frees the message's text.
            ffi::event::MESSAGE_OWNED => {
                // SAFETY: the vtable's contract: this kind carries a handed-over message,
                // whose text is now this side's, from the allocator this image uses.
                match unsafe { Message::from_host_owned(&*event.owned_message) } {
                    Ok(m) => Event::Message(m),
                    Err(reason) => {
                        panic!("the host passed a message this plugin-api rejects: {reason}")
                    }
                }
            }
            // Moved only when this image lays a `Message` out as the host does and
            // shares its allocator (both sides decided so at the entry point).
            ffi::event::MESSAGE_MOVED => {
                // SAFETY: the vtable's contract: this kind carries a `Box<Message>` of
                // the host's, now this side's, of the same layout and allocator.
                let m = unsafe { Box::from_raw(event.moved_message.cast::<Message>()) };
                Event::Message(*m)
            }
            // Only a host older than ABI 1.2 sends a message as JSON to a plugin of this
            // minor, and such a host lacks `send_fields`, which any answer would call.
            // Refusing here (the host sees a failed call) is safe; going on is not.
            ffi::event::MESSAGE => panic!(
                "this plugin needs a jsipd of plugin ABI {}.{} or later (the host sent a \
                 message as JSON text, as hosts before 1.2 do)",
                ffi::ABI_MAJOR,
                ffi::ABI_MINOR
            ),
            ffi::event::DIALOG_ENDED => Event::DialogEnded {
                dialogue_id: text(),
            },
            ffi::event::TIMER => Event::Timer(event.token),
            ffi::event::PEER_DISCONNECTED => Event::PeerDisconnected {
                dialogue_id: text(),
            },
            ffi::event::DRAINING => Event::Draining,
            other => panic!("unknown event kind {other} (plugin-api is older than the host)"),
        };
        instance.on_event(event, &mut ForeignHost(host));
    })
}

unsafe extern "C" fn instance_drop(instance: *mut c_void) -> bool {
    // SAFETY: the vtable's contract: dropped once.
    guarded(|| drop(unsafe { Box::from_raw(instance.cast::<Box<dyn Instance>>()) }))
}

/// [`Host`] over the host's function table.
struct ForeignHost<'a>(&'a FfiHost);

impl ForeignHost<'_> {
    fn new_id(&mut self, relid: bool) -> String {
        let mut buf = [0u8; 64];
        // SAFETY: the host writes at most `cap` bytes into our buffer.
        let n = unsafe { (self.0.new_id)(self.0.ctx, relid, buf.as_mut_ptr(), buf.len()) };
        String::from_utf8_lossy(&buf[..n.min(buf.len())]).into_owned()
    }
}

impl Host for ForeignHost<'_> {
    fn instance_id(&self) -> u64 {
        self.0.instance_id
    }

    fn send(&mut self, message: Message) {
        // The host is of this ABI minor or later: it refuses a newer plugin at load, and
        // an older host is refused at its first message (see `instance_event`).
        if MOVES_MESSAGES.load(Ordering::Acquire) {
            let moved = Box::into_raw(Box::new(message));
            // SAFETY: as below; the host takes the box (ABI 1.9, which it has: it is
            // of this minor or later), of the same layout and allocator.
            unsafe { (self.0.send_moved)(self.0.ctx, moved.cast()) }
        } else if SHARES_ALLOCATOR.load(Ordering::Acquire) {
            // SAFETY: the host's function with its context, valid during the event; it
            // takes the text, which came from its own allocator.
            message
                .hand_over_to(ffi::ABI_MINOR)
                .send(|m| unsafe { (self.0.send_owned)(self.0.ctx, m) })
        } else {
            let lent = message.lend();
            // SAFETY: as above; the text is lent for the call.
            unsafe { (self.0.send_fields)(self.0.ctx, lent.as_ffi()) }
        }
    }

    fn new_dialogue_id(&mut self) -> String {
        self.new_id(false)
    }

    fn relid(&mut self) -> String {
        self.new_id(true)
    }

    fn end(&mut self) {
        // SAFETY: as in `send`.
        unsafe { (self.0.end)(self.0.ctx) }
    }

    fn set_timer(&mut self, after: Duration, token: u64) {
        let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        // SAFETY: as in `send`.
        unsafe { (self.0.set_timer)(self.0.ctx, ms, token) }
    }
}

unsafe extern "C" fn api_new<P: Plugin>(plugin: *mut c_void) -> *mut c_void {
    guarded_ptr(|| {
        // SAFETY: `plugin` is a live `P` from `entry::<P>`.
        let plugin = unsafe { &*plugin.cast::<P>() };
        match plugin.api() {
            Some(api) => Box::into_raw(Box::new(api)).cast(),
            None => ptr::null_mut(),
        }
    })
}

/// # Safety
/// `api` came from `api_new` and was not dropped.
unsafe fn api_ref<'a>(api: *const c_void) -> &'a dyn Api {
    // SAFETY: the caller's contract; `Api` is `Sync`.
    unsafe { &**api.cast::<Box<dyn Api>>() }
}

unsafe extern "C" fn api_handle(
    api: *const c_void,
    request: *const FfiRequest,
    response: *const FfiResponse,
) -> bool {
    guarded(|| {
        // SAFETY: the vtable's contract: valid for this call.
        let (api, req, res) = unsafe { (api_ref(api), &*request, &*response) };
        // SAFETY: valid for this call.
        let (method, path, query) = unsafe {
            (
                req.method.to_text(),
                req.path.to_text(),
                req.query.to_text(),
            )
        };
        let raw_headers: &[ffi::FfiHeader] = if req.header_count == 0 {
            &[]
        } else {
            // SAFETY: the host passes `header_count` headers, valid for this call.
            unsafe { std::slice::from_raw_parts(req.headers, req.header_count) }
        };
        let header_texts: Vec<_> = raw_headers
            .iter()
            // SAFETY: valid for this call.
            .map(|h| unsafe { (h.name.to_text(), h.value.to_text()) })
            .collect();
        let headers = header_texts
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
            .collect();
        // SAFETY: valid for this call.
        let (user, remote) = unsafe { (req.caller_user.to_text(), req.remote.to_text()) };
        // An unknown number (none exists: the host refuses plugins newer than itself)
        // gets the least.
        let role = Role::from_ffi(req.caller_role).unwrap_or(Role::Nobody);
        let caller = Caller { user: &user, role };
        let mut sink = ForeignSink(res);
        let mut response = Response::new(&mut sink);
        if !allowed(api, caller, &method, &path, &mut response) {
            return;
        }
        let mut body = ForeignBody(req);
        let mut request = Request::new(&method, &path, &query, headers, &mut body)
            .with_caller(caller)
            .with_remote(&remote);
        api.handle(&mut request, &mut response);
    })
}

/// [`Api::role_needed`] for this request: answers 403 and returns `false` when the
/// caller's role is below it. Public for plugins' unit tests, which call
/// [`Api::handle`] directly.
pub fn allowed(
    api: &dyn Api,
    caller: Caller<'_>,
    method: &str,
    path: &str,
    response: &mut Response<'_>,
) -> bool {
    let needed = api.role_needed(method, path);
    if caller.role >= needed {
        return true;
    }
    response.error(
        403,
        &format!(
            "{method} {path} needs the {needed} role; {} is a {}",
            caller.user, caller.role
        ),
    );
    false
}

struct ForeignBody<'a>(&'a FfiRequest);

impl std::io::Read for ForeignBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // SAFETY: the host writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { (self.0.read_body)(self.0.body_ctx, buf.as_mut_ptr(), buf.len()) };
        usize::try_from(n).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the request body was cut off (client gone, or over the host's limit)",
            )
        })
    }
}

struct ForeignSink<'a>(&'a FfiResponse);

impl ResponseSink for ForeignSink<'_> {
    fn set_status(&mut self, status: u16) {
        // SAFETY: the host's function with its context, valid for the request.
        unsafe { (self.0.set_status)(self.0.ctx, status) }
    }

    fn add_header(&mut self, name: &str, value: &str) {
        // SAFETY: as above.
        unsafe { (self.0.add_header)(self.0.ctx, FfiStr::new(name), FfiStr::new(value)) }
    }

    fn write(&mut self, data: &[u8]) -> bool {
        // SAFETY: as above.
        unsafe { (self.0.write)(self.0.ctx, FfiStr::bytes(data)) }
    }
}

unsafe extern "C" fn api_reload(api: *const c_void) -> bool {
    // SAFETY: the vtable's contract.
    guarded(|| unsafe { api_ref(api) }.on_reload())
}

/// [`Api::on_drain`] behind the optional `jsipd_api_drain` symbol.
///
/// # Safety
/// `api` is an API object of this plugin, not yet dropped.
#[doc(hidden)]
pub unsafe fn api_drain(api: *const c_void) -> bool {
    // SAFETY: the caller's contract.
    guarded(|| unsafe { api_ref(api) }.on_drain())
}

unsafe extern "C" fn api_unload(api: *const c_void) -> bool {
    // SAFETY: the vtable's contract.
    guarded(|| unsafe { api_ref(api) }.on_unload())
}

unsafe extern "C" fn api_drop(api: *mut c_void) -> bool {
    // SAFETY: the vtable's contract: dropped once.
    guarded(|| drop(unsafe { Box::from_raw(api.cast::<Box<dyn Api>>()) }))
}
