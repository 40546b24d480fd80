//! What `GET /v1/flows` sends besides records: the notice a follower gets when it fell behind,
//! and the header that carries what the agents dropped.

use serde::{Deserialize, Serialize};

/// The response header of `GET /v1/flows` with the records the agents reported dropped on the
/// way to this controller since it started (the sum of [`super::FlowBatch::dropped`] over
/// every node and batch).
pub const FLOWS_DROPPED_HEADER: &str = "seam-flows-dropped";

/// A line of a followed `GET /v1/flows` stream that is not a record: the follower read more
/// slowly than records arrived, and this many records it would have been sent were skipped
/// (the stream goes on with the newest). Ingestion never waits for a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowsLagged {
    /// Records skipped for this follower.
    pub lagged: u64,
}
