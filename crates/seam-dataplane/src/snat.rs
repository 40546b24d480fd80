//! Per-segment SNAT: the egress of segments with `snat` on, masqueraded where it leaves Seam.
//!
//! Without the option Seam never translates an address: pods and VMs reach external endpoints and
//! the external network with their own addresses (the transit, [`crate::transit`]). With it, a
//! segment's traffic to a destination Seam does not know — not in any segment, not a node, not an
//! external endpoint — is masqueraded by the node it leaves through:
//!
//! - every node that is not a gateway sends that traffic to the egress gateway through the
//!   transit (policy routing: `from SUBNET lookup main suppress_prefixlength 0` keeps the node's
//!   own specific routes, then `from SUBNET lookup` [`EGRESS_TABLE`], whose only route is the
//!   default via the gateway on the transit device), so the node's own default route is not used;
//! - every node holds [`NAT_TABLE`] with one rule, `ip saddr @snat_sources ip daddr !=
//!   @not_masqueraded oifname != "seam-*" masquerade`: on the gateway that is the packet leaving
//!   through its external interface, which gives it the address of that interface; on any other
//!   node the packet leaves by `seam-xt` and is left alone (with no gateway at all, the node's own
//!   uplink is the exit, and the node's address is used).
//!
//! Replies are translated back by the gateway's conntrack and return like any reply to a pod: into
//! the pod's segment on the gateway, then over the segment's VXLAN to the pod's node.
//!
//! Like [`crate::plan`], [`plan_nat`] is pure; the table is replaced whole in one `nft -f`
//! transaction, so no packet sees half of it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub use seam_nft::names::{
    NAT_CHAIN, NAT_FAMILY, NAT_KNOWN_SET, NAT_RULE_COMMENT, NAT_SOURCES_SET, NAT_TABLE,
};
/// The routing table holding the egress default route via the gateway (`0x5ea1`).
pub const EGRESS_TABLE: u32 = 0x5ea1;
/// Priority of the rule that keeps a SNAT segment's specific routes (`lookup main
/// suppress_prefixlength 0`); the rule to [`EGRESS_TABLE`] follows at `+ 1`. Below main's 32766.
pub const EGRESS_RULE_PRIORITY: u32 = 0x5ea0;

/// What the node's NAT table should hold; `None` where no segment has `snat` on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredNat {
    /// The subnets of the segments with `snat` on.
    pub sources: BTreeSet<Ipv4Net>,
    /// Destinations left untranslated: every segment subnet, node address and external endpoint.
    pub known: BTreeSet<Ipv4Net>,
}

/// What exists of the NAT table on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedNat {
    /// The table exists.
    pub exists: bool,
    /// Elements of [`NAT_SOURCES_SET`] as merged inclusive ranges ([`merge_ranges`]).
    pub sources: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Elements of [`NAT_KNOWN_SET`] as merged inclusive ranges.
    pub known: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// [`NAT_CHAIN`] is a nat postrouting base chain holding exactly Seam's rule and nothing
    /// else.
    pub rule_ok: bool,
}

/// One change to the NAT table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatOp {
    /// Replace the table whole with this `nft -f` text ([`render_nat`]).
    Replace(String),
    /// Remove the table ([`REMOVE_NAT`]).
    Delete,
}

/// `nft -f` text that removes the table, and succeeds when it is absent too (adding an existing
/// table is a no-op, so the delete always has something to delete).
pub const REMOVE_NAT: &str = "table ip seam-nat\ndelete table ip seam-nat\n";

/// Sorted, merged inclusive ranges (overlapping and adjacent ranges joined): one canonical form
/// for what was asked for and what the kernel lists, whatever way nft splits or joins elements.
pub fn merge_ranges(
    ranges: impl IntoIterator<Item = (Ipv4Addr, Ipv4Addr)>,
) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let mut v: Vec<(u32, u32)> = ranges
        .into_iter()
        .map(|(a, b)| (u32::from(a), u32::from(b)))
        .filter(|(a, b)| a <= b)
        .collect();
    v.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out.into_iter()
        .map(|(a, b)| (Ipv4Addr::from(a), Ipv4Addr::from(b)))
        .collect()
}

/// The prefixes as merged inclusive ranges.
pub fn prefix_ranges(prefixes: &BTreeSet<Ipv4Net>) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    merge_ranges(prefixes.iter().map(|p| (p.network(), p.broadcast())))
}

fn elements(out: &mut String, prefixes: &BTreeSet<Ipv4Net>) {
    // An interval set refuses overlapping elements; aggregating also keeps the set small (pods'
    // addresses never appear: their segments cover them).
    let list: Vec<Ipv4Net> = prefixes.iter().copied().collect();
    let merged = Ipv4Net::aggregate(&list);
    if merged.is_empty() {
        return;
    }
    let items: Vec<String> = merged.iter().map(|p| p.to_string()).collect();
    let _ = writeln!(out, "\t\telements = {{ {} }}", items.join(", "));
}

/// The whole table as one `nft -f` transaction that replaces whatever is there.
pub fn render_nat(desired: &DesiredNat) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "table {NAT_FAMILY} {NAT_TABLE}");
    let _ = writeln!(out, "delete table {NAT_FAMILY} {NAT_TABLE}");
    let _ = writeln!(out, "table {NAT_FAMILY} {NAT_TABLE} {{");
    for (name, prefixes) in [
        (NAT_SOURCES_SET, &desired.sources),
        (NAT_KNOWN_SET, &desired.known),
    ] {
        let _ = writeln!(out, "\tset {name} {{");
        out.push_str("\t\ttype ipv4_addr\n\t\tflags interval\n");
        elements(&mut out, prefixes);
        out.push_str("\t}\n");
    }
    let _ = writeln!(out, "\tchain {NAT_CHAIN} {{");
    out.push_str("\t\ttype nat hook postrouting priority srcnat; policy accept;\n");
    // Seam's own devices (segment bridges, VXLAN, the transit) never carry a packet out of Seam:
    // on a node that is not the gateway, the egress leaves by the transit and the gateway
    // translates it.
    let _ = writeln!(
        out,
        "\t\tip saddr @{NAT_SOURCES_SET} ip daddr != @{NAT_KNOWN_SET} oifname != \"seam-*\" masquerade comment \"{NAT_RULE_COMMENT}\""
    );
    out.push_str("\t}\n}\n");
    out
}

/// The change that turns `observed` into `desired` (`None` = no table wanted), if any.
pub fn plan_nat(desired: Option<&DesiredNat>, observed: &ObservedNat) -> Option<NatOp> {
    match desired {
        None => observed.exists.then_some(NatOp::Delete),
        Some(d) => {
            let same = observed.exists
                && observed.rule_ok
                && observed.sources == prefix_ranges(&d.sources)
                && observed.known == prefix_ranges(&d.known);
            (!same).then(|| NatOp::Replace(render_nat(d)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> BTreeSet<Ipv4Net> {
        list.iter()
            .map(|s| s.parse().unwrap_or_else(|_| unreachable!()))
            .collect()
    }

    fn desired() -> DesiredNat {
        DesiredNat {
            sources: nets(&["10.240.1.0/24"]),
            known: nets(&[
                "10.240.0.0/24",
                "10.240.1.0/24",
                "198.18.0.11/32",
                "198.18.0.12/32",
                "203.0.113.10/32",
            ]),
        }
    }

    #[test]
    fn the_table_is_replaced_whole_and_adjacent_prefixes_are_joined() {
        let text = render_nat(&desired());
        assert_eq!(
            text,
            "table ip seam-nat\n\
             delete table ip seam-nat\n\
             table ip seam-nat {\n\
             \tset snat_sources {\n\
             \t\ttype ipv4_addr\n\
             \t\tflags interval\n\
             \t\telements = { 10.240.1.0/24 }\n\
             \t}\n\
             \tset not_masqueraded {\n\
             \t\ttype ipv4_addr\n\
             \t\tflags interval\n\
             \t\telements = { 10.240.0.0/23, 198.18.0.11/32, 198.18.0.12/32, 203.0.113.10/32 }\n\
             \t}\n\
             \tchain postrouting {\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tip saddr @snat_sources ip daddr != @not_masqueraded oifname != \"seam-*\" masquerade comment \"seam snat\"\n\
             \t}\n\
             }\n"
        );
    }

    #[test]
    fn what_the_kernel_holds_is_compared_in_canonical_form() {
        let d = desired();
        // nft may list 198.18.0.11-198.18.0.12 as one range and the /23 as two /24s.
        let listed = ObservedNat {
            exists: true,
            sources: merge_ranges([(Ipv4Addr::new(10, 240, 1, 0), Ipv4Addr::new(10, 240, 1, 255))]),
            known: merge_ranges([
                (Ipv4Addr::new(10, 240, 1, 0), Ipv4Addr::new(10, 240, 1, 255)),
                (Ipv4Addr::new(10, 240, 0, 0), Ipv4Addr::new(10, 240, 0, 255)),
                (Ipv4Addr::new(198, 18, 0, 11), Ipv4Addr::new(198, 18, 0, 12)),
                (
                    Ipv4Addr::new(203, 0, 113, 10),
                    Ipv4Addr::new(203, 0, 113, 10),
                ),
            ]),
            rule_ok: true,
        };
        assert_eq!(plan_nat(Some(&d), &listed), None);
        let mut edited = listed.clone();
        edited.rule_ok = false;
        assert_eq!(
            plan_nat(Some(&d), &edited),
            Some(NatOp::Replace(render_nat(&d)))
        );
        let mut more = d.clone();
        more.sources
            .insert("10.240.2.0/24".parse().unwrap_or_else(|_| unreachable!()));
        assert!(matches!(
            plan_nat(Some(&more), &listed),
            Some(NatOp::Replace(_))
        ));
        assert_eq!(plan_nat(None, &listed), Some(NatOp::Delete));
        assert_eq!(plan_nat(None, &ObservedNat::default()), None);
        assert!(matches!(
            plan_nat(Some(&d), &ObservedNat::default()),
            Some(NatOp::Replace(_))
        ));
    }
}
