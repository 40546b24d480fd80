//! One HTTP/1 exchange per connection, over a Unix socket, TCP, or TLS 1.3 over TCP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::error::{BoxError, ClientError};

/// Where the controller listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A Unix stream socket.
    Unix(PathBuf),
    /// `host:port` over TCP.
    Tcp(String),
    /// `host:port` over TLS 1.3; `host` (an IP address or a DNS name, without brackets) is the
    /// name the controller's certificate must carry.
    Https {
        /// `host:port` as given (what to connect to, the `Host` header).
        authority: String,
        /// The server name to verify.
        host: String,
    },
}

impl Target {
    /// Parses `unix:/path`, `http://host:port[/]` or `https://host:port[/]`.
    pub(crate) fn parse(endpoint: &str) -> Option<Target> {
        if let Some(path) = endpoint.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return None;
            }
            return Some(Target::Unix(PathBuf::from(path)));
        }
        let (rest, tls) = match endpoint.strip_prefix("https://") {
            Some(rest) => (rest, true),
            None => (endpoint.strip_prefix("http://")?, false),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
            return None;
        }
        if !tls {
            return Some(Target::Tcp(authority.to_string()));
        }
        let (host, port) = authority.rsplit_once(':')?;
        // `[::1]:7443`: the brackets belong to the URL, not to the address.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() || port.parse::<u16>().is_err() || ServerName::try_from(host).is_err() {
            return None;
        }
        Some(Target::Https {
            authority: authority.to_string(),
            host: host.to_string(),
        })
    }

    /// The `Host` header value.
    pub(crate) fn host(&self) -> &str {
        match self {
            Target::Unix(_) => "localhost",
            Target::Tcp(authority) | Target::Https { authority, .. } => authority,
        }
    }

    /// Connects, sends `request` and returns the response head with its still-streaming body.
    /// An `https://` target needs `tls`.
    pub(crate) async fn send(
        &self,
        request: Request<Full<Bytes>>,
        tls: Option<&ClientTls>,
    ) -> Result<Response<Incoming>, BoxError> {
        match self {
            Target::Unix(path) => exchange(UnixStream::connect(path).await?, request).await,
            Target::Tcp(authority) => {
                let stream = TcpStream::connect(authority.as_str()).await?;
                stream.set_nodelay(true)?;
                exchange(stream, request).await
            }
            Target::Https { authority, host } => {
                let Some(tls) = tls else {
                    return Err(Box::new(NoTlsSettings));
                };
                let name = ServerName::try_from(host.clone())?;
                let stream = TcpStream::connect(authority.as_str()).await?;
                stream.set_nodelay(true)?;
                let connector = tokio_rustls::TlsConnector::from(tls.config());
                let stream = connector
                    .connect(name, stream)
                    .await
                    .map_err(explain_handshake)?;
                exchange(stream, request).await
            }
        }
    }
}

/// An `https://` endpoint used without [`ClientTls`].
#[derive(Debug, thiserror::Error)]
#[error("https:// endpoint without TLS settings: give the CA (and a client certificate and key)")]
struct NoTlsSettings;

/// A TLS handshake that failed, in plain words (an expired certificate or a wrong clock says so).
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake failed: {0}")]
struct HandshakeFailed(String);

fn explain_handshake(e: std::io::Error) -> BoxError {
    let text = match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => seam_pki::explain_certificate_error(tls),
        None => e.to_string(),
    };
    Box::new(HandshakeFailed(text))
}

/// How often at most the client certificate files are checked for a rotated certificate.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// TLS settings for `https://` controller endpoints: the CA that verifies the controller and,
/// optionally, the client certificate and key presented to it. The certificate files are read
/// again when they change (a renewed certificate is used for the next connection). Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    cert: Option<Arc<seam_pki::ReloadingCert>>,
    checked: Arc<Mutex<Instant>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the CA certificate in `ca` (PEM) and presents `cert` = (certificate, key) files,
    /// when given. TLS 1.3 only.
    pub fn from_files(ca: &Path, cert: Option<(&Path, &Path)>) -> crate::Result<ClientTls> {
        let settings = |source| ClientError::TlsSettings { source };
        let ca_pem = std::fs::read_to_string(ca).map_err(|e| {
            settings(seam_pki::PkiError::Io {
                path: ca.to_path_buf(),
                source: e,
            })
        })?;
        let cert = match cert {
            Some((cert, key)) => {
                Some(seam_pki::ReloadingCert::from_files(cert, key).map_err(settings)?)
            }
            None => None,
        };
        let config = seam_pki::client_config(&ca_pem, cert.clone()).map_err(settings)?;
        Ok(ClientTls {
            config,
            cert,
            checked: Arc::new(Mutex::new(Instant::now())),
        })
    }

    /// The rustls settings, after picking up a rotated certificate (checked at most once a
    /// second; a pair that does not load keeps the previous one, logged).
    fn config(&self) -> Arc<rustls::ClientConfig> {
        if let Some(cert) = &self.cert {
            let due = {
                let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
                let due = checked.elapsed() >= RELOAD_EVERY;
                if due {
                    *checked = Instant::now();
                }
                due
            };
            if due {
                match cert.reload() {
                    Ok(true) => tracing::info!("client certificate reloaded"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "client certificate not reloaded"),
                }
            }
        }
        self.config.clone()
    }
}

async fn exchange<S>(
    stream: S,
    request: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, BoxError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection task ends when the response body is fully read or dropped.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "controller connection closed with an error");
        }
    });
    Ok(sender.send_request(request).await?)
}

/// Reads a whole response body.
pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, BoxError> {
    Ok(body.collect().await?.to_bytes())
}

/// Percent-encodes one path segment: everything but RFC 3986 unreserved characters, so that
/// names holding `/`, `?`, `#` or `%` reach the controller intact as one segment.
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            Target::parse("unix:/run/seam/c.sock"),
            Some(Target::Unix(PathBuf::from("/run/seam/c.sock")))
        );
        assert_eq!(
            Target::parse("unix:///run/c.sock"),
            Some(Target::Unix(PathBuf::from("/run/c.sock")))
        );
        assert_eq!(
            Target::parse("http://127.0.0.1:7070/"),
            Some(Target::Tcp("127.0.0.1:7070".into()))
        );
        assert_eq!(
            Target::parse("https://10.0.0.1:7443/"),
            Some(Target::Https {
                authority: "10.0.0.1:7443".into(),
                host: "10.0.0.1".into()
            })
        );
        assert_eq!(
            Target::parse("https://[::1]:7443"),
            Some(Target::Https {
                authority: "[::1]:7443".into(),
                host: "::1".into()
            })
        );
        assert_eq!(
            Target::parse("https://controller.example:7443"),
            Some(Target::Https {
                authority: "controller.example:7443".into(),
                host: "controller.example".into()
            })
        );
        for bad in [
            "",
            "unix:",
            "https://a",
            "https://:1",
            "https://a:x",
            "https://a:1/x",
            "http://",
            "http://host",
            "tcp:1.2.3.4:5",
            "http://a:1/x",
        ] {
            assert_eq!(Target::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("default/web-0"), "default%2Fweb-0");
        assert_eq!(encode_segment("a b?#%"), "a%20b%3F%23%25");
        assert_eq!(encode_segment("seg/10.0.0.0-26"), "seg%2F10.0.0.0-26");
    }
}
