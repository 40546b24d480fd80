//! The compiler proved against the engine: for every conformance case (the ANP cases twice: as written, and
//! rewritten as ClusterNetworkPolicies), the IR compiled for all pods on one node,
//! and for the pods spread over three nodes, decides every pair and probe as `seam_policy::evaluate` does — the
//! same decision per direction, by the rule `verdict_rule_id` names — and the forward path of the nodes involved
//! (egress on the source's node, ingress on the destination's) passes exactly the flows the engine allows.
//! And the IR is a decider of the conformance harness: on both layouts it passes every case's expectations.

use std::collections::BTreeMap;

use seam_conformance::{check, policy_set, CaseInput, ConformanceError, Decider, Observed, Probe};
use seam_firewall::evaluate_packet;
use seam_policy::{Inventory, PolicySet, Protocol};

use crate::cases::{probes, suite};
use crate::oracle::{compare, compile_placement, placed_ends, Pairs, Placement};

fn one_node(inv: &Inventory) -> Placement {
    vec![inv.endpoints.iter().map(|e| e.reference()).collect()]
}

/// Namespaces spread round-robin (in name order) over three nodes: x on n1, y on n2, z on n3.
fn three_nodes(inv: &Inventory) -> Placement {
    let namespaces: Vec<&String> = inv.namespaces.keys().collect();
    let mut nodes = vec![Vec::new(), Vec::new(), Vec::new()];
    for e in &inv.endpoints {
        let i = namespaces.iter().position(|n| **n == e.namespace).unwrap();
        nodes[i % 3].push(e.reference());
    }
    nodes
}

/// A case ready to check: id, inventory, policies, probes.
type Case = (String, Inventory, PolicySet, Vec<(u16, Protocol)>);

/// Runs every case; with `drop_policies` the IR is compiled from no policies (to prove the check can fail).
/// Returns the failing case ids and the number of cases.
fn run(drop_policies: bool) -> (Vec<String>, usize) {
    let mut work: Vec<Case> = Vec::new();
    for file in ["cases.json", "anp_cases.json"] {
        let suite = suite(file);
        for case in &suite.cases {
            let cluster = suite.model.cluster(case).unwrap();
            let plan = &cluster.reference_plan;
            let inv = cluster.inventory(case, plan).unwrap();
            inv.validate().unwrap();
            work.push((
                case.id.clone(),
                inv.clone(),
                policy_set(&case.policies, plan).unwrap(),
                probes(case),
            ));
            if case.is_anp() {
                // The same case with its ANPs and BANP rewritten as ClusterNetworkPolicies (v1alpha2).
                let as_cnps = case.as_cnps();
                let converted = policy_set(&as_cnps.policies, plan).unwrap();
                assert!(converted.admin_network_policies().next().is_none());
                work.push((as_cnps.id, inv, converted, probes(case)));
            }
        }
    }
    let total = work.len();
    let mut failed = Vec::new();
    for (id, inv, set, probes) in work {
        let empty = PolicySet::new();
        let compiled_from = if drop_policies { &empty } else { &set };
        for (layout, placement) in [("1 node", one_node(&inv)), ("3 nodes", three_nodes(&inv))] {
            // The engine always sees the real policies; only the IR may be built from none.
            let rulesets = compile_placement(compiled_from, &inv, &placement);
            let bad = compare(
                &set,
                &inv,
                &rulesets.iter().collect::<Vec<_>>(),
                &placed_ends(&inv, &placement),
                Pairs::All,
                &probes,
            );
            if !bad.is_empty() {
                if !drop_policies {
                    println!(
                        "FAIL {id} ({layout}): {} mismatch(es); first: {}",
                        bad.len(),
                        bad[0]
                    );
                }
                failed.push(format!("{id} ({layout})"));
            }
        }
    }
    (failed, total)
}

#[test]
fn every_conformance_case_on_one_node_and_on_three() {
    let (failed, total) = run(false);
    assert_eq!(
        total,
        113 + 17 + 17,
        "every case ran, the ANP cases also as CNPs"
    );
    assert!(
        failed.is_empty(),
        "{} case layout(s) differ: {failed:?}",
        failed.len()
    );
}

/// The check itself can fail: an IR compiled from no policies must disagree with the engine on most cases.
#[test]
fn the_check_detects_a_wrong_compiler() {
    let (failed, _) = run(true);
    assert!(
        failed.len() > 200,
        "only {} case layouts failed",
        failed.len()
    );
}

/// The IR as the harness's decider: each case's policies compiled for the pods of each node of a layout; a
/// probe passes when the forward path of the nodes involved (egress on the source's, ingress on the
/// destination's) passes it.
struct Ir {
    layout: Layout,
}

/// Where each endpoint runs.
type Layout = fn(&Inventory) -> Placement;

impl Decider for Ir {
    type Error = ConformanceError;

    fn decide(
        &mut self,
        input: &CaseInput<'_>,
        probes: &[Probe],
    ) -> Result<Vec<Observed>, ConformanceError> {
        let inv = &input.inventory;
        let placement = (self.layout)(inv);
        let rulesets = compile_placement(&input.policies, inv, &placement);
        let node_of: BTreeMap<String, usize> = placed_ends(inv, &placement)
            .into_iter()
            .map(|e| (e.reference, e.node))
            .collect();
        Ok(probes
            .iter()
            .map(|p| {
                let (sa, da) = (input.addresses[&p.from], input.addresses[&p.to]);
                let (sn, dn) = (node_of[&p.from], node_of[&p.to]);
                let passes =
                    |n: usize| evaluate_packet(&rulesets[n], sa, da, p.protocol, p.port).allowed();
                let allowed = passes(sn) && (sn == dn || passes(dn));
                Observed::Decided {
                    allowed,
                    why: format!("the IR on nodes {sn} -> {dn} (allowed={allowed})"),
                }
            })
            .collect())
    }
}

#[test]
fn the_ir_passes_every_case_as_the_harness_checks_it() {
    let layouts: [(&str, Layout); 2] = [("1 node", one_node), ("3 nodes", three_nodes)];
    for (layout, place) in layouts {
        // The ANP cases also rewritten as ClusterNetworkPolicies.
        let mut as_cnps = suite("anp_cases.json");
        as_cnps.cases = as_cnps
            .cases
            .iter()
            .map(seam_conformance::Case::as_cnps)
            .collect();
        let mut passed = 0;
        for suite in [suite("cases.json"), suite("anp_cases.json"), as_cnps] {
            let report = check(&suite, &mut Ir { layout: place }).unwrap();
            assert!(
                report.failures.is_empty(),
                "{layout}: {}\n{}",
                report.summary(),
                report.failures.join("\n")
            );
            passed += report.passed;
        }
        assert_eq!(passed, 113 + 17 + 17, "{layout}: every case ran");
    }
}

/// Sanity: the model assumed above.
#[test]
fn model_has_nine_pods_in_three_namespaces() {
    let suite = suite("cases.json");
    let xyz = suite.model.xyz.as_ref().unwrap();
    let inv = xyz.base_inventory(&xyz.reference_plan).unwrap();
    assert_eq!(inv.endpoints.len(), 9);
    assert_eq!(
        three_nodes(&inv).iter().map(Vec::len).collect::<Vec<_>>(),
        [3, 3, 3]
    );
}
