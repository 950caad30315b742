//! Time-based one-time passwords (RFC 6238 over RFC 4226): HMAC-SHA1, 6 digits, 30 s
//! steps, as every authenticator app expects by default. HMAC comes from `ring`, which
//! the daemon already builds for TLS.

use ring::hmac;

pub const STEP_SECONDS: u64 = 30;
pub const DIGITS: u32 = 6;

/// The code of time step `step` (Unix time / 30).
pub fn code(secret: &[u8], step: u64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = hmac::sign(&key, &step.to_be_bytes());
    let mac = mac.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let bin = u32::from_be_bytes([
        mac[offset],
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]) & 0x7fff_ffff;
    bin % 10u32.pow(DIGITS)
}

/// The step `given` matches, looking one step back and ahead (clocks drift, people type
/// slowly), or `None`. The caller refuses a step it already accepted (a replay).
pub fn matching_step(secret: &[u8], given: &str, unix_seconds: u64) -> Option<u64> {
    let given = given.trim();
    if given.len() != DIGITS as usize || !given.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let given: u32 = given.parse().ok()?;
    let now = unix_seconds / STEP_SECONDS;
    [now, now.wrapping_sub(1), now + 1]
        .into_iter()
        .find(|&step| code(secret, step) == given)
}

/// The URI an authenticator app scans (Google's `otpauth://` format).
pub fn uri(user: &str, secret: &[u8]) -> String {
    format!(
        "otpauth://totp/jsipd:{user}?secret={}&issuer=jsipd&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        data_encoding::BASE32_NOPAD.encode(secret)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_sha1_vectors() {
        // RFC 6238 appendix B, the low six digits of its eight.
        let secret = b"12345678901234567890";
        for (t, want) in [
            (59u64, 287082),
            (1111111109, 81804),
            (1111111111, 50471),
            (1234567890, 5924),
            (2000000000, 279037),
        ] {
            assert_eq!(code(secret, t / STEP_SECONDS), want, "T={t}");
        }
    }

    #[test]
    fn a_code_matches_its_step_and_neighbours_only() {
        let secret = b"another secret!!";
        let t = 1_800_000_000;
        let now = t / STEP_SECONDS;
        let c = format!("{:06}", code(secret, now));
        assert_eq!(matching_step(secret, &c, t), Some(now));
        assert_eq!(matching_step(secret, &c, t + STEP_SECONDS), Some(now));
        assert_eq!(matching_step(secret, &c, t + 3 * STEP_SECONDS), None);
        assert_eq!(matching_step(secret, "12345", t), None);
        assert_eq!(matching_step(secret, "abcdef", t), None);
    }
}
