//! ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2): parsing and validation, its place in the admin and
//! baseline tiers, and equivalence with AdminNetworkPolicy / BaselineAdminNetworkPolicy — every case of
//! `anp_cases.json`, and a hand-written set over every pair and probe, rewritten as CNPs (ANP → Admin tier with
//! Allow → Accept, BANP → Baseline tier, `ports` → `protocols`) must give the same verdicts.

use seam_policy::{
    evaluate, parse_json, parse_yaml, CnpTier, Decision, DirectionVerdict, Flow, FlowEnd,
    Inventory, ParseError, PolicyKind, PolicyObject, PolicySet, Protocol, Reason, Tier,
};
use serde_json::{json, Value};

use seam_conformance::{anp_as_cnp as to_cnps, flow as probe_flow, policy_set};

use crate::conformance::suite;
use crate::eval::{flow, inventory, set};

fn err(text: &str) -> String {
    match parse_yaml(text) {
        Ok(objs) => panic!("accepted: {objs:?}"),
        Err(e) => e.to_string(),
    }
}

fn invalid_paths(text: &str) -> Vec<String> {
    let Err(ParseError::Invalid { source, .. }) = parse_yaml(text) else {
        panic!("expected a validation error for {text}")
    };
    source.errors.iter().map(|e| e.path.clone()).collect()
}

const FULL: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: full}
spec:
  tier: Admin
  priority: 7
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: web}}}}
  ingress:
    - name: from-lab
      action: Accept
      from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: lab}}}]
      protocols:
        - tcp: {destinationPort: {number: 80}}
        - udp: {destinationPort: {range: {start: 5000, end: 5100}}}
        - sctp: {destinationPort: {number: 9}}
        - destinationNamedPort: http
    - {action: Pass, from: [{pods: {namespaceSelector: {}, podSelector: {}}}]}
  egress:
    - {name: no-ext, action: Deny, to: [{networks: [203.0.113.0/24]}]}
"#;

#[test]
fn parses_round_trips_and_lowers_to_the_anp_shape() {
    let objs = parse_yaml(FULL).unwrap();
    let [PolicyObject::ClusterNetworkPolicy(cnp)] = objs.as_slice() else {
        panic!("{objs:?}")
    };
    assert_eq!(cnp.spec.tier, CnpTier::Admin);
    assert_eq!(objs[0].kind(), PolicyKind::ClusterNetworkPolicy);
    assert_eq!(
        objs[0].kind().api_version(),
        "policy.networking.k8s.io/v1alpha2"
    );
    assert_eq!(objs[0].kind().plural(), "clusternetworkpolicies");
    let back = PolicyObject::from_value(objs[0].to_value()).unwrap();
    assert_eq!(back, objs[0]);
    let json = parse_json(&objs[0].to_value().to_string()).unwrap();
    assert_eq!(json[0], objs[0]);
    let lowered = serde_json::to_value(cnp.ingress_rules()).unwrap();
    assert_eq!(
        lowered[0]["ports"],
        json!([
            {"portNumber": {"protocol": "TCP", "port": 80}},
            {"portRange": {"protocol": "UDP", "start": 5000, "end": 5100}},
            {"portNumber": {"protocol": "SCTP", "port": 9}},
            {"namedPort": "http"}
        ])
    );
    assert_eq!(lowered[0]["action"], "Allow");
    assert_eq!(lowered[1]["action"], "Pass");
    assert_eq!(
        serde_json::to_value(cnp.egress_rules()).unwrap()[0]["to"],
        json!([{"networks": ["203.0.113.0/24"]}])
    );
}

#[test]
fn unsupported_peers_and_bad_fields_are_rejected_with_paths() {
    let paths = invalid_paths(
        r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: bad}
spec:
  tier: Baseline
  priority: 1001
  subject: {namespaces: {}, pods: {namespaceSelector: {}, podSelector: {}}}
  ingress:
    - action: Pass
      from: [{namespaces: {}}, {}]
      protocols: []
  egress:
    - action: Deny
      to:
        - {nodes: {matchLabels: {role: infra}}}
        - {domainNames: [example.com]}
        - {networks: [10.0.0.0/8]}
      protocols:
        - tcp: {}
        - udp: {destinationPort: {number: 53, range: {start: 1, end: 2}}}
        - sctp: {destinationPort: {range: {start: 90, end: 90}}}
        - {tcp: {destinationPort: {number: 0}}, udp: {destinationPort: {number: 1}}}
        - destinationNamedPort: Not_A_Name
"#,
    );
    assert_eq!(
        paths,
        [
            "spec.priority",
            "spec.subject",
            "spec.ingress[0].action",
            "spec.ingress[0].protocols",
            "spec.ingress[0].from[1]",
            "spec.egress[0].protocols[0].tcp.destinationPort",
            "spec.egress[0].protocols[1].udp.destinationPort",
            "spec.egress[0].protocols[2].sctp.destinationPort.range.end",
            "spec.egress[0].protocols[3]",
            "spec.egress[0].protocols[3].tcp.destinationPort.number",
            "spec.egress[0].protocols[4].destinationNamedPort",
            "spec.egress[0].to[0].nodes",
            "spec.egress[0].to[1].domainNames",
            "spec.egress[0].protocols[4].destinationNamedPort",
        ]
    );
    // The messages say what is unsupported.
    let e = err(r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: bad}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {}}
  egress: [{action: Accept, to: [{domainNames: ["*.example.com"]}]}]
"#);
    assert!(
        e.contains("spec.egress[0].to[0].domainNames: domainNames peers are not supported"),
        "{e}"
    );
    // Decode errors name the field: v1alpha1 spellings, unknown tiers, ingress-only peer kinds.
    let base = |spec: &str| {
        format!(
            "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: x}}\nspec: {spec}\n"
        )
    };
    for (spec, path, word) in [
        (
            "{tier: Admin, priority: 1, subject: {namespaces: {}}, ingress: [{action: Allow, from: [{namespaces: {}}]}]}",
            "spec.ingress[0].action",
            "Allow",
        ),
        (
            "{tier: Namespace, priority: 1, subject: {namespaces: {}}}",
            "spec.tier",
            "Namespace",
        ),
        (
            "{tier: Admin, priority: 1, subject: {namespaces: {}}, ingress: [{action: Deny, from: [{nodes: {}}]}]}",
            "spec.ingress[0].from[0]",
            "nodes",
        ),
        (
            "{tier: Admin, priority: 1, subject: {namespaces: {}}, ingress: [{action: Deny, from: [{namespaces: {}}], ports: [{portNumber: {port: 80}}]}]}",
            "spec.ingress[0]",
            "ports",
        ),
        (
            "{priority: 1, subject: {namespaces: {}}}",
            "spec",
            "tier",
        ),
    ] {
        let e = err(&base(spec));
        assert!(e.contains(path) && e.contains(word), "{spec}: {e}");
    }
    // Cluster-scoped.
    let e = err(
        &base("{tier: Admin, priority: 1, subject: {namespaces: {}}}")
            .replace("metadata: {name: x}", "metadata: {name: x, namespace: y}"),
    );
    assert!(e.contains("metadata.namespace"), "{e}");
}

const ADMIN_ORDER: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: anp}
spec:
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}}
  ingress: [{name: anp-deny, action: Deny, from: [{namespaces: {}}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: cnp}
spec:
  tier: Admin
  priority: CNP_PRIO
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}}
  ingress: [{name: cnp-rule, action: CNP_ACTION, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: lab}}}]}]
---
apiVersion: seam.dev/v1alpha1
kind: Contract
metadata: {name: admin-allow}
spec:
  consumers: [cluster]
  providers: [namespace/shop]
  action: allow
  tier: admin
  priority: 5
  subjects: [{filters: [{protocol: UDP}]}]
"#;

fn ingress(
    pol: &PolicySet,
    inv: &Inventory,
    src: &str,
    dst: &str,
    p: Protocol,
) -> DirectionVerdict {
    evaluate(pol, inv, &flow(src, dst, p, 80)).unwrap().ingress
}

fn decided_by(v: &DirectionVerdict) -> (Decision, Tier, PolicyKind, String) {
    let r = v.rule().unwrap_or_else(|| panic!("no rule decided: {v:?}"));
    (v.decision, v.tier, r.kind, r.name.clone())
}

#[test]
fn admin_tier_cnps_join_anps_and_admin_contracts_by_priority() {
    let inv = inventory();
    let run = |prio: &str, action: &str, src: &str, p: Protocol| {
        let pol = set(&ADMIN_ORDER
            .replace("CNP_PRIO", prio)
            .replace("CNP_ACTION", action));
        ingress(&pol, &inv, src, "shop/web", p)
    };
    let cnp = |d| {
        (
            d,
            Tier::Admin,
            PolicyKind::ClusterNetworkPolicy,
            "cnp".to_string(),
        )
    };
    let anp = |d| {
        (
            d,
            Tier::Admin,
            PolicyKind::AdminNetworkPolicy,
            "anp".to_string(),
        )
    };
    // Lower priority first.
    assert_eq!(
        decided_by(&run("9", "Accept", "lab/vm1", Protocol::Tcp)),
        cnp(Decision::Allow)
    );
    assert_eq!(
        decided_by(&run("11", "Accept", "lab/vm1", Protocol::Tcp)),
        anp(Decision::Deny)
    );
    // Equal priority: the ANP first (tie-break ANP < CNP < Contract, then name).
    assert_eq!(
        decided_by(&run("10", "Accept", "lab/vm1", Protocol::Tcp)),
        anp(Decision::Deny)
    );
    // Equal priority with an admin Contract: the CNP first.
    assert_eq!(
        decided_by(&run("5", "Deny", "lab/vm1", Protocol::Udp)),
        cnp(Decision::Deny)
    );
    let v = run("6", "Deny", "lab/vm1", Protocol::Udp);
    assert_eq!(
        (v.decision, v.rule().unwrap().kind),
        (Decision::Allow, PolicyKind::Contract)
    );
    // The rule reference names the CNP rule.
    let v = run("1", "Deny", "lab/vm1", Protocol::Tcp);
    let r = v.rule().unwrap();
    assert_eq!(
        (r.rule_index, r.rule_name.as_deref()),
        (Some(0), Some("cnp-rule"))
    );
    assert_eq!(r.to_string(), "ClusterNetworkPolicy cnp rule 0 (cnp-rule)");
    // Pass skips every later ANP, CNP and admin Contract: the namespace tier, then the mode decides.
    let v = run("1", "Pass", "lab/vm1", Protocol::Tcp);
    assert_eq!((v.decision, v.tier), (Decision::Allow, Tier::Baseline));
    let v = run("1", "Pass", "lab/vm1", Protocol::Udp);
    assert_eq!((v.decision, v.tier), (Decision::Allow, Tier::Baseline));
    // A peer the CNP does not match falls through to the ANP.
    assert_eq!(
        decided_by(&run("1", "Pass", "shop/client", Protocol::Tcp)),
        anp(Decision::Deny)
    );
}

#[test]
fn baseline_tier_cnps_come_before_the_banp_and_after_networkpolicy() {
    let inv = inventory();
    let pol = set(r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress: [{name: banp-deny, action: Deny, from: [{namespaces: {}}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: b-late}
spec:
  tier: Baseline
  priority: 900
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}}
  ingress: [{action: Deny, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: lab}}}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: b-early}
spec:
  tier: Baseline
  priority: 100
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}}
  ingress:
    - {name: lab-in, action: Accept, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: lab}}}], protocols: [{tcp: {destinationPort: {range: {start: 80, end: 90}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-shop, namespace: shop}
spec:
  podSelector: {matchLabels: {role: db}}
  ingress: [{from: [{podSelector: {}}]}]
"#);
    let b = |d, name: &str| {
        (
            d,
            Tier::Baseline,
            PolicyKind::ClusterNetworkPolicy,
            name.to_string(),
        )
    };
    // Priority 100 accepts TCP 80..90 from lab before priority 900 denies lab.
    assert_eq!(
        decided_by(&ingress(&pol, &inv, "lab/vm1", "shop/web", Protocol::Tcp)),
        b(Decision::Allow, "b-early")
    );
    assert_eq!(
        decided_by(&ingress(&pol, &inv, "lab/vm1", "shop/web", Protocol::Udp)),
        b(Decision::Deny, "b-late")
    );
    // Nothing in the CNPs matches a shop client: the BANP decides.
    assert_eq!(
        decided_by(&ingress(
            &pol,
            &inv,
            "shop/client",
            "shop/web",
            Protocol::Tcp
        )),
        (
            Decision::Deny,
            Tier::Baseline,
            PolicyKind::BaselineAdminNetworkPolicy,
            "default".into()
        )
    );
    // The BANP denies before the mode would: lab is in shop's tenant, and bank/db's ingress is BANP-denied too.
    let v = ingress(&pol, &inv, "shop/client", "bank/db", Protocol::Tcp);
    assert_eq!(
        v.rule().unwrap().kind,
        PolicyKind::BaselineAdminNetworkPolicy
    );
    // Baseline decides only what NetworkPolicy left open: an isolated pod stays isolated.
    let mut inv2 = inv.clone();
    let mut db = inv2.endpoints[3].clone();
    db.namespace = "shop".into();
    db.name = "db".into();
    db.addresses = vec!["10.0.0.3".parse().unwrap()];
    inv2.endpoints.push(db);
    let v = ingress(&pol, &inv2, "lab/vm1", "shop/db", Protocol::Tcp);
    assert_eq!((v.decision, v.tier), (Decision::Deny, Tier::Namespace));
    let v = ingress(&pol, &inv2, "shop/web", "shop/db", Protocol::Tcp);
    assert_eq!((v.decision, v.tier), (Decision::Allow, Tier::Namespace));
}

#[test]
fn networks_ports_and_named_ports() {
    let inv = inventory();
    let pol = set(r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: guard}
spec:
  tier: Admin
  priority: 3
  subject: {pods: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}, podSelector: {}}}
  ingress:
    - {name: no-http-from-lab, action: Deny, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: lab}}}], protocols: [{destinationNamedPort: http}]}
  egress:
    - {name: no-ext-range, action: Deny, to: [{networks: [203.0.113.0/24]}], protocols: [{tcp: {destinationPort: {range: {start: 1000, end: 2000}}}}, {udp: {destinationPort: {number: 53}}}]}
"#);
    let allowed = |src: &str, dst: &str, p: Protocol, port: u16| {
        evaluate(&pol, &inv, &flow(src, dst, p, port))
            .unwrap()
            .allowed()
    };
    // Named port: shop pods serve `http` on 8080/TCP.
    assert!(!allowed("lab/vm1", "shop/web", Protocol::Tcp, 8080));
    assert!(allowed("lab/vm1", "shop/web", Protocol::Tcp, 80));
    assert!(allowed("lab/vm1", "shop/web", Protocol::Udp, 8080));
    // Networks match any address inside, an inventory endpoint's or not.
    assert!(!allowed("shop/client", "203.0.113.9", Protocol::Tcp, 1500));
    assert!(!allowed("shop/client", "ext/srv", Protocol::Tcp, 1000));
    assert!(!allowed("shop/client", "203.0.113.9", Protocol::Udp, 53));
    assert!(allowed("shop/client", "203.0.113.9", Protocol::Tcp, 2001));
    assert!(allowed("shop/client", "203.0.113.9", Protocol::Udp, 1500));
    assert!(allowed("shop/client", "198.51.100.1", Protocol::Tcp, 1500));
    // The subject is pods of shop only.
    assert!(allowed("lab/vm1", "203.0.113.9", Protocol::Tcp, 1500));
}

/// The ANP/BANP verdict and the CNP verdict of one direction agree: decision, tier, and (when a rule decided)
/// its index and name, with the kind mapped. Returns whether a CNP decided.
fn same_direction(what: &str, anp: &DirectionVerdict, cnp: &DirectionVerdict) -> bool {
    assert_eq!(
        (anp.decision, anp.tier),
        (cnp.decision, cnp.tier),
        "{what}: {anp:?} vs {cnp:?}"
    );
    match (&anp.reason, &cnp.reason) {
        (Reason::Rule(a), Reason::Rule(c))
            if matches!(
                a.kind,
                PolicyKind::AdminNetworkPolicy | PolicyKind::BaselineAdminNetworkPolicy
            ) =>
        {
            assert_eq!(c.kind, PolicyKind::ClusterNetworkPolicy, "{what}");
            assert_eq!(
                (a.rule_index, &a.rule_name),
                (c.rule_index, &c.rule_name),
                "{what}"
            );
            true
        }
        (a, c) => {
            assert_eq!(a, c, "{what}");
            false
        }
    }
}

fn cnp_count(set: &PolicySet) -> usize {
    set.cluster_network_policies().count()
}

#[test]
fn every_anp_case_rewritten_as_cnps_gives_the_same_verdicts() {
    let suite = suite("anp_cases.json");
    let cluster = suite.model.anp.as_ref().unwrap();
    let plan = &cluster.reference_plan;
    let mut cases = 0;
    let mut cnp_decided = 0;
    for case in &suite.cases {
        let id = &case.id;
        let inv = cluster.inventory(case, plan).unwrap();
        let parse = |v: &Value| policy_set(v, plan).unwrap_or_else(|e| panic!("{id}: {e}"));
        let original = parse(&case.policies);
        let converted = parse(&to_cnps(&case.policies));
        assert_eq!(
            cnp_count(&converted),
            original.admin_network_policies().count() + usize::from(original.baseline().is_some()),
            "{id}"
        );
        assert_eq!(converted.admin_network_policies().count(), 0, "{id}");
        assert!(converted.baseline().is_none(), "{id}");
        for probe in &case.probes {
            let (src, dst) = (&probe.from, &probe.to);
            let f = probe_flow(probe);
            let a = evaluate(&original, &inv, &f).unwrap();
            let c = evaluate(&converted, &inv, &f).unwrap();
            assert_eq!(c.allowed(), probe.expected, "{id}: {src}->{dst} {c:?}");
            let what = format!("{id}: {src}->{dst}");
            cnp_decided += usize::from(same_direction(&what, &a.egress, &c.egress));
            cnp_decided += usize::from(same_direction(&what, &a.ingress, &c.ingress));
        }
        cases += 1;
    }
    assert_eq!(cases, 17);
    assert!(
        cnp_decided > 20,
        "only {cnp_decided} directions decided by a CNP"
    );
}

/// A richer ANP/BANP set than the upstream cases (ranges, UDP/SCTP, named ports, networks, Pass, both
/// directions), converted and compared on every endpoint pair and probe of the evaluator's inventory.
#[test]
fn handwritten_anps_rewritten_as_cnps_agree_on_every_pair() {
    let policies = json!([
        {"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
         "metadata": {"name": "a1"},
         "spec": {"priority": 3, "subject": {"namespaces": {}},
          "ingress": [
            {"name": "pass-lab", "action": "Pass", "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "lab"}}}], "ports": [{"portRange": {"start": 80, "end": 80}}]},
            {"name": "http", "action": "Allow", "from": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}}}], "ports": [{"namedPort": "http"}, {"portNumber": {"protocol": "UDP", "port": 53}}]},
            {"action": "Deny", "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "infra"}}}], "ports": [{"portRange": {"protocol": "SCTP", "start": 1, "end": 1000}}]}
          ],
          "egress": [
            {"name": "ext", "action": "Deny", "to": [{"networks": ["203.0.113.0/24", "198.51.100.0/25"]}], "ports": [{"portRange": {"start": 443, "end": 8443}}]},
            {"action": "Allow", "to": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "bank"}}}]}
          ]}},
        {"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
         "metadata": {"name": "a2"},
         "spec": {"priority": 3, "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "web"}}}},
          "ingress": [{"action": "Deny", "from": [{"namespaces": {}}], "ports": [{"portNumber": {"port": 80}}]}]}},
        {"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "BaselineAdminNetworkPolicy",
         "metadata": {"name": "default"},
         "spec": {"subject": {"namespaces": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["infra"]}]}},
          "ingress": [{"action": "Allow", "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "lab"}}}]},
                      {"name": "rest", "action": "Deny", "from": [{"namespaces": {}}], "ports": [{"portRange": {"protocol": "UDP", "start": 1, "end": 65535}}]}],
          "egress": [{"action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}], "ports": [{"portNumber": {"protocol": "SCTP", "port": 81}}]}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"podSelector": {"matchLabels": {"role": "web"}}, "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 8080}]}]}}
    ]);
    let original = PolicySet::from_objects(parse_json(&policies.to_string()).unwrap()).unwrap();
    let converted =
        PolicySet::from_objects(parse_json(&to_cnps(&policies).to_string()).unwrap()).unwrap();
    assert_eq!(cnp_count(&converted), 3);
    let inv = inventory();
    let mut ends: Vec<String> = inv.endpoints.iter().map(|e| e.reference()).collect();
    ends.extend(["203.0.113.9".to_string(), "198.51.100.200".to_string()]);
    let probes = [
        (Protocol::Tcp, 80),
        (Protocol::Tcp, 443),
        (Protocol::Tcp, 8080),
        (Protocol::Udp, 53),
        (Protocol::Udp, 80),
        (Protocol::Sctp, 81),
        (Protocol::Sctp, 2000),
    ];
    let mut cnp_decided = 0;
    for s in &ends {
        for d in &ends {
            for (protocol, port) in probes {
                let f = Flow {
                    src: s.parse::<FlowEnd>().unwrap(),
                    dst: d.parse::<FlowEnd>().unwrap(),
                    protocol,
                    port,
                };
                let a = evaluate(&original, &inv, &f).unwrap();
                let c = evaluate(&converted, &inv, &f).unwrap();
                let what = format!("{s}->{d} {port}/{protocol}");
                cnp_decided += usize::from(same_direction(&what, &a.egress, &c.egress));
                cnp_decided += usize::from(same_direction(&what, &a.ingress, &c.ingress));
            }
        }
    }
    assert!(
        cnp_decided > 100,
        "only {cnp_decided} directions decided by a CNP"
    );
}
