//! Changes of one interface as `ip monitor address link dev IFNAME` shows them: what wakes the
//! agent's follower of its own underlay address (`seam_agent::underlay`) at once, instead of
//! at its next periodic read.

use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::sys::SocketAddr;
use rtnetlink::MulticastGroup;

use crate::{Error, Result};

/// A subscription to the IPv4 address and link changes of one interface; closed when dropped.
pub struct InterfaceWatch {
    ifname: String,
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    task: tokio::task::JoinHandle<()>,
}

impl InterfaceWatch {
    /// Subscribes, in the calling thread's namespace, to the changes of `ifname`; the socket's
    /// connection runs on the current tokio runtime.
    pub fn open(ifname: &str) -> Result<Self> {
        let (conn, _, messages) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
        ])
        .map_err(Error::Connection)?;
        Ok(Self {
            ifname: ifname.to_string(),
            messages,
            task: tokio::spawn(conn),
        })
    }

    /// Waits for the next change of the interface's IPv4 addresses or of the link itself (its
    /// MAC, say); `false` once the socket is gone (the caller reads periodically then).
    pub async fn changed(&mut self) -> bool {
        while let Some((message, _)) = self.messages.next().await {
            if let NetlinkPayload::InnerMessage(message) = message.payload {
                if concerns(&self.ifname, &message) {
                    return true;
                }
            }
        }
        false
    }
}

impl Drop for InterfaceWatch {
    fn drop(&mut self) {
        // The connection task would notice the dropped receiver only at the next message.
        self.task.abort();
    }
}

/// Whether `message` is about `ifname`'s IPv4 addresses or its link. Every pod's port comes and
/// goes on the node's links: those are not.
fn concerns(ifname: &str, message: &RouteNetlinkMessage) -> bool {
    match message {
        RouteNetlinkMessage::NewAddress(m) | RouteNetlinkMessage::DelAddress(m) => {
            address_of(ifname, m)
        }
        RouteNetlinkMessage::NewLink(m) | RouteNetlinkMessage::DelLink(m) => link_is(ifname, m),
        _ => false,
    }
}

/// An IPv4 address names its interface by label (`eth0`, or `eth0:1` for an alias); one
/// without a label is taken as concerning it (a read too many costs little).
fn address_of(ifname: &str, m: &AddressMessage) -> bool {
    if m.header.family != AddressFamily::Inet {
        return false;
    }
    let label = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Label(l) => Some(l.as_str()),
        _ => None,
    });
    label.is_none_or(|l| {
        l == ifname
            || l.strip_prefix(ifname)
                .is_some_and(|rest| rest.starts_with(':'))
    })
}

fn link_is(ifname: &str, m: &LinkMessage) -> bool {
    m.attributes
        .iter()
        .any(|a| matches!(a, LinkAttribute::IfName(n) if n == ifname))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(family: AddressFamily, label: Option<&str>) -> RouteNetlinkMessage {
        let mut m = AddressMessage::default();
        m.header.family = family;
        if let Some(l) = label {
            m.attributes.push(AddressAttribute::Label(l.into()));
        }
        RouteNetlinkMessage::NewAddress(m)
    }

    fn link(name: &str) -> RouteNetlinkMessage {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        RouteNetlinkMessage::DelLink(m)
    }

    #[test]
    fn only_the_interfaces_ipv4_addresses_and_link_concern_it() {
        assert!(concerns(
            "eth0",
            &address(AddressFamily::Inet, Some("eth0"))
        ));
        assert!(concerns(
            "eth0",
            &address(AddressFamily::Inet, Some("eth0:1"))
        ));
        assert!(concerns("eth0", &address(AddressFamily::Inet, None)));
        assert!(!concerns(
            "eth0",
            &address(AddressFamily::Inet, Some("eth01"))
        ));
        assert!(!concerns(
            "eth0",
            &address(AddressFamily::Inet, Some("seam-b4096"))
        ));
        assert!(!concerns(
            "eth0",
            &address(AddressFamily::Inet6, Some("eth0"))
        ));
        assert!(concerns("eth0", &link("eth0")));
        assert!(!concerns("eth0", &link("sv1234")));
    }
}
