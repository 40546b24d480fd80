//! One HTTP/1 exchange per connection, over a Unix socket or TCP.

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};

use crate::error::BoxError;

/// Where the controller listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A Unix stream socket.
    Unix(PathBuf),
    /// `host:port` over TCP.
    Tcp(String),
}

impl Target {
    /// Parses `unix:/path` or `http://host:port[/]`.
    pub(crate) fn parse(endpoint: &str) -> Option<Target> {
        if let Some(path) = endpoint.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return None;
            }
            return Some(Target::Unix(PathBuf::from(path)));
        }
        let rest = endpoint.strip_prefix("http://")?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
            return None;
        }
        Some(Target::Tcp(authority.to_string()))
    }

    /// The `Host` header value.
    pub(crate) fn host(&self) -> &str {
        match self {
            Target::Unix(_) => "localhost",
            Target::Tcp(authority) => authority,
        }
    }

    /// Connects, sends `request` and returns the response head with its still-streaming body.
    pub(crate) async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, BoxError> {
        match self {
            Target::Unix(path) => exchange(UnixStream::connect(path).await?, request).await,
            Target::Tcp(authority) => {
                let stream = TcpStream::connect(authority.as_str()).await?;
                stream.set_nodelay(true)?;
                exchange(stream, request).await
            }
        }
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
        for bad in [
            "",
            "unix:",
            "https://a:1",
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
