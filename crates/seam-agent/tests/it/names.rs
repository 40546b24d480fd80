//! Every name Kubernetes accepts works, and an ADD's success is true: when ADD replies, the
//! controller has the endpoint, or could not be reached and the agent publishes it until it
//! lands; a refusal undoes the ADD, and a refusal in the background is retried and reported.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use seam_agent::{Agent, Running};
use seam_dataplane::fake::FakeKernel;
use seam_model::agent_rpc::{AgentError, AgentOp, AgentReply, Attachment};
use seam_model::pod_endpoint_name;
use seam_store::AnyStore;

use crate::harness::{
    add, agent_config, call, del, eventually, leases, pod, port, wait_ready, Cluster,
    GatedController,
};

/// A namespace of the longest length Kubernetes allows (a DNS label: 63).
fn longest_namespace() -> String {
    format!("team-{}", "a".repeat(58))
}

/// A pod name of the longest length Kubernetes allows (a DNS subdomain: 253).
fn longest_pod_name() -> String {
    let name = format!(
        "{}.{}.{}.{}",
        "w".repeat(63),
        "x".repeat(63),
        "y".repeat(63),
        "z".repeat(61)
    );
    assert_eq!(name.len(), 253);
    name
}

fn error(reply: AgentReply) -> AgentError {
    match reply {
        AgentReply::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_namespace_of_63_characters_gets_a_segment_and_its_pod_an_address() {
    let c = Cluster::start().await;
    let ns = longest_namespace();
    assert_eq!(ns.len(), 63);
    let r = add(&c.sock, &pod(&ns, "p1")).await;

    let seg = c.ctl.client.get_segment(&r.segment).await.unwrap();
    assert_eq!(seg.name, format!("ns-{ns}"));
    assert_eq!(seg.namespace.as_deref(), Some(ns.as_str()));
    assert!(seg.subnet.contains(&r.address.addr()), "{r:?} {seg:?}");
    // ADD has replied, so the controller holds the endpoint already.
    let ep = c.ctl.endpoint(&format!("{ns}/p1")).await;
    assert_eq!(ep.map(|e| e.ip), Some(r.address.addr()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_longest_pod_name_and_a_long_container_id_are_on_the_controller_when_add_returns() {
    let c = Cluster::start().await;
    let ns = longest_namespace();
    let name = longest_pod_name();
    let r = add(&c.sock, &pod(&ns, &name)).await;
    let ep = c.ctl.endpoint(&format!("{ns}/{name}")).await;
    assert_eq!(
        ep.as_ref().map(|e| (e.ip, e.segment.as_str())),
        Some((r.address.addr(), r.segment.as_str())),
        "{ep:?}"
    );

    // A runtime that is not Kubernetes: no pod name, a container id of 1,000 characters.
    let id = "c0ffee".repeat(167);
    assert!(id.len() >= 1000);
    let bare = Attachment {
        pod_name: None,
        ..pod(&ns, &id)
    };
    let r2 = add(&c.sock, &bare).await;
    let ep_name = pod_endpoint_name(&ns, None, &id, "eth0");
    let ep = c
        .ctl
        .endpoint(&ep_name)
        .await
        .expect("endpoint on the controller");
    assert_eq!(ep.ip, r2.address.addr());
    assert_eq!(ep.container_id.as_deref(), Some(id.as_str()));
    assert!(ep_name.len() < 200, "{ep_name}");

    // And both go away with their DEL.
    assert_eq!(del(&c.sock, &name).await, AgentReply::Done);
    assert_eq!(del(&c.sock, &id).await, AgentReply::Done);
    eventually("endpoints removed", || async {
        c.ctl.endpoints().await.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_name_the_controller_would_refuse_fails_before_anything_is_made() {
    let c = Cluster::start().await;
    // Not a DNS label: before, the controller's refusal came back as "try again" (11).
    let reply = call(&c.sock, AgentOp::Add(pod("Bad_NS", "p1"))).await;
    let e = error(reply);
    assert_eq!(e.code, 7, "{e:?}");
    assert!(e.msg.contains("Bad_NS"), "{e:?}");
    // Longer than any Kubernetes pod name: before, ADD succeeded and the controller refused
    // the endpoint in the background.
    let too_long = "p".repeat(400);
    let e = error(call(&c.sock, AgentOp::Add(pod("web", &too_long))).await);
    assert_eq!(e.code, 7, "{e:?}");
    assert!(e.msg.contains("endpoint name"), "{e:?}");

    assert!(leases(&c.n1).await.is_empty());
    assert!(c.kernel().state().attachments.is_empty());
    // Nothing on the controller either: no segment was made for the bad namespace.
    assert!(c.ctl.client.list_segments().await.unwrap().is_empty());
    assert!(c.ctl.endpoints().await.is_empty());
}

/// A gated controller and agent `n1` on a fake kernel.
struct Gated {
    _dir: tempfile::TempDir,
    ctl: GatedController,
    n1: Running<FakeKernel>,
    sock: PathBuf,
}

async fn gated() -> Gated {
    let dir = tempfile::tempdir().unwrap();
    let ctl = GatedController::start(&dir.path().join("ctl.sock")).await;
    let cfg = agent_config(dir.path(), "n1", Ipv4Addr::new(198, 18, 0, 11), &ctl.sock);
    let sock = cfg.socket.clone();
    let n1 = Agent::start(cfg, FakeKernel::default(), AnyStore::memory())
        .await
        .unwrap();
    wait_ready(&sock).await;
    Gated {
        _dir: dir,
        ctl,
        n1,
        sock,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_endpoint_fails_the_add_and_leaves_no_lease_and_no_port() {
    let g = gated().await;
    let a = pod("web", "p1");
    for (status, reason, code) in [
        // A rule of a newer controller that this agent cannot check: permanent.
        (400, "Invalid", 101),
        (413, "TooLarge", 101),
        // A conflict with the controller's state (a stale record, a race): the retry cures it.
        (409, "Conflict", 11),
    ] {
        g.ctl
            .answer(Some((status, reason, "the controller's own reason")));
        let e = error(call(&g.sock, AgentOp::Add(a.clone())).await);
        assert_eq!(e.code, code, "{status}: {e:?}");
        assert!(e.msg.contains("the controller's own reason"), "{e:?}");
        assert!(e.msg.contains("web/p1"), "{e:?}");
        assert!(leases(&g.n1).await.is_empty(), "{status}: lease left");
        assert!(
            !g.n1
                .agent
                .kernel
                .state()
                .attachments
                .contains_key(&port("p1")),
            "{status}: port left"
        );
    }
    // Nothing half-made stands in the way of the retry.
    g.ctl.answer(None);
    let r = add(&g.sock, &a).await;
    let ep = g.ctl.endpoint("web/p1").await;
    assert_eq!(ep.map(|e| e.ip), Some(r.address.addr()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refusal_in_the_background_is_retried_reported_and_repaired() {
    let g = gated().await;
    let a = pod("web", "p1");
    // No leader reachable: the ADD succeeds and the endpoint is left to the publisher.
    g.ctl
        .answer(Some((503, "NotLeader", "no leader elected yet")));
    let r = add(&g.sock, &a).await;
    assert!(g.ctl.endpoint("web/p1").await.is_none());

    // Then the controller refuses it: retried, logged, and reported, never dropped.
    g.ctl
        .answer(Some((409, "Conflict", "10.0.0.2 is held by web/stale")));
    eventually("the refusal is reported", || async {
        g.n1.agent
            .refused_endpoints()
            .await
            .get("web/p1")
            .is_some_and(|why| why.contains("held by web/stale"))
    })
    .await;
    let e = error(call(&g.sock, AgentOp::Check(a.clone())).await);
    assert_eq!(e.code, 101, "{e:?}");
    assert!(e.msg.contains("held by web/stale"), "{e:?}");

    // Once the controller accepts it, it lands and the report is gone.
    g.ctl.answer(None);
    eventually("the endpoint lands", || async {
        g.ctl.endpoint("web/p1").await.map(|e| e.ip) == Some(r.address.addr())
    })
    .await;
    eventually("the report is cleared", || async {
        g.n1.agent.refused_endpoints().await.is_empty()
    })
    .await;
    assert!(matches!(
        call(&g.sock, AgentOp::Check(a)).await,
        AgentReply::Attached(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_controller_delays_add_by_the_bounded_wait_and_the_endpoint_lands_later() {
    let g = gated().await;
    g.ctl.hang(std::time::Duration::from_secs(6));
    let started = std::time::Instant::now();
    let r = add(&g.sock, &pod("web", "p1")).await;
    let took = started.elapsed();
    // The ADD waited for the controller (3 s), not for the hung request (6 s).
    assert!(
        took >= std::time::Duration::from_secs(3) && took < std::time::Duration::from_millis(5500),
        "ADD took {took:?}"
    );
    assert!(g.ctl.endpoint("web/p1").await.is_none());
    g.ctl.answer(None);
    eventually("the publisher lands the endpoint", || async {
        g.ctl.endpoint("web/p1").await.map(|e| e.ip) == Some(r.address.addr())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_queued_change_never_undoes_a_newer_add_of_the_same_pod_name() {
    let g = gated().await;
    // While the controller is away, pod p's first sandbox comes and goes: its record and its
    // delete wait in the publisher's queue.
    g.ctl
        .answer(Some((503, "NotLeader", "no leader elected yet")));
    let first = pod("web", "p");
    add(&g.sock, &first).await;
    assert_eq!(del(&g.sock, "p").await, AgentReply::Done);
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    // The controller is back and the pod's new sandbox (a StatefulSet reuses the name) is
    // published by its ADD at once, before the queue is retried.
    g.ctl.answer(None);
    let second = Attachment {
        key: seam_model::agent_rpc::AttachmentKey {
            container_id: "p-2".into(),
            ifname: "eth0".into(),
        },
        ..pod("web", "p")
    };
    let r = add(&g.sock, &second).await;
    let now = g.ctl.endpoint("web/p").await;
    assert_eq!(now.as_ref().map(|e| e.ip), Some(r.address.addr()));
    // The queued record and delete of the first sandbox, sent now, would overwrite and then
    // delete it; the publisher sends what the leases say instead.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let after = g.ctl.endpoint("web/p").await;
    assert_eq!(
        after.map(|e| (e.ip, e.container_id)),
        Some((r.address.addr(), Some("p-2".to_string())))
    );
}
