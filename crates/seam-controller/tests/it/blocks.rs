//! Block claims: distinct under concurrency, exhaustion, release.

use std::collections::HashSet;

use seam_model::endpoint_mac;

use crate::server::{endpoint, node, segment, Server};

#[tokio::test]
async fn concurrent_claims_never_overlap() {
    let srv = Server::memory().await;
    let c = srv.client.clone();
    // 25 nodes with two claims each: a node holding two unused blocks of a segment gets no
    // third.
    for i in 0..25u8 {
        c.put_node(&node(&format!("n{i}"), i + 1)).await.unwrap();
    }
    let seg = c.ensure_segment("default").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let c = c.clone();
        let seg = seg.name.clone();
        tasks.push(tokio::spawn(async move {
            c.claim_block(&seg, &format!("n{}", i % 25)).await
        }));
    }
    let mut blocks = Vec::new();
    for t in tasks {
        blocks.push(t.await.unwrap().unwrap());
    }
    let keys: HashSet<String> = blocks.iter().map(|b| b.key()).collect();
    assert_eq!(keys.len(), 50);
    for (i, a) in blocks.iter().enumerate() {
        assert!(
            seg.subnet.contains(&a.cidr),
            "{} outside {}",
            a.cidr,
            seg.subnet
        );
        assert_eq!(a.cidr.prefix_len(), seg.block_prefix);
        for b in &blocks[i + 1..] {
            assert!(
                !a.cidr.contains(&b.cidr.network()) && !b.cidr.contains(&a.cidr.network()),
                "{} overlaps {}",
                a.cidr,
                b.cidr
            );
        }
    }
    for i in 0..25 {
        let n = format!("n{i}");
        assert_eq!(blocks.iter().filter(|b| b.node == n).count(), 2);
    }
    assert_eq!(c.list_blocks().await.unwrap().len(), 50);
    srv.stop().await;
}

#[tokio::test]
async fn exhaustion_release_and_reuse() {
    let srv = Server::memory().await;
    let c = &srv.client;
    // Two blocks each for n1 and n2 (a node gets no third while its two are unused), and n3
    // finds none left.
    for (name, octet) in [("n1", 1), ("n2", 2), ("n3", 3)] {
        c.put_node(&node(name, octet)).await.unwrap();
    }
    // A /26 with /28 blocks: four blocks.
    c.put_segment(&segment("small", "192.168.0.0/26", 7))
        .await
        .unwrap();
    let mut blocks = Vec::new();
    for node in ["n1", "n2", "n1", "n2"] {
        blocks.push(c.claim_block("small", node).await.unwrap());
    }
    let cidrs: Vec<String> = blocks.iter().map(|b| b.cidr.to_string()).collect();
    assert_eq!(
        cidrs,
        [
            "192.168.0.0/28",
            "192.168.0.16/28",
            "192.168.0.32/28",
            "192.168.0.48/28"
        ]
    );
    let err = c.claim_block("small", "n3").await.unwrap_err();
    assert!(err.is_exhausted(), "{err}");
    assert_eq!(err.status(), Some(409));
    assert!(err.to_string().contains("small"), "{err}");

    assert!(c
        .claim_block("nope", "n1")
        .await
        .unwrap_err()
        .is_not_found());
    assert!(c
        .claim_block("small", "nope")
        .await
        .unwrap_err()
        .is_not_found());

    // A block with an endpoint in it cannot be released; the segment cannot be deleted.
    c.put_endpoint(&endpoint("e", "small", "n2", [192, 168, 0, 20]))
        .await
        .unwrap();
    let err = c
        .release_block_held_by(&blocks[1].key(), "n2")
        .await
        .unwrap_err();
    assert!(
        err.is_conflict() && err.to_string().contains("\"e\""),
        "{err}"
    );
    assert!(c.delete_segment("small").await.unwrap_err().is_conflict());

    c.release_block_held_by(&blocks[2].key(), "n1")
        .await
        .unwrap();
    assert!(c
        .release_block_held_by(&blocks[2].key(), "n1")
        .await
        .unwrap_err()
        .is_not_found());
    // The lowest free block is handed out again.
    assert_eq!(c.claim_block("small", "n1").await.unwrap(), blocks[2]);
    srv.stop().await;
}

#[tokio::test]
async fn a_node_releases_only_its_own_empty_block() {
    let srv = Server::memory().await;
    let c = &srv.client;
    c.put_node(&node("n1", 1)).await.unwrap();
    c.put_node(&node("n2", 2)).await.unwrap();
    c.put_segment(&segment("small", "192.168.0.0/26", 7))
        .await
        .unwrap();
    let mine = c.claim_block("small", "n1").await.unwrap();
    let theirs = c.claim_block("small", "n2").await.unwrap();

    // Another node's block: refused, naming the holder, whether empty or not.
    let err = c
        .release_block_held_by(&theirs.key(), "n1")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert!(
        err.to_string()
            .contains("is held by node \"n2\", not by node \"n1\""),
        "{err}"
    );
    // The holder, while an endpoint has an address in it: refused, naming the endpoint.
    let ip = mine.cidr.hosts().nth(3).unwrap().octets();
    c.put_endpoint(&endpoint("e", "small", "n1", ip))
        .await
        .unwrap();
    let err = c
        .release_block_held_by(&mine.key(), "n1")
        .await
        .unwrap_err();
    assert!(
        err.is_conflict() && err.to_string().contains("endpoint \"e\""),
        "{err}"
    );
    // A malformed node name is a clear 400.
    let err = c
        .release_block_held_by(&mine.key(), "Not_A_Node")
        .await
        .unwrap_err();
    assert!(
        err.is_invalid() && err.to_string().contains("node"),
        "{err}"
    );
    assert_eq!(
        c.list_blocks().await.unwrap().len(),
        2,
        "refusals changed nothing"
    );

    // Empty and asked by its holder: released, and the next claim gets it again.
    c.delete_endpoint("e").await.unwrap();
    c.release_block_held_by(&mine.key(), "n1").await.unwrap();
    assert!(c
        .release_block_held_by(&mine.key(), "n1")
        .await
        .unwrap_err()
        .is_not_found());
    assert_eq!(c.claim_block("small", "n2").await.unwrap().cidr, mine.cidr);
    // A release that names no holder (an administrator's, say) is refused: whoever asks, a
    // block goes back only for the node holding it.
    let err = c.release_block(&theirs.key()).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(
        err.to_string().contains("released only by its holder"),
        "{err}"
    );
    c.release_block_held_by(&theirs.key(), "n2").await.unwrap();
    srv.stop().await;
}

#[tokio::test]
async fn a_pod_endpoint_must_be_in_a_block_of_its_node() {
    let srv = Server::memory().await;
    let c = &srv.client;
    c.put_node(&node("n1", 1)).await.unwrap();
    c.put_node(&node("n2", 2)).await.unwrap();
    c.put_segment(&segment("small", "192.168.0.0/26", 7))
        .await
        .unwrap();
    let b1 = c.claim_block("small", "n1").await.unwrap();
    let b2 = c.claim_block("small", "n2").await.unwrap();
    let in_b2 = b2.cidr.hosts().nth(2).unwrap();
    // In another node's block.
    let err = c
        .put_endpoint(&endpoint("default/a", "small", "n1", in_b2.octets()))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert!(
        err.to_string().contains(&format!(
            "address {in_b2} of endpoint \"default/a\" is not in a block held by node \"n1\""
        )),
        "{err}"
    );
    // In nobody's block.
    let err = c
        .put_endpoint(&endpoint("default/a", "small", "n1", [192, 168, 0, 40]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not in a block held by node"),
        "{err}"
    );
    assert!(c.list_endpoints().await.unwrap().is_empty());
    // In its own node's block: accepted, as is the other node's pod in its block.
    let in_b1 = b1.cidr.hosts().nth(2).unwrap();
    c.put_endpoint(&endpoint("default/a", "small", "n1", in_b1.octets()))
        .await
        .unwrap();
    c.put_endpoint(&endpoint("default/b", "small", "n2", in_b2.octets()))
        .await
        .unwrap();
    // Moving the endpoint into the other node's block is refused too.
    let mut moved = endpoint(
        "default/a",
        "small",
        "n1",
        b2.cidr.hosts().nth(3).unwrap().octets(),
    );
    moved.mac = endpoint_mac(in_b1);
    assert!(c
        .put_endpoint(&moved)
        .await
        .unwrap_err()
        .to_string()
        .contains("not in a block held by node \"n1\""));
    assert_eq!(c.list_endpoints().await.unwrap().len(), 2);
    srv.stop().await;
}

#[tokio::test]
async fn a_claim_never_hands_out_a_cidr_an_endpoint_still_uses() {
    let store = seam_store::AnyStore::memory();
    let srv = Server::start(seam_controller::ControllerConfig::default(), store.clone()).await;
    let c = &srv.client;
    c.put_node(&node("n1", 1)).await.unwrap();
    c.put_node(&node("n2", 2)).await.unwrap();
    c.put_segment(&segment("small", "192.168.0.0/26", 7))
        .await
        .unwrap();
    let b1 = c.claim_block("small", "n1").await.unwrap();
    let ip = b1.cidr.hosts().nth(2).unwrap();
    c.put_endpoint(&endpoint("default/a", "small", "n1", ip.octets()))
        .await
        .unwrap();
    // The block record goes behind the API's back (an operator at the store, a restore from
    // an older backup); the endpoint still holds its address.
    use seam_store::{Datastore, Txn};
    store
        .txn(Txn::new().delete(format!("/seam/v1/blocks/{}", b1.key())))
        .await
        .unwrap();
    assert!(c.list_blocks().await.unwrap().is_empty());
    let next = c.claim_block("small", "n2").await.unwrap();
    assert!(
        !next.cidr.contains(&ip),
        "{} handed out again while endpoint default/a holds {ip}",
        next.cidr
    );
    assert_eq!(next.cidr.to_string(), "192.168.0.16/28");
    srv.stop().await;
}
