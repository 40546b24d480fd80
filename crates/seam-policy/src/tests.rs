//! Unit tests of the small pieces: defaulting, label syntax, filters.

use super::*;
use crate::error::Problems;
use crate::selector::{check_label_key, check_label_value};

#[test]
fn policy_types_defaulting() {
    let mut np = NetworkPolicy {
        metadata: ObjectMeta::namespaced("x", "p"),
        spec: NetworkPolicySpec::default(),
    };
    assert!(np.isolates(PolicyType::Ingress));
    assert!(!np.isolates(PolicyType::Egress));
    np.spec.egress.push(NetworkPolicyEgressRule::default());
    assert!(np.isolates(PolicyType::Egress));
    np.spec.policy_types = Some(vec![PolicyType::Egress]);
    assert!(!np.isolates(PolicyType::Ingress));
}

#[test]
fn label_syntax() {
    let mut p = Problems::default();
    for good in ["app", "kubernetes.io/metadata.name", "a-b_c.d"] {
        check_label_key(&mut p, "k", good);
    }
    for good in ["", "v1", "a.b-c_d"] {
        check_label_value(&mut p, "v", good);
    }
    assert!(p.finish("T", String::new()).is_ok());
    let mut p = Problems::default();
    check_label_key(&mut p, "k", "-bad");
    check_label_key(&mut p, "k", "Bad.Prefix/x");
    check_label_key(&mut p, "k", "x/");
    check_label_value(&mut p, "v", "trailing-");
    assert_eq!(p.finish("T", String::new()).unwrap_err().errors.len(), 4);
}

#[test]
fn a_label_key_prefix_is_checked_as_kubernetes_checks_a_dns_subdomain() {
    // Kubernetes bounds the whole prefix (253), not each dot-separated part.
    let long_part = "a".repeat(70);
    let good = [
        format!("{long_part}.example.com/app"),
        format!("{long_part}/app"),
        format!("{}/k", "a".repeat(253)),
    ];
    let mut p = Problems::default();
    for key in &good {
        check_label_key(&mut p, "k", key);
    }
    assert!(p.finish("T", String::new()).is_ok());
    let bad = [
        format!("{}/k", "a".repeat(254)),
        "a..b/k".to_string(),
        ".a/k".to_string(),
        "a./k".to_string(),
        "a.-b/k".to_string(),
        "a-.b/k".to_string(),
        "A.b/k".to_string(),
        "/k".to_string(),
        format!("a/{}", "k".repeat(64)),
    ];
    for key in &bad {
        let mut p = Problems::default();
        check_label_key(&mut p, "k", key);
        assert!(p.finish("T", String::new()).is_err(), "{key}");
    }
    // Object names that are subdomains follow the same rule.
    assert!(crate::selector::is_dns_subdomain(&long_part));
    assert!(!crate::meta::is_dns_label(&long_part));
}

#[test]
fn filter_matching() {
    let f = Filter {
        protocol: Protocol::Tcp,
        ports: vec![80],
        port_ranges: vec![PortRange {
            from: 8000,
            to: 8080,
        }],
        icmp_type: None,
    };
    assert!(f.matches(Protocol::Tcp, 80) && f.matches(Protocol::Tcp, 8080));
    assert!(!f.matches(Protocol::Udp, 80) && !f.matches(Protocol::Tcp, 81));
    let any = Filter {
        protocol: Protocol::Udp,
        ports: vec![],
        port_ranges: vec![],
        icmp_type: None,
    };
    assert!(any.matches(Protocol::Udp, 1) && any.matches(Protocol::Udp, 65535));
}

#[test]
fn cnp_protocols_lower_to_anp_ports() {
    let number = |n| CnpPort {
        number: Some(n),
        range: None,
    };
    let tcp = CnpProtocol {
        tcp: Some(CnpProtocolMatch {
            destination_port: Some(number(80)),
        }),
        ..CnpProtocol::default()
    };
    let port = tcp.as_admin_port().unwrap();
    assert_eq!(
        port.port_number,
        Some(AdminPortNumber {
            protocol: Some(Protocol::Tcp),
            port: 80
        })
    );
    let sctp = CnpProtocol {
        sctp: Some(CnpProtocolMatch {
            destination_port: Some(CnpPort {
                number: None,
                range: Some(CnpPortRange { start: 1, end: 9 }),
            }),
        }),
        ..CnpProtocol::default()
    };
    let r = sctp.as_admin_port().unwrap().port_range.unwrap();
    assert_eq!((r.protocol, r.start, r.end), (Some(Protocol::Sctp), 1, 9));
    let named = CnpProtocol {
        destination_named_port: Some("dns".into()),
        ..CnpProtocol::default()
    };
    assert_eq!(
        named.as_admin_port().unwrap().named_port.as_deref(),
        Some("dns")
    );
    // Nothing set, or a protocol without a port: nothing to lower (validation rejects both).
    assert!(CnpProtocol::default().as_admin_port().is_none());
    let bare = CnpProtocol {
        udp: Some(CnpProtocolMatch::default()),
        ..CnpProtocol::default()
    };
    assert!(bare.as_admin_port().is_none());
    assert_eq!(CnpAction::Accept.as_anp_action(), AnpAction::Allow);
    assert_eq!(CnpAction::Pass.as_anp_action(), AnpAction::Pass);
}

#[test]
fn every_kind_is_listed_once_with_its_plural() {
    let plurals: std::collections::BTreeSet<&str> =
        PolicyKind::ALL.iter().map(|k| k.plural()).collect();
    assert_eq!(plurals.len(), PolicyKind::ALL.len());
    for k in PolicyKind::ALL {
        assert_eq!(
            k.plural(),
            format!("{}s", k.as_str().to_ascii_lowercase()).replace("ys", "ies")
        );
        assert_eq!(k.is_namespaced(), k == PolicyKind::NetworkPolicy);
    }
}

#[test]
fn the_wire_form_is_the_stored_form_byte_for_byte_and_carries_its_version() {
    let text = r#"[
      {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
       "metadata": {"name": "db", "namespace": "web", "labels": {"a": "b"}},
       "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 5432}]}]}},
      {"apiVersion": "seam.dev/v1alpha1", "kind": "EndpointGroup",
       "metadata": {"name": "dbs"}, "spec": {"selectors": [{"labels": {"matchLabels": {"app": "db"}}}]}}
    ]"#;
    for object in parse_json(text).unwrap() {
        // What the controller stores (`to_value`) and what a snapshot carries (`Serialize`) are the same bytes.
        let wire = serde_json::to_vec(&object).unwrap();
        assert_eq!(wire, serde_json::to_vec(&object.to_value()).unwrap());
        let back: PolicyObject = serde_json::from_slice(&wire).unwrap();
        assert_eq!(back, object);
    }
    // apiVersion + kind choose the type: another version of a kind is not read as this one.
    let other = r#"{"apiVersion": "networking.k8s.io/v2", "kind": "NetworkPolicy",
                    "metadata": {"name": "p", "namespace": "x"}, "spec": {"podSelector": {}}}"#;
    let err = serde_json::from_str::<PolicyObject>(other).unwrap_err();
    assert!(err.to_string().contains("unsupported object kind"), "{err}");
    // The strict decode refuses unknown fields and invalid values, as the API does.
    let unknown = r#"{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                      "metadata": {"name": "p", "namespace": "x"}, "spec": {"podSelector": {}, "x": 1}}"#;
    assert!(serde_json::from_str::<PolicyObject>(unknown).is_err());
}
