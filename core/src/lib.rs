//! jsipd: a plugin host for real-time services speaking JSIP.
//!
//! See `ARCHITECTURE.md` at the repository root for the map. Modules, in the order a
//! request meets them:
//!
//! - [`cli`], [`daemon`]: start-up, the control loop, stop.
//! - [`config`], [`log`], [`signals`], [`pidfile`], [`tls`]: operating the process.
//! - [`serve`]: the accept loop both ports share (TCP, TLS, HTTP/1.1, graceful stop).
//! - [`api`]: the management REST API (API port).
//! - [`transport`]: the RTC port (JSIP over WebSocket).
//! - [`app`], [`stats`]: state shared by all of the above.

pub mod alloc;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dispatch;
pub mod hash;
pub mod jsip;
pub mod log;
pub mod node;
pub mod pidfile;
pub mod plugins;
pub mod serve;
pub mod signals;
pub mod slps;
pub mod stats;
pub mod tls;
pub mod transport;
pub mod web;
