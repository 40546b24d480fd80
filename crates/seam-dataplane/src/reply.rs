//! The way back of connections that came through a gateway: on a backend's node, each reply goes
//! back through the gateway its connection arrived from.
//!
//! Why: a gateway translates a LoadBalancer address to a backend without SNAT, so only that
//! gateway's conntrack entry turns the backend's address back into the LoadBalancer address. The
//! backend's node would route the reply as it routes anything to the client (an external
//! endpoint's /32 to its own gateway, anything else by the node's default route); with two live
//! gateways, a client whose replies route through the other gateway would get no answer.
//!
//! How, on every node, for every other gateway `G` (its slot `S`, see [`reply_slots`]):
//! - nftables (`seam_nft::reply`, in `table ip seam-nat`) records `S` in the conntrack mark of
//!   every new connection that arrives from `G` (by `G`'s underlay MAC over the routed transit,
//!   by the outer source address when it comes encapsulated) from a source outside Seam's
//!   segments and nodes, and puts `S` in the packet mark of the connection's replies;
//! - a policy rule `fwmark S<<24/0xff000000 lookup 0x5ea100+S` at [`REPLY_RULE_PRIORITY`]
//!   (before the SNAT egress rules and the main table) sends them to a table whose only route is
//!   the default via `G`, the way the node reaches `G` for its external endpoints: over the
//!   underlay (routed transit) or through the transit device.
//!
//! On the translating gateway, the reply must then leave by its external network, as the request
//! came: a client registered behind the other gateway has a /32 through that gateway here (for
//! the pods' own traffic), which would carry the reply, already translated back, into a gateway
//! whose conntrack never saw the connection (its forward hook drops the packet as invalid). So
//! on a gateway, while replies are recorded, the routes of other gateways' external endpoints live
//! in their own table, [`GATEWAY_ROUTES_TABLE`], looked up by `not fwmark`
//! [`EXTERNAL_SLOT`]`<<24` at [`GATEWAY_ROUTES_RULE_PRIORITY`]: every connection that arrives on
//! its external interface is recorded with [`EXTERNAL_SLOT`], and its replies skip that table and
//! take the operator's routes in main.
//!
//! Connections from gateways that do not translate (an external client reaching a pod through
//! its own gateway) are recorded too, and their replies go back the way they came, as they did.
//! A gateway that goes (its node lease expired) loses its rule and table: the connections it
//! carried are dead with its conntrack, and any left fall back to the node's ordinary routes.
//!
//! The rule, the tables and their routes are [`crate::TransitOp`]s of the transit plan.

use std::collections::BTreeMap;

use seam_model::{Node, NodeLease, NodeRole};
use seam_nft::names::fnv1a;

pub use seam_nft::names::{reply_mark, REPLY_MARK_MASK};

/// The first of the reply tables: gateway slot `S` routes through table `REPLY_TABLE_BASE + S`.
pub const REPLY_TABLE_BASE: u32 = 0x005e_a100;

/// The priority of the reply rules: before the SNAT egress rules
/// ([`crate::snat::EGRESS_RULE_PRIORITY`]), whose egress gateway would masquerade a reply it
/// did not translate, and before the main table, which routes a registered client to its own
/// gateway. After `lookup local` (0): the node's own addresses are never routed away.
pub const REPLY_RULE_PRIORITY: u32 = 0x5e9f;

/// The slot of the connections that arrived on this gateway's external interface (255): their
/// replies leave by the operator's routes (see the module doc). Gateways get the slots below it.
pub use seam_nft::reply::EXTERNAL_SLOT;

/// The table of a gateway's routes to other gateways' external endpoints (while replies are
/// recorded; else they are in main).
pub const GATEWAY_ROUTES_TABLE: u32 = 0x5ea2;

/// The priority of `not fwmark EXTERNAL_SLOT<<24/0xff000000 lookup GATEWAY_ROUTES_TABLE`: after
/// the reply rules (a reply recorded for another gateway goes back to it), before main.
pub const GATEWAY_ROUTES_RULE_PRIORITY: u32 = 0x5ea4;

/// The routing table of slot `slot`.
pub fn reply_table(slot: u8) -> u32 {
    REPLY_TABLE_BASE + u32::from(slot)
}

/// The slot of every gateway in `gateways` (1..=254): FNV-1a of its name picks one, and a name
/// whose slot is taken takes the next free one (names in order). A slot depends only on the
/// gateway's name and those that collide with it, so it survives other gateways coming and
/// going, and with it the marks of the connections already recorded. Past 254 gateways the rest
/// get none (their replies follow the ordinary routes).
pub fn reply_slots<'a>(gateways: impl IntoIterator<Item = &'a str>) -> BTreeMap<&'a str, u8> {
    let mut names: Vec<&str> = gateways.into_iter().collect();
    names.sort_unstable();
    names.dedup();
    let count = usize::from(EXTERNAL_SLOT) - 1;
    let mut taken = [false; 256];
    let mut slots = BTreeMap::new();
    for name in names {
        let start = usize::try_from(fnv1a(name) % 254).unwrap_or(0);
        let free = (0..count)
            .map(|i| (start + i) % count + 1)
            .find(|slot| !taken[*slot]);
        let Some(slot) = free else { break };
        taken[slot] = true;
        if let Ok(slot) = u8::try_from(slot) {
            slots.insert(name, slot);
        }
    }
    slots
}

/// The gateways node `me` routes replies back through: the gateway nodes holding a node lease
/// (all gateway nodes when none holds one: gateways from before leases), itself excepted.
pub fn reply_gateways<'a>(
    me: &str,
    nodes: &'a BTreeMap<String, Node>,
    leases: &BTreeMap<String, NodeLease>,
) -> Vec<&'a Node> {
    let gateways = || {
        nodes
            .values()
            .filter(|n| n.role == NodeRole::Gateway && n.name != me)
    };
    let any_lease = nodes
        .values()
        .any(|n| n.role == NodeRole::Gateway && leases.contains_key(&n.name));
    gateways()
        .filter(|n| !any_lease || leases.contains_key(&n.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_stable_distinct_and_kept_when_others_come_and_go() {
        let two = reply_slots(["gw1", "gw2"]);
        assert_eq!(two.len(), 2);
        assert_ne!(two["gw1"], two["gw2"]);
        assert!(two.values().all(|s| *s >= 1));
        // gw2 gone: gw1 keeps its slot; gw2 back: the same slots again.
        assert_eq!(reply_slots(["gw1"])["gw1"], two["gw1"]);
        assert_eq!(reply_slots(["gw2", "gw1", "gw3"])["gw2"], two["gw2"]);
        // Many gateways: every slot distinct, at most 255.
        let names: Vec<String> = (0..300).map(|i| format!("gw{i}")).collect();
        let many = reply_slots(names.iter().map(String::as_str));
        assert_eq!(many.len(), 254);
        let distinct: std::collections::BTreeSet<u8> = many.values().copied().collect();
        assert_eq!(distinct.len(), 254);
        assert!(!distinct.contains(&0) && !distinct.contains(&EXTERNAL_SLOT));
        assert_eq!(reply_table(2), 0x5ea102);
        assert_eq!(reply_mark(2), 0x0200_0000);
        assert_eq!(reply_mark(255) & !REPLY_MARK_MASK, 0);
    }

    #[test]
    fn replies_go_back_through_the_gateways_with_a_lease_but_not_to_the_node_itself() {
        let node = |name: &str, role| Node {
            name: name.into(),
            underlay_ip: std::net::Ipv4Addr::new(198, 18, 1, 1),
            role,
            transit_encap: Default::default(),
            underlay_prefix_len: None,
            underlay_mac: None,
            segment_encap: Default::default(),
        };
        let nodes: BTreeMap<String, Node> = [
            node("gw1", NodeRole::Gateway),
            node("gw2", NodeRole::Gateway),
            node("n1", NodeRole::Worker),
        ]
        .into_iter()
        .map(|n| (n.name.clone(), n))
        .collect();
        let names = |v: Vec<&Node>| v.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        // No lease at all: every gateway.
        assert_eq!(
            names(reply_gateways("n1", &nodes, &BTreeMap::new())),
            ["gw1", "gw2"]
        );
        assert_eq!(
            names(reply_gateways("gw1", &nodes, &BTreeMap::new())),
            ["gw2"]
        );
        let lease = NodeLease { node: "gw2".into() };
        let leases = BTreeMap::from([("gw2".to_string(), lease)]);
        assert_eq!(names(reply_gateways("n1", &nodes, &leases)), ["gw2"]);
    }
}
