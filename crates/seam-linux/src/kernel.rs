//! [`NodeKernel`] over rtnetlink.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoPortData, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags,
    LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteAddress;
use netlink_packet_route::route::RouteAttribute;
use netlink_packet_route::AddressFamily;
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};
use seam_dataplane::{
    bridge_name, is_host_port, is_vm_port, vni_of_bridge, vni_of_vxlan, vxlan_name, AttachedPort,
    Error, LinkOp, NodeKernel, Observed, ObservedSegment, ObservedVmPort, PodAttach, Result,
    SegmentSpec, Underlay, UnderlayInterface, RETIRED_GROUP,
};
use seam_model::MacAddr;
use seam_nft::names::{NAT_FAMILY, NAT_TABLE, TABLE};
use seam_nft::nat::{removal_text, render_nat, NatOp, ObservedNat};
use seam_nft::table::{from_nft_json, full_text, split_write, TableModel};

/// VXLAN's IANA port.
pub(crate) const VXLAN_PORT: u16 = seam_nft::names::VXLAN_UDP_PORT;

/// The node's kernel, through one rtnetlink connection opened in the agent's own namespace.
#[derive(Clone)]
pub struct LinuxKernel {
    pub(crate) handle: Handle,
}

impl LinuxKernel {
    /// Opens a netlink connection in the calling thread's namespace and spawns it on the
    /// current tokio runtime.
    pub fn connect() -> crate::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(crate::Error::Connection)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }
}

/// A netlink connection opened inside a sandbox namespace, closed when dropped.
///
/// rtnetlink's connection task only ends once its unsolicited-message channel notices its
/// receiver is gone, which never happens on a socket that gets no unsolicited messages; without
/// the abort every ADD would leak a task, a socket and its buffers.
struct SandboxConn {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl std::ops::Deref for SandboxConn {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for SandboxConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a netlink connection inside the namespace at `path` (on a short-lived thread, so no
/// runtime thread ever changes namespace) and spawns it on the current runtime.
fn connect_in(path: &Path) -> Result<SandboxConn> {
    let runtime = tokio::runtime::Handle::current();
    let netns_err = |source| Error::Netns {
        path: path.display().to_string(),
        source,
    };
    static WORKER: std::sync::OnceLock<crate::netns::NetnsWorker> = std::sync::OnceLock::new();
    WORKER
        .get_or_init(crate::netns::NetnsWorker::default)
        .run(path, move || {
            let _guard = runtime.enter();
            let (conn, handle, _) = rtnetlink::new_connection()?;
            let task = tokio::spawn(conn);
            Ok::<_, std::io::Error>(SandboxConn { handle, task })
        })
        .map_err(|e| netns_err(std::io::Error::other(e.to_string())))?
        .map_err(netns_err)
}

pub(crate) fn kernel_err(
    operation: &'static str,
    object: impl Into<String>,
) -> impl FnOnce(rtnetlink::Error) -> Error {
    let object = object.into();
    move |e| {
        let errno = match &e {
            rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
            _ => None,
        };
        Error::Kernel {
            operation,
            object,
            errno,
            message: e.to_string(),
        }
    }
}

pub(crate) fn ok_if_exists(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.is_exists() => Ok(()),
        other => other,
    }
}

pub(crate) fn ok_if_absent(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn link_controller(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

/// Whether a bridge port is in hairpin mode (`IFLA_BRPORT_MODE`, reported in the port data of
/// every link dump).
fn link_hairpin(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().any(|i| match i {
            LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                port.contains(&InfoBridgePort::HairpinMode(true))
            }
            _ => false,
        }),
        _ => false,
    })
}

/// Puts an endpoint port that is already plugged into its bridge in hairpin mode and sets it
/// up, in one request. Hairpin mode lets the bridge send a frame back out of the port it came
/// in on: a Service's hairpin connection (a pod reaching itself through its Service, its
/// packet masqueraded on the way) must take that path, like kubelet's `hairpin-veth` mode.
/// The kernel applies bridge port data only to a port that already has its bridge, so this
/// cannot be part of the request that plugs it.
async fn hairpin_up(handle: &Handle, port: LinkMessage, ifname: &str) -> Result<()> {
    handle
        .link()
        .set_port(port)
        .execute()
        .await
        .map_err(kernel_err("set bridge port hairpin", ifname))
}

/// The request of [`hairpin_up`] for the port with this index.
fn hairpin_up_message(index: u32) -> LinkMessage {
    LinkBridgePort::new(index).hairpin(true).up().build()
}

/// A VXLAN device's local (source) address.
pub(crate) fn vxlan_local(link: &LinkMessage) -> Option<Ipv4Addr> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(data)) => data.iter().find_map(|d| match d {
                InfoVxlan::Local(ip) => Some(*ip),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    })
}

pub(crate) fn link_mac(link: &LinkMessage) -> Option<MacAddr> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) => <[u8; 6]>::try_from(b.as_slice()).ok().map(MacAddr),
        _ => None,
    })
}

fn link_mtu(link: &LinkMessage) -> u32 {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        })
        .unwrap_or(0)
}

pub(crate) fn is_up(link: &LinkMessage) -> bool {
    link.header.flags.contains(LinkFlags::Up)
}

/// `ip neigh del IP dev INDEX`; absent is success.
pub(crate) async fn neigh_del(
    h: &Handle,
    index: u32,
    ip: Ipv4Addr,
    operation: &'static str,
) -> Result<()> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = index;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    ok_if_absent(
        h.neighbours()
            .del(msg)
            .execute()
            .await
            .map_err(kernel_err(operation, ip.to_string())),
    )
}

/// `bridge fdb del MAC dev INDEX [dst DST]` of the entry with `flags` (`Own` for the device's
/// entry, `Controller` for the bridge's); absent is success.
pub(crate) async fn fdb_del(
    h: &Handle,
    index: u32,
    mac: MacAddr,
    dst: Option<Ipv4Addr>,
    flags: NeighbourFlags,
    operation: &'static str,
) -> Result<()> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.flags = flags;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    if let Some(dst) = dst {
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
    }
    ok_if_absent(
        h.neighbours()
            .del(msg)
            .execute()
            .await
            .map_err(kernel_err(operation, mac.to_string())),
    )
}

pub(crate) async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    match handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link),
        Err(e) => {
            let e = kernel_err("get link", name)(e);
            if e.is_not_found() {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

pub(crate) async fn require_link(handle: &Handle, name: &str) -> Result<LinkMessage> {
    link_by_name(handle, name)
        .await?
        .ok_or_else(|| Error::Kernel {
            operation: "get link",
            object: name.to_string(),
            errno: Some(19),
            message: "no such device".into(),
        })
}

/// The link called `name`, created from `build()` first when it does not exist (`ip link add`
/// unless present); a concurrent creator winning the race is fine.
async fn get_or_create(
    handle: &Handle,
    name: &str,
    operation: &'static str,
    build: impl FnOnce() -> LinkMessage,
) -> Result<LinkMessage> {
    if let Some(link) = link_by_name(handle, name).await? {
        return Ok(link);
    }
    ok_if_exists(
        handle
            .link()
            .add(build())
            .execute()
            .await
            .map_err(kernel_err(operation, name)),
    )?;
    require_link(handle, name).await
}

pub(crate) async fn delete_link(handle: &Handle, name: &str) -> Result<()> {
    let Some(link) = link_by_name(handle, name).await? else {
        return Ok(());
    };
    ok_if_absent(
        handle
            .link()
            .del(link.header.index)
            .execute()
            .await
            .map_err(kernel_err("delete link", name)),
    )
}

pub(crate) async fn add_address(
    handle: &Handle,
    index: u32,
    object: &str,
    ip: Ipv4Addr,
    prefix: u8,
) -> Result<()> {
    ok_if_exists(
        handle
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .execute()
            .await
            .map_err(kernel_err("add address", object)),
    )
}

impl LinuxKernel {
    async fn ensure_segment(&self, spec: &SegmentSpec, underlay: &Underlay) -> Result<()> {
        let h = &self.handle;
        let br = bridge_name(spec.vni);
        let vx = vxlan_name(spec.vni);
        let bridge = get_or_create(h, &br, "create bridge", || {
            LinkBridge::new(&br)
                .mtu(spec.mtu)
                .address(spec.gateway_mac.0.to_vec())
                .up()
                .build()
        })
        .await?;
        let br_index = bridge.header.index;
        // Repair drift on an adopted bridge without recreating it (that would cut traffic).
        let fix = LinkUnspec::new_with_index(br_index)
            .mtu(spec.mtu)
            .address(spec.gateway_mac.0.to_vec())
            .up()
            .build();
        h.link()
            .set(fix)
            .execute()
            .await
            .map_err(kernel_err("set bridge", &br))?;
        add_address(
            h,
            br_index,
            &br,
            spec.gateway.addr(),
            spec.gateway.prefix_len(),
        )
        .await?;

        let found = match link_by_name(h, &vx).await? {
            // Bound to an old underlay address (the node's address changed): its packets would
            // leave from an address the node no longer has. Made anew; the plan re-adds its
            // entries.
            Some(link) if vxlan_local(&link).is_some_and(|ip| ip != underlay.ip) => {
                delete_link(h, &vx).await?;
                None
            }
            found => found,
        };
        let vxlan = match found {
            Some(link) => link,
            None => {
                let dev = require_link(h, &underlay.ifname).await?;
                // Learning off and proxy on: remote MACs and ARP answers come only from the
                // static entries the control plane installs, so nothing floods the underlay.
                get_or_create(h, &vx, "create vxlan", || {
                    LinkVxlan::new(&vx, spec.vni)
                        .dev(dev.header.index)
                        .local(underlay.ip)
                        .port(VXLAN_PORT)
                        .learning(false)
                        .proxy(true)
                        .udp_csum(true)
                        .mtu(spec.mtu)
                        .build()
                })
                .await?
            }
        };
        let vx_index = vxlan.header.index;
        let plug = LinkUnspec::new_with_index(vx_index)
            .controller(br_index)
            .mtu(spec.mtu)
            .up()
            .build();
        h.link()
            .set(plug)
            .execute()
            .await
            .map_err(kernel_err("plug vxlan", &vx))?;
        let port = LinkBridgePort::new(vx_index).learning(false).build();
        h.link()
            .set_port(port)
            .execute()
            .await
            .map_err(kernel_err("set vxlan bridge port", &vx))?;
        Ok(())
    }

    async fn index_of(&self, name: &str) -> Result<u32> {
        Ok(require_link(&self.handle, name).await?.header.index)
    }
}

impl NodeKernel for LinuxKernel {
    async fn observe(&self) -> Result<Observed> {
        let h = &self.handle;
        // Dumps are consumed as streams and only Seam's own links are kept, in compact form:
        // a node with hundreds of pods must not materialize every message of every dump.
        struct Facts {
            index: u32,
            name: String,
            up: bool,
            controller: Option<u32>,
            retired: bool,
            mtu: u32,
            hairpin: bool,
            local: Option<Ipv4Addr>,
        }
        let mut facts = Vec::new();
        let mut links = h.link().get().execute();
        while let Some(link) = links
            .try_next()
            .await
            .map_err(kernel_err("list links", "all"))?
        {
            let Some(name) = link_name(&link) else {
                continue;
            };
            let ours = vni_of_bridge(name).is_some()
                || vni_of_vxlan(name).is_some()
                || is_host_port(name)
                || is_vm_port(name);
            if ours {
                facts.push(Facts {
                    index: link.header.index,
                    name: name.to_string(),
                    up: is_up(&link),
                    controller: link_controller(&link),
                    retired: link
                        .attributes
                        .iter()
                        .any(|a| matches!(a, LinkAttribute::Group(RETIRED_GROUP))),
                    mtu: link_mtu(&link),
                    hairpin: link_hairpin(&link),
                    local: vxlan_local(&link),
                });
            }
        }
        let mut observed = Observed::default();
        let mut vxlan_vni = BTreeMap::new();
        let mut bridge_vni = BTreeMap::new();
        for f in &facts {
            if let Some(vni) = vni_of_bridge(&f.name) {
                bridge_vni.insert(f.index, vni);
                observed
                    .segments
                    .entry(vni)
                    .or_insert_with(ObservedSegment::default)
                    .bridge_ok = f.up;
            }
        }
        for f in &facts {
            if let Some(vni) = vni_of_vxlan(&f.name) {
                vxlan_vni.insert(f.index, vni);
                let plugged = f.controller.and_then(|c| bridge_vni.get(&c)) == Some(&vni);
                let seg = observed
                    .segments
                    .entry(vni)
                    .or_insert_with(ObservedSegment::default);
                seg.vxlan_ok = f.up && plugged;
                seg.vxlan_local = f.local;
            } else if is_host_port(&f.name) && !f.retired {
                let vni = f.controller.and_then(|c| bridge_vni.get(&c)).copied();
                if vni.is_some() && !f.hairpin {
                    observed.unhairpinned.insert(f.name.clone());
                }
                observed.host_ports.insert(f.name.clone(), vni);
            } else if is_vm_port(&f.name) {
                let vni = f.controller.and_then(|c| bridge_vni.get(&c)).copied();
                if vni.is_some() && !f.hairpin {
                    observed.unhairpinned.insert(f.name.clone());
                }
                let port = ObservedVmPort {
                    vni,
                    mtu: f.mtu,
                    up: f.up,
                };
                observed.vm_ports.insert(f.name.clone(), port);
            }
        }
        let mut addrs = h.address().get().execute();
        while let Some(addr) = addrs
            .try_next()
            .await
            .map_err(kernel_err("list addresses", "all"))?
        {
            if let Some(vni) = bridge_vni.get(&addr.header.index) {
                let has_v4 = addr
                    .attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Address(IpAddr::V4(_))));
                if has_v4 {
                    if let Some(seg) = observed.segments.get_mut(vni) {
                        seg.gateway_ok = true;
                    }
                }
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
            .map_err(kernel_err("list fdb", "all"))?
        {
            let Some(vni) = vxlan_vni.get(&entry.header.ifindex) else {
                continue;
            };
            if !entry.header.flags.contains(NeighbourFlags::Own) {
                continue;
            }
            if let (Some(mac), Some(dst)) = (neigh_mac(&entry), neigh_v4(&entry)) {
                if !mac.0.iter().all(|b| *b == 0) {
                    observed.fdb.insert((*vni, mac, dst));
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
            .map_err(kernel_err("list neighbours", "all"))?
        {
            let Some(vni) = vxlan_vni.get(&entry.header.ifindex) else {
                continue;
            };
            if entry.header.state != NeighbourState::Permanent {
                continue;
            }
            if let (Some(mac), Some(ip)) = (neigh_mac(&entry), neigh_v4(&entry)) {
                observed.neighbours.insert((*vni, ip, mac));
            }
        }
        observed.routes = crate::transit::main_direct_routes(h).await?;
        Ok(observed)
    }

    async fn apply(&self, op: &LinkOp) -> Result<()> {
        let h = &self.handle;
        match op {
            LinkOp::EnsureSegment { spec, underlay } => self.ensure_segment(spec, underlay).await,
            LinkOp::DeleteSegment { vni } => {
                delete_link(h, &vxlan_name(*vni)).await?;
                delete_link(h, &bridge_name(*vni)).await
            }
            LinkOp::FdbAdd(r) => {
                let vx = vxlan_name(r.vni);
                let index = self.index_of(&vx).await?;
                h.neighbours()
                    .add_bridge(index, &r.mac.0)
                    .destination(IpAddr::V4(r.node_ip))
                    .flags(NeighbourFlags::Own)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
                    .map_err(kernel_err(
                        "fdb add",
                        format!("{} dst {} dev {vx}", r.mac, r.node_ip),
                    ))?;
                // The bridge's own entry sends the frame straight to the VXLAN port instead of
                // flooding it to every local port first.
                h.neighbours()
                    .add_bridge(index, &r.mac.0)
                    .flags(NeighbourFlags::Controller)
                    .state(NeighbourState::Noarp)
                    .replace()
                    .execute()
                    .await
                    .map_err(kernel_err("fdb add master", format!("{} dev {vx}", r.mac)))
            }
            LinkOp::FdbDel { vni, mac, dst } => {
                let vx = vxlan_name(*vni);
                let Some(link) = link_by_name(h, &vx).await? else {
                    return Ok(());
                };
                let index = link.header.index;
                fdb_del(h, index, *mac, Some(*dst), NeighbourFlags::Own, "fdb del").await?;
                fdb_del(
                    h,
                    index,
                    *mac,
                    None,
                    NeighbourFlags::Controller,
                    "fdb del master",
                )
                .await
            }
            LinkOp::NeighAdd { vni, ip, mac } => {
                let vx = vxlan_name(*vni);
                let index = self.index_of(&vx).await?;
                h.neighbours()
                    .add(index, IpAddr::V4(*ip))
                    .link_layer_address(&mac.0)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
                    .map_err(kernel_err("neigh add", format!("{ip} dev {vx}")))
            }
            LinkOp::NeighDel { vni, ip } => {
                let vx = vxlan_name(*vni);
                let Some(link) = link_by_name(h, &vx).await? else {
                    return Ok(());
                };
                neigh_del(h, link.header.index, *ip, "neigh del").await
            }
            LinkOp::DeletePort { host_ifname } => delete_link(h, host_ifname).await,
            LinkOp::PlugVmPort { ifname, vni, mtu } => {
                let bridge = self.index_of(&bridge_name(*vni)).await?;
                let port = self.index_of(ifname).await?;
                let plug = LinkUnspec::new_with_index(port)
                    .controller(bridge)
                    .mtu(*mtu)
                    .build();
                h.link()
                    .set(plug)
                    .execute()
                    .await
                    .map_err(kernel_err("plug vm port", ifname))?;
                hairpin_up(h, hairpin_up_message(port), ifname).await
            }
            LinkOp::SetHairpin { ifname } => {
                let Some(link) = link_by_name(h, ifname).await? else {
                    return Ok(());
                };
                let port = LinkBridgePort::new(link.header.index).hairpin(true).build();
                ok_if_absent(
                    h.link()
                        .set_port(port)
                        .execute()
                        .await
                        .map_err(kernel_err("set bridge port hairpin", ifname)),
                )
            }
            LinkOp::AnnounceRouted { ip, mac, ports } => {
                let (ip, mac, ports) = (*ip, *mac, ports.clone());
                tokio::task::spawn_blocking(move || {
                    let frame = seam_dataplane::lb::gratuitous_arp(mac.0, ip);
                    // Best effort, port by port: a port gone meanwhile does not stop the rest.
                    for port in &ports {
                        if let Err(e) = crate::lb::send_frame(port, &frame) {
                            tracing::debug!(%ip, port, error = %e, "announce routed endpoint");
                        }
                    }
                })
                .await
                .map_err(|e| Error::Kernel {
                    operation: "announce routed endpoint (gratuitous ARP)",
                    object: ip.to_string(),
                    errno: None,
                    message: e.to_string(),
                })
            }
            LinkOp::UnplugVmPort { ifname } => {
                let Some(link) = link_by_name(h, ifname).await? else {
                    return Ok(());
                };
                let unplug = LinkUnspec::new_with_index(link.header.index)
                    .nocontroller()
                    .down()
                    .build();
                ok_if_absent(
                    h.link()
                        .set(unplug)
                        .execute()
                        .await
                        .map_err(kernel_err("unplug vm port", ifname)),
                )
            }
        }
    }

    async fn attach(&self, spec: &PodAttach) -> Result<AttachedPort> {
        let result = self.attach_inner(spec).await;
        if result.is_err() {
            // All or nothing: a failed ADD must leave no veth behind.
            if let Err(e) = delete_link(&self.handle, &spec.host_ifname).await {
                tracing::warn!(host_ifname = %spec.host_ifname, error = %e, "rollback of failed attach");
            }
        }
        result
    }

    async fn detach(&self, host_ifname: &str) -> Result<()> {
        delete_link(&self.handle, host_ifname).await
    }

    async fn retire(&self, host_ifname: &str, sandbox: Option<(&str, &str)>) -> Result<()> {
        let h = &self.handle;
        if let Some((netns, ifname)) = sandbox {
            if !netns.is_empty() && Path::new(netns).exists() {
                if let Err(e) = retire_sandbox_end(netns, ifname, host_ifname).await {
                    // Not fatal: the reaper still deletes the pair; only a reuse of this
                    // namespace would have to wait for it.
                    tracing::debug!(%netns, %ifname, error = %e, "could not move the sandbox interface aside");
                }
            }
        }
        let Some(link) = link_by_name(h, host_ifname).await? else {
            return Ok(());
        };
        let mark = LinkUnspec::new_with_index(link.header.index)
            .link_group(RETIRED_GROUP)
            .build();
        ok_if_absent(
            h.link()
                .set(mark)
                .execute()
                .await
                .map_err(kernel_err("retire host veth", host_ifname)),
        )
    }

    async fn reap(&self) -> Result<bool> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::Group(RETIRED_GROUP));
        match self
            .handle
            .link()
            .del_with_message(msg)
            .execute()
            .await
            .map_err(kernel_err("delete retired ports", "group"))
        {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn underlay_interface(&self, ifname: &str) -> Result<UnderlayInterface> {
        let link = require_link(&self.handle, ifname).await?;
        let mut addresses = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.header.index)
            .execute();
        let mut found = Vec::new();
        while let Some(m) = addresses
            .try_next()
            .await
            .map_err(kernel_err("list addresses", ifname))?
        {
            // The filter asks the kernel; an older one dumps every interface's.
            if m.header.index != link.header.index {
                continue;
            }
            for a in &m.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = a {
                    if let Ok(net) = Ipv4Net::new(*ip, m.header.prefix_len) {
                        found.push(net);
                    }
                }
            }
        }
        Ok(UnderlayInterface {
            addresses: found,
            // The routed transit tells a gateway's traffic by its source MAC: only a real one.
            mac: link_mac(&link).filter(|m| m.is_unicast() && m.0 != [0; 6]),
            mtu: link_mtu(&link),
        })
    }

    async fn check(&self, spec: &PodAttach) -> Result<AttachedPort> {
        let drift = |what: &str, detail: String| Error::Drift {
            what: what.to_string(),
            detail,
        };
        let host = link_by_name(&self.handle, &spec.host_ifname)
            .await?
            .ok_or_else(|| drift(&spec.host_ifname, "host veth is missing".into()))?;
        let bridge = self.index_of(&bridge_name(spec.vni)).await.ok();
        if bridge.is_none() || link_controller(&host) != bridge {
            return Err(drift(
                &spec.host_ifname,
                format!("host veth is not plugged into {}", bridge_name(spec.vni)),
            ));
        }
        if !link_hairpin(&host) {
            return Err(drift(
                &spec.host_ifname,
                "host veth is not in hairpin mode".into(),
            ));
        }
        let netns_err = |source| Error::Netns {
            path: spec.netns.clone(),
            source,
        };
        std::fs::metadata(&spec.netns).map_err(netns_err)?;
        let inner = connect_in(Path::new(&spec.netns))?;
        let link = link_by_name(&inner, &spec.ifname).await?.ok_or_else(|| {
            drift(
                &spec.ifname,
                format!("interface is missing in {}", spec.netns),
            )
        })?;
        if link_mac(&link) != Some(spec.mac) {
            return Err(drift(
                &spec.ifname,
                format!("MAC is {:?}, recorded {}", link_mac(&link), spec.mac),
            ));
        }
        let addrs: Vec<_> = inner
            .address()
            .get()
            .set_link_index_filter(link.header.index)
            .execute()
            .try_collect()
            .await
            .map_err(kernel_err("list addresses", &spec.ifname))?;
        let want = IpAddr::V4(spec.address.addr());
        let has = addrs.iter().any(|a| {
            a.header.prefix_len == spec.address.prefix_len()
                && a.attributes
                    .iter()
                    .any(|at| matches!(at, AddressAttribute::Address(ip) if *ip == want))
        });
        if !has {
            return Err(drift(
                &spec.ifname,
                format!("address {} is missing", spec.address),
            ));
        }
        let routes: Vec<_> = inner
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(kernel_err("list routes", &spec.ifname))?;
        let default_ok = routes.iter().any(|r| {
            r.header.destination_prefix_length == 0
                && r.attributes.iter().any(|a| matches!(a, RouteAttribute::Gateway(RouteAddress::Inet(g)) if *g == spec.gateway))
        });
        if !default_ok {
            return Err(drift(
                &spec.ifname,
                format!("default route via {} is missing", spec.gateway),
            ));
        }
        let host_mac = link_mac(&host)
            .ok_or_else(|| drift(&spec.host_ifname, "host veth has no MAC".into()))?;
        Ok(AttachedPort { host_mac })
    }
}

impl LinuxKernel {
    async fn attach_inner(&self, spec: &PodAttach) -> Result<AttachedPort> {
        let h = &self.handle;
        let netns = std::fs::File::open(&spec.netns).map_err(|source| Error::Netns {
            path: spec.netns.clone(),
            source,
        })?;
        let bridge = self.index_of(&bridge_name(spec.vni)).await?;
        let host_mac = host_port_mac(&spec.host_ifname);
        // One request makes the whole pair: the host end already plugged into the bridge, with
        // its MAC (hairpin mode and up follow in a second request, see `hairpin_up`); the
        // sandbox end created directly inside the sandbox namespace, named,
        // addressed (MAC) and sized. (It cannot also be brought up here: the kernel opens it
        // before linking it to its peer, which veth refuses.) Moving an existing link between
        // namespaces waits for an RCU grace period (≈16 ms here), and every extra request
        // queues on the kernel's RTNL lock behind concurrent ADDs.
        let mut veth = LinkVeth::new(&spec.host_ifname, &spec.ifname)
            .mtu(spec.mtu)
            .address(host_mac.0.to_vec())
            .controller(bridge)
            .build();
        set_veth_peer(&mut veth, |peer| {
            peer.attributes
                .push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
            peer.attributes
                .push(LinkAttribute::Address(spec.mac.0.to_vec()));
            peer.attributes.push(LinkAttribute::Mtu(spec.mtu));
        });
        h.link()
            .add(veth)
            .execute()
            .await
            .map_err(kernel_err("create veth", &spec.host_ifname))?;
        // By name: the create does not return the index, and a lookup would cost a request.
        let port = LinkBridgePort::new(0)
            .name(spec.host_ifname.clone())
            .hairpin(true)
            .up()
            .build();
        hairpin_up(h, port, &spec.host_ifname).await?;

        let inner = connect_in(Path::new(&spec.netns))?;
        // A new network namespace's loopback is always ifindex 1.
        let lo_up = LinkUnspec::new_with_index(1).up().build();
        inner
            .link()
            .set(lo_up)
            .execute()
            .await
            .map_err(kernel_err("set lo up", &spec.netns))?;
        let eth = require_link(&inner, &spec.ifname).await?;
        let up = LinkUnspec::new_with_index(eth.header.index).up().build();
        inner
            .link()
            .set(up)
            .execute()
            .await
            .map_err(kernel_err("set sandbox interface up", &spec.ifname))?;
        add_address(
            &inner,
            eth.header.index,
            &spec.ifname,
            spec.address.addr(),
            spec.address.prefix_len(),
        )
        .await?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(spec.gateway)
            .output_interface(eth.header.index)
            .build();
        ok_if_exists(
            inner
                .route()
                .add(route)
                .execute()
                .await
                .map_err(kernel_err("add default route", &spec.ifname)),
        )?;

        Ok(AttachedPort { host_mac })
    }
}

/// Sets the sandbox end of a retiring pair down (which also drops its routes) and renames it
/// (`sx…`, unique per attachment) so that the sandbox's interface name is free again. Both are
/// cheap, unlike deleting the link.
async fn retire_sandbox_end(netns: &str, ifname: &str, host_ifname: &str) -> Result<()> {
    let inner = connect_in(Path::new(netns))?;
    let Some(link) = link_by_name(&inner, ifname).await? else {
        return Ok(());
    };
    let down = LinkUnspec::new_with_index(link.header.index).down().build();
    inner
        .link()
        .set(down)
        .execute()
        .await
        .map_err(kernel_err("set sandbox interface down", ifname))?;
    let aside = format!("sx{}", host_ifname.get(2..).unwrap_or(host_ifname));
    let rename = LinkUnspec::new_with_index(link.header.index)
        .name(aside)
        .build();
    inner
        .link()
        .set(rename)
        .execute()
        .await
        .map_err(kernel_err("rename sandbox interface", ifname))
}

/// The host end's MAC, derived from its name (itself derived from the attachment identity):
/// locally administered (`0a:5f:` + the last 32 bits of the name's hash), so it needs no
/// read-back after creation.
fn host_port_mac(host_ifname: &str) -> MacAddr {
    let hex = host_ifname
        .get(host_ifname.len().saturating_sub(8)..)
        .unwrap_or_default();
    let bits = u32::from_str_radix(hex, 16).unwrap_or(0).to_be_bytes();
    MacAddr([0x0a, 0x5f, bits[0], bits[1], bits[2], bits[3]])
}

/// Edits the peer half of a veth creation request.
fn set_veth_peer(msg: &mut LinkMessage, edit: impl FnOnce(&mut LinkMessage)) {
    for attr in &mut msg.attributes {
        if let LinkAttribute::LinkInfo(infos) = attr {
            for info in infos {
                if let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))) = info {
                    edit(peer);
                    return;
                }
            }
        }
    }
}

pub(crate) fn neigh_mac(entry: &NeighbourMessage) -> Option<MacAddr> {
    entry.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => {
            <[u8; 6]>::try_from(b.as_slice()).ok().map(MacAddr)
        }
        _ => None,
    })
}

pub(crate) fn neigh_v4(entry: &NeighbourMessage) -> Option<Ipv4Addr> {
    entry.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        // In an AF_BRIDGE (FDB) message the VXLAN remote is raw bytes: the parser decodes
        // NDA_DST by the message's family, which is not an IP family there.
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
            <[u8; 4]>::try_from(bytes.as_slice())
                .ok()
                .map(Ipv4Addr::from)
        }
        _ => None,
    })
}

fn firewall_error(e: impl std::fmt::Display) -> Error {
    Error::Kernel {
        operation: "apply firewall",
        object: format!("table {TABLE}"),
        errno: None,
        message: e.to_string(),
    }
}

/// An error of `operation` on the NAT table: `nft` refused, or its thread failed.
fn nat_error<E: std::fmt::Display>(
    operation: &'static str,
) -> impl FnOnce(E) -> seam_dataplane::Error {
    move |e| seam_dataplane::Error::Kernel {
        operation,
        object: format!("table {NAT_FAMILY} {NAT_TABLE}"),
        errno: None,
        message: e.to_string(),
    }
}

impl seam_dataplane::RuleCounters for LinuxKernel {
    async fn rule_counters(
        &self,
    ) -> Result<std::collections::BTreeMap<String, seam_nft::listing::RuleCounter>> {
        // One `nft -j list table inet seam` (in this thread's namespace, as every nft call of
        // this kernel), off the runtime's workers.
        match tokio::task::spawn_blocking(crate::nft::read_counters)
            .await
            .map_err(counter_error)?
        {
            Ok(counters) => Ok(counters),
            Err(crate::nft::NftError::NoTable) => Ok(std::collections::BTreeMap::new()),
            Err(e) => Err(counter_error(e)),
        }
    }
}

/// Reading the rule counters failed: `nft` refused, or its thread failed.
fn counter_error(e: impl std::fmt::Display) -> Error {
    Error::Kernel {
        operation: "read rule counters",
        object: format!("table {TABLE}"),
        errno: None,
        message: e.to_string(),
    }
}

impl seam_dataplane::Firewall for LinuxKernel {
    async fn apply_ruleset(&self, table: &TableModel) -> Result<()> {
        // A large Services part: the table without its elements, then the elements over netlink
        // (see `seam_nft::table::split_write` for why and what it costs).
        let (text, fill) = match split_write(table) {
            Some((first, fill)) => (full_text(&first), Some(fill)),
            None => (full_text(table), None),
        };
        // `nft` is a child process: keep it off the runtime thread.
        tokio::task::spawn_blocking(move || {
            crate::nft::apply_ruleset(&text)?;
            match fill {
                Some(fill) => crate::nft::apply_delta(&fill),
                None => Ok(()),
            }
        })
        .await
        .map_err(firewall_error)?
        .map_err(firewall_error)
    }

    async fn apply_delta(&self, delta: &seam_nft::FirewallDelta) -> Result<()> {
        let delta = delta.clone();
        tokio::task::spawn_blocking(move || crate::nft::apply_delta(&delta))
            .await
            .map_err(firewall_error)?
            .map_err(firewall_error)
    }

    async fn list_table(&self) -> Result<Option<TableModel>> {
        let text = tokio::task::spawn_blocking(crate::nft::list_table_text)
            .await
            .map_err(firewall_error)?
            .map_err(firewall_error)?;
        Ok(text.and_then(|t| from_nft_json(&t)))
    }

    async fn apply_nat(&self, op: &NatOp) -> Result<()> {
        let (operation, text) = match op {
            NatOp::Replace(desired) => ("apply nat table", render_nat(desired)),
            NatOp::Delete => ("delete nat table", removal_text()),
        };
        tokio::task::spawn_blocking(move || crate::nft::apply_text(operation, &text))
            .await
            .map_err(nat_error(operation))?
            .map_err(nat_error(operation))
    }

    async fn list_nat(&self) -> Result<Option<ObservedNat>> {
        tokio::task::spawn_blocking(crate::nft::list_nat_table)
            .await
            .map_err(nat_error("list nat table"))?
            .map_err(nat_error("list nat table"))
    }
}
