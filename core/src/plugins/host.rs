//! The host's side of the ABI 1.5 services in `LoadArgs`: calling another plugin's API
//! in-process, and the people's accounts and sessions.
//!
//! The C callbacks get only an image's context, but what they reach (the mounted APIs,
//! the sessions) is the daemon's, one per process. So the daemon registers it here once
//! at start ([`register`]) as a [`Services`] value, and the callbacks find it here. A
//! process without one (unit tests of the loader) answers every call as unavailable.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::{Arc, OnceLock, Weak};

use jsipd_plugin_api::api::Role;
use jsipd_plugin_api::ffi::{self, FfiRequest, FfiResponse, FfiSignIn, FfiStr};

/// What the host functions need from the daemon.
pub trait Services: Send + Sync {
    /// Calls the API mounted as `target` (`hid/v1`) on this thread; 0, or why not.
    ///
    /// # Safety
    /// `request` and `response` are valid for the call.
    unsafe fn call_api(&self, target: &str, request: &FfiRequest, response: &FfiResponse) -> u16;
    /// Signs in with the sign-in page's rules (lock-out included); blocks while hashing.
    fn sign_in(&self, user: &str, password: &str, remote: &str) -> SignIn;
    /// The session's user and role.
    fn session(&self, token: &str) -> Option<(Arc<str>, Role)>;
    fn sign_out(&self, token: &str);
}

/// What a sign-in through the host gave.
pub enum SignIn {
    SignedIn { token: String, role: Role },
    Wrong,
    Locked(std::time::Duration),
    NeedsCode,
    Failed(String),
}

static SERVICES: OnceLock<Weak<dyn Services>> = OnceLock::new();

/// Makes `services` what every plugin's host functions reach (once per process).
pub fn register(services: Weak<dyn Services>) {
    let _ = SERVICES.set(services);
}

fn services() -> Option<Arc<dyn Services>> {
    SERVICES.get()?.upgrade()
}

thread_local! {
    /// How deep in-process API calls are nested on this thread.
    static DEPTH: Cell<u8> = const { Cell::new(0) };
}

/// A plugin that calls itself, or two that call each other, would otherwise recurse
/// until the thread's stack is gone.
const MAX_DEPTH: u8 = 4;

/// `LoadArgs::call_api`.
///
/// # Safety
/// Called by a plugin with pointers valid for the call (the ABI's rule).
pub unsafe extern "C" fn call_api(
    _ctx: *const c_void,
    target: FfiStr,
    request: *const FfiRequest,
    response: *const FfiResponse,
) -> u16 {
    let Some(services) = services() else {
        return 503;
    };
    let depth = DEPTH.with(Cell::get);
    if depth >= MAX_DEPTH {
        return 508;
    }
    DEPTH.with(|d| d.set(depth + 1));
    // SAFETY: the plugin's values, valid for this call (the ABI's rule).
    let status = unsafe { services.call_api(&target.to_text(), &*request, &*response) };
    DEPTH.with(|d| d.set(depth));
    status
}

/// `LoadArgs::sign_in`.
///
/// # Safety
/// Called by a plugin with pointers valid for the call (the ABI's rule).
pub unsafe extern "C" fn sign_in(
    _ctx: *const c_void,
    user: FfiStr,
    password: FfiStr,
    remote: FfiStr,
    out: *mut FfiSignIn,
) {
    // SAFETY: valid for this call.
    let (user, password, remote, out) = unsafe {
        (
            user.to_text(),
            password.to_text(),
            remote.to_text(),
            &mut *out,
        )
    };
    let result = match services() {
        Some(s) => s.sign_in(&user, &password, &remote),
        None => SignIn::Failed("no daemon services in this process".into()),
    };
    out.outcome = match result {
        SignIn::SignedIn { token, role } => {
            let bytes = token.as_bytes();
            if bytes.len() > out.token.len() {
                tracing::error!("a session token of {} bytes does not fit", bytes.len());
                out.outcome = ffi::sign_in::FAILED;
                return;
            }
            out.token[..bytes.len()].copy_from_slice(bytes);
            out.token_len = bytes.len();
            out.role = role.to_ffi();
            ffi::sign_in::SIGNED_IN
        }
        SignIn::Wrong => ffi::sign_in::WRONG,
        SignIn::Locked(left) => {
            out.retry_after_s = u32::try_from(left.as_secs().max(1)).unwrap_or(u32::MAX);
            ffi::sign_in::LOCKED
        }
        SignIn::NeedsCode => ffi::sign_in::NEEDS_CODE,
        SignIn::Failed(why) => {
            tracing::error!("a plugin's sign-in failed: {why}");
            ffi::sign_in::FAILED
        }
    };
}

/// `LoadArgs::session`.
///
/// # Safety
/// Called by a plugin with pointers valid for the call (the ABI's rule).
pub unsafe extern "C" fn session(
    _ctx: *const c_void,
    token: FfiStr,
    user: *mut u8,
    cap: usize,
    user_len: *mut usize,
) -> u8 {
    // SAFETY: valid for this call.
    let token = unsafe { token.to_text() };
    let Some((name, role)) = services().and_then(|s| s.session(&token)) else {
        return Role::Nobody.to_ffi();
    };
    let bytes = name.as_bytes();
    if bytes.len() > cap {
        return Role::Nobody.to_ffi();
    }
    // SAFETY: the plugin's buffer has room for `cap >= bytes.len()` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), user, bytes.len());
        *user_len = bytes.len();
    }
    role.to_ffi()
}

/// `LoadArgs::sign_out`.
///
/// # Safety
/// Called by a plugin with pointers valid for the call (the ABI's rule).
pub unsafe extern "C" fn sign_out(_ctx: *const c_void, token: FfiStr) {
    // SAFETY: valid for this call.
    let token = unsafe { token.to_text() };
    if let Some(s) = services() {
        s.sign_out(&token);
    }
}
