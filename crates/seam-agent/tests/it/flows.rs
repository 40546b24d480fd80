//! Flow recording: an agent with recording on samples its table, turns samples into records
//! resolved against its view, and never waits for a controller that does not take them.

use std::collections::BTreeMap;
use std::sync::Arc;

use seam_agent::flows::{self, FlowConfig, SampleBatch};
use seam_model::flow::{FlowReason, FlowVerdict, PeerKind};
use seam_nft::nflog::{PacketHeaders, Sample};
use seam_nft::table::ChainBody;

use crate::harness::{add, eventually, pod, Cluster};

#[tokio::test]
async fn an_agent_with_flows_on_samples_its_table_and_records_what_it_reads() {
    let c = Cluster::start().await;
    let web = add(&c.sock, &pod("prod", "web")).await.address.addr();
    let client = add(&c.sock, &pod("prod", "client")).await.address.addr();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let suppressed: flows::SuppressedReader = Arc::new(|| Ok(BTreeMap::new()));
    let config = FlowConfig {
        group: 77,
        drop_rate: 10,
        node_drop_rate: 100,
        allow_rate: None,
    };
    let kernel = flows::FlowKernel {
        suppressed,
        conntrack: None,
    };
    let (recorder, tasks) = flows::start(c.n1.agent.clone(), config, rx, kernel).await;
    // The table the agent applies samples every rule.
    eventually("the applied table samples its rules", || async {
        let applied = c.n1.agent.applied_firewall.lock().await;
        applied.as_ref().is_some_and(|m| {
            let rules: Vec<_> = m
                .chains
                .values()
                .filter_map(|b| match b {
                    ChainBody::Rules(r) => Some(r),
                    _ => None,
                })
                .flatten()
                .collect();
            !rules.is_empty()
                && rules
                    .iter()
                    .all(|r| r.sample.as_ref().is_some_and(|s| s.group == 77))
        })
    })
    .await;
    let prefix = "Ai:default/ingress";
    assert!(c.n1.agent.flow_rules.borrow().contains_key(prefix));
    // A sample of a new connection client → web, as the kernel would send it.
    let sample = Sample {
        group: 77,
        prefix: prefix.into(),
        packet: Some(PacketHeaders {
            protocol: 6,
            src: client,
            dst: web,
            src_port: Some(40000),
            dst_port: Some(80),
            icmp_type: None,
        }),
        original: None,
    };
    tx.send(SampleBatch {
        samples: vec![sample],
        lost: false,
    })
    .await
    .unwrap();
    eventually("the sample is recorded", || async {
        !recorder.recent(0, 10).is_empty()
    })
    .await;
    let r = recorder.recent(0, 10)[0].record(recorder.node());
    assert_eq!(r.node, "n1");
    assert_eq!(
        (r.verdict, r.reason),
        (FlowVerdict::Allowed, FlowReason::DefaultAllow)
    );
    assert_eq!(r.src.kind, PeerKind::Pod);
    assert_eq!(
        (r.src.namespace.as_deref(), r.src.name.as_deref()),
        (Some("prod"), Some("client"))
    );
    assert_eq!(r.dst.name.as_deref(), Some("web"));
    assert_eq!(r.rule.as_deref(), Some("default/ingress"));
    // It leaves for the controller within a few pushes: taken, or (a controller without
    // `POST /v1/flows`, or one that refuses) dropped and counted; either way nothing waits.
    eventually("the record leaves the outbox", || async {
        recorder.outbox().is_empty()
    })
    .await;
    assert_eq!(recorder.metrics().emitted.get(), 1);
    for t in tasks {
        t.abort();
    }
}
