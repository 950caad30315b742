//! NanoKVM's login password: `encodeURIComponent(CryptoJS.AES.encrypt(pw, KEY))`, which
//! is exactly `openssl enc -aes-256-cbc -base64 -salt -md md5 -pass pass:KEY`: base64 of
//! `Salted__`, an 8-byte salt and the AES-256-CBC ciphertext (PKCS#7 padding), with key
//! and IV from OpenSSL's `EVP_BytesToKey` over MD5. The key is public (it is in
//! NanoKVM's web page), so this hides the password from nobody; it is only the format
//! scripts send.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
use base64::Engine;
use md5::{Digest, Md5};

/// The passphrase NanoKVM 2.x's page and its users' scripts encrypt with.
pub const NANOKVM_KEY: &str = "nanokvm-sipeed-2024";

/// Why a password could not be read; every case is "invalid username or password" to
/// the client, but the daemon log says which.
#[derive(Debug, PartialEq, Eq)]
pub enum Unreadable {
    NotBase64,
    NoSalt,
    BadCiphertext,
    NotUtf8,
}

/// The password from the (already URI-decoded) `password` field.
pub fn decrypt(text: &str, passphrase: &str) -> Result<String, Unreadable> {
    // `openssl enc -base64` wraps its output at 64 columns.
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| Unreadable::NotBase64)?;
    let rest = raw.strip_prefix(b"Salted__").ok_or(Unreadable::NoSalt)?;
    if rest.len() < 8 + 16 || (rest.len() - 8) % 16 != 0 {
        return Err(Unreadable::BadCiphertext);
    }
    let (salt, ciphertext) = rest.split_at(8);
    let (key, iv) = bytes_to_key(passphrase.as_bytes(), salt);
    let mut buf = ciphertext.to_vec();
    let plain = cbc::Decryptor::<aes::Aes256>::new(&key.into(), &iv.into())
        .decrypt_padded_mut::<Pkcs7>(&mut buf)
        .map_err(|_| Unreadable::BadCiphertext)?;
    String::from_utf8(plain.to_vec()).map_err(|_| Unreadable::NotUtf8)
}

/// OpenSSL's `EVP_BytesToKey` with MD5 and one round: 32 key bytes, then 16 IV bytes.
fn bytes_to_key(pass: &[u8], salt: &[u8]) -> ([u8; 32], [u8; 16]) {
    let mut out = Vec::with_capacity(48);
    let mut last: Vec<u8> = Vec::new();
    while out.len() < 48 {
        let mut h = Md5::new();
        h.update(&last);
        h.update(pass);
        h.update(salt);
        last = h.finalize().to_vec();
        out.extend_from_slice(&last);
    }
    let mut key = [0u8; 32];
    let mut iv = [0u8; 16];
    key.copy_from_slice(&out[..32]);
    iv.copy_from_slice(&out[32..48]);
    (key, iv)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with: printf %s 'hunter2 ünïcode' | openssl enc -aes-256-cbc -base64 -salt \
    //   -md md5 -pass pass:nanokvm-sipeed-2024   (OpenSSL 3.0.19)
    const FROM_OPENSSL: &str = "U2FsdGVkX1+Zqo40Qz5kQUMzCtvpYF5G0w6sUsQQBeJ0bB5TI/D/pVqyZPoTE3ua";

    #[test]
    fn what_openssl_encrypted_comes_out() {
        assert_eq!(
            decrypt(FROM_OPENSSL, NANOKVM_KEY).as_deref(),
            Ok("hunter2 ünïcode")
        );
    }

    #[test]
    fn a_wrong_key_or_a_broken_text_is_refused() {
        assert!(decrypt(FROM_OPENSSL, "another key").is_err());
        assert_eq!(
            decrypt("not base64!", NANOKVM_KEY),
            Err(Unreadable::NotBase64)
        );
        assert_eq!(
            decrypt("aGVsbG8gd29ybGQ=", NANOKVM_KEY),
            Err(Unreadable::NoSalt)
        );
        // Salted, but the ciphertext is cut short by a byte.
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(FROM_OPENSSL)
            .unwrap();
        raw.pop();
        let cut = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(decrypt(&cut, NANOKVM_KEY), Err(Unreadable::BadCiphertext));
    }

    #[test]
    fn openssls_line_wrapping_is_ignored() {
        let wrapped = format!("{}\n{}\n", &FROM_OPENSSL[..20], &FROM_OPENSSL[20..]);
        assert_eq!(
            decrypt(&wrapped, NANOKVM_KEY).as_deref(),
            Ok("hunter2 ünïcode")
        );
    }
}
