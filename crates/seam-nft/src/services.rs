//! Services in `table inet seam`: what a node translates (the input, [`DesiredServices`], made by
//! `seam_dataplane::services` from the Services and their backends), and how the table holds it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use seam_model::PortProtocol;

/// Where a Service is reached on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrontendKey {
    /// A ClusterIP, an external IP or a LoadBalancer address, with a Service port.
    Address {
        /// The address.
        addr: Ipv4Addr,
        /// The protocol.
        protocol: PortProtocol,
        /// The Service port.
        port: u16,
    },
    /// A NodePort: any local address of the node.
    NodePort {
        /// The protocol.
        protocol: PortProtocol,
        /// The node port.
        port: u16,
    },
}

/// One frontend and the backends this node sends its new connections to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frontend {
    /// Where the Service is reached.
    pub key: FrontendKey,
    /// `namespace/name:port` (the port's name, or its number), for comments and `seam explain`.
    pub service: String,
    /// The usable backends on this node (address, port), sorted; empty: connections are refused
    /// at once.
    pub backends: Vec<(Ipv4Addr, u16)>,
    /// ClientIP session affinity, with its timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// Connections from outside [`DesiredServices::segment_subnets`] are masqueraded (so that a
    /// backend on another node replies through this one).
    pub masquerade_outside: bool,
}

/// Everything a node translates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredServices {
    /// The frontends, sorted by key.
    pub frontends: Vec<Frontend>,
    /// Addresses of local endpoints that are backends: a connection of one to itself through a
    /// Service (hairpin) is masqueraded, or it would see its own address as the source.
    pub hairpin: BTreeSet<Ipv4Addr>,
    /// Seam's segments: sources inside them are never masqueraded.
    pub segment_subnets: BTreeSet<Ipv4Net>,
    /// LoadBalancer addresses this node serves (gateways): anything sent to them that is not a
    /// Service port is dropped before it reaches the node's own sockets.
    pub lb_addresses: BTreeSet<Ipv4Addr>,
}
