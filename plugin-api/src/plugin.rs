//! The plugin object: what [`export_plugin!`](crate::export_plugin) exports.

use std::path::{Path, PathBuf};

use crate::api::Api;
use crate::slp::Slp;

/// One loaded image of a plugin.
///
/// The daemon creates it once per loaded `.so` image with [`Plugin::load`] and asks it for
/// an SLP and/or an API. When the operator loads the same unchanged file both as an SLP
/// (`/slpm/v1/NAME`) and as an API (`/apim/v1/NAME.vN`), both come from the same image
/// and the same `Plugin` value, so state shared between them (a chat room's members,
/// listed by its API) is simply a field here, typically an `Arc`.
///
/// Dropping the value is the plugin's last hook: stop and join any thread or runtime you
/// started in `load`; the image is unmapped right after.
pub trait Plugin: Send + Sync + Sized + 'static {
    /// Set to `true` only if this plugin's SLP never blocks: no file or network I/O, no
    /// sleeping, no waiting on locks others hold long, in any `Slp` or `Instance` call.
    /// The host then runs the SLP on its own network task, nginx-style, instead of on a
    /// thread of its own; a message then skips two thread wake-ups each way. An SLP
    /// that blocks anyway stalls every connection of the daemon while it does, so
    /// leave this `false` (the default) when in doubt: timers ([`Host::set_timer`])
    /// are the way to wait.
    ///
    /// [`Host::set_timer`]: crate::slp::Host::set_timer
    const SLP_NEVER_BLOCKS: bool = false;

    /// `false` when the SLP's instances do nothing with
    /// [`Event::DialogEnded`](crate::slp::Event::DialogEnded) and
    /// [`Event::PeerDisconnected`](crate::slp::Event::PeerDisconnected): the host then
    /// does not call them with those (see
    /// [`Slp::wants_dialog_events`](crate::slp::Slp::wants_dialog_events)), which saves
    /// a call across the `.so` boundary for every out-of-dialog request.
    const SLP_WANTS_DIALOG_EVENTS: bool = true;

    /// A top-level path of the people's port (`"/api"`, at most 31 bytes) at which the
    /// plugin's API is served as well as at `/NAME/vN/`, for another product's URLs
    /// that existing scripts call. Requests there reach [`Api::handle`] even without a
    /// session, as [`Role::Nobody`](crate::api::Role::Nobody), so the plugin can take
    /// that product's own sign-in ([`crate::host::sign_in`]); any route whose
    /// [`Api::role_needed`] is above nobody still refuses them. Empty: none.
    const PEOPLE_ROOT: &'static str = "";

    /// Called once, when the image is loaded. An `Err` refuses the load with that reason.
    fn load(context: &Context) -> Result<Self, String>;

    /// The SLP this plugin offers, if any; called once per SLP generation.
    fn slp(&self) -> Option<Box<dyn Slp>> {
        None
    }

    /// The API this plugin offers, if any; called once per API generation.
    fn api(&self) -> Option<Box<dyn Api>> {
        None
    }
}

/// What a plugin learns at load.
#[derive(Debug, Clone)]
pub struct Context {
    name: String,
    config_dir: PathBuf,
}

impl Context {
    pub fn new(name: impl Into<String>, config_dir: impl Into<PathBuf>) -> Context {
        Context {
            name: name.into(),
            config_dir: config_dir.into(),
        }
    }

    /// The plugin's file stem: `chatroom` for `plugins/chatroom.so`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `conf/<name>/`, where `pcompile` put the plugin's own config files. It may not
    /// exist; a plugin with no config then uses its defaults.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }
}
