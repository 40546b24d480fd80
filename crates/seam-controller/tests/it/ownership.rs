//! Issue 11's first paragraph replayed: each write an attacker made with plain `curl` against a
//! lab is refused through the API, whoever asks (these are ownership rules, not identity
//! checks), with a clear 4xx naming the rule, and the store is left as it was.

use seam_client::{ClientError, ControllerClient};
use seam_model::{EndpointKind, Snapshot};
use seam_store::{AnyStore, Datastore, Txn};

use crate::server::{endpoint, node, segment, Server};

/// Asserts the request failed with `status`, its message holds `rule`, and nothing was written
/// (the store revision and every object are as before).
async fn refused<T: std::fmt::Debug>(
    c: &ControllerClient,
    before: &Snapshot,
    result: Result<T, ClientError>,
    status: u16,
    rule: &str,
) -> ClientError {
    let err = result.expect_err("the attack must be refused");
    assert_eq!(err.status(), Some(status), "{err}");
    assert!(
        err.to_string().contains(rule),
        "{err:#} does not name {rule:?}"
    );
    assert_eq!(
        &c.snapshot().await.unwrap(),
        before,
        "a refusal changed the store"
    );
    err
}

/// Two nodes, the namespace `web` with its segment, a block for each node and a pod on n1.
async fn lab(c: &ControllerClient) -> (seam_model::Segment, seam_model::Block, seam_model::Block) {
    c.put_node(&node("n1", 1)).await.unwrap();
    c.put_node(&node("n2", 2)).await.unwrap();
    let seg = c.ensure_segment("web").await.unwrap();
    let b1 = c.claim_block(&seg.name, "n1").await.unwrap();
    let b2 = c.claim_block(&seg.name, "n2").await.unwrap();
    let mut pod = endpoint(
        "web/a",
        &seg.name,
        "n1",
        b1.cidr.hosts().nth(4).unwrap().octets(),
    );
    pod.namespace = "web".into();
    c.put_endpoint(&pod).await.unwrap();
    (seg, b1, b2)
}

#[tokio::test]
async fn a_node_record_cannot_take_another_nodes_or_a_pod_address() {
    let srv = Server::memory().await;
    let c = &srv.client;
    let (seg, b1, _) = lab(c).await;
    let before = c.snapshot().await.unwrap();

    // PUT /v1/nodes/n2 with n1's underlay address: every node would tunnel n2's pods to n1.
    let mut n2 = node("n2", 1);
    let r = c.put_node(&n2).await;
    refused(
        c,
        &before,
        r,
        409,
        "underlayIp 198.18.0.1 is already used by node \"n1\"",
    )
    .await;
    // With an address inside a segment (a pod's, even): the tunnels would go into the overlay.
    n2.underlay_ip = b1.cidr.hosts().nth(4).unwrap();
    let r = c.put_node(&n2).await;
    let err = refused(c, &before, r, 409, &format!("segment {:?}", seg.name)).await;
    assert!(
        err.to_string()
            .contains("may not fall in a pod or service range"),
        "{err}"
    );
    // Inside the pool the controller carves segments from, where no segment is yet.
    n2.underlay_ip = [10, 250, 0, 1].into();
    let r = c.put_node(&n2).await;
    refused(c, &before, r, 409, "the controller's pool").await;
    // Loopback, link-local, unspecified, multicast, broadcast: never a node's address.
    // (The model refuses some of them itself, as no tunnel endpoint.)
    for ip in [
        [127, 0, 0, 1],
        [169, 254, 0, 1],
        [0, 0, 0, 0],
        [0, 1, 2, 3],
        [224, 0, 0, 5],
        [240, 0, 0, 1],
        [255; 4],
    ] {
        n2.underlay_ip = ip.into();
        let r = c.put_node(&n2).await;
        let ip = std::net::Ipv4Addr::from(ip);
        refused(c, &before, r, 400, &format!("underlayIp: {ip}")).await;
    }
    n2.underlay_ip = [169, 254, 0, 1].into();
    let r = c.put_node(&n2).await;
    refused(c, &before, r, 400, "must be a routable unicast address").await;
    // A new node too.
    let mut n3 = node("n3", 3);
    n3.underlay_ip = [169, 254, 9, 9].into();
    let r = c.put_node(&n3).await;
    refused(c, &before, r, 400, "link-local").await;
    // The node's own record, unchanged, is still accepted.
    c.put_node(&node("n2", 2)).await.unwrap();
    srv.stop().await;
}

#[tokio::test]
async fn an_endpoint_cannot_take_an_address_of_another_nodes_block() {
    let srv = Server::memory().await;
    let c = &srv.client;
    let (seg, b1, b2) = lab(c).await;
    let before = c.snapshot().await.unwrap();

    // n1 places a pod in n2's block: n2's next pod would get a duplicate address.
    let in_b2 = b2.cidr.hosts().nth(4).unwrap();
    let mut e = endpoint("web/intruder", &seg.name, "n1", in_b2.octets());
    e.namespace = "web".into();
    let r = c.put_endpoint(&e).await;
    refused(c, &before, r, 409, "is not in a block held by node \"n1\"").await;
    // Saying it is a host endpoint changes nothing.
    e.kind = EndpointKind::Host;
    let r = c.put_endpoint(&e).await;
    refused(c, &before, r, 409, "is not in a block held by node \"n1\"").await;
    // Nor does saying it is a VM: a VM's address is the controller's lease.
    e.kind = EndpointKind::Vm;
    let r = c.put_endpoint(&e).await;
    refused(c, &before, r, 400, "POST /v1/vms/<name>/attach").await;
    // An address of nobody's block either.
    e.kind = EndpointKind::Pod;
    let nobodys = seg.subnet.hosts().nth(200).unwrap();
    assert!(!b1.cidr.contains(&nobodys) && !b2.cidr.contains(&nobodys));
    e.ip = nobodys;
    e.mac = seam_model::endpoint_mac(nobodys);
    let r = c.put_endpoint(&e).await;
    refused(c, &before, r, 409, "is not in a block held by node \"n1\"").await;
    srv.stop().await;
}

#[tokio::test]
async fn an_endpoint_stays_in_its_segments_namespace() {
    let srv = Server::memory().await;
    let c = &srv.client;
    let (seg, b1, _) = lab(c).await;
    c.ensure_segment("db").await.unwrap();
    let before = c.snapshot().await.unwrap();

    // A pod of namespace db placed on web's segment would get web's policies and neighbours.
    let mut e = endpoint(
        "db/x",
        &seg.name,
        "n1",
        b1.cidr.hosts().nth(5).unwrap().octets(),
    );
    e.namespace = "db".into();
    let r = c.put_endpoint(&e).await;
    refused(
        c,
        &before,
        r,
        409,
        "serves namespace \"web\"; an endpoint's namespace must match its segment's",
    )
    .await;
    // In its own namespace it is accepted.
    e.name = "web/x".into();
    e.namespace = "web".into();
    c.put_endpoint(&e).await.unwrap();
    srv.stop().await;
}

#[tokio::test]
async fn a_block_goes_back_only_for_its_holder_and_only_once_unused() {
    let srv = Server::memory().await;
    let c = &srv.client;
    let (seg, b1, _) = lab(c).await;
    let mut second = endpoint(
        "web/b",
        &seg.name,
        "n1",
        b1.cidr.hosts().nth(5).unwrap().octets(),
    );
    second.namespace = "web".into();
    c.put_endpoint(&second).await.unwrap();

    // The attacker deletes one of n1's endpoints, then asks for n1's block back while the
    // other still holds an address in it.
    c.delete_endpoint("web/a").await.unwrap();
    let before = c.snapshot().await.unwrap();
    let r = c.release_block_held_by(&b1.key(), "n1").await;
    refused(c, &before, r, 409, "is in use by endpoint \"web/b\"").await;
    // Naming no holder, or another node, does not help.
    let r = c.release_block(&b1.key()).await;
    refused(c, &before, r, 400, "released only by its holder").await;
    let r = c.release_block_held_by(&b1.key(), "n2").await;
    refused(
        c,
        &before,
        r,
        409,
        "is held by node \"n1\", not by node \"n2\"",
    )
    .await;
    // So another node never gets the address web/b still uses.
    let next = c.claim_block(&seg.name, "n2").await.unwrap();
    assert!(
        !next.cidr.contains(&second.ip),
        "{} handed out again",
        next.cidr
    );
    srv.stop().await;
}

#[tokio::test]
async fn sixty_three_claims_do_not_exhaust_a_segment() {
    let srv = Server::memory().await;
    let c = &srv.client;
    c.put_node(&node("n1", 1)).await.unwrap();
    c.put_node(&node("n2", 2)).await.unwrap();
    // The default segment: a /20 of /26 blocks, 64 in all.
    let seg = c.ensure_segment("web").await.unwrap();
    c.claim_block(&seg.name, "n1").await.unwrap();
    c.claim_block(&seg.name, "n1").await.unwrap();
    let before = c.snapshot().await.unwrap();
    for _ in 2..63 {
        let r = c.claim_block(&seg.name, "n1").await;
        let err = refused(c, &before, r, 409, "a node gets another block of a segment only while its blocks there have fewer than 128 unused addresses").await;
        assert_eq!(err.reason(), Some("BlockQuota"), "{err}");
    }
    // Claims for nodes that do not exist are refused too.
    let r = c.claim_block(&seg.name, "ghost").await;
    refused(c, &before, r, 404, "node \"ghost\" not found").await;
    // Every other node still gets its block.
    let b2 = c.claim_block(&seg.name, "n2").await.unwrap();
    // Once n1's blocks are in use, it gets another.
    let held: Vec<_> = c
        .list_blocks()
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.node == "n1")
        .collect();
    assert_eq!(held.len(), 2);
    let mut used = 0;
    for (i, ip) in held[0].cidr.hosts().skip(2).take(10).enumerate() {
        let mut e = endpoint(&format!("web/p{i}"), &seg.name, "n1", ip.octets());
        e.namespace = "web".into();
        c.put_endpoint(&e).await.unwrap();
        used += 1;
    }
    assert_eq!(used, 10);
    let third = c.claim_block(&seg.name, "n1").await.unwrap();
    assert_ne!(third.cidr, b2.cidr);
    srv.stop().await;
}

#[tokio::test]
async fn a_segment_cannot_overlap_another_the_underlay_or_reserved_ranges() {
    let srv = Server::memory().await;
    let c = &srv.client;
    let mut n1 = node("n1", 1);
    n1.underlay_ip = [192, 168, 50, 7].into();
    c.put_node(&n1).await.unwrap();
    c.put_segment(&segment("blue", "192.168.0.0/24", 100))
        .await
        .unwrap();
    let before = c.snapshot().await.unwrap();

    let r = c
        .put_segment(&segment("green", "192.168.0.128/25", 101))
        .await;
    refused(c, &before, r, 409, "overlaps segment \"blue\"").await;
    let r = c
        .put_segment(&segment("green", "192.168.0.0/16", 101))
        .await;
    refused(c, &before, r, 409, "overlaps segment \"blue\"").await;
    // Around n1's underlay address: the overlay's route would swallow its tunnel.
    let r = c
        .put_segment(&segment("green", "192.168.50.0/24", 101))
        .await;
    refused(
        c,
        &before,
        r,
        409,
        "holds the underlay address 192.168.50.7 of node \"n1\"",
    )
    .await;
    for (subnet, name) in [
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("224.0.0.0/24", "multicast"),
        ("240.0.0.0/24", "reserved"),
        ("0.0.0.0/24", "this network"),
    ] {
        let r = c.put_segment(&segment("green", subnet, 101)).await;
        refused(c, &before, r, 400, name).await;
    }
    // Changing an existing segment into one of them is refused just the same.
    let r = c.put_segment(&segment("blue", "127.0.0.0/24", 100)).await;
    refused(c, &before, r, 400, "loopback").await;
    c.put_segment(&segment("green", "192.168.1.0/24", 101))
        .await
        .unwrap();
    srv.stop().await;
}

#[tokio::test]
async fn a_namespace_segment_is_carved_around_a_node_in_the_pool() {
    // A node recorded in the pool before the pool check existed (written to the store here).
    let store = AnyStore::memory();
    store
        .txn(Txn::new().put(
            "/seam/v1/nodes/old",
            br#"{"name":"old","underlayIp":"10.240.0.9"}"#.to_vec(),
        ))
        .await
        .unwrap();
    let srv = Server::start(seam_controller::ControllerConfig::default(), store).await;
    let c = &srv.client;
    let seg = c.ensure_segment("web").await.unwrap();
    assert!(
        !seg.subnet.contains(&std::net::Ipv4Addr::new(10, 240, 0, 9)),
        "{} holds node old's underlay address",
        seg.subnet
    );
    srv.stop().await;
}
