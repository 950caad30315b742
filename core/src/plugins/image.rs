//! One `dlopen`ed copy of a plugin file and the plugin object made from it.
//!
//! Lifecycle: [`Image::load`] (on a short-lived thread of its own) copies the file to a
//! private path, opens it, checks the ABI record before calling anything, and calls the
//! entry point. The image lives as long as an `Arc<Image>` does: every SLP, instance and
//! API made from it holds one. The last one is always dropped on a host thread after
//! every thread that ran plugin code was joined (see `plugins::retire`), so `Drop` can
//! drop the plugin object, `dlclose`, and tell from `/proc/self/maps` whether the code
//! really left memory.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use jsipd_plugin_api::ffi::{self, AbiRecord, EntryFn, FfiStr, LoadArgs, PluginVTable};

use super::file::{refuse, Refusal};
use crate::alloc::GLOBAL;

/// How a plugin's SLP gets each message, fixed at load by its ABI minor and allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Whole, as a `Box<Message>` (ABI 1.9, the host's allocator, and a `Message` laid
    /// out as the host lays it out: `ffi::MESSAGE_LAYOUT`).
    Moved,
    /// With its text (ABI 1.7, and the plugin took the host's allocator).
    HandedOver,
    /// As fields lent for the call, which the plugin copies (ABI 1.2 and later).
    Lent,
    /// As JSON text (before ABI 1.2).
    Json,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Moved => "moved",
            Delivery::HandedOver => "handed over",
            Delivery::Lent => "lent",
            Delivery::Json => "json",
        }
    }
}

/// What the listings show about an image; outlives the image itself.
#[derive(Debug)]
pub struct ImageStatus {
    /// The generation that loaded it (log lines are tagged `[file#id]`).
    pub id: u64,
    pub file: String,
    pub sha256: String,
    /// `name version` of the plugin crate, from its ABI record.
    pub built_from: String,
    /// `1.7`: the plugin ABI it was built for.
    pub abi: String,
    /// How its SLP gets messages.
    pub messages: Delivery,
    /// Set when the image was closed: whether its mapping left the process.
    pub unmapped: Mutex<Option<bool>>,
}

/// What the host's log callback needs; lives in a `Box` so its address is stable.
struct HostContext {
    tag: String,
    error: Mutex<Option<String>>,
    /// The plugin took the host's allocator (`LoadArgs::shares_allocator`).
    shares_allocator: AtomicBool,
}

pub struct Image {
    pub status: Arc<ImageStatus>,
    vtable: PluginVTable,
    /// `None` once closed (in `Drop`).
    library: Option<libloading::os::unix::Library>,
    /// Pointed to by `args.ctx`; valid until the plugin object is dropped.
    host: Box<HostContext>,
    /// What the entry point got; its strings must outlive the plugin object.
    _args: Box<LoadArgs>,
    _strings: (String, String),
    staging: PathBuf,
    /// The ABI minor the plugin was built with: events added later are not sent to it.
    abi_minor: u32,
    /// `Api::on_drain`, when the plugin was built with a plugin-api that has it.
    api_drain: Option<ffi::ApiDrainFn>,
    /// The plugin says its SLP never blocks (`JSIPD_SLP_NEVER_BLOCKS`).
    never_blocks: bool,
    /// Its SLP's instances want DialogEnded and PeerDisconnected
    /// (`JSIPD_SLP_DIALOG_EVENTS`; true when absent).
    dialog_events: bool,
    /// `jsipd_instance_new_in` and `jsipd_instance_drop_in`, when the plugin has them:
    /// its instances' handles are kept in the host's memory.
    instance_in: Option<(ffi::InstanceNewInFn, ffi::InstanceDropInFn)>,
    /// `Plugin::PEOPLE_ROOT` (`JSIPD_PEOPLE_ROOT`), when the plugin asks for one.
    people_root: Option<String>,
}

// SAFETY: the plugin object is `Send + Sync` (the `Plugin` trait requires it); the
// vtable holds plain function pointers; the library handle is thread-safe (dlopen).
unsafe impl Send for Image {}
// SAFETY: as above.
unsafe impl Sync for Image {}

impl Image {
    /// Loads the private copy `staging` of `plugins/<file>` (whose content hashes to
    /// `sha256`), and removes the copy. `name` is the plugin's file stem, `config_dir`
    /// its `conf/<name>/`, `id` the generation number.
    ///
    /// Runs the plugin's initialisers and `Plugin::load`: call it on a thread that is
    /// joined right after, never on an async worker.
    pub fn load(
        staging: &Path,
        file: &str,
        sha256: String,
        config_dir: &Path,
        id: u64,
    ) -> Result<Arc<Image>, Refusal> {
        let file = file.to_string();
        let name = file.trim_end_matches(".so").to_string();
        let opened = open_checked(staging, &file);
        // The mapping keeps the code; the name is not needed any more, and no copy is
        // left behind even if the daemon is killed.
        let _ = std::fs::remove_file(staging);
        let (library, record) = opened?;

        // SAFETY: the ABI record matched, so the symbol has the signature of this major.
        let entry: EntryFn = match unsafe { library.get::<EntryFn>(ffi::ENTRY_SYMBOL) } {
            Ok(sym) => *sym,
            Err(_) => {
                return Err(refuse(
                    400,
                    format!(
                        "plugins/{file} has an ABI record but no entry point jsipd_plugin_entry_v1; was it built with export_plugin!?"
                    ),
                ))
            }
        };
        // SAFETY: an optional `u8` static (plugin-api's export_plugin!); read, not called.
        let never_blocks = unsafe { library.get::<*const u8>(ffi::NEVER_BLOCKS_SYMBOL) }
            .map(|sym| unsafe { std::ptr::read(*sym) } == 1)
            .unwrap_or(false);
        // SAFETY: an optional `u8` static (export_plugin!); read, not called. Absent:
        // the plugin gets every event, as before it existed.
        let dialog_events = unsafe { library.get::<*const u8>(ffi::DIALOG_EVENTS_SYMBOL) }
            .map(|sym| unsafe { std::ptr::read(*sym) } != 0)
            .unwrap_or(true);
        // SAFETY: an optional `u64` static (export_plugin!, ABI 1.9); read, not called.
        let message_layout = unsafe { library.get::<*const u64>(ffi::MESSAGE_LAYOUT_SYMBOL) }
            .map(|sym| unsafe { std::ptr::read(*sym) })
            .ok();
        let same_layout = ffi::MESSAGE_LAYOUT != 0 && message_layout == Some(ffi::MESSAGE_LAYOUT);
        // SAFETY: an optional function of the ffi::ApiDrainFn type (export_plugin!).
        let api_drain = unsafe { library.get::<ffi::ApiDrainFn>(ffi::API_DRAIN_SYMBOL) }
            .map(|sym| *sym)
            .ok();
        // SAFETY: optional functions of the ffi::InstanceNewInFn and InstanceDropInFn
        // types (export_plugin!); used only as a pair.
        let instance_in = unsafe {
            library
                .get::<ffi::InstanceNewInFn>(ffi::INSTANCE_NEW_IN_SYMBOL)
                .map(|sym| *sym)
                .ok()
                .zip(
                    library
                        .get::<ffi::InstanceDropInFn>(ffi::INSTANCE_DROP_IN_SYMBOL)
                        .map(|sym| *sym)
                        .ok(),
                )
        };
        // SAFETY: an optional NUL-padded `[u8; 32]` static (export_plugin!, ABI 1.5).
        let people_root = unsafe { library.get::<*const [u8; 32]>(ffi::PEOPLE_ROOT_SYMBOL) }
            .map(|sym| ffi::unpadded(unsafe { &**sym }))
            .ok()
            .filter(|r| !r.is_empty());
        if let Some(root) = &people_root {
            if let Err(why) = check_people_root(root) {
                return Err(refuse(
                    400,
                    format!(
                        "plugins/{file} asks to be served at {root:?} on the people's port: {why}"
                    ),
                ));
            }
        }
        let host = Box::new(HostContext {
            tag: format!("{name}#{id}"),
            error: Mutex::new(None),
            shares_allocator: AtomicBool::new(false),
        });
        let strings = (name.clone(), config_dir.to_string_lossy().into_owned());
        let args = Box::new(LoadArgs {
            ctx: (&*host as *const HostContext).cast(),
            name: FfiStr::new(&strings.0),
            config_dir: FfiStr::new(&strings.1),
            max_level: host_max_level(),
            log: host_log,
            error: host_error,
            call_api: super::host::call_api,
            sign_in: super::host::sign_in,
            session: super::host::session,
            sign_out: super::host::sign_out,
            alloc: host_alloc,
            dealloc: host_dealloc,
            realloc: host_realloc,
            shares_allocator: host_shares_allocator,
            // What the plugin compares with its own: 0 unless its symbol matched.
            message_layout: if same_layout { ffi::MESSAGE_LAYOUT } else { 0 },
        });
        // SAFETY: `args` and everything it points to live in the image until `Drop`.
        let vtable = unsafe { entry(&*args) };
        let since = |kind| record.minor >= ffi::event::since_minor(kind);
        // `shares_allocator` is set by the entry point, if at all.
        let shares_allocator = host.shares_allocator.load(Ordering::Relaxed);
        // The plugin decided the same from the same facts (`export.rs`).
        let messages = if since(ffi::event::MESSAGE_MOVED) && shares_allocator && same_layout {
            Delivery::Moved
        } else if since(ffi::event::MESSAGE_OWNED) && shares_allocator {
            Delivery::HandedOver
        } else if since(ffi::event::MESSAGE_FIELDS) {
            Delivery::Lent
        } else {
            Delivery::Json
        };
        let image = Image {
            status: Arc::new(ImageStatus {
                id,
                file,
                sha256,
                built_from: ffi::unpadded(&record.plugin),
                abi: format!("{}.{}", record.major, record.minor),
                messages,
                unmapped: Mutex::new(None),
            }),
            vtable,
            library: Some(library),
            host,
            _args: args,
            _strings: strings,
            staging: staging.to_owned(),
            abi_minor: record.minor,
            never_blocks,
            api_drain,
            instance_in,
            dialog_events,
            people_root,
        };
        if image.vtable.plugin.is_null() {
            let why = image
                .host
                .error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_else(|| "no reason given".into());
            let file = image.status.file.clone();
            drop(image); // closes the library
            return Err(refuse(
                400,
                format!("plugins/{file} refused to load: {why}"),
            ));
        }
        Ok(Arc::new(image))
    }

    pub fn vtable(&self) -> &PluginVTable {
        &self.vtable
    }

    /// The ABI minor the plugin was built with.
    pub fn abi_minor(&self) -> u32 {
        self.abi_minor
    }

    /// Whether its SLP's instances want DialogEnded and PeerDisconnected.
    pub fn wants_dialog_events(&self) -> bool {
        self.dialog_events
    }

    /// The plugin's `jsipd_instance_new_in` and `jsipd_instance_drop_in`, if it has them.
    pub fn instance_in(&self) -> Option<(ffi::InstanceNewInFn, ffi::InstanceDropInFn)> {
        self.instance_in
    }

    /// The plugin's `jsipd_api_drain`, if it has one.
    pub fn api_drain(&self) -> Option<ffi::ApiDrainFn> {
        self.api_drain
    }

    /// The top-level people's port path the plugin's API is also served at (`/api`).
    pub fn people_root(&self) -> Option<&str> {
        self.people_root.as_deref()
    }

    /// Whether the plugin says its SLP never blocks, so it may run on the node task.
    pub fn never_blocks(&self) -> bool {
        self.never_blocks
    }

    /// Whether the plugin was built with an ABI that has `event` (see `ffi::event`).
    pub fn knows_event(&self, event: u8) -> bool {
        ffi::event::since_minor(event) <= self.abi_minor
    }

    /// How this plugin's SLP gets messages.
    pub fn delivery(&self) -> Delivery {
        self.status.messages
    }

    /// Whether the plugin was built to be told who calls its API and to check roles
    /// itself (ABI 1.3 and later).
    pub fn knows_roles(&self) -> bool {
        self.abi_minor >= 3
    }

    /// The `[file#id]` tag of this image's log lines.
    pub fn tag(&self) -> &str {
        &self.host.tag
    }

    /// Drops the plugin object and closes the library; idempotent.
    fn close(&mut self) {
        let Some(library) = self.library.take() else {
            return;
        };
        if !self.vtable.plugin.is_null() {
            // SAFETY: the plugin object is dropped once, after everything made from it
            // (every holder of an `Arc<Image>` is gone).
            if !unsafe { (self.vtable.plugin_drop)(self.vtable.plugin) } {
                tracing::error!("plugin [{}] panicked while being dropped", self.tag());
            }
        }
        if let Err(e) = library.close() {
            tracing::warn!("plugin [{}]: dlclose: {e}", self.tag());
        }
        let unmapped = !is_mapped(&self.staging);
        *self
            .status
            .unmapped
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(unmapped);
        if unmapped {
            tracing::info!("plugin [{}] unloaded; its image left memory", self.tag());
        } else {
            tracing::warn!(
                "plugin [{}] unloaded, but its image is still mapped (it left a thread-local destructor or a thread running, or is marked nodelete)",
                self.tag()
            );
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        self.close();
    }
}

/// Opens `staging` and checks its ABI record, calling no plugin code besides the
/// library's initialisers (which `dlopen` always runs).
fn open_checked(
    staging: &Path,
    file: &str,
) -> Result<(libloading::os::unix::Library, AbiRecord), Refusal> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: the operator put this file into plugins/ to be loaded; RTLD_LOCAL keeps
    // its symbols out of every other library's way.
    let library = unsafe { Library::open(Some(staging), RTLD_NOW | RTLD_LOCAL) }
        .map_err(|e| refuse(400, format!("plugins/{file} cannot be loaded: {e}")))?;
    // SAFETY: a symbol of this name is a static `AbiRecord`; the magic is checked before
    // anything else in it is trusted.
    let record = match unsafe { library.get::<*const AbiRecord>(ffi::ABI_SYMBOL) } {
        Ok(sym) => unsafe { std::ptr::read(*sym) },
        Err(_) => {
            let _ = library.close();
            return Err(refuse(
                400,
                format!("plugins/{file} is not a jsipd plugin (it has no JSIPD_PLUGIN_ABI record; plugins export one with export_plugin!)"),
            ));
        }
    };
    if record.magic != ffi::ABI_MAGIC {
        let _ = library.close();
        return Err(refuse(
            400,
            format!("plugins/{file} is not a jsipd plugin (its JSIPD_PLUGIN_ABI record has the wrong magic)"),
        ));
    }
    if let Err(why) = abi_fits(&record, file) {
        let _ = library.close();
        return Err(refuse(400, why));
    }
    Ok((library, record))
}

/// Whether this host can serve a plugin with `record`: the same major, and a minor no
/// newer than its own (a newer plugin may call host functions this host lacks; an older
/// one is served in its own terms).
fn abi_fits(record: &AbiRecord, file: &str) -> Result<(), String> {
    let (major, minor) = (record.major, record.minor);
    if major == ffi::ABI_MAJOR && minor <= ffi::ABI_MINOR {
        return Ok(());
    }
    let built = format!(
        "plugins/{file} was built against plugin-api {} (ABI {major}.{minor}), but this jsipd speaks ABI {}.{} (plugin-api {})",
        ffi::unpadded(&record.api_version),
        ffi::ABI_MAJOR,
        ffi::ABI_MINOR,
        env!("CARGO_PKG_VERSION"),
    );
    Err(if major == ffi::ABI_MAJOR {
        format!("{built}; it needs a newer jsipd, or rebuild it with this jsipd's pcompile")
    } else {
        format!("{built}; rebuild it with this jsipd's pcompile")
    })
}

/// Whether a mapping of `path` is still in `/proc/self/maps` (a deleted file shows up
/// with a ` (deleted)` suffix).
pub fn is_mapped(path: &Path) -> bool {
    let needle = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/maps")
        .map(|maps| {
            maps.lines().any(|l| {
                l.split_once('/')
                    .map(|(_, p)| format!("/{p}"))
                    .is_some_and(|p| p.trim_end_matches(" (deleted)") == needle)
            })
        })
        .unwrap_or(false)
}

/// A people's root is one path segment of letters, digits and `-`, and none of the
/// port's own (`/auth`, `/console`; `/rtc` is matched before any plugin).
fn check_people_root(root: &str) -> Result<(), String> {
    let Some(name) = root.strip_prefix('/') else {
        return Err("it must start with /".into());
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("it must be one segment of a-z, 0-9 and -, such as /api".into());
    }
    if matches!(name, "auth" | "console" | "rtc") {
        return Err("that path is the people's port's own".into());
    }
    Ok(())
}

fn host_max_level() -> u8 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => ffi::level::ERROR,
        LevelFilter::WARN => ffi::level::WARN,
        LevelFilter::INFO => ffi::level::INFO,
        LevelFilter::DEBUG => ffi::level::DEBUG,
        _ => ffi::level::TRACE,
    }
}

/// The plugin's allocations, made with the daemon's own global allocator (mimalloc): a
/// plugin's many small strings cost what the host's do (ABI 1.6, `plugin-api/src/alloc.rs`).
/// Called directly, not through `std::alloc`'s shims (see `crate::alloc`).
unsafe extern "C" fn host_alloc(size: usize, align: usize) -> *mut u8 {
    // SAFETY: the plugin's `GlobalAlloc` passes a valid, non-zero layout.
    unsafe { GLOBAL.alloc(Layout::from_size_align_unchecked(size, align)) }
}

unsafe extern "C" fn host_dealloc(ptr: *mut u8, size: usize, align: usize) {
    // SAFETY: `ptr` came from `host_alloc` or `host_realloc` with this layout, or from
    // the daemon's own allocations (a handed-over string), which use the same allocator.
    unsafe { GLOBAL.dealloc(ptr, Layout::from_size_align_unchecked(size, align)) }
}

unsafe extern "C" fn host_realloc(
    ptr: *mut u8,
    size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    // SAFETY: as in `host_dealloc`; `new_size` is valid for `align`.
    unsafe {
        GLOBAL.realloc(
            ptr,
            Layout::from_size_align_unchecked(size, align),
            new_size,
        )
    }
}

unsafe extern "C" fn host_shares_allocator(ctx: *const c_void) {
    // SAFETY: `ctx` is the image's `HostContext`, alive while the plugin is.
    let host = unsafe { &*ctx.cast::<HostContext>() };
    host.shares_allocator.store(true, Ordering::Relaxed);
}

unsafe extern "C" fn host_log(ctx: *const c_void, level: u8, target: FfiStr, text: FfiStr) {
    // SAFETY: `ctx` is the image's `HostContext`, alive while the plugin is; the strings
    // are valid for this call.
    let (host, target, text) = unsafe {
        (
            &*ctx.cast::<HostContext>(),
            target.to_text(),
            text.to_text(),
        )
    };
    let tag = &host.tag;
    match level {
        ffi::level::ERROR => tracing::error!(target: "plugin", "[{tag}] {target}: {text}"),
        ffi::level::WARN => tracing::warn!(target: "plugin", "[{tag}] {target}: {text}"),
        ffi::level::INFO => tracing::info!(target: "plugin", "[{tag}] {target}: {text}"),
        ffi::level::DEBUG => tracing::debug!(target: "plugin", "[{tag}] {target}: {text}"),
        _ => tracing::trace!(target: "plugin", "[{tag}] {target}: {text}"),
    }
}

unsafe extern "C" fn host_error(ctx: *const c_void, text: FfiStr) {
    // SAFETY: as in `host_log`.
    let (host, text) = unsafe { (&*ctx.cast::<HostContext>(), text.to_text()) };
    *host.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(text.into_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(major: u32, minor: u32) -> AbiRecord {
        AbiRecord {
            major,
            minor,
            ..AbiRecord::current("test")
        }
    }

    #[test]
    fn a_people_root_is_one_plain_segment_and_not_the_ports_own() {
        assert_eq!(check_people_root("/api"), Ok(()));
        assert_eq!(check_people_root("/nano-kvm2"), Ok(()));
        for bad in [
            "api", "/", "/api/v1", "/API", "/a.b", "/..", "/auth", "/console",
        ] {
            assert!(check_people_root(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_same_major_and_no_newer_minor_fit() {
        for minor in 0..=ffi::ABI_MINOR {
            assert_eq!(abi_fits(&record(ffi::ABI_MAJOR, minor), "p.so"), Ok(()));
        }
    }

    #[test]
    fn a_newer_minor_or_another_major_is_refused_with_what_to_do() {
        let newer = abi_fits(&record(ffi::ABI_MAJOR, ffi::ABI_MINOR + 1), "p.so").unwrap_err();
        assert!(newer.contains("it needs a newer jsipd"), "{newer}");
        assert!(
            newer.starts_with("plugins/p.so was built against"),
            "{newer}"
        );
        let next = abi_fits(&record(ffi::ABI_MAJOR + 1, 0), "p.so").unwrap_err();
        assert!(
            next.ends_with("rebuild it with this jsipd's pcompile"),
            "{next}"
        );
        assert!(!next.contains("newer jsipd"), "{next}");
        assert!(abi_fits(&record(ffi::ABI_MAJOR - 1, 9), "p.so").is_err());
    }
}
