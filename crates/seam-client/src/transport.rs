//! One HTTP/1 exchange per connection, over a Unix socket, TCP, or TLS 1.3 over TCP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
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
                exchange(self.tls_stream(authority, host, tls).await?, request).await
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
    server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("cert", &self.cert)
            .field("server_name", &self.server_name)
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
            server_name: None,
        })
    }

    /// Verifies the controller's certificate against `name` instead of the endpoint's host: for
    /// an endpoint reached by an address its certificate does not name (a Kubernetes Service's
    /// ClusterIP, with the certificate naming the Service's DNS name). A name that is not a valid
    /// DNS name or IP address is refused.
    pub fn with_server_name(mut self, name: &str) -> crate::Result<ClientTls> {
        if ServerName::try_from(name).is_err() {
            return Err(ClientError::TlsSettings {
                source: seam_pki::PkiError::Tls(format!(
                    "invalid server name {name:?}: expected a DNS name or an IP address"
                )),
            });
        }
        self.server_name = Some(name.to_string());
        Ok(self)
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
    let mut sender = handshake(stream).await?;
    Ok(sender.send_request(request).await?)
}

/// The HTTP/1 handshake on `stream`; the connection task ends when every sender is gone and the
/// last response body is read or dropped.
async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, BoxError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "controller connection closed with an error");
        }
    });
    Ok(sender)
}

/// How long an idle connection is kept for the next request: well under the controller's 10 s
/// header-read timeout, which also closes idle connections.
const IDLE_FOR: Duration = Duration::from_secs(4);
/// How long one connection serves requests at most: a renewed client certificate (or the
/// controller's rotated one) shows on the next connection.
const MAX_AGE: Duration = Duration::from_secs(60);
/// Idle connections kept per endpoint.
const MAX_IDLE: usize = 4;
/// How long a kept connection may take to be ready for the next request (its last response
/// was read to the end, so at once unless it is closing).
const READY_WITHIN: Duration = Duration::from_millis(20);

/// Connections to one TCP endpoint kept open between requests. Each new connection to an
/// `https://` controller costs a full TLS 1.3 handshake (session resumption is off, so that
/// every connection shows the current certificate): without reuse, every write of an agent
/// (and so every CNI ADD, which waits for the controller) paid one. Watch streams never use it.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    idle: Mutex<Vec<Kept>>,
}

/// A connection whose last response was read to the end.
#[derive(Debug)]
pub(crate) struct Kept {
    sender: SendRequest<Full<Bytes>>,
    opened: Instant,
    idle_since: Instant,
}

impl Pool {
    /// A kept connection that is young enough and ready for a request.
    async fn take(&self) -> Option<Kept> {
        loop {
            let mut kept = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.pop()?
            };
            if kept.idle_since.elapsed() >= IDLE_FOR
                || kept.opened.elapsed() >= MAX_AGE
                || kept.sender.is_closed()
            {
                continue;
            }
            if let Ok(Ok(())) = tokio::time::timeout(READY_WITHIN, kept.sender.ready()).await {
                return Some(kept);
            }
        }
    }

    /// Closes every kept connection.
    pub(crate) fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Keeps `kept` for the next request, after its response was read to the end.
    pub(crate) fn give_back(&self, mut kept: Kept) {
        if kept.opened.elapsed() >= MAX_AGE || kept.sender.is_closed() {
            return;
        }
        kept.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(kept);
        }
    }
}

impl Target {
    /// Like [`Target::send`], on a connection kept in `pool` when one is ready (TCP and TLS
    /// targets). Returns the connection to give back once the response body was read to the
    /// end; a request the kept connection could not take (it had closed) goes out on a new one.
    pub(crate) async fn send_reusing(
        &self,
        request: Request<Full<Bytes>>,
        tls: Option<&ClientTls>,
        pool: &Pool,
    ) -> Result<(Response<Incoming>, Option<Kept>), BoxError> {
        if let Target::Unix(_) = self {
            return Ok((self.send(request, tls).await?, None));
        }
        let mut request = request;
        if let Some(mut kept) = pool.take().await {
            match kept.sender.try_send_request(request).await {
                Ok(response) => return Ok((response, Some(kept))),
                Err(mut e) => match e.take_message() {
                    // Never written to the connection: safe to send again, whatever the method.
                    Some(unsent) => request = unsent,
                    None => return Err(Box::new(e.into_error())),
                },
            }
        }
        let mut sender = match self {
            Target::Tcp(authority) => {
                let stream = TcpStream::connect(authority.as_str()).await?;
                stream.set_nodelay(true)?;
                handshake(stream).await?
            }
            Target::Https { authority, host } => {
                handshake(self.tls_stream(authority, host, tls).await?).await?
            }
            Target::Unix(path) => handshake(UnixStream::connect(path).await?).await?,
        };
        let opened = Instant::now();
        let response = sender.send_request(request).await?;
        Ok((
            response,
            Some(Kept {
                sender,
                opened,
                idle_since: opened,
            }),
        ))
    }

    async fn tls_stream(
        &self,
        authority: &str,
        host: &str,
        tls: Option<&ClientTls>,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, BoxError> {
        let Some(tls) = tls else {
            return Err(Box::new(NoTlsSettings));
        };
        // A Service's ClusterIP is not in the certificate: the name it carries is given.
        let name =
            ServerName::try_from(tls.server_name.clone().unwrap_or_else(|| host.to_string()))?;
        let stream = TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        let connector = tokio_rustls::TlsConnector::from(tls.config());
        connector
            .connect(name, stream)
            .await
            .map_err(explain_handshake)
    }
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
