//! Services, EndpointSlices, address pools and node leases through the API: allocation in the
//! Service's transaction, conflicts, pending LoadBalancer Services, apply, authorization, leases
//! that expire.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use seam_controller::{Controller, ControllerConfig, POOL_EXHAUSTED, POOL_NOT_FOUND};
use seam_model::{
    AddressPool, ApplyObject, ClusterIp, EndpointSlice, ObjectKind, PortProtocol, Service,
    ServicePort, ServiceSpec, ServiceStatus, ServiceType, SliceEndpoint, SlicePort,
};
use seam_store::{AnyStore, Datastore};

use crate::server::{node, segment, Server};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn service(name: &str, service_type: ServiceType) -> Service {
    Service {
        name: name.to_string(),
        namespace: "web".to_string(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        spec: ServiceSpec {
            service_type,
            selector: Some([("app".to_string(), "web".to_string())].into()),
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

fn pool(name: &str, prefixes: &[&str]) -> AddressPool {
    AddressPool {
        name: name.to_string(),
        addresses: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        auto_assign: true,
    }
}

fn cluster_ip(s: &Service) -> Ipv4Addr {
    match s.spec.cluster_ip {
        ClusterIp::Address(ip) => ip,
        other => panic!("{} has no ClusterIP: {other:?}", s.key()),
    }
}

fn lb_address(s: &Service) -> Option<Ipv4Addr> {
    s.status.load_balancer.ingress.first().map(|i| i.ip)
}

#[tokio::test]
async fn services_get_their_allocations_and_a_taken_or_foreign_value_is_refused() {
    let srv = Server::memory().await;
    let c = &srv.client;
    c.put_node(&node("n1", 1)).await.unwrap();
    c.put_address_pool(&pool("public", &["203.0.113.0/30"]))
        .await
        .unwrap();

    let lb = c
        .put_service(&service("front", ServiceType::LoadBalancer))
        .await
        .unwrap();
    let front_ip = cluster_ip(&lb);
    assert!("10.96.0.0/12"
        .parse::<ipnet::Ipv4Net>()
        .unwrap()
        .contains(&front_ip));
    assert_eq!(lb_address(&lb), Some(ip("203.0.113.0")));
    let node_port = lb.spec.ports[0].node_port.unwrap();
    assert!((30000..=32767).contains(&node_port));
    // As stored, and in the snapshot.
    assert_eq!(c.get_service("web", "front").await.unwrap(), lb);
    let snapshot = c.snapshot().await.unwrap();
    assert_eq!(snapshot.services, vec![lb.clone()]);
    assert_eq!(snapshot.address_pools.len(), 1);

    // Sent again as written (no allocations in it): it keeps them.
    let again = c
        .put_service(&service("front", ServiceType::LoadBalancer))
        .await
        .unwrap();
    assert_eq!(again, lb);

    // Another Service asking for the same ClusterIP, node port or address: 409 naming the owner.
    let mut taken = service("other", ServiceType::NodePort);
    taken.spec.cluster_ip = ClusterIp::Address(front_ip);
    let err = c.put_service(&taken).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(err.to_string().contains("web/front"), "{err}");
    let mut taken = service("other", ServiceType::NodePort);
    taken.spec.ports[0].node_port = Some(node_port);
    let err = c.put_service(&taken).await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("nodePort {node_port}/TCP")),
        "{err}"
    );
    let mut taken = service("other", ServiceType::LoadBalancer);
    taken.spec.load_balancer_ip = Some(ip("203.0.113.0"));
    assert!(c.put_service(&taken).await.unwrap_err().is_conflict());

    // Outside its range, or the address of a node: 400 with the field.
    let mut foreign = service("other", ServiceType::ClusterIP);
    foreign.spec.cluster_ip = ClusterIp::Address(ip("10.200.0.1"));
    let err = c.put_service(&foreign).await.unwrap_err();
    assert!(err.is_invalid(), "{err}");
    assert!(err.to_string().contains("spec.clusterIP"), "{err}");
    foreign.spec.cluster_ip = ClusterIp::Auto;
    foreign.spec.external_ips = vec![ip("198.18.0.1")];
    let err = c.put_service(&foreign).await.unwrap_err();
    assert!(
        err.to_string().contains("node \\\"n1\\\"") || err.to_string().contains("node \"n1\""),
        "{err}"
    );

    // The ClusterIP is immutable.
    let mut moved = lb.clone();
    moved.spec.cluster_ip = ClusterIp::Address(ip("10.96.0.99"));
    let err = c.put_service(&moved).await.unwrap_err();
    assert!(err.to_string().contains("immutable"), "{err}");
    // Nothing of the refused writes was stored.
    assert_eq!(c.list_services().await.unwrap(), vec![lb.clone()]);

    // A delete frees everything: another Service may take the same values.
    c.delete_service("web", "front").await.unwrap();
    assert!(c
        .get_service("web", "front")
        .await
        .unwrap_err()
        .is_not_found());
    let mut same = service("second", ServiceType::LoadBalancer);
    same.spec.cluster_ip = ClusterIp::Address(front_ip);
    same.spec.ports[0].node_port = Some(node_port);
    same.spec.load_balancer_ip = Some(ip("203.0.113.0"));
    let second = c.put_service(&same).await.unwrap();
    assert_eq!(cluster_ip(&second), front_ip);
    assert_eq!(lb_address(&second), Some(ip("203.0.113.0")));
    srv.stop().await;
}

#[tokio::test]
async fn an_exhausted_pool_leaves_a_condition_until_the_pool_grows() {
    let srv = Server::memory().await;
    let c = &srv.client;
    // No pool yet: stored, pending, and it says why.
    let first = c
        .put_service(&service("a", ServiceType::LoadBalancer))
        .await
        .unwrap();
    assert_eq!(lb_address(&first), None);
    assert_eq!(first.status.conditions[0].reason, POOL_NOT_FOUND);

    // A pool of one address: the pending Service gets it at once.
    c.put_address_pool(&pool("public", &["203.0.113.7/32"]))
        .await
        .unwrap();
    let a = c.get_service("web", "a").await.unwrap();
    assert_eq!(lb_address(&a), Some(ip("203.0.113.7")));
    assert!(a.status.conditions.is_empty());

    let b = c
        .put_service(&service("b", ServiceType::LoadBalancer))
        .await
        .unwrap();
    assert_eq!(lb_address(&b), None);
    assert_eq!(b.status.conditions[0].reason, POOL_EXHAUSTED);
    assert_eq!(b.status.conditions[0].status, "False");

    // The pool grows: b is given the new address; a keeps its own.
    c.put_address_pool(&pool("public", &["203.0.113.7/32", "203.0.113.9/32"]))
        .await
        .unwrap();
    let b = c.get_service("web", "b").await.unwrap();
    assert_eq!(lb_address(&b), Some(ip("203.0.113.9")));
    assert_eq!(
        lb_address(&c.get_service("web", "a").await.unwrap()),
        Some(ip("203.0.113.7"))
    );

    // The pool cannot lose an address a Service holds, nor be deleted while used.
    let err = c
        .put_address_pool(&pool("public", &["203.0.113.9/32"]))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(err.to_string().contains("web/a"), "{err}");
    let err = c.delete_address_pool("public").await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    // A Service that goes frees its address for a pending one.
    let waiting = c
        .put_service(&service("c", ServiceType::LoadBalancer))
        .await
        .unwrap();
    assert_eq!(waiting.status.conditions[0].reason, POOL_EXHAUSTED);
    c.delete_service("web", "a").await.unwrap();
    assert_eq!(
        lb_address(&c.get_service("web", "c").await.unwrap()),
        Some(ip("203.0.113.7"))
    );
    c.delete_service("web", "c").await.unwrap();
    c.delete_service("web", "b").await.unwrap();
    c.delete_address_pool("public").await.unwrap();
    srv.stop().await;
}

#[tokio::test]
async fn pools_may_not_overlap_segments_the_service_range_or_each_other() {
    let srv = Server::memory().await;
    let c = &srv.client;
    c.put_segment(&segment("s1", "192.168.0.0/24", 7))
        .await
        .unwrap();
    c.put_address_pool(&pool("a", &["203.0.113.0/28"]))
        .await
        .unwrap();
    for (prefixes, says) in [
        (&["192.168.0.128/25"][..], "segment \"s1\""),
        (&["10.96.1.0/24"][..], "service range"),
        (&["10.240.1.0/24"][..], "controller's pool"),
        (&["203.0.113.8/29"][..], "address pool \"a\""),
        (
            &["198.51.100.0/24", "198.51.100.0/25"][..],
            "overlaps addresses[0]",
        ),
    ] {
        let err = c.put_address_pool(&pool("b", prefixes)).await.unwrap_err();
        assert!(err.is_invalid(), "{prefixes:?}: {err}");
        assert!(err.to_string().contains(says), "{prefixes:?}: {err}");
    }
    assert_eq!(c.list_address_pools().await.unwrap().len(), 1);
    // Nor may a segment overlap a pool or the service range afterwards.
    for (subnet, says) in [
        ("203.0.113.0/24", "address pool \"a\""),
        ("10.96.0.0/24", "service range"),
    ] {
        let err = c.put_segment(&segment("s2", subnet, 8)).await.unwrap_err();
        assert!(err.is_invalid(), "{subnet}: {err}");
        assert!(err.to_string().contains(says), "{subnet}: {err}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn endpoint_slices_are_stored_as_given() {
    let srv = Server::memory().await;
    let c = &srv.client;
    let slice = EndpointSlice {
        name: "db-1".to_string(),
        namespace: "web".to_string(),
        service: "db".to_string(),
        labels: BTreeMap::new(),
        endpoints: vec![SliceEndpoint {
            addresses: vec![ip("192.0.2.10")],
            conditions: Default::default(),
            node_name: None,
            hostname: None,
            zone: None,
            target_ref: None,
        }],
        ports: vec![SlicePort {
            name: None,
            port: 5432,
            protocol: PortProtocol::Tcp,
            app_protocol: None,
        }],
    };
    assert_eq!(c.put_endpoint_slice(&slice).await.unwrap(), slice);
    assert_eq!(c.get_endpoint_slice("web", "db-1").await.unwrap(), slice);
    assert_eq!(c.list_endpoint_slices().await.unwrap(), vec![slice.clone()]);
    assert_eq!(c.snapshot().await.unwrap().endpoint_slices, vec![slice]);
    // Read-modify-write at a revision works as for other kinds.
    let v = c
        .get_versioned::<EndpointSlice>(ObjectKind::EndpointSlice, "web/db-1")
        .await
        .unwrap();
    c.delete_if(ObjectKind::EndpointSlice, "web/db-1", v.revision)
        .await
        .unwrap();
    assert!(c
        .get_endpoint_slice("web", "db-1")
        .await
        .unwrap_err()
        .is_not_found());
    srv.stop().await;
}

#[tokio::test]
async fn an_apply_with_a_service_and_its_pool_allocates_in_one_transaction() {
    let srv = Server::memory().await;
    let c = &srv.client;
    // The Service comes first in the manifest; its pool is in the same apply.
    let objects = vec![
        ApplyObject::Service(service("front", ServiceType::LoadBalancer)),
        ApplyObject::AddressPool(pool("public", &["203.0.113.0/30"])),
    ];
    let applied = c.apply(&objects).await.unwrap();
    let ApplyObject::Service(front) = &applied.objects[0] else {
        panic!("{:?}", applied.objects[0]);
    };
    assert_eq!(lb_address(front), Some(ip("203.0.113.0")));
    assert_eq!(&c.get_service("web", "front").await.unwrap(), front);

    // Applied again: unchanged.
    let again = c.apply(&objects).await.unwrap();
    assert_eq!(again.objects[0], applied.objects[0]);

    // One refused object (a ClusterIP another Service holds): nothing of the apply is written.
    let mut clash = service("clash", ServiceType::ClusterIP);
    clash.spec.cluster_ip = ClusterIp::Address(cluster_ip(front));
    let err = c
        .apply(&[
            ApplyObject::Service(service("fine", ServiceType::ClusterIP)),
            ApplyObject::Service(clash),
        ])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("document 2"), "{err}");
    assert_eq!(c.list_services().await.unwrap().len(), 1);

    // Two Services of one apply never get the same values.
    let applied = c
        .apply(&[
            ApplyObject::Service(service("x", ServiceType::LoadBalancer)),
            ApplyObject::Service(service("y", ServiceType::LoadBalancer)),
        ])
        .await
        .unwrap();
    let got: Vec<Service> = applied
        .objects
        .into_iter()
        .map(|o| match o {
            ApplyObject::Service(s) => s,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_ne!(cluster_ip(&got[0]), cluster_ip(&got[1]));
    assert_ne!(
        got[0].spec.ports[0].node_port,
        got[1].spec.ports[0].node_port
    );
    assert_ne!(lb_address(&got[0]), lb_address(&got[1]));
    srv.stop().await;
}

#[tokio::test]
async fn a_node_lease_lives_while_it_is_renewed_and_goes_when_it_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::open_embedded(dir.path().join("store.redb")).unwrap();
    let c = Controller::new(ControllerConfig::default(), store.clone()).unwrap();
    let key = seam_controller::keys::object_key(ObjectKind::NodeLease, "gw1");
    // Only for a node that exists.
    assert_eq!(c.renew_node_lease("gw1").await.unwrap_err().status(), 404);
    c.put_node(node("gw1", 1)).await.unwrap();
    c.renew_node_lease("gw1").await.unwrap();
    let first = store.get(&key).await.unwrap().unwrap();
    assert_eq!(c.snapshot().await.unwrap().node_leases.len(), 1);

    // Renewals keep it, without writing it again (no watch event, no audit record each time).
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        c.renew_node_lease("gw1").await.unwrap();
    }
    let renewed = store.get(&key).await.unwrap().unwrap();
    assert_eq!(renewed.mod_revision, first.mod_revision);

    // Not renewed for longer than its TTL: the store deletes it.
    let mut watch = store.watch(&key, renewed.mod_revision + 1).await.unwrap();
    let deleted = tokio::time::timeout(Duration::from_secs(12), watch.next())
        .await
        .expect("the lease did not expire")
        .unwrap()
        .unwrap();
    assert_eq!((deleted.key.as_str(), deleted.value), (key.as_str(), None));
    assert!(store.get(&key).await.unwrap().is_none());

    // A renewal after that grants a new lease and writes the key again.
    c.renew_node_lease("gw1").await.unwrap();
    assert!(store.get(&key).await.unwrap().is_some());
}

#[tokio::test]
async fn a_service_that_gives_up_its_address_hands_it_to_a_pending_one() {
    let srv = Server::memory().await;
    let c = &srv.client;
    c.put_address_pool(&pool("public", &["203.0.113.7/32"]))
        .await
        .unwrap();
    let a = c
        .put_service(&service("a", ServiceType::LoadBalancer))
        .await
        .unwrap();
    assert_eq!(lb_address(&a), Some(ip("203.0.113.7")));
    let b = c
        .put_service(&service("b", ServiceType::LoadBalancer))
        .await
        .unwrap();
    assert_eq!(b.status.conditions[0].reason, POOL_EXHAUSTED);

    // a turns NodePort: its address goes to b at once.
    c.put_service(&service("a", ServiceType::NodePort))
        .await
        .unwrap();
    let b = c.get_service("web", "b").await.unwrap();
    assert_eq!(lb_address(&b), Some(ip("203.0.113.7")));

    // b moves to a pool that does not exist (pending again): a, LoadBalancer once more and
    // pending behind b, gets the address b let go.
    let a = c
        .put_service(&service("a", ServiceType::LoadBalancer))
        .await
        .unwrap();
    assert_eq!(a.status.conditions[0].reason, POOL_EXHAUSTED);
    let mut moved = c.get_service("web", "b").await.unwrap();
    moved.annotations.insert(
        seam_model::ADDRESS_POOL_ANNOTATION.to_string(),
        "elsewhere".to_string(),
    );
    let mut moved = c.put_service(&moved).await.unwrap();
    assert_eq!(moved.status.conditions[0].reason, POOL_NOT_FOUND);
    let a = c.get_service("web", "a").await.unwrap();
    assert_eq!(lb_address(&a), Some(ip("203.0.113.7")));

    // The same through `seam apply`: a turns ClusterIP, b (back on the auto-assign pools)
    // gets the address.
    moved.annotations.clear();
    c.put_service(&moved).await.unwrap();
    c.apply(&[ApplyObject::Service(service("a", ServiceType::ClusterIP))])
        .await
        .unwrap();
    let b = c.get_service("web", "b").await.unwrap();
    assert_eq!(lb_address(&b), Some(ip("203.0.113.7")));
    srv.stop().await;
}

/// A controller that stopped between freeing an address and retrying the pending Services:
/// `delete_service` alone does not retry (the API route does, after it).
async fn freed_without_retry(store: &AnyStore) {
    let c = Controller::new(ControllerConfig::default(), store.clone()).unwrap();
    c.put_address_pool(pool("public", &["203.0.113.7/32"]))
        .await
        .unwrap();
    c.put_service(service("a", ServiceType::LoadBalancer))
        .await
        .unwrap();
    let b = c
        .put_service(service("b", ServiceType::LoadBalancer))
        .await
        .unwrap();
    assert_eq!(b.status.conditions[0].reason, POOL_EXHAUSTED);
    c.delete_service("web/a").await.unwrap();
    assert_eq!(pending_address(&c).await, None);
}

async fn pending_address(c: &Controller) -> Option<Ipv4Addr> {
    let snapshot = c.snapshot().await.unwrap();
    let b = snapshot.services.iter().find(|s| s.name == "b").unwrap();
    lb_address(b)
}

#[tokio::test]
async fn a_controller_that_starts_leading_retries_the_pending_services() {
    // A single controller leads from its start.
    let store = AnyStore::memory();
    freed_without_retry(&store).await;
    let srv = Server::start(ControllerConfig::default(), store.clone()).await;
    let mut waited = Duration::ZERO;
    while lb_address(&srv.client.get_service("web", "b").await.unwrap()).is_none() {
        assert!(waited < Duration::from_secs(5), "b was not retried");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    srv.stop().await;

    // A replica, when it is elected.
    let store = AnyStore::memory();
    freed_without_retry(&store).await;
    let replica = Controller::replicated(
        ControllerConfig::default(),
        store.clone(),
        seam_controller::ReplicaConfig {
            id: "r1".to_string(),
            advertise: "http://127.0.0.1:1".to_string(),
            lease_ttl: Duration::from_secs(2),
        },
    )
    .unwrap();
    let election = tokio::spawn({
        let replica = replica.clone();
        async move { replica.run_election().await }
    });
    let mut waited = Duration::ZERO;
    while pending_address(&replica).await.is_none() {
        assert!(waited < Duration::from_secs(5), "b was not retried");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    assert_eq!(pending_address(&replica).await, Some(ip("203.0.113.7")));
    replica.stop_watches();
    election.await.unwrap();
}

#[tokio::test]
async fn nodes_externals_and_services_never_share_an_address() {
    let srv = Server::memory().await;
    let c = &srv.client;
    let mut gw = node("gw1", 1);
    gw.role = seam_model::NodeRole::Gateway;
    c.put_node(&gw).await.unwrap();
    let bm1 = seam_model::External {
        name: "bm1".to_string(),
        namespace: "external".to_string(),
        gateway: "gw1".to_string(),
        addresses: vec![ip("203.0.113.10")],
        labels: BTreeMap::new(),
    };
    c.put_external(&bm1).await.unwrap();

    // A pool may not hold a node's or an endpoint's address.
    for (prefix, says) in [
        ("198.18.0.0/24", "underlay address of node \"gw1\""),
        ("203.0.113.8/29", "203.0.113.10, the address of endpoint"),
    ] {
        let err = c.put_address_pool(&pool("p", &[prefix])).await.unwrap_err();
        assert!(err.is_invalid(), "{prefix}: {err}");
        assert!(err.to_string().contains(says), "{prefix}: {err}");
    }

    c.put_address_pool(&pool("public", &["203.0.113.200/29"]))
        .await
        .unwrap();
    let mut front = service("front", ServiceType::LoadBalancer);
    front.spec.external_ips = vec![ip("192.0.2.50")];
    let front = c.put_service(&front).await.unwrap();
    let lb = lb_address(&front).unwrap();

    // Nor may a node or an external endpoint take an address the Services hold.
    for (address, says) in [
        (cluster_ip(&front), "the ClusterIP of Service web/front"),
        (lb, "the LoadBalancer address of Service web/front"),
        (ip("192.0.2.50"), "an externalIP of Service web/front"),
        (ip("203.0.113.206"), "address pool \"public\""),
        (ip("10.100.0.1"), "the service range"),
    ] {
        let mut n = node("n2", 2);
        n.underlay_ip = address;
        let err = c.put_node(&n).await.unwrap_err();
        assert!(err.is_conflict(), "{address}: {err}");
        assert!(err.to_string().contains(says), "{address}: {err}");

        let mut other = bm1.clone();
        other.name = "bm2".to_string();
        other.addresses = vec![address];
        let err = c.put_external(&other).await.unwrap_err();
        assert!(err.is_invalid(), "{address}: {err}");
        assert!(err.to_string().contains(says), "{address}: {err}");
    }
    assert_eq!(c.list_nodes().await.unwrap().len(), 1);
    srv.stop().await;
}
