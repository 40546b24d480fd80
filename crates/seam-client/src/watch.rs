//! The client side of `GET /v1/watch`: newline-delimited JSON events with empty heartbeat lines.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use seam_model::WatchEvent;

use crate::error::ClientError;

/// A live stream of [`WatchEvent`]s, in revision order.
///
/// `next()` returns `None` when the controller ends the stream (for example when it shuts
/// down); resume with [`crate::ControllerClient::watch`] from the last revision seen + 1.
#[derive(Debug)]
pub struct WatchStream {
    body: Incoming,
    buf: Vec<u8>,
    idle_timeout: Duration,
    endpoint: String,
    request: String,
    done: bool,
    last_revision: Option<u64>,
}

impl WatchStream {
    pub(crate) fn new(
        body: Incoming,
        idle_timeout: Duration,
        endpoint: String,
        request: String,
    ) -> Self {
        WatchStream {
            body,
            buf: Vec::new(),
            idle_timeout,
            endpoint,
            request,
            done: false,
            last_revision: None,
        }
    }

    /// The revision of the last event returned, if any.
    pub fn last_revision(&self) -> Option<u64> {
        self.last_revision
    }

    /// The next event; `None` once the stream has ended. After an error the stream is ended.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, ClientError>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if let Some(event) = self.decode_line(&line) {
                    return Some(event);
                }
                continue;
            }
            if self.done {
                let rest = std::mem::take(&mut self.buf);
                return self.decode_line(&rest);
            }
            match tokio::time::timeout(self.idle_timeout, self.body.frame()).await {
                Err(_) => {
                    self.done = true;
                    self.buf.clear();
                    return Some(Err(ClientError::Timeout {
                        endpoint: self.endpoint.clone(),
                        request: self.request.clone(),
                        after: self.idle_timeout,
                    }));
                }
                Ok(None) => self.done = true,
                Ok(Some(Err(e))) => {
                    self.done = true;
                    self.buf.clear();
                    return Some(Err(ClientError::Transport {
                        endpoint: self.endpoint.clone(),
                        request: self.request.clone(),
                        source: Box::new(e),
                    }));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// Decodes one line; `None` for a heartbeat (blank line).
    fn decode_line(&mut self, line: &[u8]) -> Option<Result<WatchEvent, ClientError>> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        match crate::client::decode_tolerant::<WatchEvent>(line, "WatchEvent") {
            Ok(event) => {
                self.last_revision = Some(event.revision);
                Some(Ok(event))
            }
            Err(source) => {
                self.done = true;
                self.buf.clear();
                Some(Err(ClientError::Decode {
                    endpoint: self.endpoint.clone(),
                    request: self.request.clone(),
                    what: "WatchEvent".to_string(),
                    source,
                }))
            }
        }
    }
}
