//! Which peers a node sends traffic to over the underlay without encapsulation: the routed
//! transit (a gateway and a node, `transitEncap`) and routed segments (any two nodes,
//! `segmentEncap`). Both ends decide from the same two `Node` records, so neither routes to a
//! peer that would not route back the same way.
//!
//! Routed segments: between two nodes that both publish `segmentEncap: crossSubnet` and share
//! an underlay subnet, the endpoints of `routed` segments reach each other routed. The node keeps
//! the static FDB entry of a remote endpoint (a pod whose ARP cache still holds the endpoint's
//! own MAC keeps reaching it through the VXLAN), routes its address `/32 via PEER_UNDERLAY proto
//! 83` (a [`crate::TransitRoute`] with `direct`, the transit's one kind of route to a peer's
//! underlay) and, once that route exists, points the VXLAN device's static neighbour entry (what
//! proxy ARP answers) at the segment's anycast gateway MAC: a pod then sends to its node's
//! bridge, which routes the packet to the peer, which routes it into its own bridge. Going back,
//! the neighbour entry returns to the endpoint's MAC before the route goes (a pod that cached the
//! gateway MAC is then routed by its node into the segment and the VXLAN).

use ipnet::Ipv4Net;
use seam_model::{Node, NodeRole, SegmentForwarding, TransitEncap};

/// This node, as the routed paths see it.
#[derive(Debug, Clone, Copy)]
pub struct LocalNode<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its role.
    pub role: NodeRole,
    /// Its `--transit-encap`.
    pub transit_encap: TransitEncap,
    /// Its `--segment-encap`.
    pub segment_encap: TransitEncap,
    /// Its underlay subnet.
    pub on_link: Ipv4Net,
}

/// Whether this node and `peer` share an underlay subnet as both see it: each one's subnet
/// (its interface's prefix, published as `underlayPrefixLen`) holds the other's address. A peer
/// that publishes no prefix length does not share one.
pub fn shares_underlay(local: &LocalNode<'_>, peer: &Node) -> bool {
    let peer_on_link = peer
        .underlay_prefix_len
        .and_then(|len| Ipv4Net::new(peer.underlay_ip, len).ok())
        .is_some_and(|net| net.contains(&local.on_link.addr()));
    peer.name != local.name && local.on_link.contains(&peer.underlay_ip) && peer_on_link
}

/// Whether this node and `peer` send each other the transit's traffic without encapsulation:
/// one of them is a gateway, both publish `transitEncap: crossSubnet` (an agent from before the
/// setting publishes nothing, which reads as `always`) and they share an underlay subnet.
pub fn routed_directly(local: &LocalNode<'_>, peer: &Node) -> bool {
    (local.role == NodeRole::Gateway || peer.role == NodeRole::Gateway)
        && local.transit_encap == TransitEncap::CrossSubnet
        && peer.transit_encap == TransitEncap::CrossSubnet
        && shares_underlay(local, peer)
}

/// Whether this node and `peer` route the traffic of routed segments between their endpoints
/// without encapsulation: both publish `segmentEncap: crossSubnet` (absent reads as `always`: an
/// agent that does not know routed segments) and they share an underlay subnet.
pub fn routes_segments(local: &LocalNode<'_>, peer: &Node) -> bool {
    local.segment_encap == TransitEncap::CrossSubnet
        && peer.segment_encap == TransitEncap::CrossSubnet
        && shares_underlay(local, peer)
}

/// Whether a remote endpoint of a segment with `forwarding` on `peer` is reached routed
/// (`routes_segments` decided per peer): an `overlay` segment always keeps the VXLAN.
pub fn endpoint_routed(forwarding: SegmentForwarding, peer_routed: bool) -> bool {
    forwarding == SegmentForwarding::Routed && peer_routed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: [u8; 4], segment_encap: TransitEncap) -> Node {
        Node {
            name: name.into(),
            underlay_ip: ip.into(),
            role: NodeRole::Worker,
            transit_encap: TransitEncap::CrossSubnet,
            underlay_prefix_len: Some(24),
            underlay_mac: None,
            segment_encap,
        }
    }

    fn local(segment_encap: TransitEncap) -> LocalNode<'static> {
        LocalNode {
            name: "n1",
            role: NodeRole::Worker,
            transit_encap: TransitEncap::CrossSubnet,
            segment_encap,
            on_link: "198.18.0.11/24".parse().unwrap(),
        }
    }

    #[test]
    fn two_nodes_of_one_subnet_that_both_publish_cross_subnet_route_their_segments() {
        use TransitEncap::{Always, CrossSubnet};
        let n1 = local(CrossSubnet);
        assert!(routes_segments(
            &n1,
            &node("n2", [198, 18, 0, 12], CrossSubnet)
        ));
        // Two workers: the routed transit does not apply, routed segments do.
        assert!(!routed_directly(
            &n1,
            &node("n2", [198, 18, 0, 12], CrossSubnet)
        ));
        // Another subnet: a router between them may drop the endpoints' addresses.
        assert!(!routes_segments(
            &n1,
            &node("n2", [198, 18, 1, 12], CrossSubnet)
        ));
        // Either end asks for the VXLAN.
        assert!(!routes_segments(&n1, &node("n2", [198, 18, 0, 12], Always)));
        assert!(!routes_segments(
            &local(Always),
            &node("n2", [198, 18, 0, 12], CrossSubnet)
        ));
        // An agent that does not know routed segments publishes nothing: VXLAN.
        let old = Node {
            segment_encap: TransitEncap::default(),
            ..node("n2", [198, 18, 0, 12], CrossSubnet)
        };
        assert!(!routes_segments(&n1, &old));
        // The peer's own subnet must hold this node too, and it must say what it is.
        let narrow = Node {
            underlay_prefix_len: Some(28),
            ..node("n2", [198, 18, 0, 20], CrossSubnet)
        };
        assert!(!routes_segments(&n1, &narrow));
        let unknown = Node {
            underlay_prefix_len: None,
            ..node("n2", [198, 18, 0, 12], CrossSubnet)
        };
        assert!(!routes_segments(&n1, &unknown));
        // Not with itself.
        assert!(!routes_segments(
            &n1,
            &node("n1", [198, 18, 0, 11], CrossSubnet)
        ));
    }

    #[test]
    fn an_overlay_segment_keeps_the_vxlan_with_a_routed_peer() {
        assert!(endpoint_routed(SegmentForwarding::Routed, true));
        assert!(!endpoint_routed(SegmentForwarding::Routed, false));
        assert!(!endpoint_routed(SegmentForwarding::Overlay, true));
    }
}
