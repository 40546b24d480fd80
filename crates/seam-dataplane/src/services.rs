//! What one node translates for Services ([`DesiredServices`]), from the Services with their
//! resolved backends (`seam_model::resolve`), as Kubernetes' Service proxies do:
//!
//! - the **ClusterIP** of every Service port is a frontend on every node, with the backends
//!   `internalTrafficPolicy` allows: all of them (`Cluster`), or only those on this node
//!   (`Local`; none here: connections are refused at once);
//! - every **`externalIPs`** address and every **NodePort** (types NodePort and LoadBalancer) is
//!   a frontend with the backends `externalTrafficPolicy` allows. With `Cluster` a connection
//!   from outside Seam's segments is masqueraded, so that a backend on another node replies
//!   through this node's conntrack; with `Local` only this node's backends are used and the
//!   client's address is kept;
//! - every **LoadBalancer address** (`status.loadBalancer.ingress`) is a frontend on every node
//!   (in-cluster clients translate where they are, as kube-proxy does) with all the backends and
//!   no masquerade, whatever `externalTrafficPolicy` says: the gateway that serves the address on
//!   the external network translates straight to the backends, and their replies to external
//!   addresses return through it anyway (the transit), so every backend sees the client's own
//!   address — what `Local` is for — and none is left out;
//! - **headless** Services, and Services the controller has not given a ClusterIP yet, get
//!   nothing (no address to translate; their NodePorts wait for the ClusterIP too);
//! - which backends are usable is Kubernetes' rule ([`seam_model::usable`]): the ready ones
//!   (all with `publishNotReadyAddresses`), else the serving terminating ones; a backend is
//!   local when its `node` (the endpoint's node, or the EndpointSlice's `nodeName`) is this node;
//! - **hairpin**: the addresses of local endpoints that are backends of some frontend (a pod
//!   reaching itself through its Service is masqueraded, or its reply would not pass the
//!   translation back);
//! - **external backends** (`snat_backends`): the addresses of external endpoints (servers on
//!   the external network, kind `External`) that are backends of some frontend. A client outside
//!   Seam's segments reaching one through a Service (bm1 through the gateway, say) is
//!   masqueraded: the server would answer the client directly, past the translation. Clients
//!   inside the segments keep their address (the server's replies to them return through the
//!   gateway and the client's node anyway);
//! - connections a frontend masquerades (`masquerade_outside`) take the node's underlay address
//!   (`node_address`), which a backend on another node routes back to this node.
//!
//! [`desired_services`] computes the whole; the agent caches [`service_frontends`] per Service
//! and calls [`assemble`], so a change of one Service recomputes one Service.
//!
//! Kubernetes differs in one place: kube-proxy sends in-cluster clients of an external IP of a
//! Service with `externalTrafficPolicy: Local` to every backend ("short-circuit"); one frontend
//! here has one backend list whoever the client is, so they get the node's local backends.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use seam_model::{
    Backend, ClusterIp, ResolvedPort, Segment, Service, ServiceType, SessionAffinity, TrafficPolicy,
};
pub use seam_nft::services::{DesiredServices, Frontend, FrontendKey};

/// Everything node `node` translates, from `services` (each with its ports resolved by
/// `seam_model::resolve`), Seam's `segments` (inside them nothing is masqueraded), the addresses
/// of the endpoints attached to this node (`local_endpoints`, for hairpin), the LoadBalancer
/// addresses this node serves on the external network (`lb_addresses`: a gateway's, from
/// `seam_dataplane::lb`; empty on other nodes), the addresses of the external endpoints
/// (`external_endpoints`, kind `External`) and the node's underlay address (`node_address`).
///
/// Two Services that claim one frontend (the same external IP and port, say): the first in
/// `services`' order keeps it.
pub fn desired_services<'a>(
    node: &str,
    services: impl IntoIterator<Item = (&'a Service, &'a [ResolvedPort])>,
    segments: impl IntoIterator<Item = &'a Segment>,
    local_endpoints: &BTreeSet<Ipv4Addr>,
    lb_addresses: &BTreeSet<Ipv4Addr>,
    external_endpoints: &BTreeSet<Ipv4Addr>,
    node_address: Option<Ipv4Addr>,
) -> DesiredServices {
    let frontends: Vec<Frontend> = services
        .into_iter()
        .flat_map(|(service, ports)| service_frontends(node, service, ports))
        .collect();
    let mut out = assemble(
        &frontends,
        segments.into_iter().map(|s| s.subnet),
        local_endpoints,
        lb_addresses,
    );
    out.snat_backends = backends_among(&out, external_endpoints);
    out.node_address = node_address;
    out
}

/// The addresses among `addresses` that are backends of a frontend of `desired`: its hairpin
/// (from the local endpoints) and `snat_backends` (from the external ones).
pub fn backends_among(
    desired: &DesiredServices,
    addresses: &BTreeSet<Ipv4Addr>,
) -> BTreeSet<Ipv4Addr> {
    desired
        .frontends
        .iter()
        .flat_map(|f| f.backends.iter().map(|(ip, _)| *ip))
        .filter(|ip| addresses.contains(ip))
        .collect()
}

/// The frontends of one Service on node `node` (see the module's rules), in the order of its
/// ports: ClusterIP, external IPs, LoadBalancer addresses, then the NodePort of each.
pub fn service_frontends(node: &str, service: &Service, ports: &[ResolvedPort]) -> Vec<Frontend> {
    let spec = &service.spec;
    let ClusterIp::Address(cluster_ip) = spec.cluster_ip else {
        return Vec::new();
    };
    let node_ports = matches!(
        spec.service_type,
        ServiceType::NodePort | ServiceType::LoadBalancer
    );
    let lb_addresses: Vec<Ipv4Addr> = if spec.service_type == ServiceType::LoadBalancer {
        service
            .status
            .load_balancer
            .ingress
            .iter()
            .map(|i| i.ip)
            .collect()
    } else {
        Vec::new()
    };
    let affinity_timeout = match spec.session_affinity {
        SessionAffinity::None => None,
        SessionAffinity::ClientIp { timeout_seconds } => Some(timeout_seconds),
    };
    let local = |policy: TrafficPolicy| (policy == TrafficPolicy::Local).then_some(node);
    let external_local = local(spec.external_traffic_policy);
    let mut out = Vec::new();
    for resolved in ports {
        let port = &resolved.port;
        let name = match &port.name {
            Some(name) if !name.is_empty() => format!("{}:{name}", service.key()),
            _ => format!("{}:{}", service.key(), port.port),
        };
        let backends = |local_node: Option<&str>| {
            usable_backends(
                &resolved.backends,
                spec.publish_not_ready_addresses,
                local_node,
            )
        };
        let frontend = |key, backends, masquerade_outside| Frontend {
            key,
            service: name.clone(),
            backends,
            affinity_timeout,
            masquerade_outside,
        };
        let address = |addr| FrontendKey::Address {
            addr,
            protocol: port.protocol,
            port: port.port,
        };
        // Computed once per policy, shared by the frontends that use it.
        let all = backends(None);
        let internal = match local(spec.internal_traffic_policy) {
            None => all.clone(),
            Some(node) => backends(Some(node)),
        };
        let external = match external_local {
            None => all.clone(),
            Some(node) => backends(Some(node)),
        };
        let masquerade_external = external_local.is_none();
        out.push(frontend(address(cluster_ip), internal, false));
        for &ip in &spec.external_ips {
            out.push(frontend(address(ip), external.clone(), masquerade_external));
        }
        for &ip in &lb_addresses {
            out.push(frontend(address(ip), all.clone(), false));
        }
        if let Some(node_port) = port.node_port.filter(|_| node_ports) {
            out.push(frontend(
                FrontendKey::NodePort {
                    protocol: port.protocol,
                    port: node_port,
                },
                external,
                masquerade_external,
            ));
        }
    }
    out
}

/// The node's [`DesiredServices`] from every Service's frontends ([`service_frontends`]): sorted
/// by key (the first of two with one key keeps it), hairpin from the backends among
/// `local_endpoints`, the segments' subnets and the LoadBalancer addresses this node serves
/// (`snat_backends` and `node_address` are left empty: the caller sets them).
pub fn assemble<'a>(
    frontends: impl IntoIterator<Item = &'a Frontend>,
    segment_subnets: impl IntoIterator<Item = Ipv4Net>,
    local_endpoints: &BTreeSet<Ipv4Addr>,
    lb_addresses: &BTreeSet<Ipv4Addr>,
) -> DesiredServices {
    let mut by_key: BTreeMap<FrontendKey, &Frontend> = BTreeMap::new();
    for f in frontends {
        by_key.entry(f.key).or_insert(f);
    }
    let hairpin = by_key
        .values()
        .flat_map(|f| f.backends.iter().map(|(ip, _)| *ip))
        .filter(|ip| local_endpoints.contains(ip))
        .collect();
    DesiredServices {
        frontends: by_key.into_values().cloned().collect(),
        hairpin,
        segment_subnets: segment_subnets.into_iter().collect(),
        lb_addresses: lb_addresses.clone(),
        node_address: None,
        snat_backends: BTreeSet::new(),
    }
}

/// The (address, port) pairs of the usable backends, sorted, without repeats.
fn usable_backends(
    backends: &[Backend],
    publish_not_ready: bool,
    local_node: Option<&str>,
) -> Vec<(Ipv4Addr, u16)> {
    let mut out: Vec<(Ipv4Addr, u16)> = seam_model::usable(backends, publish_not_ready, local_node)
        .into_iter()
        .map(|b| (b.ip, b.port))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
