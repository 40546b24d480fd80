//! Per-segment SNAT through the gateway, with real traffic. The lab's gateway gw1 has the external
//! network (bare-metal server bm1, a registered external endpoint) and, through a router, an
//! "internet" host www1 that routes nothing to the pods. With `snat` off a pod cannot reach www1;
//! with it on, www1 sees the gateway's external address and answers, while the server and pods of
//! other segments still see the pod's own address. Turning it off removes the NAT table and the
//! egress rules again. A bad segment object is refused and changes nothing.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use seam_e2e::{controller, ip_json, LabGuard, TestLab};
use seam_lab::probe;

use crate::gateway::{add_bm1, ok, seam, strict_rp_filter, within};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const WWW_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// gw1's address on the external network (`eth1`), the masquerade address.
const GW1_EXTERNAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

/// What the TCP server at `ip:port` says to a connection from `netns` ("NAME PEER-ADDRESS").
fn said(netns: &Path, ip: Ipv4Addr, port: u16) -> Option<String> {
    probe::tcp(netns, ip, port, Duration::from_millis(800)).unwrap()
}

/// Whether `nft list table ip seam-nat` succeeds in `netns`.
fn has_nat_table(netns: &str) -> bool {
    use seam_nft::names::{NAT_FAMILY, NAT_TABLE};
    Command::new("ip")
        .args([
            "netns", "exec", netns, "nft", "list", "table", NAT_FAMILY, NAT_TABLE,
        ])
        .output()
        .unwrap()
        .status
        .success()
}

/// Sources of Seam's egress rules in `netns` (`ip -j rule`, priorities 0x5ea0 and 0x5ea1).
fn egress_rules(netns: &str) -> Vec<String> {
    let rules = ip_json(netns, &["rule", "show"]);
    rules
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| matches!(r["priority"].as_u64(), Some(0x5ea0 | 0x5ea1)))
        .map(|r| format!("{}/{} {}", r["src"], r["srclen"], r["table"]))
        .collect()
}

fn snat_of(lab: &seam_lab::Lab, segment: &str) -> bool {
    let segments = controller(lab, async |c| c.list_segments().await);
    segments
        .iter()
        .find(|s| s.name == segment)
        .map(|s| s.snat)
        .unwrap_or_else(|| panic!("no segment {segment}"))
}

#[test]
#[ignore = "privileged: netns"]
fn snat_segments_reach_the_internet_with_the_gateways_address_and_nothing_else_changes() {
    let mut g = LabGuard::up("e2e-snat", 2, &[]);
    g.lab.topology().add_gateway("gw1").unwrap();
    strict_rp_filter(&g.lab, &["n1", "n2", "gw1"]);
    let server = g
        .lab
        .workloads()
        .add_server("bm1", SERVER_IP, "gw1", &[seam_lab::gateway::DEFAULT_POOL])
        .unwrap();
    let www = g.lab.workloads().add_internet_host("www1", WWW_IP).unwrap();
    let web = g.lab.workloads().add_pod("n1", "web", "web-1").unwrap();
    let db = g.lab.workloads().add_pod("n2", "db", "db-1").unwrap();
    let lab = g.lab.name.clone();
    add_bm1(&lab, SERVER_IP, &[]);
    probe::serve_tcp_peer(&www.netns_path, 9000, "www1".into()).unwrap();
    probe::serve_tcp_peer(&server.netns_path, 9000, "bm1".into()).unwrap();
    probe::serve_tcp_peer(&db.netns_path, 9000, "db-1".into()).unwrap();
    probe::serve_tcp_peer(&web.netns_path, 80, "web-1".into()).unwrap();
    let own = |name: &str| format!("{name} {}", web.ip);
    let n1 = g.node("n1").netns;
    let gw1 = g.node("gw1").netns;

    // Off, the default: no NAT anywhere, and nothing routes the internet to the pods.
    assert!(!snat_of(&g.lab, "ns-web"));
    within(10, "web-1 reaches bm1 with its own address", || {
        said(&web.netns_path, SERVER_IP, 9000) == Some(own("bm1"))
    });
    assert_eq!(
        said(&web.netns_path, WWW_IP, 9000),
        None,
        "without snat the internet host is not reachable"
    );
    assert!(!has_nat_table(&n1) && !has_nat_table(&gw1));

    // On: the internet host sees gw1's external address and answers.
    let out = ok(&seam(&lab, &["segment", "snat", "ns-web", "on"]));
    assert!(out.contains("snat on"), "{out}");
    assert!(snat_of(&g.lab, "ns-web"));
    let listed = ok(&seam(&lab, &["get", "segments", "-o", "json"]));
    assert!(listed.contains("\"snat\": true"), "{listed}");
    within(10, "web-1 reaches www1 through gw1", || {
        said(&web.netns_path, WWW_IP, 9000) == Some(format!("www1 {GW1_EXTERNAL}"))
    });
    assert!(
        has_nat_table(&gw1) && has_nat_table(&n1),
        "every node holds the NAT table"
    );
    assert_eq!(egress_rules(&n1).len(), 2, "{:?}", egress_rules(&n1));
    assert!(
        egress_rules(&gw1).is_empty(),
        "the gateway is its own exit: {:?}",
        egress_rules(&gw1)
    );
    // Still no NAT towards what Seam knows: the external endpoint, a pod of another segment.
    // n1 routes db-1 over its underlay interface (routed segments), where the masquerade rule's
    // `oifname` matches: the destination's segment is in `not_masqueraded`.
    within(10, "n1 routes db-1 over the underlay", || {
        seam_e2e::ip_json(&n1, &["route", "get", &db.ip.to_string()])[0]["dev"] == "eth0"
    });
    assert_eq!(said(&web.netns_path, SERVER_IP, 9000), Some(own("bm1")));
    assert_eq!(said(&web.netns_path, db.ip, 9000), Some(own("db-1")));
    // Inbound is untouched: the server reaches the pod and the pod sees the server's address.
    assert_eq!(
        said(&server.netns_path, web.ip, 80),
        Some(format!("web-1 {SERVER_IP}"))
    );
    // The option is per segment: db's segment still has no way out.
    assert_eq!(said(&db.netns_path, WWW_IP, 9000), None);

    // Off again: the table and the rules go, and the internet host is unreachable again.
    ok(&seam(&lab, &["segment", "snat", "ns-web", "off"]));
    within(10, "the NAT table and the egress rules are removed", || {
        !has_nat_table(&n1)
            && !has_nat_table(&gw1)
            && egress_rules(&n1).is_empty()
            && said(&web.netns_path, WWW_IP, 9000).is_none()
    });
    assert_eq!(said(&web.netns_path, SERVER_IP, 9000), Some(own("bm1")));
}

#[test]
#[ignore = "privileged: netns"]
fn a_bad_segment_object_is_refused_and_nothing_changes() {
    let mut g = LabGuard::up("e2e-snatbad", 1, &[]);
    g.lab.workloads().add_pod("n1", "web", "web-1").unwrap();
    let lab = g.lab.name.clone();
    let before = controller(&g.lab, async |c| c.get_segment("ns-web").await);
    let good = serde_json::to_value(&before).unwrap();
    let mut cases = Vec::new();
    let mut typo = good.clone();
    typo["snta"] = true.into();
    cases.push((typo, "unknown field `snta`"));
    let mut wrong = good.clone();
    wrong["snat"] = "yes".into();
    cases.push((wrong, "snat"));
    for (object, want) in &cases {
        // Through the CLI, as YAML...
        let file = g.lab.dir.join("segment.yaml");
        std::fs::write(&file, as_yaml(object)).unwrap();
        let out = seam(&lab, &["segment", "put", "-f", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{object} was accepted");
        assert!(
            err.contains(want) && err.contains("nothing changed"),
            "{err}"
        );
        // ...and straight to the API, as JSON.
        let client = g.lab.client().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let raw = rt
            .block_on(client.request_raw(
                "PUT",
                "/v1/segments/ns-web",
                object.to_string().into_bytes(),
            ))
            .unwrap();
        let body = String::from_utf8_lossy(&raw.body);
        assert_eq!(raw.status, 400, "{body}");
        assert!(body.contains(want), "{body}");
    }
    let after = controller(&g.lab, async |c| c.get_segment("ns-web").await);
    assert_eq!(before, after, "a refused segment changed nothing");
    assert!(!after.snat);
}

/// A flat JSON object as YAML `key: value` lines (JSON scalars are YAML scalars).
fn as_yaml(object: &serde_json::Value) -> String {
    object
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect()
}
