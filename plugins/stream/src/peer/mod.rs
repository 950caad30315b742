//! `stream`'s SLP: the screen over WebRTC, one JSIP `INVITE` per viewer.
//!
//! A browser sends `INVITE` to `…@stream` (or any URI routed to it) with its complete
//! SDP offer as the Body (`Content-Type: sdp`, JSIP.md §6); the `200` carries the
//! answer. The dialog is the viewer: `BYE`, a dropped socket, the session timer, or a
//! browser that stops answering ICE (noticed in seconds) ends it and frees its share
//! of the encoder. When its generation drains (the operator loads the plugin again,
//! or unloads it) each viewer gets a `BYE` at once ([`Event::Draining`]), so pages
//! come back on the new generation instead of watching a retired one until
//! `drain_timeout`.
//!
//! - [`offer`]: what an offer must have and which codec it gets (sans-IO).
//! - [`connection`]: one peer connection and its sender task.
//! - [`hub`]: one encoder per codec, shared by its viewers.

pub mod connection;
pub mod hub;
pub mod offer;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use jsipd_plugin_api::jsip::{Message, Method};
use jsipd_plugin_api::serde_json::{json, Value};
use jsipd_plugin_api::slp::{Event, Host, Instance, Slp};
use jsipd_plugin_api::tracing;
use tokio::sync::oneshot;

use crate::capture::Capture;
use connection::{NetConfig, Peer, PeerState};
use hub::Hub;

/// How often an instance looks at its connection.
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
}

impl Webrtc {
    pub fn new(capture: Capture) -> Arc<Webrtc> {
        let config = capture.config();
        Arc::new(Webrtc {
            runtime: Mutex::new(None),
            hub: Hub::new(capture, target(&config.settings)),
            net: Mutex::new(config.net),
            viewers: Mutex::default(),
        })
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
    pub webrtc: Arc<Webrtc>,
}

impl Slp for StreamSlp {
    fn new_instance(&mut self) -> Box<dyn Instance> {
        Box::new(ViewerInstance {
            webrtc: self.webrtc.clone(),
            peer: None,
            answering: None,
        })
    }
}

/// One viewer's dialog.
struct ViewerInstance {
    webrtc: Arc<Webrtc>,
    peer: Option<Peer>,
    /// The INVITE whose answer is being made on the WebRTC runtime.
    answering: Option<Answering>,
}

/// An INVITE being answered. Making the answer waits for ICE gathering: milliseconds
/// with host candidates, a round trip to each STUN or TURN server, and up to 5 s for
/// one that does not answer. That wait happens on the WebRTC runtime, not on the SLP's
/// runner, so the other viewers' INVITEs, BYEs and refreshes go on meanwhile. The SLP
/// contract has no way for another thread to wake an instance, so the instance looks
/// every [`ANSWER_POLL`]; a look is a channel check, nothing next to ICE's own work.
struct Answering {
    invite: Message,
    codec: crate::video::Codec,
    result: oneshot::Receiver<Answered>,
}

type Answered = Result<(Peer, String), (u16, String)>;

const ANSWER_POLL: Duration = Duration::from_millis(5);
/// Timer tokens: the connection's poll, and the look for a pending answer.
const TIMER_CONNECTION: u64 = 0;
const TIMER_ANSWER: u64 = 1;

impl ViewerInstance {
    fn invite(&mut self, m: Message, host: &mut dyn Host) {
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
        let handle = match self.webrtc.handle() {
            Ok(h) => h,
            Err(e) => return host.send(m.refusal(500, e)),
        };
        let (done, result) = oneshot::channel();
        let (webrtc, sdp, who, codec) = (
            self.webrtc.clone(),
            sdp.clone(),
            m.from.clone(),
            choice.codec,
        );
        handle.spawn(async move {
            let answered = connection::answer(&sdp, &choice, &webrtc.hub, &net, &who).await;
            // Nobody waiting (the dialog ended meanwhile): dropping the peer closes it.
            let _ = done.send(answered);
        });
        self.answering = Some(Answering {
            invite: m,
            codec,
            result,
        });
        host.set_timer(ANSWER_POLL, TIMER_ANSWER);
    }

    /// The look for the pending answer: the 200 once it is made, else look again.
    fn check_answer(&mut self, host: &mut dyn Host) {
        let Some(mut answering) = self.answering.take() else {
            return;
        };
        let answered = match answering.result.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => {
                self.answering = Some(answering);
                return host.set_timer(ANSWER_POLL, TIMER_ANSWER);
            }
            Err(oneshot::error::TryRecvError::Closed) => Err((
                500,
                "the WebRTC runtime stopped before answering".to_string(),
            )),
            Ok(answered) => answered,
        };
        let Answering { invite, codec, .. } = answering;
        let who = &invite.from;
        match answered {
            Ok((peer, answer)) => {
                tracing::info!("{who} watches over WebRTC ({})", codec.name());
                self.webrtc
                    .viewers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Arc::downgrade(&peer.state));
                self.peer = Some(peer);
                let mut ok = invite.response(200);
                ok.content_type = Some("sdp".into());
                ok.body = Some(Value::String(answer));
                host.send(ok);
                host.set_timer(POLL, TIMER_CONNECTION);
            }
            Err((code, reason)) => {
                tracing::info!("{who}: no WebRTC session: {reason}");
                host.send(invite.refusal(code, reason));
            }
        }
    }

    /// The poll: a connection that ended ends the dialog with a BYE.
    fn check(&mut self, host: &mut dyn Host) {
        match self.peer.as_ref().map(|p| p.state.ended()) {
            Some(Some(why)) => self.end(host, &why),
            Some(None) => host.set_timer(POLL, TIMER_CONNECTION),
            None => {}
        }
    }

    /// Ends the session: the connection closes, the dialog gets its BYE.
    fn end(&mut self, host: &mut dyn Host, why: &str) {
        if let Some(p) = self.peer.take() {
            tracing::info!("{}'s WebRTC session ends: {why}", p.state.who);
        }
        self.answering = None;
        host.end();
    }
}

impl Instance for ViewerInstance {
    fn on_event(&mut self, event: Event, host: &mut dyn Host) {
        match event {
            Event::Loaded => {}
            Event::Message(m) if !m.is_request() => {}
            Event::Message(m) => match m.method() {
                Some(Method::Invite) if self.peer.is_some() || self.answering.is_some() => {
                    host.send(m.refusal(
                        488,
                        "this dialog has its video already; BYE and INVITE again to change it",
                    ))
                }
                Some(Method::Invite) => self.invite(m, host),
                Some(Method::Bye) | Some(Method::Cancel) => {
                    // A CANCEL comes after the stack answered the INVITE 487: its answer,
                    // still being made, is dropped when it comes (and its peer closed).
                    self.answering = None;
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
            Event::Timer(TIMER_ANSWER) => self.check_answer(host),
            Event::Timer(_) => self.check(host),
            Event::DialogEnded { .. } => {
                self.peer = None;
                self.answering = None;
            }
            Event::PeerDisconnected { .. } => self.end(host, "its signalling socket closed"),
            Event::Draining => self.end(host, "the stream plugin was reloaded or unloaded"),
        }
    }
}
