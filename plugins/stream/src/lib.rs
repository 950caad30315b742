//! `stream`: the target's screen, captured once and shared by every viewer.
//!
//! API `stream.v1`:
//! - `GET /mjpeg`: `multipart/x-mixed-replace` JPEGs, for an `<img>`, ffmpeg or curl.
//!   Each part's headers are sent right after the frame before it (ustreamer's
//!   "advance headers"): Chrome shows a part only once the next part begins, so
//!   without this every picture would show one frame late. `?advance=0` sends the
//!   classic parts with `Content-Length` instead.
//! - `GET /snapshot`: one JPEG.
//! - `GET /status`: source, size, fps in and out, viewers, encode time, frames skipped
//!   (JSON, or a table for `Accept: text/plain`).
//! - `GET|POST /settings`: fps, quality, drop_same, width, height; a bad one is 400
//!   naming it.
//! - `GET /`: a page that shows the stream and reads the test source's frame stamps.
//! - `GET /webrtc`: the same over WebRTC (JSIP INVITE to this plugin's SLP, [`peer`]).
//!
//! Sources ([`source`]): `testsrc`, `qemu` (VNC) and `v4l2`, from
//! `conf/stream/stream.ini`. See [`capture`] for how one capture feeds many viewers.

pub mod capture;
pub mod config;
pub mod framecode;
pub mod jpeg;
pub mod nosignal;
pub mod peer;
pub mod source;
pub mod video;
pub mod yuv;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jsipd_plugin_api::api::{Api, Request, Response, Role};
use jsipd_plugin_api::serde_json::{json, Value};
use jsipd_plugin_api::slp::Slp;
use jsipd_plugin_api::{export_plugin, tracing, Context, Plugin};

use capture::Capture;
use config::Config;
use peer::{StreamSlp, Webrtc};

const BOUNDARY: &str = "jsipdframe";
/// A viewer that got no new frame for this long is sent the latest again: on an idle
/// screen with drop_same on, that is the only way to notice a client that went away.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// How long a snapshot waits for the source's first frame.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);
const SETTINGS_MAX: usize = 4096;

pub struct Stream {
    capture: Capture,
    webrtc: Arc<Webrtc>,
    config_dir: PathBuf,
}

impl Plugin for Stream {
    fn load(context: &Context) -> Result<Self, String> {
        let config = Config::read(context.config_dir())?;
        tracing::info!(
            "source {} at up to {} fps, JPEG quality {}, drop_same {}; capture starts with the first viewer",
            config.source.name(),
            config.settings.fps,
            config.settings.quality,
            config.settings.drop_same
        );
        let capture = Capture::new(config);
        Ok(Stream {
            webrtc: Webrtc::new(capture.clone()),
            capture,
            config_dir: context.config_dir().to_owned(),
        })
    }

    fn slp(&self) -> Option<Box<dyn Slp>> {
        Some(Box::new(StreamSlp {
            webrtc: self.webrtc.clone(),
        }))
    }

    fn api(&self) -> Option<Box<dyn Api>> {
        Some(Box::new(StreamApi {
            capture: self.capture.clone(),
            webrtc: self.webrtc.clone(),
            config_dir: self.config_dir.clone(),
            draining: AtomicBool::new(false),
        }))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.webrtc.close();
        self.capture.close();
    }
}

/// One API generation. A replaced generation's viewers end their streams at once
/// (`on_drain`), while the capture, shared with the new generation when the file is
/// the same, goes on for theirs.
struct StreamApi {
    capture: Capture,
    webrtc: Arc<Webrtc>,
    config_dir: PathBuf,
    draining: AtomicBool,
}

impl Api for StreamApi {
    /// Watching is for every role; changing the capture settings is an admin's.
    fn role_needed(&self, method: &str, path: &str) -> Role {
        match (method, path) {
            ("POST", "/settings") => Role::Admin,
            _ => Role::Viewer,
        }
    }

    fn handle(&self, request: &mut Request<'_>, response: &mut Response<'_>) {
        let path = request.path().to_string();
        let method = request.method().to_string();
        let allowed = match path.as_str() {
            "/" | "/webrtc" | "/framecode.js" | "/stream.css" | "/mjpeg" | "/snapshot"
            | "/status" => "GET",
            "/settings" => "GET, POST",
            _ => {
                return response.error(
                    404,
                    &format!(
                    "no {path} here; try /stream/v1/mjpeg, webrtc, snapshot, status or settings"
                ),
                )
            }
        };
        if !allowed.split(", ").any(|m| m == method) {
            return response.error(405, &format!("{path} answers {allowed}"));
        }
        match (path.as_str(), method.as_str()) {
            ("/", _) => asset(response, HTML, include_str!("watch.html")),
            ("/webrtc", _) => asset(response, HTML, include_str!("webrtc.html")),
            ("/framecode.js", _) => asset(response, JS, include_str!("framecode.js")),
            ("/stream.css", _) => asset(response, CSS, include_str!("stream.css")),
            ("/mjpeg", _) => self.mjpeg(request, response),
            ("/snapshot", _) => self.snapshot(response),
            ("/status", _) => self.status(request, response),
            ("/settings", "GET") => ok(response, self.capture.config().settings.to_json()),
            _ => self.set(request, response),
        }
    }

    fn on_drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.capture.wake();
    }

    fn on_reload(&self) {
        match Config::read(&self.config_dir) {
            Ok(c) => {
                tracing::info!("stream.ini re-read: source {}", c.source.name());
                self.webrtc.set_net(c.net.clone());
                self.webrtc.hub.set_target(peer::target(&c.settings));
                self.capture.set_config(c);
            }
            Err(e) => tracing::warn!("stream.ini rejected, keeping the running config: {e}"),
        }
    }
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// One of the pages' files, compiled in.
fn asset(response: &mut Response<'_>, content_type: &str, body: &str) {
    response.status(200).header("content-type", content_type);
    let _ = response.write_all(body.as_bytes());
}

fn ok(response: &mut Response<'_>, data: Value) {
    response.json(200, &json!({"code": 0, "msg": "OK", "data": data}));
}

impl StreamApi {
    fn mjpeg(&self, request: &Request<'_>, response: &mut Response<'_>) {
        let advance = request.query_param("advance") != Some("0");
        let viewer = self.capture.watch();
        response
            .status(200)
            .header(
                "content-type",
                &format!("multipart/x-mixed-replace;boundary={BOUNDARY}"),
            )
            .header("cache-control", "no-store, no-cache, must-revalidate")
            .header("pragma", "no-cache")
            .header("x-accel-buffering", "no");
        let head = format!("--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n\r\n");
        if advance && (response.write_all(head.as_bytes()).is_err() || response.flush().is_err()) {
            return;
        }
        let counters = viewer.counters();
        let mut last: Option<std::sync::Arc<capture::Encoded>> = None;
        loop {
            let after = last.as_ref().map_or(0, |f| f.seq);
            let frame = match viewer.next(after, KEEPALIVE, &self.draining) {
                Some(f) => {
                    if after > 0 && f.seq > after + 1 {
                        counters
                            .skipped_by_slow_viewers
                            .fetch_add(f.seq - after - 1, Ordering::Relaxed);
                    }
                    f
                }
                None if viewer.closing() || self.draining.load(Ordering::Acquire) => {
                    // Replaced or unloading: end the multipart body properly. A page
                    // that reconnects gets the new generation.
                    let _ = response.write_all(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
                    return;
                }
                None => match &last {
                    Some(f) => f.clone(),
                    None => continue,
                },
            };
            let written = if advance {
                response
                    .write_all(&frame.jpeg)
                    .and_then(|()| response.write_all(format!("\r\n{head}").as_bytes()))
            } else {
                response
                    .write_all(
                        format!(
                            "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                            frame.jpeg.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|()| response.write_all(&frame.jpeg))
                    .and_then(|()| response.write_all(b"\r\n"))
            };
            if written.and_then(|()| response.flush()).is_err() {
                return; // the viewer went away
            }
            counters.sent.fetch_add(1, Ordering::Relaxed);
            last = Some(frame);
        }
    }

    fn snapshot(&self, response: &mut Response<'_>) {
        let viewer = self.capture.watch();
        let Some(frame) = viewer.next(0, SNAPSHOT_WAIT, &self.draining) else {
            return response.error(
                503,
                &format!(
                    "no frame from the source within {} s",
                    SNAPSHOT_WAIT.as_secs()
                ),
            );
        };
        if frame.no_signal {
            let why = self.capture.status().error.unwrap_or_default();
            return response.error(503, &format!("no signal: {why}"));
        }
        response
            .status(200)
            .header("content-type", "image/jpeg")
            .header("cache-control", "no-store")
            .header("x-frame-captured-ms", &frame.captured_ms.to_string());
        let _ = response.write_all(&frame.jpeg);
    }

    fn status(&self, request: &Request<'_>, response: &mut Response<'_>) {
        let s = self.capture.status();
        let c = self.capture.counters();
        let config = self.capture.config();
        let encoded = c.encoded.load(Ordering::Relaxed);
        let mean_ms = if encoded == 0 {
            0.0
        } else {
            c.encode_us_total.load(Ordering::Relaxed) as f64 / encoded as f64 / 1000.0
        };
        let round = |v: f64| (v * 10.0).round() / 10.0;
        let data = json!({
            "source": config.source.name(),
            "describe": s.source,
            "capturing": s.running,
            "no_signal": s.no_signal,
            "error": s.error,
            "width": s.width,
            "height": s.height,
            "fps_in": round(s.fps_in),
            "fps_out": round(s.fps_out),
            "viewers": s.viewers,
            "encode_ms": {
                "last": round(c.encode_us_last.load(Ordering::Relaxed) as f64 / 1000.0),
                "mean": round(mean_ms),
            },
            "frames": {
                "captured": c.captured.load(Ordering::Relaxed),
                "encoded": encoded,
                "unchanged": c.unchanged.load(Ordering::Relaxed),
                "sent": c.sent.load(Ordering::Relaxed),
                "skipped_by_slow_viewers": c.skipped_by_slow_viewers.load(Ordering::Relaxed),
                "source_errors": c.source_errors.load(Ordering::Relaxed),
            },
            "settings": config.settings.to_json(),
            "webrtc": self.webrtc_status(),
        });
        let wants_text = request
            .header("accept")
            .is_some_and(|a| a.contains("text/plain"));
        if !wants_text {
            return ok(response, data);
        }
        let mut rows = Vec::new();
        flatten("", &data, &mut rows);
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut text = String::new();
        for (k, v) in rows {
            text.push_str(&format!("{k:width$}  {v}\n"));
        }
        response
            .status(200)
            .header("content-type", "text/plain; charset=utf-8");
        let _ = response.write_all(text.as_bytes());
    }

    fn set(&self, request: &mut Request<'_>, response: &mut Response<'_>) {
        let body = match request.read_body(SETTINGS_MAX) {
            Ok(b) => b,
            Err(e) => return response.error(413, &format!("settings: {e}")),
        };
        let changes: Value = match jsipd_plugin_api::serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return response.error(400, &format!("settings must be a JSON object: {e}")),
        };
        let Some(changes) = changes.as_object() else {
            return response.error(400, "settings must be a JSON object, like {\"fps\":15}");
        };
        let config = self.capture.config();
        let sizable = matches!(
            config.source,
            config::SourceConfig::Test { .. } | config::SourceConfig::V4l2 { .. }
        );
        match config.settings.with(changes, sizable) {
            Ok(new) => {
                tracing::info!("settings: {}", new.to_json());
                self.webrtc.hub.set_target(peer::target(&new));
                self.capture.set_settings(new.clone());
                ok(response, new.to_json());
            }
            Err(e) => response.error(400, &e),
        }
    }
}

impl StreamApi {
    /// The WebRTC part of `GET /status`: encoders per codec and each viewer.
    fn webrtc_status(&self) -> Value {
        let round = |v: f64| (v * 10.0).round() / 10.0;
        let encoders: Vec<Value> = self
            .webrtc
            .hub
            .status()
            .into_iter()
            .map(|e| {
                json!({
                    "codec": e.codec.name(),
                    "viewers": e.viewers,
                    "frames": e.frames,
                    "keyframes": e.keyframes,
                    "encode_ms": {
                        "last": round(e.encode_us_last as f64 / 1000.0),
                        "mean": round(e.encode_us_total as f64 / e.frames.max(1) as f64 / 1000.0),
                    },
                    "bytes": e.bytes,
                })
            })
            .collect();
        let viewers: Vec<Value> = self
            .webrtc
            .viewers()
            .into_iter()
            .map(|v| {
                let secs = v.since.elapsed().as_secs_f64().max(0.001);
                let bytes = v.bytes_sent.load(Ordering::Relaxed);
                json!({
                    "who": v.who,
                    "codec": v.codec.name(),
                    "connected": v.connected.load(Ordering::Relaxed),
                    "frames_sent": v.frames_sent.load(Ordering::Relaxed),
                    "keyframes_sent": v.keyframes_sent.load(Ordering::Relaxed),
                    "keyframe_requests": v.keyframe_requests.load(Ordering::Relaxed),
                    "frames_skipped": v.frames_skipped.load(Ordering::Relaxed),
                    "kbps": round(bytes as f64 * 8.0 / 1000.0 / secs),
                    "rtt_ms": round(v.rtt_us.load(Ordering::Relaxed) as f64 / 1000.0),
                })
            })
            .collect();
        let target = self.webrtc.hub.target();
        json!({
            "viewers": viewers.len(),
            "bitrate_kbps": target.kbps,
            "encoders": encoders,
            "peers": viewers,
        })
    }
}

/// `a.b  value` rows of a JSON object, for the text table.
fn flatten(prefix: &str, v: &Value, rows: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, v, rows);
            }
        }
        Value::Null => rows.push((prefix.into(), "-".into())),
        Value::String(s) => rows.push((prefix.into(), s.clone())),
        other => rows.push((prefix.into(), other.to_string())),
    }
}

export_plugin!(Stream);
