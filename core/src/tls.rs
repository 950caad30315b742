//! TLS material: loading PEM files for the listeners, and `jsipd gencert`.
//!
//! rustls with the `ring` provider: pure Rust plus a small C/asm core that builds with
//! the system cc, so no OpenSSL headers or cmake are needed on the target board.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Builds an acceptor from a PEM certificate chain and private key. Errors name the
/// file and the config key, since that is what the operator has to fix.
pub fn acceptor(cert: &Path, key: &Path, section: &str) -> anyhow::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect())
        .map_err(|e| {
            anyhow::anyhow!(
                "[{section}] cert: cannot read certificate {}: {e}",
                cert.display()
            )
        })?;
    if certs.is_empty() {
        bail!("[{section}] cert: no PEM certificate in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        anyhow::anyhow!(
            "[{section}] key: cannot read private key {}: {e}",
            key.display()
        )
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol setup")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| format!("[{section}] cert/key: the key does not fit the certificate"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Writes a self-signed development certificate for localhost into `certs/`.
/// Refuses to overwrite unless `force`, so a real certificate is never lost by accident.
pub fn gencert(cert: &Path, key: &Path, force: bool) -> anyhow::Result<()> {
    for p in [cert, key] {
        if p.exists() && !force {
            bail!("{} exists; pass --force to replace it", p.display());
        }
    }
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(host) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && host != "localhost" {
            names.push(host.to_string());
        }
    }
    let pair = rcgen::generate_simple_self_signed(names).context("generating the certificate")?;
    if let Some(dir) = cert.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(cert, pair.cert.pem()).with_context(|| format!("writing {}", cert.display()))?;
    write_private(key, pair.signing_key.serialize_pem().as_bytes())?;
    Ok(())
}

/// Creates (or truncates) a file readable by its owner only; secrets never exist,
/// even for a moment, with wider permissions.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn generated_pair_loads_and_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        gencert(&c, &k, false).unwrap();
        assert_eq!(
            fs::metadata(&k).unwrap().permissions().mode() & 0o777,
            0o600
        );
        acceptor(&c, &k, "APIServer").unwrap();
        assert!(
            gencert(&c, &k, false).is_err(),
            "must not overwrite without --force"
        );
        gencert(&c, &k, true).unwrap();
    }

    #[test]
    fn missing_cert_names_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.crt");
        let err = acceptor(&missing, &missing, "RTCServer")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("[RTCServer] cert: cannot read certificate"),
            "{err}"
        );
        assert!(err.contains("nope.crt"), "{err}");
    }
}
