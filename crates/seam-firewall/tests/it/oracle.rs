//! The oracle every compiler test is held to: the IR compiled for each node decides the flows between endpoints as
//! `seam_policy::evaluate` does. One comparison, used by the conformance cases (on one node and on three), the
//! CNP, tenant and contract tests, and the incremental compiler's random sequences.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use seam_firewall::{compile, evaluate_packet, verdict_rule_id, NodeRuleset, RuleVerdict};
use seam_policy::{evaluate, Decision, Direction, Flow, FlowEnd, Inventory, PolicySet, Protocol};

/// Endpoints (`ns/name`) per node.
pub type Placement = Vec<Vec<String>>;

/// An endpoint as the oracle probes it.
#[derive(Debug, Clone)]
pub struct End {
    /// Its reference in the inventory (`ns/name`).
    pub reference: String,
    /// The address its packets carry.
    pub address: Ipv4Addr,
    /// The node that runs it: an index into the rulesets.
    pub node: usize,
}

/// Which ordered pairs of ends are checked.
#[derive(Debug, Clone, Copy)]
pub enum Pairs {
    /// Every pair.
    All,
    /// About `per_step` of them, a different share for every `step` (so that consecutive steps of a sequence
    /// together cover all pairs).
    Sample { step: usize, per_step: usize },
}

/// The rulesets of `set` compiled for the endpoints of each node of `placement`.
pub fn compile_placement(
    set: &PolicySet,
    inv: &Inventory,
    placement: &Placement,
) -> Vec<NodeRuleset> {
    placement
        .iter()
        .map(|eps| compile(set, inv, eps).unwrap())
        .collect()
}

/// The endpoints of `inv` (their first address) on the nodes of `placement`.
pub fn placed_ends(inv: &Inventory, placement: &Placement) -> Vec<End> {
    let node_of: BTreeMap<&str, usize> = placement
        .iter()
        .enumerate()
        .flat_map(|(n, eps)| eps.iter().map(move |e| (e.as_str(), n)))
        .collect();
    inv.endpoints
        .iter()
        .map(|e| {
            let reference = e.reference();
            let node = node_of[reference.as_str()];
            End {
                reference,
                address: e.addresses[0],
                node,
            }
        })
        .collect()
}

/// Every mismatch between the IR of `set` compiled for the nodes of `placement` and the engine, over all endpoint
/// pairs and `probes` (see [`compare`]).
pub fn mismatches(
    set: &PolicySet,
    inv: &Inventory,
    placement: &Placement,
    probes: &[(u16, Protocol)],
) -> Vec<String> {
    let rulesets = compile_placement(set, inv, placement);
    compare(
        set,
        inv,
        &rulesets.iter().collect::<Vec<_>>(),
        &placed_ends(inv, placement),
        Pairs::All,
        probes,
    )
}

/// Every mismatch between the `rulesets` (one per node, as [`End::node`] numbers them) and
/// `evaluate(reference, inv)` over the `pairs` of `ends` and every probe: per direction, the decision and the rule
/// `verdict_rule_id` names (egress on the source's node, ingress on the destination's; an end its node does not
/// enforce is unenforced: no rule decides), and whether the forward path (the source's node, then the
/// destination's) passes exactly the flows the engine allows.
pub fn compare(
    reference: &PolicySet,
    inv: &Inventory,
    rulesets: &[&NodeRuleset],
    ends: &[End],
    pairs: Pairs,
    probes: &[(u16, Protocol)],
) -> Vec<String> {
    let (offset, stride) = match pairs {
        Pairs::All => (0, 1),
        Pairs::Sample { step, per_step } => (step, (ends.len() * ends.len() / per_step).max(1)),
    };
    let unenforced = RuleVerdict {
        decision: Decision::Allow,
        tier: None,
        rule: None,
    };
    let mut bad = Vec::new();
    let mut index = 0usize;
    for src in ends {
        for dst in ends {
            index += 1;
            if index % stride != offset % stride {
                continue;
            }
            let (s, d) = (&src.reference, &dst.reference);
            let (sa, da) = (src.address, dst.address);
            let (src_rs, dst_rs) = (rulesets[src.node], rulesets[dst.node]);
            for &(port, protocol) in probes {
                let flow = Flow {
                    src: FlowEnd::Endpoint(s.clone()),
                    dst: FlowEnd::Endpoint(d.clone()),
                    protocol,
                    port,
                };
                let want = evaluate(reference, inv, &flow).unwrap();
                let egress = if src_rs.is_local(sa) {
                    src_rs.evaluate_direction(Direction::Egress, sa, da, protocol, port)
                } else {
                    unenforced.clone()
                };
                let ingress = if dst_rs.is_local(da) {
                    dst_rs.evaluate_direction(Direction::Ingress, sa, da, protocol, port)
                } else {
                    unenforced.clone()
                };
                for (what, w, g) in [
                    ("egress", &want.egress, &egress),
                    ("ingress", &want.ingress, &ingress),
                ] {
                    let want_id = verdict_rule_id(w);
                    if w.decision != g.decision || want_id != g.rule {
                        bad.push(format!(
                            "{s}->{d} {port}/{protocol} {what}: engine {:?} by {want_id:?}, IR {:?} by {:?}",
                            w.decision, g.decision, g.rule
                        ));
                    }
                }
                let passes =
                    |rs: &NodeRuleset| evaluate_packet(rs, sa, da, protocol, port).allowed();
                let forward = passes(src_rs) && (src.node == dst.node || passes(dst_rs));
                if forward != want.allowed() {
                    bad.push(format!(
                        "{s}->{d} {port}/{protocol}: engine allowed={}, forward path allowed={forward}",
                        want.allowed()
                    ));
                }
            }
        }
    }
    bad
}
