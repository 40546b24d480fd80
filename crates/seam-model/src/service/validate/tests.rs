//! `validate()` on the stored forms (what `PUT /v1/services/...` and the others take): the
//! checks a manifest cannot reach, the bounds, and paths.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::bounds::{MAX_POOL_PREFIXES, MAX_SLICE_ADDRESSES, MAX_SLICE_BYTES, MAX_SLICE_ENDPOINTS};
use crate::objects::PortProtocol;
use crate::service::*;

fn port(name: Option<&str>, number: u16) -> ServicePort {
    ServicePort {
        name: name.map(str::to_string),
        protocol: PortProtocol::Tcp,
        port: number,
        target_port: None,
        node_port: None,
        app_protocol: None,
    }
}

fn web() -> Service {
    Service {
        name: "web".into(),
        namespace: "shop".into(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        spec: ServiceSpec {
            selector: Some(BTreeMap::from([("app".into(), "web".into())])),
            ports: vec![port(Some("http"), 80)],
            ..ServiceSpec::default()
        },
        status: ServiceStatus::default(),
    }
}

/// The (path, message) pairs of a refusal.
fn problems(r: Result<(), crate::ValidationError>) -> Vec<(String, String)> {
    r.err()
        .map(|e| e.errors.into_iter().map(|f| (f.path, f.message)).collect())
        .unwrap_or_default()
}

fn has(found: &[(String, String)], path: &str, message: &str) -> bool {
    found.iter().any(|(p, m)| p == path && m.contains(message))
}

#[test]
fn a_plain_service_is_valid() {
    assert_eq!(web().validate(), Ok(()));
    let mut lb = web();
    lb.spec.service_type = ServiceType::LoadBalancer;
    lb.spec.external_traffic_policy = TrafficPolicy::Local;
    lb.spec.internal_traffic_policy = TrafficPolicy::Local;
    lb.spec.load_balancer_ip = Some(Ipv4Addr::new(198, 51, 100, 1));
    lb.spec.allocate_load_balancer_node_ports = Some(false);
    lb.spec.ports[0].node_port = Some(30080);
    lb.spec.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: MAX_AFFINITY_TIMEOUT_SECONDS,
    };
    lb.annotations
        .insert(ADDRESS_POOL_ANNOTATION.into(), "public".into());
    assert_eq!(lb.validate(), Ok(()));
    assert_eq!(lb.address_pool(), Some("public"));
    // eTP Local with external IPs on a ClusterIP Service: allowed since Kubernetes 1.28.
    let mut ext = web();
    ext.spec.external_ips = vec![Ipv4Addr::new(192, 0, 2, 7)];
    ext.spec.external_traffic_policy = TrafficPolicy::Local;
    assert_eq!(ext.validate(), Ok(()));
    // Headless without ports.
    let mut headless = web();
    headless.spec.cluster_ip = ClusterIp::Headless;
    headless.spec.ports.clear();
    assert_eq!(headless.validate(), Ok(()));
}

#[test]
fn stored_form_refusals_name_their_path() {
    type Edit = fn(&mut Service);
    let cases: [(Edit, &str, &str); 12] = [
        (
            |s| {
                s.annotations.insert("other/x".into(), "y".into());
            },
            "annotations.\"other/x\"",
            "only the annotation",
        ),
        (
            |s| s.spec.ports[0].name = Some(String::new()),
            "spec.ports[0].name",
            "DNS label",
        ),
        (
            |s| s.spec.ports[0].target_port = Some(TargetPort::Number(0)),
            "spec.ports[0].targetPort",
            "1..=65535",
        ),
        (
            |s| s.spec.ports[0].port = 0,
            "spec.ports[0].port",
            "1..=65535",
        ),
        (
            |s| s.spec.ports[0].app_protocol = Some("not valid!".into()),
            "spec.ports[0].appProtocol",
            "application protocol",
        ),
        (
            |s| {
                s.spec.service_type = ServiceType::NodePort;
                s.spec.ports[0].node_port = Some(0);
            },
            "spec.ports[0].nodePort",
            "1..=65535",
        ),
        (
            |s| s.spec.session_affinity = SessionAffinity::ClientIp { timeout_seconds: 0 },
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            "1..=86400",
        ),
        (
            |s| s.spec.cluster_ip = ClusterIp::Address(Ipv4Addr::new(169, 254, 1, 1)),
            "spec.clusterIP",
            "link-local",
        ),
        (
            |s| {
                s.spec.service_type = ServiceType::LoadBalancer;
                s.spec.load_balancer_ip = Some(Ipv4Addr::BROADCAST);
            },
            "spec.loadBalancerIP",
            "broadcast",
        ),
        (
            |s| s.spec.ports = (1..=101).map(|n| port(Some(&format!("p{n}")), n)).collect(),
            "spec.ports",
            "MAX_SERVICE_PORTS",
        ),
        (
            |s| s.spec.external_ips = (0..=100).map(|n| Ipv4Addr::new(192, 0, 2, n)).collect(),
            "spec.externalIPs",
            "MAX_EXTERNAL_IPS",
        ),
        (
            |s| {
                // Labels of the longest keys and values, and the most ports.
                let prefix = "p".repeat(200);
                s.labels = (0..40)
                    .map(|i| (format!("{prefix}/k{i}"), "v".repeat(63)))
                    .collect();
                s.spec.ports = (1..=100)
                    .map(|n| port(Some(&format!("port-number-{n}")), n))
                    .collect();
            },
            ".",
            "MAX_RECORD_BYTES",
        ),
    ];
    for (edit, path, message) in cases {
        let mut s = web();
        edit(&mut s);
        let found = problems(s.validate());
        assert!(
            has(&found, path, message),
            "want {path}: …{message}… in {found:#?}"
        );
    }
}

fn slice() -> EndpointSlice {
    EndpointSlice {
        name: "web-abc12".into(),
        namespace: "shop".into(),
        service: "web".into(),
        labels: BTreeMap::from([(SERVICE_NAME_LABEL.into(), "web".into())]),
        endpoints: vec![SliceEndpoint {
            addresses: vec![Ipv4Addr::new(10, 0, 0, 1)],
            conditions: EndpointConditions::default(),
            node_name: Some("n1".into()),
            hostname: None,
            zone: None,
            target_ref: None,
        }],
        ports: vec![SlicePort {
            name: Some("http".into()),
            port: 8080,
            protocol: PortProtocol::Tcp,
            app_protocol: None,
        }],
    }
}

#[test]
fn endpoint_slice_bounds_and_label() {
    assert_eq!(slice().validate(), Ok(()));
    let mut s = slice();
    s.labels.insert(SERVICE_NAME_LABEL.into(), "other".into());
    assert!(has(
        &problems(s.validate()),
        "labels.kubernetes.io/service-name",
        "another Service"
    ));

    // Kubernetes' bound: 1000 endpoints per slice.
    let mut s = slice();
    let one = s.endpoints[0].clone();
    s.endpoints = vec![one.clone(); MAX_SLICE_ENDPOINTS];
    assert_eq!(s.validate(), Ok(()));
    s.endpoints.push(one.clone());
    assert!(has(
        &problems(s.validate()),
        "endpoints",
        "MAX_SLICE_ENDPOINTS"
    ));

    let mut s = slice();
    s.endpoints[0].addresses = vec![Ipv4Addr::new(10, 0, 0, 1); MAX_SLICE_ADDRESSES + 1];
    assert!(has(
        &problems(s.validate()),
        "endpoints[0].addresses",
        "MAX_SLICE_ADDRESSES"
    ));

    // A bloated targetRef is caught by the size bound.
    let mut s = slice();
    s.endpoints[0].target_ref =
        Some(serde_json::json!({"kind": "Pod", "name": "x".repeat(MAX_SLICE_BYTES)}));
    assert!(has(&problems(s.validate()), ".", "MAX_SLICE_BYTES"));

    let mut s = slice();
    s.ports[0].app_protocol = Some("kubernetes.io/h2c".into());
    s.name = "Web".into();
    let found = problems(s.validate());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(has(&found, "name", "valid name"));
}

#[test]
fn address_pool_rules() {
    let pool = |prefixes: &[&str]| AddressPool {
        name: "public".into(),
        addresses: prefixes
            .iter()
            .map(|p| p.parse().unwrap_or_else(|e| panic!("{p}: {e}")))
            .collect(),
        auto_assign: true,
    };
    let ok = pool(&["198.51.100.0/28", "203.0.113.0/24", "192.0.2.9/32"]);
    assert_eq!(ok.validate(), Ok(()));
    assert!(ok.contains(Ipv4Addr::new(198, 51, 100, 15)));
    assert!(!ok.contains(Ipv4Addr::new(198, 51, 100, 16)));
    let cases: [(&[&str], &str, &str); 5] = [
        (&[], "addresses", "at least one"),
        (
            &["203.0.113.0/24", "203.0.113.7/32"],
            "addresses[1]",
            "overlaps addresses[0]",
        ),
        (
            &["203.0.113.7/32", "203.0.113.0/24"],
            "addresses[1]",
            "overlaps addresses[0]",
        ),
        (&["127.0.0.0/30"], "addresses[0]", "loopback"),
        (&["224.0.0.0/3"], "addresses[0]", "multicast"),
    ];
    for (prefixes, path, message) in cases {
        let found = problems(pool(prefixes).validate());
        assert!(
            has(&found, path, message),
            "want {path}: …{message}… in {found:#?}"
        );
    }
    let many: Vec<String> = (0..=MAX_POOL_PREFIXES)
        .map(|i| format!("10.{i}.0.0/24"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(has(
        &problems(pool(&many).validate()),
        "addresses",
        "MAX_POOL_PREFIXES"
    ));
}

#[test]
fn names() {
    for ok in ["web", "a", "web-1", "w2"] {
        assert!(is_valid_service_name(ok), "{ok}");
    }
    for bad in ["", "1web", "web.x", "Web", "web-", &"a".repeat(64)] {
        assert!(!is_valid_service_name(bad), "{bad}");
    }
    assert!(is_dns_label("1web"));
    assert!(!is_dns_label("a.b"));
    assert_eq!(special_address(Ipv4Addr::new(10, 0, 0, 1)), None);
    assert!(special_address(Ipv4Addr::UNSPECIFIED).is_some());
}
