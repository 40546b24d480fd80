//! The nftables realization of a [`NodeRuleset`]: `table inet seam`, written in full as one `nft -f`
//! transaction ([`render`]) or changed in place ([`table::delta`]). The layout and why it is so: [`table`].
//! Every policy rule has a `counter` and `comment "<rule id>"` ([`nft_comment`]), which is how `explain` reads
//! a rule's counter back from the kernel.

pub mod table;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use seam_policy::Protocol;

use crate::ir::{Action, AddrMatch, L4Match, NodeRuleset, Rule, RuleId};

/// The table: family `inet`, name `seam`.
pub const TABLE: &str = "inet seam";

/// The longest comment nftables keeps (its limit is 128 bytes including the terminator).
const MAX_COMMENT: usize = 127;

/// The longest set name rendered as is.
const MAX_SET_NAME: usize = 200;

pub(crate) fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
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

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
        Protocol::Icmp => "icmp",
    }
}

fn addr_tests(out: &mut String, field: &str, tests: &[AddrMatch]) {
    for t in tests {
        let (op, name) = match t {
            AddrMatch::In(n) => ("", n),
            AddrMatch::NotIn(n) => ("!= ", n),
        };
        let _ = write!(out, "ip {field} {op}@{} ", nft_set_name(name));
    }
}

fn l4_text(out: &mut String, l4: &L4Match) {
    match l4 {
        L4Match::Any => {}
        L4Match::Protocol(p) => {
            let _ = write!(out, "meta l4proto {} ", proto(*p));
        }
        L4Match::Ports { protocol, ranges } => {
            let items: Vec<String> = ranges
                .iter()
                .map(|r| {
                    if r.start == r.end {
                        r.start.to_string()
                    } else {
                        format!("{}-{}", r.start, r.end)
                    }
                })
                .collect();
            let ports = match items.as_slice() {
                [one] => one.clone(),
                _ => format!("{{ {} }}", items.join(", ")),
            };
            let _ = write!(out, "meta l4proto {} th dport {ports} ", proto(*protocol));
        }
        L4Match::IcmpType(t) => {
            let _ = write!(out, "meta l4proto icmp icmp type {t} ");
        }
    }
}

/// A rule as nft text. Allow is `accept` (it ends only the base chain of its direction), Deny is `drop`,
/// Pass is `return` (to the class chain, which goes on with the next tier).
pub(crate) fn rule_text(rule: &Rule) -> String {
    let mut out = String::new();
    addr_tests(&mut out, "saddr", &rule.src);
    addr_tests(&mut out, "daddr", &rule.dst);
    l4_text(&mut out, &rule.l4);
    out.push_str("counter ");
    let comment = nft_comment(&rule.id);
    if rule.log {
        let prefix: String = comment.chars().take(100).collect();
        let _ = write!(out, "log prefix \"seam {prefix} \" ");
    }
    let verdict = match rule.action {
        Action::Allow => "accept",
        Action::Deny => "drop",
        Action::Pass => "return",
    };
    let _ = write!(out, "{verdict} comment \"{comment}\"");
    out
}

/// Renders the ruleset as one nftables transaction that atomically replaces Seam's tables. The output is
/// deterministic: equal rulesets render to equal text.
pub fn render(ruleset: &NodeRuleset) -> String {
    table::full_text(&table::model(ruleset))
}
