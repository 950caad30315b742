//! `[RTCServer] auth = token`: a client proves its userid with a token derived from the
//! node's secret, `hex(HMAC-SHA256(secret, userid))`.
//!
//! Stateless on purpose: nothing to store or expire inside the daemon, any service that
//! knows the secret can issue tokens, and replacing the secret file revokes them all.
//! HMAC comes from `ring`, which rustls already builds into the daemon.

use ring::hmac;

/// The token for `userid`.
pub fn issue(secret: &str, userid: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::sign(&key, userid.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks a presented token in constant time.
pub fn verify(secret: &str, userid: &str, token: &str) -> bool {
    let Some(tag) = decode_hex(token) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, userid.as_bytes(), &tag).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_bound_to_its_userid_and_secret() {
        let t = issue("secret-secret-secret", "alice");
        assert_eq!(t.len(), 64);
        assert!(verify("secret-secret-secret", "alice", &t));
        assert!(!verify("secret-secret-secret", "bob", &t));
        assert!(!verify("another-secret-xxxx", "alice", &t));
        assert!(!verify("secret-secret-secret", "alice", &t[..62]));
        assert!(!verify("secret-secret-secret", "alice", "zz"));
    }
}
