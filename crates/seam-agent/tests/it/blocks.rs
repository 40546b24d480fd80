//! Address blocks go back to their segment: churn on one node ends with the node holding the
//! blocks its live pods need, and a crash between the local retire and the controller's
//! release leaks nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use seam_agent::leases::LeaseBook;
use seam_agent::{Agent, AgentConfig};
use seam_client::ControllerClient;
use seam_controller::ControllerConfig;
use seam_dataplane::fake::FakeKernel;
use seam_model::agent_rpc::AgentReply;
use seam_store::AnyStore;

use crate::crash::{reopen, runtime};
use crate::harness::{
    add, agent_config, del, eventually, pod, wait_ready, Controller, GatedController,
};

/// The CIDRs of the blocks the controller says `node` holds.
async fn blocks_of(client: &ControllerClient, node: &str) -> BTreeSet<Ipv4Net> {
    client
        .list_blocks()
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.node == node)
        .map(|b| b.cidr)
        .collect()
}

/// The blocks of `held` that hold one of `live`.
fn needed(held: &BTreeSet<Ipv4Net>, live: &BTreeMap<String, Ipv4Addr>) -> BTreeSet<Ipv4Net> {
    held.iter()
        .filter(|b| live.values().any(|ip| b.contains(ip)))
        .copied()
        .collect()
}

/// Short, so thousands of cycles run in seconds; still long enough that an address of a
/// burst's pod is in quarantine when the next pods come (at about one cycle per millisecond
/// here, a dozen addresses at a time).
const QUARANTINE_MS: u64 = 10;

fn config(
    dir: &Path,
    node: &str,
    last: u8,
    ctl: &Controller,
    release_after_ms: u64,
) -> AgentConfig {
    AgentConfig {
        quarantine_ms: QUARANTINE_MS,
        block_release_after_ms: release_after_ms,
        ..agent_config(dir, node, Ipv4Addr::new(198, 18, 0, last), &ctl.sock)
    }
}

/// ADDs pods `next..next+cycles` one by one, DELeting the oldest whenever more than `window`
/// are live; every ADD must succeed (an exhausted segment fails it).
async fn churn(
    sock: &Path,
    live: &mut VecDeque<(String, Ipv4Addr)>,
    next: &mut usize,
    cycles: usize,
    window: usize,
) {
    for _ in 0..cycles {
        let id = format!("p{next}");
        *next += 1;
        let r = add(sock, &pod("churn", &id)).await;
        live.push_back((id, r.address.addr()));
        while live.len() > window {
            let (old, _) = live.pop_front().unwrap();
            assert_eq!(del(sock, &old).await, AgentReply::Done);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_controller_hung_on_a_release_does_not_stall_adds() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = GatedController::start(&dir.path().join("ctl.sock")).await;
    let cfg = AgentConfig {
        quarantine_ms: QUARANTINE_MS,
        block_release_after_ms: 200,
        ..agent_config(dir.path(), "n1", Ipv4Addr::new(198, 18, 0, 11), &ctl.sock)
    };
    let sock = cfg.socket.clone();
    let n1 = Agent::start(cfg, FakeKernel::default(), AnyStore::memory())
        .await
        .unwrap();
    wait_ready(&sock).await;
    // Longer than the client's timeout: the pass waits as long as the agent lets it.
    ctl.hang_releases(Some(Duration::from_secs(20)));
    let first = add(&sock, &pod("web", "p0")).await.address.addr();
    assert_eq!(del(&sock, "p0").await, AgentReply::Done);
    eventually(
        "the idle block's release reaches the controller",
        || async { ctl.releases_held.load(Ordering::SeqCst) > 0 },
    )
    .await;
    // The release hangs; an ADD still gets its answer in a few seconds.
    let started = Instant::now();
    let second = add(&sock, &pod("web", "p1")).await.address.addr();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the ADD took {took:?}");
    // Once the controller answers again, a later pass gives the old block back.
    ctl.hang_releases(None);
    eventually("n1 holds only the block of its live pod", || async {
        let held = blocks_of(&ctl.client, "n1").await;
        held.len() == 1 && held.iter().all(|b| b.contains(&second))
    })
    .await;
    eprintln!("ADD during a hung release took {took:?} (first pod {first}, second {second})");
    n1.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_ends_with_the_blocks_the_live_pods_need_and_never_exhausts_the_segment() {
    const ROUNDS: usize = 10;
    const BURST: usize = 150;
    const CALM: usize = 150;
    let dir = tempfile::tempdir().unwrap();
    // Segments of 64 addresses (62 usable) in four /28 blocks: a node that kept the blocks of
    // a burst of 30 pods (and the addresses in quarantine) would leave no room for another
    // node.
    let ctl = Controller::start(
        &dir.path().join("ctl.sock"),
        ControllerConfig {
            segment_prefix: 26,
            block_prefix: 28,
            ..ControllerConfig::default()
        },
    )
    .await;
    let c1 = config(dir.path(), "n1", 11, &ctl, 200);
    let c2 = config(dir.path(), "n2", 12, &ctl, 200);
    let (s1, s2) = (c1.socket.clone(), c2.socket.clone());
    let n1 = Agent::start(c1, FakeKernel::default(), AnyStore::memory())
        .await
        .unwrap();
    let n2 = Agent::start(c2, FakeKernel::default(), AnyStore::memory())
        .await
        .unwrap();
    wait_ready(&s1).await;
    wait_ready(&s2).await;

    // The node's block count over time, sampled every 50 ms while the churn runs.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let client = ctl.client.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut series = Vec::new();
            loop {
                // One more sample once told to stop: the series ends with the final count.
                let last = done.load(Ordering::Acquire);
                let Ok(blocks) = client.list_blocks().await else {
                    break;
                };
                let count = blocks.iter().filter(|b| b.node == "n1").count();
                series.push((start.elapsed().as_millis(), count));
                if last {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            series
        })
    };

    let started = Instant::now();
    let mut live = VecDeque::new();
    let mut next = 0;
    let mut peak = 0;
    for round in 0..ROUNDS {
        churn(&s1, &mut live, &mut next, BURST, 30).await;
        peak = peak.max(blocks_of(&ctl.client, "n1").await.len());
        churn(&s1, &mut live, &mut next, CALM, 5).await;
        let live_ips: BTreeMap<String, Ipv4Addr> = live.iter().cloned().collect();
        // Calm: the blocks of the burst go back once idle; those of the live pods stay.
        eventually(
            &format!("round {round}: n1 holds only its live pods' blocks"),
            || async {
                let held = blocks_of(&ctl.client, "n1").await;
                held == needed(&held, &live_ips)
            },
        )
        .await;
        let held = blocks_of(&ctl.client, "n1").await;
        for (id, ip) in &live_ips {
            assert!(
                held.iter().any(|b| b.contains(ip)),
                "{id} ({ip}) outside n1's blocks {held:?}"
            );
        }
    }
    // The last pods go, and so do the node's blocks.
    while let Some((id, _)) = live.pop_front() {
        assert_eq!(del(&s1, &id).await, AgentReply::Done);
    }
    eventually("n1 holds no block without pods", || async {
        blocks_of(&ctl.client, "n1").await.is_empty()
    })
    .await;
    let churn_secs = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Release);
    let series = sampler.await.unwrap();

    // Five new pods need one block; the rest of the segment is there for another node, which
    // gets two blocks' worth of pods.
    let mut five = BTreeMap::new();
    for i in 0..5 {
        let id = format!("last{i}");
        five.insert(
            id.clone(),
            add(&s1, &pod("churn", &id)).await.address.addr(),
        );
    }
    let held = blocks_of(&ctl.client, "n1").await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(needed(&held, &five), held);
    let mut seen: BTreeSet<Ipv4Addr> = five.values().copied().collect();
    for i in 0..28 {
        let r = add(&s2, &pod("churn", &format!("other{i}"))).await;
        assert!(seen.insert(r.address.addr()), "{r:?} duplicates an address");
    }
    assert_eq!(blocks_of(&ctl.client, "n2").await.len(), 2);

    // Printed for the record (`--nocapture`): the count at the start and at every change.
    let mut timeline = Vec::new();
    let mut last = None;
    for (ms, count) in &series {
        if last != Some(*count) {
            timeline.push(format!("{ms}:{count}"));
            last = Some(*count);
        }
    }
    eprintln!(
        "churn: {next} ADDs and as many DELs on n1 in {churn_secs:.1} s, {} samples, peak {} \
         blocks; n1's block count over time, at each change (ms:count): {}",
        series.len(),
        series.iter().map(|(_, c)| *c).max().unwrap_or(0).max(peak),
        timeline.join(" ")
    );
    n1.abort();
    n2.abort();
}

#[test]
fn a_crash_between_the_local_retire_and_the_release_leaks_no_block() {
    let main = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("leases.redb");
    let ctl = main.block_on(Controller::start(
        &dir.path().join("ctl.sock"),
        ControllerConfig::default(),
    ));
    // Long enough that the agent never retires a block itself during the test.
    let cfg = config(dir.path(), "n1", 11, &ctl, 5_000);
    let sock = cfg.socket.clone();

    // First life: a pod comes and goes; its block stays with the node for now.
    let first_rt = runtime();
    let first = first_rt
        .block_on(Agent::start(
            cfg.clone(),
            FakeKernel::default(),
            AnyStore::open_embedded(&store_path).unwrap(),
        ))
        .unwrap();
    let old_block = main.block_on(async {
        wait_ready(&sock).await;
        let r = add(&sock, &pod("web", "a")).await;
        assert_eq!(del(&sock, "a").await, AgentReply::Done);
        eventually("the endpoint is gone", || async {
            ctl.endpoints().await.is_empty()
        })
        .await;
        let held = blocks_of(&ctl.client, "n1").await;
        assert_eq!(held.len(), 1);
        assert!(held.iter().all(|b| b.contains(&r.address.addr())));
        held.into_iter().next().unwrap()
    });
    first.abort();
    drop(first_rt);

    // The agent retired the block locally (durably) and died before the controller heard.
    main.block_on(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut book = LeaseBook::open(reopen(&store_path), QUARANTINE_MS)
            .await
            .unwrap();
        let retired = book.retire_idle_blocks("n1", 0, |_| true).await.unwrap();
        assert_eq!(retired.len(), 1);
        assert_eq!(retired[0].cidr, old_block);
        assert_eq!(blocks_of(&ctl.client, "n1").await.len(), 1);
    });

    // Second life: the block the controller still gives the node, and the book does not hold,
    // goes back at start; the next ADD claims one as usual, with no address twice.
    let second = main
        .block_on(Agent::start(
            cfg,
            FakeKernel::default(),
            reopen(&store_path),
        ))
        .unwrap();
    main.block_on(async {
        wait_ready(&sock).await;
        eventually("the retired block goes back", || async {
            blocks_of(&ctl.client, "n1").await.is_empty()
        })
        .await;
        let r = add(&sock, &pod("web", "b")).await;
        let held = blocks_of(&ctl.client, "n1").await;
        assert_eq!(held.len(), 1);
        assert!(held.iter().all(|b| b.contains(&r.address.addr())));
        let book = second.agent.leases.lock().await;
        let lease = book.leases().next().unwrap();
        assert_eq!(lease.ip, r.address.addr());
        drop(book);

        // The other window: the controller granted a block whose claim the agent never
        // recorded (it died before writing it). It goes back too; the pod's block stays.
        let segment = r.segment.clone();
        let orphan = ctl.client.claim_block(&segment, "n1").await.unwrap();
        assert_eq!(blocks_of(&ctl.client, "n1").await.len(), 2);
        eventually("the unrecorded block goes back", || async {
            !blocks_of(&ctl.client, "n1").await.contains(&orphan.cidr)
        })
        .await;
        assert_eq!(blocks_of(&ctl.client, "n1").await, held);
        assert_eq!(ctl.endpoints().await.len(), 1);
    });
    second.abort();
    drop(ctl);
    drop(main);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refused_a_third_unused_block_reuses_its_quarantine_early() {
    let dir = tempfile::tempdir().unwrap();
    // /28 blocks: the controller grants n1 a third only while its two have fewer than 32
    // addresses no endpoint uses.
    let ctl = Controller::start(
        &dir.path().join("ctl.sock"),
        ControllerConfig {
            segment_prefix: 24,
            block_prefix: 28,
            ..ControllerConfig::default()
        },
    )
    .await;
    // A quarantine longer than the test: every freed address stays in it.
    let cfg = AgentConfig {
        quarantine_ms: 600_000,
        block_release_after_ms: 600_000,
        ..agent_config(dir.path(), "n1", Ipv4Addr::new(198, 18, 0, 11), &ctl.sock)
    };
    let sock = cfg.socket.clone();
    let n1 = Agent::start(cfg, FakeKernel::default(), AnyStore::memory())
        .await
        .unwrap();
    wait_ready(&sock).await;
    // One pod at a time: the store sees n1's blocks as unused, the agent's quarantine holds
    // every address it handed out. Two blocks' worth of pods and more: every ADD succeeds.
    let mut seen = BTreeSet::new();
    for i in 0..40 {
        let id = format!("q{i}");
        let ip = add(&sock, &pod("web", &id)).await.address.addr();
        seen.insert(ip);
        assert_eq!(del(&sock, &id).await, AgentReply::Done);
        // The DEL's record removal reaches the controller after the reply.
        eventually("the pod's record is gone", || async {
            ctl.endpoints().await.is_empty()
        })
        .await;
    }
    let held = blocks_of(&ctl.client, "n1").await;
    assert_eq!(held.len(), 2, "n1 holds {held:?}");
    assert!(seen.len() < 40, "an address came out of quarantine early");
    assert!(seen.iter().all(|ip| held.iter().any(|b| b.contains(ip))));
    n1.abort();
}
