//! LoadBalancer addresses on a gateway's external interface: `ip addr replace|del ADDR/32 dev
//! IFACE proto 83 noprefixroute valid_lft L preferred_lft L` over rtnetlink (the lifetime is what
//! is left of the gateway's lease), and gratuitous ARP.
//!
//! The announcements are Ethernet frames written by hand ([`seam_dataplane::lb::gratuitous_arp`],
//! 42 bytes) on an `AF_PACKET` socket: the kernel has no call that announces an address (its
//! `arp_notify` fires on link up and MAC changes only, not on an address added), `arping` is not
//! something a node must have installed, and no crate of the workspace builds ARP; a new packet
//! library for one fixed frame is not worth its weight. The socket is bound to the interface by
//! the link-layer address `getifaddrs` reports for it (which also gives its MAC), so no unsafe
//! code builds a `sockaddr_ll`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressProtocol, CacheInfo};
use seam_dataplane::lb::{gratuitous_arp, LbKernel, LbOp, ANNOUNCEMENTS, LB_ADDRESS_PROTOCOL};
use seam_dataplane::{Error, Result};

use crate::kernel::{kernel_err, ok_if_absent, ok_if_exists, require_link};
use crate::LinuxKernel;

/// The pause between two announcements.
const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(200);

fn is_seam_lb(message: &netlink_packet_route::address::AddressMessage) -> Option<Ipv4Addr> {
    let ours = message
        .attributes
        .iter()
        .any(|a| matches!(a, AddressAttribute::Protocol(p) if u8::from(*p) == LB_ADDRESS_PROTOCOL));
    if !ours || message.header.prefix_len != 32 {
        return None;
    }
    message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    })
}

impl LbKernel for LinuxKernel {
    async fn observe_lb(&self, ifname: &str) -> Result<BTreeSet<Ipv4Addr>> {
        let link = require_link(&self.handle, ifname).await?;
        let addrs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.header.index)
            .execute()
            .try_collect()
            .await
            .map_err(kernel_err("list addresses", ifname))?;
        Ok(addrs.iter().filter_map(is_seam_lb).collect())
    }

    async fn apply_lb(&self, ifname: &str, op: &LbOp) -> Result<()> {
        let index = require_link(&self.handle, ifname).await?.header.index;
        match *op {
            LbOp::Add {
                addr,
                lifetime_secs,
            } => {
                self.replace_lb(index, addr, lifetime_secs).await?;
                announce(ifname, addr).await
            }
            LbOp::Refresh {
                addr,
                lifetime_secs,
                announce: again,
            } => {
                self.replace_lb(index, addr, lifetime_secs).await?;
                if again {
                    announce(ifname, addr).await?;
                }
                Ok(())
            }
            LbOp::Remove(addr) => {
                let addrs: Vec<_> = self
                    .handle
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .execute()
                    .try_collect()
                    .await
                    .map_err(kernel_err("list addresses", ifname))?;
                for message in addrs {
                    if is_seam_lb(&message) == Some(addr) {
                        ok_if_absent(
                            self.handle
                                .address()
                                .del(message)
                                .execute()
                                .await
                                .map_err(kernel_err(
                                    "delete LoadBalancer address",
                                    addr.to_string(),
                                )),
                        )?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl LinuxKernel {
    /// `ip addr replace ADDR/32 dev INDEX proto 83 noprefixroute valid_lft L preferred_lft L`:
    /// adds the address or, when it is there, gives it a new lifetime.
    async fn replace_lb(&self, index: u32, addr: Ipv4Addr, lifetime_secs: u32) -> Result<()> {
        let mut request = self
            .handle
            .address()
            .add(index, IpAddr::V4(addr), 32)
            .replace();
        let message = request.message_mut();
        message
            .attributes
            .push(AddressAttribute::Protocol(AddressProtocol::from(
                LB_ADDRESS_PROTOCOL,
            )));
        // No /32 route in the main table: the address is answered and received, and the node's
        // routing stays as the operator made it.
        message
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
        // The kernel removes the address when its lifetime ends: it lives as long as the lease.
        let mut lifetime = CacheInfo::default();
        lifetime.ifa_preferred = lifetime_secs;
        lifetime.ifa_valid = lifetime_secs;
        message
            .attributes
            .push(AddressAttribute::CacheInfo(lifetime));
        ok_if_exists(
            request
                .execute()
                .await
                .map_err(kernel_err("add LoadBalancer address", addr.to_string())),
        )
    }
}

/// Sends [`ANNOUNCEMENTS`] gratuitous ARPs of `addr` on `ifname`, [`ANNOUNCE_INTERVAL`] apart
/// (on a blocking thread, in the process's own namespace).
async fn announce(ifname: &str, addr: Ipv4Addr) -> Result<()> {
    let name = ifname.to_string();
    tokio::task::spawn_blocking(move || send_announcements(&name, addr, ANNOUNCE_INTERVAL))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map_err(|e| Error::Kernel {
            operation: "announce LoadBalancer address (gratuitous ARP)",
            object: format!("{addr} on {ifname}"),
            errno: e.raw_os_error(),
            message: e.to_string(),
        })
}

/// Sends one Ethernet `frame` out of `ifname` as it is (its source MAC included), from the
/// calling thread's namespace.
pub fn send_frame(ifname: &str, frame: &[u8]) -> std::io::Result<()> {
    let (socket, _) = frame_socket(ifname)?;
    send_on(&socket, frame)
}

/// Sends the announcements from the calling thread (its network namespace).
pub fn send_announcements(ifname: &str, addr: Ipv4Addr, interval: Duration) -> std::io::Result<()> {
    let (socket, link) = frame_socket(ifname)?;
    let mac = link
        .addr()
        .ok_or_else(|| std::io::Error::other(format!("{ifname} has no MAC address")))?;
    let frame = gratuitous_arp(mac, addr);
    for i in 0..ANNOUNCEMENTS {
        if i > 0 {
            std::thread::sleep(interval);
        }
        send_on(&socket, &frame)?;
    }
    Ok(())
}

/// An `AF_PACKET` socket bound to `ifname` that sends whole frames, with the interface's
/// link-layer address.
fn frame_socket(
    ifname: &str,
) -> std::io::Result<(std::os::fd::OwnedFd, nix::sys::socket::LinkAddr)> {
    use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType};
    let link = nix::ifaddrs::getifaddrs()?
        .filter(|i| i.interface_name == ifname)
        .find_map(|i| i.address.and_then(|a| a.as_link_addr().copied()))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no link-layer address for {ifname}"),
            )
        })?;
    // Protocol 0: the socket sends and receives nothing, so no queue of incoming frames builds
    // up; the kernel reads each frame's EtherType from its header.
    let socket = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&socket), &link)?;
    Ok((socket, link))
}

fn send_on(socket: &std::os::fd::OwnedFd, frame: &[u8]) -> std::io::Result<()> {
    use nix::sys::socket::{send, MsgFlags};
    send(
        std::os::fd::AsRawFd::as_raw_fd(socket),
        frame,
        MsgFlags::empty(),
    )?;
    Ok(())
}
