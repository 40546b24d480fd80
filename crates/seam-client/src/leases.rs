//! Node leases: a gateway's liveness record (`PUT /v1/nodeleases/{node}`).
//!
//! The controller binds the record to a store lease of [`seam_model::NODE_LEASE_TTL_SECONDS`]
//! that each PUT renews; the record disappears when the node stops renewing, and every agent sees
//! the delete. LoadBalancer addresses move to the gateways that hold one.

use hyper::Method;
use seam_model::ObjectKind;

use crate::client::{object_path, ControllerClient};
use crate::error::Result;

impl ControllerClient {
    /// `PUT /v1/nodeleases/{node}` with no body (the node itself, with its certificate): creates
    /// or renews `node`'s lease. Call it every [`seam_model::NODE_LEASE_RENEW_SECONDS`].
    pub async fn renew_node_lease(&self, node: &str) -> Result<()> {
        self.call_unit(Method::PUT, lease_path(node), None).await
    }
}

/// The route of `node`'s lease.
fn lease_path(node: &str) -> String {
    object_path(ObjectKind::NodeLease, node)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_lease_is_renewed_at_its_node_s_path() {
        assert_eq!(lease_path("gw1"), "/v1/nodeleases/gw1");
        // A name is one path segment, whatever it holds.
        assert_eq!(lease_path("a/b"), "/v1/nodeleases/a%2Fb");
    }

    #[tokio::test]
    async fn renewing_sends_a_put_without_a_body_and_reports_a_refusal() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("c.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let server = tokio::spawn(async move {
            let mut heads = Vec::new();
            let refusal = r#"{"reason":"Forbidden","message":"not your lease"}"#;
            for answer in [
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}".to_string(),
                format!("HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{refusal}", refusal.len()),
            ] {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).await.unwrap();
                    assert!(n > 0);
                    head.extend_from_slice(&buf[..n]);
                }
                heads.push(String::from_utf8(head).unwrap());
                stream.write_all(answer.as_bytes()).await.unwrap();
                stream.shutdown().await.unwrap();
            }
            heads
        });
        let client = ControllerClient::new(&format!("unix:{}", socket.display())).unwrap();
        client.renew_node_lease("gw1").await.unwrap();
        let refused = client.renew_node_lease("gw2").await.unwrap_err();
        assert_eq!(refused.status(), Some(403), "{refused}");
        let heads = server.await.unwrap();
        assert!(
            heads[0].starts_with("PUT /v1/nodeleases/gw1 HTTP/1.1\r\n"),
            "{}",
            heads[0]
        );
        let lower = heads[0].to_ascii_lowercase();
        assert!(!lower.contains("content-type"), "{lower}");
        assert!(
            heads[1].starts_with("PUT /v1/nodeleases/gw2 "),
            "{}",
            heads[1]
        );
    }
}
