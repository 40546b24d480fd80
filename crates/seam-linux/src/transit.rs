//! [`TransitKernel`] over rtnetlink: the transit VXLAN device to gateway nodes, its next-hop
//! entries and the routes of external addresses (see `seam_dataplane::transit`), and the egress
//! of SNAT segments: policy rules and the egress table (`seam_dataplane::snat`), and the way back
//! through each gateway: a `fwmark` rule and a table per gateway (`seam_dataplane::reply`). The
//! NAT table those also need is Seam's nftables: it goes through `Firewall::apply_nat`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::neighbour::{NeighbourFlags, NeighbourState};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, IpVersion, LinkUnspec, LinkVxlan, RouteMessageBuilder};
use seam_dataplane::reply::{
    reply_mark, reply_table, EXTERNAL_SLOT, GATEWAY_ROUTES_RULE_PRIORITY, GATEWAY_ROUTES_TABLE,
    REPLY_MARK_MASK, REPLY_RULE_PRIORITY, REPLY_TABLE_BASE,
};
use seam_dataplane::snat::{EGRESS_RULE_PRIORITY, EGRESS_TABLE};
use seam_dataplane::{
    vni_of_vxlan, DesiredTransit, EgressRule, ObservedTransit, Result, TransitKernel, TransitOp,
    TRANSIT_DEVICE, TRANSIT_ROUTE_PROTOCOL,
};
use seam_model::{gateway_mac, MacAddr};

use crate::kernel::{
    add_address, delete_link, fdb_del, is_up, kernel_err, link_by_name, link_mac, neigh_del,
    neigh_mac, neigh_v4, ok_if_absent, ok_if_exists, require_link, vxlan_local, LinuxKernel,
    VXLAN_PORT,
};

/// The address of a gateway's transit device (see the rp_filter note in `EnsureDevice`).
const TRANSIT_GATEWAY_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 94, 1);

fn route_message(dst: Ipv4Addr, via: Ipv4Addr, index: u32) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, 32)
        .gateway(via)
        .output_interface(index)
        .onlink()
        .build()
}

/// `DST/32 via VIA proto 83`. No device: the kernel finds the one the gateway's underlay address
/// is on-link on (the planner routes directly only to such a gateway).
fn direct_route_message(dst: Ipv4Addr, via: Ipv4Addr) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, 32)
        .gateway(via)
        .protocol(RouteProtocol::Other(TRANSIT_ROUTE_PROTOCOL))
        .build()
}

/// Whether reverse-path filtering on `ifname` is not strict (see [`crate::sysctl::rp_filter_strict`]).
fn rp_filter_loose(ifname: &str) -> Result<bool> {
    crate::sysctl::rp_filter_strict(ifname)
        .map(|strict| !strict)
        .map_err(|e| sysctl_error("read rp_filter", ifname, e))
}

/// `rp_filter` 2 (loose) on `ifname` where it is strict.
fn loosen_rp_filter(ifname: &str) -> Result<()> {
    crate::sysctl::loosen_rp_filter(ifname).map_err(|e| sysctl_error("set rp_filter", ifname, e))
}

fn sysctl_error(
    operation: &'static str,
    object: &str,
    e: crate::error::Error,
) -> seam_dataplane::Error {
    seam_dataplane::Error::Kernel {
        operation,
        object: object.to_string(),
        errno: None,
        message: e.to_string(),
    }
}

/// `default via VIA dev seam-xt onlink table EGRESS_TABLE`.
fn egress_route_message(via: Ipv4Addr, index: u32) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .table_id(EGRESS_TABLE)
        .gateway(via)
        .output_interface(index)
        .onlink()
        .build()
}

/// `default via VIA table REPLY_TABLE proto 83` over the underlay (the kernel finds the
/// interface the gateway is on-link on), or `… dev seam-xt onlink` (`index`).
fn reply_route_message(slot: u8, via: Ipv4Addr, through: Option<u32>) -> RouteMessage {
    let b = RouteMessageBuilder::<Ipv4Addr>::new()
        .table_id(reply_table(slot))
        .gateway(via);
    match through {
        Some(index) => b.output_interface(index).onlink().build(),
        None => b
            .protocol(RouteProtocol::Other(TRANSIT_ROUTE_PROTOCOL))
            .build(),
    }
}

/// A route of [`GATEWAY_ROUTES_TABLE`]: `DST/32 via VIA proto 83` over the underlay, or `…
/// dev seam-xt onlink` (`index`).
fn gateway_route_message(dst: Ipv4Addr, via: Ipv4Addr, through: Option<u32>) -> RouteMessage {
    let b = RouteMessageBuilder::<Ipv4Addr>::new()
        .table_id(GATEWAY_ROUTES_TABLE)
        .destination_prefix(dst, 32)
        .gateway(via);
    match through {
        Some(index) => b.output_interface(index).onlink().build(),
        None => b
            .protocol(RouteProtocol::Other(TRANSIT_ROUTE_PROTOCOL))
            .build(),
    }
}

/// The transit device's index for a route to add through it (`direct`: none, the route goes
/// over the underlay); the device must exist.
async fn through_for_add(h: &Handle, direct: bool) -> Result<Option<u32>> {
    if direct {
        return Ok(None);
    }
    Ok(Some(require_link(h, TRANSIT_DEVICE).await?.header.index))
}

/// The same for a route to delete; `None` when the device is gone, and the routes through it
/// with it (nothing left to delete).
async fn through_for_del(h: &Handle, direct: bool) -> Result<Option<Option<u32>>> {
    if direct {
        return Ok(Some(None));
    }
    Ok(link_by_name(h, TRANSIT_DEVICE)
        .await?
        .map(|link| Some(link.header.index)))
}

/// Adds (or replaces) `route`; `operation` and `object` name it in an error.
async fn add_route(
    h: &Handle,
    route: RouteMessage,
    operation: &'static str,
    object: String,
) -> Result<()> {
    h.route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(kernel_err(operation, object))
}

/// Deletes `route`; one already gone is no error.
async fn del_route(
    h: &Handle,
    route: RouteMessage,
    operation: &'static str,
    object: String,
) -> Result<()> {
    ok_if_absent(
        h.route()
            .del(route)
            .execute()
            .await
            .map_err(kernel_err(operation, object)),
    )
}

/// `ip rule add not fwmark 0xff000000/0xff000000 lookup GATEWAY_ROUTES_TABLE priority
/// GATEWAY_ROUTES_RULE_PRIORITY`; the same message deletes it.
fn gateway_rule_message() -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.action = RuleAction::ToTable;
    m.header.table = RouteHeader::RT_TABLE_UNSPEC;
    m.header.flags = RuleFlags::Invert;
    m.attributes
        .push(RuleAttribute::Priority(GATEWAY_ROUTES_RULE_PRIORITY));
    m.attributes
        .push(RuleAttribute::FwMark(reply_mark(EXTERNAL_SLOT)));
    m.attributes.push(RuleAttribute::FwMask(REPLY_MARK_MASK));
    m.attributes
        .push(RuleAttribute::Table(GATEWAY_ROUTES_TABLE));
    m
}

/// The slot of a reply table, if `table` is one.
fn reply_slot(table: u32) -> Option<u8> {
    table
        .checked_sub(REPLY_TABLE_BASE)
        .and_then(|s| u8::try_from(s).ok())
        .filter(|s| *s != 0)
}

/// `ip rule add fwmark MARK/0xff000000 lookup REPLY_TABLE priority REPLY_RULE_PRIORITY`; the
/// same message deletes it.
fn reply_rule_message(slot: u8) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.action = RuleAction::ToTable;
    m.header.table = RouteHeader::RT_TABLE_UNSPEC;
    m.attributes
        .push(RuleAttribute::Priority(REPLY_RULE_PRIORITY));
    m.attributes.push(RuleAttribute::FwMark(reply_mark(slot)));
    m.attributes.push(RuleAttribute::FwMask(REPLY_MARK_MASK));
    m.attributes.push(RuleAttribute::Table(reply_table(slot)));
    m
}

fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

/// The rule message of one egress rule (`ip rule add from SRC …`); the same message deletes it.
fn egress_rule_message(rule: EgressRule, source: Ipv4Net) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.src_len = source.prefix_len();
    m.header.action = RuleAction::ToTable;
    m.attributes
        .push(RuleAttribute::Source(IpAddr::V4(source.network())));
    match rule {
        EgressRule::KeepSpecific => {
            m.header.table = RouteHeader::RT_TABLE_MAIN;
            m.attributes
                .push(RuleAttribute::Priority(EGRESS_RULE_PRIORITY));
            m.attributes
                .push(RuleAttribute::Table(u32::from(RouteHeader::RT_TABLE_MAIN)));
            // Routes of prefix length 0 (the default) are ignored: only the node's specific
            // routes apply, and the rest falls through to the next rule.
            m.attributes.push(RuleAttribute::SuppressPrefixLen(0));
        }
        EgressRule::ToGateway => {
            m.header.table = RouteHeader::RT_TABLE_UNSPEC;
            m.attributes
                .push(RuleAttribute::Priority(EGRESS_RULE_PRIORITY + 1));
            m.attributes.push(RuleAttribute::Table(EGRESS_TABLE));
        }
    }
    m
}

fn route_fields(route: &RouteMessage) -> (Option<u32>, Option<Ipv4Addr>, Option<Ipv4Addr>) {
    let mut oif = None;
    let mut dst = None;
    let mut via = None;
    for a in &route.attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some(*d),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => via = Some(*g),
            _ => {}
        }
    }
    (oif, dst, via)
}

/// The main table's id (`RT_TABLE_MAIN`).
const MAIN_TABLE: u32 = 254;

/// One IPv4 route as Seam's observers tell them apart: each dump is read once, each route
/// classified here once, for the segment reconciler and the transit alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeamRoute {
    /// A /32 in [`GATEWAY_ROUTES_TABLE`] (a gateway's routes to other gateways' external
    /// endpoints).
    Gateway {
        dst: Ipv4Addr,
        via: Ipv4Addr,
        oif: Option<u32>,
    },
    /// The default route of a reply table.
    Reply {
        slot: u8,
        via: Ipv4Addr,
        oif: Option<u32>,
    },
    /// A route to a peer's underlay, `DST/32 via PEER proto 83` ([`TRANSIT_ROUTE_PROTOCOL`]).
    Direct {
        dst: Ipv4Addr,
        via: Ipv4Addr,
        main: bool,
    },
    /// The default route of [`EGRESS_TABLE`].
    Egress { via: Ipv4Addr, oif: Option<u32> },
    /// Any other /32 with a next hop (the transit's, when its device is the output).
    Host {
        dst: Ipv4Addr,
        via: Ipv4Addr,
        oif: Option<u32>,
    },
}

/// What `route` is to Seam, `None` for routes that are none of its business.
fn classify_route(route: &RouteMessage) -> Option<SeamRoute> {
    let (oif, dst, via) = route_fields(route);
    let table = route_table(route);
    let prefix = route.header.destination_prefix_length;
    if table == GATEWAY_ROUTES_TABLE {
        return (prefix == 32)
            .then(|| {
                Some(SeamRoute::Gateway {
                    dst: dst?,
                    via: via?,
                    oif,
                })
            })
            .flatten();
    }
    if let Some(slot) = reply_slot(table) {
        return (prefix == 0)
            .then(|| {
                Some(SeamRoute::Reply {
                    slot,
                    via: via?,
                    oif,
                })
            })
            .flatten();
    }
    if route.header.protocol == RouteProtocol::Other(TRANSIT_ROUTE_PROTOCOL) && prefix == 32 {
        return Some(SeamRoute::Direct {
            dst: dst?,
            via: via?,
            main: table == MAIN_TABLE,
        });
    }
    if prefix == 0 && table == EGRESS_TABLE {
        return Some(SeamRoute::Egress { via: via?, oif });
    }
    (prefix == 32)
        .then(|| {
            Some(SeamRoute::Host {
                dst: dst?,
                via: via?,
                oif,
            })
        })
        .flatten()
}

/// Every IPv4 route Seam tells apart, from one dump (`ip route show table all`).
async fn seam_routes(h: &Handle, object: &str) -> Result<Vec<SeamRoute>> {
    let mut found = Vec::new();
    let mut routes = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(route) = routes
        .try_next()
        .await
        .map_err(kernel_err("list routes", object))?
    {
        found.extend(classify_route(&route));
    }
    Ok(found)
}

/// Seam's routes to a peer's underlay in the main table `(dst /32, via)` (protocol
/// [`TRANSIT_ROUTE_PROTOCOL`]): what the segment reconciler needs to know before it points a
/// routed endpoint's neighbour entry at the gateway MAC.
pub(crate) async fn main_direct_routes(h: &Handle) -> Result<BTreeSet<(Ipv4Addr, Ipv4Addr)>> {
    Ok(seam_routes(h, "main")
        .await?
        .into_iter()
        .filter_map(|r| match r {
            SeamRoute::Direct {
                dst,
                via,
                main: true,
            } => Some((dst, via)),
            _ => None,
        })
        .collect())
}

/// The segments' VXLAN devices, index → VNI.
async fn segment_vxlans(h: &Handle) -> Result<BTreeMap<u32, u32>> {
    let mut found = BTreeMap::new();
    let mut links = h.link().get().execute();
    while let Some(link) = links
        .try_next()
        .await
        .map_err(kernel_err("list links", "all"))?
    {
        let vni = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(name) => vni_of_vxlan(name),
            _ => None,
        });
        if let Some(vni) = vni {
            found.insert(link.header.index, vni);
        }
    }
    Ok(found)
}

impl LinuxKernel {
    /// Seam's policy rules, from one dump (`ip rule list`): the egress rules (priorities
    /// [`EGRESS_RULE_PRIORITY`] and `+ 1`) into `observed.egress_rules`, the slots of the reply
    /// rules (priority [`REPLY_RULE_PRIORITY`]) into `observed.reply_rules`, and whether the rule
    /// of [`GATEWAY_ROUTES_TABLE`] exists.
    async fn observe_rules(&self, observed: &mut ObservedTransit) -> Result<()> {
        let mut rules = self.handle.rule().get(IpVersion::V4).execute();
        while let Some(rule) = rules
            .try_next()
            .await
            .map_err(kernel_err("list rules", "seam"))?
        {
            let mut priority = None;
            let mut source = None;
            let mut table = None;
            for a in &rule.attributes {
                match a {
                    RuleAttribute::Priority(p) => priority = Some(*p),
                    RuleAttribute::Source(IpAddr::V4(s)) => source = Some(*s),
                    RuleAttribute::Table(t) => table = Some(*t),
                    _ => {}
                }
            }
            let egress = match priority {
                Some(EGRESS_RULE_PRIORITY) => Some(EgressRule::KeepSpecific),
                Some(p) if p == EGRESS_RULE_PRIORITY + 1 => Some(EgressRule::ToGateway),
                _ => None,
            };
            if let Some(kind) = egress {
                if let Some(net) = source.and_then(|s| Ipv4Net::new(s, rule.header.src_len).ok()) {
                    observed.egress_rules.insert((kind, net));
                }
            } else if priority == Some(REPLY_RULE_PRIORITY) {
                if let Some(slot) = table.and_then(reply_slot) {
                    observed.reply_rules.insert(slot);
                }
            } else if priority == Some(GATEWAY_ROUTES_RULE_PRIORITY)
                && table == Some(GATEWAY_ROUTES_TABLE)
            {
                observed.gateway_rule = true;
            }
        }
        Ok(())
    }

    async fn next_hop_del(&self, index: u32, ip: Ipv4Addr, mac: MacAddr) -> Result<()> {
        let h = &self.handle;
        neigh_del(h, index, ip, "transit neigh del").await?;
        fdb_del(
            h,
            index,
            mac,
            Some(ip),
            NeighbourFlags::Own,
            "transit fdb del",
        )
        .await
    }
}

impl TransitKernel for LinuxKernel {
    async fn observe_transit(&self, desired: &DesiredTransit) -> Result<ObservedTransit> {
        let h = &self.handle;
        let mut observed = ObservedTransit::default();
        self.observe_rules(&mut observed).await?;
        if desired.loose_underlay {
            observed.underlay_loose = rp_filter_loose(&desired.underlay.ifname)?;
        }
        let link = link_by_name(h, TRANSIT_DEVICE).await?;
        let index = link.as_ref().map(|l| l.header.index);
        if let Some(link) = &link {
            observed.exists = true;
            observed.device_ok = is_up(link) && link_mac(link) == Some(desired.mac);
        }
        // Bound to an old underlay address (the node's address changed): `EnsureDevice` makes it
        // anew, and what is on it goes with it, so it is observed as absent and planned again.
        let stale = link
            .as_ref()
            .is_some_and(|l| vxlan_local(l).is_some_and(|ip| ip != desired.underlay.ip));
        // Through the transit device, or not (`direct`): the underlay.
        let direct = |oif: Option<u32>| index.is_none() || oif != index;
        for route in seam_routes(h, TRANSIT_DEVICE).await? {
            match route {
                SeamRoute::Gateway { dst, via, oif } => {
                    observed.gateway_routes.insert((dst, via, direct(oif)));
                }
                SeamRoute::Reply { slot, via, oif } => {
                    observed.reply_routes.insert((slot, via, direct(oif)));
                }
                SeamRoute::Direct { dst, via, .. } => {
                    observed.direct_routes.insert((dst, via));
                }
                SeamRoute::Egress { via, oif } if index.is_some() && oif == index => {
                    observed.egress_routes.insert(via);
                }
                SeamRoute::Host { dst, via, oif } if index.is_some() && oif == index => {
                    observed.routes.insert((dst, via));
                }
                SeamRoute::Egress { .. } | SeamRoute::Host { .. } => {}
            }
        }
        let vxlans = segment_vxlans(h).await?;
        let mut neigh = h
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute();
        while let Some(entry) = neigh
            .try_next()
            .await
            .map_err(kernel_err("list neighbours", TRANSIT_DEVICE))?
        {
            if entry.header.state != NeighbourState::Permanent {
                continue;
            }
            let (Some(mac), Some(ip)) = (neigh_mac(&entry), neigh_v4(&entry)) else {
                continue;
            };
            if Some(entry.header.ifindex) == index {
                observed.neighbours.insert((ip, mac));
            } else if let Some(&vni) = vxlans.get(&entry.header.ifindex) {
                if mac == gateway_mac(vni) {
                    observed.routed_neighbours.insert(ip);
                }
            }
        }
        let Some(index) = index else {
            return Ok(observed);
        };
        if stale {
            observed.device_ok = false;
            observed.routes.clear();
            observed.neighbours.clear();
            observed.egress_routes.clear();
            observed.reply_routes.retain(|r| r.2);
            observed.gateway_routes.retain(|r| r.2);
            return Ok(observed);
        }
        let mut fdb = h
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute();
        while let Some(entry) = fdb
            .try_next()
            .await
            .map_err(kernel_err("list fdb", TRANSIT_DEVICE))?
        {
            if entry.header.ifindex != index || !entry.header.flags.contains(NeighbourFlags::Own) {
                continue;
            }
            if let (Some(mac), Some(dst)) = (neigh_mac(&entry), neigh_v4(&entry)) {
                if !mac.0.iter().all(|b| *b == 0) {
                    observed.fdb.insert((mac, dst));
                }
            }
        }
        Ok(observed)
    }

    async fn apply_transit(&self, op: &TransitOp) -> Result<()> {
        let h = &self.handle;
        match op {
            TransitOp::EnsureDevice {
                vni,
                mac,
                mtu,
                underlay,
                gateway,
            } => {
                let found = match link_by_name(h, TRANSIT_DEVICE).await? {
                    // Bound to an old underlay address: made anew (see `observe_transit`).
                    Some(link) if vxlan_local(&link).is_some_and(|ip| ip != underlay.ip) => {
                        delete_link(h, TRANSIT_DEVICE).await?;
                        None
                    }
                    found => found,
                };
                let link = match found {
                    Some(link) => link,
                    None => {
                        let dev = require_link(h, &underlay.ifname).await?;
                        // Learning off: the only destination is the gateway's static entry.
                        ok_if_exists(
                            h.link()
                                .add(
                                    LinkVxlan::new(TRANSIT_DEVICE, *vni)
                                        .dev(dev.header.index)
                                        .local(underlay.ip)
                                        .port(VXLAN_PORT)
                                        .learning(false)
                                        .udp_csum(true)
                                        .mtu(*mtu)
                                        .address(mac.0.to_vec())
                                        .build(),
                                )
                                .execute()
                                .await
                                .map_err(kernel_err("create transit vxlan", TRANSIT_DEVICE)),
                        )?;
                        require_link(h, TRANSIT_DEVICE).await?
                    }
                };
                let fix = LinkUnspec::new_with_index(link.header.index)
                    .mtu(*mtu)
                    .address(mac.0.to_vec())
                    .up()
                    .build();
                h.link()
                    .set(fix)
                    .execute()
                    .await
                    .map_err(kernel_err("set transit vxlan", TRANSIT_DEVICE))?;
                if *gateway {
                    // Pod sources arrive here while their routes point into the segments, so
                    // reverse-path filtering is loose on this device; the kernel applies it only
                    // to a device with an address (else every packet fails it), hence a
                    // link-local one that is never routed.
                    add_address(
                        h,
                        link.header.index,
                        TRANSIT_DEVICE,
                        TRANSIT_GATEWAY_ADDRESS,
                        32,
                    )
                    .await?;
                    loosen_rp_filter(TRANSIT_DEVICE)?;
                }
                Ok(())
            }
            TransitOp::DeleteDevice => delete_link(h, TRANSIT_DEVICE).await,
            TransitOp::NextHopAdd { ip, mac } => {
                let index = require_link(h, TRANSIT_DEVICE).await?.header.index;
                h.neighbours()
                    .add_bridge(index, &mac.0)
                    .destination(IpAddr::V4(*ip))
                    .flags(NeighbourFlags::Own)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
                    .map_err(kernel_err(
                        "transit fdb add",
                        format!("{mac} dst {ip} dev {TRANSIT_DEVICE}"),
                    ))?;
                h.neighbours()
                    .add(index, IpAddr::V4(*ip))
                    .link_layer_address(&mac.0)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
                    .map_err(kernel_err(
                        "transit neigh add",
                        format!("{ip} dev {TRANSIT_DEVICE}"),
                    ))
            }
            TransitOp::NextHopDel { ip, mac } => {
                let Some(link) = link_by_name(h, TRANSIT_DEVICE).await? else {
                    return Ok(());
                };
                self.next_hop_del(link.header.index, *ip, *mac).await
            }
            TransitOp::LooseUnderlay { ifname } => loosen_rp_filter(ifname),
            TransitOp::RouteAdd {
                dst,
                via,
                direct: true,
            } => h
                .route()
                .add(direct_route_message(*dst, *via))
                .replace()
                .execute()
                .await
                .map_err(kernel_err(
                    "transit route add",
                    format!("{dst}/32 via {via} proto {TRANSIT_ROUTE_PROTOCOL}"),
                )),
            TransitOp::RouteDel {
                dst,
                via,
                direct: true,
            } => ok_if_absent(
                h.route()
                    .del(direct_route_message(*dst, *via))
                    .execute()
                    .await
                    .map_err(kernel_err(
                        "transit route del",
                        format!("{dst}/32 via {via}"),
                    )),
            ),
            TransitOp::RouteAdd { dst, via, .. } => {
                let index = require_link(h, TRANSIT_DEVICE).await?.header.index;
                h.route()
                    .add(route_message(*dst, *via, index))
                    .replace()
                    .execute()
                    .await
                    .map_err(kernel_err(
                        "transit route add",
                        format!("{dst}/32 via {via} dev {TRANSIT_DEVICE}"),
                    ))
            }
            TransitOp::EgressRouteAdd { via } => {
                let index = require_link(h, TRANSIT_DEVICE).await?.header.index;
                h.route()
                    .add(egress_route_message(*via, index))
                    .replace()
                    .execute()
                    .await
                    .map_err(kernel_err(
                        "egress route add",
                        format!("default via {via} dev {TRANSIT_DEVICE} table {EGRESS_TABLE}"),
                    ))
            }
            TransitOp::EgressRouteDel { via } => {
                let Some(link) = link_by_name(h, TRANSIT_DEVICE).await? else {
                    return Ok(());
                };
                ok_if_absent(
                    h.route()
                        .del(egress_route_message(*via, link.header.index))
                        .execute()
                        .await
                        .map_err(kernel_err(
                            "egress route del",
                            format!("default via {via} table {EGRESS_TABLE}"),
                        )),
                )
            }
            TransitOp::EgressRuleAdd { rule, source } => {
                let mut add = h.rule().add().v4();
                *add.message_mut() = egress_rule_message(*rule, *source);
                ok_if_exists(add.execute().await.map_err(kernel_err(
                    "egress rule add",
                    format!("from {source} ({rule:?})"),
                )))
            }
            TransitOp::EgressRuleDel { rule, source } => ok_if_absent(
                h.rule()
                    .del(egress_rule_message(*rule, *source))
                    .execute()
                    .await
                    .map_err(kernel_err(
                        "egress rule del",
                        format!("from {source} ({rule:?})"),
                    )),
            ),
            TransitOp::ReplyRouteAdd { slot, via, direct } => {
                let through = through_for_add(h, *direct).await?;
                add_route(
                    h,
                    reply_route_message(*slot, *via, through),
                    "reply route add",
                    format!("default via {via} table {}", reply_table(*slot)),
                )
                .await
            }
            TransitOp::ReplyRouteDel { slot, via, direct } => {
                let Some(through) = through_for_del(h, *direct).await? else {
                    return Ok(());
                };
                del_route(
                    h,
                    reply_route_message(*slot, *via, through),
                    "reply route del",
                    format!("default via {via} table {}", reply_table(*slot)),
                )
                .await
            }
            TransitOp::GatewayRouteAdd { dst, via, direct } => {
                let through = through_for_add(h, *direct).await?;
                add_route(
                    h,
                    gateway_route_message(*dst, *via, through),
                    "gateway route add",
                    format!("{dst}/32 via {via} table {GATEWAY_ROUTES_TABLE}"),
                )
                .await
            }
            TransitOp::GatewayRouteDel { dst, via, direct } => {
                let Some(through) = through_for_del(h, *direct).await? else {
                    return Ok(());
                };
                del_route(
                    h,
                    gateway_route_message(*dst, *via, through),
                    "gateway route del",
                    format!("{dst}/32 via {via} table {GATEWAY_ROUTES_TABLE}"),
                )
                .await
            }
            TransitOp::GatewayRuleAdd => {
                let mut add = h.rule().add().v4();
                *add.message_mut() = gateway_rule_message();
                ok_if_exists(add.execute().await.map_err(kernel_err(
                    "gateway rule add",
                    format!("lookup {GATEWAY_ROUTES_TABLE}"),
                )))
            }
            TransitOp::GatewayRuleDel => ok_if_absent(
                h.rule()
                    .del(gateway_rule_message())
                    .execute()
                    .await
                    .map_err(kernel_err(
                        "gateway rule del",
                        format!("lookup {GATEWAY_ROUTES_TABLE}"),
                    )),
            ),
            TransitOp::ReplyRuleAdd { slot } => {
                let mut add = h.rule().add().v4();
                *add.message_mut() = reply_rule_message(*slot);
                ok_if_exists(add.execute().await.map_err(kernel_err(
                    "reply rule add",
                    format!(
                        "fwmark {:#x} lookup {}",
                        reply_mark(*slot),
                        reply_table(*slot)
                    ),
                )))
            }
            TransitOp::ReplyRuleDel { slot } => ok_if_absent(
                h.rule()
                    .del(reply_rule_message(*slot))
                    .execute()
                    .await
                    .map_err(kernel_err(
                        "reply rule del",
                        format!(
                            "fwmark {:#x} lookup {}",
                            reply_mark(*slot),
                            reply_table(*slot)
                        ),
                    )),
            ),
            TransitOp::RouteDel { dst, via, .. } => {
                let Some(link) = link_by_name(h, TRANSIT_DEVICE).await? else {
                    return Ok(());
                };
                ok_if_absent(
                    h.route()
                        .del(route_message(*dst, *via, link.header.index))
                        .execute()
                        .await
                        .map_err(kernel_err("transit route del", format!("{dst}/32"))),
                )
            }
        }
    }
}
