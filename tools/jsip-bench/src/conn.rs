//! Opening client sockets: ws:// directly, wss:// through rustls with a CA file
//! (`--ca`, for example jsipd's self-signed `certs/jsipd.crt`).

use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as Frame, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// Either transport, so scenarios are written once.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Socket = WebSocketStream<Box<dyn Io>>;

/// Small buffers: JSIP frames are a few hundred bytes (jsipd's read buffer is smaller
/// still, 512 bytes; the echo server can take that with `--read-buffer`).
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Where and how to connect; cheap to clone into every task.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    host: String,
    port: u16,
}

impl Target {
    pub fn new(url: &str, ca: Option<&str>) -> Result<Target, String> {
        let (secure, rest) = if let Some(r) = url.strip_prefix("wss://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("ws://") {
            (false, r)
        } else {
            return Err(format!(
                "--url must start with ws:// or wss://, not '{url}'"
            ));
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_matches(|c| c == '[' || c == ']').to_string(),
                p.parse::<u16>()
                    .map_err(|_| format!("bad port in --url '{url}'"))?,
            ),
            _ => (authority.to_string(), if secure { 443 } else { 80 }),
        };
        let tls = if secure {
            let ca =
                ca.ok_or("wss:// needs --ca FILE (the server's certificate or its CA, PEM)")?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("--ca {ca}: {e}"))? {
                let cert = cert.map_err(|e| format!("--ca {ca}: {e}"))?;
                roots.add(cert).map_err(|e| format!("--ca {ca}: {e}"))?;
            }
            let config = ClientConfig::builder_with_provider(Arc::new(
                tokio_rustls::rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = ServerName::try_from(host.clone())
                .map_err(|e| format!("bad host in --url '{url}': {e}"))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Target {
            url: url.to_string(),
            tls,
            host,
            port,
        })
    }

    /// Opens a socket as `userid` (added to the query).
    pub async fn connect(&self, userid: &str) -> Result<Socket, String> {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        let full = format!("{}{sep}userid={userid}", self.url);
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect {full}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS to {full}: {e}"))?,
            ),
        };
        tokio_tungstenite::client_async_with_config(full.as_str(), io, Some(ws_config()))
            .await
            .map(|(s, _)| s)
            .map_err(|e| format!("WebSocket handshake {full}: {e}"))
    }
}

/// What a scenario makes of a read: the text of a text frame, `Ok(None)` for a frame to
/// skip (ping, pong, binary), `Err` when the socket closed or failed.
pub fn text(frame: Option<Result<Frame, WsError>>) -> Result<Option<Utf8Bytes>, ()> {
    match frame {
        Some(Ok(Frame::Text(t))) => Ok(Some(t)),
        Some(Ok(_)) => Ok(None),
        Some(Err(_)) | None => Err(()),
    }
}
