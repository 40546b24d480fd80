//! Table tests of [`super::desired_services`], after the Kubernetes documentation ("Service",
//! "Traffic policies", "terminating endpoints").

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use seam_model::{
    Backend, BackendState, ClusterIp, LoadBalancerIngress, PortProtocol, ResolvedPort, Segment,
    Service, ServicePort, ServiceSpec, ServiceStatus, ServiceType, SessionAffinity, TrafficPolicy,
};

use super::*;

const ME: &str = "n1";
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, last)
}

const READY: BackendState = BackendState {
    ready: true,
    serving: true,
    terminating: false,
};
const NOT_READY: BackendState = BackendState {
    ready: false,
    serving: false,
    terminating: false,
};
/// Terminating, still serving (its pod drains).
const DRAINING: BackendState = BackendState {
    ready: false,
    serving: true,
    terminating: true,
};
/// Terminating and no longer serving.
const GONE: BackendState = BackendState {
    ready: false,
    serving: false,
    terminating: true,
};

fn backend(last: u8, port: u16, node: Option<&str>, state: BackendState) -> Backend {
    Backend {
        ip: ip(last),
        port,
        node: node.map(str::to_string),
        endpoint: None,
        state,
    }
}

fn port(
    name: Option<&str>,
    protocol: PortProtocol,
    port: u16,
    node_port: Option<u16>,
) -> ServicePort {
    ServicePort {
        name: name.map(str::to_string),
        protocol,
        port,
        target_port: None,
        node_port,
        app_protocol: None,
    }
}

fn tcp(p: u16) -> ServicePort {
    port(None, PortProtocol::Tcp, p, None)
}

fn service(service_type: ServiceType) -> Service {
    Service {
        name: "web".into(),
        namespace: "shop".into(),
        labels: Default::default(),
        annotations: Default::default(),
        spec: ServiceSpec {
            service_type,
            selector: Some([("app".to_string(), "web".to_string())].into()),
            ports: vec![tcp(80)],
            cluster_ip: ClusterIp::Address(CLUSTER_IP),
            ..ServiceSpec::default()
        },
        status: ServiceStatus::default(),
    }
}

fn resolved(port: ServicePort, backends: Vec<Backend>) -> ResolvedPort {
    ResolvedPort { port, backends }
}

fn addr(a: Ipv4Addr, p: u16) -> FrontendKey {
    FrontendKey::Address {
        addr: a,
        protocol: PortProtocol::Tcp,
        port: p,
    }
}

fn node_port(p: u16) -> FrontendKey {
    FrontendKey::NodePort {
        protocol: PortProtocol::Tcp,
        port: p,
    }
}

/// A frontend as (key, backends' last octets and ports, masquerade).
type Brief = (FrontendKey, Vec<(u8, u16)>, bool);

/// The frontends of one Service on [`ME`], in brief.
fn frontends(service: &Service, ports: &[ResolvedPort]) -> Vec<Brief> {
    let d = desired_services(
        ME,
        [(service, ports)],
        [],
        &BTreeSet::new(),
        &BTreeSet::new(),
        &BTreeSet::new(),
        None,
    );
    d.frontends
        .into_iter()
        .map(|f| {
            let backends = f
                .backends
                .iter()
                .map(|(a, p)| (a.octets()[3], *p))
                .collect();
            (f.key, backends, f.masquerade_outside)
        })
        .collect()
}

/// Two backends here, two on n2, one of each not ready.
fn mixed() -> Vec<Backend> {
    vec![
        backend(1, 8080, Some(ME), READY),
        backend(2, 8080, Some(ME), NOT_READY),
        backend(3, 8080, Some("n2"), READY),
        backend(4, 8080, Some("n2"), NOT_READY),
    ]
}

#[test]
fn a_cluster_ip_service_uses_the_ready_backends_of_every_node() {
    let s = service(ServiceType::ClusterIP);
    let got = frontends(&s, &[resolved(tcp(80), mixed())]);
    assert_eq!(
        got,
        vec![(addr(CLUSTER_IP, 80), vec![(1, 8080), (3, 8080)], false)]
    );
}

#[test]
fn backend_conditions_decide_as_kubernetes_does() {
    // (backends, publishNotReadyAddresses, expected last octets)
    let cases: Vec<(&str, Vec<Backend>, bool, Vec<u8>)> = vec![
        (
            "ready ones only, terminating ones left out while any is ready",
            vec![
                backend(1, 80, None, READY),
                backend(2, 80, None, DRAINING),
                backend(3, 80, None, NOT_READY),
            ],
            false,
            vec![1],
        ),
        (
            "nothing ready: the serving terminating ones",
            vec![
                backend(1, 80, None, NOT_READY),
                backend(2, 80, None, DRAINING),
                backend(3, 80, None, GONE),
                backend(4, 80, None, DRAINING),
            ],
            false,
            vec![2, 4],
        ),
        (
            "nothing ready nor serving: none, connections refused",
            vec![backend(1, 80, None, NOT_READY), backend(2, 80, None, GONE)],
            false,
            vec![],
        ),
        (
            "publishNotReadyAddresses: not-ready ones are used as ready",
            vec![backend(1, 80, None, READY), backend(3, 80, None, NOT_READY)],
            true,
            vec![1, 3],
        ),
        ("no backends at all", vec![], false, vec![]),
    ];
    for (what, backends, publish, want) in cases {
        let mut s = service(ServiceType::ClusterIP);
        s.spec.publish_not_ready_addresses = publish;
        let got = frontends(&s, &[resolved(tcp(80), backends)]);
        let got: Vec<u8> = got[0].1.iter().map(|(o, _)| *o).collect();
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn traffic_policies_pick_the_backends_of_each_frontend() {
    use TrafficPolicy::{Cluster, Local};
    let lb = Ipv4Addr::new(203, 0, 113, 7);
    let external = Ipv4Addr::new(198, 51, 100, 9);
    let all = vec![(1, 8080), (3, 8080)];
    let here = vec![(1, 8080)];
    // (internal, external) → the ClusterIP's, the external IP's, the LB address's and the
    // NodePort's backends, and whether external and NodePort traffic from outside is masqueraded.
    type Row = (TrafficPolicy, TrafficPolicy, [Vec<(u8, u16)>; 4], bool);
    let cases: Vec<Row> = vec![
        (
            Cluster,
            Cluster,
            [all.clone(), all.clone(), all.clone(), all.clone()],
            true,
        ),
        (
            Local,
            Cluster,
            [here.clone(), all.clone(), all.clone(), all.clone()],
            true,
        ),
        // eTP Local: external IPs and NodePorts keep the client's address and use this node's
        // backends only; the LB address keeps them all (the gateway path keeps the address).
        (
            Cluster,
            Local,
            [all.clone(), here.clone(), all.clone(), here.clone()],
            false,
        ),
        (
            Local,
            Local,
            [here.clone(), here.clone(), all.clone(), here.clone()],
            false,
        ),
    ];
    for (internal, ext, [cluster_ip, external_ip, lb_address, nodeport], masquerade) in cases {
        let mut s = service(ServiceType::LoadBalancer);
        s.spec.internal_traffic_policy = internal;
        s.spec.external_traffic_policy = ext;
        s.spec.external_ips = vec![external];
        s.status.load_balancer.ingress = vec![LoadBalancerIngress {
            ip: lb,
            ip_mode: Some("VIP".into()),
        }];
        let p = port(None, PortProtocol::Tcp, 80, Some(30080));
        let got = frontends(&s, &[resolved(p, mixed())]);
        // Sorted by key: addresses (10.96…, 198.51…, 203.0…), then the NodePort.
        assert_eq!(
            got,
            vec![
                (addr(CLUSTER_IP, 80), cluster_ip, false),
                (addr(external, 80), external_ip, masquerade),
                (addr(lb, 80), lb_address, false),
                (node_port(30080), nodeport, masquerade),
            ],
            "iTP {internal:?}, eTP {ext:?}"
        );
    }
}

#[test]
fn local_traffic_policy_falls_back_to_local_terminating_backends_only() {
    let mut s = service(ServiceType::NodePort);
    s.spec.external_traffic_policy = TrafficPolicy::Local;
    s.spec.internal_traffic_policy = TrafficPolicy::Local;
    let backends = vec![
        backend(1, 80, Some(ME), DRAINING),
        backend(2, 80, Some(ME), GONE),
        backend(3, 80, Some("n2"), READY),
    ];
    let p = port(None, PortProtocol::Tcp, 80, Some(30080));
    let got = frontends(&s, &[resolved(p.clone(), backends)]);
    assert_eq!(
        got,
        vec![
            (addr(CLUSTER_IP, 80), vec![(1, 80)], false),
            (node_port(30080), vec![(1, 80)], false),
        ]
    );
    // No backend here at all: both frontends refuse (the remote ready one is not used), and a
    // backend whose node is unknown is not local.
    let backends = vec![
        backend(3, 80, Some("n2"), READY),
        backend(4, 80, None, READY),
    ];
    let got = frontends(&s, &[resolved(p, backends)]);
    assert_eq!(
        got,
        vec![
            (addr(CLUSTER_IP, 80), vec![], false),
            (node_port(30080), vec![], false),
        ]
    );
}

#[test]
fn which_frontends_each_type_gets() {
    let lb = Ipv4Addr::new(203, 0, 113, 7);
    let ingress = vec![LoadBalancerIngress {
        ip: lb,
        ip_mode: None,
    }];
    let p = port(Some("http"), PortProtocol::Tcp, 80, Some(30080));
    let keys = |s: &Service| -> Vec<FrontendKey> {
        frontends(s, &[resolved(p.clone(), mixed())])
            .into_iter()
            .map(|(k, _, _)| k)
            .collect()
    };
    // A ClusterIP Service with a stale nodePort and an LB address in its status gets neither.
    let mut s = service(ServiceType::ClusterIP);
    s.status.load_balancer.ingress = ingress.clone();
    assert_eq!(keys(&s), vec![addr(CLUSTER_IP, 80)]);
    let s = service(ServiceType::NodePort);
    assert_eq!(keys(&s), vec![addr(CLUSTER_IP, 80), node_port(30080)]);
    // A LoadBalancer whose address is pending: ClusterIP and NodePort only.
    let mut s = service(ServiceType::LoadBalancer);
    assert_eq!(keys(&s), vec![addr(CLUSTER_IP, 80), node_port(30080)]);
    s.status.load_balancer.ingress = ingress;
    assert_eq!(
        keys(&s),
        vec![addr(CLUSTER_IP, 80), addr(lb, 80), node_port(30080)]
    );
    // Headless, or no ClusterIP allocated yet: nothing at all.
    for cluster_ip in [ClusterIp::Headless, ClusterIp::Auto] {
        let mut s = service(ServiceType::NodePort);
        s.spec.cluster_ip = cluster_ip;
        assert_eq!(keys(&s), vec![], "{cluster_ip:?}");
    }
    // allocateLoadBalancerNodePorts: false leaves the port without a nodePort.
    let s = service(ServiceType::LoadBalancer);
    let got = frontends(&s, &[resolved(tcp(80), mixed())]);
    assert_eq!(got.len(), 1);
}

#[test]
fn several_ports_and_protocols_each_get_their_frontends_named_after_the_port() {
    let mut s = service(ServiceType::NodePort);
    s.spec.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 600,
    };
    let ports = [
        resolved(
            port(Some("dns"), PortProtocol::Udp, 53, Some(30053)),
            vec![backend(1, 5353, None, READY)],
        ),
        resolved(
            port(Some("dns-tcp"), PortProtocol::Tcp, 53, Some(30054)),
            vec![backend(1, 5353, None, READY), backend(2, 5354, None, READY)],
        ),
        resolved(
            port(Some("assoc"), PortProtocol::Sctp, 9999, None),
            vec![backend(3, 9999, None, READY)],
        ),
    ];
    let d = desired_services(
        ME,
        [(&s, &ports[..])],
        [],
        &BTreeSet::new(),
        &BTreeSet::new(),
        &BTreeSet::new(),
        None,
    );
    let got: Vec<(FrontendKey, &str, Option<u32>)> = d
        .frontends
        .iter()
        .map(|f| (f.key, f.service.as_str(), f.affinity_timeout))
        .collect();
    let a = |protocol, port| FrontendKey::Address {
        addr: CLUSTER_IP,
        protocol,
        port,
    };
    assert_eq!(
        got,
        vec![
            (a(PortProtocol::Tcp, 53), "shop/web:dns-tcp", Some(600)),
            (a(PortProtocol::Udp, 53), "shop/web:dns", Some(600)),
            (a(PortProtocol::Sctp, 9999), "shop/web:assoc", Some(600)),
            (
                FrontendKey::NodePort {
                    protocol: PortProtocol::Tcp,
                    port: 30054
                },
                "shop/web:dns-tcp",
                Some(600)
            ),
            (
                FrontendKey::NodePort {
                    protocol: PortProtocol::Udp,
                    port: 30053
                },
                "shop/web:dns",
                Some(600)
            ),
        ]
    );
    // A backend's resolved target port is its own (a named targetPort may differ per backend).
    assert_eq!(d.frontends[0].backends, vec![(ip(1), 5353), (ip(2), 5354)]);
    // An unnamed port is named by its number; no affinity, no timeout.
    let s = service(ServiceType::ClusterIP);
    let ports = [resolved(tcp(80), vec![])];
    let d = desired_services(
        ME,
        [(&s, &ports[..])],
        [],
        &BTreeSet::new(),
        &BTreeSet::new(),
        &BTreeSet::new(),
        None,
    );
    assert_eq!(d.frontends[0].service, "shop/web:80");
    assert_eq!(d.frontends[0].affinity_timeout, None);
}

#[test]
fn backends_are_sorted_and_repeats_merged() {
    let s = service(ServiceType::ClusterIP);
    let backends = vec![
        backend(9, 80, None, READY),
        backend(2, 81, None, READY),
        backend(2, 80, None, READY),
        backend(9, 80, Some("n2"), READY),
    ];
    let got = frontends(&s, &[resolved(tcp(80), backends)]);
    assert_eq!(got[0].1, vec![(2, 80), (2, 81), (9, 80)]);
}

#[test]
fn snat_backends_hold_the_external_endpoints_that_are_backends() {
    let s = service(ServiceType::ClusterIP);
    let web = [resolved(
        tcp(80),
        vec![
            backend(1, 80, None, READY),
            // External but not ready: no frontend uses it.
            backend(2, 80, None, NOT_READY),
            backend(3, 80, Some("n2"), READY),
        ],
    )];
    let external: BTreeSet<Ipv4Addr> = [ip(1), ip(2), ip(7)].into();
    let node = Some(Ipv4Addr::new(192, 168, 0, 1));
    let d = desired_services(
        ME,
        [(&s, &web[..])],
        [],
        &BTreeSet::new(),
        &BTreeSet::new(),
        &external,
        node,
    );
    assert_eq!(d.snat_backends, [ip(1)].into());
    assert_eq!(d.node_address, node);
    assert!(d.hairpin.is_empty());
}

#[test]
fn hairpin_holds_the_local_endpoints_that_are_backends() {
    let s = service(ServiceType::ClusterIP);
    let mut other = service(ServiceType::ClusterIP);
    other.name = "api".into();
    other.spec.cluster_ip = ClusterIp::Address(Ipv4Addr::new(10, 96, 0, 11));
    let web = [resolved(
        tcp(80),
        vec![
            backend(1, 80, Some(ME), READY),
            // Local but not ready: no frontend uses it, no hairpin.
            backend(2, 80, Some(ME), NOT_READY),
            backend(3, 80, Some("n2"), READY),
        ],
    )];
    // An EndpointSlice backend without nodeName at a local endpoint's address: hairpin too.
    let api = [resolved(tcp(443), vec![backend(5, 8443, None, READY)])];
    let local: BTreeSet<Ipv4Addr> = [ip(1), ip(2), ip(5), ip(6)].into();
    let d = desired_services(
        ME,
        [(&s, &web[..]), (&other, &api[..])],
        [],
        &local,
        &BTreeSet::new(),
        &BTreeSet::new(),
        None,
    );
    assert_eq!(d.hairpin, [ip(1), ip(5)].into());
}

#[test]
fn the_first_service_keeps_a_frontend_two_claim() {
    let external = Ipv4Addr::new(198, 51, 100, 9);
    let mut a = service(ServiceType::ClusterIP);
    a.spec.external_ips = vec![external];
    let mut b = a.clone();
    b.name = "zzz".into();
    b.spec.cluster_ip = ClusterIp::Address(Ipv4Addr::new(10, 96, 0, 99));
    let pa = [resolved(tcp(80), vec![backend(1, 80, None, READY)])];
    let pb = [resolved(tcp(80), vec![backend(2, 80, None, READY)])];
    let d = desired_services(
        ME,
        [(&a, &pa[..]), (&b, &pb[..])],
        [],
        &BTreeSet::new(),
        &BTreeSet::new(),
        &BTreeSet::new(),
        None,
    );
    let got: Vec<(FrontendKey, &str)> = d
        .frontends
        .iter()
        .map(|f| (f.key, f.service.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (addr(CLUSTER_IP, 80), "shop/web:80"),
            (addr(Ipv4Addr::new(10, 96, 0, 99), 80), "shop/zzz:80"),
            (addr(external, 80), "shop/web:80"),
        ]
    );
}

#[test]
fn segments_and_served_lb_addresses_pass_through() {
    let segment = |name: &str, subnet: &str| Segment {
        name: name.into(),
        tenant: "default".into(),
        subnet: subnet.parse().unwrap(),
        gateway: Ipv4Addr::new(10, 1, 0, 1),
        vni: 100,
        block_prefix: 26,
        namespace: None,
        snat: false,
        forwarding: Default::default(),
    };
    let segments = [segment("a", "10.1.0.0/16"), segment("b", "10.2.0.0/16")];
    let served: BTreeSet<Ipv4Addr> = [Ipv4Addr::new(203, 0, 113, 7)].into();
    let d = desired_services(
        ME,
        [],
        &segments,
        &BTreeSet::new(),
        &served,
        &BTreeSet::new(),
        None,
    );
    assert!(d.frontends.is_empty());
    assert_eq!(
        d.segment_subnets,
        [
            "10.1.0.0/16".parse().unwrap(),
            "10.2.0.0/16".parse().unwrap()
        ]
        .into()
    );
    assert_eq!(d.lb_addresses, served);
}

#[test]
fn assembling_cached_frontends_equals_computing_the_whole() {
    let mut a = service(ServiceType::NodePort);
    a.spec.external_traffic_policy = TrafficPolicy::Local;
    let mut b = service(ServiceType::ClusterIP);
    b.name = "api".into();
    b.spec.cluster_ip = ClusterIp::Address(Ipv4Addr::new(10, 96, 0, 3));
    let pa = [resolved(
        port(None, PortProtocol::Tcp, 80, Some(30001)),
        mixed(),
    )];
    let pb = [resolved(tcp(443), mixed())];
    let local = [ip(1)].into();
    let whole = desired_services(
        ME,
        [(&a, &pa[..]), (&b, &pb[..])],
        [],
        &local,
        &BTreeSet::new(),
        &BTreeSet::new(),
        None,
    );
    let mut parts = service_frontends(ME, &b, &pb);
    parts.extend(service_frontends(ME, &a, &pa));
    assert_eq!(assemble(&parts, [], &local, &BTreeSet::new()), whole);
}
