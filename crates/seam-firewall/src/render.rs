//! The nftables realization of a [`NodeRuleset`]: one `nft -f` transaction for `table inet seam`.
//!
//! The text first makes sure the table exists (`table inet seam {}`), deletes it and defines it in full, all in
//! one batch: the kernel applies a batch atomically, so packets see either the old table or the new one, never a
//! window without policy. Conntrack entries live outside the table, so established connections survive it.
//!
//! Layout:
//! - one named set per IR set (`type ipv4_addr; flags interval`), `local` holding the node's endpoints;
//! - base chain `forward` (hook forward, priority filter, policy accept): `ct state established,related accept`,
//!   `ct state invalid drop`, `ip saddr @local jump egress_admin`, `ip daddr @local jump ingress_admin`, `accept`;
//! - per direction the chains `<dir>_admin`, `<dir>_namespace`, `<dir>_baseline`, each ending in a `goto` to the
//!   next tier. Allow is `return` (back to `forward`, which goes on to ingress: an `accept` would end the hook
//!   before the destination's ingress ran), Deny is `drop` (never reject: probes must time out), Pass is `goto` to
//!   the next tier's chain. Every policy rule has a `counter` and `comment "<rule id>"` ([`nft_comment`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use seam_policy::{Direction, Protocol};

use crate::ir::{Action, AddrMatch, L4Match, NodeRuleset, Rule, RuleId, Tier, TierChain};

/// The table: family `inet`, name `seam`.
pub const TABLE: &str = "inet seam";

/// The longest comment nftables keeps (its limit is 128 bytes including the terminator).
const MAX_COMMENT: usize = 127;

/// The longest set name rendered as is.
const MAX_SET_NAME: usize = 200;

fn fnv1a(text: &str) -> u64 {
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

fn dir_str(d: Direction) -> &'static str {
    crate::compile::direction_str(d)
}

fn chain_name(d: Direction, t: Tier) -> String {
    format!("{}_{}", dir_str(d), t.as_str())
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

fn rule_text(rule: &Rule, next_chain: Option<&str>) -> String {
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
    let verdict = match (rule.action, next_chain) {
        (Action::Allow, _) | (Action::Pass, None) => "return".to_string(),
        (Action::Deny, _) => "drop".to_string(),
        (Action::Pass, Some(next)) => format!("goto {next}"),
    };
    let _ = write!(out, "{verdict} comment \"{comment}\"");
    out
}

fn render_chains(out: &mut String, dir: Direction, chains: &[TierChain]) {
    for (i, chain) in chains.iter().enumerate() {
        let next = chains.get(i + 1).map(|c| chain_name(dir, c.tier));
        let _ = writeln!(out, "\tchain {} {{", chain_name(dir, chain.tier));
        for r in &chain.rules {
            let _ = writeln!(out, "\t\t{}", rule_text(r, next.as_deref()));
        }
        if let Some(next) = &next {
            let _ = writeln!(out, "\t\tgoto {next}");
        }
        out.push_str("\t}\n");
    }
}

/// Renders the ruleset as one nftables transaction that atomically replaces `table inet seam`. The output is
/// deterministic: equal rulesets render to equal text.
pub fn render(ruleset: &NodeRuleset) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "table {TABLE} {{}}");
    let _ = writeln!(out, "delete table {TABLE}");
    let _ = writeln!(out, "table {TABLE} {{");
    for (name, set) in &ruleset.sets {
        let _ = writeln!(out, "\tset {} {{", nft_set_name(name));
        out.push_str("\t\ttype ipv4_addr\n\t\tflags interval\n");
        if !set.is_empty() {
            let _ = writeln!(out, "\t\telements = {{ {} }}", set.elements().join(", "));
        }
        out.push_str("\t}\n");
    }
    out.push_str("\tchain forward {\n");
    out.push_str("\t\ttype filter hook forward priority filter; policy accept;\n");
    out.push_str("\t\tct state established,related accept\n");
    out.push_str("\t\tct state invalid drop\n");
    for (dir, field) in [(Direction::Egress, "saddr"), (Direction::Ingress, "daddr")] {
        if let Some(first) = ruleset.chains(dir).first() {
            let _ = writeln!(
                out,
                "\t\tip {field} @{} jump {}",
                crate::ir::LOCAL_SET,
                chain_name(dir, first.tier)
            );
        }
    }
    out.push_str("\t\taccept\n\t}\n");
    render_chains(&mut out, Direction::Egress, &ruleset.egress);
    render_chains(&mut out, Direction::Ingress, &ruleset.ingress);
    out.push_str("}\n");
    out
}
