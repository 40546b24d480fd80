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
