//! LoadBalancer addresses at the gateways: which gateway serves which address ([`owner`]), the
//! set one node serves now ([`served_addresses`]), and the pure plan that brings the addresses on
//! its external interface to that set ([`plan_lb`]), executed through [`LbKernel`].
//!
//! Ownership is rendezvous hashing (highest random weight): every live gateway scores each
//! address with FNV-1a of `address/node` and the highest score serves it. Every node computes the
//! same answer from the same view (the gateway nodes and their leases), with no election and no
//! coordination; when a gateway's lease goes, only its own addresses move (each to the gateway
//! that scored second for it), and the others stay where they are.
//!
//! The owner adds the address as a /32 to its external interface (so the kernel answers ARP for
//! it and delivers what arrives to the Service translation) and announces it with gratuitous ARP,
//! so the external network's neighbour caches move to it at once after a take-over; a gateway
//! that no longer owns an address removes it. The addresses Seam adds carry the address protocol
//! [`LB_ADDRESS_PROTOCOL`] (`ip addr ... proto 83`): what else is on the interface (the
//! operator's) is never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::Ipv4Addr;

use seam_model::{Node, NodeLease, NodeRole, Service, ServiceType};
use seam_nft::names::fnv1a;

use crate::error::Result;

/// The address protocol (`IFA_PROTO`) of the LoadBalancer addresses Seam adds (the number its
/// transit routes use as their route protocol): how an agent tells them from the operator's.
pub const LB_ADDRESS_PROTOCOL: u8 = 83;

/// How many gratuitous ARP announcements follow an address taken (keepalived's default count).
pub const ANNOUNCEMENTS: usize = 3;

/// The gateway that serves `addr` among `live_gateways`: the one whose FNV-1a of `addr/node`
/// is highest (ties, which need equal hashes, go to the smaller name). `None` without a live
/// gateway.
pub fn owner<'a>(
    addr: Ipv4Addr,
    live_gateways: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    live_gateways
        .into_iter()
        .map(|node| (fnv1a(&format!("{addr}/{node}")), node))
        .max_by(|(ha, na), (hb, nb)| ha.cmp(hb).then_with(|| nb.cmp(na)))
        .map(|(_, node)| node)
}

/// The gateways that may serve addresses: nodes of role gateway that hold a lease.
pub fn live_gateways<'a>(
    nodes: &'a BTreeMap<String, Node>,
    leases: &BTreeMap<String, NodeLease>,
) -> Vec<&'a str> {
    nodes
        .values()
        .filter(|n| n.role == NodeRole::Gateway && leases.contains_key(&n.name))
        .map(|n| n.name.as_str())
        .collect()
}

/// Every LoadBalancer address the Services hold (their `status.loadBalancer.ingress`).
pub fn lb_addresses<'a>(services: impl IntoIterator<Item = &'a Service>) -> BTreeSet<Ipv4Addr> {
    services
        .into_iter()
        .filter(|s| s.spec.service_type == ServiceType::LoadBalancer)
        .flat_map(|s| s.status.load_balancer.ingress.iter().map(|i| i.ip))
        .collect()
}

/// The LoadBalancer addresses node `me` serves now: those whose [`owner`] among the live
/// gateways it is. A node without a lease of its own serves nothing (the others have taken its
/// addresses over, or will as soon as they see its lease gone).
pub fn served_addresses<'a>(
    me: &str,
    services: impl IntoIterator<Item = &'a Service>,
    nodes: &BTreeMap<String, Node>,
    leases: &BTreeMap<String, NodeLease>,
) -> BTreeSet<Ipv4Addr> {
    let live = live_gateways(nodes, leases);
    if !live.contains(&me) {
        return BTreeSet::new();
    }
    lb_addresses(services)
        .into_iter()
        .filter(|addr| owner(*addr, live.iter().copied()) == Some(me))
        .collect()
}

/// The gateway node through which every node routes its traffic to external address `client`
/// whose record names gateway `named`: that gateway while it holds a lease; when its lease is
/// gone and another gateway holds one, the live gateway [`owner`] picks for the address (every
/// node picks the same one, and only the dead gateway's clients move). Without any gateway lease
/// at all (gateways from before leases), `named`, as before.
///
/// Why: a LoadBalancer connection's replies must reach the gateway that translated it (its
/// conntrack entry turns the backend's address back into the LoadBalancer address), and the
/// backend's node routes them as it routes anything to `client`. After a gateway dies, the
/// gateway that took its addresses over translates their new connections, and the replies must
/// no longer be routed to the dead one.
pub fn return_gateway<'a>(
    named: &'a str,
    client: Ipv4Addr,
    nodes: &'a BTreeMap<String, Node>,
    leases: &BTreeMap<String, NodeLease>,
) -> &'a str {
    let live = live_gateways(nodes, leases);
    if live.is_empty() || live.contains(&named) {
        return named;
    }
    owner(client, live).unwrap_or(named)
}

/// One change of the addresses on the external interface.
///
/// Every address carries a lifetime (`valid_lft`/`preferred_lft`) as long as what is left of the
/// gateway's lease, refreshed while the lease is renewed: a gateway whose agent dies, or that can
/// no longer renew its lease, loses its addresses when its lease expires and the other gateways
/// take them over — never two gateways answering ARP for one address for long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LbOp {
    /// Stop serving: `ip addr del ADDR/32 dev IFACE`.
    Remove(Ipv4Addr),
    /// Serve: `ip addr replace ADDR/32 dev IFACE proto 83 noprefixroute valid_lft L
    /// preferred_lft L`, then [`ANNOUNCEMENTS`] gratuitous ARPs.
    Add {
        /// The address.
        addr: Ipv4Addr,
        /// Its lifetime, seconds.
        lifetime_secs: u32,
    },
    /// Keep serving: the same `ip addr replace` with a new lifetime; announced again when
    /// `announce` (a restarted agent's first pass: the external network may have moved its
    /// neighbour entry elsewhere in between).
    Refresh {
        /// The address.
        addr: Ipv4Addr,
        /// Its new lifetime, seconds.
        lifetime_secs: u32,
        /// Send the gratuitous ARPs too.
        announce: bool,
    },
}

/// The changes that bring `observed` (Seam's addresses on the interface, by their protocol) to
/// `want`, each address given `lifetime_secs`: removals first (an address given up is gone
/// before another is announced), then additions, then the refresh of what is kept. Idempotent:
/// a restarted agent adopts what is there and removes only what it no longer owns;
/// `announce_held` also announces the addresses it keeps (on its first pass).
pub fn plan_lb(
    want: &BTreeSet<Ipv4Addr>,
    observed: &BTreeSet<Ipv4Addr>,
    lifetime_secs: u32,
    announce_held: bool,
) -> Vec<LbOp> {
    let remove = observed.difference(want).map(|a| LbOp::Remove(*a));
    let add = want.difference(observed).map(|addr| LbOp::Add {
        addr: *addr,
        lifetime_secs,
    });
    let held = want.intersection(observed).map(|addr| LbOp::Refresh {
        addr: *addr,
        lifetime_secs,
        announce: announce_held,
    });
    remove.chain(add).chain(held).collect()
}

/// A gratuitous ARP announcement of `addr` by `mac` (a broadcast ARP request for its own
/// address, sender and target both `addr`, as keepalived and `arping -U` send it), padded to
/// Ethernet's 60-byte minimum. Neighbours that hold an entry for `addr` update it to `mac`.
pub fn gratuitous_arp(mac: [u8; 6], addr: Ipv4Addr) -> [u8; 60] {
    let mut frame = [0u8; 60];
    let ip = addr.octets();
    let parts: [&[u8]; 11] = [
        &[0xff; 6],    // destination: broadcast
        &mac,          // source
        &[0x08, 0x06], // EtherType ARP
        &[0x00, 0x01], // hardware type Ethernet
        &[0x08, 0x00], // protocol type IPv4
        &[6, 4],       // address lengths
        &[0x00, 0x01], // operation: request
        &mac,          // sender hardware address
        &ip,           // sender protocol address
        &[0; 6],       // target hardware address: unknown
        &ip,           // target protocol address: the same address
    ];
    let mut at = 0;
    for part in parts {
        if let Some(slot) = frame.get_mut(at..at + part.len()) {
            slot.copy_from_slice(part);
        }
        at += part.len();
    }
    frame
}

/// The gateway's external interface as the LoadBalancer needs it. Each method names the command
/// it mirrors.
pub trait LbKernel: Send + Sync {
    /// The /32 addresses with protocol [`LB_ADDRESS_PROTOCOL`] on `ifname` (`ip -4 addr show dev
    /// IFNAME proto 83`).
    fn observe_lb(&self, ifname: &str) -> impl Future<Output = Result<BTreeSet<Ipv4Addr>>> + Send;
    /// Executes one planned change (`ip addr replace|del`; `arping -U -c 3`). Adding an address
    /// held and removing an absent one succeed.
    fn apply_lb(&self, ifname: &str, op: &LbOp) -> impl Future<Output = Result<()>> + Send;
}

/// Conntrack entries of Services, as the agent needs them.
pub trait ConntrackKernel: Send + Sync {
    /// Deletes the conntrack entries of `flows` (`conntrack -D -p udp --orig-dst FRONTEND
    /// --reply-src BACKEND` for each; for a flow without a backend, the entries to FRONTEND that
    /// were not translated) and returns how many it deleted; entries that went away meanwhile
    /// are not an error.
    fn delete_conntrack(
        &self,
        flows: &[seam_nft::conntrack::StaleFlow],
    ) -> impl Future<Output = Result<usize>> + Send;
}

#[cfg(test)]
mod tests;
