//! Parsing and validation: dispatch on apiVersion + kind, field paths in every error, unsupported features
//! rejected, YAML multi-document input.

use seam_policy::{parse_json, parse_yaml, ParseError, PolicyKind, PolicyObject};

fn err(text: &str) -> String {
    match parse_yaml(text) {
        Ok(objs) => panic!("accepted: {objs:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn yaml_multi_document_dispatches_on_kind() {
    let text = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - namespaceSelector: {matchExpressions: [{key: team, operator: In, values: [a, b]}]}
      podSelector: {}
    ports: [{port: 8000, endPort: 8080}, {protocol: UDP, port: dns}]
---
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: epg-client}
spec:
  selectors:
  - kinds: [vm, pod]
    labels: {matchLabels: {role: client}}
  - cidrs: [203.0.113.0/24]
---
apiVersion: seam.dev/v1alpha1
kind: Contract
metadata: {name: contract-web}
spec:
  consumers: [epg-client]
  providers: [epg-webserver]
  action: allow
  log: true
  subjects:
  - name: web
    filters: [{protocol: TCP, ports: [80, 443]}, {protocol: ICMP, icmpType: 8}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress:
  - {name: deny-all, action: Deny, from: [{namespaces: {}}], ports: [{portRange: {start: 1, end: 1024}}]}
"#;
    let objs = parse_yaml(text).unwrap();
    let kinds: Vec<PolicyKind> = objs.iter().map(PolicyObject::kind).collect();
    assert_eq!(
        kinds,
        [
            PolicyKind::NetworkPolicy,
            PolicyKind::EndpointGroup,
            PolicyKind::Contract,
            PolicyKind::BaselineAdminNetworkPolicy
        ]
    );
    // Round trip through the wire form.
    for o in &objs {
        let again = PolicyObject::from_value(o.to_value()).unwrap();
        assert_eq!(&again, o);
    }
}

#[test]
fn json_accepts_object_array_and_list() {
    let one = r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"a","namespace":"x"},"spec":{}}"#;
    assert_eq!(parse_json(one).unwrap().len(), 1);
    assert_eq!(parse_json(&format!("[{one},{one}]")).unwrap().len(), 2);
    let list = format!(r#"{{"apiVersion":"v1","kind":"List","items":[{one}]}}"#);
    assert_eq!(parse_json(&list).unwrap().len(), 1);
}

#[test]
fn unknown_kind_is_named() {
    let e = err("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: a}\n");
    assert!(e.contains("unsupported object kind \"Ingress\""), "{e}");
    let e = err("apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: a}\n");
    assert!(e.contains("ClusterNetworkPolicy"), "{e}");
    let e = err("kind: NetworkPolicy\n");
    assert!(e.contains("apiVersion: is missing"), "{e}");
}

#[test]
fn unknown_field_has_its_path() {
    let e = err(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a, namespace: x}
spec:
  ingress:
  - ports: [{port: 80, protocl: UDP}]
"#);
    assert!(e.contains("spec.ingress[0].ports[0]"), "{e}");
    assert!(e.contains("protocl"), "{e}");
}

#[test]
fn validation_reports_every_problem_with_paths() {
    let text = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a, namespace: x}
spec:
  podSelector: {matchExpressions: [{key: app, operator: In}]}
  ingress:
  - ports: [{port: 80}, {port: 90, endPort: 85}, {port: web, endPort: 90}, {protocol: ICMP}]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}, podSelector: {}}, {}]
"#;
    let Err(ParseError::Invalid { source, .. }) = parse_yaml(text) else {
        panic!("expected a validation error")
    };
    let paths: Vec<&str> = source.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.podSelector.matchExpressions[0].values",
            "spec.ingress[0].ports[1].endPort",
            "spec.ingress[0].ports[2].endPort",
            "spec.ingress[0].ports[3].protocol",
            "spec.egress[0].to[0]",
            "spec.egress[0].to[0].ipBlock.except[0]",
            "spec.egress[0].to[1]",
        ],
        "{source}"
    );
}

#[test]
fn anp_unsupported_and_invalid_fields_are_rejected() {
    let e = err(r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: a}
spec:
  priority: 1001
  subject: {namespaces: {}}
  egress:
  - {name: to-nodes, action: Allow, to: [{nodes: {matchLabels: {}}}]}
  - {name: pass-ten, action: Pass, to: [{networks: [10.0.0.0/8]}], ports: [{portNumber: {port: 0}, namedPort: web}]}
"#);
    assert!(e.contains("spec.priority: 1001 is outside 0..=1000"), "{e}");
    assert!(
        e.contains("spec.egress[0].to[0].nodes: nodes peers are not supported"),
        "{e}"
    );
    assert!(
        e.contains("spec.egress[1].ports[0]: must set exactly one"),
        "{e}"
    );
    assert!(
        e.contains("spec.egress[1].ports[0].portNumber.port: 0 is not a port number"),
        "{e}"
    );

    // BANP actions have no Pass; the decoder names the field.
    let e = err(r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress: [{action: Pass, from: [{namespaces: {}}]}]
"#);
    assert!(e.contains("spec.ingress[0].action"), "{e}");

    let e = err(r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: other}
spec: {subject: {namespaces: {}}}
"#);
    assert!(e.contains("singleton"), "{e}");
}

#[test]
fn contract_and_group_validation() {
    let e = err(r#"
apiVersion: seam.dev/v1alpha1
kind: Contract
metadata: {name: c}
spec:
  consumers: []
  providers: [Bad_Name]
  action: deny
  tier: admin
  subjects: [{filters: [{protocol: ICMP, ports: [1]}, {protocol: TCP, icmpType: 3, portRanges: [{from: 90, to: 80}]}]}]
"#);
    for want in [
        "spec.consumers: must name at least one group",
        "spec.providers[0]",
        "spec.subjects[0].filters[0]: ICMP has no ports",
        "spec.subjects[0].filters[1].icmpType",
        "spec.subjects[0].filters[1].portRanges[0].to",
        "spec.priority: is required for admin-tier contracts",
    ] {
        assert!(e.contains(want), "missing {want:?} in {e}");
    }
    let e = err(r#"
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: g, namespace: x}
spec: {selectors: [{}]}
"#);
    assert!(e.contains("metadata.namespace: must be absent"), "{e}");
    assert!(
        e.contains("spec.selectors[0]: must set at least one"),
        "{e}"
    );
}

#[test]
fn bad_yaml_and_non_mapping_documents() {
    assert!(matches!(
        parse_yaml("a: [1, 2"),
        Err(ParseError::Yaml { .. })
    ));
    assert!(matches!(
        parse_yaml("- 1\n- 2\n"),
        Err(ParseError::Header { .. })
    ));
    assert!(parse_yaml("").unwrap().is_empty());
    assert!(matches!(parse_json("{"), Err(ParseError::Json { .. })));
}
