//! The one reader of the controller's newline-delimited JSON streams (`GET /v1/watch`,
//! `GET /v1/flows`): lines as they arrive, heartbeats (blank lines) skipped, a stream silent for
//! longer than the idle timeout failed, and a stream ended after any error.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::error::ClientError;

/// A response body read line by line.
#[derive(Debug)]
pub(crate) struct Lines {
    body: Incoming,
    buf: Vec<u8>,
    idle_timeout: Duration,
    endpoint: String,
    request: String,
    done: bool,
}

impl Lines {
    /// The lines of `body`, the answer of `endpoint` to `request` (both named in errors).
    pub(crate) fn new(
        body: Incoming,
        idle_timeout: Duration,
        endpoint: String,
        request: String,
    ) -> Lines {
        Lines {
            body,
            buf: Vec::new(),
            idle_timeout,
            endpoint,
            request,
            done: false,
        }
    }

    /// The endpoint that serves the stream.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The next line that is not blank (its newline included); `None` once the stream has
    /// ended. After an error the stream is ended.
    pub(crate) async fn next(&mut self) -> Option<Result<Vec<u8>, ClientError>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if !blank(&line) {
                    return Some(Ok(line));
                }
                continue;
            }
            if self.done {
                let rest = std::mem::take(&mut self.buf);
                return (!blank(&rest)).then_some(Ok(rest));
            }
            match tokio::time::timeout(self.idle_timeout, self.body.frame()).await {
                Err(_) => {
                    let after = self.idle_timeout;
                    return Some(Err(self.fail(|endpoint, request| ClientError::Timeout {
                        endpoint,
                        request,
                        after,
                    })));
                }
                Ok(None) => self.done = true,
                Ok(Some(Err(e))) => {
                    return Some(Err(self.fail(|endpoint, request| ClientError::Transport {
                        endpoint,
                        request,
                        source: Box::new(e),
                    })))
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// Ends the stream on a line that does not decode as `what`.
    pub(crate) fn undecodable(&mut self, what: &str, source: serde_json::Error) -> ClientError {
        self.fail(|endpoint, request| ClientError::Decode {
            endpoint,
            request,
            what: what.to_string(),
            source,
        })
    }

    /// Ends the stream with the error `make` builds from the endpoint and request.
    fn fail(&mut self, make: impl FnOnce(String, String) -> ClientError) -> ClientError {
        self.done = true;
        self.buf.clear();
        make(self.endpoint.clone(), self.request.clone())
    }
}

/// A heartbeat: nothing but whitespace.
fn blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}
