//! The cache follows the view at the cost of what changed, and always ends where a pass over
//! everything would.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use seam_model::{
    endpoint_mac, ClusterIp, Endpoint, EndpointKind, EndpointSlice, NodeRole, ObjectKind,
    PortProtocol, Segment, Service, ServicePort, ServiceSpec, ServiceType, SliceEndpoint,
    SlicePort, Snapshot, TrafficPolicy, WatchEvent,
};
use serde_json::json;

use super::*;

fn endpoint(name: &str, ns: &str, last: u8, node: &str, app: &str) -> Endpoint {
    let ip = Ipv4Addr::new(10, 1, 0, last);
    Endpoint {
        name: format!("{ns}/{name}"),
        kind: EndpointKind::Pod,
        namespace: ns.into(),
        segment: "default".into(),
        node: node.into(),
        ip,
        mac: endpoint_mac(ip),
        labels: [("app".to_string(), app.to_string())].into(),
        container_id: None,
        ifname: None,
        ports: Vec::new(),
        conditions: None,
    }
}

fn service(name: &str, app: Option<&str>, last: u8) -> Service {
    Service {
        name: name.into(),
        namespace: "web".into(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        spec: ServiceSpec {
            service_type: ServiceType::NodePort,
            selector: app.map(|a| [("app".to_string(), a.to_string())].into()),
            ports: vec![ServicePort {
                name: None,
                protocol: PortProtocol::Tcp,
                port: 80,
                target_port: None,
                node_port: Some(30000 + u16::from(last)),
                app_protocol: None,
            }],
            cluster_ip: ClusterIp::Address(Ipv4Addr::new(10, 96, 0, last)),
            external_traffic_policy: TrafficPolicy::Local,
            ..ServiceSpec::default()
        },
        status: Default::default(),
    }
}

fn slice(name: &str, service: &str, last: u8) -> EndpointSlice {
    EndpointSlice {
        name: name.into(),
        namespace: "web".into(),
        service: service.into(),
        labels: BTreeMap::new(),
        endpoints: vec![SliceEndpoint {
            addresses: vec![Ipv4Addr::new(192, 0, 2, last)],
            conditions: Default::default(),
            node_name: Some("n1".into()),
            hostname: None,
            zone: None,
            target_ref: None,
        }],
        ports: vec![SlicePort {
            name: None,
            port: 80,
            protocol: PortProtocol::Tcp,
            app_protocol: None,
        }],
    }
}

fn event(kind: ObjectKind, name: &str, object: Option<serde_json::Value>) -> WatchEvent {
    WatchEvent {
        revision: 0,
        kind,
        name: name.into(),
        object,
    }
}

fn put_endpoint(e: &Endpoint) -> WatchEvent {
    event(
        ObjectKind::Endpoint,
        &e.name,
        Some(serde_json::to_value(e).unwrap()),
    )
}

fn put_service(s: &Service) -> WatchEvent {
    event(
        ObjectKind::Service,
        &s.key(),
        Some(serde_json::to_value(s).unwrap()),
    )
}

fn put_slice(s: &EndpointSlice) -> WatchEvent {
    event(
        ObjectKind::EndpointSlice,
        &s.key(),
        Some(serde_json::to_value(s).unwrap()),
    )
}

/// What a cache that starts afresh makes of `view`.
fn from_scratch(view: &ClusterView) -> DesiredServices {
    let mut cache = ServiceCache::new("n1".into(), NodeRole::Worker);
    let (d, _) = cache.sync(view, &ServiceChanges::everything());
    (*d).clone()
}

#[test]
fn passes_over_what_changed_end_where_a_pass_over_everything_does() {
    let mut view = ClusterView::default();
    view.reset(Snapshot {
        segments: vec![Segment {
            name: "default".into(),
            tenant: "default".into(),
            subnet: "10.1.0.0/16".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 1, 0, 1),
            vni: 100,
            block_prefix: 26,
            namespace: None,
            snat: false,
            forwarding: Default::default(),
        }],
        endpoints: vec![
            endpoint("a", "web", 2, "n1", "web"),
            endpoint("b", "web", 3, "n2", "web"),
        ],
        services: (1..=12)
            .map(|i| {
                service(
                    &format!("s{i}"),
                    Some(if i % 2 == 0 { "web" } else { "db" }),
                    i,
                )
            })
            .collect(),
        ..Snapshot::default()
    });
    let mut cache = ServiceCache::new("n1".into(), NodeRole::Worker);
    let steps: Vec<(&str, Vec<WatchEvent>)> = vec![
        ("nothing", vec![]),
        (
            "an endpoint joins one selector and leaves another",
            vec![put_endpoint(&endpoint("a", "web", 2, "n1", "db"))],
        ),
        (
            "a new endpoint, in another namespace too",
            vec![
                put_endpoint(&endpoint("c", "web", 4, "n1", "web")),
                put_endpoint(&endpoint("d", "shop", 5, "n1", "web")),
            ],
        ),
        (
            "an endpoint moves to this node (eTP Local)",
            vec![put_endpoint(&endpoint("b", "web", 3, "n1", "web"))],
        ),
        (
            "an endpoint deleted",
            vec![event(ObjectKind::Endpoint, "web/c", None)],
        ),
        (
            "a Service changes its selector, another is deleted",
            vec![
                put_service(&service("s2", Some("db"), 2)),
                event(ObjectKind::Service, "web/s4", None),
            ],
        ),
        (
            "a Service without selector and its slice",
            vec![
                put_service(&service("ext", None, 40)),
                put_slice(&slice("ext-1", "ext", 9)),
            ],
        ),
        (
            "the slice moves to another Service",
            vec![
                put_service(&service("ext2", None, 41)),
                put_slice(&slice("ext-1", "ext2", 9)),
            ],
        ),
        (
            "the slice deleted",
            vec![event(ObjectKind::EndpointSlice, "web/ext-1", None)],
        ),
        (
            "a Service at another's addresses, first by name",
            vec![put_service(&service("dup", Some("db"), 1))],
        ),
        (
            "it goes: the other's frontends again",
            vec![event(ObjectKind::Service, "web/dup", None)],
        ),
        (
            "many endpoints at once",
            (0..=255)
                .map(|i| put_endpoint(&endpoint(&format!("m{i}"), "web", i, "n3", "web")))
                .chain([put_endpoint(&endpoint("z", "web", 99, "n1", "web"))])
                .collect(),
        ),
        (
            "a segment changes",
            vec![event(
                ObjectKind::Segment,
                "other",
                Some(
                    json!({"name": "other", "tenant": "default", "subnet": "10.2.0.0/16",
                            "gateway": "10.2.0.1", "vni": 200, "blockPrefix": 26}),
                ),
            )],
        ),
    ];
    for (what, events) in steps {
        for e in events {
            view.apply(e);
        }
        let changes = view.take_service_changes();
        let (got, _) = cache.sync(&view, &changes);
        assert_eq!(*got, from_scratch(&view), "after: {what}");
        assert_eq!(cache.model(), &ServiceModel::from_desired(&got), "{what}");
    }
    let d = cache.desired().unwrap();
    assert!(d.segment_subnets.contains(&"10.2.0.0/16".parse().unwrap()));
    assert!(!d.frontends.is_empty());
}

#[test]
fn service_events_leave_policy_alone_and_nothing_changed_is_free() {
    let mut view = ClusterView::default();
    view.reset(Snapshot::default());
    let _ = view.take_firewall_changes();
    let _ = view.take_service_changes();
    view.apply(put_service(&service("s1", Some("web"), 1)));
    view.apply(put_slice(&slice("x", "s1", 1)));
    view.apply(event(
        ObjectKind::NodeLease,
        "gw1",
        Some(json!({"node": "gw1"})),
    ));
    // The firewall compiler has nothing to look at: policy is not recompiled.
    assert!(view.take_firewall_changes().is_empty());
    let changes = view.take_service_changes();
    assert_eq!(changes.services, ["web/s1".to_string()].into());
    assert!(changes.context);

    let mut cache = ServiceCache::new("n1".into(), NodeRole::Worker);
    let (first, changed) = cache.sync(&view, &changes);
    assert!(changed);
    // Nothing changed since: the same result, not even compared.
    let (again, changed) = cache.sync(&view, &view.clone().take_service_changes());
    assert!(!changed);
    assert!(Arc::ptr_eq(&first, &again));
    // An endpoint event is both the firewall's and the Services'.
    view.apply(put_endpoint(&endpoint("a", "web", 2, "n1", "web")));
    assert!(!view.take_firewall_changes().is_empty());
    let changes = view.take_service_changes();
    assert_eq!(changes.endpoints.get("web/a"), Some(&None));
    let (after, changed) = cache.sync(&view, &changes);
    assert!(changed);
    assert_eq!(after.hairpin, [Ipv4Addr::new(10, 1, 0, 2)].into());
}

#[test]
fn a_gateway_serves_the_lb_addresses_it_owns_while_it_holds_a_lease() {
    let lb = Ipv4Addr::new(203, 0, 113, 7);
    let mut s = service("front", Some("web"), 1);
    s.spec.service_type = ServiceType::LoadBalancer;
    s.status.load_balancer.ingress = vec![seam_model::LoadBalancerIngress {
        ip: lb,
        ip_mode: Some("VIP".into()),
    }];
    let gw = seam_model::Node {
        name: "gw1".into(),
        underlay_ip: Ipv4Addr::new(198, 18, 0, 1),
        role: NodeRole::Gateway,
        transit_encap: Default::default(),
        underlay_prefix_len: Some(24),
        underlay_mac: None,
        segment_encap: Default::default(),
    };
    let mut view = ClusterView::default();
    view.reset(Snapshot {
        nodes: vec![gw],
        services: vec![s],
        ..Snapshot::default()
    });
    let mut gateway = ServiceCache::new("gw1".into(), NodeRole::Gateway);
    let mut worker = ServiceCache::new("n1".into(), NodeRole::Worker);
    let every = ServiceChanges::everything();
    // No lease: not live, serves nothing (the LB frontend is there all the same).
    let (d, _) = gateway.sync(&view, &every);
    assert!(d.lb_addresses.is_empty());
    assert!(d.frontends.iter().any(|f| matches!(
        f.key,
        seam_nft::services::FrontendKey::Address { addr, .. } if addr == lb
    )));
    view.apply(event(
        ObjectKind::NodeLease,
        "gw1",
        Some(json!({"node": "gw1"})),
    ));
    let (d, changed) = gateway.sync(&view, &view.clone().take_service_changes());
    assert!(changed);
    assert_eq!(d.lb_addresses, [lb].into());
    let (d, _) = worker.sync(&view, &every);
    assert!(d.lb_addresses.is_empty());
    // The lease gone: the address is no longer served here.
    view.apply(event(ObjectKind::NodeLease, "gw1", None));
    let (d, _) = gateway.sync(&view, &view.clone().take_service_changes());
    assert!(d.lb_addresses.is_empty());
}

/// A small deterministic generator (xorshift64*): the same sequences on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    fn byte(&mut self, n: u8) -> u8 {
        u8::try_from(self.below(u64::from(n))).unwrap()
    }
}

#[test]
fn random_changes_end_where_a_pass_over_everything_does() {
    for seed in 1..=20u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut view = ClusterView::default();
        view.reset(Snapshot {
            segments: vec![Segment {
                name: "default".into(),
                tenant: "default".into(),
                subnet: "10.1.0.0/16".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 1, 0, 1),
                vni: 100,
                block_prefix: 26,
                namespace: None,
                snat: false,
                forwarding: Default::default(),
            }],
            ..Snapshot::default()
        });
        let mut cache = ServiceCache::new("n1".into(), NodeRole::Worker);
        let apps = ["web", "db", "cache"];
        for step in 0..40 {
            for _ in 0..=rng.below(3) {
                let e = match rng.below(6) {
                    0 | 1 => {
                        let n = rng.byte(8);
                        let node = if rng.below(2) == 0 { "n1" } else { "n2" };
                        let app = apps[usize::from(rng.byte(3))];
                        // Two endpoints may share an address: a backend of two frontends.
                        put_endpoint(&endpoint(&format!("e{n}"), "web", 2 + n % 5, node, app))
                    }
                    2 => event(ObjectKind::Endpoint, &format!("web/e{}", rng.byte(8)), None),
                    3 | 4 => {
                        // Services 0..6, two of them at the same address.
                        let n = rng.byte(6);
                        let app = apps[usize::from(rng.byte(3))];
                        put_service(&service(&format!("s{n}"), Some(app), 10 + n % 5))
                    }
                    _ => event(ObjectKind::Service, &format!("web/s{}", rng.byte(6)), None),
                };
                view.apply(e);
            }
            let changes = view.take_service_changes();
            let (got, _) = cache.sync(&view, &changes);
            assert_eq!(*got, from_scratch(&view), "seed {seed} step {step}");
            assert_eq!(
                cache.model(),
                &ServiceModel::from_desired(&got),
                "seed {seed} step {step}"
            );
        }
    }
}

/// Service `s<i>` (ClusterIP `10.96.x.y`, selector `app=a<i>`) and its `per` endpoints on node
/// `n2`, for the timings at scale.
fn scaled(i: u32, per: u32) -> (Service, Vec<Endpoint>) {
    let mut s = service(&format!("s{i}"), Some(&format!("a{i}")), 0);
    s.spec.service_type = ServiceType::ClusterIP;
    s.spec.ports[0].node_port = None;
    s.spec.cluster_ip =
        ClusterIp::Address(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + i));
    let endpoints = (0..per)
        .map(|j| {
            let mut e = endpoint(&format!("e{i}-{j}"), "web", 0, "n2", &format!("a{i}"));
            e.ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 2)) + i * per + j);
            e
        })
        .collect();
    (s, endpoints)
}

#[test]
#[ignore = "timings at 10,000 Services x 10 endpoints (prints; run with --release --nocapture)"]
fn services_at_scale_timings() {
    use std::time::{Duration, Instant};
    let (mut services, mut endpoints) = (Vec::new(), Vec::new());
    for i in 0..10_000 {
        let (s, e) = scaled(i, 10);
        services.push(s);
        endpoints.extend(e);
    }
    let mut view = ClusterView::default();
    view.reset(Snapshot {
        services,
        endpoints,
        ..Snapshot::default()
    });
    let mut cache = ServiceCache::new("n1".into(), NodeRole::Worker);
    let started = Instant::now();
    let _ = view.take_service_changes();
    let (first, _) = cache.sync(&view, &ServiceChanges::everything());
    assert_eq!(first.frontends.len(), 10_000);
    println!("first pass, 10,000 x 10: {:?}", started.elapsed());
    // What the agent keeps: the table last applied (and the result last published).
    let mut applied = seam_nft::table::TableModel {
        services: cache.model().clone(),
        ..Default::default()
    };
    let mut published = first;
    // One pass as the agent makes it: sync, the table with the model, its delta from the last.
    let mut pass = |view: &mut ClusterView, events: Vec<WatchEvent>| -> Duration {
        for e in events {
            view.apply(e);
        }
        let started = Instant::now();
        let changes = view.take_service_changes();
        let (desired, changed) = cache.sync(view, &changes);
        assert!(changed);
        let model = seam_nft::table::TableModel {
            services: cache.model().clone(),
            ..Default::default()
        };
        let d = seam_nft::table::delta(&applied, &model);
        assert!(!d.is_empty());
        applied = model;
        published = desired;
        started.elapsed()
    };
    let (mut adds, mut changes) = (Vec::new(), Vec::new());
    for i in 0..100u32 {
        let (s, e) = scaled(10_000 + i, 10);
        let events = e
            .iter()
            .map(put_endpoint)
            .chain([put_service(&s)])
            .collect();
        adds.push(pass(&mut view, events));
        // One endpoint of an existing Service gets another address.
        let (_, e) = scaled(i * 97, 10);
        let mut moved = e[3].clone();
        moved.ip = Ipv4Addr::new(10, 200, 0, u8::try_from(i).unwrap());
        changes.push(pass(&mut view, vec![put_endpoint(&moved)]));
    }
    assert_eq!(published.frontends.len(), 10_100);
    for (what, mut v) in [
        ("one Service added", adds),
        ("one endpoint changed", changes),
    ] {
        v.sort();
        println!(
            "{what} (sync + model clone + delta): p50 {:?} p99 {:?}",
            v[v.len() / 2],
            v[v.len() * 99 / 100]
        );
    }
}

#[test]
fn external_backends_and_the_node_address_follow_the_view() {
    let mut view = ClusterView::default();
    view.reset(Snapshot {
        services: vec![service("s1", Some("web"), 1)],
        ..Snapshot::default()
    });
    let mut cache = ServiceCache::new("n1".into(), NodeRole::Worker);
    let _ = view.take_service_changes();
    let (d, _) = cache.sync(&view, &ServiceChanges::everything());
    assert_eq!((d.node_address, d.snat_backends.len()), (None, 0));
    let mut server = endpoint("x", "web", 0, "gw1", "web");
    server.kind = EndpointKind::External;
    server.ip = Ipv4Addr::new(203, 0, 113, 5);
    let steps: Vec<(&str, Vec<WatchEvent>)> = vec![
        (
            "an external endpoint becomes a backend, this node is known",
            vec![
                put_endpoint(&server),
                event(
                    ObjectKind::Node,
                    "n1",
                    Some(json!({"name": "n1", "underlayIp": "192.168.0.1", "role": "worker"})),
                ),
            ],
        ),
        (
            "it leaves",
            vec![event(ObjectKind::Endpoint, "web/x", None)],
        ),
    ];
    let mut seen = Vec::new();
    for (what, events) in steps {
        for e in events {
            view.apply(e);
        }
        let changes = view.take_service_changes();
        let (got, changed) = cache.sync(&view, &changes);
        assert!(changed, "{what}");
        assert_eq!(*got, from_scratch(&view), "after: {what}");
        assert_eq!(cache.model(), &ServiceModel::from_desired(&got), "{what}");
        seen.push((got.node_address, got.snat_backends.clone()));
    }
    let node = Some(Ipv4Addr::new(192, 168, 0, 1));
    assert_eq!(
        seen,
        [
            (node, [Ipv4Addr::new(203, 0, 113, 5)].into()),
            (node, BTreeSet::new())
        ]
    );
}
