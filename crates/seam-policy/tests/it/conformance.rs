//! Runs every case of `test_data/netpol/` (copied from the shared netpol data) through the
//! conformance harness (seam-conformance) with the reference evaluator as the decider: the 9-pod
//! x/y/z × a/b/c model for `cases.json` (all 81 pairs, every probe) and the ANP model for
//! `anp_cases.json`. Prints one line per failing case and `N passed, M failed`.

use seam_conformance::{
    check, flow, CaseInput, ConformanceError, Decider, Engine, Observed, Probe, Suite, TEST_DATA,
};
use seam_policy::{evaluate, PolicySet};

/// A case file of `test_data/netpol/` with `model.json`.
pub fn suite(name: &str) -> Suite {
    let read = |file: &str| std::fs::read_to_string(format!("{TEST_DATA}/{file}")).unwrap();
    Suite::from_texts(&read(name), &read("model.json")).unwrap()
}

/// The engine with every case's policies left out (to prove the harness can fail).
struct WithoutPolicies;

impl Decider for WithoutPolicies {
    type Error = ConformanceError;

    fn decide(
        &mut self,
        input: &CaseInput<'_>,
        probes: &[Probe],
    ) -> Result<Vec<Observed>, ConformanceError> {
        let none = PolicySet::new();
        Ok(probes
            .iter()
            .map(|p| {
                Engine::default().observe(&evaluate(&none, &input.inventory, &flow(p)).unwrap())
            })
            .collect())
    }
}

/// Runs every case of both files; returns (passed, failed).
fn run(decider: &mut dyn Decider<Error = ConformanceError>, print: bool) -> (usize, usize) {
    let (mut passed, mut failed) = (0, 0);
    for file in ["cases.json", "anp_cases.json"] {
        let suite = suite(file);
        // Every inventory a case runs on is a valid one.
        for case in &suite.cases {
            let cluster = suite.model.cluster(case).unwrap();
            let inv = cluster.inventory(case, &cluster.reference_plan).unwrap();
            inv.validate().unwrap();
        }
        let report = check(&suite, decider).unwrap();
        if print {
            for line in &report.failures {
                println!("{line}");
            }
            println!("{file}: {}", report.summary());
        }
        passed += report.passed;
        failed += report.failed();
    }
    (passed, failed)
}

#[test]
fn netpol_and_anp_cases() {
    let (passed, failed) = run(&mut Engine::default(), true);
    assert_eq!(failed, 0, "{failed} conformance case(s) failed");
    assert_eq!(
        passed,
        113 + 17,
        "every case of cases.json and anp_cases.json ran"
    );
}

/// The harness itself can fail: without the policies most cases must differ.
#[test]
fn harness_detects_a_wrong_engine() {
    let (_, failed) = run(&mut WithoutPolicies, false);
    assert!(
        failed > 100,
        "only {failed} cases failed with no policies applied"
    );
}
