//! `stream`'s SLP: the screen over WebRTC, one JSIP `INVITE` per viewer.
//!
//! A browser sends `INVITE` to `…@stream` (or any URI routed to it) with its complete
//! SDP offer as the Body (`Content-Type: sdp`, JSIP.md §6); the `200` carries the
//! answer. The dialog is the viewer: `BYE`, a dropped socket, the session timer, or a
//! browser that stops answering ICE (noticed in seconds) ends it and frees its share
//! of the encoder. A new SLP generation (the operator loads the plugin again) ends
//! the older generation's viewers with a `BYE` at once, so pages reconnect to the new
//! one instead of hanging on to a retired generation until `drain_timeout`.
//!
//! - [`offer`]: what an offer must have and which codec it gets (sans-IO).
//! - [`connection`]: one peer connection and its sender task.
//! - [`hub`]: one encoder per codec, shared by its viewers.

pub mod connection;
pub mod hub;
pub mod offer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use jsipd_plugin_api::jsip::{Message, Method};
use jsipd_plugin_api::serde_json::{json, Value};
use jsipd_plugin_api::slp::{Event, Host, Instance, Slp};
use jsipd_plugin_api::tracing;

use crate::capture::Capture;
use connection::{NetConfig, Peer, PeerState};
use hub::Hub;

/// How often an instance looks at its connection (ended, or superseded).
const POLL: Duration = Duration::from_millis(250);

/// What the SLP and the API share: the async runtime the peer connections run on, the
/// encoders, and the viewers for `GET /status`.
pub struct Webrtc {
    /// Made with the first INVITE: a plugin loaded only for MJPEG starts no threads
    /// (and its image leaves memory at unload, which threads with TLS would prevent).
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    pub hub: Hub,
    net: Mutex<NetConfig>,
    viewers: Mutex<Vec<Weak<PeerState>>>,
    /// The newest SLP generation's flag; set on the older one's when a newer starts.
    generation: Mutex<Arc<AtomicBool>>,
}

impl Webrtc {
    pub fn new(capture: Capture) -> Result<Arc<Webrtc>, String> {
        let config = capture.config();
        Ok(Arc::new(Webrtc {
            runtime: Mutex::new(None),
            hub: Hub::new(capture, target(&config.settings)),
            net: Mutex::new(config.net),
            viewers: Mutex::default(),
            generation: Mutex::new(Arc::new(AtomicBool::new(false))),
        }))
    }

    /// The runtime's handle, starting it on first use.
    fn handle(&self) -> Result<tokio::runtime::Handle, String> {
        let mut rt = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        if rt.is_none() {
            *rt = Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("stream-rtc")
                    .enable_all()
                    .build()
                    .map_err(|e| format!("the WebRTC runtime: {e}"))?,
            );
        }
        Ok(rt.as_ref().expect("made above").handle().clone())
    }

    pub fn set_net(&self, net: NetConfig) {
        *self.net.lock().unwrap_or_else(|p| p.into_inner()) = net;
    }

    /// The live viewers, for `GET /status`.
    pub fn viewers(&self) -> Vec<Arc<PeerState>> {
        let mut v = self.viewers.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|w| w.strong_count() > 0);
        v.iter().filter_map(Weak::upgrade).collect()
    }

    /// Unload: every encoder stops, then the runtime (and with it each connection).
    pub fn close(&self) {
        self.hub.close();
        if let Some(rt) = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

pub fn target(settings: &crate::config::Settings) -> crate::video::Target {
    crate::video::Target {
        kbps: settings.bitrate,
        fps: settings.fps,
    }
}

/// One SLP generation.
pub struct StreamSlp {
    webrtc: Arc<Webrtc>,
    superseded: Arc<AtomicBool>,
}

impl StreamSlp {
    /// A new generation: the one before it is superseded from now on.
    pub fn new(webrtc: Arc<Webrtc>) -> StreamSlp {
        let superseded = Arc::new(AtomicBool::new(false));
        let old = std::mem::replace(
            &mut *webrtc.generation.lock().unwrap_or_else(|p| p.into_inner()),
            superseded.clone(),
        );
        old.store(true, Ordering::Release);
        StreamSlp { webrtc, superseded }
    }
}

impl Slp for StreamSlp {
    fn new_instance(&mut self) -> Box<dyn Instance> {
        Box::new(ViewerInstance {
            webrtc: self.webrtc.clone(),
            superseded: self.superseded.clone(),
            peer: None,
        })
    }

    fn on_unload(&mut self) {
        self.superseded.store(true, Ordering::Release);
    }
}

/// One viewer's dialog.
struct ViewerInstance {
    webrtc: Arc<Webrtc>,
    superseded: Arc<AtomicBool>,
    peer: Option<Peer>,
}

impl ViewerInstance {
    fn invite(&mut self, m: &Message, host: &mut dyn Host) {
        if self.superseded.load(Ordering::Acquire) {
            return host.send(m.refusal(
                503,
                "this stream generation is being replaced; INVITE again",
            ));
        }
        let sdp_type = m.content_type.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case("sdp") || t.eq_ignore_ascii_case("application/sdp")
        });
        let Some(Value::String(sdp)) = m.body.as_ref().filter(|_| sdp_type) else {
            return host.send(m.refusal(
                488,
                "the INVITE must carry the SDP offer as a string Body with Content-Type: sdp",
            ));
        };
        let choice = match offer::choose(sdp) {
            Ok(c) => c,
            Err(reason) => {
                tracing::info!("{}: offer refused: {reason}", m.from);
                return host.send(m.refusal(488, reason));
            }
        };
        let net = self
            .webrtc
            .net
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let who = m.from.clone();
        let handle = match self.webrtc.handle() {
            Ok(h) => h,
            Err(e) => return host.send(m.refusal(500, e)),
        };
        let answered = handle.block_on(connection::answer(
            sdp,
            &choice,
            &self.webrtc.hub,
            &net,
            &who,
        ));
        match answered {
            Ok((peer, answer)) => {
                tracing::info!("{who} watches over WebRTC ({})", choice.codec.name());
                self.webrtc
                    .viewers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Arc::downgrade(&peer.state));
                self.peer = Some(peer);
                let mut ok = m.response(200);
                ok.content_type = Some("sdp".into());
                ok.body = Some(Value::String(answer));
                host.send(ok);
                host.set_timer(POLL, 0);
            }
            Err((code, reason)) => {
                tracing::info!("{who}: no WebRTC session: {reason}");
                host.send(m.refusal(code, reason));
            }
        }
    }

    /// The poll: a connection that ended, or a superseded generation, ends the dialog
    /// with a BYE.
    fn check(&mut self, host: &mut dyn Host) {
        let Some(peer) = &self.peer else { return };
        let why = if self.superseded.load(Ordering::Acquire) {
            Some("the stream plugin was reloaded".to_string())
        } else {
            peer.state.ended()
        };
        match why {
            Some(why) => {
                tracing::info!("{}'s WebRTC session ends: {why}", peer.state.who);
                self.peer = None;
                host.end();
            }
            None => host.set_timer(POLL, 0),
        }
    }
}

impl Instance for ViewerInstance {
    fn on_event(&mut self, event: Event, host: &mut dyn Host) {
        match event {
            Event::Loaded => {}
            Event::Message(m) if !m.is_request() => {}
            Event::Message(m) => match m.method() {
                Some(Method::Invite) if self.peer.is_some() => host.send(m.refusal(
                    488,
                    "this dialog has its video already; BYE and INVITE again to change it",
                )),
                Some(Method::Invite) => self.invite(&m, host),
                Some(Method::Bye) | Some(Method::Cancel) => {
                    if let Some(p) = self.peer.take() {
                        tracing::info!("{} stopped watching", p.state.who);
                    }
                }
                Some(Method::Ack) | None => {}
                Some(Method::Options) => {
                    let mut ok = m.response(200);
                    ok.body = Some(json!({"accepts": ["INVITE (Content-Type: sdp)", "BYE"]}));
                    host.send(ok);
                }
                Some(other) => host.send(m.refusal(
                    405,
                    format!("stream takes INVITE with an SDP offer, not {other}; keyboard and mouse go to hid"),
                )),
            },
            Event::Timer(_) => self.check(host),
            Event::DialogEnded { .. } => self.peer = None,
            Event::PeerDisconnected { .. } => {
                if let Some(p) = self.peer.take() {
                    tracing::info!("{}'s socket closed; its WebRTC session ends", p.state.who);
                }
                host.end();
            }
        }
    }
}
