//! The agent socket refuses what it cannot understand, with an error reply, and keeps serving.

use seam_model::agent_rpc::{AgentReply, PROTOCOL_VERSION};
use serde_json::json;

use crate::harness::{add, call, pod, raw_call, status, Cluster};

fn code_of(reply: &str) -> u32 {
    match serde_json::from_str::<AgentReply>(reply) {
        Ok(AgentReply::Error(e)) => e.code,
        other => panic!("expected an error reply, got {other:?} from {reply:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_error_replies_and_the_agent_keeps_serving() {
    let c = Cluster::start().await;
    let good_status =
        json!({"protocol": PROTOCOL_VERSION, "op": {"command": "status", "network": "seam"}});

    let mut newer = good_status.clone();
    newer["protocol"] = json!(PROTOCOL_VERSION + 1);
    let reply = raw_call(&c.sock, format!("{newer}\n").as_bytes()).await;
    assert_eq!(code_of(&reply), 1, "{reply}");
    assert!(reply.contains("upgrade"), "{reply}");

    let malformed: &[&[u8]] = &[
        b"{not json\n",
        b"\n",
        b"",
        b"[1,2,3]\n",
        br#"{"protocol":1,"op":{"command":"explode"}}"#,
        br#"{"protocol":1,"op":{"command":"status","network":"seam"},"extra":true}"#,
        br#"{"protocol":1,"op":{"command":"add","network":"seam"}}"#,
        b"\xff\xfe\x00garbage\n",
    ];
    for bytes in malformed {
        let reply = raw_call(&c.sock, bytes).await;
        assert_eq!(
            code_of(&reply),
            6,
            "{:?} -> {reply}",
            String::from_utf8_lossy(bytes)
        );
    }
    // A request without its final newline is still one request.
    let reply = raw_call(&c.sock, good_status.to_string().as_bytes()).await;
    assert_eq!(
        serde_json::from_str::<AgentReply>(&reply).unwrap(),
        AgentReply::Done
    );

    // A client that connects and goes away without a word does not hurt either.
    drop(tokio::net::UnixStream::connect(&c.sock).await.unwrap());

    assert_eq!(call(&c.sock, status()).await, AgentReply::Done);
    add(&c.sock, &pod("web", "after-garbage")).await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_socket_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::start().await;
    let mode = std::fs::metadata(&c.sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}
