//! Ownership rules the controller enforces on every write, whoever asks (an administrator
//! included): they hold the address plan together, so identity does not lift them.
//!
//! - A segment's subnet is usable overlay space: not loopback, link-local, multicast, reserved
//!   or "this network" ([`reserved_range`]), and no node's underlay address inside it
//!   ([`check_segment_ranges`]). Overlap with another segment is [`crate::Controller`]'s older
//!   check.
//! - A node's underlay address is a routable unicast address outside every pod range: no
//!   segment's subnet and not the controller's pool ([`check_node_underlay`]); so a node record
//!   cannot point other nodes' tunnels at an overlay address.
//! - A node does not hoard a segment's blocks: it gets another only while the blocks it holds
//!   there are mostly used ([`check_block_claim`], [`SPARE_BLOCKS`]).
//! - An endpoint's namespace is its segment's, when the segment serves one namespace
//!   ([`check_endpoint_namespace`]).
//!
//! Every function here is pure: the caller reads the state under the write lock and commits
//! with compares on what it read, so a refusal changes nothing.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use seam_model::{overlaps, Block, Endpoint, Node, Segment};

use crate::controller::{field_error, invalid_if_any};
use crate::error::{Error, Result};

/// How many blocks' worth of unused addresses a node may hold in one segment before it may
/// claim another block there: one block being filled and one spare. An agent claims a block
/// only when its own are full (by its leases), so it stays well within this; its pods'
/// endpoints reach the controller shortly after their leases, and recently freed addresses
/// sit in the agent's quarantine, which the spare block absorbs.
pub const SPARE_BLOCKS: u64 = 2;

/// Address ranges no segment and no node underlay may use, with the name the refusal gives.
const RESERVED: [(Ipv4Addr, u8, &str); 5] = [
    (
        Ipv4Addr::new(0, 0, 0, 0),
        8,
        "\"this network\" range 0.0.0.0/8",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback range 127.0.0.0/8"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local range 169.254.0.0/16",
    ),
    (
        Ipv4Addr::new(224, 0, 0, 0),
        4,
        "multicast range 224.0.0.0/4",
    ),
    (
        Ipv4Addr::new(240, 0, 0, 0),
        4,
        "reserved range 240.0.0.0/4 (with the broadcast address)",
    ),
];

/// The reserved range (and its name) `net` overlaps, if any.
pub fn reserved_range(net: Ipv4Net) -> Option<(Ipv4Net, &'static str)> {
    RESERVED.iter().find_map(|&(address, prefix, name)| {
        let range = Ipv4Net::new(address, prefix).ok()?;
        overlaps(range, net).then_some((range, name))
    })
}

/// Refuses a segment whose subnet overlaps a reserved range (400) or holds a node's underlay
/// address (409): the overlay's routes to the segment would capture the node's tunnel traffic.
pub fn check_segment_ranges<'a>(
    segment: &Segment,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> Result<()> {
    if let Some((range, name)) = reserved_range(segment.subnet) {
        invalid_if_any(
            "Segment",
            &segment.name,
            vec![field_error(
                "subnet",
                format!(
                    "{} overlaps the {name}; a segment may not use loopback, link-local, multicast or reserved addresses ({range})",
                    segment.subnet
                ),
            )],
        )?;
    }
    if let Some(node) = nodes
        .into_iter()
        .find(|n| segment.subnet.contains(&n.underlay_ip))
    {
        return Err(Error::SegmentHoldsUnderlay {
            segment: segment.name.clone(),
            subnet: segment.subnet,
            node: node.name.clone(),
            ip: node.underlay_ip,
        });
    }
    Ok(())
}

/// Refuses a node whose underlay address is not a routable unicast address (400), or lies in a
/// pod range: a segment's subnet or the controller's `pool` segments are carved from (409).
pub fn check_node_underlay<'a>(
    node: &Node,
    segments: impl IntoIterator<Item = &'a Segment>,
    pool: Ipv4Net,
) -> Result<()> {
    let ip = node.underlay_ip;
    let kind = if ip.is_unspecified() {
        Some("the unspecified address".to_string())
    } else if ip.is_broadcast() {
        Some("the broadcast address".to_string())
    } else {
        reserved_range(Ipv4Net::from(ip)).map(|(_, name)| format!("in the {name}"))
    };
    if let Some(kind) = kind {
        invalid_if_any(
            "Node",
            &node.name,
            vec![field_error(
                "underlayIp",
                format!("{ip} is {kind}; a node's underlay address must be a routable unicast address (not loopback, link-local, unspecified, multicast or reserved)"),
            )],
        )?;
    }
    if let Some(segment) = segments.into_iter().find(|s| s.subnet.contains(&ip)) {
        return Err(Error::UnderlayInPodRange {
            node: node.name.clone(),
            ip,
            range: segment.subnet,
            owner: format!("segment {:?}", segment.name),
        });
    }
    if pool.contains(&ip) {
        return Err(Error::UnderlayInPodRange {
            node: node.name.clone(),
            ip,
            range: pool,
            owner: "the controller's pool (--pool)".to_string(),
        });
    }
    Ok(())
}

/// Refuses `node` a new block of `segment` while the blocks it holds there have
/// [`SPARE_BLOCKS`] blocks' worth of addresses or more that no endpoint of the segment uses.
/// `blocks` are the segment's blocks, `endpoints` every endpoint (others are skipped).
pub fn check_block_claim<'a>(
    segment: &Segment,
    node: &str,
    blocks: impl IntoIterator<Item = &'a Block>,
    endpoints: impl IntoIterator<Item = &'a Endpoint> + Clone,
) -> Result<()> {
    let block_size = 1u64 << (32 - u32::from(segment.block_prefix.min(32)));
    let limit = SPARE_BLOCKS * block_size;
    let mut held = 0usize;
    let mut free = 0u64;
    for block in blocks
        .into_iter()
        .filter(|b| b.node == node && b.segment == segment.name)
    {
        held += 1;
        let size = 1u64 << (32 - u32::from(block.cidr.prefix_len()));
        let used = endpoints
            .clone()
            .into_iter()
            .filter(|e| e.segment == segment.name && block.cidr.contains(&e.ip))
            .count() as u64;
        free += size.saturating_sub(used);
    }
    if free < limit {
        return Ok(());
    }
    Err(Error::BlockQuota {
        segment: segment.name.clone(),
        node: node.to_string(),
        held,
        free,
        limit,
    })
}

/// Refuses an endpoint whose namespace is not the one its segment serves. A segment that
/// records no namespace (the flat mode's cluster segment, explicit segments such as one for
/// VMs) takes endpoints of every namespace.
pub fn check_endpoint_namespace(endpoint: &Endpoint, segment: &Segment) -> Result<()> {
    match &segment.namespace {
        Some(ns) if *ns != endpoint.namespace => Err(Error::EndpointNamespaceMismatch {
            endpoint: endpoint.name.clone(),
            namespace: endpoint.namespace.clone(),
            segment: segment.name.clone(),
            segment_namespace: ns.clone(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seam_model::{endpoint_mac, EndpointKind, NodeRole};

    fn node(ip: [u8; 4]) -> Node {
        Node {
            name: "n1".into(),
            underlay_ip: ip.into(),
            role: NodeRole::Worker,
            transit_encap: Default::default(),
            underlay_prefix_len: None,
            underlay_mac: None,
            segment_encap: Default::default(),
        }
    }

    fn segment(subnet: &str, namespace: Option<&str>) -> Segment {
        let subnet: Ipv4Net = subnet.parse().unwrap_or_default();
        Segment {
            name: "s".into(),
            tenant: "t".into(),
            subnet,
            gateway: (u32::from(subnet.network()) + 1).into(),
            vni: 7,
            block_prefix: 28,
            namespace: namespace.map(str::to_string),
            snat: false,
            forwarding: Default::default(),
        }
    }

    fn endpoint(ip: [u8; 4], namespace: &str) -> Endpoint {
        Endpoint {
            name: format!("{namespace}/p"),
            kind: EndpointKind::Pod,
            namespace: namespace.into(),
            segment: "s".into(),
            node: "n1".into(),
            ip: ip.into(),
            mac: endpoint_mac(ip.into()),
            labels: Default::default(),
            container_id: None,
            ifname: None,
            ports: Vec::new(),
            conditions: None,
        }
    }

    fn pool() -> Ipv4Net {
        "10.240.0.0/12".parse().unwrap_or_default()
    }

    #[test]
    fn reserved_ranges_are_named() {
        for (net, name) in [
            ("127.0.0.0/8", "loopback"),
            ("126.0.0.0/7", "loopback"),
            ("169.254.3.0/24", "link-local"),
            ("224.0.0.0/24", "multicast"),
            ("255.255.255.255/32", "reserved"),
            ("0.0.0.0/0", "this network"),
        ] {
            let found = reserved_range(net.parse().unwrap_or_default()).map(|(_, n)| n);
            assert!(found.is_some_and(|n| n.contains(name)), "{net}: {found:?}");
        }
        assert_eq!(
            reserved_range("10.0.0.0/8".parse().unwrap_or_default()),
            None
        );
    }

    #[test]
    fn segments_avoid_reserved_ranges_and_underlay() {
        let err = check_segment_ranges(&segment("127.0.0.0/8", None), []).unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.message().contains("loopback"), "{}", err.message());
        let n = node([192, 168, 1, 7]);
        let err = check_segment_ranges(&segment("192.168.0.0/16", None), [&n]).unwrap_err();
        assert_eq!(err.status(), 409);
        assert!(err
            .message()
            .contains("underlay address 192.168.1.7 of node \"n1\""));
        assert!(check_segment_ranges(&segment("10.1.0.0/16", None), [&n]).is_ok());
    }

    #[test]
    fn underlay_is_unicast_outside_pod_ranges() {
        for ip in [
            [127, 0, 0, 1],
            [169, 254, 1, 1],
            [0, 0, 0, 0],
            [239, 1, 1, 1],
            [255; 4],
        ] {
            let err = check_node_underlay(&node(ip), [], pool()).unwrap_err();
            assert_eq!(err.status(), 400, "{}", err.message());
            assert!(err.message().contains("underlayIp"), "{}", err.message());
        }
        let s = segment("192.168.0.0/24", None);
        let err = check_node_underlay(&node([192, 168, 0, 9]), [&s], pool()).unwrap_err();
        assert_eq!(err.status(), 409);
        assert!(err.message().contains("segment \"s\""), "{}", err.message());
        let err = check_node_underlay(&node([10, 250, 0, 1]), [&s], pool()).unwrap_err();
        assert!(err.message().contains("pool"), "{}", err.message());
        assert!(check_node_underlay(&node([198, 18, 0, 1]), [&s], pool()).is_ok());
    }

    #[test]
    fn a_node_gets_a_block_only_while_its_blocks_are_mostly_used() {
        let s = segment("192.168.0.0/24", None);
        let block = |third: u8, node: &str| Block {
            segment: "s".into(),
            node: node.into(),
            cidr: Ipv4Net::new(Ipv4Addr::new(192, 168, 0, third), 28).unwrap_or_default(),
        };
        let blocks = [block(0, "n1"), block(16, "n1"), block(32, "n2")];
        // Two empty /28s: 32 free addresses, two blocks' worth: refused.
        let err = check_block_claim(&s, "n1", &blocks, &[]).unwrap_err();
        assert_eq!(err.status(), 409);
        assert!(err.message().contains("fewer than 32"), "{}", err.message());
        // One address used: 31 free, another block is granted.
        let used = [endpoint([192, 168, 0, 20], "default")];
        assert!(check_block_claim(&s, "n1", &blocks, &used).is_ok());
        // Another node's blocks do not count.
        assert!(check_block_claim(&s, "n2", &blocks, &[]).is_ok());
    }

    #[test]
    fn endpoint_namespace_is_the_segments() {
        let e = endpoint([10, 0, 0, 5], "web");
        assert!(check_endpoint_namespace(&e, &segment("10.0.0.0/24", Some("web"))).is_ok());
        assert!(check_endpoint_namespace(&e, &segment("10.0.0.0/24", None)).is_ok());
        let err = check_endpoint_namespace(&e, &segment("10.0.0.0/24", Some("db"))).unwrap_err();
        assert_eq!(err.status(), 409);
        assert!(
            err.message().contains("serves namespace \"db\""),
            "{}",
            err.message()
        );
    }
}
