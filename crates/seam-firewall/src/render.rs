//! The nftables realization of a [`NodeRuleset`]: `table inet seam`, written in full as one `nft -f`
//! transaction ([`render`]) or changed in place ([`table::delta`]). The layout and why it is so: [`table`].
//! Every policy rule has a `counter` and `comment "<rule id>"` ([`nft_comment`]), which is how `explain` reads
//! a rule's counter back from the kernel.

pub mod table;

use std::collections::BTreeMap;

use seam_nft::{AddrField, NftMatch, NftRule, NftVerdict};
use seam_policy::Protocol;

use crate::ir::{Action, AddrMatch, L4Match, NodeRuleset, Rule, RuleId};

/// The table: family `inet`, name `seam`.
pub const TABLE: &str = "inet seam";

/// The longest comment nftables keeps (its limit is 128 bytes including the terminator).
const MAX_COMMENT: usize = 127;

/// The longest set name rendered as is.
const MAX_SET_NAME: usize = 200;

/// The FNV-1a offset basis: the hash of nothing.
pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes`, continuing from `hash`.
pub(crate) fn fnv_feed(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(crate) fn fnv1a(text: &str) -> u64 {
    fnv_feed(FNV_OFFSET, text.as_bytes())
}

/// The `comment` a rule with this id carries in the kernel: the id itself when it fits nftables' 127 bytes and is
/// plain text; otherwise a prefix of it (unsafe characters replaced by `_`) and `~` plus a hash of the full id.
pub fn nft_comment(id: &RuleId) -> String {
    let text = id.as_str();
    let plain = text
        .chars()
        .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
    if plain && text.len() <= MAX_COMMENT {
        return text.to_string();
    }
    let hash = format!("~{:016x}", fnv1a(text));
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_COMMENT - hash.len())
        .collect();
    out.push_str(&hash);
    out
}

/// Every rule comment of the ruleset and the rule id it stands for (to read kernel counters back by id).
pub fn comments(ruleset: &NodeRuleset) -> BTreeMap<String, RuleId> {
    ruleset
        .rule_ids()
        .into_iter()
        .map(|id| (nft_comment(&id), id))
        .collect()
}

/// The nftables name of an IR set: the name itself when it is a plain identifier (letters, digits, `_./-`, a
/// letter first, at most 200 bytes); otherwise `x_` + a sanitized prefix + a hash of the full name.
pub fn nft_set_name(name: &str) -> String {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-');
    let starts_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if starts_ok && name.len() <= MAX_SET_NAME && name.chars().all(ok_char) {
        return name.to_string();
    }
    let prefix: String = name
        .chars()
        .map(|c| if ok_char(c) { c } else { '_' })
        .take(100)
        .collect();
    format!("x_{prefix}_{:016x}", fnv1a(name))
}

fn protocol_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
        Protocol::Icmp => 1,
    }
}

fn addr_matches(
    out: &mut Vec<NftMatch>,
    field: AddrField,
    tests: &[AddrMatch],
    set_name: &impl Fn(&str) -> String,
) {
    for t in tests {
        let (negate, name) = match t {
            AddrMatch::In(n) => (false, n),
            AddrMatch::NotIn(n) => (true, n),
        };
        out.push(NftMatch::AddrInSet {
            field,
            set: set_name(name),
            negate,
        });
    }
}

/// A rule as the kernel holds it. Allow is `accept` (it ends only the base chain of its direction),
/// Deny is `drop`, Pass is `return` (to the class chain, which goes on with the next tier).
/// `set_name` gives the kernel's name of an IR set.
pub(crate) fn nft_rule(rule: &Rule, set_name: &impl Fn(&str) -> String) -> NftRule {
    let mut matches = Vec::new();
    addr_matches(&mut matches, AddrField::Source, &rule.src, set_name);
    addr_matches(&mut matches, AddrField::Destination, &rule.dst, set_name);
    match &rule.l4 {
        L4Match::Any => {}
        L4Match::Protocol(p) => matches.push(NftMatch::L4Proto(protocol_number(*p))),
        L4Match::Ports { protocol, ranges } => {
            matches.push(NftMatch::L4Proto(protocol_number(*protocol)));
            matches.push(NftMatch::DstPorts(
                ranges.iter().map(|r| (r.start, r.end)).collect(),
            ));
        }
        L4Match::IcmpType(t) => {
            matches.push(NftMatch::L4Proto(protocol_number(Protocol::Icmp)));
            matches.push(NftMatch::IcmpType(*t));
        }
    }
    let comment = nft_comment(&rule.id);
    let log_prefix = rule.log.then(|| {
        let prefix: String = comment.chars().take(100).collect();
        format!("seam {prefix} ")
    });
    let verdict = match rule.action {
        Action::Allow => NftVerdict::Accept,
        Action::Deny => NftVerdict::Drop,
        Action::Pass => NftVerdict::Return,
    };
    NftRule {
        matches,
        log_prefix,
        verdict,
        comment,
    }
}

/// Renders the ruleset as one nftables transaction that atomically replaces Seam's tables. The output is
/// deterministic: equal rulesets render to equal text.
pub fn render(ruleset: &NodeRuleset) -> String {
    table::full_text(&table::model(ruleset))
}
