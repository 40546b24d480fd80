use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use seam_model::{endpoint_mac, gateway_mac};

use super::*;
use crate::types::*;

fn desired() -> DesiredNode {
    let spec = SegmentSpec {
        vni: 4096,
        gateway: "10.240.0.1/20".parse().unwrap(),
        gateway_mac: gateway_mac(4096),
        mtu: 1450,
    };
    let remote_ip = Ipv4Addr::new(10, 240, 0, 66);
    DesiredNode {
        underlay: Underlay {
            ifname: "eth0".into(),
            ip: Ipv4Addr::new(198, 18, 0, 11),
        },
        segments: BTreeMap::from([(4096, spec)]),
        remote: BTreeSet::from([RemoteEntry {
            vni: 4096,
            ip: remote_ip,
            mac: endpoint_mac(remote_ip),
            node_ip: Ipv4Addr::new(198, 18, 0, 12),
        }]),
        local_ports: BTreeMap::from([("sv000000000001".to_string(), 4096)]),
    }
}

fn realized(d: &DesiredNode) -> Observed {
    Observed {
        segments: d
            .segments
            .keys()
            .map(|v| {
                (
                    *v,
                    ObservedSegment {
                        bridge_ok: true,
                        vxlan_ok: true,
                        gateway_ok: true,
                    },
                )
            })
            .collect(),
        fdb: d.remote.iter().map(|r| (r.vni, r.mac, r.node_ip)).collect(),
        neighbours: d.remote.iter().map(|r| (r.vni, r.ip, r.mac)).collect(),
        host_ports: d
            .local_ports
            .iter()
            .map(|(k, v)| (k.clone(), Some(*v)))
            .collect(),
    }
}

#[test]
fn an_empty_node_gets_its_segment_then_its_entries() {
    let ops = plan(&desired(), &Observed::default());
    assert!(matches!(ops[0], LinkOp::EnsureSegment { .. }));
    assert!(matches!(ops[1], LinkOp::FdbAdd(_)));
    assert!(matches!(ops[2], LinkOp::NeighAdd { .. }));
    assert_eq!(ops.len(), 3);
}

#[test]
fn a_realized_node_is_adopted_without_changes() {
    let d = desired();
    assert_eq!(plan(&d, &realized(&d)), vec![]);
}

#[test]
fn a_moved_endpoint_is_added_at_its_new_node_before_the_old_entry_goes() {
    let d = desired();
    let observed = realized(&d);
    let mut moved = d.clone();
    let old = *d.remote.iter().next().unwrap();
    moved.remote = BTreeSet::from([RemoteEntry {
        node_ip: Ipv4Addr::new(198, 18, 0, 13),
        ..old
    }]);
    let ops = plan(&moved, &observed);
    let add = ops
        .iter()
        .position(|o| matches!(o, LinkOp::FdbAdd(_)))
        .unwrap();
    let del = ops
        .iter()
        .position(|o| matches!(o, LinkOp::FdbDel { .. }))
        .unwrap();
    assert!(add < del, "{ops:?}");
    assert!(
        !ops.iter().any(|o| matches!(o, LinkOp::NeighDel { .. })),
        "same ip/mac: neighbour stays"
    );
}

#[test]
fn stale_ports_and_segments_are_removed_but_segments_in_use_stay() {
    let d = desired();
    let mut observed = realized(&d);
    observed
        .host_ports
        .insert("sv00000000dead".into(), Some(4096));
    observed.segments.insert(5000, ObservedSegment::default());
    observed.segments.insert(5001, ObservedSegment::default());
    let mut d2 = d.clone();
    d2.local_ports.insert("sv000000000002".into(), 5001);
    let ops = plan(&d2, &observed);
    assert!(ops.contains(&LinkOp::DeletePort {
        host_ifname: "sv00000000dead".into()
    }));
    assert!(ops.contains(&LinkOp::DeleteSegment { vni: 5000 }));
    assert!(!ops.contains(&LinkOp::DeleteSegment { vni: 5001 }));
}
