use std::net::Ipv4Addr;

use seam_model::flow::{
    FlowDirection, FlowFilter, FlowPeer, FlowReason, FlowRecord, FlowVerdict, PeerKind,
};

use super::*;

fn record(node: &str, time_ms: u64) -> FlowRecord {
    let peer = |ip: [u8; 4]| FlowPeer {
        ip: Ipv4Addr::from(ip),
        port: Some(80),
        kind: PeerKind::Pod,
        namespace: Some("web".to_string()),
        name: Some("a".to_string()),
    };
    FlowRecord {
        time_ms,
        node: node.to_string(),
        direction: FlowDirection::Egress,
        protocol: "TCP".to_string(),
        src: peer([10, 0, 0, 1]),
        dst: peer([10, 0, 0, 2]),
        verdict: FlowVerdict::Allowed,
        reason: FlowReason::DefaultAllow,
        tier: None,
        policy: None,
        rule: None,
        service: None,
        suppressed: 0,
    }
}

fn limits(per_node: usize, total: usize) -> FlowLimits {
    FlowLimits {
        per_node,
        total,
        follow_buffer: 16,
    }
}

fn held_of(rings: &Rings, node: &str) -> Vec<u64> {
    let filter = FlowFilter {
        node: Some(node.to_string()),
        ..FlowFilter::default()
    };
    rings
        .select(&filter, 0, usize::MAX)
        .iter()
        .map(|h| h.record.time_ms)
        .collect()
}

#[test]
fn a_full_ring_drops_its_oldest() {
    let mut rings = Rings::new(limits(3, 100));
    let (_, pushed) = rings.push((1..=5).map(|t| record("n1", t)).collect());
    assert_eq!(
        pushed,
        Pushed {
            received: 5,
            evicted: 2
        }
    );
    assert_eq!(held_of(&rings, "n1"), [3, 4, 5]);
    assert_eq!(rings.held(), 3);
}

#[test]
fn a_noisy_node_cannot_push_a_quiet_nodes_records_out() {
    let mut rings = Rings::new(limits(100, 10));
    rings.push((1..=2).map(|t| record("quiet", t)).collect());
    rings.push((1..=50).map(|t| record("noisy", t)).collect());
    assert_eq!(rings.held(), 10);
    assert_eq!(held_of(&rings, "quiet"), [1, 2]);
    assert_eq!(held_of(&rings, "noisy"), (43..=50).collect::<Vec<_>>());
    // A quiet node below its share still gets its record in: the noisy one gives way.
    rings.push(vec![record("quiet", 3)]);
    assert_eq!(held_of(&rings, "quiet"), [1, 2, 3]);
    assert_eq!(held_of(&rings, "noisy"), (44..=50).collect::<Vec<_>>());
    assert_eq!(rings.held(), 10);
}

#[test]
fn selection_is_the_newest_matching_oldest_first_across_nodes() {
    let mut rings = Rings::new(limits(100, 100));
    rings.push(vec![record("n1", 10), record("n1", 30)]);
    rings.push(vec![record("n2", 20), record("n2", 40)]);
    let all = FlowFilter::default();
    let times = |limit| -> Vec<u64> {
        rings
            .select(&all, 0, limit)
            .iter()
            .map(|h| h.record.time_ms)
            .collect()
    };
    assert_eq!(times(10), [10, 20, 30, 40]);
    assert_eq!(times(2), [30, 40]);
    // `since` counts back from the caller's now.
    let recent = FlowFilter {
        since_ms: Some(15),
        ..FlowFilter::default()
    };
    let got: Vec<u64> = rings
        .select(&recent, 45, 10)
        .iter()
        .map(|h| h.record.time_ms)
        .collect();
    assert_eq!(got, [30, 40]);
}

#[test]
fn dropped_counts_add_up_per_node() {
    let mut rings = Rings::new(FlowLimits::default());
    rings.note_dropped("n1", 3);
    rings.note_dropped("n2", 4);
    rings.note_dropped("n1", 0);
    rings.note_dropped("n1", 1);
    assert_eq!(rings.agent_dropped(), 8);
}
