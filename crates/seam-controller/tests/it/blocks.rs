//! Block claims: distinct under concurrency, exhaustion, release.

use std::collections::HashSet;

use crate::server::{endpoint, node, segment, Server};

#[tokio::test]
async fn concurrent_claims_never_overlap() {
    let srv = Server::memory().await;
    let c = srv.client.clone();
    for i in 0..5u8 {
        c.put_node(&node(&format!("n{i}"), i + 1)).await.unwrap();
    }
    let seg = c.ensure_segment("default").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let c = c.clone();
        let seg = seg.name.clone();
        tasks.push(tokio::spawn(async move {
            c.claim_block(&seg, &format!("n{}", i % 5)).await
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
    for i in 0..5 {
        let n = format!("n{i}");
        assert_eq!(blocks.iter().filter(|b| b.node == n).count(), 10);
    }
    assert_eq!(c.list_blocks().await.unwrap().len(), 50);
    srv.stop().await;
}

#[tokio::test]
async fn exhaustion_release_and_reuse() {
    let srv = Server::memory().await;
    let c = &srv.client;
    c.put_node(&node("n1", 1)).await.unwrap();
    // A /26 with /28 blocks: four blocks.
    c.put_segment(&segment("small", "192.168.0.0/26", 7))
        .await
        .unwrap();
    let mut blocks = Vec::new();
    for _ in 0..4 {
        blocks.push(c.claim_block("small", "n1").await.unwrap());
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
    let err = c.claim_block("small", "n1").await.unwrap_err();
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
    c.put_endpoint(&endpoint("e", "small", "n1", [192, 168, 0, 20]))
        .await
        .unwrap();
    let err = c.release_block(&blocks[1].key()).await.unwrap_err();
    assert!(
        err.is_conflict() && err.to_string().contains("\"e\""),
        "{err}"
    );
    assert!(c.delete_segment("small").await.unwrap_err().is_conflict());

    c.release_block(&blocks[2].key()).await.unwrap();
    assert!(c
        .release_block(&blocks[2].key())
        .await
        .unwrap_err()
        .is_not_found());
    // The lowest free block is handed out again.
    assert_eq!(c.claim_block("small", "n1").await.unwrap(), blocks[2]);
    srv.stop().await;
}
