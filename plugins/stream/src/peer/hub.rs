//! One encoder per codec, shared by every WebRTC viewer of that codec.
//!
//! Encoding is what costs: a 1080p VP8 frame takes milliseconds of a core, packetising
//! and encrypting it for one more viewer a fraction of that. So the first viewer of a
//! codec starts its encoder (a thread, fed by the capture's I420 pictures), later ones
//! join it, and the last one to leave stops it. Encoded frames go out on a broadcast
//! channel that never waits for anyone: a viewer that falls behind (a stalled network,
//! a slow task) loses frames and asks for a keyframe, and nobody else notices.
//!
//! A joining viewer cannot decode the deltas in flight, so it asks for a keyframe too;
//! so does a browser's PLI or FIR. Requests that arrive together make one keyframe.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use jsipd_plugin_api::tracing;
use tokio::sync::broadcast;

use crate::capture::Capture;
use crate::video::{self, Codec, Target};

/// Frames a viewer may be behind before it skips to the next keyframe (~130 ms at 30 fps).
const CHANNEL: usize = 4;

/// One encoded frame, shared by the viewers of its codec.
#[derive(Debug)]
pub struct VideoFrame {
    pub data: Bytes,
    pub keyframe: bool,
    /// When it left the encoder (RTP timing is derived from it).
    pub encoded_at: Instant,
}

#[derive(Debug, Default)]
pub struct EncoderStats {
    pub frames: AtomicU64,
    pub keyframes: AtomicU64,
    pub encode_us_total: AtomicU64,
    pub encode_us_last: AtomicU64,
    pub bytes: AtomicU64,
}

/// One encoder as `GET /status` shows it.
#[derive(Debug, Clone)]
pub struct EncoderStatus {
    pub codec: Codec,
    pub viewers: usize,
    pub frames: u64,
    pub keyframes: u64,
    pub encode_us_total: u64,
    pub encode_us_last: u64,
    pub bytes: u64,
}

struct Shared {
    codec: Codec,
    tx: broadcast::Sender<Arc<VideoFrame>>,
    keyframe_wanted: AtomicBool,
    /// Set to end the picture wait at once (a keyframe request, or stop).
    kick: AtomicBool,
    stop: AtomicBool,
    viewers: AtomicUsize,
    stats: EncoderStats,
}

struct Inner {
    capture: Capture,
    target: Mutex<Target>,
    encoders: Mutex<HashMap<Codec, Arc<Shared>>>,
}

#[derive(Clone)]
pub struct Hub(Arc<Inner>);

/// A viewer's place at one encoder; dropping it leaves (and stops an encoder nobody
/// watches any more).
pub struct Subscription {
    hub: Hub,
    shared: Arc<Shared>,
    pub frames: broadcast::Receiver<Arc<VideoFrame>>,
}

impl Hub {
    pub fn new(capture: Capture, target: Target) -> Hub {
        Hub(Arc::new(Inner {
            capture,
            target: Mutex::new(target),
            encoders: Mutex::default(),
        }))
    }

    fn encoders(&self) -> MutexGuard<'_, HashMap<Codec, Arc<Shared>>> {
        self.0.encoders.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn target(&self) -> Target {
        *self.0.target.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new bitrate or frame rate for every encoder, from its next frame on.
    pub fn set_target(&self, target: Target) {
        *self.0.target.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }

    /// Joins `codec`'s encoder, starting it if this is its first viewer. The viewer
    /// asks for its keyframe once its connection is up ([`Subscription::request_keyframe`]):
    /// one made before would be lost, and cost every other viewer its size.
    pub fn join(&self, codec: Codec) -> Subscription {
        let mut encoders = self.encoders();
        let shared = encoders
            .entry(codec)
            .or_insert_with(|| {
                let shared = Arc::new(Shared {
                    codec,
                    tx: broadcast::channel(CHANNEL).0,
                    keyframe_wanted: AtomicBool::new(true),
                    kick: AtomicBool::new(false),
                    stop: AtomicBool::new(false),
                    viewers: AtomicUsize::new(0),
                    stats: EncoderStats::default(),
                });
                let hub = self.clone();
                let run = shared.clone();
                std::thread::Builder::new()
                    .name(format!("stream-{}", codec.name().to_lowercase()))
                    .spawn(move || hub.encode(run))
                    .expect("spawn an encoder thread");
                tracing::info!("{} encoder started", codec.name());
                shared
            })
            .clone();
        shared.viewers.fetch_add(1, Ordering::AcqRel);
        let frames = shared.tx.subscribe();
        drop(encoders);
        Subscription {
            hub: self.clone(),
            shared,
            frames,
        }
    }

    /// Per codec: viewers and the encoder's counters, for `GET /status`.
    pub fn status(&self) -> Vec<EncoderStatus> {
        let mut out: Vec<EncoderStatus> = self
            .encoders()
            .values()
            .map(|s| {
                let st = &s.stats;
                EncoderStatus {
                    codec: s.codec,
                    viewers: s.viewers.load(Ordering::Acquire),
                    frames: st.frames.load(Ordering::Relaxed),
                    keyframes: st.keyframes.load(Ordering::Relaxed),
                    encode_us_total: st.encode_us_total.load(Ordering::Relaxed),
                    encode_us_last: st.encode_us_last.load(Ordering::Relaxed),
                    bytes: st.bytes.load(Ordering::Relaxed),
                }
            })
            .collect();
        out.sort_by_key(|e| e.codec.name());
        out
    }

    /// Stops every encoder (unload).
    pub fn close(&self) {
        for s in self.encoders().drain().map(|(_, s)| s) {
            s.stop.store(true, Ordering::Release);
            s.kick.store(true, Ordering::Release);
        }
        self.0.capture.wake();
    }

    /// An encoder's thread: a picture in, a frame out, until its last viewer left.
    fn encode(self, shared: Arc<Shared>) {
        let codec = shared.codec;
        let pictures = self.0.capture.watch_pictures();
        let mut target = self.target();
        let mut encoder = match video::open(codec, target) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("{} encoder: {e}", codec.name());
                return;
            }
        };
        let started = Instant::now();
        let mut last: Option<Arc<crate::capture::Picture>> = None;
        while !shared.stop.load(Ordering::Acquire) && !pictures.closing() {
            let now_target = self.target();
            if now_target != target {
                target = now_target;
                if let Err(e) = encoder.retarget(target) {
                    tracing::warn!("{} encoder: {e}", codec.name());
                }
            }
            let after = last.as_ref().map_or(0, |p| p.seq);
            let next = pictures.next(after, Duration::from_millis(500), &shared.kick);
            shared.kick.store(false, Ordering::Release);
            let keyframe = shared.keyframe_wanted.swap(false, Ordering::AcqRel);
            let picture = match next {
                Some(p) => p,
                // A keyframe asked for on an unchanged screen: the last picture again.
                None if keyframe && last.is_some() => last.clone().expect("checked"),
                None => {
                    if keyframe {
                        shared.keyframe_wanted.store(true, Ordering::Release);
                    }
                    continue;
                }
            };
            let t0 = Instant::now();
            let pts = started.elapsed().as_millis() as u64;
            match encoder.encode(&picture.i420, pts, keyframe) {
                Ok(packet) => {
                    if keyframe && !packet.keyframe {
                        // The codec's rate control skipped it: ask again with the next.
                        shared.keyframe_wanted.store(true, Ordering::Release);
                    }
                    if !packet.data.is_empty() {
                        shared.publish(packet, t0.elapsed());
                    }
                }
                Err(e) => {
                    tracing::warn!("{} encoder: {e}", codec.name());
                    shared.keyframe_wanted.store(true, Ordering::Release);
                }
            }
            last = Some(picture);
        }
        tracing::info!("{} encoder stopped: no viewers", codec.name());
    }
}

impl Shared {
    /// Counts and sends one encoded frame to every viewer of this codec.
    fn publish(&self, packet: video::Packet, took: Duration) {
        let us = took.as_micros() as u64;
        let st = &self.stats;
        st.frames.fetch_add(1, Ordering::Relaxed);
        st.keyframes
            .fetch_add(packet.keyframe as u64, Ordering::Relaxed);
        st.encode_us_total.fetch_add(us, Ordering::Relaxed);
        st.encode_us_last.store(us, Ordering::Relaxed);
        st.bytes
            .fetch_add(packet.data.len() as u64, Ordering::Relaxed);
        // No receiver is fine: the last viewer is leaving.
        let _ = self.tx.send(Arc::new(VideoFrame {
            data: Bytes::from(packet.data),
            keyframe: packet.keyframe,
            encoded_at: Instant::now(),
        }));
    }
}

impl Subscription {
    /// Asks for a keyframe as soon as the encoder can make one.
    pub fn request_keyframe(&self) {
        self.shared.keyframe_wanted.store(true, Ordering::Release);
        self.shared.kick.store(true, Ordering::Release);
        self.hub.0.capture.wake();
    }

    pub fn codec(&self) -> Codec {
        self.shared.codec
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut encoders = self.hub.encoders();
        if self.shared.viewers.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last viewer: stop it, unless a new one already took its place.
            if encoders
                .get(&self.shared.codec)
                .is_some_and(|s| Arc::ptr_eq(s, &self.shared))
            {
                encoders.remove(&self.shared.codec);
            }
            self.shared.stop.store(true, Ordering::Release);
            self.shared.kick.store(true, Ordering::Release);
            drop(encoders);
            self.hub.0.capture.wake();
        }
    }
}
