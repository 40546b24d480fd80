//! [`TransitKernel`] over rtnetlink: the transit VXLAN device to gateway nodes, its next-hop
//! entries and the routes of external addresses (see `seam_dataplane::transit`).

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::neighbour::{NeighbourFlags, NeighbourState};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{LinkUnspec, LinkVxlan, RouteMessageBuilder};
use seam_dataplane::{
    DesiredTransit, ObservedTransit, Result, TransitKernel, TransitOp, TRANSIT_DEVICE,
};
use seam_model::MacAddr;

use crate::kernel::{
    add_address, delete_link, fdb_del, is_up, kernel_err, link_by_name, link_mac, neigh_del,
    neigh_mac, neigh_v4, ok_if_absent, ok_if_exists, require_link, LinuxKernel, VXLAN_PORT,
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

impl LinuxKernel {
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
        let Some(link) = link_by_name(h, TRANSIT_DEVICE).await? else {
            return Ok(observed);
        };
        let index = link.header.index;
        observed.exists = true;
        observed.device_ok = is_up(&link) && link_mac(&link) == Some(desired.mac);
        let mut routes = h
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(route) = routes
            .try_next()
            .await
            .map_err(kernel_err("list routes", TRANSIT_DEVICE))?
        {
            if route.header.destination_prefix_length != 32 {
                continue;
            }
            if let (Some(oif), Some(dst), Some(via)) = route_fields(&route) {
                if oif == index {
                    observed.routes.insert((dst, via));
                }
            }
        }
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
            if entry.header.ifindex != index || entry.header.state != NeighbourState::Permanent {
                continue;
            }
            if let (Some(mac), Some(ip)) = (neigh_mac(&entry), neigh_v4(&entry)) {
                observed.neighbours.insert((ip, mac));
            }
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
                let link = match link_by_name(h, TRANSIT_DEVICE).await? {
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
                    crate::sysctl::write(&format!("net/ipv4/conf/{TRANSIT_DEVICE}/rp_filter"), "2")
                        .map_err(|e| seam_dataplane::Error::Kernel {
                            operation: "set rp_filter",
                            object: TRANSIT_DEVICE.to_string(),
                            errno: None,
                            message: e.to_string(),
                        })?;
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
            TransitOp::RouteAdd { dst, via } => {
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
            TransitOp::RouteDel { dst, via } => {
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
