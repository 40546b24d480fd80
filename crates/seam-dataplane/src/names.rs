//! Interface names Seam owns. Linux allows 15 bytes; every name here fits, and the prefixes let
//! the agent tell its own links from everything else on a restart.

pub use seam_model::HOST_PORT_PREFIX;
use seam_model::{BRIDGE_PREFIX, VXLAN_PREFIX};

/// The segment bridge of `vni` (`seam-b4097`).
pub fn bridge_name(vni: u32) -> String {
    format!("{BRIDGE_PREFIX}{vni}")
}

/// The VXLAN device of `vni` (`seam-v4097`).
pub fn vxlan_name(vni: u32) -> String {
    format!("{VXLAN_PREFIX}{vni}")
}

/// The VNI of a Seam bridge name, if it is one.
pub fn vni_of_bridge(name: &str) -> Option<u32> {
    name.strip_prefix(BRIDGE_PREFIX)?.parse().ok()
}

/// The VNI of a Seam VXLAN device name, if it is one.
pub fn vni_of_vxlan(name: &str) -> Option<u32> {
    name.strip_prefix(VXLAN_PREFIX)?.parse().ok()
}

pub use seam_model::{is_vm_port, vm_port_name, VM_PORT_PREFIX};

/// True for a host-side attachment veth name (`sv` + 12 hex digits).
pub fn is_host_port(name: &str) -> bool {
    name.strip_prefix(HOST_PORT_PREFIX)
        .is_some_and(|rest| rest.len() == 12 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The host-side veth of an attachment, derived from its identity so that DEL finds it even
/// without a lease. FNV-1a is written out because std's hasher is not stable across releases
/// and the name must survive an upgrade.
pub fn host_ifname(network: &str, container_id: &str, ifname: &str) -> String {
    use seam_model::fnv::{fnv_feed, FNV_OFFSET};
    let hash =
        [network, container_id, ifname]
            .iter()
            .enumerate()
            .fold(FNV_OFFSET, |h, (i, part)| {
                // The parts are joined by NUL bytes.
                let h = if i == 0 { h } else { fnv_feed(h, &[0]) };
                fnv_feed(h, part.as_bytes())
            });
    format!("{HOST_PORT_PREFIX}{:012x}", hash & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_and_round_trip() {
        let vni = 16_777_215;
        assert!(bridge_name(vni).len() <= 15 && vxlan_name(vni).len() <= 15);
        assert_eq!(vni_of_bridge(&bridge_name(vni)), Some(vni));
        assert_eq!(vni_of_vxlan(&vxlan_name(vni)), Some(vni));
        assert_eq!(vni_of_bridge("br0"), None);
        let port = host_ifname("seam", "abc", "eth0");
        assert!(port.len() <= 15 && is_host_port(&port), "{port}");
        // Pinned: a restarted (or upgraded) agent finds its ports by these names.
        assert_eq!(port, "sv52cf528efcf4");
        assert_ne!(port, host_ifname("seam", "abc", "eth1"));
        assert_ne!(host_ifname("a", "bc", "x"), host_ifname("ab", "c", "x"));
        assert!(!is_host_port("svxyz"));
    }
}
