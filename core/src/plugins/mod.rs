//! Plugins: loading `.so` files, their generations, and the loaded set.
//!
//! - [`file`](mod@file): which `file=` may be loaded, and the private copy each load runs from.
//! - [`image`]: one `dlopen`ed copy: the ABI check, the entry point, `dlclose` and the
//!   `/proc/self/maps` check.
//! - [`slp`] and [`api`]: a plugin's SLP and API behind the host's own traits.
//! - this module: the registry behind `/slpm/v1` and `/apim/v1`.
//!
//! A *generation* is one load of a name. Loading a name that is loaded starts a new
//! generation; the old one *drains*: it gets no new dialogs (SLP) or requests (API),
//! finishes what it has, and is *retired* (unloaded) when nothing is left or when
//! `drain_timeout` runs out. SLP generations live in the node (which owns the stack and
//! the runners); API generations live here. Both are listed from here.
//!
//! Plugin code runs only on threads that are joined before its image is closed: load
//! and unload on short-lived threads of their own, SLPs on their runner, API requests
//! each on a thread. Never on the async workers, and never after its unload hook.

pub mod api;
pub mod file;
pub mod host;
pub mod image;
pub mod slp;
pub use api::Caller;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dispatch::runner::Usage;
use crate::node::NodeHandle;
use api::ForeignApi;
pub use file::{refuse, Refusal};
use image::{Image, ImageStatus};
use slp::ForeignSlp;

/// The management APIs that are part of the daemon and cannot be replaced or deleted.
pub const BUILT_IN_APIS: &[&str] = &["runtime.v1", "apim.v1", "slpm.v1"];

/// Retired generations kept per name for the listings (the newest ones).
const HISTORY: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenState {
    Active,
    Draining,
    Retired,
}

impl GenState {
    fn as_str(self) -> &'static str {
        match self {
            GenState::Active => "active",
            GenState::Draining => "draining",
            GenState::Retired => "retired",
        }
    }
}

/// One load of a name.
pub struct Generation {
    pub id: u64,
    /// `echo` (SLP) or `echo.v1` (API).
    pub name: String,
    pub image: Arc<ImageStatus>,
    /// When this generation was loaded (its image may be older: it can be shared).
    pub loaded_at: SystemTime,
    pub usage: Arc<Usage>,
    state: watch::Sender<GenState>,
    /// Set once when retiring starts, so two paths cannot retire it twice.
    retiring: AtomicBool,
}

impl Generation {
    fn new(id: u64, name: &str, image: Arc<ImageStatus>) -> Arc<Generation> {
        Arc::new(Generation {
            id,
            name: name.to_string(),
            image,
            loaded_at: SystemTime::now(),
            usage: Arc::new(Usage::default()),
            state: watch::Sender::new(GenState::Active),
            retiring: AtomicBool::new(false),
        })
    }

    /// The key the stack and node know an SLP generation by.
    pub fn key(&self) -> String {
        format!("{}#{}", self.name, self.id)
    }

    pub fn state(&self) -> GenState {
        *self.state.borrow()
    }

    pub fn set_state(&self, s: GenState) {
        self.state.send_replace(s);
    }

    /// Whether retiring has started (nothing was left to drain).
    pub fn is_retiring(&self) -> bool {
        self.retiring.load(Ordering::Acquire)
    }

    /// True for the one caller that gets to retire this generation.
    pub fn start_retiring(&self) -> bool {
        !self.retiring.swap(true, Ordering::AcqRel)
    }

    /// Waits until retired, up to `limit`; true when it is.
    async fn retired_within(&self, limit: Duration) -> bool {
        let mut rx = self.state.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|s| *s == GenState::Retired))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn view(&self) -> Value {
        let u = &self.usage;
        json!({
            "generation": self.id,
            "file": self.image.file,
            "sha256": self.image.sha256,
            "built_from": self.image.built_from,
            "abi": self.image.abi,
            "messages": self.image.messages.as_str(),
            "loaded": humantime::format_rfc3339_seconds(self.loaded_at).to_string(),
            "state": self.state().as_str(),
            "using": u.using.load(Ordering::Relaxed),
            "used": u.used.load(Ordering::Relaxed),
            "panics": u.panics.load(Ordering::Relaxed),
            "unmapped": *self.image.unmapped.lock().unwrap_or_else(|p| p.into_inner()),
        })
    }
}

#[derive(Default)]
struct ApiEntry {
    current: Option<Arc<ForeignApi>>,
    draining: Vec<Arc<ForeignApi>>,
    generations: Vec<Arc<Generation>>,
}

#[derive(Default)]
struct State {
    slps: BTreeMap<String, Vec<Arc<Generation>>>,
    apis: BTreeMap<String, ApiEntry>,
}

pub struct Plugins {
    dir: PathBuf,
    staging: PathBuf,
    conf_dir: PathBuf,
    state_file: PathBuf,
    drain_timeout: RwLock<Duration>,
    next_id: AtomicU64,
    /// Open images, to share one between the SLP and API of the same unchanged file.
    images: Arc<Mutex<Vec<Weak<Image>>>>,
    state: Mutex<State>,
    /// Compiled-in SLPs (`[JSIPStack] builtin_slps`) and their usage, for the listing.
    builtin_slps: Vec<(String, Arc<Usage>)>,
    node: NodeHandle,
    shutdown: CancellationToken,
}

impl Plugins {
    pub fn new(
        config: &Config,
        node: NodeHandle,
        builtin_slps: Vec<(String, Arc<Usage>)>,
        shutdown: CancellationToken,
    ) -> Plugins {
        let dir = config.plugins.dir.clone();
        let staging = dir.join(".staging");
        Plugins {
            staging,
            dir,
            conf_dir: config.prefix.join("conf"),
            state_file: config.plugins.state_file.clone(),
            drain_timeout: RwLock::new(config.plugins.drain_timeout),
            next_id: AtomicU64::new(1),
            images: Arc::default(),
            state: Mutex::new(State::default()),
            builtin_slps,
            node,
            shutdown,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn drain_timeout(&self) -> Duration {
        *self.drain_timeout.read().unwrap_or_else(|p| p.into_inner())
    }

    /// SIGHUP: new drain_timeout, and every plugin's reload hook (SLPs through the node).
    pub fn reconfigure(&self, config: &Config) {
        *self
            .drain_timeout
            .write()
            .unwrap_or_else(|p| p.into_inner()) = config.plugins.drain_timeout;
        let apis: Vec<_> = self
            .state()
            .apis
            .values()
            .filter_map(|e| e.current.clone())
            .collect();
        if !apis.is_empty() {
            let _ = std::thread::Builder::new()
                .name("api-reload".into())
                .spawn(move || apis.iter().for_each(|a| a.reload()));
        }
    }

    // ------------------------------------------------------------------ loading

    /// Opens `file`, or shares a live image of identical bytes, and asks the plugin for
    /// its `what` with `make`; all on one thread of its own, so neither the copy of the
    /// file nor any plugin code runs on an async worker. An image that offers no `what`
    /// is dropped (and closed) on that thread too.
    async fn open<T: Send + 'static>(
        &self,
        file: &str,
        id: u64,
        what: &'static str,
        make: impl FnOnce(&Arc<Image>) -> Option<T> + Send + 'static,
    ) -> Result<(Arc<Image>, T), Refusal> {
        let path = file::resolve(&self.dir, file)?;
        let (staging_dir, conf_dir, images) = (
            self.staging.clone(),
            self.conf_dir.clone(),
            self.images.clone(),
        );
        let file = file.to_string();
        let stem = file.trim_end_matches(".so").to_string();
        on_thread(format!("load-{stem}"), move || {
            let image = open_image(&path, &file, &stem, id, &staging_dir, &conf_dir, &images)?;
            match make(&image) {
                Some(made) => Ok((image, made)),
                None => Err(refuse(
                    400,
                    format!("plugins/{file} offers no {what} (its Plugin::{} returned None or panicked)", what.to_lowercase()),
                )),
            }
        })
        .await?
    }

    /// `POST /slpm/v1/NAME?file=F.so`
    pub async fn load_slp(&self, name: &str, file: &str) -> Result<Value, Refusal> {
        file::check_slp_name(name)?;
        if self.builtin_slps.iter().any(|(n, _)| n == name) {
            return Err(refuse(
                409,
                format!(
                    "{name} is a compiled-in SLP ([JSIPStack] builtin_slps); it cannot be replaced"
                ),
            ));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (image, slp) = self
            .open(file, id, "SLP", |image| ForeignSlp::new(image.clone()))
            .await?;
        let generation = Generation::new(id, name, image.status.clone());
        self.node
            .load_slp(name, generation.clone(), Box::new(slp), image)
            .await?;
        {
            let mut state = self.state();
            let list = state.slps.entry(name.to_string()).or_default();
            list.push(generation.clone());
            trim(list);
        }
        self.persist();
        Ok(json!({"name": name, "generation": generation.view()}))
    }

    /// `DELETE /slpm/v1/NAME`
    pub async fn unload_slp(&self, name: &str) -> Result<Value, Refusal> {
        if self.builtin_slps.iter().any(|(n, _)| n == name) {
            return Err(refuse(
                409,
                format!(
                    "{name} is compiled in ([JSIPStack] builtin_slps); remove it there and restart"
                ),
            ));
        }
        let generation = self.node.unload_slp(name).await?;
        self.persist();
        // With nothing to drain, the answer can say how the unload went; with live
        // dialogs it says "draining" at once.
        if generation.is_retiring() {
            generation.retired_within(Duration::from_secs(5)).await;
        }
        Ok(json!({"name": name, "generation": generation.view()}))
    }

    /// `POST /apim/v1/NAME.vN?file=F.so`
    pub async fn load_api(&self, full: &str, file: &str) -> Result<Value, Refusal> {
        file::split_api_name(full)?;
        if BUILT_IN_APIS.contains(&full) {
            return Err(refuse(
                409,
                format!("{full} is built in and cannot be replaced"),
            ));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let name = full.to_string();
        // Not the last reference (the API holds one): dropping it here runs no plugin code.
        let (_image, api) = self
            .open(file, id, "API", move |image| {
                let generation = Generation::new(id, &name, image.status.clone());
                ForeignApi::new(image.clone(), generation)
            })
            .await?;
        let generation = api.generation.clone();
        let root = api.people_root().map(str::to_string);
        let old = {
            let mut state = self.state();
            if let Some(root) = &root {
                let taken = state.apis.iter().find(|(other, e)| {
                    other.as_str() != full
                        && e.current.as_ref().and_then(|a| a.people_root()) == Some(root)
                });
                if let Some((other, _)) = taken {
                    return Err(refuse(
                        409,
                        format!("{full} asks for {root} on the people's port, which {other} is served at; unload {other} first"),
                    ));
                }
            }
            let entry = state.apis.entry(full.to_string()).or_default();
            entry.generations.push(generation.clone());
            trim(&mut entry.generations);
            entry.current.replace(Arc::new(api))
        };
        if let Some(old) = old {
            self.drain_api(old);
        }
        self.persist();
        tracing::info!(
            "API {full} generation {id} mounted at /{}/{}",
            full.replace('.', "/"),
            root.map(|r| format!(" and at {r}/ on the people's port"))
                .unwrap_or_default()
        );
        Ok(json!({"name": full, "generation": generation.view()}))
    }

    /// `DELETE /apim/v1/NAME.vN`
    pub async fn unload_api(&self, full: &str) -> Result<Value, Refusal> {
        if BUILT_IN_APIS.contains(&full) {
            return Err(refuse(
                409,
                format!("{full} is built in and cannot be deleted"),
            ));
        }
        let old = self
            .state()
            .apis
            .get_mut(full)
            .and_then(|e| e.current.take())
            .ok_or_else(|| refuse(404, format!("no API named {full} is loaded")))?;
        let generation = old.generation.clone();
        self.drain_api(old);
        self.persist();
        if generation.is_retiring() {
            generation.retired_within(Duration::from_secs(5)).await;
        }
        Ok(json!({"name": full, "generation": generation.view()}))
    }

    /// The API mounted at the start of `path` (`/NAME/vN/...`), and the rest of the path.
    pub fn route(&self, path: &str) -> Option<(Arc<ForeignApi>, String)> {
        let mut parts = path.trim_start_matches('/').splitn(3, '/');
        let (name, version) = (parts.next()?, parts.next()?);
        let rest = format!("/{}", parts.next().unwrap_or(""));
        let api = self.mounted(&format!("{name}.{version}"))?;
        Some((api, rest))
    }

    /// The current generation of the API `NAME.vN`.
    fn mounted(&self, full: &str) -> Option<Arc<ForeignApi>> {
        self.state().apis.get(full)?.current.clone()
    }

    /// The API served at a people's root (`Plugin::PEOPLE_ROOT`) that `path` is under,
    /// and the path below that root: `/api/vm/info` → (nanokvm's API, `/vm/info`).
    pub fn route_people_root(&self, path: &str) -> Option<(Arc<ForeignApi>, String)> {
        let segment = path.trim_start_matches('/').split('/').next()?;
        let rest = &path[1 + segment.len()..];
        let state = self.state();
        let api = state.apis.values().find_map(|e| {
            let api = e.current.as_ref()?;
            (api.people_root()?.strip_prefix('/') == Some(segment)).then(|| api.clone())
        })?;
        Some((
            api,
            if rest.is_empty() {
                "/".into()
            } else {
                rest.into()
            },
        ))
    }

    /// A plugin's in-process call of the API mounted as `target` (`hid/v1`), on the
    /// calling plugin's thread: 0 when the API answered, else why not (see
    /// `LoadArgs::call_api`).
    ///
    /// # Safety
    /// `request` and `response` are valid for the call.
    pub unsafe fn call_api(
        self: &Arc<Self>,
        target: &str,
        request: &jsipd_plugin_api::ffi::FfiRequest,
        response: &jsipd_plugin_api::ffi::FfiResponse,
    ) -> u16 {
        let Some(api) = self.mounted(&target.replacen('/', ".", 1)) else {
            return 404;
        };
        // SAFETY: forwarded.
        let ok = unsafe { api.call_direct(request, response) };
        let draining = api.generation.state() == GenState::Draining;
        if draining && api.generation.usage.using.load(Ordering::Acquire) == 0 {
            self.retire_api(&api.generation);
        }
        if ok {
            0
        } else {
            500
        }
    }

    /// Serves a request for a mounted API (see [`Plugins::route`]).
    pub async fn serve(
        self: &Arc<Self>,
        api: Arc<ForeignApi>,
        req: crate::serve::Request,
        path: String,
        caller: Caller,
    ) -> crate::serve::Response {
        let me = Arc::downgrade(self);
        api.serve(req, path, caller, move |api| {
            let draining = api.generation.state() == GenState::Draining;
            if draining && api.generation.usage.using.load(Ordering::Acquire) == 0 {
                if let Some(me) = me.upgrade() {
                    me.retire_api(&api.generation);
                }
            }
        })
        .await
    }

    fn drain_api(&self, api: Arc<ForeignApi>) {
        let generation = api.generation.clone();
        generation.set_state(GenState::Draining);
        {
            let mut state = self.state();
            if let Some(e) = state.apis.get_mut(&generation.name) {
                e.draining.push(api.clone());
            }
        }
        if generation.usage.using.load(Ordering::Acquire) == 0 {
            return self.retire_api(&generation);
        }
        api.drain();
        let timeout = self.drain_timeout();
        let shutdown = self.shutdown.clone();
        let cancel = api.cancel.clone();
        drop(api);
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {
                    tracing::warn!("API {} generation {}: drain_timeout ({timeout:?}) reached; cutting its requests", generation.name, generation.id);
                    cancel.cancel();
                }
                _ = shutdown.cancelled() => {}
            }
        });
    }

    /// Unloads a drained API generation on a thread of its own: joins its request
    /// threads, drops the API (its unload hook) and, if nothing else uses the image,
    /// closes it.
    fn retire_api(&self, generation: &Arc<Generation>) {
        if !generation.start_retiring() {
            return;
        }
        let api = {
            let mut state = self.state();
            let Some(e) = state.apis.get_mut(&generation.name) else {
                return;
            };
            let at = e
                .draining
                .iter()
                .position(|a| a.generation.id == generation.id);
            at.map(|i| e.draining.swap_remove(i))
        };
        let Some(api) = api else { return };
        let generation = generation.clone();
        let _ = spawn_background(format!("retire-{}", generation.name), move || {
            api.join_requests();
            drop(api);
            generation.set_state(GenState::Retired);
            tracing::info!(
                "API {} generation {} retired",
                generation.name,
                generation.id
            );
        });
    }

    // ------------------------------------------------------------------ listings

    pub fn slps_view(&self) -> Value {
        let state = self.state();
        let mut out: Vec<Value> = self
            .builtin_slps
            .iter()
            .map(|(name, usage)| {
                json!({"name": name, "builtin": true, "generations": [{
                    "generation": 0, "file": "(compiled in)", "state": "active",
                    "using": usage.using.load(Ordering::Relaxed),
                    "used": usage.used.load(Ordering::Relaxed),
                    "panics": usage.panics.load(Ordering::Relaxed),
                }]})
            })
            .collect();
        for (name, gens) in &state.slps {
            out.push(json!({"name": name, "builtin": false,
                "generations": gens.iter().map(|g| g.view()).collect::<Vec<_>>()}));
        }
        Value::Array(out)
    }

    pub fn apis_view(&self) -> Value {
        let state = self.state();
        let mut out: Vec<Value> = BUILT_IN_APIS
            .iter()
            .map(|name| {
                json!({"name": name, "builtin": true, "mount": format!("/{}/", name.replace('.', "/")),
                    "generations": [{"generation": 0, "file": "(built in)", "state": "active"}]})
            })
            .collect();
        for (name, e) in &state.apis {
            out.push(json!({"name": name, "builtin": false,
                "mount": format!("/{}/", name.replace('.', "/")),
                "generations": e.generations.iter().map(|g| g.view()).collect::<Vec<_>>()}));
        }
        Value::Array(out)
    }

    // ------------------------------------------------------------------ loaded set

    /// Writes the loaded set (the newest active generation of each name), atomically.
    fn persist(&self) {
        let mut lines = String::from(
            "# Written by jsipd on every plugin load and delete; restored at start.\n",
        );
        {
            let state = self.state();
            for (name, gens) in &state.slps {
                if let Some(g) = gens.iter().rev().find(|g| g.state() == GenState::Active) {
                    lines.push_str(&format!("slp {name} {}\n", g.image.file));
                }
            }
            for (name, e) in &state.apis {
                if let Some(api) = &e.current {
                    lines.push_str(&format!("api {name} {}\n", api.generation.image.file));
                }
            }
        }
        let tmp = self.state_file.with_extension("tmp");
        let written =
            std::fs::write(&tmp, lines).and_then(|()| std::fs::rename(&tmp, &self.state_file));
        if let Err(e) = written {
            tracing::error!(
                "cannot save the loaded plugin set to {}: {e}",
                self.state_file.display()
            );
        }
    }

    /// Loads what `Plugins::persist` saved; a plugin that fails is logged and skipped.
    pub async fn restore(&self) {
        // Copies left by a killed daemon.
        if let Ok(entries) = std::fs::read_dir(&self.staging) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let Ok(text) = std::fs::read_to_string(&self.state_file) else {
            return;
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let result = match words.as_slice() {
                ["slp", name, file] => self.load_slp(name, file).await.map(|_| ()),
                ["api", name, file] => self.load_api(name, file).await.map(|_| ()),
                _ => Err(refuse(
                    400,
                    "expected 'slp NAME FILE' or 'api NAME.vN FILE'",
                )),
            };
            match result {
                Ok(()) => tracing::info!("restored {line}"),
                Err(e) => tracing::error!(
                    "{}:{}: not restored ({line}): {}",
                    self.state_file.display(),
                    n + 1,
                    e.reason
                ),
            }
        }
        self.persist();
    }

    /// Graceful stop: unloads every API (SLPs go with the node).
    pub fn shutdown(&self) {
        let apis: Vec<Arc<ForeignApi>> = {
            let mut state = self.state();
            state
                .apis
                .values_mut()
                .flat_map(|e| e.current.take().into_iter().chain(e.draining.drain(..)))
                .collect()
        };
        let _ = std::thread::Builder::new()
            .name("unload-apis".into())
            .spawn(move || {
                for api in apis {
                    api.cancel.cancel();
                    api.join_requests();
                }
            })
            .map(|t| t.join());
    }
}

/// Keeps the newest retired generations only.
fn trim(list: &mut Vec<Arc<Generation>>) {
    while list
        .iter()
        .filter(|g| g.state() == GenState::Retired)
        .count()
        > HISTORY
    {
        if let Some(i) = list.iter().position(|g| g.state() == GenState::Retired) {
            list.remove(i);
        }
    }
}

/// Copies `plugins/FILE` to a private path and opens it, unless a live image of the same
/// file has the same bytes: then that one is shared. On a load thread.
fn open_image(
    path: &std::path::Path,
    file: &str,
    stem: &str,
    id: u64,
    staging_dir: &std::path::Path,
    conf_dir: &std::path::Path,
    images: &Mutex<Vec<Weak<Image>>>,
) -> Result<Arc<Image>, Refusal> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(staging_dir)
        .and_then(|()| {
            std::fs::set_permissions(staging_dir, std::fs::Permissions::from_mode(0o700))
        })
        .map_err(|e| refuse(500, format!("{}: {e}", staging_dir.display())))?;
    // The resolved path, because that is what /proc/self/maps shows: an unload checks
    // there that the image left memory, and a packaged tree links `.staging` elsewhere.
    let staging_dir = std::fs::canonicalize(staging_dir)
        .map_err(|e| refuse(500, format!("{}: {e}", staging_dir.display())))?;
    let staging = staging_dir.join(format!("{stem}.{id}.so"));
    let sha256 = file::stage(path, &staging)
        .map_err(|e| refuse(500, format!("copying plugins/{file} for loading: {e}")))?;
    let mut images = images.lock().unwrap_or_else(|p| p.into_inner());
    images.retain(|w| w.strong_count() > 0);
    let same = images
        .iter()
        .filter_map(Weak::upgrade)
        .find(|i| i.status.file == file && i.status.sha256 == sha256);
    if let Some(image) = same {
        let _ = std::fs::remove_file(&staging);
        return Ok(image);
    }
    // Loading under the lock: two loads of the same new bytes then share one image.
    let image = Image::load(&staging, file, sha256, &conf_dir.join(stem), id)?;
    tracing::info!(
        "plugin [{}] loaded from plugins/{file} ({})",
        image.tag(),
        image.status.built_from
    );
    images.push(Arc::downgrade(&image));
    Ok(image)
}

/// Runs `f` on a new thread and waits for it without blocking an async worker.
async fn on_thread<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Refusal> {
    let (tx, rx) = oneshot::channel();
    spawn_background(name, move || {
        let _ = tx.send(f());
    })
    .map_err(|e| refuse(503, format!("cannot start a thread: {e}")))?;
    rx.await
        .map_err(|_| refuse(500, "the plugin loader thread died"))
}

/// When the stack has no dialogs left for a draining SLP generation, the node retires it
/// with this: joins the runner (which dropped the SLP), then drops the image.
pub fn retire_slp(
    generation: Arc<Generation>,
    runner: crate::dispatch::runner::Runner,
    image: Arc<Image>,
) {
    let _ = spawn_background(format!("retire-{}", generation.name), move || {
        drop(runner);
        drop(image);
        generation.set_state(GenState::Retired);
        tracing::info!(
            "SLP {} generation {} retired",
            generation.name,
            generation.id
        );
    });
}

/// Niceness of the threads that load and unload plugins.
const BACKGROUND_NICE: libc::c_int = 10;

/// Spawns `f` on a thread of its own at a lower CPU priority (`BACKGROUND_NICE`).
/// Copying, hashing, mapping and unmapping a plugin file is background work that must
/// not take a core from the sockets and the node: a load of the shipped echo.so (6 MB,
/// most of it line tables) costs 6–11 ms of CPU, 40% of it SHA-256, and on a 2-core
/// machine under load that is half the machine.
pub fn spawn_background(
    name: String,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(move || {
        // Linux keeps a niceness per thread; this one only. Raising it needs no
        // privilege, and a failure only leaves the thread at normal priority.
        // SAFETY: plain system calls on the calling thread.
        unsafe {
            let tid = libc::gettid() as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE);
        }
        f()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_nice() -> libc::c_int {
        // SAFETY: plain system calls on the calling thread.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn background_threads_run_niced_and_leave_the_caller_alone() {
        let before = own_nice();
        let inside = spawn_background("nice-test".into(), || {
            assert!(own_nice() >= BACKGROUND_NICE, "niceness {}", own_nice());
        })
        .unwrap()
        .join();
        assert!(inside.is_ok(), "the background thread was not niced");
        assert_eq!(own_nice(), before, "the caller's niceness changed");
    }
}
