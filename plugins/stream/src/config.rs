//! `conf/stream/stream.ini`: the source, and the settings `POST /stream/v1/settings`
//! changes at run time.

use std::path::Path;

use jsipd_kvm_support::ini::Ini;
use jsipd_plugin_api::serde_json::{Map, Value};

use crate::source::rfb::Rfb;
use crate::source::testsrc::TestSource;
use crate::source::v4l2::{V4l2, Want};
use crate::source::Source;

#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    Test { motion: bool },
    Qemu { vnc: String },
    V4l2 { device: String, format: Want },
}

impl SourceConfig {
    pub fn name(&self) -> &'static str {
        match self {
            SourceConfig::Test { .. } => "testsrc",
            SourceConfig::Qemu { .. } => "qemu",
            SourceConfig::V4l2 { .. } => "v4l2",
        }
    }

    /// Opens the source at the requested size (where it has one to choose).
    pub fn open(&self, settings: &Settings) -> Result<Box<dyn Source>, String> {
        Ok(match self {
            SourceConfig::Test { motion } => {
                Box::new(TestSource::new(settings.width, settings.height, *motion))
            }
            SourceConfig::Qemu { vnc } => Box::new(Rfb::connect(vnc)?),
            SourceConfig::V4l2 { device, format } => Box::new(V4l2::open(
                device,
                settings.width as u32,
                settings.height as u32,
                *format,
            )?),
        })
    }
}

/// What may change while viewers watch.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Frames per second taken from the source, at most.
    pub fps: u32,
    /// JPEG quality, 1..=100.
    pub quality: u8,
    /// Skip a frame identical to the one before: not encoded, not sent.
    pub drop_same: bool,
    /// The size asked of the source (testsrc makes it; a grabber picks the nearest;
    /// QEMU's screen is as large as the guest's mode).
    pub width: usize,
    pub height: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            fps: 30,
            quality: 80,
            drop_same: true,
            width: 1280,
            height: 720,
        }
    }
}

const KNOWN: &[(&str, &[&str])] = &[
    (
        "",
        &["source", "fps", "quality", "drop_same", "width", "height"],
    ),
    ("testsrc", &["motion"]),
    ("qemu", &["vnc"]),
    ("v4l2", &["device", "format"]),
];

pub const SETTING_KEYS: &str = "fps, quality, drop_same, width, height";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub source: SourceConfig,
    pub settings: Settings,
}

impl Config {
    pub fn read(config_dir: &Path) -> Result<Config, String> {
        let ini = Ini::read(&config_dir.join("stream.ini"))?;
        ini.only(KNOWN)?;
        let file = ini.path().display().to_string();
        let source = match ini.get("", "source").unwrap_or("testsrc") {
            "testsrc" => SourceConfig::Test {
                motion: ini.flag("testsrc", "motion", true)?,
            },
            "qemu" => SourceConfig::Qemu {
                vnc: ini
                    .get("qemu", "vnc")
                    .ok_or_else(|| format!("{file}: source = qemu needs [qemu] vnc = PATH of QEMU's -vnc unix: socket"))?
                    .to_string(),
            },
            "v4l2" => {
                let format = ini.get("v4l2", "format").unwrap_or("auto");
                SourceConfig::V4l2 {
                    device: ini.get("v4l2", "device").unwrap_or("/dev/video0").to_string(),
                    format: Want::parse(format).ok_or_else(|| {
                        format!("{file}: [v4l2] format = {format}: use auto, mjpeg, yuyv or nv12")
                    })?,
                }
            }
            other => {
                return Err(format!(
                    "{file}: source = {other}: use testsrc, qemu or v4l2"
                ))
            }
        };
        let d = Settings::default();
        let mut settings = Settings {
            fps: ini.parse_or("", "fps", d.fps, "frames per second")?,
            quality: ini.parse_or("", "quality", d.quality, "a JPEG quality, 1 to 100")?,
            drop_same: ini.flag("", "drop_same", d.drop_same)?,
            width: ini.parse_or("", "width", d.width, "pixels")?,
            height: ini.parse_or("", "height", d.height, "pixels")?,
        };
        // The same limits as the API's, named after the file.
        let mut object = Map::new();
        object.insert("fps".into(), settings.fps.into());
        object.insert("quality".into(), settings.quality.into());
        object.insert("width".into(), settings.width.into());
        object.insert("height".into(), settings.height.into());
        settings = settings
            .with(&object, true)
            .map_err(|e| format!("{file}: {e}"))?;
        Ok(Config { source, settings })
    }
}

impl Settings {
    /// These settings with `changes` (a JSON object of some of [`SETTING_KEYS`])
    /// applied; an error names the key. `sizable`: whether the source takes a size.
    pub fn with(&self, changes: &Map<String, Value>, sizable: bool) -> Result<Settings, String> {
        let mut s = self.clone();
        let number = |key: &str, v: &Value, min: u64, max: u64| -> Result<u64, String> {
            v.as_u64()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| format!("{key} must be a whole number from {min} to {max}, not {v}"))
        };
        for (key, v) in changes {
            match key.as_str() {
                "fps" => s.fps = number(key, v, 1, 120)? as u32,
                "quality" => s.quality = number(key, v, 1, 100)? as u8,
                "drop_same" => {
                    s.drop_same = v
                        .as_bool()
                        .ok_or_else(|| format!("drop_same must be true or false, not {v}"))?
                }
                "width" | "height" => {
                    if !sizable {
                        return Err(format!(
                            "{key}: this source's size is set by the source itself (the guest's screen mode)"
                        ));
                    }
                    let n = number(key, v, 16, 4096)? as usize;
                    if n % 2 == 1 {
                        return Err(format!("{key} must be even (4:2:0 chroma), not {n}"));
                    }
                    if key == "width" {
                        s.width = n
                    } else {
                        s.height = n
                    }
                }
                other => {
                    return Err(format!(
                        "unknown setting {other:?}; the settings are {SETTING_KEYS}"
                    ))
                }
            }
        }
        Ok(s)
    }

    pub fn to_json(&self) -> Value {
        jsipd_plugin_api::serde_json::json!({
            "fps": self.fps,
            "quality": self.quality,
            "drop_same": self.drop_same,
            "width": self.width,
            "height": self.height,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsipd_kvm_support::ini::with_config_file;
    use jsipd_plugin_api::serde_json::json;

    fn read(text: &str) -> Result<Config, String> {
        with_config_file("stream.ini", text, Config::read)
    }

    #[test]
    fn defaults_sources_and_errors_that_name_the_file_line_and_key() {
        let c = read("").unwrap();
        assert_eq!(c.source, SourceConfig::Test { motion: true });
        assert_eq!(c.settings, Settings::default());
        let c = read("source = qemu\nfps = 25\n[qemu]\nvnc = /run/vnc.sock\n").unwrap();
        assert_eq!(
            c.source,
            SourceConfig::Qemu {
                vnc: "/run/vnc.sock".into()
            }
        );
        assert_eq!(c.settings.fps, 25);
        assert!(read("source = qemu\n")
            .unwrap_err()
            .contains("needs [qemu] vnc"));
        assert!(read("source = hdmi\n")
            .unwrap_err()
            .contains("source = hdmi"));
        let e = read("fps = 0\n").unwrap_err();
        assert!(e.contains("stream.ini") && e.contains("fps must be"), "{e}");
        let e = read("\n\ncolour = red\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("colour"), "{e}");
        let e = read("source = v4l2\n[v4l2]\nformat = h264\n").unwrap_err();
        assert!(e.contains("format = h264"), "{e}");
    }

    #[test]
    fn settings_changes_are_checked_key_by_key() {
        let s = Settings::default();
        let change = |v: Value, sizable| s.with(v.as_object().unwrap(), sizable);
        let t = change(
            json!({"fps": 10, "quality": 50, "drop_same": false, "width": 640, "height": 360}),
            true,
        )
        .unwrap();
        assert_eq!(
            (t.fps, t.quality, t.drop_same, t.width, t.height),
            (10, 50, false, 640, 360)
        );
        assert!(change(json!({"fps": 500}), true)
            .unwrap_err()
            .starts_with("fps must be"));
        assert!(change(json!({"quality": "high"}), true)
            .unwrap_err()
            .starts_with("quality must be"));
        assert!(change(json!({"width": 641}), true)
            .unwrap_err()
            .contains("even"));
        assert!(change(json!({"width": 640}), false)
            .unwrap_err()
            .contains("set by the source"));
        assert!(change(json!({"bitrate": 1}), true)
            .unwrap_err()
            .contains("unknown setting \"bitrate\""));
    }
}
