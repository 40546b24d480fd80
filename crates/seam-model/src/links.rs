//! The prefixes of the interface names Seam gives its links, defined once: the agent names and
//! recognises its links by them (`seam_dataplane`), and the nftables rules that match Seam's
//! ports and devices by interface name (`seam_nft`) spell the same prefixes.

/// Prefix of every device of Seam's that is not a port: segment bridges ([`BRIDGE_PREFIX`]),
/// VXLAN devices ([`VXLAN_PREFIX`]) and the transit device (`seam-xt`).
pub const DEVICE_PREFIX: &str = "seam-";
/// Prefix of a segment bridge (`seam-b4097`).
pub const BRIDGE_PREFIX: &str = "seam-b";
/// Prefix of a segment's VXLAN device (`seam-v4097`).
pub const VXLAN_PREFIX: &str = "seam-v";
/// Prefix of the host-side veth of an attachment (`sv` + 12 hex digits).
pub const HOST_PORT_PREFIX: &str = "sv";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_device_name_is_under_the_device_prefix() {
        for prefix in [BRIDGE_PREFIX, VXLAN_PREFIX] {
            assert!(prefix.starts_with(DEVICE_PREFIX), "{prefix}");
        }
        // Ports are not devices: a rule on `seam-*` must not match them.
        for prefix in [HOST_PORT_PREFIX, crate::VM_PORT_PREFIX] {
            assert!(!prefix.starts_with(DEVICE_PREFIX), "{prefix}");
        }
    }
}
