//! The reply chains of `table ip seam-nat`, as values: on a backend's node they record in each
//! new connection's conntrack mark the gateway it came through, and mark the connection's
//! replies so that policy routing sends them back through that gateway (the one whose conntrack
//! entry undoes its translation). Why and how it is routed: `seam_dataplane::reply`.
//!
//! How a node tells the gateway a packet came from (the packet's own addresses are the client's
//! and the backend's):
//! - over the routed transit, by its source MAC on the underlay interface (the gateway's
//!   `underlayMac`);
//! - encapsulated (a segment's VXLAN, into which the gateway routes), by the outer packet's
//!   source address: the outer packet passes the prerouting hook before the VXLAN device takes
//!   it, and the mark set there stays on the inner packet (decapsulation within one namespace
//!   keeps `skb->mark`), which the same chain then sees through the bridge (br_netfilter).
//!
//! Sources in Seam's segments and nodes are never recorded: a gateway's own pods keep their
//! paths. The mark field is [`REPLY_MARK_MASK`]; whatever else a mark holds is kept.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use seam_model::MacAddr;
use serde_json::Value;

/// The slot of connections that arrived on a gateway's external interface (the gateways'
/// slots are below it).
pub const EXTERNAL_SLOT: u8 = 255;

use crate::names::{
    reply_mark, REPLY_CLEAR_CHAIN, REPLY_COMMENT_PREFIX, REPLY_INSIDE_SET, REPLY_MARK_CHAIN,
    REPLY_MARK_MASK, VXLAN_UDP_PORT,
};

/// A gateway whose connections the node records, in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyGateway {
    /// Its slot (1..=255): the mark `slot << 24` and its routing table.
    pub slot: u8,
    /// Its underlay address: the outer source of what it sends encapsulated.
    pub underlay_ip: Ipv4Addr,
    /// Its underlay MAC, when it reaches this node over the routed transit: the source MAC of
    /// what arrives on the underlay interface from it.
    pub routed_from: Option<MacAddr>,
}

/// What the reply chains should hold; empty (no gateway) means no chains at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredReply {
    /// The node's underlay interface (where the routed transit arrives).
    pub underlay: String,
    /// The gateways other than this node.
    pub gateways: BTreeSet<ReplyGateway>,
    /// Sources never recorded: every segment subnet and node address.
    pub inside: BTreeSet<Ipv4Net>,
    /// On a gateway, its external interface: connections arriving there are recorded with
    /// [`EXTERNAL_SLOT`], so that their replies leave by the operator's routes
    /// (`seam_dataplane::reply`).
    pub external: Option<String>,
}

/// What exists of the reply chains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedReply {
    /// Either chain exists.
    pub present: bool,
    /// Both chains exist as filter chains on their hooks.
    pub chains_ok: bool,
    /// Elements of [`REPLY_INSIDE_SET`] as merged inclusive ranges.
    pub inside: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// The comments of the rules in both chains (an empty one for a rule without).
    pub comments: BTreeSet<String>,
}

/// One rule: its chain, its comment (what tells it in a listing) and its statement text.
struct ReplyRule {
    chain: &'static str,
    comment: String,
    text: String,
}

/// `M & ~REPLY_MARK_MASK | mark`: sets the field, keeps the rest.
fn set_field(what: &str, mark: u32) -> String {
    format!(
        "{what} set {what} & 0x{:08x} | 0x{mark:08x}",
        !REPLY_MARK_MASK
    )
}

impl DesiredReply {
    /// Nothing to record: no chains.
    pub fn is_empty(&self) -> bool {
        self.gateways.is_empty() && self.external.is_none()
    }

    /// The rules in order: outer packets marked (and left), connections recorded, the field
    /// cleared, replies marked; the postrouting chain clears what is left once routed.
    fn rules(&self) -> Vec<ReplyRule> {
        let mut rules = Vec::new();
        let rule = |chain, comment: String, text: String| ReplyRule {
            chain,
            comment: format!("{REPLY_COMMENT_PREFIX} {comment}"),
            text,
        };
        let clear = format!(
            "meta mark & 0x{REPLY_MARK_MASK:08x} != 0 meta mark set meta mark & 0x{:08x}",
            !REPLY_MARK_MASK
        );
        for g in &self.gateways {
            // The outer packet is the node's own (local delivery wins over any mark rule); it
            // keeps the mark into the VXLAN device, so it must not reach the clearing rule.
            rules.push(rule(
                REPLY_MARK_CHAIN,
                format!("{} vxlan from {}", g.slot, g.underlay_ip),
                format!(
                    "ip saddr {} udp dport {VXLAN_UDP_PORT} {} return",
                    g.underlay_ip,
                    set_field("meta mark", reply_mark(g.slot))
                ),
            ));
        }
        for g in &self.gateways {
            let Some(mac) = g.routed_from else { continue };
            rules.push(rule(
                REPLY_MARK_CHAIN,
                format!("{} routed from {} {mac}", g.slot, self.underlay),
                format!(
                    "iifname \"{}\" ether saddr {mac} ct state new ip saddr != @{REPLY_INSIDE_SET} {}",
                    self.underlay,
                    set_field("ct mark", reply_mark(g.slot))
                ),
            ));
        }
        for g in &self.gateways {
            let mark = reply_mark(g.slot);
            rules.push(rule(
                REPLY_MARK_CHAIN,
                format!("{} decapsulated", g.slot),
                format!(
                    "meta mark & 0x{REPLY_MARK_MASK:08x} == 0x{mark:08x} ct state new ip saddr != @{REPLY_INSIDE_SET} {}",
                    set_field("ct mark", mark)
                ),
            ));
        }
        let external = reply_mark(EXTERNAL_SLOT);
        if let Some(ifname) = &self.external {
            rules.push(rule(
                REPLY_MARK_CHAIN,
                format!("{EXTERNAL_SLOT} external from {ifname}"),
                format!(
                    "iifname \"{ifname}\" ct state new {}",
                    set_field("ct mark", external)
                ),
            ));
        }
        rules.push(rule(REPLY_MARK_CHAIN, "clear".into(), clear.clone()));
        let slots = self.gateways.iter().map(|g| g.slot);
        let external_slot = self.external.as_ref().map(|_| EXTERNAL_SLOT);
        for slot in slots.chain(external_slot) {
            let mark = reply_mark(slot);
            rules.push(rule(
                REPLY_MARK_CHAIN,
                format!("{slot} back"),
                format!(
                    "ct direction reply ct mark & 0x{REPLY_MARK_MASK:08x} == 0x{mark:08x} {}",
                    set_field("meta mark", mark)
                ),
            ));
        }
        rules.push(rule(REPLY_CLEAR_CHAIN, "clear routed".into(), clear));
        rules
    }

    /// The comments of the rules (what a listing is compared with).
    pub fn comments(&self) -> BTreeSet<String> {
        if self.is_empty() {
            return BTreeSet::new();
        }
        self.rules().into_iter().map(|r| r.comment).collect()
    }

    /// What the kernel lists once this is written.
    pub fn observed(&self) -> ObservedReply {
        if self.is_empty() {
            return ObservedReply::default();
        }
        ObservedReply {
            present: true,
            chains_ok: true,
            inside: crate::nat::prefix_ranges(&self.inside),
            comments: self.comments(),
        }
    }

    /// Whether `observed` holds exactly this.
    pub fn matches(&self, observed: &ObservedReply) -> bool {
        if self.is_empty() {
            return !observed.present;
        }
        observed.present
            && observed.chains_ok
            && observed.inside == crate::nat::prefix_ranges(&self.inside)
            && observed.comments == self.comments()
    }
}

/// Appends the set and the two chains to a table's text (nothing when `desired` is empty).
/// Priority mangle: after conntrack (which gives `ct state`), before the route lookup and the
/// Services translation.
pub fn render_reply(out: &mut String, desired: &DesiredReply) {
    if desired.is_empty() {
        return;
    }
    let _ = writeln!(out, "\tset {REPLY_INSIDE_SET} {{");
    out.push_str("\t\ttype ipv4_addr\n\t\tflags interval\n");
    crate::nat::elements(out, &desired.inside);
    out.push_str("\t}\n");
    let rules = desired.rules();
    for (chain, hook) in [
        (REPLY_MARK_CHAIN, "prerouting"),
        (REPLY_CLEAR_CHAIN, "postrouting"),
    ] {
        let _ = writeln!(out, "\tchain {chain} {{");
        let _ = writeln!(
            out,
            "\t\ttype filter hook {hook} priority mangle; policy accept;"
        );
        for r in rules.iter().filter(|r| r.chain == chain) {
            let _ = writeln!(out, "\t\t{} comment \"{}\"", r.text, r.comment);
        }
        out.push_str("\t}\n");
    }
}

/// Reads the reply chains out of a table's `nft -j` items.
pub fn reply_from_items(items: &[Value]) -> ObservedReply {
    let mut observed = ObservedReply::default();
    let mut hooks_ok = [false, false];
    for item in items {
        if let Some(set) = item.get("set") {
            if set.get("name").and_then(Value::as_str) == Some(REPLY_INSIDE_SET) {
                observed.inside = crate::nat::set_ranges(set);
            }
        } else if let Some(chain) = item.get("chain") {
            let name = chain.get("name").and_then(Value::as_str);
            let at = |hook: &str| {
                chain.get("type").and_then(Value::as_str) == Some("filter")
                    && chain.get("hook").and_then(Value::as_str) == Some(hook)
            };
            if name == Some(REPLY_MARK_CHAIN) {
                observed.present = true;
                hooks_ok[0] = at("prerouting");
            } else if name == Some(REPLY_CLEAR_CHAIN) {
                observed.present = true;
                hooks_ok[1] = at("postrouting");
            }
        } else if let Some(rule) = item.get("rule") {
            let chain = rule.get("chain").and_then(Value::as_str);
            if chain == Some(REPLY_MARK_CHAIN) || chain == Some(REPLY_CLEAR_CHAIN) {
                let comment = rule.get("comment").and_then(Value::as_str).unwrap_or("");
                observed.comments.insert(comment.to_string());
            }
        }
    }
    observed.chains_ok = hooks_ok == [true, true];
    observed
}

#[cfg(test)]
mod tests;
