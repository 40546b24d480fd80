//! The CNI verbs as a runtime sees them: STATUS, ADD, DEL, GC, and what they leave on the
//! controller, in the leases and in the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use seam_agent::Agent;
use seam_controller::ControllerConfig;
use seam_dataplane::fake::FakeKernel;
use seam_model::agent_rpc::{AgentOp, AgentReply, Attachment, AttachmentKey};
use seam_model::EndpointKind;
use seam_store::AnyStore;

use crate::harness::{
    add, agent_config, call, del, eventually, leases, pod, port, status, Cluster, Controller,
    NETWORK,
};

fn error_code(reply: &AgentReply) -> Option<u32> {
    match reply {
        AgentReply::Error(e) => Some(e.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_is_not_available_until_the_controller_answers() {
    let dir = tempfile::tempdir().unwrap();
    let ctl_sock = dir.path().join("ctl.sock");
    let cfg = agent_config(dir.path(), "n1", Ipv4Addr::new(198, 18, 0, 11), &ctl_sock);
    let sock = cfg.socket.clone();
    let _n1 = Agent::start(cfg, FakeKernel::default(), AnyStore::memory())
        .await
        .unwrap();

    let reply = call(&sock, status()).await;
    assert_eq!(error_code(&reply), Some(50), "{reply:?}");
    // An ADD cannot be served either: the namespace's segment is unknown.
    let reply = call(&sock, AgentOp::Add(pod("web", "early"))).await;
    assert_eq!(error_code(&reply), Some(11), "{reply:?}");

    let _ctl = Controller::start(&ctl_sock, ControllerConfig::default()).await;
    eventually("STATUS is Done once the controller is up", || async {
        call(&sock, status()).await == AgentReply::Done
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_returns_an_address_of_the_namespace_segment_and_publishes_the_endpoint() {
    let c = Cluster::start().await;
    let named = seam_model::ContainerPort {
        name: "http".into(),
        port: 8080,
        protocol: seam_model::PortProtocol::Tcp,
    };
    let r = add(
        &c.sock,
        &Attachment {
            ports: vec![named.clone()],
            ..pod("web", "frontend-1")
        },
    )
    .await;

    let seg = c.ctl.client.get_segment(&r.segment).await.unwrap();
    assert_eq!(seg.namespace.as_deref(), Some("web"));
    assert!(
        seg.subnet.contains(&r.address.addr()),
        "{r:?} not in {seg:?}"
    );
    assert_eq!(r.address.prefix_len(), seg.subnet.prefix_len());
    assert_ne!(r.address.addr(), seg.gateway);
    assert_eq!(r.gateway, seg.gateway);
    assert_eq!(r.mtu, 1450);
    assert_eq!(r.container_ifname, "eth0");
    assert_eq!(r.sandbox, "/var/run/netns/frontend-1");
    assert_eq!(r.host_ifname, port("frontend-1"));

    // What the kernel was told matches what the runtime was told.
    let attached = c.kernel().state().attachments[&r.host_ifname].clone();
    assert_eq!(attached.address, r.address);
    assert_eq!(attached.gateway, r.gateway);
    assert_eq!(attached.mac, r.container_mac);
    assert_eq!(attached.vni, seg.vni);
    assert_eq!(attached.mtu, 1450);
    assert_eq!(attached.netns, r.sandbox);

    eventually("the endpoint reaches the controller", || async {
        c.ctl.endpoint("web/frontend-1").await.is_some()
    })
    .await;
    let ep = c.ctl.endpoint("web/frontend-1").await.unwrap();
    assert_eq!(ep.node, "n1");
    assert_eq!(ep.kind, EndpointKind::Pod);
    assert_eq!(ep.namespace, "web");
    assert_eq!(ep.segment, r.segment);
    assert_eq!(ep.ip, r.address.addr());
    assert_eq!(ep.mac, r.container_mac);
    assert_eq!(ep.container_id.as_deref(), Some("frontend-1"));
    assert_eq!(ep.ifname.as_deref(), Some("eth0"));
    assert_eq!(ep.ports, vec![named], "named ports are published");

    // Without a pod name the endpoint is named by namespace, container id and interface.
    let mut anonymous = pod("web", "c0ffee");
    anonymous.pod_name = None;
    add(&c.sock, &anonymous).await;
    eventually("the anonymous endpoint reaches the controller", || async {
        c.ctl.endpoint("web/c0ffee/eth0").await.is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_add_returns_the_same_attachment() {
    let c = Cluster::start().await;
    let a = pod("web", "p1");
    let first = add(&c.sock, &a).await;
    let again = add(&c.sock, &a).await;
    assert_eq!(first, again);
    let third = add(&c.sock, &a).await;
    assert_eq!(first, third);
    assert_eq!(leases(&c.n1).await.len(), 1);
    assert_eq!(c.kernel().state().attachments.len(), 1);

    // A second interface of the same container is another attachment.
    let mut net1 = a.clone();
    net1.key.ifname = "net1".into();
    let other = add(&c.sock, &net1).await;
    assert_ne!(other.address, first.address);
    assert_ne!(other.host_ifname, first.host_ifname);
    assert_eq!(c.kernel().state().attachments.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespaces_get_separate_segments() {
    let c = Cluster::start().await;
    let web = add(&c.sock, &pod("web", "w1")).await;
    let db = add(&c.sock, &pod("db", "d1")).await;
    assert_ne!(web.segment, db.segment);
    let web_seg = c.ctl.client.get_segment(&web.segment).await.unwrap();
    let db_seg = c.ctl.client.get_segment(&db.segment).await.unwrap();
    assert_ne!(web_seg.vni, db_seg.vni);
    assert!(!web_seg.subnet.contains(&db_seg.subnet.network()));
    assert!(!db_seg.subnet.contains(&web_seg.subnet.network()));
    assert!(db_seg.subnet.contains(&db.address.addr()));
    assert_eq!(db.gateway, db_seg.gateway);
    // Both segments' devices exist on the node.
    let observed = c.kernel().state().observed;
    assert!(observed.segments.contains_key(&web_seg.vni));
    assert!(observed.segments.contains_key(&db_seg.vni));
    // A second pod of a namespace lands in the same segment.
    let web2 = add(&c.sock, &pod("web", "w2")).await;
    assert_eq!(web2.segment, web.segment);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn del_releases_everything_and_is_idempotent() {
    let c = Cluster::start().await;
    let keep = add(&c.sock, &pod("web", "keep")).await;
    let r = add(&c.sock, &pod("web", "gone")).await;
    eventually("both endpoints published", || async {
        c.ctl.endpoints().await.len() == 2
    })
    .await;

    assert_eq!(del(&c.sock, "gone").await, AgentReply::Done);
    eventually("the endpoint leaves the controller", || async {
        c.ctl.endpoint("web/gone").await.is_none()
    })
    .await;
    assert!(!c.kernel().state().attachments.contains_key(&r.host_ifname));
    assert!(!c
        .kernel()
        .state()
        .observed
        .host_ports
        .contains_key(&r.host_ifname));
    assert!(!leases(&c.n1).await.contains_key("gone"));

    assert_eq!(del(&c.sock, "gone").await, AgentReply::Done);
    assert_eq!(del(&c.sock, "never-added").await, AgentReply::Done);

    // The other pod is untouched.
    assert!(c
        .kernel()
        .state()
        .attachments
        .contains_key(&keep.host_ifname));
    assert!(c.ctl.endpoint("web/keep").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_freed_address_is_not_handed_out_again_at_once() {
    let c = Cluster::start().await;
    let a = add(&c.sock, &pod("web", "a")).await;
    assert_eq!(del(&c.sock, "a").await, AgentReply::Done);
    let b = add(&c.sock, &pod("web", "b")).await;
    assert_ne!(a.address, b.address);
    // Not even when the same container comes back.
    let a2 = add(&c.sock, &pod("web", "a")).await;
    assert_ne!(a2.address, a.address);
    assert_ne!(a2.address, b.address);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_adds_and_dels_never_share_an_address() {
    let c = Cluster::start().await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let sock = c.sock.clone();
        tasks.push(tokio::spawn(async move {
            let ns = if i % 4 < 2 { "alpha" } else { "beta" };
            let id = format!("c{i}");
            let r = add(&sock, &pod(ns, &id)).await;
            if i % 2 == 1 {
                assert_eq!(del(&sock, &id).await, AgentReply::Done);
            }
            (id, r)
        }));
    }
    let mut live = BTreeMap::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let (id, r) = t.await.unwrap();
        if i % 2 == 0 {
            live.insert(id, r);
        }
    }
    assert_eq!(live.len(), 100);
    let addresses: BTreeSet<Ipv4Addr> = live.values().map(|r| r.address.addr()).collect();
    assert_eq!(
        addresses.len(),
        live.len(),
        "two live attachments share an address"
    );

    // The leases are exactly the live attachments, all bound, at the addresses ADD returned.
    let book = leases(&c.n1).await;
    let expected: BTreeMap<String, (Ipv4Addr, bool)> = live
        .iter()
        .map(|(id, r)| (id.clone(), (r.address.addr(), true)))
        .collect();
    assert_eq!(book, expected);
    // The kernel holds the same attachments and nothing else.
    let state = c.kernel().state();
    let in_kernel: BTreeMap<String, Ipv4Addr> = state
        .attachments
        .iter()
        .map(|(name, spec)| (name.clone(), spec.address.addr()))
        .collect();
    let wanted: BTreeMap<String, Ipv4Addr> = live
        .iter()
        .map(|(id, r)| (port(id), r.address.addr()))
        .collect();
    assert_eq!(in_kernel, wanted);
    // And the controller ends up with exactly the live endpoints.
    let want_eps: BTreeMap<String, Ipv4Addr> = live
        .iter()
        .map(|(id, r)| {
            let ns = if id[1..].parse::<u32>().unwrap() % 4 < 2 {
                "alpha"
            } else {
                "beta"
            };
            (format!("{ns}/{id}"), r.address.addr())
        })
        .collect();
    eventually(
        "the controller holds exactly the live endpoints",
        || async {
            let eps: BTreeMap<String, Ipv4Addr> = c
                .ctl
                .endpoints()
                .await
                .into_iter()
                .map(|e| (e.name, e.ip))
                .collect();
            eps == want_eps
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exhaustion_is_try_again_and_leaves_nothing() {
    let config = ControllerConfig {
        // Outside the default service range (10.96.0.0/12).
        pool: "10.250.0.0/28".parse().unwrap(),
        segment_prefix: 28,
        block_prefix: 29,
        // The default service range (10.96.0.0/12) holds this tiny pool: move it away.
        service_cidr: "172.30.0.0/16".parse().unwrap(),
        ..ControllerConfig::default()
    };
    let c = Cluster::with_config(config).await;
    let mut given = BTreeSet::new();
    let failure = loop {
        let id = format!("p{}", given.len());
        match call(&c.sock, AgentOp::Add(pod("web", &id))).await {
            AgentReply::Attached(r) => assert!(given.insert(r.address.addr()), "{r:?} twice"),
            AgentReply::Error(e) => break (id, e),
            other => panic!("{other:?}"),
        }
        assert!(given.len() <= 16, "a /28 cannot hold {} pods", given.len());
    };
    // 16 addresses minus network, broadcast and gateway.
    assert_eq!(given.len(), 13, "{given:?}");
    let (id, e) = failure;
    assert_eq!(e.code, 11, "{e:?}");
    assert!(
        e.msg.contains("ns-web"),
        "the message should name the full segment: {e:?}"
    );
    assert!(!leases(&c.n1).await.contains_key(&id));
    assert_eq!(c.kernel().state().attachments.len(), 13);
    assert!(!c.kernel().state().attachments.contains_key(&port(&id)));

    // A second namespace finds no room in the pool for its segment: also "try again".
    let reply = call(&c.sock, AgentOp::Add(pod("db", "d1"))).await;
    assert_eq!(error_code(&reply), Some(11), "{reply:?}");
    assert_eq!(c.kernel().state().attachments.len(), 13);
    assert_eq!(leases(&c.n1).await.len(), 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_attach_leaves_nothing_and_the_next_add_works() {
    let c = Cluster::start().await;
    add(&c.sock, &pod("web", "before")).await;
    c.kernel()
        .with_state(|s| s.fail_next_attach = Some("veth create: no space left".into()));
    let reply = call(&c.sock, AgentOp::Add(pod("web", "victim"))).await;
    let AgentReply::Error(e) = &reply else {
        panic!("ADD with a failing kernel succeeded: {reply:?}");
    };
    assert_eq!(e.code, 999, "{e:?}");
    assert!(e.msg.contains("attach sandbox"), "{e:?}");
    assert!(
        format!("{} {}", e.msg, e.details).contains("no space left"),
        "the kernel's reason is lost: {e:?}"
    );
    assert!(!leases(&c.n1).await.contains_key("victim"));
    assert_eq!(c.kernel().state().attachments.len(), 1);
    // ADD publishes the record while the port is built: a failed build takes it back.
    eventually(
        "the failed pod's record is gone from the controller",
        || async { c.ctl.endpoint("web/victim").await.is_none() },
    )
    .await;

    let r = add(&c.sock, &pod("web", "victim")).await;
    assert!(c.kernel().state().attachments.contains_key(&r.host_ifname));
    assert_eq!(leases(&c.n1).await["victim"], (r.address.addr(), true));
    eventually("the retried pod is published", || async {
        c.ctl.endpoint("web/victim").await.is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_releases_what_the_runtime_no_longer_uses() {
    let c = Cluster::start().await;
    let a = add(&c.sock, &pod("web", "a")).await;
    let b = add(&c.sock, &pod("web", "b")).await;
    let d = add(&c.sock, &pod("web", "d")).await;
    // Another network's attachment is not this GC's business.
    let mut other = pod("web", "x");
    other.network = "other".into();
    let x = add(&c.sock, &other).await;
    eventually("four endpoints published", || async {
        c.ctl.endpoints().await.len() == 4
    })
    .await;

    let reply = call(
        &c.sock,
        AgentOp::Gc {
            network: NETWORK.into(),
            valid: vec![AttachmentKey {
                container_id: "b".into(),
                ifname: "eth0".into(),
            }],
        },
    )
    .await;
    assert_eq!(reply, AgentReply::Done);

    eventually("released endpoints leave the controller", || async {
        let names: BTreeSet<String> = c
            .ctl
            .endpoints()
            .await
            .into_iter()
            .map(|e| e.name)
            .collect();
        names == BTreeSet::from(["web/b".to_string(), "web/x".to_string()])
    })
    .await;
    let attachments = c.kernel().state().attachments;
    assert!(!attachments.contains_key(&a.host_ifname));
    assert!(!attachments.contains_key(&d.host_ifname));
    assert!(attachments.contains_key(&b.host_ifname));
    assert!(attachments.contains_key(&x.host_ifname));
    let book = leases(&c.n1).await;
    assert_eq!(book.keys().collect::<Vec<_>>(), ["b", "x"]);
}
