//! Evaluator semantics beyond the upstream cases: Contracts, tiers, isolation modes, unenforced ends, verdict
//! details.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use seam_policy::{
    evaluate, parse_yaml, ContainerPort, Decision, Endpoint, EndpointKind, EvalError, Flow,
    FlowEnd, Inventory, IsolationMode, Namespace, PolicyKind, PolicySet, Protocol, Reason, Tenant,
    Tier,
};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ep(ns: &str, name: &str, kind: EndpointKind, l: &[(&str, &str)], addr: [u8; 4]) -> Endpoint {
    Endpoint {
        name: name.into(),
        namespace: ns.into(),
        kind,
        labels: labels(l),
        addresses: vec![Ipv4Addr::from(addr)],
        ports: vec![ContainerPort {
            name: Some("http".into()),
            port: 8080,
            protocol: Protocol::Tcp,
        }],
    }
}

/// shop/client (pod), shop/web (pod), lab/vm1 (vm, role=client), bank/db (pod), ext/srv (external),
/// default/node1 (host).
pub fn inventory() -> Inventory {
    let mut inv = Inventory::default();
    for (ns, tenant) in [
        ("shop", "blue"),
        ("lab", "blue"),
        ("bank", "red"),
        ("ext", "blue"),
        ("infra", "ops"),
    ] {
        inv.namespaces.insert(
            ns.into(),
            Namespace {
                labels: labels(&[("kubernetes.io/metadata.name", ns)]),
                tenant: Some(tenant.into()),
            },
        );
    }
    for t in ["blue", "red"] {
        inv.tenants.insert(
            t.into(),
            Tenant {
                isolation: IsolationMode::Multitenant,
                global: false,
            },
        );
    }
    inv.tenants.insert(
        "ops".into(),
        Tenant {
            isolation: IsolationMode::Multitenant,
            global: true,
        },
    );
    inv.endpoints = vec![
        ep(
            "shop",
            "client",
            EndpointKind::Pod,
            &[("role", "client")],
            [10, 0, 0, 1],
        ),
        ep(
            "shop",
            "web",
            EndpointKind::Pod,
            &[("role", "web")],
            [10, 0, 0, 2],
        ),
        ep(
            "lab",
            "vm1",
            EndpointKind::Vm,
            &[("role", "client")],
            [10, 0, 1, 1],
        ),
        ep(
            "bank",
            "db",
            EndpointKind::Pod,
            &[("role", "db")],
            [10, 0, 2, 1],
        ),
        ep(
            "ext",
            "srv",
            EndpointKind::External,
            &[("role", "legacy")],
            [203, 0, 113, 5],
        ),
        ep("infra", "mon", EndpointKind::Pod, &[], [10, 0, 3, 1]),
    ];
    inv.validate().unwrap();
    inv
}

pub fn set(yaml: &str) -> PolicySet {
    PolicySet::from_objects(parse_yaml(yaml).unwrap()).unwrap()
}

pub fn flow(src: &str, dst: &str, protocol: Protocol, port: u16) -> Flow {
    Flow {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        protocol,
        port,
    }
}

const DEMO: &str = r#"
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: epg-client}
spec: {selectors: [{labels: {matchLabels: {role: client}}}]}
---
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: epg-webserver}
spec: {selectors: [{kinds: [pod], labels: {matchLabels: {role: web}}}]}
---
apiVersion: seam.dev/v1alpha1
kind: Contract
metadata: {name: contract-web}
spec:
  consumers: [epg-client]
  providers: [epg-webserver]
  action: allow
  log: true
  subjects: [{name: web, filters: [{protocol: TCP, ports: [80, 443]}]}]
"#;

#[test]
fn contract_allows_consumers_and_isolates_providers() {
    let (inv, pol) = (inventory(), set(DEMO));
    // Consumer (pod and VM) to provider on a contract port: allowed by the contract at both ends.
    for src in ["shop/client", "lab/vm1"] {
        let v = evaluate(&pol, &inv, &flow(src, "shop/web", Protocol::Tcp, 443)).unwrap();
        assert!(v.allowed(), "{src}: {v:?}");
        let rule = v.ingress.rule().unwrap();
        assert_eq!(
            (
                rule.kind,
                rule.name.as_str(),
                rule.rule_index,
                rule.rule_name.as_deref()
            ),
            (PolicyKind::Contract, "contract-web", Some(0), Some("web"))
        );
        assert_eq!(v.ingress.tier, Tier::Namespace);
        assert!(v.ingress.log);
    }
    // Another port: the provider is isolated for ingress.
    let v = evaluate(
        &pol,
        &inv,
        &flow("shop/client", "shop/web", Protocol::Tcp, 22),
    )
    .unwrap();
    assert_eq!(v.ingress.decision, Decision::Deny);
    assert!(matches!(&v.ingress.reason, Reason::Isolated(refs) if refs[0].name == "contract-web"));
    // A non-consumer cannot reach the provider.
    let v = evaluate(
        &pol,
        &inv,
        &flow("infra/mon", "shop/web", Protocol::Tcp, 80),
    )
    .unwrap();
    assert!(!v.allowed());
    // Consumers are not isolated for egress: the client still reaches other endpoints of its tenant.
    let v = evaluate(
        &pol,
        &inv,
        &flow("shop/client", "lab/vm1", Protocol::Udp, 53),
    )
    .unwrap();
    assert!(v.allowed(), "{v:?}");
    assert_eq!(v.egress.tier, Tier::Baseline);
}

#[test]
fn contract_crosses_tenants_and_scope_tenant_does_not() {
    let inv = inventory();
    let yaml = r#"
apiVersion: seam.dev/v1alpha1
kind: Contract
metadata: {name: to-db}
spec:
  consumers: [namespace/shop]
  providers: [namespace/bank]
  action: allow
  subjects: [{filters: [{protocol: TCP, portRanges: [{from: 5432, to: 5433}]}]}]
"#;
    // Multitenant would deny blue -> red, but the contract allows it at both ends (namespace tier).
    assert!(!evaluate(
        &PolicySet::new(),
        &inv,
        &flow("shop/client", "bank/db", Protocol::Tcp, 5433)
    )
    .unwrap()
    .allowed());
    assert!(evaluate(
        &set(yaml),
        &inv,
        &flow("shop/client", "bank/db", Protocol::Tcp, 5433)
    )
    .unwrap()
    .allowed());
    let scoped = yaml.replace("action: allow", "action: allow\n  scope: tenant");
    assert!(!evaluate(
        &set(&scoped),
        &inv,
        &flow("shop/client", "bank/db", Protocol::Tcp, 5433)
    )
    .unwrap()
    .allowed());
}

#[test]
fn multitenant_mode_global_tenants_and_outside_addresses() {
    let (inv, pol) = (inventory(), PolicySet::new());
    let allowed = |s: &str, d: &str| {
        evaluate(&pol, &inv, &flow(s, d, Protocol::Tcp, 80))
            .unwrap()
            .allowed()
    };
    assert!(allowed("shop/client", "lab/vm1"), "same tenant");
    assert!(!allowed("shop/client", "bank/db"), "across tenants");
    assert!(
        allowed("infra/mon", "bank/db") && allowed("bank/db", "infra/mon"),
        "global tenant"
    );
    assert!(
        allowed("198.51.100.7", "bank/db"),
        "outside address belongs to no tenant"
    );
    let v = evaluate(
        &pol,
        &inv,
        &flow("shop/client", "bank/db", Protocol::Tcp, 80),
    )
    .unwrap();
    assert_eq!(
        v.egress.reason,
        Reason::IsolationMode {
            mode: IsolationMode::Multitenant,
            tenant: "blue".into(),
            peer_tenant: Some("red".into())
        }
    );
    // Flat and policy modes allow across tenants.
    let mut flat = inv.clone();
    for t in flat.tenants.values_mut() {
        t.isolation = IsolationMode::Flat;
    }
    assert!(evaluate(
        &pol,
        &flat,
        &flow("shop/client", "bank/db", Protocol::Tcp, 80)
    )
    .unwrap()
    .allowed());
}

#[test]
fn external_endpoints_and_outside_addresses_are_unenforced() {
    let (inv, pol) = (inventory(), set(DEMO));
    let v = evaluate(
        &pol,
        &inv,
        &flow("ext/srv", "shop/client", Protocol::Tcp, 80),
    )
    .unwrap();
    assert_eq!(v.egress.tier, Tier::Unenforced);
    let v = evaluate(
        &pol,
        &inv,
        &flow("shop/client", "192.0.2.1", Protocol::Tcp, 80),
    )
    .unwrap();
    assert_eq!(v.ingress.tier, Tier::Unenforced);
    // An address of an inventory endpoint resolves to it.
    let v = evaluate(&pol, &inv, &flow("10.0.0.1", "10.0.0.2", Protocol::Tcp, 80)).unwrap();
    assert_eq!(v.ingress.rule().unwrap().name, "contract-web");
    assert_eq!(
        evaluate(
            &pol,
            &inv,
            &flow("shop/nope", "shop/web", Protocol::Tcp, 80)
        )
        .unwrap_err(),
        EvalError::UnknownEndpoint("shop/nope".into())
    );
    assert!("nonsense".parse::<FlowEnd>().is_err());
}

#[test]
fn admin_tier_orders_anps_and_admin_contracts_and_pass_skips_both() {
    let inv = inventory();
    let base = r#"
apiVersion: seam.dev/v1alpha1
kind: Contract
metadata: {name: admin-deny-web}
spec:
  consumers: [cluster]
  providers: [namespace/shop]
  action: deny
  tier: admin
  priority: 20
  subjects: [{filters: [{protocol: TCP}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: anp}
spec:
  priority: PRIO
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}}
  ingress: [{name: act, action: ACTION, from: [{namespaces: {}}]}]
"#;
    let run = |prio: &str, action: &str| {
        let pol = set(&base.replace("PRIO", prio).replace("ACTION", action));
        evaluate(&pol, &inv, &flow("lab/vm1", "shop/web", Protocol::Tcp, 80))
            .unwrap()
            .ingress
    };
    // ANP at priority 10 comes first.
    let v = run("10", "Allow");
    assert_eq!(
        (v.decision, v.rule().unwrap().kind),
        (Decision::Allow, PolicyKind::AdminNetworkPolicy)
    );
    // ANP at priority 30 comes after the admin contract at 20.
    let v = run("30", "Allow");
    assert_eq!(
        (v.decision, v.rule().unwrap().kind),
        (Decision::Deny, PolicyKind::Contract)
    );
    // Pass at 10 skips the admin contract too: the namespace tier and then the mode decide (same tenant: allow).
    let v = run("10", "Pass");
    assert_eq!((v.decision, v.tier), (Decision::Allow, Tier::Baseline));
}

#[test]
fn namespace_tier_deny_contract_beats_networkpolicy_allow() {
    let inv = inventory();
    let pol = set(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: shop}
spec: {podSelector: {}, ingress: [{}]}
---
apiVersion: seam.dev/v1alpha1
kind: Contract
metadata: {name: no-ssh}
spec:
  consumers: [cluster]
  providers: [cluster]
  action: deny
  subjects: [{filters: [{protocol: TCP, ports: [22]}]}]
"#);
    let v = evaluate(&pol, &inv, &flow("lab/vm1", "shop/web", Protocol::Tcp, 22)).unwrap();
    assert_eq!(
        (v.ingress.decision, v.ingress.rule().unwrap().name.as_str()),
        (Decision::Deny, "no-ssh")
    );
    let v = evaluate(&pol, &inv, &flow("lab/vm1", "shop/web", Protocol::Tcp, 80)).unwrap();
    assert_eq!(v.ingress.rule().unwrap().name, "allow-all");
}

#[test]
fn named_ports_and_end_port() {
    let inv = inventory();
    let pol = set(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: shop}
spec:
  podSelector: {matchLabels: {role: web}}
  ingress:
  - ports: [{port: http}]
  - ports: [{protocol: UDP, port: 1000, endPort: 2000}]
"#);
    let allowed = |proto, port| {
        evaluate(&pol, &inv, &flow("shop/client", "shop/web", proto, port))
            .unwrap()
            .allowed()
    };
    assert!(allowed(Protocol::Tcp, 8080));
    assert!(!allowed(Protocol::Tcp, 80));
    assert!(
        !allowed(Protocol::Udp, 8080),
        "named port keeps its protocol"
    );
    assert!(allowed(Protocol::Udp, 1000) && allowed(Protocol::Udp, 2000));
    assert!(!allowed(Protocol::Udp, 2001) && !allowed(Protocol::Tcp, 1500));
}

#[test]
fn icmp_filters_use_the_type() {
    let inv = inventory();
    let pol = set(&DEMO.replace(
        "{protocol: TCP, ports: [80, 443]}",
        "{protocol: ICMP, icmpType: 8}",
    ));
    assert!(evaluate(
        &pol,
        &inv,
        &flow("shop/client", "shop/web", Protocol::Icmp, 8)
    )
    .unwrap()
    .allowed());
    assert!(!evaluate(
        &pol,
        &inv,
        &flow("shop/client", "shop/web", Protocol::Icmp, 13)
    )
    .unwrap()
    .allowed());
}

#[test]
fn deployment_groups_hold_the_pods_labelled_with_their_deployment() {
    // ACI's mapping: a Deployment is an EPG. `deployment/<ns>/<name>` needs no EndpointGroup object.
    let mut inv = inventory();
    for e in inv.endpoints.iter_mut().filter(|e| e.namespace == "shop") {
        let name = if e.name == "web" { "web" } else { "frontend" };
        e.labels
            .insert(seam_policy::DEPLOYMENT_LABEL.into(), name.into());
    }
    let pol = set(r#"
apiVersion: seam.dev/v1alpha1
kind: Contract
metadata: {name: front-to-web}
spec:
  consumers: [deployment/shop/frontend]
  providers: [deployment/shop/web]
  action: allow
  subjects: [{filters: [{protocol: TCP, ports: [80]}]}]
"#);
    assert!(pol.dangling_group_references().is_empty());
    let v = evaluate(
        &pol,
        &inv,
        &flow("shop/client", "shop/web", Protocol::Tcp, 80),
    )
    .unwrap();
    assert!(v.allowed(), "{v:?}");
    assert_eq!(
        v.ingress.rule().map(|r| r.name.as_str()),
        Some("front-to-web")
    );
    // The VM has the client role but is not in the Deployment: the provider is isolated from it.
    let v = evaluate(&pol, &inv, &flow("lab/vm1", "shop/web", Protocol::Tcp, 80)).unwrap();
    assert!(!v.allowed(), "{v:?}");
    // A malformed implicit reference is refused with its path.
    let bad = seam_policy::parse_yaml(
        "apiVersion: seam.dev/v1alpha1\nkind: Contract\nmetadata: {name: c}\nspec:\n  consumers: [deployment/shop]\n  providers: [cluster]\n  action: allow\n  subjects: [{filters: [{protocol: TCP}]}]\n",
    );
    let err = bad.map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("spec.consumers[0]"), "{err}");
}
