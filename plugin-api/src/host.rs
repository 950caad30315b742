//! Services the host offers a plugin outside of an SLP event (ABI 1.5): calling another
//! plugin's API in-process, and the people's accounts and sessions.
//!
//! Why in-process calls: a facade plugin (NanoKVM's `/api/*`) must do what `hid`,
//! `gpio`, `storage` and `stream` do without copying their logic and without a socket
//! to the daemon's own port. [`call_api`] hands the callee the caller's request and
//! response as they are, on the caller's thread, so a callee's endless MJPEG answer
//! streams straight into the caller's client, and the callee checks the caller's role
//! exactly as for a request from the network.
//!
//! Why sessions through the host: accounts, password hashes, lock-outs and sessions are
//! the daemon's (`conf/users`), and a plugin must not keep a second, weaker copy.
//!
//! Outside a loaded plugin (unit tests) every call fails with [`CallError`] 503 or
//! its equivalent, never panics.

use std::ffi::c_void;
use std::io::Read;
use std::sync::atomic::{AtomicPtr, Ordering};

use serde_json::Value;

use crate::api::{Caller, RecordedResponse, Request, Response, ResponseSink, Role};
use crate::ffi::{self, FfiHeader, FfiRequest, FfiResponse, FfiSignIn, FfiStr, LoadArgs};

/// The host's arguments, set by the entry point; valid until the plugin is dropped,
/// which is after every call into the plugin returned.
static ARGS: AtomicPtr<LoadArgs> = AtomicPtr::new(std::ptr::null_mut());

pub(crate) fn install(args: *const LoadArgs) {
    ARGS.store(args.cast_mut(), Ordering::Release);
}

fn args() -> Option<&'static LoadArgs> {
    // SAFETY: set by the entry point to the host's `LoadArgs`, valid while the plugin
    // lives, and this runs only while the plugin is called.
    unsafe { ARGS.load(Ordering::Acquire).as_ref() }
}

/// Why [`call_api`] could not reach the API (its own error answers are not errors here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// As an HTTP status: 404 no API mounted there, 508 nested too deep, 500 the callee
    /// failed before answering, 503 no host (a unit test).
    pub status: u16,
    pub reason: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.status)
    }
}

/// Passes `request` on to the API mounted as `target` (`"hid/v1"`), as `caller` (the
/// person the calling plugin found it to be) and from the same address, with `path` in
/// place of the request's own path, and lets it answer into `response` directly.
pub fn call_api(
    target: &str,
    path: &str,
    caller: Caller<'_>,
    request: &mut Request<'_>,
    response: &mut Response<'_>,
) -> Result<(), CallError> {
    let (method, query, remote) = (
        request.method().to_string(),
        request.query().to_string(),
        request.remote(),
    );
    let (headers, body) = request.headers_and_body();
    call_raw(
        target,
        Outgoing {
            method: &method,
            path,
            query: &query,
            headers,
            caller,
            remote,
        },
        body,
        response.sink(),
    )
}

/// Calls `method path` of the API mounted as `target` as `caller`, with `body` as JSON
/// (none when `None`), and returns the status and the answer's JSON (`Null` when the
/// answer is not JSON).
pub fn call_json(
    target: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    caller: Caller<'_>,
) -> Result<(u16, Value), CallError> {
    let text = body.map(Value::to_string).unwrap_or_default();
    let headers: &[(&str, &str)] = if body.is_some() {
        &[("content-type", "application/json")]
    } else {
        &[]
    };
    let mut recorded = RecordedResponse::default();
    call_raw(
        target,
        Outgoing {
            method,
            path,
            query: "",
            headers,
            caller,
            remote: "",
        },
        &mut text.as_bytes(),
        &mut recorded,
    )?;
    Ok((recorded.status.unwrap_or(200), recorded.json()))
}

struct Outgoing<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: &'a [(&'a str, &'a str)],
    caller: Caller<'a>,
    remote: &'a str,
}

fn call_raw(
    target: &str,
    out: Outgoing<'_>,
    mut body: &mut dyn Read,
    mut sink: &mut dyn ResponseSink,
) -> Result<(), CallError> {
    let Some(args) = args() else {
        return Err(CallError {
            status: 503,
            reason: format!("no host to call {target} through (not loaded by jsipd)"),
        });
    };
    let headers = FfiHeader::lend_all(out.headers);
    let request = FfiRequest {
        method: FfiStr::new(out.method),
        path: FfiStr::new(out.path),
        query: FfiStr::new(out.query),
        headers: headers.as_ptr(),
        header_count: headers.len(),
        body_ctx: (&mut body as *mut &mut dyn Read).cast(),
        read_body,
        caller_user: FfiStr::new(out.caller.user),
        caller_role: out.caller.role.to_ffi(),
        remote: FfiStr::new(out.remote),
    };
    let response = FfiResponse {
        ctx: (&mut sink as *mut &mut dyn ResponseSink).cast(),
        set_status,
        add_header,
        write,
    };
    // SAFETY: the host's function and context; everything passed outlives the call.
    let status = unsafe { (args.call_api)(args.ctx, FfiStr::new(target), &request, &response) };
    match status {
        0 => Ok(()),
        404 => Err(CallError {
            status,
            reason: format!("no API is mounted as {target} (is the plugin loaded as an API?)"),
        }),
        508 => Err(CallError {
            status,
            reason: format!("calls to {target} nested too deep"),
        }),
        _ => Err(CallError {
            status,
            reason: format!("{target} failed before answering (see the daemon log)"),
        }),
    }
}

/// # Safety
/// `ctx` is the `&mut dyn Read` of [`call_raw`], during the call.
unsafe extern "C" fn read_body(ctx: *mut c_void, buf: *mut u8, cap: usize) -> isize {
    // SAFETY: the contract above; the callee lends `buf` with room for `cap` bytes.
    let (body, buf) = unsafe {
        (
            &mut *ctx.cast::<&mut dyn Read>(),
            std::slice::from_raw_parts_mut(buf, cap),
        )
    };
    match body.read(buf) {
        Ok(n) => n as isize,
        Err(_) => -1,
    }
}

/// # Safety
/// `ctx` is the `&mut dyn ResponseSink` of [`call_raw`], during the call.
unsafe fn sink<'a>(ctx: *mut c_void) -> &'a mut dyn ResponseSink {
    // SAFETY: the contract above.
    unsafe { &mut **ctx.cast::<&mut dyn ResponseSink>() }
}

unsafe extern "C" fn set_status(ctx: *mut c_void, status: u16) {
    // SAFETY: called by the callee during the call.
    unsafe { sink(ctx) }.set_status(status)
}

unsafe extern "C" fn add_header(ctx: *mut c_void, name: FfiStr, value: FfiStr) {
    // SAFETY: as above; the strings are valid for this call.
    unsafe { sink(ctx).add_header(&name.to_text(), &value.to_text()) }
}

unsafe extern "C" fn write(ctx: *mut c_void, data: FfiStr) -> bool {
    // SAFETY: as above.
    unsafe { sink(ctx).write(data.as_bytes()) }
}

/// A session the host opened ([`sign_in`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Names the session; what a client presents from then on.
    pub token: String,
    pub role: Role,
}

/// Why [`sign_in`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInError {
    /// Wrong user name or password.
    Wrong,
    /// Too many failures from this address; seconds to wait.
    Locked(u32),
    /// The account has a one-time code (TOTP), which this way cannot take.
    NeedsCode,
    /// The host could not (or there is none: a unit test).
    Failed,
}

/// Signs `user` in with `password`, from the client address `remote`, against the
/// daemon's accounts and lock-out, and opens a session. Blocks while the password is
/// hashed (tens of milliseconds).
pub fn sign_in(user: &str, password: &str, remote: &str) -> Result<Session, SignInError> {
    let args = args().ok_or(SignInError::Failed)?;
    let mut out = FfiSignIn {
        outcome: ffi::sign_in::FAILED,
        token: [0; 64],
        token_len: 0,
        role: 0,
        retry_after_s: 0,
    };
    // SAFETY: the host's function; the strings and `out` outlive the call.
    unsafe {
        (args.sign_in)(
            args.ctx,
            FfiStr::new(user),
            FfiStr::new(password),
            FfiStr::new(remote),
            &mut out,
        )
    };
    match out.outcome {
        ffi::sign_in::SIGNED_IN => {
            let token = out.token.get(..out.token_len).ok_or(SignInError::Failed)?;
            Ok(Session {
                token: String::from_utf8_lossy(token).into_owned(),
                role: Role::from_ffi(out.role).ok_or(SignInError::Failed)?,
            })
        }
        ffi::sign_in::WRONG => Err(SignInError::Wrong),
        ffi::sign_in::LOCKED => Err(SignInError::Locked(out.retry_after_s)),
        ffi::sign_in::NEEDS_CODE => Err(SignInError::NeedsCode),
        _ => Err(SignInError::Failed),
    }
}

/// The user and role of the session `token` names, if it is good.
pub fn session(token: &str) -> Option<(String, Role)> {
    let args = args()?;
    let mut user = [0u8; 256];
    let mut len = 0usize;
    // SAFETY: the host's function; the buffers outlive the call.
    let role = unsafe {
        (args.session)(
            args.ctx,
            FfiStr::new(token),
            user.as_mut_ptr(),
            256,
            &mut len,
        )
    };
    match Role::from_ffi(role)? {
        Role::Nobody => None,
        role => Some((String::from_utf8_lossy(user.get(..len)?).into_owned(), role)),
    }
}

/// Ends the session `token` names.
pub fn sign_out(token: &str) {
    if let Some(args) = args() {
        // SAFETY: the host's function; the string outlives the call.
        unsafe { (args.sign_out)(args.ctx, FfiStr::new(token)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_host_every_service_fails_cleanly() {
        let caller = Caller::OPERATOR;
        let e = call_json("hid/v1", "GET", "/stats", None, caller).unwrap_err();
        assert_eq!(e.status, 503);
        assert_eq!(sign_in("ada", "pw", "127.0.0.1"), Err(SignInError::Failed));
        assert_eq!(session("x"), None);
        sign_out("x");
    }
}
