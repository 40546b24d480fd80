//! Gateway role and routes to external endpoints: keeps the node's transit to gateway nodes
//! (`seam_dataplane::transit`) equal to what the view says.
//!
//! Every node routes each external endpoint's address (an `Endpoint` of kind `external`, whose
//! `node` is its gateway) as a /32 to that gateway node (to a live gateway instead when that one's
//! node lease is gone: `seam_dataplane::lb::return_gateway`): over the underlay without encapsulation
//! when the gateway publishes `transitEncap: crossSubnet` and its underlay address is in this
//! node's underlay subnet, else through the transit VXLAN device. A gateway node keeps the
//! device up to receive (loose rp_filter on it, and on its underlay interface when it accepts
//! the routed transit) and routes on to its external network with its own routes (connected or
//! static, the operator's), without NAT. Any node loosens its underlay interface's reverse-path
//! filter when it SNATs Service clients to its underlay address ([`snats_to_node`]).
//! Return traffic needs nothing here: the gateway holds every segment like any node.
//!
//! The same loop keeps the egress of segments with `snat` on (`seam_dataplane::snat`): on every
//! node that is not a gateway, policy rules send their traffic for destinations the node has no
//! specific route to through the transit to the egress gateway (the first gateway node by name
//! that holds a node lease, else the first by name);
//! on every node, `table ip seam-nat` masquerades what leaves Seam from those segments towards a
//! destination Seam does not know.
//!
//! And the way back of connections through the gateways (`seam_dataplane::reply`), while any
//! Service holds a LoadBalancer address: for every other live gateway, a slot, a policy rule and
//! a table whose default route leads to that gateway the way its external endpoints' routes do,
//! and the reply chains in `table ip seam-nat` that record each new connection's gateway and
//! mark its replies; on a gateway, also the connections from its external interface, whose
//! replies skip the table its routes to other gateways' external endpoints then move to.
//!
//! Level-triggered like [`crate::reconcile`], in its own loop so the segment reconciler stays as
//! it is: it looks at the view's revision every [`POLL`] and plans when it changed, and at least
//! every [`RESYNC`] (catches drift made by hand).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use seam_dataplane::reply::{reply_gateways, reply_slots};
use seam_dataplane::routed::{endpoint_routed, routes_segments};
pub use seam_dataplane::routed::{routed_directly, LocalNode};
use seam_dataplane::{
    plan_transit, DesiredTransit, Egress, Firewall, NodeKernel, ReplyRoute, TransitKernel,
    TransitRoute, TransitStep,
};
use seam_model::{
    transit_mac, EndpointKind, NodeRole, Service, ServiceType, TrafficPolicy, TransitEncap,
    TRANSIT_VNI,
};
use seam_nft::nat::DesiredNat;
use seam_nft::reply::{DesiredReply, ReplyGateway};

use crate::Agent;

/// How often the loop looks for a new view revision.
pub const POLL: Duration = Duration::from_millis(100);
/// How often it plans even without changes.
pub const RESYNC: Duration = Duration::from_secs(30);

/// The node's desired transit and NAT table (`None`: no segment has `snat` on, no table), from
/// the view.
pub async fn desired_transit<K>(agent: &Agent<K>) -> (DesiredTransit, Option<DesiredNat>) {
    let view = agent.view.read().await;
    let me = &agent.config.node;
    // One read: the device, its MAC and the routed decisions all from the same address.
    let underlay = agent.underlay().underlay;
    let local = local_node(agent, &underlay);
    let gateway = agent.config.role == NodeRole::Gateway;
    // Decided once per peer node, not per endpoint.
    let routed_peers: BTreeSet<&str> = view
        .nodes
        .values()
        .filter(|n| routed_directly(&local, n))
        .map(|n| n.name.as_str())
        .collect();
    let segment_peers: BTreeSet<&str> = view
        .nodes
        .values()
        .filter(|n| routes_segments(&local, n))
        .map(|n| n.name.as_str())
        .collect();
    // While replies are recorded, a gateway keeps its routes to other gateways' external
    // endpoints in their own table, which the replies of connections from its external network
    // skip (`seam_dataplane::reply`).
    let recording = !seam_dataplane::lb::lb_addresses(view.services.values()).is_empty();
    let mut routes = BTreeSet::new();
    let mut gateway_routes = BTreeSet::new();
    for ep in view.endpoints.values() {
        // An external endpoint is reached through its gateway, or through a live one when its
        // gateway's lease is gone (the one that took its LoadBalancer addresses over).
        let via = match ep.kind {
            EndpointKind::External => {
                seam_dataplane::lb::return_gateway(&ep.node, ep.ip, &view.nodes, &view.node_leases)
            }
            _ => ep.node.as_str(),
        };
        if via == me {
            continue;
        }
        let Some(node) = view.nodes.get(via) else {
            continue;
        };
        let transit_direct = routed_peers.contains(node.name.as_str());
        // A routed segment's endpoint on a peer of this subnet (`seam_dataplane::routed`).
        let segment_routed = matches!(ep.kind, EndpointKind::Pod | EndpointKind::Vm)
            && view.segments.get(&ep.segment).is_some_and(|s| {
                endpoint_routed(s.forwarding, segment_peers.contains(node.name.as_str()))
            });
        let direct = transit_direct || segment_routed;
        let wanted = match ep.kind {
            EndpointKind::External => node.role == NodeRole::Gateway,
            // Routed segments, and the way back from a gateway where the routed transit
            // applies (one route serves both); else the segment's bridge and VXLAN carry it.
            EndpointKind::Pod | EndpointKind::Vm => segment_routed || (gateway && transit_direct),
            EndpointKind::Host => false,
        };
        if wanted {
            let route = TransitRoute {
                dst: ep.ip,
                via: node.underlay_ip,
                via_mac: transit_mac(node.underlay_ip),
                direct,
            };
            if gateway && recording && ep.kind == EndpointKind::External {
                gateway_routes.insert(route);
            } else {
                routes.insert(route);
            }
        }
    }
    let sources: BTreeSet<Ipv4Net> = view
        .segments
        .values()
        .filter(|s| s.snat)
        .map(|s| s.subnet)
        .collect();
    let external = agent
        .config
        .external_interface
        .as_deref()
        .filter(|_| gateway && recording);
    let (replies, reply) = match recording {
        true => desired_replies(&view, &local, &agent.config.underlay.ifname, external),
        false => Default::default(),
    };
    let nat = (!sources.is_empty() || !reply.is_empty()).then(|| DesiredNat {
        reply,
        sources: sources.clone(),
        known: view
            .segments
            .values()
            .map(|s| s.subnet)
            .chain(view.nodes.values().map(|n| Ipv4Net::from(n.underlay_ip)))
            .chain(
                view.endpoints
                    .values()
                    .filter(|e| matches!(e.kind, EndpointKind::External | EndpointKind::Host))
                    .map(|e| Ipv4Net::from(e.ip)),
            )
            .collect(),
    });
    // A gateway is its own exit; any other node sends the egress to the first gateway by name
    // (every node picks the same one, and only a change of gateways moves it).
    let egress = if gateway || sources.is_empty() {
        None
    } else {
        // A gateway whose node lease is gone is skipped while another holds one.
        let gateways = || {
            view.nodes
                .values()
                .filter(|n| n.role == NodeRole::Gateway && n.name != *me)
        };
        gateways()
            .find(|n| view.node_leases.contains_key(&n.name))
            .or_else(|| gateways().next())
            .map(|gw| Egress {
                gateway_ip: gw.underlay_ip,
                gateway_mac: transit_mac(gw.underlay_ip),
                sources,
            })
    };
    let transit = DesiredTransit {
        present: gateway
            || routes.iter().any(|r| !r.direct)
            || gateway_routes.iter().any(|r| !r.direct)
            || egress.is_some()
            || replies.iter().any(|r| !r.direct),
        vni: TRANSIT_VNI,
        mac: transit_mac(underlay.ip),
        mtu: agent.config.mtu,
        underlay,
        gateway,
        // A node that publishes `segmentEncap: crossSubnet` loosened it before publishing
        // (seamd); keeping it so repairs drift.
        loose_underlay: !routed_peers.is_empty()
            || !segment_peers.is_empty()
            || agent.config.segment_encap == TransitEncap::CrossSubnet
            || snats_to_node(view.services.values()),
        routes,
        egress,
        replies,
        gateway_routes,
    };
    (transit, nat)
}

/// The way back through each other live gateway: its table's route (over the routed transit
/// when this node reaches it so, else through the transit device) and what the reply chains
/// recognise it by; on a gateway, its `external` interface too. Planned only while a Service
/// holds a LoadBalancer address: else no gateway translates, and every reply keeps the node's
/// ordinary routes.
fn desired_replies(
    view: &crate::view::ClusterView,
    local: &LocalNode<'_>,
    underlay: &str,
    external: Option<&str>,
) -> (BTreeSet<ReplyRoute>, DesiredReply) {
    let mut routes = BTreeSet::new();
    let mut reply = DesiredReply {
        underlay: underlay.to_string(),
        external: external.map(str::to_string),
        ..DesiredReply::default()
    };
    let gateways = reply_gateways(local.name, &view.nodes, &view.node_leases);
    let slots = reply_slots(gateways.iter().map(|g| g.name.as_str()));
    for gw in gateways {
        let Some(&slot) = slots.get(gw.name.as_str()) else {
            continue;
        };
        let direct = routed_directly(local, gw);
        routes.insert(ReplyRoute {
            slot,
            via: gw.underlay_ip,
            via_mac: transit_mac(gw.underlay_ip),
            direct,
        });
        reply.gateways.insert(ReplyGateway {
            slot,
            underlay_ip: gw.underlay_ip,
            routed_from: gw.underlay_mac.filter(|_| direct),
        });
    }
    if !reply.gateways.is_empty() {
        reply.inside = view
            .segments
            .values()
            .map(|s| s.subnet)
            .chain(view.nodes.values().map(|n| Ipv4Net::from(n.underlay_ip)))
            .collect();
    }
    (routes, reply)
}

/// Whether some Service makes every node SNAT clients to its underlay address (a NodePort or
/// an external IP with `externalTrafficPolicy: Cluster`, see `seam_dataplane::services`): a
/// backend on another node replies to that address over the underlay, from its pod address,
/// which this node routes into the segment's bridge. Strict reverse-path filtering
/// (`rp_filter` 1, some distributions' default) on the underlay interface would drop the reply,
/// so it is loosened there, as kube-proxy's and Calico's documentation advise.
pub fn snats_to_node<'a>(services: impl IntoIterator<Item = &'a Service>) -> bool {
    services.into_iter().any(|s| {
        let spec = &s.spec;
        let node_ports = matches!(
            spec.service_type,
            ServiceType::NodePort | ServiceType::LoadBalancer
        ) && spec.ports.iter().any(|p| p.node_port.is_some());
        spec.external_traffic_policy == TrafficPolicy::Cluster
            && (node_ports || !spec.external_ips.is_empty())
    })
}

/// This node, as the routed paths see it (`seam_dataplane::routed`), on `underlay` (its
/// [`Agent::underlay`] as the caller read it).
pub fn local_node<'a, K>(
    agent: &'a Agent<K>,
    underlay: &seam_dataplane::Underlay,
) -> LocalNode<'a> {
    LocalNode {
        name: &agent.config.node,
        role: agent.config.role,
        transit_encap: agent.config.transit_encap,
        segment_encap: agent.config.segment_encap,
        on_link: underlay.subnet(),
    }
}

/// Observes, plans and applies once; returns the number of operations.
pub async fn reconcile_transit<K: TransitKernel + Firewall>(
    kernel: &K,
    want: &DesiredTransit,
    nat: Option<&DesiredNat>,
) -> seam_dataplane::Result<usize> {
    let observed = kernel.observe_transit(want).await?;
    let observed_nat = kernel.list_nat().await?.unwrap_or_default();
    let ops = plan_transit(want, nat, &observed, &observed_nat);
    let mut first_error = None;
    for op in &ops {
        // The NAT table is Seam's nftables, changed through the firewall, in its planned place.
        let done = match op {
            TransitStep::Nat(nat) => kernel.apply_nat(nat).await,
            TransitStep::Kernel(op) => kernel.apply_transit(op).await,
        };
        if let Err(e) = done {
            tracing::warn!(?op, error = %e, "transit operation failed");
            first_error.get_or_insert(e);
        }
    }
    if !ops.is_empty() {
        tracing::info!(
            operations = ops.len(),
            routes = want.routes.len(),
            snat_segments = nat.map_or(0, |n| n.sources.len()),
            egress = ?want.egress.as_ref().map(|e| e.gateway_ip),
            "transit reconciled"
        );
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(ops.len()),
    }
}

/// Runs forever (spawned by `seamd`) on `kernel`, a connection of its own (netlink allows one
/// dump at a time per socket, and the segment reconciler dumps on the agent's). Nothing happens
/// before the first full controller view.
pub async fn run<K: NodeKernel + Firewall + 'static, T: TransitKernel + Firewall>(
    agent: Arc<Agent<K>>,
    kernel: T,
) {
    let mut seen: Option<u64> = None;
    let mut last_pass = Instant::now();
    loop {
        tokio::time::sleep(POLL).await;
        if !agent.is_ready() {
            continue;
        }
        let revision = agent.view.read().await.revision;
        let nudged = agent
            .transit_now
            .swap(false, std::sync::atomic::Ordering::AcqRel);
        if seen == Some(revision) && last_pass.elapsed() < RESYNC && !nudged {
            continue;
        }
        let (want, nat) = desired_transit(&agent).await;
        last_pass = Instant::now();
        let result = reconcile_transit(&kernel, &want, nat.as_ref()).await;
        if result.as_ref().is_ok_and(|&ops| ops > 0) {
            // A routed endpoint's neighbour entry follows its route (the segment reconciler
            // plans it from the routes it observes): let it look now, not at its resync.
            agent.reconcile_now.notify_one();
        }
        match result {
            Ok(_) => seen = Some(revision),
            Err(e) => tracing::warn!(error = %e, "transit reconcile failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seam_model::Node;

    fn node(name: &str, ip: [u8; 4], role: NodeRole, transit_encap: TransitEncap) -> Node {
        Node {
            name: name.into(),
            underlay_ip: ip.into(),
            role,
            transit_encap,
            underlay_prefix_len: Some(24),
            underlay_mac: None,
            segment_encap: Default::default(),
        }
    }

    #[test]
    fn only_a_gateway_and_a_node_that_both_accept_it_in_one_subnet_are_routed_directly() {
        use NodeRole::{Gateway, Worker};
        use TransitEncap::{Always, CrossSubnet};
        let local = |role, transit_encap| LocalNode {
            name: "n1",
            role,
            transit_encap,
            segment_encap: TransitEncap::Always,
            on_link: "198.18.0.11/24".parse().unwrap(),
        };
        let n1 = local(Worker, CrossSubnet);
        assert!(routed_directly(
            &n1,
            &node("gw1", [198, 18, 0, 1], Gateway, CrossSubnet)
        ));
        // Another subnet: a router between them, encapsulated.
        assert!(!routed_directly(
            &n1,
            &node("gw1", [198, 18, 1, 1], Gateway, CrossSubnet)
        ));
        // Either side asks for encapsulation.
        assert!(!routed_directly(
            &n1,
            &node("gw1", [198, 18, 0, 1], Gateway, Always)
        ));
        assert!(!routed_directly(
            &local(Worker, Always),
            &node("gw1", [198, 18, 0, 1], Gateway, CrossSubnet)
        ));
        // An agent from before the setting publishes nothing: encapsulated.
        let old: Node =
            serde_json::from_str(r#"{"name":"gw1","underlayIp":"198.18.0.1","role":"gateway"}"#)
                .unwrap();
        assert!(!routed_directly(&n1, &old));
        // Two workers use the segments' VXLAN, whatever they publish; a gateway routes back.
        assert!(!routed_directly(
            &n1,
            &node("n2", [198, 18, 0, 12], Worker, CrossSubnet)
        ));
        assert!(routed_directly(
            &local(Gateway, CrossSubnet),
            &node("n2", [198, 18, 0, 12], Worker, CrossSubnet)
        ));
        // The gateway's own subnet must hold this node as well: 198.18.0.16/28 does not.
        let narrow = Node {
            underlay_prefix_len: Some(28),
            ..node("gw1", [198, 18, 0, 20], Gateway, CrossSubnet)
        };
        assert!(!routed_directly(&n1, &narrow));
        let unknown = Node {
            underlay_prefix_len: None,
            underlay_mac: None,
            segment_encap: Default::default(),
            ..narrow
        };
        assert!(!routed_directly(&n1, &unknown));
        // Not with itself.
        assert!(!routed_directly(
            &local(Gateway, CrossSubnet),
            &node("n1", [198, 18, 0, 11], Gateway, CrossSubnet)
        ));
    }

    #[test]
    fn replies_go_back_through_each_other_live_gateway_and_a_gateway_records_its_external_side() {
        use seam_model::{
            LoadBalancerIngress, LoadBalancerStatus, MacAddr, NodeLease, Service, ServiceSpec,
            ServiceStatus, ServiceType,
        };
        let mut view = crate::view::ClusterView::default();
        let gw = |name: &str, k: u8, encap| Node {
            underlay_mac: Some(MacAddr([2, 0, 0, 0, 1, k])),
            segment_encap: Default::default(),
            ..node(name, [198, 18, 0, k], NodeRole::Gateway, encap)
        };
        for n in [
            gw("gw1", 1, TransitEncap::CrossSubnet),
            gw("gw2", 2, TransitEncap::Always),
            gw("gw3", 3, TransitEncap::CrossSubnet),
            node(
                "n1",
                [198, 18, 0, 11],
                NodeRole::Worker,
                TransitEncap::CrossSubnet,
            ),
        ] {
            view.nodes.insert(n.name.clone(), n);
        }
        for l in ["gw1", "gw2"] {
            view.node_leases
                .insert(l.into(), NodeLease { node: l.into() });
        }
        let local = LocalNode {
            name: "n1",
            role: NodeRole::Worker,
            transit_encap: TransitEncap::CrossSubnet,
            segment_encap: TransitEncap::Always,
            on_link: "198.18.0.11/24".parse().unwrap(),
        };
        let svc = Service {
            name: "lb".into(),
            namespace: "web".into(),
            labels: Default::default(),
            annotations: Default::default(),
            spec: ServiceSpec {
                service_type: ServiceType::LoadBalancer,
                ..Default::default()
            },
            status: ServiceStatus {
                load_balancer: LoadBalancerStatus {
                    ingress: vec![LoadBalancerIngress {
                        ip: "203.0.113.200".parse().unwrap(),
                        ip_mode: None,
                    }],
                },
                conditions: vec![],
            },
        };
        view.services.insert(svc.key(), svc);
        let (routes, reply) = desired_replies(&view, &local, "eth0", None);
        let slots = reply_slots(["gw1", "gw2"]);
        // gw3 holds no lease: no way back through it. gw1 is reached over the routed transit
        // (and told by its MAC), gw2 through the transit device (by the outer source only).
        let via = |k| std::net::Ipv4Addr::new(198, 18, 0, k);
        assert_eq!(
            routes,
            [
                ReplyRoute {
                    slot: slots["gw1"],
                    via: via(1),
                    via_mac: transit_mac(via(1)),
                    direct: true
                },
                ReplyRoute {
                    slot: slots["gw2"],
                    via: via(2),
                    via_mac: transit_mac(via(2)),
                    direct: false
                },
            ]
            .into()
        );
        assert_eq!(
            reply.gateways,
            [
                ReplyGateway {
                    slot: slots["gw1"],
                    underlay_ip: via(1),
                    routed_from: Some(MacAddr([2, 0, 0, 0, 1, 1])),
                },
                ReplyGateway {
                    slot: slots["gw2"],
                    underlay_ip: via(2),
                    routed_from: None,
                },
            ]
            .into()
        );
        assert!(reply.inside.contains(&"198.18.0.11/32".parse().unwrap()));
        // On gw1 itself: only gw2.
        let on_gw1 = LocalNode {
            name: "gw1",
            role: NodeRole::Gateway,
            ..local
        };
        let (routes, reply) = desired_replies(&view, &on_gw1, "eth0", Some("eth1"));
        assert_eq!(routes.iter().map(|r| r.via).collect::<Vec<_>>(), [via(2)]);
        assert_eq!(reply.external.as_deref(), Some("eth1"));
    }
}
