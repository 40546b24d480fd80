#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use seam_policy::Protocol;
use serde_json::{json, Value};

use crate::*;

fn text(name: &str) -> String {
    std::fs::read_to_string(format!("{TEST_DATA}/{name}")).unwrap()
}

fn load(name: &str) -> Value {
    serde_json::from_str(&text(name)).unwrap()
}

fn run(cases: &Value, model: &Value) -> Result<Report, ConformanceError> {
    check(&Suite::from_json(cases, model)?, &mut Engine::default())
}

#[test]
fn every_case_passes() {
    let model = load("model.json");
    let report = run(&load("cases.json"), &model).unwrap();
    assert_eq!(
        (report.passed, report.failed()),
        (113, 0),
        "{:#?}",
        report.failures
    );
    let report = run(&load("anp_cases.json"), &model).unwrap();
    assert_eq!(
        (report.passed, report.failed()),
        (17, 0),
        "{:#?}",
        report.failures
    );
    assert_eq!(report.summary(), "17 passed, 0 failed");
}

#[test]
fn a_wrong_expectation_fails_the_case() {
    let model = load("model.json");
    let mut cases = load("anp_cases.json");
    let probe = &mut cases[0]["probes"][0]["expected"];
    *probe = Value::Bool(!probe.as_bool().unwrap());
    let report = run(&cases, &model).unwrap();
    assert_eq!(report.failed(), 1);
    assert!(
        report.failures[0].starts_with("FAIL "),
        "{}",
        report.failures[0]
    );
}

#[test]
fn malformed_input_names_the_place() {
    let model = load("model.json");
    let cases = json!([{"id": "x", "policies": [], "probe": {"port": 80}}]);
    let err = run(&cases, &model).unwrap_err();
    assert!(err.to_string().starts_with("cases: "), "{err}");
    let err = run(&json!({"not": "a list"}), &model).unwrap_err();
    assert_eq!(err.to_string(), "cases: : expected a list");
}

#[test]
fn texts_read_as_their_json() {
    let model = load("model.json");
    assert_eq!(
        Suite::from_texts(&text("cases.json"), &text("model.json")).unwrap(),
        Suite::from_json(&load("cases.json"), &model).unwrap()
    );
    // The cases are parsed first; the message is the parser's.
    assert_eq!(
        Suite::from_texts("{\"a\":\n", "nor this").unwrap_err(),
        ConformanceError::NotJson {
            file: "cases",
            message: "EOF while parsing a value at line 2 column 0".to_string()
        }
    );
    assert_eq!(
        Suite::from_texts("[]", "").unwrap_err().to_string(),
        "model: not JSON: EOF while parsing a value at line 1 column 0"
    );
    // Valid JSON of the wrong shape is malformed, as from JSON.
    assert_eq!(
        Suite::from_texts("{}", "{}").unwrap_err().to_string(),
        "cases: : expected a list"
    );
}

#[test]
fn the_suite_holds_both_models_and_every_probe() {
    let model = load("model.json");
    let suite = Suite::from_json(&load("cases.json"), &model).unwrap();
    let xyz = suite.model.xyz.as_ref().unwrap();
    assert!(suite.model.anp.is_none(), "only the models the cases need");
    assert_eq!(xyz.namespaces.len(), 3);
    assert_eq!(xyz.pods.len(), 9);
    let xa = &xyz.pods[0];
    assert_eq!(xa.reference, "x/a");
    assert!(xa
        .named_ports()
        .contains(&("serve-81-udp".to_string(), 81, Protocol::Udp)));
    assert_eq!(xyz.serves().unwrap().len(), 6);
    assert_eq!(suite.cases.len(), 113);
    let first = &suite.cases[0];
    assert_eq!(first.probes.len(), 81);
    assert!(!first.self_enforced && !first.anp);
    let relabel = suite.case("e2e-ingress-from-updated-pod-s2").unwrap();
    assert_eq!(relabel.pod_labels["x/b"]["pod2"], "updated");
    // cyclonus cases carry five more matrices.
    let cyc = suite
        .cases
        .iter()
        .find(|c| c.probes.len() == 6 * 81)
        .unwrap();
    assert_eq!(cyc.ports().len(), 6);

    let suite = Suite::from_json(&load("anp_cases.json"), &model).unwrap();
    let anp = suite.model.anp.as_ref().unwrap();
    assert_eq!(anp.pods.len(), 8, "host-network pods are not built");
    assert!(anp.pods[0]
        .named_ports()
        .contains(&("web".to_string(), 80, Protocol::Tcp)));
    assert!(suite.cases.iter().all(Case::is_anp));
}

#[test]
fn policy_documents_use_the_real_addresses() {
    let plan = BTreeMap::from([("x/a".to_string(), Ipv4Addr::new(10, 240, 0, 2))]);
    let policies = json!([{
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"ipBlock": {"cidr": "{{net:x/a/4}}", "except": ["{{ip:x/a}}/32"]}}]}]}
    }]);
    let docs = policy_documents(&policies, &plan).unwrap();
    let block = &docs[0]["spec"]["egress"][0]["to"][0]["ipBlock"];
    assert_eq!(block["cidr"], "0.0.0.0/4");
    assert_eq!(block["except"][0], "10.240.0.2/32");
    assert!(policy_documents(&json!([{"kind": "Nope"}]), &plan).is_err());
    let unknown = json!([{"x": "{{ip:q/q}}"}]);
    assert!(policy_documents(&unknown, &plan)
        .unwrap_err()
        .contains("q/q"));
    assert!(substitute("{{ip:x/a", &plan).is_err());
    assert!(substitute("{{net:x/a/33}}", &plan).is_err());
}

fn case(anp: bool, self_enforced: bool) -> Case {
    Case {
        id: "c".into(),
        anp,
        self_enforced,
        namespace_labels: BTreeMap::new(),
        pod_labels: BTreeMap::new(),
        policies: Value::Null,
        probes: Vec::new(),
    }
}

fn probe(from: &str, to: &str, expected: bool) -> Probe {
    Probe {
        from: from.into(),
        to: to.into(),
        port: 80,
        protocol: Protocol::Tcp,
        expected,
    }
}

fn judged(c: &Case, p: &Probe, o: Observed) -> CaseOutcome {
    let mut out = CaseOutcome::default();
    judge(c, p, &o, &mut out);
    out
}

#[test]
fn probes_are_judged_as_upstream_judges_them() {
    let np = case(false, true);
    let anp = case(true, true);
    // Allowed must connect; denied may be refused or time out for NetworkPolicy.
    assert_eq!(
        judged(&np, &probe("x/a", "x/b", true), Observed::Connected).checked,
        1
    );
    assert_eq!(
        judged(&np, &probe("x/a", "x/b", true), Observed::TimedOut)
            .mismatches
            .len(),
        1
    );
    assert_eq!(
        judged(&np, &probe("x/a", "x/b", false), Observed::Refused).checked,
        1
    );
    assert_eq!(
        judged(&np, &probe("x/a", "x/b", false), Observed::Connected)
            .mismatches
            .len(),
        1
    );
    // ANP: a denial must be a drop.
    assert_eq!(
        judged(&anp, &probe("a/0", "b/0", false), Observed::TimedOut).checked,
        1
    );
    let refused = judged(&anp, &probe("a/0", "b/0", false), Observed::Refused);
    assert!(
        refused.mismatches[0].contains("want drop (timeout), got refused"),
        "{refused:?}"
    );
    // Self pairs never cross the firewall.
    assert_eq!(
        judged(&np, &probe("x/a", "x/a", false), Observed::Connected).uncheckable_self,
        1
    );
    assert_eq!(
        judged(
            &case(false, false),
            &probe("x/a", "x/a", false),
            Observed::Connected
        )
        .ignored_self,
        1
    );
    // Skipped probes are never passed.
    let mut sctp = probe("x/a", "x/b", true);
    sctp.protocol = Protocol::Sctp;
    let skipped = judged(&np, &sctp, Observed::Skipped);
    assert_eq!((skipped.skipped, skipped.checked), (1, 0));
    let mut report = Report::new(Judging::Packets);
    report.record("sctp-only", skipped);
    report.record(
        "ok",
        judged(&np, &probe("x/a", "x/b", true), Observed::Connected),
    );
    report.record(
        "bad",
        judged(&np, &probe("x/a", "x/b", true), Observed::TimedOut),
    );
    assert_eq!(report.passed, 1);
    assert_eq!(
        report.failures,
        vec!["FAIL bad: 1 mismatch(es); first: x/a->x/b 80/TCP: want connect, got timeout"]
    );
    assert!(report.summary().starts_with("1 passed, 1 failed (1 case(s) skipped, every probe SCTP: sctp-only; 1 SCTP probe(s) skipped"), "{}", report.summary());
}

#[test]
fn decisions_are_judged_against_the_expectation() {
    let decided = |allowed| Observed::Decided {
        allowed,
        why: "because".into(),
    };
    let np = case(false, true);
    let bad = judged(&np, &probe("x/a", "x/b", true), decided(false));
    assert_eq!(bad.mismatches, ["x/a->x/b 80/TCP: want allow, got because"]);
    // A self pair counts where upstream enforces it, and only there.
    assert_eq!(
        judged(&np, &probe("x/a", "x/a", false), decided(true))
            .mismatches
            .len(),
        1
    );
    let lax = judged(
        &case(false, false),
        &probe("x/a", "x/a", true),
        decided(false),
    );
    assert_eq!((lax.ignored_self, lax.mismatches.len()), (1, 0));
    let mut report = Report::new(Judging::Decisions);
    report.record("lax", lax);
    assert_eq!(
        report.summary(),
        "1 passed, 0 failed (1 self-pair mismatches ignored where upstream ignores them)"
    );
}

/// A decider of packets that fails its first case, then connects everything denied at first
/// sight but allowed on the second look.
struct Flaky {
    calls: usize,
}

#[derive(Debug, thiserror::Error)]
enum FlakyError {
    #[error(transparent)]
    Cases(#[from] ConformanceError),
    #[error("apply")]
    Apply(#[source] std::io::Error),
}

impl Decider for Flaky {
    type Error = FlakyError;

    fn judging(&self) -> Judging {
        Judging::Packets
    }

    fn decide(
        &mut self,
        _input: &CaseInput<'_>,
        probes: &[Probe],
    ) -> Result<Vec<Observed>, FlakyError> {
        self.calls += 1;
        if self.calls == 1 {
            return Err(FlakyError::Apply(std::io::Error::other("nodes slow")));
        }
        Ok(probes.iter().map(|_| Observed::TimedOut).collect())
    }

    fn recheck(
        &mut self,
        _input: &CaseInput<'_>,
        probes: &[Probe],
    ) -> Result<Option<Vec<Observed>>, FlakyError> {
        Ok(Some(
            probes
                .iter()
                .map(|p| {
                    if p.expected {
                        Observed::Connected
                    } else {
                        Observed::TimedOut
                    }
                })
                .collect(),
        ))
    }
}

#[test]
fn a_packet_decider_fails_one_case_and_gets_a_second_look() {
    let model = load("model.json");
    let cases = load("anp_cases.json");
    let suite = Suite::from_json(&json!([cases[0], cases[1]]), &model).unwrap();
    let report = check(&suite, &mut Flaky { calls: 0 }).unwrap();
    assert_eq!(report.passed, 1);
    assert_eq!(
        report.failures,
        [format!("FAIL {}: apply: nodes slow", suite.cases[0].id)]
    );
}

#[test]
fn rejected_policies_fail_the_case() {
    let model = load("model.json");
    let mut cases = load("anp_cases.json");
    cases[0]["policies"] = json!([{"kind": "Nope"}]);
    let report = run(&json!([cases[0]]), &model).unwrap();
    assert!(
        report.failures[0].contains(": 1 mismatch(es); first: policies rejected: "),
        "{:?}",
        report.failures
    );
}
