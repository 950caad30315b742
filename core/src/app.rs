//! State shared by the ports and the control loop.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::config::{Config, ConfigErrors};
use crate::log::Logs;
use crate::node::NodeHandle;
use crate::plugins::Plugins;
use crate::serve::TlsSlot;
use crate::stats::Stats;
use crate::web::users::Users;
use crate::web::People;

/// Where the config comes from. Without `-c`, a missing default file means "built-in
/// defaults"; with `-c`, a missing file is an error.
#[derive(Clone, Debug)]
pub struct ConfigSource {
    pub prefix: PathBuf,
    pub path: PathBuf,
    pub explicit: bool,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        if self.explicit || self.path.exists() {
            Config::load(&self.path, &self.prefix)
        } else {
            Ok(Config::defaults(&self.prefix))
        }
    }

    pub fn pid_file(&self) -> PathBuf {
        self.prefix.join("logs/jsipd.pid")
    }
}

pub struct App {
    config: RwLock<Arc<Config>>,
    pub source: ConfigSource,
    pub stats: Stats,
    pub started: Instant,
    pub logs: Arc<Logs>,
    api_key: RwLock<Option<Arc<str>>>,
    /// Secret of the RTC tokens, when `[RTCServer] auth = token`.
    rtc_secret: RwLock<Option<Arc<str>>>,
    /// The JSIP node (stack, registry, SLP runners).
    pub node: NodeHandle,
    /// Loaded plugins: generations, listings, API mounts.
    pub plugins: Arc<Plugins>,
    /// TLS acceptors of the listening ports, by section, for SIGHUP to refresh.
    pub tls: Vec<(&'static str, TlsSlot)>,
    /// Accounts and sessions of the people's port.
    pub people: People,
}

/// Secrets read (or generated) at start; SIGHUP replaces them.
pub struct Secrets {
    pub api_key: Option<Arc<str>>,
    pub rtc_secret: Option<Arc<str>>,
    pub users: Users,
}

impl App {
    // Called once, from the daemon's start; each argument is a distinct part of the state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        source: ConfigSource,
        logs: Arc<Logs>,
        secrets: Secrets,
        node: NodeHandle,
        plugins: Arc<Plugins>,
        tls: Vec<(&'static str, TlsSlot)>,
        stats: Stats,
    ) -> App {
        App {
            config: RwLock::new(Arc::new(config)),
            source,
            stats,
            started: Instant::now(),
            logs,
            api_key: RwLock::new(secrets.api_key),
            rtc_secret: RwLock::new(secrets.rtc_secret),
            node,
            plugins,
            tls,
            people: People::new(secrets.users),
        }
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_config(&self, config: Config) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    pub fn api_key(&self) -> Option<Arc<str>> {
        self.api_key
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn rtc_secret(&self) -> Option<Arc<str>> {
        self.rtc_secret
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_rtc_secret(&self, secret: Option<Arc<str>>) {
        *self.rtc_secret.write().unwrap_or_else(|p| p.into_inner()) = secret;
    }

    pub fn set_api_key(&self, key: Option<Arc<str>>) {
        *self.api_key.write().unwrap_or_else(|p| p.into_inner()) = key;
    }
}
