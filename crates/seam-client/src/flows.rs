//! Flow records: `POST /v1/flows` (an agent's batch of its own records) and `GET /v1/flows`
//! (NDJSON, oldest first, filtered; with `follow`, a live stream: [`FlowStream`]).

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Method;
use seam_model::flow::{FlowBatch, FlowFilter, FlowRecord, FlowsLagged, FLOWS_DROPPED_HEADER};

use crate::client::{encode, ControllerClient};
use crate::error::{ClientError, Result};

/// One line of a flow stream.
// Events are handed over one at a time and mostly are records: boxing them would cost an
// allocation per record for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowEvent {
    /// A record.
    Record(FlowRecord),
    /// The follower fell behind and the controller skipped this many records for it (the stream
    /// goes on with the newest).
    Lagged(u64),
}

/// The records of `GET /v1/flows`, read as they come.
///
/// `next()` returns `None` at the end of the records held (without `follow`) or when the
/// controller ends a followed stream (shutdown). A followed stream that stays silent (not even
/// a heartbeat) for the client's watch idle timeout fails with [`ClientError::Timeout`].
#[derive(Debug)]
pub struct FlowStream {
    body: Incoming,
    buf: Vec<u8>,
    idle_timeout: Duration,
    endpoint: String,
    request: String,
    done: bool,
    agent_dropped: u64,
}

impl ControllerClient {
    /// `POST /v1/flows`: hands the controller a batch of this node's flow records (a node may
    /// post only its own: a record of another node refuses the whole batch with 403). A
    /// standby replica answers 503 and the batch goes to the next replica, so batches reach
    /// the leader.
    pub async fn post_flows(&self, batch: &FlowBatch) -> Result<()> {
        self.call_unit(Method::POST, "/v1/flows".to_string(), Some(encode(batch)?))
            .await
    }

    /// `GET /v1/flows?…`: the records the controller holds that pass `filter` (the newest
    /// `filter.limit`, oldest first), then, with `filter.follow`, every new matching record as
    /// it arrives. A malformed filter or a policy the controller does not know is an
    /// [`ClientError::Api`] error with the controller's message.
    pub async fn flows(&self, filter: &FlowFilter) -> Result<FlowStream> {
        let query = filter.to_query();
        let path = if query.is_empty() {
            "/v1/flows".to_string()
        } else {
            format!("/v1/flows?{query}")
        };
        let (endpoint, headers, body) = self.open_stream(&path).await?;
        let agent_dropped = headers
            .get(FLOWS_DROPPED_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(FlowStream {
            body,
            buf: Vec::new(),
            idle_timeout: self.watch_idle_timeout(),
            endpoint,
            request: format!("GET {path}"),
            done: false,
            agent_dropped,
        })
    }
}

impl FlowStream {
    /// Records the agents reported they dropped on the way to this controller since it started
    /// (their queues are bounded): when not 0, the records here are not all there were.
    pub fn agent_dropped(&self) -> u64 {
        self.agent_dropped
    }

    /// The endpoint that serves the stream.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The next line; `None` once the stream has ended. After an error the stream is ended.
    pub async fn next(&mut self) -> Option<Result<FlowEvent, ClientError>> {
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

    /// Every record left, until the stream ends (for a stream without `follow`).
    pub async fn records(mut self) -> Result<Vec<FlowRecord>> {
        let mut out = Vec::new();
        while let Some(event) = self.next().await {
            if let FlowEvent::Record(r) = event? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Ends the stream with the error `make` builds from the endpoint and request.
    fn fail(&mut self, make: impl FnOnce(String, String) -> ClientError) -> ClientError {
        self.done = true;
        self.buf.clear();
        make(self.endpoint.clone(), self.request.clone())
    }

    /// Decodes one line; `None` for a heartbeat (blank line).
    fn decode_line(&mut self, line: &[u8]) -> Option<Result<FlowEvent, ClientError>> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        if let Ok(notice) = serde_json::from_slice::<FlowsLagged>(line) {
            return Some(Ok(FlowEvent::Lagged(notice.lagged)));
        }
        // Plain serde: `FlowRecord` ignores fields it does not know, so a newer controller's
        // records still decode (the tolerant decoder's bookkeeping costs per record).
        match serde_json::from_slice::<FlowRecord>(line) {
            Ok(record) => Some(Ok(FlowEvent::Record(record))),
            Err(source) => Some(Err(self.fail(|endpoint, request| ClientError::Decode {
                endpoint,
                request,
                what: "FlowRecord".to_string(),
                source,
            }))),
        }
    }
}
