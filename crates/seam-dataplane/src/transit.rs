//! The transit to gateway nodes: how a node sends traffic for external endpoints (servers outside
//! the overlay) to the gateway node they are reached through, without NAT.
//!
//! Every node that routes to external endpoints, and every gateway node, has one extra VXLAN
//! device, [`TRANSIT_DEVICE`] (VNI [`seam_model::TRANSIT_VNI`], not in any bridge: an L3
//! interface), whose MAC is derived from the node's underlay address
//! ([`seam_model::transit_mac`]). A node that is not the gateway of an external address holds
//! `ADDR/32 via GW_UNDERLAY dev seam-xt onlink`, a permanent neighbour entry
//! `GW_UNDERLAY lladdr transit_mac(GW) dev seam-xt` and a static FDB entry
//! `transit_mac(GW) dev seam-xt dst GW_UNDERLAY`: a pod's packet routed by its node's segment
//! gateway leaves encapsulated towards the gateway node, whose transit device owns that MAC and
//! hands it to its IP stack, which routes it to the external network with the pod's own source
//! address. Replies come back by the distributed router: the gateway node holds every segment's
//! bridge and the static entries of every endpoint like any node, so it routes the reply into the
//! pod's segment and the VXLAN FDB takes it to the pod's node.
//!
//! The routed transit: two nodes that both publish `transitEncap: crossSubnet` (the `seamd`
//! default), share an underlay subnet and of which one is a gateway send each other this traffic
//! without encapsulation. The node routes `ADDR/32 via GW_UNDERLAY proto 83` (a [`TransitRoute`]
//! with `direct`) over its underlay interface, and the gateway routes the way back the same way:
//! `POD/32 via NODE_UNDERLAY proto 83` for every pod and VM on such a node, instead of into the
//! segment's bridge and VXLAN. Both keep reverse-path filtering loose on their underlay
//! interface, where the other side's overlay source addresses now arrive. The two share an L2
//! segment, so no router sits between them to drop those addresses, and a packet is routed as it
//! is, as on the gateway's own underlay path, instead of paying for the VXLAN encapsulation (a
//! fifth of the throughput in `seam-bench gateway`). Nodes in other subnets, and nodes or
//! gateways started with `--transit-encap always`, keep the encapsulation. Calico's `CrossSubnet`
//! mode and Antrea's hybrid mode make the same choice for pod traffic.
//!
//! The same device carries the egress of segments with `snat` on to the egress gateway
//! ([`Egress`], see [`crate::snat`]), always encapsulated: the node's NAT rule tells traffic that
//! leaves Seam by its output device, and a packet leaving by the underlay interface would be
//! translated by the node itself.
//!
//! It also holds the way back of connections that came through a gateway ([`ReplyRoute`], see
//! [`crate::reply`]): a policy rule and a table per gateway whose default route leads to that
//! gateway by the same path as its external endpoints' routes.
//!
//! Like [`crate::plan`], [`plan_transit`] is pure: observe once, plan, apply.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use seam_model::MacAddr;

use crate::types::Underlay;
use crate::Result;
use seam_nft::nat::{DesiredNat, NatOp, ObservedNat};

/// The transit VXLAN device's name (outside the `seam-b`/`seam-v`/`sv` name spaces, so the
/// segment reconciler never mistakes it for one of its own).
pub const TRANSIT_DEVICE: &str = "seam-xt";

/// The routing protocol number (`ip route … proto 83`) that marks the routes Seam adds to the
/// underlay interface for the routed transit, so it can tell them from the operator's routes.
pub const TRANSIT_ROUTE_PROTOCOL: u8 = 83;

/// An address routed as a /32 to another node: an external endpoint's to its gateway node, or
/// (on a gateway, routed transit only) a pod's or VM's to its node, for the way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransitRoute {
    /// The routed address.
    pub dst: Ipv4Addr,
    /// The other node's underlay address (the next hop, and the VXLAN destination).
    pub via: Ipv4Addr,
    /// The other node's transit MAC.
    pub via_mac: MacAddr,
    /// Routed over the underlay interface without encapsulation (both nodes accept it and
    /// share an underlay subnet); else through the transit device.
    pub direct: bool,
}

/// The way back through one gateway (see [`crate::reply`]): `ip rule add fwmark MARK/MASK
/// lookup TABLE`, and in `TABLE` the default route to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyRoute {
    /// The gateway's slot ([`crate::reply::reply_slots`]): its mark and table.
    pub slot: u8,
    /// The gateway's underlay address (the next hop, and the VXLAN destination).
    pub via: Ipv4Addr,
    /// Its transit MAC.
    pub via_mac: MacAddr,
    /// Over the underlay interface without encapsulation (as the routed transit); else through
    /// the transit device.
    pub direct: bool,
}

/// Where the node sends the egress of SNAT segments: the egress gateway, through the transit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    /// The egress gateway's underlay address (next hop and VXLAN destination).
    pub gateway_ip: Ipv4Addr,
    /// Its transit MAC.
    pub gateway_mac: MacAddr,
    /// The subnets of the segments with `snat` on (one pair of policy rules each).
    pub sources: BTreeSet<Ipv4Net>,
}

/// The two policy rules per SNAT source (see [`crate::snat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EgressRule {
    /// `from SRC lookup main suppress_prefixlength 0` at [`crate::snat::EGRESS_RULE_PRIORITY`]:
    /// every route of the node but its default still applies.
    KeepSpecific,
    /// `from SRC lookup EGRESS_TABLE` at the next priority: the rest goes to the gateway.
    ToGateway,
}

/// What the node's transit should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTransit {
    /// Whether the transit device should exist (a gateway node, or routes to install).
    pub present: bool,
    /// The device's VNI.
    pub vni: u32,
    /// The device's MAC (this node's transit MAC).
    pub mac: MacAddr,
    /// The device's MTU (the segments' MTU).
    pub mtu: u32,
    /// The underlay the device sends through.
    pub underlay: Underlay,
    /// This node is a gateway: traffic arrives on the transit device with pod source addresses
    /// whose routes point into the segments, so reverse-path filtering there is loose.
    pub gateway: bool,
    /// Reverse-path filtering is loose on the underlay interface: this node is a gateway that
    /// receives the routed transit, or it SNATs Service clients to its underlay address (a
    /// NodePort or an external IP with `externalTrafficPolicy: Cluster`), whose replies from a
    /// backend on another node arrive on the underlay from a pod address routed into a segment.
    pub loose_underlay: bool,
    /// External addresses routed to their gateway.
    pub routes: BTreeSet<TransitRoute>,
    /// The egress of SNAT segments through a gateway (`None` on a gateway node, or when no
    /// segment has `snat` on or no gateway exists).
    pub egress: Option<Egress>,
    /// The way back through each other gateway, one slot each.
    pub replies: BTreeSet<ReplyRoute>,
    /// On a gateway while replies are recorded: the routes of other gateways' external
    /// endpoints, in [`crate::reply::GATEWAY_ROUTES_TABLE`] (with its rule) instead of main.
    pub gateway_routes: BTreeSet<TransitRoute>,
}

/// What exists of the transit on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedTransit {
    /// The device exists.
    pub exists: bool,
    /// It exists with the desired VNI and MAC and is up (filled by comparing with the desired
    /// state's `vni`/`mac` when observing).
    pub device_ok: bool,
    /// Routes on the device `(dst /32, via)`.
    pub routes: BTreeSet<(Ipv4Addr, Ipv4Addr)>,
    /// Routes of the routed transit `(dst /32, via)` (protocol [`TRANSIT_ROUTE_PROTOCOL`]).
    pub direct_routes: BTreeSet<(Ipv4Addr, Ipv4Addr)>,
    /// Addresses whose static neighbour entry on a segment's VXLAN device is the segment's
    /// gateway MAC (routed segments, [`crate::routed`]): pods may have just learnt that MAC, so
    /// their direct route stays until the segment reconciler has put the endpoint's MAC back.
    pub routed_neighbours: BTreeSet<Ipv4Addr>,
    /// Reverse-path filtering on the underlay interface is loose (`rp_filter` 2).
    pub underlay_loose: bool,
    /// Permanent neighbour entries on the device `(ip, mac)`.
    pub neighbours: BTreeSet<(Ipv4Addr, MacAddr)>,
    /// Static FDB entries on the device `(mac, dst)`.
    pub fdb: BTreeSet<(MacAddr, Ipv4Addr)>,
    /// Seam's egress policy rules (whether or not the device exists).
    pub egress_rules: BTreeSet<(EgressRule, Ipv4Net)>,
    /// Next hops of default routes in the egress table.
    pub egress_routes: BTreeSet<Ipv4Addr>,
    /// Default routes of the reply tables `(slot, via, direct)`.
    pub reply_routes: BTreeSet<(u8, Ipv4Addr, bool)>,
    /// The slots of Seam's reply rules (priority [`crate::reply::REPLY_RULE_PRIORITY`]).
    pub reply_rules: BTreeSet<u8>,
    /// Routes of [`crate::reply::GATEWAY_ROUTES_TABLE`] `(dst /32, via, direct)`.
    pub gateway_routes: BTreeSet<(Ipv4Addr, Ipv4Addr, bool)>,
    /// The rule that looks that table up exists.
    pub gateway_rule: bool,
}

/// One change to the transit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitOp {
    /// Create or repair the device (VNI, MAC, MTU, up; loose rp_filter on a gateway).
    EnsureDevice {
        /// VNI.
        vni: u32,
        /// MAC.
        mac: MacAddr,
        /// MTU.
        mtu: u32,
        /// Underlay.
        underlay: Underlay,
        /// Gateway node.
        gateway: bool,
    },
    /// Remove the device (and with it every route and entry on it).
    DeleteDevice,
    /// `rp_filter` 2 on the underlay interface (see [`DesiredTransit::loose_underlay`]).
    LooseUnderlay {
        /// The underlay interface.
        ifname: String,
    },
    /// The neighbour and FDB entries of a gateway next hop.
    NextHopAdd {
        /// The gateway's underlay address.
        ip: Ipv4Addr,
        /// Its transit MAC.
        mac: MacAddr,
    },
    /// Removes a next hop's neighbour and FDB entries.
    NextHopDel {
        /// The gateway's underlay address.
        ip: Ipv4Addr,
        /// Its transit MAC.
        mac: MacAddr,
    },
    /// `ip route replace DST/32 via VIA dev seam-xt onlink`, or with `direct`
    /// `ip route replace DST/32 via VIA dev UNDERLAY proto 83` (replacing the route of the other
    /// kind, so a switch between them leaves no gap).
    RouteAdd {
        /// External address.
        dst: Ipv4Addr,
        /// Gateway underlay address.
        via: Ipv4Addr,
        /// Routed transit.
        direct: bool,
    },
    /// Removes a route.
    RouteDel {
        /// External address.
        dst: Ipv4Addr,
        /// Gateway underlay address it pointed at.
        via: Ipv4Addr,
        /// Routed transit.
        direct: bool,
    },
    /// `ip route replace default via VIA dev seam-xt onlink table EGRESS_TABLE`.
    EgressRouteAdd {
        /// The egress gateway's underlay address.
        via: Ipv4Addr,
    },
    /// Removes a default route of the egress table.
    EgressRouteDel {
        /// The next hop it pointed at.
        via: Ipv4Addr,
    },
    /// Adds one egress policy rule for a SNAT segment's subnet.
    EgressRuleAdd {
        /// Which of the two.
        rule: EgressRule,
        /// The subnet (`from`).
        source: Ipv4Net,
    },
    /// Removes one egress policy rule.
    EgressRuleDel {
        /// Which of the two.
        rule: EgressRule,
        /// The subnet (`from`).
        source: Ipv4Net,
    },
    /// `ip route replace default via VIA table REPLY_TABLE proto 83` (`direct`), or `… dev
    /// seam-xt onlink`.
    ReplyRouteAdd {
        /// The gateway's slot (the table).
        slot: u8,
        /// The gateway's underlay address.
        via: Ipv4Addr,
        /// Routed transit.
        direct: bool,
    },
    /// Removes a reply table's default route.
    ReplyRouteDel {
        /// The gateway's slot (the table).
        slot: u8,
        /// The next hop it pointed at.
        via: Ipv4Addr,
        /// Routed transit.
        direct: bool,
    },
    /// `ip rule add fwmark MARK/0xff000000 lookup REPLY_TABLE priority REPLY_RULE_PRIORITY`.
    ReplyRuleAdd {
        /// The gateway's slot.
        slot: u8,
    },
    /// Removes a reply rule.
    ReplyRuleDel {
        /// The gateway's slot.
        slot: u8,
    },
    /// A route to another gateway's external endpoint in `GATEWAY_ROUTES_TABLE`, as
    /// [`TransitOp::RouteAdd`] writes one in main.
    GatewayRouteAdd {
        /// External address.
        dst: Ipv4Addr,
        /// Gateway underlay address.
        via: Ipv4Addr,
        /// Routed transit.
        direct: bool,
    },
    /// Removes a route of `GATEWAY_ROUTES_TABLE`.
    GatewayRouteDel {
        /// External address.
        dst: Ipv4Addr,
        /// Gateway underlay address it pointed at.
        via: Ipv4Addr,
        /// Routed transit.
        direct: bool,
    },
    /// `ip rule add not fwmark 0xff000000/0xff000000 lookup GATEWAY_ROUTES_TABLE priority
    /// GATEWAY_ROUTES_RULE_PRIORITY`.
    GatewayRuleAdd,
    /// Removes that rule.
    GatewayRuleDel,
}

/// One step of the node's egress plan: a change to the transit, executed by
/// [`TransitKernel::apply_transit`], or to the NAT table, executed by
/// [`crate::Firewall::apply_nat`]. The two are planned together because their order matters for
/// traffic (see [`plan_transit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitStep {
    /// A transit change.
    Kernel(TransitOp),
    /// Replaces or removes the NAT table.
    Nat(NatOp),
}

/// The steps that turn `observed` into `desired` and `observed_nat` into `nat` (`None`: no
/// segment has `snat` on and no gateway's replies to mark, no table): device first, next hops
/// before the routes that use them, additions before removals.
///
/// Stale egress and reply rules go first and the NAT table comes next (before the device), so this node
/// translates before it routes anything new towards the gateway and stops routing before it
/// stops translating; new egress rules come after the route they lead to. Routes of the routed
/// transit are added before the device goes and removed after the device's routes are added,
/// so a switch between the two kinds replaces each route in place; one whose address still has
/// a routed segment's gateway-MAC neighbour entry stays until that entry is gone. A reply rule is
/// added after its table's route and removed before it.
pub fn plan_transit(
    desired: &DesiredTransit,
    nat: Option<&DesiredNat>,
    observed: &ObservedTransit,
    observed_nat: &ObservedNat,
) -> Vec<TransitStep> {
    let want = Wanted::of(desired);
    let mut ops = Vec::new();
    for &(rule, source) in observed.egress_rules.difference(&want.egress_rules) {
        ops.push(TransitOp::EgressRuleDel { rule, source });
    }
    for &slot in observed.reply_rules.difference(&want.reply_rules) {
        ops.push(TransitOp::ReplyRuleDel { slot });
    }
    if observed.gateway_rule && !want.gateway_rule {
        ops.push(TransitOp::GatewayRuleDel);
    }
    let mut steps: Vec<TransitStep> = ops.drain(..).map(TransitStep::Kernel).collect();
    if let Some(op) = seam_nft::nat::plan_nat(nat, observed_nat) {
        steps.push(TransitStep::Nat(op));
    }
    if desired.present && !observed.device_ok {
        ops.push(TransitOp::EnsureDevice {
            vni: desired.vni,
            mac: desired.mac,
            mtu: desired.mtu,
            underlay: desired.underlay.clone(),
            gateway: desired.gateway,
        });
    }
    if desired.loose_underlay && !observed.underlay_loose {
        ops.push(TransitOp::LooseUnderlay {
            ifname: desired.underlay.ifname.clone(),
        });
    }
    plan_adds(desired, observed, &want, true, &mut ops);
    if desired.present {
        plan_adds(desired, observed, &want, false, &mut ops);
    } else if observed.exists {
        ops.push(TransitOp::DeleteDevice);
    }
    // A rule only once its table has its routes.
    for &slot in want.reply_rules.difference(&observed.reply_rules) {
        ops.push(TransitOp::ReplyRuleAdd { slot });
    }
    if want.gateway_rule && !observed.gateway_rule {
        ops.push(TransitOp::GatewayRuleAdd);
    }
    if desired.present {
        plan_device_removals(desired, observed, &want, &mut ops);
    }
    plan_removals(observed, &want, &mut ops);
    steps.extend(ops.into_iter().map(TransitStep::Kernel));
    steps
}

/// What the desired transit asks for, in the form observed state is kept in.
struct Wanted {
    egress_rules: BTreeSet<(EgressRule, Ipv4Net)>,
    reply_rules: BTreeSet<u8>,
    gateway_rule: bool,
    /// Routes in main `(dst, via, direct)`.
    routes: BTreeSet<(Ipv4Addr, Ipv4Addr, bool)>,
    /// Default routes of the reply tables `(slot, via, direct)`.
    replies: BTreeSet<(u8, Ipv4Addr, bool)>,
    /// Routes of the gateway routes' table `(dst, via, direct)`.
    gateway_routes: BTreeSet<(Ipv4Addr, Ipv4Addr, bool)>,
    /// Next hops on the device.
    hops: BTreeSet<(Ipv4Addr, MacAddr)>,
}

impl Wanted {
    fn of(desired: &DesiredTransit) -> Self {
        let egress_rules = desired
            .egress
            .iter()
            .flat_map(|e| {
                e.sources
                    .iter()
                    .flat_map(|s| [(EgressRule::KeepSpecific, *s), (EgressRule::ToGateway, *s)])
            })
            .collect();
        let routes = |set: &BTreeSet<TransitRoute>| -> BTreeSet<(Ipv4Addr, Ipv4Addr, bool)> {
            set.iter().map(|r| (r.dst, r.via, r.direct)).collect()
        };
        let encapsulated = |set: &BTreeSet<TransitRoute>| -> Vec<(Ipv4Addr, MacAddr)> {
            set.iter()
                .filter(|r| !r.direct)
                .map(|r| (r.via, r.via_mac))
                .collect()
        };
        let hops = encapsulated(&desired.routes)
            .into_iter()
            .chain(encapsulated(&desired.gateway_routes))
            .chain(desired.egress.iter().map(|e| (e.gateway_ip, e.gateway_mac)))
            .chain(
                desired
                    .replies
                    .iter()
                    .filter(|r| !r.direct)
                    .map(|r| (r.via, r.via_mac)),
            )
            .collect();
        Wanted {
            egress_rules,
            reply_rules: desired.replies.iter().map(|r| r.slot).collect(),
            gateway_rule: !desired.gateway_routes.is_empty(),
            routes: routes(&desired.routes),
            replies: desired
                .replies
                .iter()
                .map(|r| (r.slot, r.via, r.direct))
                .collect(),
            gateway_routes: routes(&desired.gateway_routes),
            hops,
        }
    }
}

/// The additions of one kind: the routed transit's (`direct`, no device needed), or the
/// device's (next hops first, the device exists or is created before these).
fn plan_adds(
    desired: &DesiredTransit,
    observed: &ObservedTransit,
    want: &Wanted,
    direct: bool,
    ops: &mut Vec<TransitOp>,
) {
    if !direct {
        for &(ip, mac) in &want.hops {
            if !observed.neighbours.contains(&(ip, mac)) || !observed.fdb.contains(&(mac, ip)) {
                ops.push(TransitOp::NextHopAdd { ip, mac });
            }
        }
    }
    let observed_routes: BTreeSet<(Ipv4Addr, Ipv4Addr, bool)> = observed
        .routes
        .iter()
        .map(|&(d, v)| (d, v, false))
        .chain(observed.direct_routes.iter().map(|&(d, v)| (d, v, true)))
        .collect();
    for &(dst, via, d) in want.routes.difference(&observed_routes) {
        if d == direct {
            ops.push(TransitOp::RouteAdd { dst, via, direct });
        }
    }
    if !direct {
        let egress_via = desired.egress.as_ref().map(|e| e.gateway_ip);
        if let Some(via) = egress_via {
            if !observed.egress_routes.contains(&via) {
                ops.push(TransitOp::EgressRouteAdd { via });
            }
            for &(rule, source) in want.egress_rules.difference(&observed.egress_rules) {
                ops.push(TransitOp::EgressRuleAdd { rule, source });
            }
        }
    }
    for &(slot, via, d) in want.replies.difference(&observed.reply_routes) {
        if d == direct {
            ops.push(TransitOp::ReplyRouteAdd { slot, via, direct });
        }
    }
    for &(dst, via, d) in want.gateway_routes.difference(&observed.gateway_routes) {
        if d == direct {
            ops.push(TransitOp::GatewayRouteAdd { dst, via, direct });
        }
    }
}

/// What goes from the device, once everything new is in place: the egress route, routes, then
/// the next hops no route needs.
fn plan_device_removals(
    desired: &DesiredTransit,
    observed: &ObservedTransit,
    want: &Wanted,
    ops: &mut Vec<TransitOp>,
) {
    let egress_via = desired.egress.as_ref().map(|e| e.gateway_ip);
    for &via in &observed.egress_routes {
        if Some(via) != egress_via {
            ops.push(TransitOp::EgressRouteDel { via });
        }
    }
    for &(dst, via) in &observed.routes {
        if !want.routes.contains(&(dst, via, false)) {
            ops.push(TransitOp::RouteDel {
                dst,
                via,
                direct: false,
            });
        }
    }
    for &(slot, via, direct) in observed.reply_routes.difference(&want.replies) {
        if !direct {
            ops.push(TransitOp::ReplyRouteDel { slot, via, direct });
        }
    }
    for &(dst, via, direct) in observed.gateway_routes.difference(&want.gateway_routes) {
        if !direct {
            ops.push(TransitOp::GatewayRouteDel { dst, via, direct });
        }
    }
    let stale_hops: BTreeSet<(Ipv4Addr, MacAddr)> = observed
        .neighbours
        .iter()
        .copied()
        .chain(observed.fdb.iter().map(|&(mac, ip)| (ip, mac)))
        .filter(|h| !want.hops.contains(h))
        .collect();
    for (ip, mac) in stale_hops {
        ops.push(TransitOp::NextHopDel { ip, mac });
    }
}

/// What goes from the routed transit (last: a switch to the device replaced each route in
/// place). Routes through a device that goes went with it.
fn plan_removals(observed: &ObservedTransit, want: &Wanted, ops: &mut Vec<TransitOp>) {
    for &(dst, via) in &observed.direct_routes {
        // A routed endpoint's route outlives its gateway-MAC neighbour entry (see
        // `routed_neighbours`), unless another route for it replaced it.
        let held = observed.routed_neighbours.contains(&dst)
            && !want.routes.iter().any(|&(d, _, _)| d == dst);
        if !want.routes.contains(&(dst, via, true)) && !held {
            ops.push(TransitOp::RouteDel {
                dst,
                via,
                direct: true,
            });
        }
    }
    for &(slot, via, direct) in observed.reply_routes.difference(&want.replies) {
        if direct {
            ops.push(TransitOp::ReplyRouteDel { slot, via, direct });
        }
    }
    for &(dst, via, direct) in observed.gateway_routes.difference(&want.gateway_routes) {
        if direct {
            ops.push(TransitOp::GatewayRouteDel { dst, via, direct });
        }
    }
}

/// The kernel side of the transit (implemented over rtnetlink by `seam-linux`). The NAT table the
/// plan also changes belongs to [`crate::Firewall`].
pub trait TransitKernel: Send + Sync {
    /// What exists of the transit; `desired` says which VNI and MAC count as right.
    fn observe_transit(
        &self,
        desired: &DesiredTransit,
    ) -> impl Future<Output = Result<ObservedTransit>> + Send;
    /// Executes one operation; "already exists" on create and "not found" on delete succeed.
    fn apply_transit(&self, op: &TransitOp) -> impl Future<Output = Result<()>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan without a NAT table, wanted or found.
    fn plan(d: &DesiredTransit, o: &ObservedTransit) -> Vec<TransitStep> {
        plan_transit(d, None, o, &ObservedNat::default())
    }

    /// Transit changes as plan steps.
    fn kernel<const N: usize>(ops: [TransitOp; N]) -> Vec<TransitStep> {
        ops.into_iter().map(TransitStep::Kernel).collect()
    }

    fn desired(routes: &[(u8, u8)]) -> DesiredTransit {
        DesiredTransit {
            present: true,
            vni: 16_777_215,
            mac: seam_model::transit_mac(Ipv4Addr::new(198, 18, 0, 11)),
            mtu: 1450,
            underlay: Underlay {
                ifname: "eth0".into(),
                ip: Ipv4Addr::new(198, 18, 0, 11),
                prefix_len: 24,
            },
            gateway: false,
            loose_underlay: false,
            routes: routes
                .iter()
                .map(|&(d, g)| {
                    let gateway_ip = Ipv4Addr::new(198, 18, 0, g);
                    TransitRoute {
                        dst: Ipv4Addr::new(203, 0, 113, d),
                        via: gateway_ip,
                        via_mac: seam_model::transit_mac(gateway_ip),
                        direct: false,
                    }
                })
                .collect(),
            egress: None,
            replies: BTreeSet::new(),
            gateway_routes: BTreeSet::new(),
        }
    }

    fn realized(d: &DesiredTransit) -> ObservedTransit {
        ObservedTransit {
            exists: true,
            device_ok: true,
            routes: d.routes.iter().map(|r| (r.dst, r.via)).collect(),
            neighbours: d.routes.iter().map(|r| (r.via, r.via_mac)).collect(),
            fdb: d.routes.iter().map(|r| (r.via_mac, r.via)).collect(),
            ..ObservedTransit::default()
        }
    }

    #[test]
    fn from_nothing_device_then_next_hop_then_routes() {
        let d = desired(&[(10, 20), (11, 20)]);
        let ops = plan(&d, &ObservedTransit::default());
        assert!(matches!(
            ops[0],
            TransitStep::Kernel(TransitOp::EnsureDevice { .. })
        ));
        assert!(matches!(
            ops[1],
            TransitStep::Kernel(TransitOp::NextHopAdd { .. })
        ));
        assert_eq!(ops.len(), 4, "{ops:?}");
    }

    #[test]
    fn realized_state_needs_nothing_and_a_moved_route_is_swapped() {
        let d = desired(&[(10, 20)]);
        assert!(plan(&d, &realized(&d)).is_empty());
        let moved = desired(&[(10, 21)]);
        let ops = plan(&moved, &realized(&d));
        let gw20 = Ipv4Addr::new(198, 18, 0, 20);
        let gw21 = Ipv4Addr::new(198, 18, 0, 21);
        let dst = Ipv4Addr::new(203, 0, 113, 10);
        assert_eq!(
            ops,
            kernel([
                TransitOp::NextHopAdd {
                    ip: gw21,
                    mac: seam_model::transit_mac(gw21)
                },
                TransitOp::RouteAdd {
                    dst,
                    via: gw21,
                    direct: false
                },
                TransitOp::RouteDel {
                    dst,
                    via: gw20,
                    direct: false
                },
                TransitOp::NextHopDel {
                    ip: gw20,
                    mac: seam_model::transit_mac(gw20)
                },
            ])
        );
    }

    #[test]
    fn a_switch_to_the_routed_transit_adds_the_route_before_the_device_goes_and_back() {
        let encapsulated = desired(&[(10, 20)]);
        let mut routed = desired(&[(10, 20)]);
        routed.routes = routed
            .routes
            .iter()
            .map(|r| TransitRoute { direct: true, ..*r })
            .collect();
        // Only direct routes: no device wanted.
        routed.present = false;
        let dst = Ipv4Addr::new(203, 0, 113, 10);
        let via = Ipv4Addr::new(198, 18, 0, 20);
        assert_eq!(
            plan(&routed, &realized(&encapsulated)),
            kernel([
                TransitOp::RouteAdd {
                    dst,
                    via,
                    direct: true
                },
                TransitOp::DeleteDevice,
            ])
        );
        let routed_state = ObservedTransit {
            direct_routes: [(dst, via)].into(),
            ..ObservedTransit::default()
        };
        assert!(plan(&routed, &routed_state).is_empty());
        let back = plan(&encapsulated, &routed_state);
        assert!(
            matches!(back[0], TransitStep::Kernel(TransitOp::EnsureDevice { .. })),
            "{back:?}"
        );
        assert_eq!(
            back[1..],
            kernel([
                TransitOp::NextHopAdd {
                    ip: via,
                    mac: seam_model::transit_mac(via)
                },
                TransitOp::RouteAdd {
                    dst,
                    via,
                    direct: false
                },
                TransitOp::RouteDel {
                    dst,
                    via,
                    direct: true
                },
            ])
        );
    }

    #[test]
    fn a_direct_route_stays_while_its_address_answers_with_a_gateway_mac() {
        // A routed segment's endpoint that goes back to the VXLAN (or away): its route is held
        // until the segment reconciler has put the endpoint's MAC back in the neighbour entry.
        let mut nothing = desired(&[]);
        nothing.present = false;
        let dst = Ipv4Addr::new(10, 240, 0, 9);
        let via = Ipv4Addr::new(198, 18, 0, 12);
        let mut o = ObservedTransit {
            direct_routes: BTreeSet::from([(dst, via)]),
            routed_neighbours: BTreeSet::from([dst]),
            ..ObservedTransit::default()
        };
        assert!(plan(&nothing, &o).is_empty());
        o.routed_neighbours.clear();
        assert_eq!(
            plan(&nothing, &o),
            kernel([TransitOp::RouteDel {
                dst,
                via,
                direct: true
            }])
        );
        // Moved to another node: replaced in place, the held one is not in the way.
        o.routed_neighbours.insert(dst);
        let mut moved = nothing.clone();
        let to = Ipv4Addr::new(198, 18, 0, 13);
        moved.routes.insert(TransitRoute {
            dst,
            via: to,
            via_mac: seam_model::transit_mac(to),
            direct: true,
        });
        assert_eq!(
            plan(&moved, &o),
            kernel([
                TransitOp::RouteAdd {
                    dst,
                    via: to,
                    direct: true
                },
                TransitOp::RouteDel {
                    dst,
                    via,
                    direct: true
                },
            ])
        );
    }

    #[test]
    fn a_gateway_that_accepts_the_routed_transit_keeps_its_underlay_loose() {
        let mut gw = desired(&[]);
        gw.gateway = true;
        gw.loose_underlay = true;
        let ops = plan(&gw, &ObservedTransit::default());
        assert_eq!(
            ops[1..],
            kernel([TransitOp::LooseUnderlay {
                ifname: "eth0".into()
            }])
        );
        let done = ObservedTransit {
            underlay_loose: true,
            ..realized(&gw)
        };
        assert!(plan(&gw, &done).is_empty());
    }

    #[test]
    fn not_wanted_removes_the_device() {
        let mut d = desired(&[]);
        d.present = false;
        assert_eq!(
            plan(&d, &realized(&desired(&[(1, 2)]))),
            kernel([TransitOp::DeleteDevice])
        );
        assert!(plan(&d, &ObservedTransit::default()).is_empty());
    }

    #[test]
    fn snat_egress_routes_the_segments_to_the_gateway_and_goes_away_whole() {
        let gw = Ipv4Addr::new(198, 18, 1, 1);
        let subnet: Ipv4Net = "10.240.1.0/24".parse().unwrap_or_else(|_| unreachable!());
        let mut d = desired(&[]);
        d.egress = Some(Egress {
            gateway_ip: gw,
            gateway_mac: seam_model::transit_mac(gw),
            sources: [subnet].into(),
        });
        let nat = DesiredNat {
            sources: [subnet].into(),
            known: [subnet].into(),
            ..DesiredNat::default()
        };
        let ops = plan_transit(
            &d,
            Some(&nat),
            &ObservedTransit::default(),
            &ObservedNat::default(),
        );
        assert!(matches!(ops[0], TransitStep::Nat(NatOp::Replace(_))));
        assert!(matches!(
            ops[1],
            TransitStep::Kernel(TransitOp::EnsureDevice { .. })
        ));
        assert_eq!(
            ops[2..],
            kernel([
                TransitOp::NextHopAdd {
                    ip: gw,
                    mac: seam_model::transit_mac(gw)
                },
                TransitOp::EgressRouteAdd { via: gw },
                TransitOp::EgressRuleAdd {
                    rule: EgressRule::KeepSpecific,
                    source: subnet
                },
                TransitOp::EgressRuleAdd {
                    rule: EgressRule::ToGateway,
                    source: subnet
                },
            ])
        );
        // Realized: nothing to do.
        let mut done = realized(&d);
        done.neighbours.insert((gw, seam_model::transit_mac(gw)));
        done.fdb.insert((seam_model::transit_mac(gw), gw));
        done.egress_routes.insert(gw);
        done.egress_rules = [
            (EgressRule::KeepSpecific, subnet),
            (EgressRule::ToGateway, subnet),
        ]
        .into();
        let done_nat = ObservedNat {
            exists: true,
            sources: seam_nft::nat::merge_ranges([(
                Ipv4Addr::new(10, 240, 1, 0),
                Ipv4Addr::new(10, 240, 1, 255),
            )]),
            known: seam_nft::nat::merge_ranges([(
                Ipv4Addr::new(10, 240, 1, 0),
                Ipv4Addr::new(10, 240, 1, 255),
            )]),
            rule_ok: true,
            ..ObservedNat::default()
        };
        assert_eq!(plan_transit(&d, Some(&nat), &done, &done_nat), vec![]);
        // The option turned off (and nothing else needs the transit): rules first, then the
        // table, then the device.
        let off = DesiredTransit {
            present: false,
            egress: None,
            ..d
        };
        assert_eq!(
            plan_transit(&off, None, &done, &done_nat),
            vec![
                TransitStep::Kernel(TransitOp::EgressRuleDel {
                    rule: EgressRule::KeepSpecific,
                    source: subnet
                }),
                TransitStep::Kernel(TransitOp::EgressRuleDel {
                    rule: EgressRule::ToGateway,
                    source: subnet
                }),
                TransitStep::Nat(NatOp::Delete),
                TransitStep::Kernel(TransitOp::DeleteDevice),
            ]
        );
    }

    fn reply(slot: u8, g: u8, direct: bool) -> ReplyRoute {
        let via = Ipv4Addr::new(198, 18, 1, g);
        ReplyRoute {
            slot,
            via,
            via_mac: seam_model::transit_mac(via),
            direct,
        }
    }

    #[test]
    fn a_gateways_way_back_is_its_table_route_then_its_rule_and_goes_rule_first() {
        // A worker with nothing else on the transit: the routed way back needs no device.
        let mut d = desired(&[]);
        d.present = false;
        d.replies = [reply(7, 1, true)].into();
        let via = Ipv4Addr::new(198, 18, 1, 1);
        assert_eq!(
            plan(&d, &ObservedTransit::default()),
            kernel([
                TransitOp::ReplyRouteAdd {
                    slot: 7,
                    via,
                    direct: true
                },
                TransitOp::ReplyRuleAdd { slot: 7 },
            ])
        );
        let done = ObservedTransit {
            reply_routes: [(7, via, true)].into(),
            reply_rules: [7].into(),
            ..ObservedTransit::default()
        };
        assert!(plan(&d, &done).is_empty());
        // The gateway's lease gone: its rule first, then its table's route.
        d.replies.clear();
        assert_eq!(
            plan(&d, &done),
            kernel([
                TransitOp::ReplyRuleDel { slot: 7 },
                TransitOp::ReplyRouteDel {
                    slot: 7,
                    via,
                    direct: true
                },
            ])
        );
    }

    #[test]
    fn an_encapsulated_way_back_brings_the_device_and_its_next_hop() {
        let mut d = desired(&[]);
        d.replies = [reply(3, 2, false)].into();
        let via = Ipv4Addr::new(198, 18, 1, 2);
        let ops = plan(&d, &ObservedTransit::default());
        assert!(
            matches!(ops[0], TransitStep::Kernel(TransitOp::EnsureDevice { .. })),
            "{ops:?}"
        );
        assert_eq!(
            ops[1..],
            kernel([
                TransitOp::NextHopAdd {
                    ip: via,
                    mac: seam_model::transit_mac(via)
                },
                TransitOp::ReplyRouteAdd {
                    slot: 3,
                    via,
                    direct: false
                },
                TransitOp::ReplyRuleAdd { slot: 3 },
            ])
        );
        // Switched to the routed transit: the table's route is replaced, the rule stays, the
        // next hop goes after the route that used it.
        let done = ObservedTransit {
            exists: true,
            device_ok: true,
            neighbours: [(via, seam_model::transit_mac(via))].into(),
            fdb: [(seam_model::transit_mac(via), via)].into(),
            reply_routes: [(3, via, false)].into(),
            reply_rules: [3].into(),
            ..ObservedTransit::default()
        };
        assert!(plan(&d, &done).is_empty());
        let mut routed = d.clone();
        routed.replies = [reply(3, 2, true)].into();
        assert_eq!(
            plan(&routed, &done),
            kernel([
                TransitOp::ReplyRouteAdd {
                    slot: 3,
                    via,
                    direct: true
                },
                TransitOp::ReplyRouteDel {
                    slot: 3,
                    via,
                    direct: false
                },
                TransitOp::NextHopDel {
                    ip: via,
                    mac: seam_model::transit_mac(via)
                },
            ])
        );
    }

    #[test]
    fn a_gateways_routes_to_other_gateways_externals_move_to_their_table_and_back() {
        let mut gw = desired(&[(10, 2)]);
        gw.gateway = true;
        let dst = Ipv4Addr::new(203, 0, 113, 10);
        let via = Ipv4Addr::new(198, 18, 0, 2);
        let in_main = realized(&gw);
        // Replies recorded: the route goes to the table (added first), then its rule, then the
        // route in main goes.
        let mut moved = gw.clone();
        moved.gateway_routes = std::mem::take(&mut moved.routes);
        assert_eq!(
            plan(&moved, &in_main),
            kernel([
                TransitOp::GatewayRouteAdd {
                    dst,
                    via,
                    direct: false
                },
                TransitOp::GatewayRuleAdd,
                TransitOp::RouteDel {
                    dst,
                    via,
                    direct: false
                },
            ])
        );
        let in_table = ObservedTransit {
            routes: BTreeSet::new(),
            gateway_routes: [(dst, via, false)].into(),
            gateway_rule: true,
            ..in_main.clone()
        };
        assert!(plan(&moved, &in_table).is_empty());
        // And back: the rule goes first, the route comes back to main, the table's goes.
        assert_eq!(
            plan(&gw, &in_table),
            kernel([
                TransitOp::GatewayRuleDel,
                TransitOp::RouteAdd {
                    dst,
                    via,
                    direct: false
                },
                TransitOp::GatewayRouteDel {
                    dst,
                    via,
                    direct: false
                },
            ])
        );
    }
}
