//! Contracts, EndpointGroups, tenants and isolation modes, ICMP, VMs, hosts and external endpoints: the parts of
//! the engine the upstream conformance data does not reach, compiled and compared with the engine pair by pair.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use seam_firewall::compile;
use seam_policy::{
    ContainerPort, Endpoint, EndpointKind, Inventory, IsolationMode, Namespace, PolicySet,
    Protocol, Tenant,
};

use crate::oracle::mismatches;

fn ep(ns: &str, name: &str, kind: EndpointKind, app: &str, addr: [u8; 4]) -> Endpoint {
    Endpoint {
        name: name.to_string(),
        namespace: ns.to_string(),
        kind,
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        addresses: vec![Ipv4Addr::from(addr)],
        ports: vec![ContainerPort {
            name: Some("http".to_string()),
            port: if app == "web" { 8080 } else { 80 },
            protocol: Protocol::Tcp,
        }],
    }
}

pub fn inventory() -> Inventory {
    let mut inv = Inventory {
        default_isolation: IsolationMode::Policy,
        ..Inventory::default()
    };
    for (t, mode, global) in [
        ("blue", IsolationMode::Multitenant, false),
        ("red", IsolationMode::Multitenant, false),
        ("shared", IsolationMode::Multitenant, true),
        ("green", IsolationMode::Flat, false),
    ] {
        inv.tenants.insert(
            t.to_string(),
            Tenant {
                isolation: mode,
                global,
            },
        );
    }
    for (ns, tenant) in [
        ("b1", Some("blue")),
        ("b2", Some("blue")),
        ("r1", Some("red")),
        ("s1", Some("shared")),
        ("g1", Some("green")),
        ("d1", None),
    ] {
        inv.namespaces.insert(
            ns.to_string(),
            Namespace {
                labels: BTreeMap::from([("name".to_string(), ns.to_string())]),
                tenant: tenant.map(str::to_string),
            },
        );
    }
    use EndpointKind::*;
    inv.endpoints = vec![
        ep("b1", "web", Pod, "web", [10, 1, 0, 1]),
        ep("b1", "cli", Pod, "cli", [10, 1, 0, 2]),
        ep("b1", "vm", Vm, "web", [10, 2, 0, 3]),
        ep("b2", "db", Pod, "db", [10, 1, 0, 4]),
        ep("r1", "web", Pod, "web", [10, 1, 0, 5]),
        ep("r1", "cli", Pod, "cli", [10, 1, 0, 6]),
        ep("s1", "dns", Pod, "dns", [10, 1, 0, 7]),
        ep("g1", "web", Pod, "web", [10, 1, 0, 8]),
        ep("d1", "cli", Pod, "cli", [10, 1, 0, 9]),
        ep("d1", "node1", Host, "node", [192, 168, 0, 1]),
        ep("d1", "legacy", External, "legacy", [10, 99, 0, 1]),
    ];
    inv.validate().unwrap();
    inv
}

pub const POLICIES: &str = r#"
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: web}
spec:
  selectors:
    - labels: {matchLabels: {app: web}}
---
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: clients}
spec:
  selectors:
    - labels: {matchLabels: {app: cli}}
      namespaceSelector: {matchExpressions: [{key: name, operator: In, values: [b1, r1, d1]}]}
    - kinds: [vm]
---
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: outside}
spec:
  selectors:
    - cidrs: [10.99.0.0/16, 192.168.0.0/24]
---
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: mixed}
spec:
  selectors:
    - kinds: [pod]
      cidrs: [10.1.0.0/29]
---
apiVersion: seam.dev/v1alpha1
kind: Contract
metadata: {name: web}
spec:
  consumers: [clients]
  providers: [web]
  action: allow
  log: true
  subjects:
    - name: http
      filters: [{protocol: TCP, ports: [80, 443], portRanges: [{from: 8080, to: 8081}]}]
    - name: ping
      filters: [{protocol: ICMP, icmpType: 8}]
---
apiVersion: seam.dev/v1alpha1
kind: Contract
metadata: {name: no-udp-to-red}
spec:
  consumers: [cluster]
  providers: [namespace/r1]
  action: deny
  subjects: [{filters: [{protocol: UDP}]}]
---
apiVersion: seam.dev/v1alpha1
kind: Contract
metadata: {name: block-outside}
spec:
  consumers: [outside]
  providers: [cluster]
  action: deny
  tier: admin
  priority: 10
  subjects: [{filters: [{protocol: TCP, portRanges: [{from: 8000, to: 9000}]}]}]
---
apiVersion: seam.dev/v1alpha1
kind: Contract
metadata: {name: ssh-in-tenant}
spec:
  consumers: [mixed]
  providers: [namespace/b2, namespace/r1]
  action: allow
  tier: admin
  priority: 5
  scope: tenant
  subjects: [{filters: [{protocol: TCP, ports: [22]}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: b1}
spec:
  podSelector: {matchLabels: {app: web}}
  egress:
    - to: [{namespaceSelector: {matchLabels: {name: g1}}}]
      ports: [{port: http}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: shared-pass}
spec:
  priority: 5
  subject: {namespaces: {}}
  ingress:
    - {name: from-shared, action: Pass, from: [{namespaces: {matchLabels: {name: s1}}}]}
    - {name: no-green-53, action: Deny, from: [{namespaces: {matchLabels: {name: g1}}}], ports: [{portNumber: {protocol: UDP, port: 53}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {matchLabels: {name: g1}}}
  ingress:
    - {action: Deny, from: [{pods: {namespaceSelector: {matchLabels: {name: d1}}, podSelector: {}}}]}
  egress:
    - {action: Allow, to: [{networks: [10.99.0.0/16]}]}
    - {action: Deny, to: [{namespaces: {}}]}
"#;

pub fn policies() -> PolicySet {
    PolicySet::from_objects(seam_policy::parse_yaml(POLICIES).unwrap()).unwrap()
}

pub const PROBES: [(u16, Protocol); 10] = [
    (80, Protocol::Tcp),
    (443, Protocol::Tcp),
    (8080, Protocol::Tcp),
    (8500, Protocol::Tcp),
    (22, Protocol::Tcp),
    (53, Protocol::Udp),
    (81, Protocol::Sctp),
    (8, Protocol::Icmp),
    (0, Protocol::Icmp),
    (80, Protocol::Udp),
];

#[test]
fn contracts_tenants_and_kinds_on_one_node_and_per_namespace() {
    let inv = inventory();
    let set = policies();
    let all: Vec<String> = inv.endpoints.iter().map(|e| e.reference()).collect();
    let bad = mismatches(&set, &inv, &vec![all], &PROBES);
    assert!(
        bad.is_empty(),
        "{} mismatch(es): {:#?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    // Every namespace on its own node.
    let mut per_ns: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for e in &inv.endpoints {
        per_ns.entry(&e.namespace).or_default().push(e.reference());
    }
    let placement: Vec<Vec<String>> = per_ns.into_values().collect();
    let bad = mismatches(&set, &inv, &placement, &PROBES);
    assert!(
        bad.is_empty(),
        "{} mismatch(es): {:#?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
}

#[test]
fn a_node_gets_only_what_its_endpoints_need() {
    let inv = inventory();
    let set = policies();
    // g1/web: BANP subject, NP peers; no contract provides to or consumes from it except as `web` provider.
    let rs = compile(&set, &inv, &["g1/web"]).unwrap();
    assert!(rs.sets["local"].contains(Ipv4Addr::new(10, 1, 0, 8)));
    assert!(!rs.sets.contains_key("np/b1/web-egress/subject"));
    assert!(
        !rs.sets.keys().any(|k| k.starts_with("tenant/")),
        "green is flat"
    );
    let external_only = compile(&set, &inv, &["d1/legacy"]).unwrap();
    assert!(
        external_only.local.is_empty(),
        "external endpoints are never enforced"
    );
    assert!(compile(&set, &inv, &["nope/nothing"]).is_err());
}

#[test]
fn rule_count_grows_with_policies_not_with_pods() {
    let mut inv = inventory();
    let set = policies();
    let small = compile(
        &set,
        &inv,
        &inv.endpoints
            .iter()
            .map(|e| e.reference())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    for i in 0..200u8 {
        let mut e = inv.endpoints[i as usize % 9].clone();
        e.name = format!("{}-{i}", e.name);
        e.addresses = vec![Ipv4Addr::new(10, 3, 0, i)];
        inv.endpoints.push(e);
    }
    let names: Vec<String> = inv.endpoints.iter().map(|e| e.reference()).collect();
    let big = compile(&set, &inv, &names).unwrap();
    assert_eq!(small.rule_count(), big.rule_count());
}
