//! The nftables realization of a [`NodeRuleset`]: `table inet seam`, written in full as one `nft -f`
//! transaction ([`render`]) or changed in place ([`seam_nft::table::delta`]). The layout and why it is so:
//! [`seam_nft::table`].
//! Every policy rule has a `counter` and `comment "<rule id>"` ([`nft_comment`]), which is how `explain` reads
//! a rule's counter back from the kernel.

pub mod table;

use std::collections::BTreeMap;

use seam_nft::names::{log_prefix, SampleKind};
use seam_nft::{AddrField, FlowSampling, NftMatch, NftRule, NftVerdict};
use seam_policy::{Direction, Protocol};

use crate::ir::{Action, AddrMatch, L4Match, NodeRuleset, Rule, RuleId};

/// The `comment` a rule with this id carries in the kernel ([`seam_nft::names::nft_comment`]).
pub fn nft_comment(id: &RuleId) -> String {
    seam_nft::names::nft_comment(id.as_str())
}

/// Every rule comment of the ruleset and the rule id it stands for (to read kernel counters back by id).
pub fn comments(ruleset: &NodeRuleset) -> BTreeMap<String, RuleId> {
    ruleset
        .rule_ids()
        .into_iter()
        .map(|id| (nft_comment(&id), id))
        .collect()
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
/// `set_name` gives the kernel's name of an IR set. With `sampling`, the rule sends flow samples
/// (see [`FlowSampling::sample`]); the direction is the chains' it is rendered in.
pub(crate) fn nft_rule(
    rule: &Rule,
    set_name: &impl Fn(&str) -> String,
    sampling: Option<(&FlowSampling, Direction)>,
) -> NftRule {
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
    let log_prefix = rule.log.then(|| log_prefix(&comment));
    let verdict = match rule.action {
        Action::Allow => NftVerdict::Accept,
        Action::Deny => NftVerdict::Drop,
        Action::Pass => NftVerdict::Return,
    };
    let sample = sampling
        .map(|(s, dir)| s.sample(sample_kind(rule.action), dir == Direction::Egress, &comment));
    NftRule {
        matches,
        log_prefix,
        sample,
        verdict,
        comment,
    }
}

/// The kind of flow sample a rule of this action sends.
pub fn sample_kind(action: Action) -> SampleKind {
    match action {
        Action::Allow => SampleKind::Allow,
        Action::Deny => SampleKind::Deny,
        Action::Pass => SampleKind::Pass,
    }
}

/// Renders the ruleset as one nftables transaction that atomically replaces Seam's tables. The output is
/// deterministic: equal rulesets render to equal text.
pub fn render(ruleset: &NodeRuleset) -> String {
    seam_nft::table::full_text(&table::model(ruleset))
}
