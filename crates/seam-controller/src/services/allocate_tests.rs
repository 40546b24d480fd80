use std::collections::BTreeMap;

use seam_model::{ServicePort, ServiceSpec};

use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn config() -> ControllerConfig {
    ControllerConfig {
        service_cidr: "10.96.0.0/29".parse().unwrap(),
        node_port_range: crate::config::PortRange {
            first: 30000,
            last: 30002,
        },
        ..ControllerConfig::default()
    }
}

fn service(name: &str, service_type: ServiceType) -> Service {
    Service {
        name: name.to_string(),
        namespace: "web".to_string(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        spec: ServiceSpec {
            service_type,
            selector: Some([("app".to_string(), name.to_string())].into()),
            ports: vec![ServicePort {
                name: None,
                protocol: PortProtocol::Tcp,
                port: 80,
                target_port: None,
                node_port: None,
                app_protocol: None,
            }],
            ..ServiceSpec::default()
        },
        status: ServiceStatus::default(),
    }
}

fn pool(name: &str, cidr: &str, auto_assign: bool) -> AddressPool {
    AddressPool {
        name: name.to_string(),
        addresses: vec![cidr.parse().unwrap()],
        auto_assign,
    }
}

/// Plans against `taken`, as a txn would leave it (fresh keys get a revision).
fn check(
    taken: &mut Taken,
    pools: &[AddressPool],
    reserved: &Reserved,
    current: Option<&Service>,
    wanted: Service,
) -> Result<Plan> {
    let config = config();
    let inputs = Inputs {
        config: &config,
        pools,
        reserved,
    };
    let plan = plan(&inputs, taken, current, wanted)?;
    for held in taken.keys.values_mut() {
        held.revision.get_or_insert(1);
    }
    Ok(plan)
}

fn cluster_ip(s: &Service) -> Ipv4Addr {
    match s.spec.cluster_ip {
        ClusterIp::Address(ip) => ip,
        other => panic!("no ClusterIP: {other:?}"),
    }
}

#[test]
fn cluster_ips_are_unique_never_network_or_broadcast_and_run_out() {
    let mut taken = Taken::default();
    let reserved = Reserved::default();
    let mut seen = BTreeSet::new();
    // A /29 has 6 host addresses.
    for i in 0..6 {
        let plan = check(
            &mut taken,
            &[],
            &reserved,
            None,
            service(&format!("s{i}"), ServiceType::ClusterIP),
        )
        .unwrap();
        let ip = cluster_ip(&plan.service);
        assert!(ip != "10.96.0.0".parse::<Ipv4Addr>().unwrap() && ip != ip_of("10.96.0.7"));
        assert!(seen.insert(ip), "{ip} twice");
        assert_eq!(plan.changes, vec![Change::Take(cluster_ip_key(ip))]);
    }
    let err = check(
        &mut taken,
        &[],
        &reserved,
        None,
        service("s6", ServiceType::ClusterIP),
    )
    .unwrap_err();
    assert_eq!(err.reason(), "Exhausted", "{err}");
}

fn ip_of(s: &str) -> Ipv4Addr {
    ip(s)
}

#[test]
fn a_requested_cluster_ip_is_honoured_or_refused_with_its_reason() {
    let mut taken = Taken::default();
    let reserved = Reserved {
        nodes: vec![("n1".to_string(), ip("10.96.0.3"))],
        ..Reserved::default()
    };
    let mut a = service("a", ServiceType::ClusterIP);
    a.spec.cluster_ip = ClusterIp::Address(ip("10.96.0.2"));
    let plan = check(&mut taken, &[], &reserved, None, a.clone()).unwrap();
    assert_eq!(cluster_ip(&plan.service), ip("10.96.0.2"));

    // Held by another Service: 409 naming it.
    let mut b = service("b", ServiceType::ClusterIP);
    b.spec.cluster_ip = ClusterIp::Address(ip("10.96.0.2"));
    let err = check(&mut taken, &[], &reserved, None, b.clone()).unwrap_err();
    assert_eq!(err.status(), 409);
    assert!(err.message().contains("\"web/a\""), "{}", err.message());

    for (asked, says) in [
        ("10.97.0.1", "outside the service range"),
        ("10.96.0.7", "not a host address"),
        ("10.96.0.3", "underlay address of node \"n1\""),
    ] {
        b.spec.cluster_ip = ClusterIp::Address(ip(asked));
        let err = check(&mut taken, &[], &reserved, None, b.clone()).unwrap_err();
        assert_eq!(err.status(), 400, "{asked}");
        assert!(
            err.message().contains("spec.clusterIP"),
            "{}",
            err.message()
        );
        assert!(err.message().contains(says), "{}", err.message());
    }
}

#[test]
fn an_update_keeps_its_allocations_and_the_cluster_ip_is_immutable() {
    let mut taken = Taken::default();
    let reserved = Reserved::default();
    let first = check(
        &mut taken,
        &[],
        &reserved,
        None,
        service("a", ServiceType::NodePort),
    )
    .unwrap();
    let node_port = first.service.spec.ports[0].node_port.unwrap();
    assert!((30000..=30002).contains(&node_port));
    // The same Service sent again without the allocated values keeps them.
    let again = check(
        &mut taken,
        &[],
        &reserved,
        Some(&first.service),
        service("a", ServiceType::NodePort),
    )
    .unwrap();
    assert_eq!(again.service, first.service);
    assert!(again.changes.iter().all(|c| matches!(c, Change::Keep(..))));

    let mut moved = first.service.clone();
    moved.spec.cluster_ip = ClusterIp::Address(ip("10.96.0.1"));
    if cluster_ip(&first.service) != ip("10.96.0.1") {
        let err = check(&mut taken, &[], &reserved, Some(&first.service), moved).unwrap_err();
        assert!(err.message().contains("immutable"), "{}", err.message());
    }

    // Back to ClusterIP: the node port is freed.
    let back = check(
        &mut taken,
        &[],
        &reserved,
        Some(&first.service),
        service("a", ServiceType::ClusterIP),
    )
    .unwrap();
    assert_eq!(back.service.spec.ports[0].node_port, None);
    assert!(back.changes.contains(&Change::Free(
        node_port_key(PortProtocol::Tcp, node_port),
        1
    )));
}

#[test]
fn a_change_to_cluster_ip_drops_the_node_ports_it_carries_over() {
    let mut taken = Taken::default();
    let reserved = Reserved::default();
    let mut first = service("a", ServiceType::LoadBalancer);
    first.spec.ports.push(ServicePort {
        port: 81,
        ..first.spec.ports[0].clone()
    });
    let first = check(&mut taken, &[], &reserved, None, first).unwrap();
    let held: Vec<u16> = first
        .service
        .spec
        .ports
        .iter()
        .filter_map(|p| p.node_port)
        .collect();
    assert_eq!(held.len(), 2);

    // The stored Service sent back with only its type changed (`kubectl edit`, an apply of
    // what `seam get -o yaml` printed): the node ports go, and their keys are freed in the
    // same transaction.
    let mut edited = first.service.clone();
    edited.spec.service_type = ServiceType::ClusterIP;
    let mut refused = edited.clone();
    let plan = check(&mut taken, &[], &reserved, Some(&first.service), edited).unwrap();
    assert!(plan
        .service
        .spec
        .ports
        .iter()
        .all(|p| p.node_port.is_none()));
    for port in held {
        assert!(
            plan.changes
                .contains(&Change::Free(node_port_key(PortProtocol::Tcp, port), 1)),
            "{port} not freed: {:?}",
            plan.changes
        );
    }

    // A node port the Service did not hold is refused on a ClusterIP Service.
    taken = Taken::default();
    let first = check(&mut taken, &[], &reserved, None, first.service).unwrap();
    let unheld = (30000..=30002)
        .find(|p| {
            !first
                .service
                .spec
                .ports
                .iter()
                .any(|o| o.node_port == Some(*p))
        })
        .unwrap();
    refused.spec.ports[1].node_port = Some(unheld);
    let err = check(&mut taken, &[], &reserved, Some(&first.service), refused).unwrap_err();
    assert!(
        err.message().contains("spec.ports[1].nodePort"),
        "{}",
        err.message()
    );
}

#[test]
fn node_ports_requested_outside_the_range_or_taken_are_refused() {
    let mut taken = Taken::default();
    let reserved = Reserved::default();
    let mut a = service("a", ServiceType::NodePort);
    a.spec.ports[0].node_port = Some(30001);
    check(&mut taken, &[], &reserved, None, a).unwrap();
    let mut b = service("b", ServiceType::NodePort);
    b.spec.ports[0].node_port = Some(30001);
    let err = check(&mut taken, &[], &reserved, None, b.clone()).unwrap_err();
    assert_eq!(err.status(), 409);
    assert!(
        err.message().contains("nodePort 30001/TCP"),
        "{}",
        err.message()
    );
    // The same port over UDP is another allocation.
    b.spec.ports[0].protocol = PortProtocol::Udp;
    check(&mut taken, &[], &reserved, None, b.clone()).unwrap();
    b.spec.ports[0].node_port = Some(8080);
    let err = check(&mut taken, &[], &reserved, None, b).unwrap_err();
    assert!(
        err.message().contains("spec.ports[0].nodePort"),
        "{}",
        err.message()
    );
    // A LoadBalancer without node ports gets none.
    let mut c = service("c", ServiceType::LoadBalancer);
    c.spec.allocate_load_balancer_node_ports = Some(false);
    let plan = check(&mut taken, &[], &reserved, None, c).unwrap();
    assert_eq!(plan.service.spec.ports[0].node_port, None);
}

#[test]
fn load_balancer_addresses_come_from_pools_or_leave_a_condition() {
    // Without node ports or ClusterIPs: the test's ranges are small.
    let service = |name: &str, t| {
        let mut s = service(name, t);
        s.spec.allocate_load_balancer_node_ports = Some(false);
        s.spec.cluster_ip = ClusterIp::Headless;
        s
    };
    let mut taken = Taken::default();
    let reserved = Reserved::default();
    let mut lb = service("a", ServiceType::LoadBalancer);
    lb.spec.allocate_load_balancer_node_ports = Some(false);

    // No pool at all: stored pending, with the reason.
    let plan = check(&mut taken, &[], &reserved, None, lb.clone()).unwrap();
    assert!(plan.service.status.load_balancer.ingress.is_empty());
    assert_eq!(plan.service.status.conditions[0].reason, POOL_NOT_FOUND);

    // Auto-assign pools in name order, lowest address first.
    let pools = [
        pool("b-pool", "192.0.2.8/31", true),
        pool("a-pool", "192.0.2.0/31", true),
        pool("manual", "192.0.2.16/30", false),
    ];
    let plan = check(&mut taken, &pools, &reserved, None, lb.clone()).unwrap();
    let ingress = &plan.service.status.load_balancer.ingress;
    assert_eq!(ingress[0].ip, ip("192.0.2.0"));
    assert_eq!(ingress[0].ip_mode.as_deref(), Some("VIP"));
    assert!(plan.service.status.conditions.is_empty());

    // The named pool only; a missing one is a condition.
    let mut named = service("n", ServiceType::LoadBalancer);
    named
        .annotations
        .insert(ADDRESS_POOL_ANNOTATION.to_string(), "manual".to_string());
    let plan = check(&mut taken, &pools, &reserved, None, named.clone()).unwrap();
    assert_eq!(
        plan.service.status.load_balancer.ingress[0].ip,
        ip("192.0.2.16")
    );
    named
        .annotations
        .insert(ADDRESS_POOL_ANNOTATION.to_string(), "nope".to_string());
    let plan = check(&mut taken, &pools, &reserved, None, named).unwrap();
    assert_eq!(plan.service.status.conditions[0].reason, POOL_NOT_FOUND);

    // Three more take the rest of the auto pools, then they are exhausted.
    for name in ["b", "c", "d"] {
        let plan = check(
            &mut taken,
            &pools,
            &reserved,
            None,
            service(name, ServiceType::LoadBalancer),
        )
        .unwrap();
        assert_eq!(plan.service.status.load_balancer.ingress.len(), 1);
    }
    let plan = check(
        &mut taken,
        &pools,
        &reserved,
        None,
        service("e", ServiceType::LoadBalancer),
    )
    .unwrap();
    let condition = &plan.service.status.conditions[0];
    assert_eq!(
        (condition.condition_type.as_str(), condition.status.as_str()),
        (ADDRESS_ALLOCATED, "False")
    );
    assert_eq!(condition.reason, POOL_EXHAUSTED);

    // A requested address: honoured, or taken (409), or outside the pools (a condition).
    let mut asked = service("f", ServiceType::LoadBalancer);
    asked.spec.load_balancer_ip = Some(ip("192.0.2.0"));
    let err = check(&mut taken, &pools, &reserved, None, asked.clone()).unwrap_err();
    assert!(err.message().contains("\"web/a\""), "{}", err.message());
    asked.spec.load_balancer_ip = Some(ip("198.51.100.1"));
    let plan = check(&mut taken, &pools, &reserved, None, asked).unwrap();
    assert_eq!(
        plan.service.status.conditions[0].reason,
        ADDRESS_NOT_IN_POOL
    );
}

#[test]
fn addresses_of_nodes_endpoints_and_segments_are_never_given() {
    let mut taken = Taken::default();
    let reserved = Reserved {
        nodes: vec![("gw".to_string(), ip("192.0.2.0"))],
        endpoints: vec![("web/bm1".to_string(), ip("192.0.2.1"))],
        segments: vec![("s".to_string(), "10.1.0.0/24".parse().unwrap())],
        pool: Some("10.240.0.0/12".parse().unwrap()),
    };
    let pools = [pool("p", "192.0.2.0/30", true)];
    let plan = check(
        &mut taken,
        &pools,
        &reserved,
        None,
        service("a", ServiceType::LoadBalancer),
    )
    .unwrap();
    assert_eq!(
        plan.service.status.load_balancer.ingress[0].ip,
        ip("192.0.2.2")
    );
    let mut external = service("b", ServiceType::ClusterIP);
    external.spec.external_ips = vec![ip("10.1.0.5"), ip("10.240.0.9")];
    let err = check(&mut taken, &pools, &reserved, None, external).unwrap_err();
    let message = err.message();
    assert!(message.contains("spec.externalIPs[0]"), "{message}");
    assert!(message.contains("segment \"s\""), "{message}");
    assert!(message.contains("spec.externalIPs[1]"), "{message}");
    assert!(reserved
        .net_collision("10.1.0.128/25".parse().unwrap())
        .is_some());
    assert!(reserved
        .net_collision("10.0.0.0/8".parse().unwrap())
        .is_some());
    // A pool may not hold a node's or an endpoint's address (pools stored before that rule
    // may: the allocation above skips them).
    let why = reserved
        .net_collision("192.0.2.0/24".parse().unwrap())
        .unwrap();
    assert!(why.contains("underlay address of node \"gw\""), "{why}");
    let why = reserved
        .net_collision("192.0.2.1/32".parse().unwrap())
        .unwrap();
    assert!(why.contains("endpoint \"web/bm1\""), "{why}");
    assert!(reserved
        .net_collision("192.0.2.128/25".parse().unwrap())
        .is_none());
}

#[test]
fn a_delete_frees_everything_and_headless_takes_nothing() {
    let mut taken = Taken::default();
    let reserved = Reserved::default();
    let pools = [pool("p", "192.0.2.0/30", true)];
    let plan = check(
        &mut taken,
        &pools,
        &reserved,
        None,
        service("a", ServiceType::LoadBalancer),
    )
    .unwrap();
    assert_eq!(plan.changes.len(), 3, "{:?}", plan.changes);
    let freed = release(&mut taken, "web/a");
    assert_eq!(freed.len(), 3);
    assert!(freed.iter().all(|c| matches!(c, Change::Free(..))));
    assert!(taken.keys.is_empty());

    let mut headless = service("h", ServiceType::ClusterIP);
    headless.spec.cluster_ip = ClusterIp::Headless;
    let plan = check(&mut taken, &pools, &reserved, None, headless).unwrap();
    assert_eq!(plan.service.spec.cluster_ip, ClusterIp::Headless);
    assert!(plan.changes.is_empty());
}

#[test]
fn allocation_starts_from_the_key_and_is_deterministic() {
    let start = |k: &str| first_free_from(k, 0, 999, |_| true).unwrap();
    assert_eq!(start("web/a"), start("web/a"));
    assert_ne!(start("web/a"), start("web/b"));
    assert_eq!(first_free_from("x", 5, 5, |_| true), Some(5));
    assert_eq!(first_free_from("x", 5, 4, |_| true), None);
    assert_eq!(first_free_from("x", 0, 9, |v| v == 3), Some(3));
}
