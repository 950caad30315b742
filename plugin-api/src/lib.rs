//! `jsipd-plugin-api`: all a jsipd plugin depends on.
//!
//! A plugin is a Rust `cdylib` that jsipd loads, replaces and unloads at run time. It
//! offers an **SLP** (service logic for JSIP dialogs, [`slp`]), an **API** (an HTTP
//! handler mounted at `/<name>/<vN>/…`, [`api`]), or both, from one [`Plugin`] value,
//! exported with [`export_plugin!`].
//!
//! - [`jsip`]: the JSIP message model, the same code the daemon's stack uses.
//! - [`slp`]: [`Slp`](slp::Slp) makes an [`Instance`](slp::Instance) per dialog;
//!   [`Host`](slp::Host) sends messages, hands out DialogueIDs and relids, sets timers and
//!   ends the instance.
//! - [`api`]: [`Api::handle`](api::Api::handle) with a streamed
//!   [`Request`](api::Request) body and a streamed [`Response`](api::Response).
//! - Logging: use [`tracing`] (re-exported here); events reach the daemon's log tagged
//!   with the plugin's name and generation, and so do panics.
//! - [`ffi`]: the `#[repr(C)]` boundary beneath, versioned by an ABI record that the
//!   loader checks before calling anything. Plugin authors never touch it.
//!
//! Where your code runs: every SLP call on one thread the daemon owns for that SLP
//! generation (or, for an SLP that declares `Plugin::SLP_NEVER_BLOCKS`, inline on one of
//! the daemon's async workers, under the node's lock: one call at a time, but not always
//! on the same thread), each HTTP request on a thread of its own. Panics are caught at the
//! boundary: a panicking SLP instance is ended (its unanswered requests get `500`), a
//! panicking API request gets `500`, and the panic is counted in the listings.
//!
//! # A complete plugin
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "hello"
//! version = "0.1.0"
//! edition = "2021"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! jsipd-plugin-api = "0.1"
//! ```
//!
//! `src/lib.rs`, answering every request of its dialogs `200` with the same Body, and
//! `GET /hello/v1/…` with a greeting:
//!
//! ```
//! use jsipd_plugin_api::api::{Api, Request, Response};
//! use jsipd_plugin_api::slp::{Event, Host, Instance, Slp};
//! use jsipd_plugin_api::{export_plugin, serde_json::json, Context, Plugin};
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn load(context: &Context) -> Result<Self, String> {
//!         jsipd_plugin_api::tracing::info!("loaded; config in {}", context.config_dir().display());
//!         Ok(Hello)
//!     }
//!     fn slp(&self) -> Option<Box<dyn Slp>> {
//!         Some(Box::new(HelloSlp))
//!     }
//!     fn api(&self) -> Option<Box<dyn Api>> {
//!         Some(Box::new(HelloApi))
//!     }
//! }
//!
//! struct HelloSlp;
//!
//! impl Slp for HelloSlp {
//!     fn new_instance(&mut self) -> Box<dyn Instance> {
//!         Box::new(Echo)
//!     }
//! }
//!
//! struct Echo;
//!
//! impl Instance for Echo {
//!     fn on_event(&mut self, event: Event, host: &mut dyn Host) {
//!         if let Event::Message(m) = event {
//!             if m.is_request() && m.method() != Some(jsipd_plugin_api::jsip::Method::Ack) {
//!                 let mut answer = m.response(200);
//!                 answer.body = m.body.clone();
//!                 host.send(answer);
//!             }
//!         }
//!     }
//! }
//!
//! struct HelloApi;
//!
//! impl Api for HelloApi {
//!     fn handle(&self, request: &mut Request<'_>, response: &mut Response<'_>) {
//!         response.json(200, &json!({ "hello": request.path() }));
//!     }
//! }
//!
//! export_plugin!(Hello);
//! ```
//!
//! Build it with `pcompile DIR` from a jsipd install tree (offline, against its `sdk/`),
//! which writes `plugins/DIR.so`; then load it:
//!
//! ```text
//! curl -X POST 'http://127.0.0.1:2539/slpm/v1/hello?file=hello.so'
//! curl -X POST 'http://127.0.0.1:2539/apim/v1/hello.v1?file=hello.so'
//! curl http://127.0.0.1:2539/hello/v1/world
//! ```

pub mod alloc;
pub mod api;
#[doc(hidden)]
pub mod export;
pub mod ffi;
pub mod host;
pub mod jsip;
mod log;
mod plugin;
pub mod slp;

pub use plugin::{Context, Plugin};
pub use serde_json;
pub use tracing;
