//! Flow records: `POST /v1/flows`, a node's batch of the records its dataplane sampled.

use hyper::Method;
use seam_model::flow::FlowBatch;

use crate::client::{encode, ControllerClient};
use crate::error::Result;

impl ControllerClient {
    /// `POST /v1/flows`: hands the controller a batch of this node's flow records (204; a node
    /// may post only records of its own node).
    pub async fn post_flows(&self, batch: &FlowBatch) -> Result<()> {
        self.call_unit(Method::POST, "/v1/flows".to_string(), Some(encode(batch)?))
            .await
    }
}
