//! SLPs compiled into the daemon, enabled with `[JSIPStack] builtin_slps`.
//!
//! They implement the same `plugin-api` traits a `.so` plugin does and run on the same
//! runner threads, so they exercise the real dispatch path. They exist for tests,
//! benchmarks and smoke checks of a fresh install, not as services.

use jsipd_plugin_api::slp::Slp;

mod echo;
mod relay;

/// Names `builtin_slps` accepts.
pub const NAMES: &[&str] = &["echo", "relay"];

pub fn make(name: &str) -> Option<Box<dyn Slp>> {
    match name {
        "echo" => Some(Box::new(echo::Echo)),
        "relay" => Some(Box::new(relay::Relay)),
        _ => None,
    }
}
