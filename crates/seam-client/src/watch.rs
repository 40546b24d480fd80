//! The client side of `GET /v1/watch`: newline-delimited JSON events with empty heartbeat lines.

use std::time::Duration;

use hyper::body::Incoming;
use seam_model::WatchEvent;

use crate::error::ClientError;
use crate::ndjson::Lines;

/// A live stream of [`WatchEvent`]s, in revision order.
///
/// `next()` returns `None` when the controller ends the stream (for example when it shuts
/// down); resume with [`crate::ControllerClient::watch`] from the last revision seen + 1.
#[derive(Debug)]
pub struct WatchStream {
    lines: Lines,
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
            lines: Lines::new(body, idle_timeout, endpoint, request),
            last_revision: None,
        }
    }

    /// The revision of the last event returned, if any.
    pub fn last_revision(&self) -> Option<u64> {
        self.last_revision
    }

    /// The next event; `None` once the stream has ended. After an error the stream is ended.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, ClientError>> {
        let line = match self.lines.next().await? {
            Ok(line) => line,
            Err(e) => return Some(Err(e)),
        };
        match crate::client::decode_tolerant::<WatchEvent>(&line, "WatchEvent") {
            Ok(event) => {
                self.last_revision = Some(event.revision);
                Some(Ok(event))
            }
            Err(source) => Some(Err(self.lines.undecodable("WatchEvent", source))),
        }
    }
}
