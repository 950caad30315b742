//! `conf/stream/stream.ini`: the source, and the settings `POST /stream/v1/settings`
//! changes at run time.

use std::net::IpAddr;
use std::path::Path;

use jsipd_kvm_support::ini::Ini;
use jsipd_plugin_api::serde_json::{Map, Value};

pub use crate::peer::connection::NetConfig;
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
    /// The WebRTC encoders' target, kbit/s (constant bitrate).
    pub bitrate: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            fps: 30,
            quality: 80,
            drop_same: true,
            width: 1280,
            height: 720,
            bitrate: 4000,
        }
    }
}

const KNOWN: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "source",
            "fps",
            "quality",
            "drop_same",
            "width",
            "height",
            "bitrate",
        ],
    ),
    (
        "webrtc",
        &[
            "addresses",
            "ports",
            "announce",
            "ice_servers",
            "turn_user",
            "turn_password",
            "relay_only",
        ],
    ),
    ("testsrc", &["motion"]),
    ("qemu", &["vnc"]),
    ("v4l2", &["device", "format"]),
];

pub const SETTING_KEYS: &str = "fps, quality, drop_same, width, height, bitrate";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub source: SourceConfig,
    pub settings: Settings,
    pub net: NetConfig,
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
            bitrate: ini.parse_or("", "bitrate", d.bitrate, "kbit/s")?,
        };
        // The same limits as the API's, named after the file.
        let mut object = Map::new();
        object.insert("fps".into(), settings.fps.into());
        object.insert("quality".into(), settings.quality.into());
        object.insert("width".into(), settings.width.into());
        object.insert("height".into(), settings.height.into());
        object.insert("bitrate".into(), settings.bitrate.into());
        settings = settings
            .with(&object, true)
            .map_err(|e| format!("{file}: {e}"))?;
        let net = net_config(&ini).map_err(|e| format!("{file}: [webrtc] {e}"))?;
        Ok(Config {
            source,
            settings,
            net,
        })
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
                "bitrate" => s.bitrate = number(key, v, 100, 50_000)? as u32,
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
            "bitrate": self.bitrate,
        })
    }
}

/// `[webrtc]`: where peer connections bind and what they announce.
fn net_config(ini: &Ini) -> Result<NetConfig, String> {
    let list = |key: &str| -> Vec<String> {
        ini.get("webrtc", key)
            .unwrap_or("")
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut addresses = Vec::new();
    for a in list("addresses") {
        addresses.push(a.parse::<IpAddr>().map_err(|_| {
            format!("addresses: {a:?} is not an IP address (list the addresses browsers reach this host on)")
        })?);
    }
    if addresses.is_empty() {
        addresses = default_addresses();
    }
    let ports = match ini.get("webrtc", "ports") {
        None => None,
        Some(r) => {
            let parsed = r.split_once('-').and_then(|(a, b)| {
                Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
            });
            match parsed {
                Some((lo, hi)) if lo >= 1024 && lo <= hi => Some((lo, hi)),
                _ => {
                    return Err(format!(
                        "ports = {r}: give a range like 20000-20099 (from 1024 up)"
                    ))
                }
            }
        }
    };
    let ice_servers = list("ice_servers");
    if let Some(bad) = ice_servers
        .iter()
        .find(|u| !(u.starts_with("stun:") || u.starts_with("turn:") || u.starts_with("turns:")))
    {
        return Err(format!(
            "ice_servers: {bad:?} must be a stun:, turn: or turns: URL"
        ));
    }
    let relay_only = ini.flag("webrtc", "relay_only", false)?;
    if relay_only && !ice_servers.iter().any(|u| u.starts_with("turn")) {
        return Err(
            "relay_only = yes needs a turn: or turns: URL in ice_servers (and turn_user, turn_password)"
                .into(),
        );
    }
    Ok(NetConfig {
        addresses,
        ports,
        announce: list("announce"),
        ice_servers,
        turn_user: ini.get("webrtc", "turn_user").unwrap_or("").to_string(),
        turn_password: ini.get("webrtc", "turn_password").unwrap_or("").to_string(),
        relay_only,
    })
}

/// Every address of this host's interfaces that are up, loopback included (a browser
/// on the box itself), IPv4 and IPv6 except link-local (fe80::, which needs a scope).
pub fn default_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs fills a list that freeifaddrs releases; entries are only read.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return vec![IpAddr::from([127, 0, 0, 1])];
        }
        let mut p = list;
        while !p.is_null() {
            let ifa = &*p;
            p = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_flags & libc::IFF_UP as u32 == 0 {
                continue;
            }
            match (*ifa.ifa_addr).sa_family as i32 {
                libc::AF_INET => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    out.push(IpAddr::from(u32::from_be(sa.sin_addr.s_addr).to_be_bytes()));
                }
                libc::AF_INET6 => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    let ip = std::net::Ipv6Addr::from(sa.sin6_addr.s6_addr);
                    if ip.segments()[0] & 0xffc0 != 0xfe80 {
                        out.push(IpAddr::V6(ip));
                    }
                }
                _ => {}
            }
        }
        libc::freeifaddrs(list);
    }
    out.sort();
    out.dedup();
    out
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
        let c = read("bitrate = 2500\n[webrtc]\naddresses = 127.0.0.1, ::1\nports = 20000-20009\nannounce = 203.0.113.7\n").unwrap();
        assert_eq!(c.settings.bitrate, 2500);
        assert_eq!(c.net.addresses.len(), 2);
        assert_eq!(c.net.ports, Some((20000, 20009)));
        assert_eq!(c.net.announce, vec!["203.0.113.7".to_string()]);
        assert!(!read("").unwrap().net.addresses.is_empty());
        for (bad, says) in [
            ("addresses = kvm.local", "not an IP address"),
            ("ports = 20000", "give a range"),
            ("ports = 30-40", "from 1024"),
            ("ice_servers = stun.example.com", "stun:, turn:"),
            (
                "relay_only = yes\nice_servers = stun:s.example.com",
                "needs a turn:",
            ),
        ] {
            let e = read(&format!("[webrtc]\n{bad}\n")).unwrap_err();
            assert!(e.contains("[webrtc]") && e.contains(says), "{bad}: {e}");
        }
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
            .starts_with("bitrate must be"));
        assert!(change(json!({"colour": 1}), true)
            .unwrap_err()
            .contains("unknown setting \"colour\""));
    }
}
