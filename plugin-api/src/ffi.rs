//! The `.so` boundary: `#[repr(C)]` types only. Plugin authors never touch this module;
//! [`export_plugin!`](crate::export_plugin) generates the plugin's side and the daemon's
//! loader implements the host's side.
//!
//! Why this shape:
//! - Rust has no stable ABI, and a plugin may be built with another compiler or other
//!   versions of `serde_json` and `tracing` than the daemon. So nothing Rust-shaped crosses:
//!   only integers, `bool`, function pointers, opaque pointers and borrowed byte slices.
//! - A JSIP message crosses as [`FfiMessage`]: one slot per key of JSIP.md §2, the
//!   `Body` and any unknown keys as JSON text. So the contract is JSIP.md itself and not
//!   the layout of [`Message`](crate::jsip::Message), and yet neither side writes or
//!   parses the message's JSON (ABI 1.2; before it, the message crossed as its JSON
//!   text, which cost four JSON passes per answered request).
//! - A plugin built against a newer ABI minor than the host's is refused, because it may
//!   call host functions this host does not have. An older one is served in its own
//!   terms (JSON text, no events newer than its minor).
//! - ABI 1.3 appended the caller (user and role) to [`FfiRequest`]: the host fills it
//!   for every plugin, and one built before it reads only the fields it knows.
//! - ABI 1.5 appended host services to [`LoadArgs`] (one plugin calling another's API
//!   in-process; signing people in and checking their sessions), the client's address
//!   to [`FfiRequest`], and the optional [`PEOPLE_ROOT_SYMBOL`]. Appending is safe
//!   because a plugin only ever runs on a host of its own minor or newer.
//! - ABI 1.6 appended the host's allocator to [`LoadArgs`]: a plugin allocates with the
//!   daemon's mimalloc instead of the C library's `malloc` (`alloc.rs`). Each side still
//!   frees only what it allocated.
//! - Optional symbols (a plugin of any minor may have them; the host looks them up and
//!   does without): `JSIPD_SLP_NEVER_BLOCKS`, `JSIPD_SLP_DIALOG_EVENTS`,
//!   `jsipd_api_drain`, `JSIPD_PEOPLE_ROOT`, and `jsipd_instance_new_in` with `jsipd_instance_drop_in` ([`InstanceNewInFn`]:
//!   an instance's handle kept in the host's memory, not boxed by the plugin).
//! - ABI 1.8: a handed-over message's unknown keys may be lent as an array for the
//!   call (`FfiOwnedMessage::entries` with capacity 0; their strings are still handed
//!   over). The sender does so only to a receiver of 1.8 or later: the host asks the
//!   plugin's minor, and a plugin's host is never older than the plugin.
//! - ABI 1.9: a message may move across whole, as a `Box<Message>`, when both sides
//!   share the allocator and were built by the same compiler, for the same target, from
//!   the same `Message` ([`MESSAGE_LAYOUT`], exported as [`MESSAGE_LAYOUT_SYMBOL`] and
//!   passed in [`LoadArgs::message_layout`]): then nothing is taken apart and rebuilt.
//!   Both sides decide alike from the two values; any difference, and messages are
//!   handed over field by field as in 1.8. (nginx refuses a module whose build signature
//!   differs from its own; here the plugin is still served, the slower way.)
//! - Every borrowed pointer is valid only during the call it is passed to. Nothing is
//!   freed on the other side of the boundary: strings the host hands back (new
//!   DialogueIDs) are written into a buffer the plugin owns.
//! - The loader reads [`AbiRecord`] (data, no code) before it calls anything, so a plugin
//!   built against another major version is refused before any of its code runs.
//! - Every plugin entry point catches panics and returns `false` (or null) instead of
//!   unwinding into the host, which would abort the daemon.

use std::ffi::c_void;

/// The symbol name of the [`AbiRecord`] static.
pub const ABI_SYMBOL: &[u8] = b"JSIPD_PLUGIN_ABI\0";
/// An optional `u8` static: 1 when the plugin's SLP never blocks (see
/// `Plugin::SLP_NEVER_BLOCKS`). Absent in plugins built before it existed, which then run
/// on a thread of their own, as before.
pub const NEVER_BLOCKS_SYMBOL: &[u8] = b"JSIPD_SLP_NEVER_BLOCKS\0";
/// The symbol of an optional [`ApiDrainFn`] (plugins built before it lack it, and the
/// loader then calls nothing): the API generation stopped getting new requests.
pub const API_DRAIN_SYMBOL: &[u8] = b"jsipd_api_drain\0";
/// The symbol of an optional NUL-padded `[u8; 32]` static (ABI 1.5): the top-level path
/// (`/api`) at which the plugin's API is also served on the people's port, for
/// compatibility with another product's URLs. Requests there reach the plugin even
/// without a session, as [`Role::Nobody`](crate::api::Role::Nobody).
pub const PEOPLE_ROOT_SYMBOL: &[u8] = b"JSIPD_PEOPLE_ROOT\0";
/// Tells an API object (an `api` pointer of [`PluginVTable`]) that its generation
/// drains; `false` when the plugin panicked.
pub type ApiDrainFn = unsafe extern "C" fn(api: *const c_void) -> bool;
/// An optional `u8` static: 0 when the plugin's SLP does not want
/// [`DIALOG_ENDED`](event::DIALOG_ENDED) and [`PEER_DISCONNECTED`](event::PEER_DISCONNECTED)
/// events (`Plugin::SLP_WANTS_DIALOG_EVENTS`). Absent in plugins built before it
/// existed, which then get them, as before.
pub const DIALOG_EVENTS_SYMBOL: &[u8] = b"JSIPD_SLP_DIALOG_EVENTS\0";
/// The symbol of an optional [`InstanceNewInFn`], which comes with an
/// [`InstanceDropInFn`] ([`INSTANCE_DROP_IN_SYMBOL`]); plugins built before them lack
/// both, and the loader then uses the vtable's `instance_new` and `instance_drop`.
pub const INSTANCE_NEW_IN_SYMBOL: &[u8] = b"jsipd_instance_new_in\0";
/// The symbol of the [`InstanceDropInFn`] that goes with [`INSTANCE_NEW_IN_SYMBOL`].
pub const INSTANCE_DROP_IN_SYMBOL: &[u8] = b"jsipd_instance_drop_in\0";
/// The room, in pointer-sized and -aligned words, the host gives an instance's handle
/// ([`InstanceNewInFn`]). A `Box<dyn Instance>` is two words; the rest is slack for a
/// compiler that ever makes it larger.
pub const INSTANCE_CELL_WORDS: usize = 4;
/// Makes a new instance of `slp` and writes its handle (the plugin's own
/// `Box<dyn Instance>`, opaque to the host) into `cell`: `words` words of the host's
/// memory, which stay put until [`InstanceDropInFn`]. `cell` is then the instance's
/// `instance` pointer for `instance_event`. The vtable's `instance_new` instead boxes
/// the handle in the plugin, one allocation more for every instance, which is one per
/// out-of-dialog request. `false` when the plugin panicked or the handle does not fit.
pub type InstanceNewInFn =
    unsafe extern "C" fn(slp: *mut c_void, cell: *mut c_void, words: usize) -> bool;
/// Drops the instance whose handle is in `cell` ([`InstanceNewInFn`]); the cell's
/// memory stays the host's. `false` when the plugin panicked.
pub type InstanceDropInFn = unsafe extern "C" fn(cell: *mut c_void) -> bool;
/// The symbol of an optional `u64` static (ABI 1.9): the plugin's [`MESSAGE_LAYOUT`].
/// Absent, or another value than the host's, and messages cross field by field.
pub const MESSAGE_LAYOUT_SYMBOL: &[u8] = b"JSIPD_MESSAGE_LAYOUT\0";

/// Who made [`Message`](crate::jsip::Message)'s memory layout, as one number: the
/// compiler (`rustc -vV`: release, commit, LLVM) and target this crate was built by and
/// for, this crate's version, the text of the file that defines `Message`, `Kind` and
/// `Method`, and the sizes of the serde_json types a message holds. Two builds with the
/// same value lay a `Message` out alike, down to the `BTreeMap` nodes of its unknown
/// keys (std's, of the same compiler), so one side may drop or keep what the other
/// made. 0, which matches nothing, when the compiler could not be asked.
///
/// Not a defence against a hostile plugin, which runs in the daemon's process and could
/// do worse: it keeps two honest builds that differ from reading each other's memory
/// wrongly. serde_json's own version is not in it; an install's `pcompile` builds
/// against the daemon's vendored copy, and its `Value` has not changed within 1.x.
pub const MESSAGE_LAYOUT: u64 = message_layout();

const fn message_layout() -> u64 {
    use crate::jsip::{Kind, Message, Method};
    use serde_json::{Map, Number, Value};
    use std::mem::{align_of, offset_of, size_of};
    let built_by = env!("JSIPD_BUILT_BY");
    if built_by.is_empty() {
        return 0;
    }
    let mut h = fnv(FNV_OFFSET, built_by.as_bytes());
    h = fnv(h, env!("JSIPD_BUILT_FOR").as_bytes());
    h = fnv(h, env!("CARGO_PKG_VERSION").as_bytes());
    h = fnv(h, include_str!("jsip/message.rs").as_bytes());
    let numbers = [
        size_of::<Message>(),
        align_of::<Message>(),
        offset_of!(Message, kind),
        offset_of!(Message, request_uri),
        offset_of!(Message, desc),
        offset_of!(Message, from),
        offset_of!(Message, to),
        offset_of!(Message, dialogue_id),
        offset_of!(Message, cseq),
        offset_of!(Message, router),
        offset_of!(Message, related_id),
        offset_of!(Message, expire),
        offset_of!(Message, body),
        offset_of!(Message, content_type),
        offset_of!(Message, p_asserted_identity),
        offset_of!(Message, event),
        offset_of!(Message, reason),
        offset_of!(Message, extra),
        size_of::<Kind>(),
        size_of::<Method>(),
        size_of::<Value>(),
        size_of::<Number>(),
        size_of::<Map<String, Value>>(),
        size_of::<Option<Value>>(),
    ];
    let mut i = 0;
    while i < numbers.len() {
        h = fnv(h, &(numbers[i] as u64).to_le_bytes());
        i += 1;
    }
    if h == 0 {
        1
    } else {
        h
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, which a `const fn` can run.
const fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

/// The symbol name of the [`EntryFn`] of ABI major 1.
pub const ENTRY_SYMBOL: &[u8] = b"jsipd_plugin_entry_v1\0";
/// Identifies a jsipd plugin's ABI record.
pub const ABI_MAGIC: [u8; 16] = *b"jsipd-plugin-abi";
/// Changes when the boundary changes incompatibly; the loader refuses another major.
pub const ABI_MAJOR: u32 = 1;
/// Grows when something is added compatibly.
pub const ABI_MINOR: u32 = 9;

/// Read by the loader before anything else (a `#[no_mangle] static`).
#[repr(C)]
pub struct AbiRecord {
    pub magic: [u8; 16],
    pub major: u32,
    pub minor: u32,
    /// The `jsipd-plugin-api` crate version the plugin was built with, NUL padded; only
    /// for messages.
    pub api_version: [u8; 32],
    /// The plugin crate's own name and version, NUL padded; only for listings.
    pub plugin: [u8; 64],
}

impl AbiRecord {
    /// The record for this build of the crate, naming the plugin `plugin`.
    pub const fn current(plugin: &str) -> AbiRecord {
        AbiRecord {
            magic: ABI_MAGIC,
            major: ABI_MAJOR,
            minor: ABI_MINOR,
            api_version: padded(env!("CARGO_PKG_VERSION")),
            plugin: padded(plugin),
        }
    }
}

/// `s` as a NUL-padded array, cut to fit.
pub const fn padded<const N: usize>(s: &str) -> [u8; N] {
    let b = s.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < b.len() && i < N - 1 {
        out[i] = b[i];
        i += 1;
    }
    out
}

/// The text of a NUL-padded array (up to the first NUL), lossily.
pub fn unpadded(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A borrowed byte string (UTF-8 where the field says text).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FfiStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl FfiStr {
    /// An absent optional field (see [`FfiMessage`]).
    pub const ABSENT: FfiStr = FfiStr {
        ptr: std::ptr::null(),
        len: 0,
    };

    pub fn new(s: &str) -> FfiStr {
        FfiStr::bytes(s.as_bytes())
    }

    pub fn bytes(b: &[u8]) -> FfiStr {
        FfiStr {
            ptr: b.as_ptr(),
            len: b.len(),
        }
    }

    /// # Safety
    /// `ptr..ptr+len` must be valid for `'a` (the boundary's rule: for the call).
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the caller guarantees the slice is valid.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// `Some(text)`, `None` for [`FfiStr::ABSENT`], or the error for invalid UTF-8.
    ///
    /// # Safety
    /// As [`FfiStr::as_bytes`].
    pub unsafe fn to_optional_str<'a>(self) -> Result<Option<&'a str>, std::str::Utf8Error> {
        if self.ptr.is_null() {
            return Ok(None);
        }
        // SAFETY: forwarded to the caller.
        let bytes = unsafe { self.as_bytes() };
        // JSIP's fields are nearly always ASCII, which `is_ascii` checks a word at a
        // time; `from_utf8` goes byte by byte through strings this short.
        if bytes.is_ascii() {
            // SAFETY: ASCII is UTF-8.
            return Ok(Some(unsafe { std::str::from_utf8_unchecked(bytes) }));
        }
        std::str::from_utf8(bytes).map(Some)
    }

    /// `Some(text)` or `None` for [`FfiStr::ABSENT`], trusting that it is UTF-8.
    ///
    /// # Safety
    /// As [`FfiStr::as_bytes`], and the bytes are UTF-8.
    pub unsafe fn to_optional_str_unchecked<'a>(self) -> Option<&'a str> {
        if self.ptr.is_null() {
            return None;
        }
        // SAFETY: forwarded to the caller.
        let bytes = unsafe { self.as_bytes() };
        debug_assert!(std::str::from_utf8(bytes).is_ok(), "lent text is not UTF-8");
        // SAFETY: the caller guarantees UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    }

    /// `s`'s buffer, handed over ([`FfiOwnedMessage`]): its text, and its capacity.
    pub fn give(s: String) -> (FfiStr, usize) {
        let mut s = std::mem::ManuallyDrop::new(s);
        let text = FfiStr {
            ptr: s.as_mut_ptr(),
            len: s.len(),
        };
        (text, s.capacity())
    }

    /// The `String` whose buffer this is ([`FfiStr::give`]), `None` for an absent one.
    ///
    /// # Safety
    /// `self` and `capacity` are a handed-over `String`'s from this side's allocator,
    /// taken once; the text is not checked, so it must be UTF-8 or only dropped.
    pub unsafe fn adopt(self, capacity: usize) -> Option<String> {
        // SAFETY: the caller's contract.
        (!self.ptr.is_null())
            .then(|| unsafe { String::from_raw_parts(self.ptr.cast_mut(), self.len, capacity) })
    }

    /// The text, with invalid UTF-8 replaced (the other side may be buggy; this side
    /// must not become unsound because of it).
    ///
    /// # Safety
    /// As [`FfiStr::as_bytes`].
    pub unsafe fn to_text<'a>(self) -> std::borrow::Cow<'a, str> {
        // SAFETY: forwarded to the caller.
        String::from_utf8_lossy(unsafe { self.as_bytes() })
    }
}

/// Log levels, as numbers (`tracing::Level` is not FFI-safe).
pub mod level {
    pub const ERROR: u8 = 1;
    pub const WARN: u8 = 2;
    pub const INFO: u8 = 3;
    pub const DEBUG: u8 = 4;
    pub const TRACE: u8 = 5;
}

/// What the host gives the plugin's entry point. Valid until the plugin's
/// [`PluginVTable::plugin_drop`] returns.
#[repr(C)]
pub struct LoadArgs {
    /// Passed back to every host function.
    pub ctx: *const c_void,
    /// The plugin's file stem (`echo` for `echo.so`).
    pub name: FfiStr,
    /// The plugin's config folder, `conf/<name>/` (it may not exist).
    pub config_dir: FfiStr,
    /// The most verbose [`level`] the host logs; more verbose events are not forwarded.
    pub max_level: u8,
    /// Writes a log line into the host's log, tagged with the plugin and generation.
    pub log: unsafe extern "C" fn(ctx: *const c_void, level: u8, target: FfiStr, text: FfiStr),
    /// Reports why loading failed, when the entry point returns a null plugin.
    pub error: unsafe extern "C" fn(ctx: *const c_void, text: FfiStr),

    // Since ABI minor 5.
    /// Calls the API mounted as `target` (`hid/v1`) with `request`, on this thread, and
    /// writes its answer to `response`: 0 when the API handled it (whatever its status),
    /// else why it could not be called, as an HTTP status (404 nothing mounted there,
    /// 508 calls nested too deep, 500 the callee panicked before answering). The
    /// callee checks `request`'s caller against its routes' roles as for any request.
    pub call_api: unsafe extern "C" fn(
        ctx: *const c_void,
        target: FfiStr,
        request: *const FfiRequest,
        response: *const FfiResponse,
    ) -> u16,
    /// Checks a user name and password against the people's accounts, with the same
    /// lock-out as the sign-in page, and opens a session; the answer goes to `out`.
    /// Blocks while the password is hashed.
    pub sign_in: unsafe extern "C" fn(
        ctx: *const c_void,
        user: FfiStr,
        password: FfiStr,
        remote: FfiStr,
        out: *mut FfiSignIn,
    ),
    /// The session `token` names, if it is good: the user (written into `user`, its
    /// length into `user_len`) and the role as `Role::to_ffi`; 0 (nobody) if it is not.
    pub session: unsafe extern "C" fn(
        ctx: *const c_void,
        token: FfiStr,
        user: *mut u8,
        cap: usize,
        user_len: *mut usize,
    ) -> u8,
    /// Ends the session `token` names (nothing if there is none).
    pub sign_out: unsafe extern "C" fn(ctx: *const c_void, token: FfiStr),

    // Since ABI minor 6.
    /// The host's allocator, which the plugin's global allocator uses from its entry
    /// point on (see `alloc.rs`): as `GlobalAlloc`, with the layout's size and align.
    pub alloc: HostAllocFn,
    pub dealloc: HostDeallocFn,
    pub realloc: HostReallocFn,

    // Since ABI minor 7.
    /// The plugin calls this from its entry point when it took the host's allocator
    /// (`alloc` above): from then on the two sides may hand each other messages with
    /// their text's allocations ([`FfiOwnedMessage`]) instead of lending them.
    pub shares_allocator: unsafe extern "C" fn(ctx: *const c_void),

    // Since ABI minor 9.
    /// The host's [`MESSAGE_LAYOUT`] when the plugin's [`MESSAGE_LAYOUT_SYMBOL`] holds
    /// the same value, else 0. Equal to the plugin's own and nonzero, with the plugin
    /// sharing the allocator: messages move across whole, both ways
    /// ([`event::MESSAGE_MOVED`], [`FfiHost::send_moved`]). The host decides from the
    /// same facts, so the two cannot disagree, even about an image whose symbol was
    /// changed after it was built.
    pub message_layout: u64,
}

/// `GlobalAlloc::alloc` of the host, by size and align.
pub type HostAllocFn = unsafe extern "C" fn(size: usize, align: usize) -> *mut u8;
/// `GlobalAlloc::dealloc` of the host.
pub type HostDeallocFn = unsafe extern "C" fn(ptr: *mut u8, size: usize, align: usize);
/// `GlobalAlloc::realloc` of the host.
pub type HostReallocFn =
    unsafe extern "C" fn(ptr: *mut u8, size: usize, align: usize, new_size: usize) -> *mut u8;

/// What [`LoadArgs::sign_in`] answers.
#[repr(C)]
pub struct FfiSignIn {
    /// One of [`sign_in`].
    pub outcome: u8,
    /// The session token (ASCII), when signed in.
    pub token: [u8; 64],
    pub token_len: usize,
    /// The account's role as `Role::to_ffi`, when signed in.
    pub role: u8,
    /// For [`sign_in::LOCKED`]: seconds until the next try.
    pub retry_after_s: u32,
}

/// [`FfiSignIn::outcome`].
pub mod sign_in {
    pub const SIGNED_IN: u8 = 0;
    /// Wrong user name or password (which one is not told).
    pub const WRONG: u8 = 1;
    /// Too many failures from this address.
    pub const LOCKED: u8 = 2;
    /// The account has a one-time code, which this way of signing in cannot take.
    pub const NEEDS_CODE: u8 = 3;
    /// The host could not do it (no session store, no randomness).
    pub const FAILED: u8 = 4;
}

/// The plugin's entry point ([`ENTRY_SYMBOL`]).
pub type EntryFn = unsafe extern "C" fn(args: *const LoadArgs) -> PluginVTable;

/// What a loaded plugin offers. `plugin` is null when loading failed. Every function
/// returns `false` or null when the plugin panicked (the panic is already logged).
///
/// Pointers named `plugin`, `slp`, `instance` and `api` are the plugin's own boxes; the
/// host only passes them back, each to the functions of its kind, and drops each exactly
/// once, never using it afterwards.
#[repr(C)]
pub struct PluginVTable {
    pub plugin: *mut c_void,
    /// Drops the plugin object (its `Drop` is the plugin's last hook).
    pub plugin_drop: unsafe extern "C" fn(plugin: *mut c_void) -> bool,

    /// A new SLP (null when the plugin offers none, or panicked).
    pub slp_new: unsafe extern "C" fn(plugin: *mut c_void) -> *mut c_void,
    pub slp_reload: unsafe extern "C" fn(slp: *mut c_void) -> bool,
    pub slp_unload: unsafe extern "C" fn(slp: *mut c_void) -> bool,
    pub slp_drop: unsafe extern "C" fn(slp: *mut c_void) -> bool,
    pub instance_new: unsafe extern "C" fn(slp: *mut c_void) -> *mut c_void,
    pub instance_event: unsafe extern "C" fn(
        instance: *mut c_void,
        event: *const FfiEvent,
        host: *const FfiHost,
    ) -> bool,
    pub instance_drop: unsafe extern "C" fn(instance: *mut c_void) -> bool,

    /// A new API handler (null when the plugin offers none, or panicked).
    pub api_new: unsafe extern "C" fn(plugin: *mut c_void) -> *mut c_void,
    /// Handles one HTTP request; may be called from several threads at once.
    pub api_handle: unsafe extern "C" fn(
        api: *const c_void,
        request: *const FfiRequest,
        response: *const FfiResponse,
    ) -> bool,
    pub api_reload: unsafe extern "C" fn(api: *const c_void) -> bool,
    pub api_unload: unsafe extern "C" fn(api: *const c_void) -> bool,
    pub api_drop: unsafe extern "C" fn(api: *mut c_void) -> bool,
}

/// [`Event`](crate::slp::Event) as numbers and text.
pub mod event {
    pub const LOADED: u8 = 0;
    /// `text` is the message's JSON.
    pub const MESSAGE: u8 = 1;
    /// `text` is the DialogueID.
    pub const DIALOG_ENDED: u8 = 2;
    /// `token` is the timer's token.
    pub const TIMER: u8 = 3;
    /// `text` is the DialogueID. Since ABI minor 1.
    pub const PEER_DISCONNECTED: u8 = 4;
    /// `message` is the message as [`FfiMessage`](super::FfiMessage); replaces
    /// [`MESSAGE`] for plugins of ABI minor 2 and later.
    pub const MESSAGE_FIELDS: u8 = 5;
    /// The instance's generation drains (no text). Since ABI minor 4.
    pub const DRAINING: u8 = 6;
    /// `owned_message` is the message, handed over ([`FfiOwnedMessage`](crate::ffi::FfiOwnedMessage)); replaces
    /// [`MESSAGE_FIELDS`] for plugins of ABI minor 7 and later that share the host's
    /// allocator.
    pub const MESSAGE_OWNED: u8 = 7;
    /// `moved_message` is the message, moved across whole (a `Box<Message>`); replaces
    /// [`MESSAGE_OWNED`] for plugins of ABI minor 9 and later whose messages move
    /// ([`LoadArgs::message_layout`](crate::ffi::LoadArgs::message_layout)).
    pub const MESSAGE_MOVED: u8 = 8;

    /// The ABI minor that introduced event `kind`: the host does not send a plugin an event
    /// kind newer than the plugin's own ABI, so an old plugin never sees one it cannot read.
    pub const fn since_minor(kind: u8) -> u32 {
        match kind {
            PEER_DISCONNECTED => 1,
            MESSAGE_FIELDS => 2,
            DRAINING => 4,
            MESSAGE_OWNED => 7,
            MESSAGE_MOVED => 9,
            _ => 0,
        }
    }
}

#[repr(C)]
pub struct FfiEvent {
    pub kind: u8,
    pub text: FfiStr,
    pub token: u64,
    /// For [`event::MESSAGE_FIELDS`]; null otherwise. Since ABI minor 2 (older plugins
    /// never read it).
    pub message: *const FfiMessage,
    /// For [`event::MESSAGE_OWNED`]; null otherwise. Since ABI minor 7.
    pub owned_message: *const FfiOwnedMessage,
    /// Whether `text` is handed over ([`FfiStr::give`], `text_capacity` allocated), as
    /// the DialogueID of [`event::DIALOG_ENDED`] and [`event::PEER_DISCONNECTED`] is to
    /// a plugin that takes handed-over messages. Since ABI minor 7.
    pub text_handed_over: bool,
    pub text_capacity: usize,
    /// For [`event::MESSAGE_MOVED`]: a `Box<Message>` made by `Box::into_raw`, which
    /// the plugin takes (`Box::from_raw`); null otherwise. Since ABI minor 9.
    pub moved_message: *mut c_void,
}

impl FfiEvent {
    /// An event of `kind` with nothing in it.
    pub fn new(kind: u8) -> FfiEvent {
        FfiEvent {
            kind,
            text: FfiStr::new(""),
            token: 0,
            message: std::ptr::null(),
            owned_message: std::ptr::null(),
            text_handed_over: false,
            text_capacity: 0,
            moved_message: std::ptr::null_mut(),
        }
    }
}

/// An optional JSIP number.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FfiNumber {
    pub present: bool,
    pub value: u64,
}

/// One JSIP message as its fields (JSIP.md §2). Text is UTF-8 and borrowed for the call;
/// an absent optional field is [`FfiStr::ABSENT`] (a null `ptr`), which is not the same
/// as an empty string. The host validates what a plugin lends exactly as it would a
/// frame's JSON (`Message::from_ffi`), so nothing malformed reaches the stack; a plugin
/// takes the host's as the host's parser left it (`Message::from_host`), trusting its
/// text to be UTF-8 as it trusts its pointers.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FfiMessage {
    /// `Type`: a method name, or `RESPONSE`.
    pub type_: FfiStr,
    /// `Code`, for a response.
    pub code: u16,
    pub cseq: u64,
    pub related_id: FfiNumber,
    pub expire: FfiNumber,
    pub request_uri: FfiStr,
    pub desc: FfiStr,
    pub from: FfiStr,
    pub to: FfiStr,
    pub dialogue_id: FfiStr,
    pub router: FfiStr,
    pub content_type: FfiStr,
    pub p_asserted_identity: FfiStr,
    pub event: FfiStr,
    pub reason: FfiStr,
    /// `Body` as JSON text.
    pub body: FfiStr,
    /// Every other key, as the text of one JSON object.
    pub extra: FfiStr,
}

impl FfiMessage {
    /// The text fields, in the order of [`FfiOwnedMessage::capacity`].
    pub fn texts(&self) -> [FfiStr; TEXTS] {
        [
            self.type_,
            self.request_uri,
            self.desc,
            self.from,
            self.to,
            self.dialogue_id,
            self.router,
            self.content_type,
            self.p_asserted_identity,
            self.event,
            self.reason,
            self.body,
            self.extra,
        ]
    }
}

/// How many text fields an [`FfiMessage`] has.
pub const TEXTS: usize = 13;

/// A message handed over with its text (ABI 1.7), when both sides allocate with the
/// host's allocator (see [`LoadArgs::shares_allocator`]): each present text field but
/// `type_` is the buffer of a Rust `String`, of `len` bytes and `capacity` bytes
/// allocated, and from the call on it belongs to the receiver, who frees it (or keeps
/// it as its own `String`) whatever it makes of the message. So a message crosses with
/// no copy of its strings and no free on the sender's side, as a compiled-in SLP's
/// message moves. `type_` is only lent, as in [`FfiMessage`]. Every text is UTF-8, as a
/// `String`'s is: the receiver adopts it as a `String` unchecked, as it adopts the
/// pointers and capacities, which it could not check either (plugin-api makes such a
/// message only from a `Message`'s strings).
#[repr(C)]
pub struct FfiOwnedMessage {
    /// `fields.extra` is absent when the unknown keys come as `entries`; a receiver
    /// takes both.
    pub fields: FfiMessage,
    /// Each text field's allocated size, in the order of [`FfiMessage::texts`] (the
    /// first, `type_`'s, is 0: it is lent).
    pub capacity: [usize; TEXTS],
    /// Whether `body` is the text of a JSON string (its value, unquoted and unescaped)
    /// rather than JSON text: the usual `Body` crosses without being written or parsed.
    pub body_is_string: bool,
    /// The unknown keys, one entry each: the buffer of a `Vec<FfiOwnedEntry>` (`len`
    /// entries, `capacity` allocated), handed over with the strings it holds; or, with
    /// `capacity` 0 (ABI 1.8, to a receiver of 1.8 or later), `len` entries lent for the
    /// call, whose strings are still handed over. A single unknown key crosses so,
    /// without a vector allocated on one side and freed on the other.
    pub entries: *mut FfiOwnedEntry,
    pub entries_len: usize,
    pub entries_capacity: usize,
}

/// One unknown key of an [`FfiOwnedMessage`]: its name and its value, both handed over
/// as `String` buffers.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FfiOwnedEntry {
    pub key: FfiStr,
    pub key_capacity: usize,
    /// The value's JSON text, or, with `value_is_string`, the string it is.
    pub value: FfiStr,
    pub value_capacity: usize,
    pub value_is_string: bool,
}

/// [`Host`](crate::slp::Host) for one event.
#[repr(C)]
pub struct FfiHost {
    pub ctx: *mut c_void,
    pub instance_id: u64,
    /// `json` is one JSIP message.
    pub send: unsafe extern "C" fn(ctx: *mut c_void, json: FfiStr),
    /// Writes a new DialogueID (`relid: false`) or relid into `buf`; returns its length
    /// (IDs are ASCII and shorter than 64 bytes).
    pub new_id:
        unsafe extern "C" fn(ctx: *mut c_void, relid: bool, buf: *mut u8, cap: usize) -> usize,
    pub end: unsafe extern "C" fn(ctx: *mut c_void),
    pub set_timer: unsafe extern "C" fn(ctx: *mut c_void, after_ms: u64, token: u64),
    /// `send` with the message as fields. Since ABI minor 2.
    pub send_fields: unsafe extern "C" fn(ctx: *mut c_void, message: *const FfiMessage),
    /// `send` with the message handed over ([`FfiOwnedMessage`]): for a plugin that
    /// shares the host's allocator. Since ABI minor 7.
    pub send_owned: unsafe extern "C" fn(ctx: *mut c_void, message: *const FfiOwnedMessage),
    /// `send` with the message moved across whole: `message` is a `Box<Message>` made by
    /// `Box::into_raw`, which the host takes. Only for a plugin whose messages move
    /// ([`LoadArgs::message_layout`]). Since ABI minor 9.
    pub send_moved: unsafe extern "C" fn(ctx: *mut c_void, message: *mut c_void),
}

#[repr(C)]
pub struct FfiHeader {
    pub name: FfiStr,
    pub value: FfiStr,
}

impl FfiHeader {
    /// `headers` lent as a list for [`FfiRequest::headers`], valid while they are.
    pub fn lend_all<K: AsRef<str>, V: AsRef<str>>(headers: &[(K, V)]) -> Vec<FfiHeader> {
        headers
            .iter()
            .map(|(k, v)| FfiHeader {
                name: FfiStr::new(k.as_ref()),
                value: FfiStr::new(v.as_ref()),
            })
            .collect()
    }
}

/// One HTTP request to a plugin's API.
#[repr(C)]
pub struct FfiRequest {
    pub method: FfiStr,
    /// The path below the mount point, starting with `/` (`/rooms` for
    /// `/chatroom/v1/rooms`), percent-encoded as received.
    pub path: FfiStr,
    /// The raw query string, without `?`.
    pub query: FfiStr,
    pub headers: *const FfiHeader,
    pub header_count: usize,
    pub body_ctx: *mut c_void,
    /// Reads up to `cap` bytes of the body into `buf`: the count, 0 at the end, or -1
    /// when the client went away or sent more than the host allows.
    pub read_body: unsafe extern "C" fn(ctx: *mut c_void, buf: *mut u8, cap: usize) -> isize,
    /// Since ABI minor 3 (older plugins never read these): who is calling, the signed-in
    /// user (empty on the management port) and their role as `Role::to_ffi`.
    pub caller_user: FfiStr,
    pub caller_role: u8,
    /// Since ABI minor 5: the client's IP address as text (empty when none, as in a call
    /// from another plugin that did not pass its own on).
    pub remote: FfiStr,
}

/// Where a plugin's HTTP answer goes. The status and headers are sent with the first
/// body write (or when the handler returns); later changes to them are ignored.
#[repr(C)]
pub struct FfiResponse {
    pub ctx: *mut c_void,
    pub set_status: unsafe extern "C" fn(ctx: *mut c_void, status: u16),
    pub add_header: unsafe extern "C" fn(ctx: *mut c_void, name: FfiStr, value: FfiStr),
    /// Sends a piece of the body, waiting while the client is slow; `false` once the
    /// client went away (the handler should return). Small answers are collected and
    /// sent whole when the handler returns; empty `data` flushes (starts streaming).
    pub write: unsafe extern "C" fn(ctx: *mut c_void, data: FfiStr) -> bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_kind_is_no_newer_than_this_abi() {
        // A kind added after ABI 1.0 must name the minor that added it, and that minor
        // must exist: otherwise a host would send it to plugins that panic on it.
        for kind in [
            event::LOADED,
            event::MESSAGE,
            event::DIALOG_ENDED,
            event::TIMER,
        ] {
            assert_eq!(event::since_minor(kind), 0);
        }
        assert_eq!(event::since_minor(event::PEER_DISCONNECTED), 1);
        assert_eq!(event::since_minor(event::MESSAGE_FIELDS), 2);
        assert_eq!(event::since_minor(event::DRAINING), 4);
        assert_eq!(event::since_minor(event::MESSAGE_OWNED), 7);
        assert_eq!(event::since_minor(event::MESSAGE_MOVED), 9);
        assert!(event::since_minor(event::MESSAGE_MOVED) <= ABI_MINOR);
    }

    #[test]
    fn the_message_layout_names_this_compiler() {
        // build.rs asked rustc; without it the layout is 0 and no message moves.
        assert!(
            env!("JSIPD_BUILT_BY").starts_with("rustc "),
            "{}",
            env!("JSIPD_BUILT_BY")
        );
        assert!(!env!("JSIPD_BUILT_FOR").is_empty());
        assert_ne!(MESSAGE_LAYOUT, 0);
    }
}
