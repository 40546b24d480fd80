//! The contract of each kernel-facing trait, written once (feature `testing`): what a user of
//! the trait relies on, checked through the trait alone. The in-memory [`crate::fake::FakeKernel`]
//! runs these on every `cargo test`; `seam-linux` runs the same functions against the kernel in a
//! fresh network namespace (privileged tests). A check fails by panicking, as a test does.
//!
//! Each function expects a kernel that holds none of Seam's objects yet.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use seam_nft::nat::{plan_nat, DesiredNat, NatOp};
use seam_nft::reply::{DesiredReply, ReplyGateway};
use seam_nft::table::{delta, ChainBody, KernelSet, TableModel};
use seam_nft::{AddrField, FirewallDelta, NftMatch, NftRule, NftVerdict, TableOp};

use crate::transit::{
    plan_transit, DesiredTransit, Egress, ReplyRoute, TransitKernel, TransitRoute, TransitStep,
};
use crate::{
    host_ifname, plan, DesiredNode, Firewall, LinkOp, NodeKernel, PodAttach, RemoteEntry,
    SegmentSpec, Underlay,
};
use seam_model::MacAddr;

fn a(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn rule(set: &str, verdict: NftVerdict, comment: &str) -> Arc<NftRule> {
    Arc::new(NftRule {
        matches: vec![
            NftMatch::AddrInSet {
                field: AddrField::Source,
                set: set.into(),
                negate: false,
            },
            NftMatch::L4Proto(6),
            NftMatch::DstPorts(vec![(80, 80), (8000, 8080)]),
        ],
        log_prefix: None,
        sample: None,
        verdict,
        comment: comment.into(),
    })
}

/// A small table as the renderer lays it out: a hash set and an interval set, a policy chain,
/// a baseline chain and a class chain, and one endpoint in each direction's map. `version`
/// changes the hash set's members, the policy chain and one map entry.
pub fn sample_table(version: u8) -> TableModel {
    let mut t = TableModel::default();
    let members = if version == 0 {
        vec![(a("10.0.0.1"), a("10.0.0.3"))]
    } else {
        vec![
            (a("10.0.0.2"), a("10.0.0.4")),
            (a("10.0.0.9"), a("10.0.0.9")),
        ]
    };
    t.sets.insert(
        "h/pods".into(),
        KernelSet {
            interval: false,
            ranges: members.into(),
        },
    );
    t.sets.insert(
        "wide".into(),
        KernelSet {
            interval: true,
            ranges: vec![(a("10.64.0.0"), a("10.127.255.255"))].into(),
        },
    );
    let policy = format!("b_{version:016x}");
    let verdict = if version == 0 {
        NftVerdict::Accept
    } else {
        NftVerdict::Drop
    };
    t.chains.insert(
        policy.clone(),
        ChainBody::Rules(vec![rule("h/pods", verdict, "np/x/web/ingress/0")]),
    );
    t.chains.insert(
        "z_0000000000000001".into(),
        ChainBody::Rules(vec![rule("wide", NftVerdict::Accept, "baseline/ingress")]),
    );
    let class = format!("c_{version:016x}");
    t.chains.insert(
        class.clone(),
        ChainBody::Dispatch {
            jumps: vec![policy],
            goto: "z_0000000000000001".into(),
        },
    );
    let local = if version == 0 { "10.0.0.1" } else { "10.0.0.2" };
    t.ingress.insert(a(local), class.as_str().into());
    t.egress.insert(a("10.0.0.3"), class.as_str().into());
    t
}

/// Without Seam's tables, both list as absent.
pub async fn absent_tables_list_as_none<F: Firewall>(fw: &F) {
    assert_eq!(fw.list_table().await.unwrap(), None);
    assert_eq!(fw.list_nat().await.unwrap(), None);
}

/// A table written whole lists back as written (chains by name), and writing another one
/// replaces it.
pub async fn a_table_written_whole_lists_as_written<F: Firewall>(fw: &F) {
    for version in [0, 1, 1] {
        let table = sample_table(version);
        fw.apply_ruleset(&table).await.unwrap();
        assert_eq!(fw.list_table().await.unwrap(), Some(table.listed()));
    }
}

/// An in-place change from the listed table makes it list as the new one; a change that names
/// a chain the table does not have is refused and changes nothing.
pub async fn a_delta_changes_what_the_table_lists<F: Firewall>(fw: &F) {
    let (old, new) = (sample_table(0), sample_table(1));
    fw.apply_ruleset(&old).await.unwrap();
    let listed = fw.list_table().await.unwrap().unwrap();
    let change = delta(&listed, &new);
    assert!(!change.is_empty());
    fw.apply_delta(&change).await.unwrap();
    assert_eq!(fw.list_table().await.unwrap(), Some(new.listed()));
    assert!(delta(&fw.list_table().await.unwrap().unwrap(), &new).is_empty());
    let bad = FirewallDelta {
        switch: vec![
            TableOp::AddChain {
                name: "a_00000000000000ff".into(),
            },
            TableOp::AddJump {
                chain: "a_00000000000000ff".into(),
                target: "b_missing".into(),
                goto: false,
            },
        ],
        cleanup: Vec::new(),
    };
    assert!(fw.apply_delta(&bad).await.is_err());
    assert_eq!(fw.list_table().await.unwrap(), Some(new.listed()));
}

/// A NAT table for the SNAT segment of [`sample_transit`]; `version` > 0 knows one more address.
pub fn sample_nat(version: u8) -> DesiredNat {
    let mut known: std::collections::BTreeSet<Ipv4Net> = [
        net("10.240.0.0/24"),
        net("10.240.1.0/24"),
        net("198.18.0.11/32"),
    ]
    .into();
    if version > 0 {
        known.insert(net("203.0.113.10/32"));
    }
    DesiredNat {
        sources: [net("10.240.1.0/24")].into(),
        known,
        reply: sample_reply(),
    }
}

/// The reply chains of [`sample_transit`]'s two gateways: 198.18.0.20 encapsulated (slot 5),
/// 198.18.0.21 over the routed transit (slot 9).
pub fn sample_reply() -> DesiredReply {
    DesiredReply {
        underlay: "u0".into(),
        gateways: [
            ReplyGateway {
                slot: 5,
                underlay_ip: a("198.18.0.20"),
                routed_from: None,
            },
            ReplyGateway {
                slot: 9,
                underlay_ip: a("198.18.0.21"),
                routed_from: Some(MacAddr([0x02, 0x5e, 0, 0, 0, 0x21])),
            },
        ]
        .into(),
        inside: [net("10.240.0.0/16"), net("198.18.0.11/32")].into(),
        external: Some("u1".into()),
    }
}

/// The NAT table written lists back as asked for (nothing left to plan), is replaced whole by
/// another, and is removed; removing it when absent succeeds.
pub async fn the_nat_table_round_trips<F: Firewall>(fw: &F) {
    for version in [0, 1] {
        let want = sample_nat(version);
        fw.apply_nat(&NatOp::Replace(want.clone())).await.unwrap();
        let listed = fw.list_nat().await.unwrap().unwrap();
        assert_eq!(plan_nat(Some(&want), &listed), None, "{listed:?}");
    }
    fw.apply_nat(&NatOp::Delete).await.unwrap();
    assert_eq!(fw.list_nat().await.unwrap(), None);
    fw.apply_nat(&NatOp::Delete).await.unwrap();
}

/// A node's transit with one external address routed through a gateway, and the egress of one
/// SNAT segment to it, over `underlay`.
pub fn sample_transit(underlay: Underlay) -> DesiredTransit {
    let gateway = a("198.18.0.20");
    DesiredTransit {
        present: true,
        vni: seam_model::TRANSIT_VNI,
        mac: seam_model::transit_mac(underlay.ip),
        mtu: 1450,
        underlay,
        gateway: false,
        loose_underlay: false,
        routes: [TransitRoute {
            dst: a("203.0.113.10"),
            via: gateway,
            via_mac: seam_model::transit_mac(gateway),
            direct: false,
        }]
        .into(),
        egress: Some(Egress {
            gateway_ip: gateway,
            gateway_mac: seam_model::transit_mac(gateway),
            sources: [net("10.240.1.0/24")].into(),
        }),
        replies: [
            ReplyRoute {
                slot: 5,
                via: gateway,
                via_mac: seam_model::transit_mac(gateway),
                direct: false,
            },
            ReplyRoute {
                slot: 9,
                via: a("198.18.0.21"),
                via_mac: seam_model::transit_mac(a("198.18.0.21")),
                direct: true,
            },
        ]
        .into(),
        gateway_routes: [
            TransitRoute {
                dst: a("203.0.113.11"),
                via: gateway,
                via_mac: seam_model::transit_mac(gateway),
                direct: false,
            },
            TransitRoute {
                dst: a("203.0.113.12"),
                via: a("198.18.0.21"),
                via_mac: seam_model::transit_mac(a("198.18.0.21")),
                direct: true,
            },
        ]
        .into(),
    }
}

/// Observes (the NAT table through the firewall), plans and applies once; returns the plan.
async fn pass<K: TransitKernel + Firewall>(
    kernel: &K,
    want: &DesiredTransit,
    nat: Option<&DesiredNat>,
) -> Vec<TransitStep> {
    let observed = kernel.observe_transit(want).await.unwrap();
    let observed_nat = kernel.list_nat().await.unwrap().unwrap_or_default();
    let steps = plan_transit(want, nat, &observed, &observed_nat);
    for step in &steps {
        match step {
            TransitStep::Nat(op) => kernel.apply_nat(op).await.unwrap(),
            TransitStep::Kernel(op) => kernel
                .apply_transit(op)
                .await
                .unwrap_or_else(|e| panic!("{op:?}: {e}")),
        }
    }
    steps
}

/// What one pass applies is what the next observes: the second pass plans nothing. Taken
/// away, the transit and the NAT table are gone, and observing finds nothing left.
pub async fn the_transit_is_observed_as_applied<K: TransitKernel + Firewall>(
    kernel: &K,
    want: DesiredTransit,
    nat: DesiredNat,
) {
    assert!(!pass(kernel, &want, Some(&nat)).await.is_empty());
    let again = pass(kernel, &want, Some(&nat)).await;
    assert!(again.is_empty(), "after one pass: {again:?}");
    let observed = kernel.observe_transit(&want).await.unwrap();
    assert_eq!(observed.reply_rules, [5, 9].into(), "{observed:?}");
    assert!(observed.gateway_rule, "{observed:?}");
    assert_eq!(observed.gateway_routes.len(), 2, "{observed:?}");
    // A gateway's way back switches between the two kinds (its table's route replaced in
    // place), and another's goes away with its rule.
    let moved = DesiredTransit {
        replies: want
            .replies
            .iter()
            .filter(|r| r.slot == 5)
            .map(|r| ReplyRoute { direct: true, ..*r })
            .collect(),
        ..want.clone()
    };
    assert!(!pass(kernel, &moved, Some(&nat)).await.is_empty());
    let observed = kernel.observe_transit(&moved).await.unwrap();
    assert_eq!(observed.reply_rules, [5].into(), "{observed:?}");
    assert_eq!(
        observed.reply_routes,
        [(5, a("198.18.0.20"), true)].into(),
        "{observed:?}"
    );
    let again = pass(kernel, &moved, Some(&nat)).await;
    assert!(again.is_empty(), "after the switch: {again:?}");
    let gone = DesiredTransit {
        present: false,
        routes: Default::default(),
        egress: None,
        replies: Default::default(),
        gateway_routes: Default::default(),
        ..want
    };
    assert!(!pass(kernel, &gone, None).await.is_empty());
    let observed = kernel.observe_transit(&gone).await.unwrap();
    assert!(!observed.exists, "{observed:?}");
    assert!(observed.egress_rules.is_empty(), "{observed:?}");
    assert!(observed.reply_rules.is_empty(), "{observed:?}");
    assert!(observed.reply_routes.is_empty(), "{observed:?}");
    assert!(
        observed.gateway_routes.is_empty() && !observed.gateway_rule,
        "{observed:?}"
    );
    assert_eq!(kernel.list_nat().await.unwrap(), None);
    assert!(pass(kernel, &gone, None).await.is_empty());
}

/// Unused maps stay as empty maps: a table with no endpoint still lists both maps.
pub async fn a_table_without_endpoints_lists_empty_maps<F: Firewall>(fw: &F) {
    let mut table = sample_table(0);
    table.egress = BTreeMap::new();
    table.ingress = BTreeMap::new();
    fw.apply_ruleset(&table).await.unwrap();
    assert_eq!(fw.list_table().await.unwrap(), Some(table.listed()));
}

/// A node with one segment and one endpoint on another node, over `underlay`.
pub fn sample_node(underlay: Underlay) -> DesiredNode {
    let vni = 4097;
    DesiredNode {
        underlay,
        segments: [(
            vni,
            SegmentSpec {
                vni,
                gateway: net("10.240.0.1/24"),
                gateway_mac: MacAddr([0x02, 0x5e, 0xa0, 0, 0, 1]),
                mtu: 1450,
            },
        )]
        .into(),
        remote: [RemoteEntry {
            vni,
            ip: a("10.240.0.9"),
            mac: MacAddr([0x02, 0, 0, 0, 0, 9]),
            node_ip: a("198.18.0.12"),
            routed: false,
        }]
        .into(),
        local_ports: BTreeMap::new(),
        vm_ports: BTreeMap::new(),
    }
}

/// Observes, plans and applies once; returns the plan.
async fn node_pass<K: NodeKernel>(kernel: &K, want: &DesiredNode) -> Vec<LinkOp> {
    let observed = kernel.observe().await.unwrap();
    let ops = plan(want, &observed);
    for op in &ops {
        kernel
            .apply(op)
            .await
            .unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
    ops
}

/// A node whose underlay address changed (`old` to `new`, both on the interface): the segments'
/// VXLAN devices and the transit device are bound to the new address after one pass each,
/// with every entry and route they carried, and the next pass has nothing to do.
pub async fn a_new_underlay_address_rebinds_the_vxlan_devices<
    K: NodeKernel + TransitKernel + Firewall,
>(
    kernel: &K,
    old: Underlay,
    new: Underlay,
) {
    for underlay in [old, new] {
        let node = sample_node(underlay.clone());
        node_pass(kernel, &node).await;
        let again = node_pass(kernel, &node).await;
        assert!(again.is_empty(), "on {}: {again:?}", underlay.ip);
        let observed = kernel.observe().await.unwrap();
        assert!(
            observed
                .segments
                .values()
                .all(|s| s.vxlan_local.is_none_or(|ip| ip == underlay.ip)),
            "{observed:?}"
        );
        assert_eq!(observed.fdb.len(), node.remote.len(), "{observed:?}");
        let transit = sample_transit(underlay.clone());
        pass(kernel, &transit, None).await;
        let again = pass(kernel, &transit, None).await;
        assert!(again.is_empty(), "transit on {}: {again:?}", underlay.ip);
        let observed = kernel.observe_transit(&transit).await.unwrap();
        assert_eq!(
            observed.routes.len(),
            transit.routes.iter().filter(|r| !r.direct).count()
        );
    }
}

/// The interface `ifname` reads back as it is (`want`: its addresses in the kernel's order,
/// MAC, MTU); one that does not exist is an error.
pub async fn the_underlay_interface_reads_back<K: NodeKernel>(
    kernel: &K,
    ifname: &str,
    want: &crate::UnderlayInterface,
) {
    assert_eq!(&kernel.underlay_interface(ifname).await.unwrap(), want);
    assert!(kernel.underlay_interface("seam-absent0").await.is_err());
}

/// What one pass applies is what the next observes; a pod attached into `sandbox_netns` (a
/// namespace path) shows as a host port of its segment and passes `check`, and is gone after
/// `detach` (a second `detach` succeeds); taken away, the segment and its entries are gone.
pub async fn a_node_converges_and_attaches<K: NodeKernel>(
    kernel: &K,
    want: DesiredNode,
    sandbox_netns: &str,
) {
    assert_eq!(kernel.observe().await.unwrap(), crate::Observed::default());
    assert!(!node_pass(kernel, &want).await.is_empty());
    let again = node_pass(kernel, &want).await;
    assert!(again.is_empty(), "after one pass: {again:?}");
    let observed = kernel.observe().await.unwrap();
    let remote = want.remote.first().unwrap();
    assert!(observed
        .fdb
        .contains(&(remote.vni, remote.mac, remote.node_ip)));
    assert!(observed
        .neighbours
        .contains(&(remote.vni, remote.ip, remote.mac)));
    let pod = PodAttach {
        host_ifname: host_ifname("seam", "contract", "eth0"),
        netns: sandbox_netns.to_string(),
        ifname: "eth0".into(),
        address: net("10.240.0.5/24"),
        gateway: a("10.240.0.1"),
        mac: MacAddr([0x02, 0, 0, 0, 0, 5]),
        vni: remote.vni,
        mtu: 1450,
    };
    let attached = kernel.attach(&pod).await.unwrap();
    assert_eq!(kernel.check(&pod).await.unwrap(), attached);
    let observed = kernel.observe().await.unwrap();
    assert_eq!(
        observed.host_ports.get(&pod.host_ifname),
        Some(&Some(pod.vni))
    );
    assert!(
        !observed.unhairpinned.contains(&pod.host_ifname),
        "a new port is in hairpin mode"
    );
    kernel.detach(&pod.host_ifname).await.unwrap();
    kernel.detach(&pod.host_ifname).await.unwrap();
    assert!(kernel.check(&pod).await.is_err());
    assert!(!kernel
        .observe()
        .await
        .unwrap()
        .host_ports
        .contains_key(&pod.host_ifname));
    let gone = DesiredNode {
        segments: BTreeMap::new(),
        remote: Default::default(),
        ..want
    };
    assert!(!node_pass(kernel, &gone).await.is_empty());
    assert_eq!(kernel.observe().await.unwrap(), crate::Observed::default());
}
