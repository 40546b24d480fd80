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
            prefix_len: 15,
        },
        segments: BTreeMap::from([(4096, spec)]),
        remote: BTreeSet::from([RemoteEntry {
            vni: 4096,
            ip: remote_ip,
            mac: endpoint_mac(remote_ip),
            node_ip: Ipv4Addr::new(198, 18, 0, 12),
            routed: false,
        }]),
        local_ports: BTreeMap::from([("sv000000000001".to_string(), 4096)]),
        vm_ports: BTreeMap::from([(crate::vm_port_name("vm1"), 4096)]),
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
                        vxlan_local: None,
                    },
                )
            })
            .collect(),
        fdb: d.remote.iter().map(|r| (r.vni, r.mac, r.node_ip)).collect(),
        neighbours: d.remote.iter().map(|r| (r.vni, r.ip, r.mac)).collect(),
        routes: BTreeSet::new(),
        host_ports: d
            .local_ports
            .iter()
            .map(|(k, v)| (k.clone(), Some(*v)))
            .collect(),
        vm_ports: d
            .vm_ports
            .iter()
            .map(|(k, v)| {
                let port = ObservedVmPort {
                    vni: Some(*v),
                    mtu: 1450,
                    up: true,
                };
                (k.clone(), port)
            })
            .collect(),
        unhairpinned: BTreeSet::new(),
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
fn a_moved_endpoint_has_its_entry_replaced_in_place() {
    let d = desired();
    let observed = realized(&d);
    let mut moved = d.clone();
    let old = *d.remote.iter().next().unwrap();
    let new = RemoteEntry {
        node_ip: Ipv4Addr::new(198, 18, 0, 13),
        ..old
    };
    moved.remote = BTreeSet::from([new]);
    let ops = plan(&moved, &observed);
    // `FdbAdd` replaces the MAC's entry (and the bridge's entry pointing at the VXLAN port) in
    // one step; a delete of the old destination afterwards would remove the bridge entry again.
    assert_eq!(
        ops,
        vec![LinkOp::FdbAdd(new)],
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

#[test]
fn a_vm_port_is_plugged_once_the_hypervisor_made_it_and_unplugged_when_it_leaves() {
    let d = desired();
    let port = crate::vm_port_name("vm1");
    let mut o = realized(&d);
    o.vm_ports.remove(&port);
    assert!(
        plan(&d, &o).is_empty(),
        "nothing to do before the tap exists"
    );
    o.vm_ports.insert(port.clone(), ObservedVmPort::default());
    assert_eq!(
        plan(&d, &o),
        vec![LinkOp::PlugVmPort {
            ifname: port.clone(),
            vni: 4096,
            mtu: 1450
        }]
    );
    let mut gone = d.clone();
    gone.vm_ports.clear();
    assert_eq!(
        plan(&gone, &realized(&d)),
        vec![LinkOp::UnplugVmPort { ifname: port }]
    );
}

#[test]
fn ports_without_hairpin_mode_get_it_unless_they_are_replugged_or_unwanted() {
    let d = desired();
    let pod = "sv000000000001".to_string();
    let vm = crate::vm_port_name("vm1");
    let mut o = realized(&d);
    o.unhairpinned = BTreeSet::from([pod.clone(), vm.clone(), "sv00000000dead".into()]);
    o.host_ports.insert("sv00000000dead".into(), Some(4096));
    let ops = plan(&d, &o);
    assert!(ops.contains(&LinkOp::SetHairpin {
        ifname: pod.clone()
    }));
    assert!(ops.contains(&LinkOp::SetHairpin { ifname: vm.clone() }));
    assert!(
        !ops.contains(&LinkOp::SetHairpin {
            ifname: "sv00000000dead".into()
        }),
        "a stale port is deleted, not repaired"
    );
    // A VM port that is plugged anew gets hairpin mode with the plug.
    if let Some(p) = o.vm_ports.get_mut(&vm) {
        p.up = false;
    }
    let ops = plan(&d, &o);
    assert!(!ops.contains(&LinkOp::SetHairpin { ifname: vm }));
}

/// `d` with its one remote endpoint reached routed.
fn routed(d: &DesiredNode) -> DesiredNode {
    let mut r = d.clone();
    r.remote = d
        .remote
        .iter()
        .map(|e| RemoteEntry { routed: true, ..*e })
        .collect();
    r
}

#[test]
fn a_routed_endpoint_answers_with_the_gateway_mac_only_once_its_route_exists() {
    let d = desired();
    let want = routed(&d);
    let e = *want.remote.iter().next().unwrap();
    let mut o = realized(&d);
    // No route yet (the transit adds it): the endpoint's own MAC stays, the FDB too.
    assert!(plan(&want, &o).is_empty());
    o.routes.insert((e.ip, e.node_ip));
    assert_eq!(
        plan(&want, &o),
        vec![
            LinkOp::NeighAdd {
                vni: 4096,
                ip: e.ip,
                mac: gateway_mac(4096)
            },
            // The segment's local pods and VMs are told, so those that cached the endpoint's
            // own MAC move to the routed path too.
            LinkOp::AnnounceRouted {
                ip: e.ip,
                mac: gateway_mac(4096),
                ports: vec!["sv000000000001".into(), crate::vm_port_name("vm1")],
            },
        ],
        "the FDB entry stays: a pod that cached the endpoint's MAC still reaches it"
    );
    // A new endpoint (no entry yet) needs no announcement: nobody cached it.
    let mut fresh = o.clone();
    fresh.neighbours.clear();
    assert_eq!(
        plan(&want, &fresh),
        vec![LinkOp::NeighAdd {
            vni: 4096,
            ip: e.ip,
            mac: gateway_mac(4096)
        }]
    );
    // A route to another node (a VM that moved, its route not replaced yet) does not count.
    let mut elsewhere = realized(&d);
    elsewhere
        .routes
        .insert((e.ip, Ipv4Addr::new(198, 18, 0, 13)));
    assert!(plan(&want, &elsewhere).is_empty());
    // Realized routed: nothing to do (a restarted agent adopts it).
    o.neighbours = BTreeSet::from([(4096, e.ip, gateway_mac(4096))]);
    assert!(plan(&want, &o).is_empty());
    // Back to the VXLAN: the endpoint's MAC returns while the route still exists (the transit
    // removes it only after).
    assert_eq!(
        plan(&d, &o),
        vec![LinkOp::NeighAdd {
            vni: 4096,
            ip: e.ip,
            mac: e.mac
        }]
    );
    // A routed endpoint that goes: its entries go, whatever MAC the neighbour held.
    let mut gone = want.clone();
    gone.remote.clear();
    let ops = plan(&gone, &o);
    assert!(ops.contains(&LinkOp::NeighDel {
        vni: 4096,
        ip: e.ip
    }));
    assert!(ops.contains(&LinkOp::FdbDel {
        vni: 4096,
        mac: e.mac,
        dst: e.node_ip
    }));
}

#[test]
fn a_vxlan_device_on_an_old_underlay_address_is_made_anew_with_its_entries() {
    let d = desired();
    let mut o = realized(&d);
    if let Some(s) = o.segments.get_mut(&4096) {
        s.vxlan_local = Some(Ipv4Addr::new(198, 18, 0, 99));
    }
    let ops = plan(&d, &o);
    let e = *d.remote.iter().next().unwrap();
    assert_eq!(
        ops,
        vec![
            LinkOp::EnsureSegment {
                spec: d.segments[&4096].clone(),
                underlay: d.underlay.clone()
            },
            LinkOp::FdbAdd(e),
            LinkOp::NeighAdd {
                vni: 4096,
                ip: e.ip,
                mac: e.mac
            },
        ]
    );
    // On the right address: nothing.
    if let Some(s) = o.segments.get_mut(&4096) {
        s.vxlan_local = Some(d.underlay.ip);
    }
    assert!(plan(&d, &o).is_empty());
}
