//! `GET /v1/flows` on the agent's API server: the ring as NDJSON, one `FlowRecord` per line,
//! oldest first (`?since=<ms since the epoch>&limit=<n>`: the newest `n` at or after `since`).
//! The lead mounts [`router`] on the agent API server, behind its authorization.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::ring::RING_CAPACITY;
use super::FlowRecorder;

/// The query of `GET /v1/flows`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowQuery {
    /// Only records at or after this time (milliseconds since the epoch).
    since: Option<u64>,
    /// At most this many (the newest).
    limit: Option<usize>,
}

/// The route `GET /v1/flows` over `recorder`'s ring.
pub fn router(recorder: Arc<FlowRecorder>) -> Router {
    Router::new()
        .route("/v1/flows", get(list))
        .with_state(recorder)
}

async fn list(State(recorder): State<Arc<FlowRecorder>>, Query(q): Query<FlowQuery>) -> Response {
    let flows = recorder.recent(q.since.unwrap_or(0), q.limit.unwrap_or(RING_CAPACITY));
    let mut body = Vec::with_capacity(flows.len() * 256);
    for f in &flows {
        if serde_json::to_writer(&mut body, &f.record(recorder.node())).is_ok() {
            body.push(b'\n');
        }
    }
    ([(CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}
