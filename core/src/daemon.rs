//! The daemon's life: start, serve, react to signals, stop.
//!
//! Start-up order matters: signal handlers first (a HUP sent right after the pid file
//! appears must not kill us), then logs, then everything that can fail on bad input
//! (TLS files, API key, binding ports), and the pid file only once every port is bound,
//! so its presence means "ready".

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::app::{App, ConfigSource, Secrets};
use crate::config::{Config, ListenConfig};
use crate::log::Logs;
use crate::node::Node;
use crate::pidfile::PidFile;
use crate::plugins::Plugins;
use crate::serve::{self, Serving, TlsSlot};
use crate::signals::{Signal, Signals};
use crate::{api, tls};

/// Runs the daemon until it is told to stop. Never returns on success paths that
/// must not wait for stray tasks: the caller exits the process with the code.
pub fn run(source: ConfigSource) -> ExitCode {
    let config = match source.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("jsipd: configuration rejected:\n{e}");
            return ExitCode::FAILURE;
        }
    };
    raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("jsipd-worker")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jsipd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match serve(source, config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("cannot start: {e:#}");
                eprintln!("jsipd: {e:#}");
                ExitCode::FAILURE
            }
        }
    });
    // Tasks still running after a forced stop are abandoned, not awaited.
    runtime.shutdown_background();
    code
}

/// Every WebSocket is a file descriptor, and the usual soft limit (1024) would cap a
/// node at about a thousand clients; take the hard limit the administrator allows.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// How the control loop ended.
enum Stop {
    Graceful(&'static str),
    Now,
}

async fn serve(source: ConfigSource, config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::install().context("installing signal handlers")?;
    let logs = Arc::new(Logs::init(&config)?);
    let result = start_and_run(source, config, &mut signals, &logs).await;
    if let Err(e) = &result {
        error!("{e:#}");
    }
    logs.flush_and_stop();
    result
}

async fn start_and_run(
    source: ConfigSource,
    config: Config,
    signals: &mut Signals,
    logs: &Arc<Logs>,
) -> anyhow::Result<()> {
    let api_tls = tls_slot(&config.api)?;
    let rtc_tls = tls_slot(&config.rtc_listen)?;
    let api_key = api::ensure_key(&config)?;
    let rtc_secret = rtc_secret(&config)?;
    let users = crate::web::People::load_users(&config)?;
    if users.is_empty() && !config.rtc_listen.endpoints().is_empty() {
        warn!(
            "no people's accounts in {}: nobody can sign in at the people's port until one exists; create the first with: jsipd -p {} user add NAME --role admin",
            config.rtc.users_file.display(),
            source.prefix.display()
        );
    }
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let stats = crate::stats::Stats::default();
    let (node, node_task) = Node::start(
        Arc::new(config.clone()),
        stats.jsip.clone(),
        tasks.clone(),
        shutdown.clone(),
    )?;
    let tls_slots = [("APIServer", &api_tls), ("RTCServer", &rtc_tls)]
        .into_iter()
        .filter_map(|(s, slot)| Some((s, slot.clone()?)))
        .collect();
    let plugins = Arc::new(Plugins::new(
        &config,
        node.clone(),
        node.builtin_usage(),
        shutdown.clone(),
    ));
    let app = Arc::new(App::new(
        config.clone(),
        source.clone(),
        logs.clone(),
        Secrets {
            api_key,
            rtc_secret,
            users,
        },
        node.clone(),
        plugins.clone(),
        tls_slots,
        stats,
    ));
    // Kept for the daemon's lifetime: plugins reach other plugins' APIs and the
    // people's sessions through it.
    let host_services: Arc<dyn crate::plugins::host::Services> =
        Arc::new(crate::web::HostServices {
            app: app.clone(),
            runtime: tokio::runtime::Handle::current(),
        });
    crate::plugins::host::register(Arc::downgrade(&host_services));
    tasks.spawn(node_task.run());
    plugins.restore().await;
    let api = Serving {
        handler: api::handler(app.clone()),
        stats: app.stats.api.clone(),
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
    };
    let rtc = Serving {
        handler: crate::web::handler(app.clone()),
        stats: app.stats.rtc.clone(),
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
    };

    let mut bound = Vec::new();
    for (section, tls, serving) in [
        (&config.api, &api_tls, &api),
        (&config.rtc_listen, &rtc_tls, &rtc),
    ] {
        for ep in section.endpoints() {
            let slot = if ep.tls { tls.clone() } else { None };
            bound.push((serve::bind(&ep, slot).await?, serving.clone()));
        }
    }
    if bound.is_empty() {
        bail!("nothing to listen on: listen and tlslisten are empty in both [APIServer] and [RTCServer]");
    }
    let pid_file = PidFile::create(&source.pid_file())?;
    for (b, serving) in bound {
        info!("listening on {} for {}", b.local, b.key);
        serve::spawn(b, serving);
    }
    info!(
        "jsipd {} started, pid {}, config {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        config
            .source
            .as_ref()
            .map_or("<built-in defaults>".into(), |p| p.display().to_string())
    );

    let stop = loop {
        match signals.next().await {
            Signal::Reload => reload(&app),
            Signal::Reopen => match app.logs.reopen() {
                Ok(()) => info!("SIGUSR1: log files reopened"),
                Err(e) => error!("SIGUSR1: {e:#}"),
            },
            Signal::Stop(name) => break Stop::Graceful(name),
            Signal::Exit => break Stop::Now,
        }
    };

    match stop {
        Stop::Now => info!("SIGTERM: exiting at once"),
        Stop::Graceful(name) => {
            let timeout = app.config().stop_timeout;
            info!("{name}: stopping gracefully: listeners closed, up to {timeout:?} for work in flight");
            shutdown.cancel();
            tasks.close();
            let unload_apis = {
                let (plugins, tasks) = (plugins.clone(), tasks.clone());
                async move {
                    tasks.wait().await;
                    let _ = tokio::task::spawn_blocking(move || plugins.shutdown()).await;
                }
            };
            tokio::select! {
                _ = unload_apis => info!("stopped: all work finished, plugins unloaded"),
                _ = tokio::time::sleep(timeout) => {
                    warn!("stop_timeout ({timeout:?}) reached with {} tasks still running: exiting anyway", tasks.len());
                }
                _ = until_exit(signals) => info!("SIGTERM during graceful stop: exiting at once"),
            }
        }
    }
    drop(pid_file);
    Ok(())
}

async fn until_exit(signals: &mut Signals) {
    while signals.next().await != Signal::Exit {}
}

/// The token secret when `[RTCServer] auth = token` (generated when absent).
fn rtc_secret(config: &Config) -> anyhow::Result<Option<Arc<str>>> {
    if !config.rtc.auth.token {
        return Ok(None);
    }
    api::secret_file(
        &config.rtc.auth_secret_file,
        "[RTCServer] auth_secret_file",
        "[RTCServer] auth includes token",
    )
    .map(|s| Some(Arc::from(s.as_str())))
}

fn tls_slot(server: &ListenConfig) -> anyhow::Result<Option<TlsSlot>> {
    if server.tls_listen.is_none() {
        return Ok(None);
    }
    Ok(Some(TlsSlot::new(tls::acceptor(
        &server.cert,
        &server.key,
        server.section,
    )?)))
}

/// SIGHUP: re-read the config. Everything that can fail is prepared before anything is
/// changed, so a broken file (or a missing new certificate) leaves the old config whole.
fn reload(app: &App) {
    let old = app.config();
    let prepared = app
        .source
        .load()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|new| {
            let mut acceptors = Vec::new();
            for (section, slot) in &app.tls {
                let server = new
                    .server(section)
                    .expect("TLS slots exist only for listen sections");
                acceptors.push((slot, tls::acceptor(&server.cert, &server.key, section)?));
            }
            let key = api::ensure_key(&new)?;
            let secret = rtc_secret(&new)?;
            let users = crate::web::People::load_users(&new)?;
            app.logs.apply(&new)?;
            Ok((new, acceptors, key, secret, users))
        });
    let (new, acceptors, key, secret, users) = match prepared {
        Ok(p) => p,
        Err(e) => {
            app.stats
                .reloads_rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            error!("SIGHUP: config rejected, still running on the previous one:\n{e:#}");
            return;
        }
    };
    for (slot, acceptor) in acceptors {
        slot.replace(acceptor);
    }
    app.set_api_key(key);
    app.set_rtc_secret(secret);
    let (accounts, changed_users) = (users.len(), *app.people.users() != users);
    app.people.set_users(users);
    if changed_users {
        // Logged after the swap: whoever reads this line finds the new accounts in use.
        info!("SIGHUP: {accounts} people's accounts; sessions of changed or deleted users end");
    }
    app.node.reconfigure(Arc::new(new.clone()));
    app.plugins.reconfigure(&new);
    let changed: Vec<String> = old
        .changed_keys(&new)
        .map(|k| crate::config::schema::display(k.section, k.name))
        .collect();
    for key in old.restart_needed(&new) {
        warn!("SIGHUP: {key} changed; it takes effect after a restart");
    }
    app.set_config(new);
    app.stats
        .reloads
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if changed.is_empty() {
        info!("SIGHUP: config reloaded, nothing changed");
    } else {
        info!("SIGHUP: config reloaded; changed: {}", changed.join(", "));
    }
}
