//! Policy realization: a node's report of what it enforces (`PUT /v1/realization/{node}`) and
//! the count per policy object (`GET /v1/realization`); see [`seam_model::realization`].

use hyper::Method;
use seam_model::{NodeRealization, RealizationStatus};

use crate::client::{encode, ControllerClient};
use crate::error::Result;
use crate::transport::encode_segment;

impl ControllerClient {
    /// `PUT /v1/realization/{node}` (the node itself): what `report.node` enforces now.
    pub async fn put_realization(&self, report: &NodeRealization) -> Result<()> {
        self.call_unit(
            Method::PUT,
            report_path(&report.node),
            Some(encode(report)?),
        )
        .await
    }

    /// `GET /v1/realization`: per policy object and tenant, how many of the nodes that must
    /// enforce its current generation do, and which do not.
    pub async fn realization(&self) -> Result<RealizationStatus> {
        self.call(
            Method::GET,
            "/v1/realization".to_string(),
            None,
            "RealizationStatus",
        )
        .await
    }
}

/// The route of `node`'s report (the name is one path segment, whatever it holds).
fn report_path(node: &str) -> String {
    format!("/v1/realization/{}", encode_segment(node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_goes_to_its_node_s_path() {
        assert_eq!(report_path("n1"), "/v1/realization/n1");
        assert_eq!(report_path("a/b"), "/v1/realization/a%2Fb");
    }
}
