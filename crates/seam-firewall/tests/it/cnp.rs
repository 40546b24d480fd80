//! ClusterNetworkPolicies (v1alpha2) compiled and compared with the engine pair by pair: both tiers, mixed with
//! ANPs, the BANP, admin Contracts and NetworkPolicies at colliding priorities (the documented tie-breaks),
//! Pass, networks, port ranges and named ports, on one node and spread over nodes.

use std::collections::BTreeMap;

use seam_firewall::{compile, render, RuleId};
use seam_policy::{
    evaluate, Decision, Direction, Flow, FlowEnd, Inventory, PolicyKind, PolicySet, Protocol,
};

use crate::contracts::{inventory, POLICIES, PROBES};
use crate::oracle::mismatches;

/// CNPs placed to collide with the objects of `contracts::POLICIES`: the ANP `shared-pass` (priority 5), the
/// admin Contracts `ssh-in-tenant` (5) and `block-outside` (10), the BANP (subject g1).
pub const CNPS: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: tie-with-anp}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {}}
  ingress:
    - {name: no-shared, action: Deny, from: [{namespaces: {matchLabels: {name: s1}}}]}
    - {name: green-dns, action: Accept, from: [{namespaces: {matchLabels: {name: g1}}}], protocols: [{udp: {destinationPort: {number: 53}}}]}
    - {name: red-http, action: Deny, from: [{pods: {namespaceSelector: {matchLabels: {name: r1}}, podSelector: {matchLabels: {app: cli}}}}], protocols: [{destinationNamedPort: http}]}
    - {name: red-ssh, action: Deny, from: [{namespaces: {matchLabels: {name: r1}}}], protocols: [{tcp: {destinationPort: {number: 22}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: pass-blue}
spec:
  tier: Admin
  priority: 4
  subject: {namespaces: {matchLabels: {name: b2}}}
  ingress:
    - {action: Pass, from: [{namespaces: {matchLabels: {name: b1}}}], protocols: [{tcp: {destinationPort: {range: {start: 20, end: 25}}}}]}
  egress:
    - {action: Accept, to: [{networks: [10.99.0.0/16]}], protocols: [{sctp: {destinationPort: {number: 81}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: outside-twin}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {name: g1}}}
  ingress:
    - {action: Accept, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {range: {start: 8400, end: 8600}}}}]}
  egress:
    - {action: Accept, to: [{networks: [10.99.0.0/16]}], protocols: [{tcp: {destinationPort: {range: {start: 8000, end: 9000}}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: base-early}
spec:
  tier: Baseline
  priority: 10
  subject: {pods: {namespaceSelector: {matchLabels: {name: g1}}, podSelector: {}}}
  ingress:
    - {action: Accept, from: [{pods: {namespaceSelector: {matchLabels: {name: d1}}, podSelector: {matchLabels: {app: cli}}}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}
  egress:
    - {action: Deny, to: [{networks: [10.99.0.0/16]}], protocols: [{udp: {destinationPort: {range: {start: 50, end: 60}}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: base-red}
spec:
  tier: Baseline
  priority: 20
  subject: {namespaces: {matchLabels: {name: r1}}}
  ingress:
    - {action: Accept, from: [{namespaces: {matchLabels: {name: b1}}}]}
  egress:
    - {action: Deny, to: [{namespaces: {}}], protocols: [{sctp: {destinationPort: {number: 81}}}]}
    - {action: Accept, to: [{pods: {namespaceSelector: {matchLabels: {name: s1}}, podSelector: {}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: base-red-late}
spec:
  tier: Baseline
  priority: 20
  subject: {namespaces: {matchLabels: {name: r1}}}
  ingress:
    - {action: Deny, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}
"#;

pub fn cnp_policies() -> PolicySet {
    let text = format!("{POLICIES}\n---\n{CNPS}");
    PolicySet::from_objects(seam_policy::parse_yaml(&text).unwrap()).unwrap()
}

fn per_namespace(inv: &Inventory) -> Vec<Vec<String>> {
    let mut per_ns: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for e in &inv.endpoints {
        per_ns.entry(&e.namespace).or_default().push(e.reference());
    }
    per_ns.into_values().collect()
}

fn all(inv: &Inventory) -> Vec<Vec<String>> {
    vec![inv.endpoints.iter().map(|e| e.reference()).collect()]
}

fn assert_agree(set: &PolicySet, inv: &Inventory, probes: &[(u16, Protocol)]) {
    for (layout, placement) in [
        ("one node", all(inv)),
        ("per namespace", per_namespace(inv)),
    ] {
        let bad = mismatches(set, inv, &placement, probes);
        assert!(
            bad.is_empty(),
            "{layout}: {} mismatch(es): {:#?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
    }
}

/// More probes than `PROBES`: the CNP port ranges' edges and the named port.
fn probes() -> Vec<(u16, Protocol)> {
    let mut p = PROBES.to_vec();
    p.extend([
        (20, Protocol::Tcp),
        (25, Protocol::Tcp),
        (26, Protocol::Tcp),
        (8399, Protocol::Tcp),
        (8400, Protocol::Tcp),
        (8600, Protocol::Tcp),
        (50, Protocol::Udp),
        (61, Protocol::Udp),
    ]);
    p
}

#[test]
fn cnps_with_anps_contracts_and_the_banp_agree_with_the_engine() {
    let inv = inventory();
    let set = cnp_policies();
    let probes = probes();
    assert_agree(&set, &inv, &probes);

    // The scenario is not vacuous: CNP rules of both tiers decide many directions.
    let mut by_cnp: BTreeMap<String, usize> = BTreeMap::new();
    for s in &inv.endpoints {
        for d in &inv.endpoints {
            for &(port, protocol) in &probes {
                let flow = Flow {
                    src: FlowEnd::Endpoint(s.reference()),
                    dst: FlowEnd::Endpoint(d.reference()),
                    protocol,
                    port,
                };
                let v = evaluate(&set, &inv, &flow).unwrap();
                for dv in [&v.egress, &v.ingress] {
                    if let Some(r) = dv.rule() {
                        if r.kind == PolicyKind::ClusterNetworkPolicy {
                            *by_cnp.entry(r.name.clone()).or_default() += 1;
                        }
                    }
                }
            }
        }
    }
    for name in [
        "tie-with-anp",
        "pass-blue",
        "outside-twin",
        "base-early",
        "base-red",
        "base-red-late",
    ] {
        assert!(
            by_cnp.get(name).is_some_and(|n| *n > 0),
            "{name} decides nothing: {by_cnp:?}"
        );
    }
}

#[test]
fn cnps_alone_agree_over_nodes_and_render_with_their_ids() {
    let inv = inventory();
    let set = PolicySet::from_objects(seam_policy::parse_yaml(CNPS).unwrap()).unwrap();
    assert_agree(&set, &inv, &probes());
    let rs = compile(&set, &inv, &["g1/web"]).unwrap();
    let ids = rs.rule_ids();
    for id in [
        "cnp/outside-twin/egress/0",
        "cnp/outside-twin/ingress/0",
        "cnp/base-early/egress/0",
        "cnp/base-early/ingress/0",
        "cnp/tie-with-anp/ingress/2",
    ] {
        assert!(ids.contains(&RuleId(id.into())), "{id} not in {ids:?}");
    }
    // The node holds only what its endpoints need: b2's and r1's CNPs select nothing on g1.
    assert!(!ids.iter().any(|i| i.as_str().starts_with("cnp/pass-blue/")));
    assert!(!ids.iter().any(|i| i.as_str().starts_with("cnp/base-red")));
    assert!(rs.sets.contains_key("cnp/base-early/subject"));
    let text = render(&rs);
    assert!(
        text.contains("comment \"cnp/base-early/egress/0\""),
        "{text}"
    );
}

#[test]
fn documented_tie_breaks_hold_in_the_compiled_ruleset() {
    let inv = inventory();
    let set = cnp_policies();
    let rs = compile(&set, &inv, &all(&inv)[0]).unwrap();
    let addr = |r: &str| inv.endpoint(r).unwrap().addresses[0];
    let decide = |dir, s: &str, d: &str, proto, port| {
        let v = rs.evaluate_direction(dir, addr(s), addr(d), proto, port);
        (v.decision, v.rule.map(|r| r.0))
    };
    use Decision::{Allow, Deny};
    use Direction::{Egress, Ingress};
    // ANP shared-pass (5) before CNP tie-with-anp (5): s1's Pass wins over the CNP's deny of s1.
    assert_eq!(
        decide(Ingress, "s1/dns", "b2/db", Protocol::Tcp, 80),
        (Allow, Some("default/ingress".into()))
    );
    // ANP deny of green 53/UDP (5) before the CNP's accept of it (5).
    assert_eq!(
        decide(Ingress, "g1/web", "b1/web", Protocol::Udp, 53),
        (Deny, Some("anp/shared-pass/ingress/1".into()))
    );
    // The CNP's named-port rule denies red clients on `http` (8080 on web pods).
    assert_eq!(
        decide(Ingress, "r1/cli", "b1/web", Protocol::Tcp, 8080),
        (Deny, Some("cnp/tie-with-anp/ingress/2".into()))
    );
    // CNP pass-blue (4) passes b1 -> b2:22 past the admin Contract ssh-in-tenant (5) ...
    assert_eq!(
        decide(Ingress, "b1/cli", "b2/db", Protocol::Tcp, 22),
        (Allow, Some("default/ingress".into()))
    );
    // ... which decides where nothing passes or matches first.
    assert_eq!(
        decide(Ingress, "b2/db", "b2/db", Protocol::Tcp, 22),
        (Allow, Some("contract/ssh-in-tenant/ingress/0".into()))
    );
    // CNP tie-with-anp (5) before the admin Contract ssh-in-tenant (5): r1 -> r1:22 denied by the CNP.
    assert_eq!(
        decide(Ingress, "r1/cli", "r1/web", Protocol::Tcp, 22),
        (Deny, Some("cnp/tie-with-anp/ingress/3".into()))
    );
    // CNP outside-twin (10) before the admin Contract block-outside (10): g1/web's egress to legacy on 8500.
    assert_eq!(
        decide(Egress, "g1/web", "d1/legacy", Protocol::Tcp, 8500),
        (Allow, Some("cnp/outside-twin/egress/0".into()))
    );
    // Baseline, equal priority: base-red before base-red-late (by name); both before the multitenant mode.
    assert_eq!(
        decide(Ingress, "b1/cli", "r1/cli", Protocol::Tcp, 80),
        (Allow, Some("cnp/base-red/ingress/0".into()))
    );
    assert_eq!(
        decide(Ingress, "r1/web", "r1/cli", Protocol::Tcp, 80),
        (Deny, Some("cnp/base-red-late/ingress/0".into()))
    );
    // Baseline CNPs before the BANP: base-early denies g1's UDP 50..60 to legacy that the BANP would allow.
    assert_eq!(
        decide(Egress, "g1/web", "d1/legacy", Protocol::Udp, 53),
        (Deny, Some("cnp/base-early/egress/0".into()))
    );
    assert_eq!(
        decide(Egress, "g1/web", "d1/legacy", Protocol::Udp, 80),
        (Allow, Some("banp/default/egress/0".into()))
    );
}
