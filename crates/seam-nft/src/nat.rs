//! `table ip seam-nat`, Seam's NAT table, as values: what it should hold ([`DesiredNat`]), what the
//! kernel holds ([`ObservedNat`], read back by [`nat_from_json`]), the text that writes it whole
//! ([`render_nat`]) and the change between the two ([`plan_nat`]). Why the table exists and what
//! the agent does around it: `seam_dataplane::snat`.
//!
//! The table also holds the reply chains of LoadBalancer connections ([`crate::reply`]): the
//! transit's nftables, kept in one place.
//!
//! The table is small (a few sets of prefixes and a rule or a few per gateway), so it is always
//! replaced whole in one `nft -f` transaction: no packet sees half of it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use seam_model::DEVICE_PREFIX;
use serde_json::Value;

use crate::names::{
    NAT_CHAIN, NAT_FAMILY, NAT_KNOWN_SET, NAT_RULE_COMMENT, NAT_SOURCES_SET, NAT_TABLE,
};
use crate::reply::{render_reply, reply_from_items, DesiredReply, ObservedReply};

/// What the node's NAT table should hold; `None` where no segment has `snat` on and no gateway's
/// connections are recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredNat {
    /// The subnets of the segments with `snat` on.
    pub sources: BTreeSet<Ipv4Net>,
    /// Destinations left untranslated: every segment subnet, node address and external endpoint.
    pub known: BTreeSet<Ipv4Net>,
    /// The reply chains of connections through the gateways ([`crate::reply`]).
    pub reply: DesiredReply,
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
    /// The reply chains.
    pub reply: ObservedReply,
}

impl DesiredNat {
    /// What the kernel lists once the table is written from this ([`render_nat`]).
    pub fn observed(&self) -> ObservedNat {
        ObservedNat {
            exists: true,
            sources: prefix_ranges(&self.sources),
            known: prefix_ranges(&self.known),
            rule_ok: true,
            reply: self.reply.observed(),
        }
    }
}

/// One change to the NAT table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatOp {
    /// Replace the table whole with this, written as one `nft -f` transaction ([`render_nat`]).
    Replace(DesiredNat),
    /// Remove the table ([`removal_text`]).
    Delete,
}

/// `nft -f` text that removes the table, and succeeds when it is absent too (adding an existing
/// table is a no-op, so the delete always has something to delete).
pub fn removal_text() -> String {
    format!("table {NAT_FAMILY} {NAT_TABLE}\ndelete table {NAT_FAMILY} {NAT_TABLE}\n")
}

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

pub(crate) fn elements(out: &mut String, prefixes: &BTreeSet<Ipv4Net>) {
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
    let mut out = removal_text();
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
    render_reply(&mut out, &desired.reply);
    let _ = writeln!(out, "\tchain {NAT_CHAIN} {{");
    out.push_str("\t\ttype nat hook postrouting priority srcnat; policy accept;\n");
    // Seam's own devices (segment bridges, VXLAN, the transit) never carry a packet out of Seam:
    // on a node that is not the gateway, the egress leaves by the transit and the gateway
    // translates it.
    let _ = writeln!(
        out,
        "\t\tip saddr @{NAT_SOURCES_SET} ip daddr != @{NAT_KNOWN_SET} oifname != \"{DEVICE_PREFIX}*\" masquerade comment \"{NAT_RULE_COMMENT}\""
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
                && observed.known == prefix_ranges(&d.known)
                && d.reply.matches(&observed.reply);
            (!same).then(|| NatOp::Replace(d.clone()))
        }
    }
}

/// Reads Seam's NAT table out of `nft -j` output: the two sets as merged ranges, and whether the
/// base chain holds exactly Seam's masquerade rule. Unknown objects are tolerated (they only
/// make `rule_ok` false when they are rules).
pub fn nat_from_json(value: &Value) -> ObservedNat {
    let items = value
        .get("nftables")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut observed = ObservedNat {
        exists: true,
        ..Default::default()
    };
    let mut chain_ok = false;
    let mut rules = Vec::new();
    for item in items {
        if let Some(set) = item.get("set") {
            let ranges = set_ranges(set);
            match set.get("name").and_then(Value::as_str) {
                Some(NAT_SOURCES_SET) => observed.sources = ranges,
                Some(NAT_KNOWN_SET) => observed.known = ranges,
                _ => {}
            }
        } else if let Some(chain) = item.get("chain") {
            if chain.get("name").and_then(Value::as_str) == Some(NAT_CHAIN) {
                chain_ok = chain.get("type").and_then(Value::as_str) == Some("nat")
                    && chain.get("hook").and_then(Value::as_str) == Some("postrouting");
            }
        } else if let Some(rule) = item.get("rule") {
            // The reply chains' rules are read by `reply_from_items`.
            if rule.get("chain").and_then(Value::as_str) == Some(NAT_CHAIN) {
                rules.push(rule);
            }
        }
    }
    observed.reply = reply_from_items(items);
    observed.rule_ok = chain_ok
        && matches!(rules.as_slice(), [rule]
        if rule.get("chain").and_then(Value::as_str) == Some(NAT_CHAIN)
            && rule.get("comment").and_then(Value::as_str) == Some(NAT_RULE_COMMENT)
            && rule.get("expr").and_then(Value::as_array).is_some_and(|e| {
                e.iter().any(|x| x.get("masquerade").is_some())
            }));
    observed
}

/// The elements of one `ipv4_addr` interval set of a listing as merged ranges.
pub(crate) fn set_ranges(set: &Value) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    merge_ranges(
        set.get("elem")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(element_range),
    )
}

/// One element of an `ipv4_addr` interval set in `nft -j` output (an address, a prefix or a
/// range) as an inclusive range.
fn element_range(elem: &Value) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let addr = |v: &Value| v.as_str()?.parse::<Ipv4Addr>().ok();
    if let Some(a) = addr(elem) {
        return Some((a, a));
    }
    // A set element with options (counter, timeout) wraps the value in `elem.val`.
    if let Some(inner) = elem.get("elem").and_then(|e| e.get("val")) {
        return element_range(inner);
    }
    if let Some(p) = elem.get("prefix") {
        let net = Ipv4Net::new(
            addr(p.get("addr")?)?,
            u8::try_from(p.get("len")?.as_u64()?).ok()?,
        )
        .ok()?;
        return Some((net.network(), net.broadcast()));
    }
    let range = elem.get("range")?.as_array()?;
    Some((addr(range.first()?)?, addr(range.get(1)?)?))
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
            reply: DesiredReply::default(),
        }
    }

    #[test]
    fn removing_names_the_table_of_the_names_module() {
        assert_eq!(
            removal_text(),
            "table ip seam-nat\ndelete table ip seam-nat\n"
        );
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
            reply: ObservedReply::default(),
        };
        assert_eq!(plan_nat(Some(&d), &listed), None);
        let mut edited = listed.clone();
        edited.rule_ok = false;
        assert_eq!(plan_nat(Some(&d), &edited), Some(NatOp::Replace(d.clone())));
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

    #[test]
    fn the_nat_table_is_read_in_canonical_form() {
        // As nft 1.0.6 lists what `render_nat` wrote.
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
          {"table": {"family": "ip", "name": "seam-nat", "handle": 5}},
          {"set": {"family": "ip", "name": "snat_sources", "table": "seam-nat", "type": "ipv4_addr", "handle": 1, "flags": ["interval"], "elem": [{"prefix": {"addr": "10.240.1.0", "len": 24}}]}},
          {"set": {"family": "ip", "name": "not_masqueraded", "table": "seam-nat", "type": "ipv4_addr", "handle": 2, "flags": ["interval"],
            "elem": [{"prefix": {"addr": "10.240.0.0", "len": 23}}, {"range": ["198.18.0.11", "198.18.0.12"]}, "203.0.113.10"]}},
          {"chain": {"family": "ip", "table": "seam-nat", "name": "postrouting", "handle": 3, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
          {"rule": {"family": "ip", "table": "seam-nat", "chain": "postrouting", "handle": 4, "comment": "seam snat",
            "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@snat_sources"}}, {"masquerade": null}]}}]}"#;
        let value: Value = serde_json::from_str(json).unwrap_or_default();
        let desired = DesiredNat {
            sources: ["10.240.1.0/24".parse().unwrap_or_else(|_| unreachable!())].into(),
            known: [
                "10.240.0.0/24",
                "10.240.1.0/24",
                "198.18.0.11/32",
                "198.18.0.12/32",
                "203.0.113.10/32",
            ]
            .iter()
            .map(|s| s.parse().unwrap_or_else(|_| unreachable!()))
            .collect(),
            reply: DesiredReply::default(),
        };
        let observed = nat_from_json(&value);
        assert!(observed.rule_ok, "{observed:?}");
        assert_eq!(plan_nat(Some(&desired), &observed), None);
        // A rule added by hand to Seam's chain gets the table rewritten.
        let extra = json.replace(
            r#"{"metainfo""#,
            r#"{"rule": {"chain": "postrouting", "expr": [{"accept": null}]}}, {"metainfo""#,
        );
        let value: Value = serde_json::from_str(&extra).unwrap_or_default();
        assert!(!nat_from_json(&value).rule_ok);
    }
}
