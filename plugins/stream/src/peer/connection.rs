//! One browser's peer connection: the answer to its offer, then the video sent to it.
//!
//! Built on webrtc-rs 0.21 (`webrtc` over the sans-IO `rtc`). Each connection binds its
//! own UDP socket per configured address (webrtc-rs has no single-port mux yet), from
//! the configured port range, so a firewall opens that range. Sockets are bound to
//! explicit addresses: a `0.0.0.0` bind would gather every interface but loopback.
//!
//! The sender task takes frames from the codec's shared encoder ([`super::hub`]) and
//! writes them as RTP samples; RTCP from the browser comes back on the same task: a
//! PLI or FIR asks the encoder for a keyframe, a receiver report gives the RTT. A
//! viewer that fell behind skips to the next keyframe it asks for, so a stalled
//! network costs that viewer frames and nobody else anything.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsipd_plugin_api::tracing;
use rtc::interceptor::Registry;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::{RTCConfigurationBuilder, RTCIceTransportPolicy};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{RTCIceCandidateType, RTCIceServer};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtp::extension::playout_delay_extension::PlayoutDelayExtension;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use tokio::sync::{broadcast, Notify};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};

use super::hub::{Hub, Subscription};
use super::offer::Choice;
use crate::video::Codec;

/// How the peer connections reach browsers (`[webrtc]` in stream.ini).
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    /// Addresses to bind and offer as host candidates.
    pub addresses: Vec<IpAddr>,
    /// UDP ports to bind from, inclusive; `None`: any free port.
    pub ports: Option<(u16, u16)>,
    /// Public addresses to announce instead of the bound ones (1:1 NAT).
    pub announce: Vec<String>,
    /// `stun:` and `turn:` URLs; none by default (a LAN needs none).
    pub ice_servers: Vec<String>,
    pub turn_user: String,
    pub turn_password: String,
    /// Only relay candidates (through the TURN server): the browser never learns this
    /// host's addresses, and a path through the relay is all a firewall must allow.
    pub relay_only: bool,
}

/// What a viewer's connection reports to `GET /status` and to its instance.
#[derive(Debug)]
pub struct PeerState {
    pub who: String,
    pub codec: Codec,
    pub connected: AtomicBool,
    /// Why it ended, once it did (ICE failed, closed, …).
    pub ended: Mutex<Option<String>>,
    pub frames_sent: AtomicU64,
    pub keyframes_sent: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub frames_skipped: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub rtt_us: AtomicU64,
    pub since: Instant,
}

impl PeerState {
    pub fn end(&self, why: impl Into<String>) {
        let mut e = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            *e = Some(why.into());
        }
    }
    pub fn ended(&self) -> Option<String> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A live peer connection; dropping it closes it.
pub struct Peer {
    pub state: Arc<PeerState>,
    pc: Arc<dyn PeerConnection>,
    sender: tokio::task::JoinHandle<()>,
    runtime: tokio::runtime::Handle,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.state.end("closed");
        self.sender.abort();
        let pc = self.pc.clone();
        self.runtime.spawn(async move {
            let _ = pc.close().await;
        });
    }
}

struct Events {
    state: Arc<PeerState>,
    gathered: Arc<Notify>,
    connected: Arc<Notify>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        match state {
            RTCPeerConnectionState::Connected => {
                self.state.connected.store(true, Ordering::Release);
                self.connected.notify_one();
            }
            RTCPeerConnectionState::Failed => {
                self.state
                    .end("ICE/DTLS failed: the browser stopped answering");
                self.connected.notify_one();
            }
            RTCPeerConnectionState::Closed => {
                self.state.end("the peer connection closed");
                self.connected.notify_one();
            }
            _ => {}
        }
    }
}

fn codec_parameters(choice: &Choice) -> RTCRtpCodecParameters {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: match choice.codec {
                Codec::Vp8 => MIME_TYPE_VP8,
                Codec::H264 => MIME_TYPE_H264,
            }
            .to_owned(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: choice.fmtp.clone(),
            // Without `nack pli` and `ccm fir` a browser has no way to ask for a
            // keyframe, and a lost packet would freeze the picture until the next one.
            rtcp_feedback: vec![
                fb("goog-remb", ""),
                fb("ccm", "fir"),
                fb("nack", ""),
                fb("nack", "pli"),
            ],
        },
        payload_type: choice.payload_type,
    }
}

/// A free UDP port on `ip` from the range (the socket is bound again by webrtc-rs
/// right after; a port taken in between fails that build, which is tried again).
fn pick_port(ip: IpAddr, ports: Option<(u16, u16)>) -> Result<u16, String> {
    let Some((lo, hi)) = ports else { return Ok(0) };
    let span = (hi - lo) as usize + 1;
    let start = random_u32() as usize % span;
    for i in 0..span {
        let port = lo + ((start + i) % span) as u16;
        if UdpSocket::bind(SocketAddr::new(ip, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(format!(
        "no free UDP port on {ip} in {lo}-{hi}: raise [webrtc] ports or lower the viewers"
    ))
}

/// Answers `offer` with one video track of `choice`'s codec; the answer's SDP and the
/// live connection. An `Err` is the reason for the `488` (or `500`).
pub async fn answer(
    offer: &str,
    choice: &Choice,
    hub: &Hub,
    net: &NetConfig,
    who: &str,
) -> Result<(Peer, String), (u16, String)> {
    let state = Arc::new(PeerState {
        who: who.to_string(),
        codec: choice.codec,
        since: Instant::now(),
        connected: AtomicBool::new(false),
        ended: Mutex::new(None),
        frames_sent: AtomicU64::new(0),
        keyframes_sent: AtomicU64::new(0),
        keyframe_requests: AtomicU64::new(0),
        frames_skipped: AtomicU64::new(0),
        bytes_sent: AtomicU64::new(0),
        rtt_us: AtomicU64::new(0),
    });
    let gathered = Arc::new(Notify::new());
    let connected = Arc::new(Notify::new());
    let handler = Arc::new(Events {
        state: state.clone(),
        gathered: gathered.clone(),
        connected: connected.clone(),
    });
    let codec = codec_parameters(choice);
    let pc = build(net, &codec, handler).await?;
    let ssrc = random_u32();
    let track = Arc::new(
        TrackLocalStaticSample::new(
            Instant::now(),
            MediaStreamTrack::new(
                "jsipd".to_string(),
                "screen".to_string(),
                "screen".to_string(),
                RtpCodecKind::Video,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec: codec.rtp_codec.clone(),
                    ..Default::default()
                }],
            ),
        )
        .map_err(|e| (500, format!("track: {e}")))?,
    );
    let local = match negotiate(&pc, &track, offer, &gathered, who).await {
        Ok(sdp) => sdp,
        Err(e) => {
            let _ = pc.close().await;
            return Err(e);
        }
    };
    let sender = tokio::spawn(send(
        track,
        ssrc,
        choice.payload_type,
        hub.join(choice.codec),
        state.clone(),
        connected,
    ));
    Ok((
        Peer {
            state,
            pc,
            sender,
            runtime: tokio::runtime::Handle::current(),
        },
        local,
    ))
}

/// A peer connection bound to the configured addresses, on ports from the range (a
/// port taken between the probe and the bind is tried again with another).
async fn build(
    net: &NetConfig,
    codec: &RTCRtpCodecParameters,
    handler: Arc<Events>,
) -> Result<Arc<dyn PeerConnection>, (u16, String)> {
    let mut last_err = String::new();
    for _ in 0..4 {
        let mut addrs = Vec::new();
        for ip in &net.addresses {
            let port = pick_port(*ip, net.ports).map_err(|e| (503, e))?;
            addrs.push(SocketAddr::new(*ip, port));
        }
        let mut media = MediaEngine::default();
        media
            .register_codec(codec.clone(), RtpCodecKind::Video)
            .map_err(|e| (500, format!("codec: {e}")))?;
        media
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: PLAYOUT_DELAY_URI.to_string(),
                },
                RtpCodecKind::Video,
                None,
            )
            .map_err(|e| (500, format!("playout-delay extension: {e}")))?;
        let registry = register_default_interceptors(Registry::new(), &mut media)
            .map_err(|e| (500, format!("interceptors: {e}")))?;
        let built = PeerConnectionBuilder::new()
            .with_configuration(rtc_config(net))
            .with_media_engine(media)
            .with_setting_engine(setting_engine(net))
            .with_interceptor_registry(registry)
            .with_handler(handler.clone())
            .with_udp_addrs(addrs)
            .build()
            .await;
        match built {
            Ok(pc) => return Ok(Arc::new(pc)),
            Err(e) => last_err = e.to_string(),
        }
    }
    Err((503, format!("no peer connection: {last_err}")))
}

/// Offer in, answer out, once ICE gathering is complete (JSIP has no trickle).
async fn negotiate(
    pc: &Arc<dyn PeerConnection>,
    track: &Arc<TrackLocalStaticSample>,
    offer: &str,
    gathered: &Notify,
    who: &str,
) -> Result<String, (u16, String)> {
    let fail = |code: u16, what: &'static str| {
        move |e: webrtc::error::Error| (code, format!("{what}: {e}"))
    };
    let offer = RTCSessionDescription::offer(offer.to_string())
        .map_err(|e| (488, format!("the offer: {e}")))?;
    pc.set_remote_description(offer)
        .await
        .map_err(fail(488, "the offer"))?;
    // After the offer, so the track binds to the offer's transceiver with the header
    // extension ids the browser chose. Bound before it, the track keeps the ids
    // webrtc-rs numbers before negotiation, and the sender then drops every packet
    // stamped with an id the browser did not agree to (nothing at all reaches it).
    pc.add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .map_err(fail(500, "add the video track"))?;
    let answer = pc
        .create_answer(None)
        .await
        .map_err(fail(488, "no answer to the offer"))?;
    let gathered_wait = gathered.notified();
    pc.set_local_description(answer)
        .await
        .map_err(fail(500, "the answer"))?;
    // Host candidates only (and a STUN server when configured): milliseconds.
    if tokio::time::timeout(Duration::from_secs(5), gathered_wait)
        .await
        .is_err()
    {
        tracing::warn!("{who}: ICE gathering did not complete in 5 s; answering with what it has");
    }
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or_else(|| (500, "no local description after gathering".into()))
}

fn setting_engine(
    net: &NetConfig,
) -> rtc::peer_connection::configuration::setting_engine::SettingEngine {
    let mut settings = SettingEngineBuilder::new()
        // A browser that vanishes without a BYE is noticed in seconds, not minutes.
        .with_ice_timeouts(
            Some(Duration::from_secs(3)),
            Some(Duration::from_secs(8)),
            Some(Duration::from_secs(1)),
        )
        .with_include_loopback_candidate(net.addresses.iter().any(|a| a.is_loopback()));
    if !net.announce.is_empty() {
        settings = settings.with_nat_1to1_ips(net.announce.clone(), RTCIceCandidateType::Host);
    }
    settings.build()
}

fn rtc_config(net: &NetConfig) -> rtc::peer_connection::configuration::RTCConfiguration {
    let mut config = RTCConfigurationBuilder::new();
    if !net.ice_servers.is_empty() {
        config = config.with_ice_servers(vec![RTCIceServer {
            urls: net.ice_servers.clone(),
            username: net.turn_user.clone(),
            credential: net.turn_password.clone(),
        }]);
    }
    if net.relay_only {
        config = config.with_ice_transport_policy(RTCIceTransportPolicy::Relay);
    }
    config.build()
}

/// The playout-delay RTP header extension: the sender's wish for how long the browser
/// holds a frame before showing it. A remote console wants none: 0 to 0 tells Chromium
/// to render each frame as soon as it is decoded instead of smoothing the pace through
/// its jitter buffer (PiKVM's Janus sends the same). The browser still waits for a
/// frame's missing packets; it only stops adding delay for smoothness. Negotiated like
/// any extension: a browser whose offer lacks it gets packets without it.
const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
const NO_PLAYOUT_DELAY: PlayoutDelayExtension = PlayoutDelayExtension {
    min_delay: 0,
    max_delay: 0,
};

/// A random number: an SSRC, or where a port search starts. Should the kernel have no
/// randomness to give, every call gets 0, which only makes SSRCs and ports repeat.
fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    u32::from_ne_bytes(b)
}

/// NTP time's middle 32 bits (16.16 seconds), as RTCP's LSR and DLSR count.
fn ntp_middle(now: SystemTime) -> u32 {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    let frac = ((d.subsec_nanos() as u64) << 32) / 1_000_000_000;
    (((secs & 0xffff) << 16) | (frac >> 16)) as u32
}

/// The sender task: frames out, RTCP in, until the connection ends.
async fn send(
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    payload_type: u8,
    mut sub: Subscription,
    state: Arc<PeerState>,
    connected: Arc<Notify>,
) {
    // Frames before the connection is up would be lost; wait for it (or its end).
    while !state.connected.load(Ordering::Acquire) && state.ended().is_none() {
        if tokio::time::timeout(Duration::from_secs(30), connected.notified())
            .await
            .is_err()
        {
            state.end("ICE did not connect within 30 s");
        }
    }
    if state.ended().is_some() {
        return;
    }
    sub.request_keyframe();
    let mut waiting_for_key = true;
    let mut previous: Option<Instant> = None;
    loop {
        tokio::select! {
            frame = sub.frames.recv() => match frame {
                Ok(frame) => {
                    if waiting_for_key && !frame.keyframe {
                        continue;
                    }
                    waiting_for_key = false;
                    let duration = previous.map_or(Duration::from_millis(33), |p| frame.encoded_at.saturating_duration_since(p));
                    previous = Some(frame.encoded_at);
                    let sample = Sample {
                        data: frame.data.clone(),
                        duration,
                        ..Sample::new(frame.encoded_at)
                    };
                    let writer = track
                        .sample_writer(ssrc, payload_type)
                        .with_extension(HeaderExtension::PlayoutDelay(NO_PLAYOUT_DELAY));
                    if let Err(e) = writer.write_sample(&sample).await {
                        tracing::debug!("{}: write: {e}", state.who);
                        continue;
                    }
                    state.frames_sent.fetch_add(1, Ordering::Relaxed);
                    state.keyframes_sent.fetch_add(frame.keyframe as u64, Ordering::Relaxed);
                    state.bytes_sent.fetch_add(frame.data.len() as u64, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // Behind: what is queued no longer decodes without the frames lost.
                    state.frames_skipped.fetch_add(n, Ordering::Relaxed);
                    waiting_for_key = true;
                    sub.request_keyframe();
                }
                Err(broadcast::error::RecvError::Closed) => {
                    state.end("the encoder stopped");
                    return;
                }
            },
            event = track.poll() => match event {
                Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                    for p in packets {
                        let any = p.as_any();
                        if any.downcast_ref::<PictureLossIndication>().is_some()
                            || any.downcast_ref::<FullIntraRequest>().is_some()
                        {
                            state.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                            sub.request_keyframe();
                        } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                            for r in rr.reports.iter().filter(|r| r.ssrc == ssrc && r.last_sender_report != 0) {
                                let rtt = ntp_middle(SystemTime::now())
                                    .wrapping_sub(r.last_sender_report)
                                    .wrapping_sub(r.delay);
                                if rtt < 65536 * 10 {
                                    state.rtt_us.store(rtt as u64 * 1_000_000 / 65536, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                }
                Some(_) => {}
                None => {
                    state.end("the track was unbound");
                    return;
                }
            },
        }
    }
}
