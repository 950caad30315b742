//! One capture, many viewers.
//!
//! A capture thread runs only while someone watches: the first viewer starts it, and
//! it ends itself [`LINGER`] after the last one left, so an unwatched plugin costs no
//! CPU. It takes frames from the [`Source`] at the configured rate, skips a frame
//! identical to the last one (ustreamer's drop-same-frames), encodes each new one to
//! JPEG once, and publishes it as the latest [`Encoded`] frame. Viewers never queue
//! frames: each waits for a frame newer than the one it sent last and takes the newest,
//! so a slow viewer skips frames and never delays the capture or any other viewer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jsipd_plugin_api::tracing;

use crate::config::{Config, Settings};
use crate::jpeg::Encoder;
use crate::nosignal;
use crate::source::{now_ms, Frame, Grab, Source};
use crate::yuv::I420;

/// How long the capture keeps running after its last viewer left (a page reload, a
/// run of snapshots) before it stops.
pub const LINGER: Duration = Duration::from_secs(1);
/// How often a source that failed is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// A published frame, shared by every viewer.
#[derive(Debug)]
pub struct Encoded {
    /// Increases by one with every publication.
    pub seq: u64,
    pub jpeg: Vec<u8>,
    pub width: usize,
    pub height: usize,
    pub captured_ms: u64,
    /// The "no signal" picture, shown while the source is unreachable.
    pub no_signal: bool,
}

/// A published raw picture, for the video encoders: converted once per frame, shared
/// by every encoder.
#[derive(Debug)]
pub struct Picture {
    pub seq: u64,
    pub i420: I420,
}

#[derive(Debug, Default)]
struct State {
    /// MJPEG viewers and snapshots.
    viewers: usize,
    /// Video encoders (each serves any number of WebRTC viewers).
    encoders: usize,
    running: bool,
    closing: bool,
    /// Capture runs since load; a viewer's first frame must come from the current one.
    run: u64,
    latest: Option<Arc<Encoded>>,
    latest_run: u64,
    picture: Option<Arc<Picture>>,
    picture_run: u64,
    source: String,
    error: Option<String>,
    fps_in: f64,
    fps_out: f64,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub captured: AtomicU64,
    pub encoded: AtomicU64,
    pub unchanged: AtomicU64,
    pub encode_us_total: AtomicU64,
    pub encode_us_last: AtomicU64,
    pub sent: AtomicU64,
    pub skipped_by_slow_viewers: AtomicU64,
    pub source_errors: AtomicU64,
}

struct Inner {
    config: Mutex<Config>,
    state: Mutex<State>,
    published: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
    counters: Counters,
}

#[derive(Clone)]
pub struct Capture(Arc<Inner>);

impl Capture {
    pub fn new(config: Config) -> Capture {
        Capture(Arc::new(Inner {
            config: Mutex::new(config),
            state: Mutex::default(),
            published: Condvar::new(),
            thread: Mutex::new(None),
            counters: Counters::default(),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> Config {
        self.0
            .config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// New settings (already checked), applied from the next frame on. A new size
    /// reopens the source.
    pub fn set_settings(&self, settings: Settings) {
        self.0
            .config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .settings = settings;
    }

    /// A new config (SIGHUP); a changed source is reopened.
    pub fn set_config(&self, config: Config) {
        *self.0.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    pub fn counters(&self) -> &Counters {
        &self.0.counters
    }

    /// Registers a viewer, starting the capture if it is not running.
    pub fn watch(&self) -> Viewer {
        let run = self.join(|s| s.viewers += 1);
        Viewer {
            capture: self.clone(),
            run,
        }
    }

    /// Registers a video encoder: from now on each new frame is also published as an
    /// I420 [`Picture`].
    pub fn watch_pictures(&self) -> PictureViewer {
        let run = self.join(|s| s.encoders += 1);
        PictureViewer {
            capture: self.clone(),
            run,
        }
    }

    /// Counts a new watcher in and starts the capture if it is not running; the run
    /// number it joined.
    fn join(&self, count: impl FnOnce(&mut State)) -> u64 {
        let mut state = self.state();
        count(&mut state);
        let mut ended = None;
        if !state.running && !state.closing {
            state.running = true;
            state.run += 1;
            let capture = self.clone();
            let handle = std::thread::Builder::new()
                .name("stream-capture".into())
                .spawn(move || capture.run())
                .expect("spawn the capture thread");
            // The previous run's thread has ended or is ending (it cleared `running`).
            ended = self
                .0
                .thread
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .replace(handle);
        }
        let run = state.run;
        drop(state);
        if let Some(old) = ended {
            let _ = old.join();
        }
        run
    }

    /// Waits up to `timeout` for `pick` to find something in the state; `None` on
    /// timeout, at unload, or once `stop` is set (and [`Capture::wake`] called).
    fn wait<T>(
        &self,
        timeout: Duration,
        stop: &AtomicBool,
        pick: impl Fn(&State) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut s = self.state();
        loop {
            if s.closing || stop.load(Ordering::Acquire) {
                return None;
            }
            if let Some(found) = pick(&s) {
                return Some(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            s = self
                .0
                .published
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Wakes every waiting viewer, so each looks at its own stop flag.
    pub fn wake(&self) {
        let _guard = self.state();
        self.0.published.notify_all();
    }

    /// Unload: viewers' waits end, and the capture thread is joined.
    pub fn close(&self) {
        self.state().closing = true;
        self.0.published.notify_all();
        let handle = self
            .0
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    pub fn status(&self) -> Status {
        let s = self.state();
        Status {
            running: s.running,
            viewers: s.viewers,
            source: s.source.clone(),
            error: s.error.clone(),
            width: s.latest.as_ref().map_or(0, |f| f.width),
            height: s.latest.as_ref().map_or(0, |f| f.height),
            no_signal: s.latest.as_ref().is_some_and(|f| f.no_signal),
            fps_in: s.fps_in,
            fps_out: s.fps_out,
        }
    }

    fn publish(
        &self,
        jpeg: Vec<u8>,
        width: usize,
        height: usize,
        captured_ms: u64,
        no_signal: bool,
    ) {
        let mut s = self.state();
        let seq = s.latest.as_ref().map_or(0, |f| f.seq) + 1;
        s.latest = Some(Arc::new(Encoded {
            seq,
            jpeg,
            width,
            height,
            captured_ms,
            no_signal,
        }));
        s.latest_run = s.run;
        drop(s);
        self.0.published.notify_all();
    }

    /// Publishes the latest JPEG again as a new frame (drop_same off, screen unchanged).
    fn republish(&self) {
        let latest = self.state().latest.clone();
        if let Some(f) = latest {
            self.publish(f.jpeg.clone(), f.width, f.height, now_ms(), f.no_signal);
        }
    }

    /// The capture thread.
    fn run(self) {
        let c = &self.0.counters;
        let mut source: Option<Box<dyn Source>> = None;
        let mut opened_with: Option<Config> = None;
        let mut frame = Frame::empty();
        let mut previous: Vec<u8> = Vec::new();
        let mut encoder: Option<Encoder> = None;
        let mut next_tick = Instant::now();
        let mut idle_since: Option<Instant> = None;
        let (mut window_start, mut window_in, mut window_out) = (Instant::now(), 0u32, 0u32);
        loop {
            {
                let mut s = self.state();
                if s.closing {
                    s.running = false;
                    break;
                }
                if s.viewers + s.encoders == 0 {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= LINGER {
                        s.running = false;
                        s.fps_in = 0.0;
                        s.fps_out = 0.0;
                        break;
                    }
                } else {
                    idle_since = None;
                }
                let elapsed = window_start.elapsed();
                if elapsed >= Duration::from_secs(1) {
                    s.fps_in = window_in as f64 / elapsed.as_secs_f64();
                    s.fps_out = window_out as f64 / elapsed.as_secs_f64();
                    (window_start, window_in, window_out) = (Instant::now(), 0, 0);
                }
            }
            let config = self.config();
            let interval = Duration::from_secs(1) / config.settings.fps.max(1);
            let now = Instant::now();
            if next_tick > now {
                std::thread::sleep(next_tick - now);
            }
            next_tick = (next_tick + interval).max(Instant::now());

            // A changed source or size reopens it.
            let reopen = opened_with.as_ref().is_some_and(|o| {
                o.source != config.source
                    || (o.settings.width, o.settings.height)
                        != (config.settings.width, config.settings.height)
            });
            if reopen {
                source = None;
            }
            if source.is_none() {
                match config.source.open(&config.settings) {
                    Ok(s) => {
                        let describe = s.describe();
                        tracing::info!("capturing from {describe}");
                        let mut st = self.state();
                        st.source = describe;
                        st.error = None;
                        drop(st);
                        source = Some(s);
                        opened_with = Some(config.clone());
                        previous.clear();
                    }
                    Err(e) => {
                        self.failed(&e, &config);
                        std::thread::sleep(RETRY);
                        continue;
                    }
                }
            }
            let src = source.as_mut().expect("opened above");
            match src.next(&mut frame, Instant::now() + interval) {
                Err(e) => {
                    source = None;
                    self.failed(&e, &config);
                }
                Ok(Grab::Unchanged) => {
                    c.unchanged.fetch_add(1, Ordering::Relaxed);
                    if !config.settings.drop_same {
                        self.republish();
                        window_out += 1;
                    }
                }
                Ok(Grab::New) => {
                    c.captured.fetch_add(1, Ordering::Relaxed);
                    window_in += 1;
                    if config.settings.drop_same && frame.data == previous {
                        c.unchanged.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let (jpeg_wanted, pictures_wanted) = {
                        let s = self.state();
                        (s.viewers > 0, s.encoders > 0)
                    };
                    if pictures_wanted {
                        let mut i420 = I420::default();
                        match i420.convert(&frame) {
                            Ok(()) => self.publish_picture(i420),
                            Err(e) => self.failed(&e, &config),
                        }
                    }
                    if jpeg_wanted && !self.encode_jpeg(&frame, &config, &mut encoder) {
                        std::thread::sleep(RETRY);
                        continue;
                    }
                    window_out += 1;
                    if config.settings.drop_same {
                        previous.clear();
                        previous.extend_from_slice(&frame.data);
                    }
                }
            }
        }
        tracing::info!(
            "capture stopped: {}",
            if self.state().closing {
                "unloading"
            } else {
                "no viewers"
            }
        );
    }

    /// Encodes and publishes one JPEG; false when no encoder could be made.
    fn encode_jpeg(&self, frame: &Frame, config: &Config, encoder: &mut Option<Encoder>) -> bool {
        let c = &self.0.counters;
        let quality = config.settings.quality;
        let enc = match encoder {
            Some(e) => e,
            None => match Encoder::new(quality) {
                Ok(e) => encoder.insert(e),
                Err(e) => {
                    self.failed(&e, config);
                    return false;
                }
            },
        };
        let started = Instant::now();
        let jpeg = enc.set_quality(quality).and_then(|()| enc.encode(frame));
        let us = started.elapsed().as_micros() as u64;
        match jpeg {
            Ok(jpeg) => {
                c.encoded.fetch_add(1, Ordering::Relaxed);
                c.encode_us_total.fetch_add(us, Ordering::Relaxed);
                c.encode_us_last.store(us, Ordering::Relaxed);
                self.publish(jpeg, frame.width, frame.height, frame.captured_ms, false);
            }
            Err(e) => self.failed(&e, config),
        }
        true
    }

    fn publish_picture(&self, i420: I420) {
        let mut s = self.state();
        let seq = s.picture.as_ref().map_or(0, |p| p.seq) + 1;
        s.picture = Some(Arc::new(Picture { seq, i420 }));
        s.picture_run = s.run;
        drop(s);
        self.0.published.notify_all();
    }

    /// The source failed or could not open: viewers get the "no signal" picture.
    fn failed(&self, error: &str, config: &Config) {
        self.0
            .counters
            .source_errors
            .fetch_add(1, Ordering::Relaxed);
        let mut s = self.state();
        let first = s.error.as_deref() != Some(error);
        s.error = Some(error.to_string());
        let showing = s
            .latest
            .as_ref()
            .is_some_and(|f| f.no_signal && s.latest_run == s.run);
        let (w, h) = s
            .latest
            .as_ref()
            .filter(|f| !f.no_signal)
            .map_or((config.settings.width, config.settings.height), |f| {
                (f.width, f.height)
            });
        drop(s);
        if first {
            tracing::warn!(
                "{error}; showing no signal, retrying every {}s",
                RETRY.as_secs()
            );
        }
        if !showing || first {
            match nosignal::jpeg(w, h) {
                Ok(jpeg) => self.publish(jpeg, w, h, now_ms(), true),
                Err(e) => tracing::warn!("the no-signal picture: {e}"),
            }
        }
    }
}

/// What `GET /status` shows of the capture.
#[derive(Debug, Clone)]
pub struct Status {
    pub running: bool,
    pub viewers: usize,
    pub source: String,
    pub error: Option<String>,
    pub width: usize,
    pub height: usize,
    pub no_signal: bool,
    pub fps_in: f64,
    pub fps_out: f64,
}

/// One viewer; dropping it leaves.
pub struct Viewer {
    capture: Capture,
    run: u64,
}

impl Viewer {
    /// The newest frame after `after` (a seq; 0 for any), waiting up to `timeout`.
    /// `None` on timeout, when the plugin unloads, or when `stop` is set (and
    /// [`Capture::wake`] called). The first frame a viewer gets comes from the capture
    /// run it joined, never a stale one from an earlier run.
    pub fn next(&self, after: u64, timeout: Duration, stop: &AtomicBool) -> Option<Arc<Encoded>> {
        self.capture.wait(timeout, stop, |s| {
            s.latest
                .as_ref()
                .filter(|f| f.seq > after && s.latest_run >= self.run)
                .cloned()
        })
    }

    pub fn closing(&self) -> bool {
        self.capture.state().closing
    }

    pub fn counters(&self) -> &Counters {
        self.capture.counters()
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let mut s = self.capture.state();
        s.viewers = s.viewers.saturating_sub(1);
    }
}

/// One video encoder's view of the capture; dropping it leaves.
pub struct PictureViewer {
    capture: Capture,
    run: u64,
}

impl PictureViewer {
    /// The newest picture after `after` (a seq; 0 for any), waiting up to `timeout`.
    /// `None` on timeout, at unload, or as soon as `kick` is set and
    /// [`Capture::wake`] called (a keyframe is wanted now, or the encoder stops).
    pub fn next(&self, after: u64, timeout: Duration, kick: &AtomicBool) -> Option<Arc<Picture>> {
        self.capture.wait(timeout, kick, |s| {
            s.picture
                .as_ref()
                .filter(|p| p.seq > after && s.picture_run >= self.run)
                .cloned()
        })
    }

    pub fn closing(&self) -> bool {
        self.capture.state().closing
    }
}

impl Drop for PictureViewer {
    fn drop(&mut self) {
        let mut s = self.capture.state();
        s.encoders = s.encoders.saturating_sub(1);
    }
}
