use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use seam_model::MacAddr;

/// One segment as a node realizes it: a bridge holding the anycast gateway and a VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSpec {
    /// VXLAN network identifier; also names the bridge and VXLAN device.
    pub vni: u32,
    /// Gateway address with the segment's prefix length, put on the bridge.
    pub gateway: Ipv4Net,
    /// Gateway MAC (the same on every node), put on the bridge.
    pub gateway_mac: MacAddr,
    /// MTU of the bridge, the VXLAN device and every port.
    pub mtu: u32,
}

/// Where VXLAN packets leave the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    /// Underlay interface name (`eth0`).
    pub ifname: String,
    /// This node's tunnel endpoint address.
    pub ip: Ipv4Addr,
    /// The prefix length of that address on the interface: the nodes inside that subnet share
    /// an L2 segment with this one.
    pub prefix_len: u8,
}

impl Underlay {
    /// The on-link subnet of the underlay address (the address itself when the prefix length is
    /// out of range).
    pub fn subnet(&self) -> ipnet::Ipv4Net {
        ipnet::Ipv4Net::new(self.ip, self.prefix_len)
            .unwrap_or_else(|_| ipnet::Ipv4Net::from(self.ip))
    }

    /// Where this node is on the underlay once its interface holds `addresses` (in the kernel's
    /// order): the same address while the interface still holds it (with the prefix length it
    /// has now), else the interface's first one. `None` while the interface has no IPv4 address
    /// at all: the caller keeps what it had.
    ///
    /// Staying on an address the interface still holds keeps a node from moving when a second
    /// one is added (a VIP of keepalived's, say) and makes a replacement one move whatever order
    /// the add and the delete come in.
    pub fn follow(&self, addresses: &[Ipv4Net]) -> Option<Underlay> {
        let now = addresses
            .iter()
            .find(|a| a.addr() == self.ip)
            .or_else(|| addresses.first())?;
        Some(Underlay {
            ifname: self.ifname.clone(),
            ip: now.addr(),
            prefix_len: now.prefix_len(),
        })
    }
}

/// The underlay interface as the kernel holds it now (`ip -4 addr show dev IFNAME`, `ip link
/// show dev IFNAME`): what a node's underlay address, its MAC and the overlay MTU come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnderlayInterface {
    /// Its IPv4 addresses with their prefix lengths, in the kernel's order (primary first).
    pub addresses: Vec<Ipv4Net>,
    /// Its MAC address, when it has a unicast one.
    pub mac: Option<MacAddr>,
    /// Its MTU.
    pub mtu: u32,
}

/// An endpoint on another node: reached through the VXLAN device with static entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RemoteEntry {
    /// Segment VNI.
    pub vni: u32,
    /// Endpoint address.
    pub ip: Ipv4Addr,
    /// Endpoint MAC.
    pub mac: MacAddr,
    /// Underlay address of the endpoint's node.
    pub node_ip: Ipv4Addr,
    /// Reached routed (see [`crate::routed`]): once the transit's route `IP/32 via NODE_IP`
    /// exists, the neighbour entry (what proxy ARP answers) is the segment's gateway MAC, so
    /// pods send to their node, which routes over the underlay. The FDB entry stays either way.
    pub routed: bool,
}

/// Everything Seam wants on one node, apart from the attachments' own veths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredNode {
    /// The underlay.
    pub underlay: Underlay,
    /// Segments by VNI.
    pub segments: BTreeMap<u32, SegmentSpec>,
    /// Endpoints on other nodes.
    pub remote: BTreeSet<RemoteEntry>,
    /// Host ports of local attachments that must stay, by name, with their segment VNI.
    pub local_ports: BTreeMap<String, u32>,
    /// Ports of the VMs on this node ([`seam_model::vm_port_name`]), with their segment VNI.
    /// The hypervisor makes the device (a tap, or a lab VM's veth); the agent plugs it in.
    pub vm_ports: BTreeMap<String, u32>,
}

/// What Seam finds of its own on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Segments found, by VNI.
    pub segments: BTreeMap<u32, ObservedSegment>,
    /// Static VXLAN FDB entries `(vni, mac, dst)`.
    pub fdb: BTreeSet<(u32, MacAddr, Ipv4Addr)>,
    /// Static neighbour entries on VXLAN devices `(vni, ip, mac)`.
    pub neighbours: BTreeSet<(u32, Ipv4Addr, MacAddr)>,
    /// Seam's routes to a peer's underlay `(dst /32, via)` (protocol
    /// [`crate::TRANSIT_ROUTE_PROTOCOL`], kept by the transit): a routed endpoint's neighbour
    /// entry moves to the gateway MAC only once its route is there.
    pub routes: BTreeSet<(Ipv4Addr, Ipv4Addr)>,
    /// Host ports found, with the VNI of the bridge they are plugged into (if any).
    pub host_ports: BTreeMap<String, Option<u32>>,
    /// VM ports found (`tv…`), with the VNI of the bridge they are plugged into (if any) and
    /// whether they are up with the segment MTU.
    pub vm_ports: BTreeMap<String, ObservedVmPort>,
    /// Host and VM ports plugged into a Seam bridge without hairpin mode: the bridge would
    /// drop a Service's hairpin traffic (a pod reaching itself through its Service), which
    /// must leave through the port it came in on.
    pub unhairpinned: BTreeSet<String>,
}

/// What exists of one VM port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObservedVmPort {
    /// The VNI of the Seam bridge it is plugged into.
    pub vni: Option<u32>,
    /// Its MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
}

/// What exists of one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedSegment {
    /// The bridge exists, is up, has the gateway MAC and MTU.
    pub bridge_ok: bool,
    /// The VXLAN device exists with the right VNI/local address, is up and plugged in.
    pub vxlan_ok: bool,
    /// The gateway address is on the bridge.
    pub gateway_ok: bool,
    /// The VXLAN device's local (source) address, when it has one: a node whose underlay
    /// address changed must rebuild the device on the new one.
    pub vxlan_local: Option<Ipv4Addr>,
}

/// One change to a node's dataplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOp {
    /// Create or repair the bridge, VXLAN device and gateway of a segment (idempotent; a VXLAN
    /// device bound to another local address than the underlay's is made anew, without its
    /// entries).
    EnsureSegment {
        /// The segment.
        spec: SegmentSpec,
        /// The underlay to bind the VXLAN device to.
        underlay: Underlay,
    },
    /// Remove a segment's bridge and VXLAN device (`ip link del`).
    DeleteSegment {
        /// Its VNI.
        vni: u32,
    },
    /// `bridge fdb add MAC dev seam-vVNI dst NODE self permanent` (+ the bridge's master entry).
    FdbAdd(RemoteEntry),
    /// Removes a static FDB entry.
    FdbDel {
        /// Segment VNI.
        vni: u32,
        /// Endpoint MAC.
        mac: MacAddr,
        /// Node address it pointed at.
        dst: Ipv4Addr,
    },
    /// `ip neigh replace IP lladdr MAC dev seam-vVNI nud permanent` (answered by VXLAN proxy ARP).
    NeighAdd {
        /// Segment VNI.
        vni: u32,
        /// Endpoint address.
        ip: Ipv4Addr,
        /// Endpoint MAC.
        mac: MacAddr,
    },
    /// Removes a static neighbour entry.
    NeighDel {
        /// Segment VNI.
        vni: u32,
        /// Endpoint address.
        ip: Ipv4Addr,
    },
    /// Removes a stale attachment's host veth.
    DeletePort {
        /// Its name.
        host_ifname: String,
    },
    /// Plugs a VM's port into its segment's bridge, with the segment MTU, and sets it up
    /// (`ip link set tv… master seam-bVNI mtu MTU up`).
    PlugVmPort {
        /// The port.
        ifname: String,
        /// Segment VNI.
        vni: u32,
        /// Segment MTU.
        mtu: u32,
    },
    /// Sets hairpin mode on a host or VM port plugged into a Seam bridge
    /// (`bridge link set dev … hairpin on`), for a port attached before Seam set it.
    SetHairpin {
        /// The port.
        ifname: String,
    },
    /// Tells the endpoints behind `ports` (local pods' and VMs' host ports of the segment) that
    /// `ip` is now at `mac` (the segment's gateway MAC: the endpoint is reached routed): one
    /// gratuitous ARP out of each port, so a pod that cached the endpoint's own MAC while it was
    /// reached through the VXLAN moves to the routed path (a pod updates an entry it holds).
    /// Best effort: a pod that misses it keeps the VXLAN path, which still works.
    AnnounceRouted {
        /// The routed endpoint's address.
        ip: Ipv4Addr,
        /// The segment's gateway MAC.
        mac: MacAddr,
        /// The host ports to send it out of.
        ports: Vec<String>,
    },
    /// Takes a port of a VM that no longer runs here out of its bridge and sets it down
    /// (`ip link set tv… nomaster down`). The device belongs to the hypervisor: never deleted.
    UnplugVmPort {
        /// The port.
        ifname: String,
    },
}

/// One sandbox attachment to create or check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAttach {
    /// Host-side veth name.
    pub host_ifname: String,
    /// Path of the sandbox network namespace.
    pub netns: String,
    /// Interface name inside the sandbox.
    pub ifname: String,
    /// Address with the segment prefix length.
    pub address: Ipv4Net,
    /// Default gateway.
    pub gateway: Ipv4Addr,
    /// Sandbox interface MAC.
    pub mac: MacAddr,
    /// Segment VNI (names the bridge to plug into).
    pub vni: u32,
    /// MTU of both ends.
    pub mtu: u32,
}

/// What attach built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedPort {
    /// Host-side veth MAC.
    pub host_mac: MacAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<Ipv4Net> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn a_node_follows_its_underlay_address_and_stays_on_one_it_still_holds() {
        let now = Underlay {
            ifname: "eth0".into(),
            ip: Ipv4Addr::new(198, 18, 0, 12),
            prefix_len: 15,
        };
        let at = |ip: [u8; 4], prefix_len| Underlay {
            ifname: "eth0".into(),
            ip: ip.into(),
            prefix_len,
        };
        // Unchanged.
        assert_eq!(now.follow(&nets(&["198.18.0.12/15"])), Some(now.clone()));
        // Replaced: the new address, in another subnet too.
        assert_eq!(
            now.follow(&nets(&["198.18.0.42/15"])),
            Some(at([198, 18, 0, 42], 15))
        );
        assert_eq!(
            now.follow(&nets(&["192.0.2.12/24"])),
            Some(at([192, 0, 2, 12], 24))
        );
        // A second address, before or after it: the node stays (a replacement half done, or a
        // VIP), with the prefix length its address has now.
        assert_eq!(
            now.follow(&nets(&["198.18.0.42/15", "198.18.0.12/32"])),
            Some(at([198, 18, 0, 12], 32))
        );
        assert_eq!(
            now.follow(&nets(&["198.18.0.12/15", "198.18.0.99/15"])),
            Some(now.clone())
        );
        // No IPv4 address at all: nothing to follow.
        assert_eq!(now.follow(&[]), None);
    }
}
