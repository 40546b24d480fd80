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
//! - every node holds `ip seam-nat` ([`seam_nft::nat`]) with one rule, `ip saddr @snat_sources ip daddr !=
//!   @not_masqueraded oifname != "seam-*" masquerade`: on the gateway that is the packet leaving
//!   through its external interface, which gives it the address of that interface; on any other
//!   node the packet leaves by `seam-xt` and is left alone (with no gateway at all, the node's own
//!   uplink is the exit, and the node's address is used).
//!
//! Replies are translated back by the gateway's conntrack and return like any reply to a pod: into
//! the pod's segment on the gateway, then over the segment's VXLAN to the pod's node.
//!
//! Like [`crate::plan`], [`seam_nft::nat::plan_nat`] is pure; the table is replaced whole in one
//! `nft -f` transaction, so no packet sees half of it.

/// The routing table holding the egress default route via the gateway (`0x5ea1`).
pub const EGRESS_TABLE: u32 = 0x5ea1;
/// Priority of the rule that keeps a SNAT segment's specific routes (`lookup main
/// suppress_prefixlength 0`); the rule to [`EGRESS_TABLE`] follows at `+ 1`. Below main's 32766.
pub const EGRESS_RULE_PRIORITY: u32 = 0x5ea0;
