//! Flow records: `POST /v1/flows` (an agent's batch of its own records) and `GET /v1/flows`
//! (NDJSON, oldest first, filtered; with `follow`, a live stream: [`FlowStream`]).

use hyper::Method;
use seam_model::flow::{FlowBatch, FlowFilter, FlowRecord, FlowsLagged, FLOWS_DROPPED_HEADER};

use crate::client::{encode, ControllerClient};
use crate::error::{ClientError, Result};
use crate::ndjson::Lines;

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
    lines: Lines,
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
            lines: Lines::new(
                body,
                self.watch_idle_timeout(),
                endpoint,
                format!("GET {path}"),
            ),
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
        self.lines.endpoint()
    }

    /// The next line; `None` once the stream has ended. After an error the stream is ended.
    pub async fn next(&mut self) -> Option<Result<FlowEvent, ClientError>> {
        let line = match self.lines.next().await? {
            Ok(line) => line,
            Err(e) => return Some(Err(e)),
        };
        if let Ok(notice) = serde_json::from_slice::<FlowsLagged>(&line) {
            return Some(Ok(FlowEvent::Lagged(notice.lagged)));
        }
        // Plain serde: `FlowRecord` ignores fields it does not know, so a newer controller's
        // records still decode (the tolerant decoder's bookkeeping costs per record).
        match serde_json::from_slice::<FlowRecord>(&line) {
            Ok(record) => Some(Ok(FlowEvent::Record(record))),
            Err(source) => Some(Err(self.lines.undecodable("FlowRecord", source))),
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
}
