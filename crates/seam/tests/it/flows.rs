//! `seam flows` and the recent flows of `seam explain`, against an in-process controller that
//! was handed records as an agent hands them.

use std::net::Ipv4Addr;

use seam_model::flow::{
    FlowBatch, FlowDirection, FlowPeer, FlowReason, FlowRecord, FlowVerdict, PeerKind,
};
use seam_model::{Node, NodeRole};

use crate::api::{endpoint, segment, Controller, SEED};

fn peer(ip: [u8; 4], ns: &str, name: &str, port: u16) -> FlowPeer {
    FlowPeer {
        ip: Ipv4Addr::from(ip),
        port: Some(port),
        kind: PeerKind::Pod,
        namespace: Some(ns.to_string()),
        name: Some(name.to_string()),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// green/db-1 → blue/web-1 on `port`: allowed by the contract, or denied by its isolation.
fn record(port: u16, allowed: bool, age_ms: u64) -> FlowRecord {
    FlowRecord {
        time_ms: now_ms() - age_ms,
        node: "n1".to_string(),
        direction: FlowDirection::Ingress,
        protocol: "TCP".to_string(),
        src: peer([10, 2, 0, 5], "green", "db-1", 40000),
        dst: peer([10, 1, 0, 5], "blue", "web-1", port),
        verdict: if allowed {
            FlowVerdict::Allowed
        } else {
            FlowVerdict::Denied
        },
        reason: if allowed {
            FlowReason::Rule
        } else {
            FlowReason::Isolation
        },
        tier: Some("namespace".to_string()),
        policy: Some("Contract contract-web".to_string()),
        rule: allowed.then(|| "contract/contract-web/web/0".to_string()),
        service: None,
        suppressed: 0,
    }
}

fn cluster() -> Controller {
    let ctl = Controller::start();
    ctl.block_on(|c| async move {
        c.put_node(&Node {
            name: "n1".into(),
            underlay_ip: [198, 18, 0, 1].into(),
            role: NodeRole::Worker,
            transit_encap: Default::default(),
            underlay_prefix_len: None,
            underlay_mac: None,
            segment_encap: Default::default(),
        })
        .await
        .unwrap();
        c.put_segment(&segment("blue", 1, 100)).await.unwrap();
        c.put_segment(&segment("green", 2, 101)).await.unwrap();
        c.claim_block("blue", "n1").await.unwrap();
        c.claim_block("green", "n1").await.unwrap();
        c.put_endpoint(&endpoint("blue", "web-1", 1)).await.unwrap();
        c.put_endpoint(&endpoint("green", "db-1", 2)).await.unwrap();
        // Root on the controller's socket may post as any node; agents post only their own.
        c.post_flows(&FlowBatch {
            records: vec![record(443, true, 60_000), record(8080, false, 1_000)],
            dropped: 2,
        })
        .await
        .unwrap();
    });
    let (ok, stdout, stderr) = ctl.seam(&["apply", "-f", "-"], SEED);
    assert!(ok, "{stdout}{stderr}");
    ctl
}

#[test]
fn flows_are_listed_filtered_and_bad_filters_refused() {
    let ctl = cluster();
    let (ok, table, stderr) = ctl.seam(&["flows"], "");
    assert!(ok, "{table}{stderr}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("TIME (UTC)"), "{table}");
    assert!(lines[0].contains("POLICY/RULE"), "{table}");
    // Oldest first: the allowed connection a minute ago, then the drop.
    assert!(
        lines[1].contains("green/db-1")
            && lines[1].contains("blue/web-1")
            && lines[1].contains("TCP/443")
            && lines[1].contains("allowed")
            && lines[1].contains("Contract contract-web [contract/contract-web/web/0]"),
        "{table}"
    );
    assert!(
        lines[2].contains("denied") && lines[2].contains("TCP/8080"),
        "{table}"
    );
    assert!(
        stderr.contains("the agents dropped 2 flow records"),
        "{stderr}"
    );

    let json = ctl.ok(&[
        "flows",
        "--verdict",
        "denied",
        "--since",
        "30s",
        "-o",
        "json",
    ]);
    let records: Vec<FlowRecord> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{json}");
    assert_eq!(records[0].dst.port, Some(8080));
    let by_policy = ctl.ok(&[
        "flows",
        "--policy",
        "Contract contract-web",
        "--from",
        "green/",
    ]);
    assert_eq!(by_policy.lines().count(), 3, "{by_policy}");

    // Bad filters: refused with the parameter named, an unknown policy by the controller.
    let (ok, _, stderr) = ctl.seam(&["flows", "--verdict", "dropped", "--since", "5x"], "");
    assert!(!ok);
    assert!(
        stderr.contains("verdict: \"dropped\" is not a verdict")
            && stderr.contains("since: \"5x\" is not a duration"),
        "{stderr}"
    );
    let (ok, _, stderr) = ctl.seam(&["flows", "--policy", "contract-wbe"], "");
    assert!(!ok);
    assert!(
        stderr.contains("404")
            && stderr.contains("no stored policy or contract is \"contract-wbe\""),
        "{stderr}"
    );
}

#[test]
fn explain_lists_the_pairs_recent_flows() {
    let ctl = cluster();
    let text = ctl.ok(&["explain", "green/db-1", "blue/web-1", "443/tcp"]);
    assert!(
        text.contains("recent flows (newest 2 of green/db-1 -> blue/web-1):"),
        "{text}"
    );
    assert!(text.contains("TCP/8080  denied"), "{text}");
    let json = ctl.ok(&[
        "explain",
        "green/db-1",
        "blue/web-1",
        "443/tcp",
        "-o",
        "json",
    ]);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let recent = value["recentFlows"].as_array().unwrap();
    assert_eq!(recent.len(), 2, "{json}");
    assert_eq!(recent[1]["verdict"], "denied");
    // Another pair has none.
    let none = ctl.ok(&["explain", "blue/web-1", "green/db-1", "80/tcp"]);
    assert!(
        none.contains("recent flows: none recorded from blue/web-1 to green/db-1"),
        "{none}"
    );
}
