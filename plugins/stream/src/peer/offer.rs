//! What a browser's SDP offer must have before jsipd answers it, and which codec to
//! send. Sans-IO: text in, a choice or the reason for a `488` out, so every refusal is
//! unit-tested without a browser.
//!
//! jsipd sends one video track and receives nothing, so the offer needs a video
//! section that can receive, ICE credentials, a DTLS fingerprint and its candidates
//! (JSIP carries a complete offer, no trickle). The codec is the first of the offer's
//! video payload types that jsipd can send: VP8, or H.264 in packetization mode 1 and
//! Constrained Baseline (what OpenH264 makes). The browser's order is its preference,
//! which a page changes with `setCodecPreferences`.

use crate::video::Codec;

/// The codec chosen from an offer, as the offer numbered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub codec: Codec,
    pub payload_type: u8,
    /// The offer's `a=fmtp` for it ("" when none), echoed in the answer.
    pub fmtp: String,
}

pub fn choose(sdp: &str) -> Result<Choice, String> {
    let lines: Vec<&str> = sdp.lines().map(str::trim_end).collect();
    if lines.first().map(|l| l.trim()) != Some("v=0") {
        return Err("the Body is not an SDP offer: it must begin with v=0".into());
    }
    let sections = split_media(&lines);
    let session = sections.first().map(|(_, l)| l.as_slice()).unwrap_or(&[]);
    let Some((mline, media)) = sections
        .iter()
        .skip(1)
        .find(|(m, _)| m.starts_with("m=video "))
    else {
        return Err(
            "the offer has no video section (m=video): add a transceiver with direction recvonly"
                .into(),
        );
    };
    let fields: Vec<&str> = mline.split_whitespace().collect();
    if fields.get(1) == Some(&"0") {
        return Err("the offer's video section is rejected (port 0)".into());
    }
    let attr = |name: &str| -> bool {
        media
            .iter()
            .chain(session.iter())
            .any(|l| l.starts_with(name))
    };
    if media
        .iter()
        .any(|l| *l == "a=sendonly" || *l == "a=inactive")
    {
        return Err("the offer's video section does not receive (a=sendonly or a=inactive); jsipd only sends video".into());
    }
    if !attr("a=ice-ufrag:") || !attr("a=ice-pwd:") {
        return Err("the offer has no ICE credentials (a=ice-ufrag, a=ice-pwd)".into());
    }
    if !attr("a=fingerprint:") {
        return Err("the offer has no DTLS fingerprint (a=fingerprint)".into());
    }
    if !media.iter().any(|l| l.starts_with("a=candidate:")) {
        return Err("the offer has no ICE candidates: send it once gathering is complete (JSIP has no trickle ICE)".into());
    }
    let mut offered = Vec::new();
    for pt in fields.iter().skip(3) {
        let Ok(pt) = pt.parse::<u8>() else { continue };
        let rtpmap = media
            .iter()
            .find_map(|l| l.strip_prefix(&format!("a=rtpmap:{pt} ")));
        let fmtp = media
            .iter()
            .find_map(|l| l.strip_prefix(&format!("a=fmtp:{pt} ")))
            .unwrap_or("");
        let Some(name) = rtpmap.and_then(|r| r.split('/').next()) else {
            continue;
        };
        offered.push(name.to_string());
        let codec = if name.eq_ignore_ascii_case("VP8") {
            Codec::Vp8
        } else if name.eq_ignore_ascii_case("H264") && h264_we_make(fmtp) {
            Codec::H264
        } else {
            continue;
        };
        return Ok(Choice {
            codec,
            payload_type: pt,
            fmtp: fmtp.to_string(),
        });
    }
    offered.retain(|c| {
        !matches!(
            c.to_ascii_lowercase().as_str(),
            "rtx" | "red" | "ulpfec" | "flexfec-03"
        )
    });
    offered.dedup();
    Err(format!(
        "no video codec in the offer that jsipd sends: it offers {}; jsipd sends VP8 and H.264 (packetization-mode=1, Constrained Baseline)",
        if offered.is_empty() { "none".to_string() } else { offered.join(", ") }
    ))
}

/// Packetization mode 1 and a Constrained Baseline profile (42 with the constraint
/// bit 0x40 set, as in 42e01f or 42c01f).
fn h264_we_make(fmtp: &str) -> bool {
    let param = |key: &str| {
        fmtp.split(';')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let mode1 = param("packetization-mode").as_deref() == Some("1");
    let baseline = param("profile-level-id").is_some_and(|p| {
        p.len() == 6
            && &p[..2] == "42"
            && u8::from_str_radix(&p[2..4], 16).is_ok_and(|c| c & 0x40 != 0)
    });
    mode1 && baseline
}

/// The session part, then each `m=` line with its attributes.
fn split_media<'a>(lines: &[&'a str]) -> Vec<(&'a str, Vec<&'a str>)> {
    let mut out = vec![("", Vec::new())];
    for &l in lines {
        if l.starts_with("m=") {
            out.push((l, Vec::new()));
        } else if let Some(last) = out.last_mut() {
            last.1.push(l);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from what Chromium 156 offers for `addTransceiver('video', {direction:
    /// 'recvonly'})` after gathering.
    const CHROMIUM: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 45\r\nc=IN IP4 0.0.0.0\r\n\
a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\n\
a=fingerprint:sha-256 AA:BB\r\na=setup:actpass\r\na=mid:0\r\na=recvonly\r\n\
a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack pli\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:103 rtx/90000\r\na=rtpmap:45 AV1/90000\r\n";

    #[test]
    fn chromium_default_gets_vp8_and_h264_when_preferred() {
        let c = choose(CHROMIUM).unwrap();
        assert_eq!((c.codec, c.payload_type), (Codec::Vp8, 96));
        let h264_first = CHROMIUM.replace("96 97 102 103 45", "102 103 96 97 45");
        let c = choose(&h264_first).unwrap();
        assert_eq!((c.codec, c.payload_type), (Codec::H264, 102));
        assert!(c.fmtp.contains("profile-level-id=42e01f"));
    }

    #[test]
    fn h264_high_profile_or_mode_0_is_skipped() {
        let high = CHROMIUM
            .replace("96 97 102 103 45", "102 45")
            .replace("42e01f", "640c1f");
        let e = choose(&high).unwrap_err();
        assert!(e.contains("offers H264, AV1"), "{e}");
        let mode0 = CHROMIUM
            .replace("96 97 102 103 45", "102")
            .replace("packetization-mode=1", "packetization-mode=0");
        assert!(choose(&mode0).is_err());
    }

    #[test]
    fn each_missing_part_is_named() {
        for (bad, says) in [
            ("hello".to_string(), "begin with v=0"),
            (CHROMIUM.replace("m=video", "m=audio"), "no video section"),
            (CHROMIUM.replace("m=video 9", "m=video 0"), "port 0"),
            (
                CHROMIUM.replace("a=recvonly", "a=sendonly"),
                "does not receive",
            ),
            (
                CHROMIUM.replace("a=ice-ufrag:abcd\r\n", ""),
                "ICE credentials",
            ),
            (
                CHROMIUM.replace("a=fingerprint:sha-256 AA:BB\r\n", ""),
                "DTLS fingerprint",
            ),
            (
                CHROMIUM.replace(
                    "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n",
                    "",
                ),
                "no ICE candidates",
            ),
            (
                CHROMIUM.replace("96 97 102 103 45", "97 103 45"),
                "offers AV1",
            ),
        ] {
            let e = choose(&bad).unwrap_err();
            assert!(e.contains(says), "{says:?} not in {e:?}");
        }
    }
}
