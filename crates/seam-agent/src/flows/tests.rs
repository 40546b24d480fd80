use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use seam_firewall::flows::SampledRule;
use seam_firewall::{RuleId, Tier};
use seam_model::flow::{FlowDirection, FlowReason, FlowVerdict, PeerKind};
use seam_model::PortProtocol;
use seam_nft::names::{sample_prefix, SampleKind};
use seam_nft::nflog::{CtOriginal, PacketHeaders, Sample};
use seam_nft::services::{DesiredServices, Frontend, FrontendKey};

use super::decode::{rule_map, Decoded, Decoder, Flow, Resolver};
use super::outbox::{Outbox, MAX_BATCH};
use super::ring::{FlowRing, RING_CAPACITY};
use super::*;
use crate::ClusterView;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn view() -> ClusterView {
    let mut v = ClusterView::default();
    let endpoint = |name: &str, kind: &str, ns: &str, addr: &str| {
        serde_json::from_value::<seam_model::Endpoint>(serde_json::json!({
            "name": name, "kind": kind, "namespace": ns, "segment": "s", "node": "n1",
            "ip": addr, "mac": "02:00:00:00:00:01"
        }))
        .unwrap()
    };
    for e in [
        endpoint("prod/web-1", "pod", "prod", "10.0.0.5"),
        endpoint("prod/db-vm", "vm", "prod", "10.0.0.9"),
        endpoint("legacy-db", "external", "prod", "192.168.7.7"),
    ] {
        v.endpoints.insert(e.name.clone(), e);
    }
    let node: seam_model::Node =
        serde_json::from_value(serde_json::json!({"name": "n1", "underlayIp": "172.16.0.1"}))
            .unwrap();
    v.nodes.insert(node.name.clone(), node);
    v
}

fn services() -> DesiredServices {
    DesiredServices {
        frontends: vec![
            Frontend {
                key: FrontendKey::Address {
                    addr: ip("10.96.0.10"),
                    protocol: PortProtocol::Tcp,
                    port: 80,
                },
                service: "prod/web:http".into(),
                backends: vec![(ip("10.0.0.5"), 8080)],
                affinity_timeout: None,
                masquerade_outside: false,
            },
            Frontend {
                key: FrontendKey::NodePort {
                    protocol: PortProtocol::Tcp,
                    port: 30080,
                },
                service: "prod/web:http".into(),
                backends: vec![(ip("10.0.0.5"), 8080)],
                affinity_timeout: None,
                masquerade_outside: false,
            },
        ],
        ..Default::default()
    }
}

fn rule(
    id: &str,
    dir: FlowDirection,
    tier: Tier,
    kind: SampleKind,
    reason: FlowReason,
) -> (String, SampledRule) {
    let egress = dir == FlowDirection::Egress;
    (
        sample_prefix(kind, egress, id),
        SampledRule {
            rule: RuleId(id.into()),
            comment: id.into(),
            direction: dir,
            tier,
            kind,
            policy: seam_firewall::flows::policy_of(&RuleId(id.into())),
            reason,
        },
    )
}

fn rules() -> Arc<super::RuleMap> {
    let sampled: HashMap<String, SampledRule> = [
        rule(
            "np/prod/web/ingress/0",
            FlowDirection::Ingress,
            Tier::Namespace,
            SampleKind::Allow,
            FlowReason::Rule,
        ),
        rule(
            "ns-isolation/ingress",
            FlowDirection::Ingress,
            Tier::Namespace,
            SampleKind::Deny,
            FlowReason::Isolation,
        ),
        rule(
            "anp/gate/ingress/0",
            FlowDirection::Ingress,
            Tier::Admin,
            SampleKind::Pass,
            FlowReason::Rule,
        ),
        rule(
            "default/ingress",
            FlowDirection::Ingress,
            Tier::Baseline,
            SampleKind::Deny,
            FlowReason::DefaultDeny,
        ),
    ]
    .into_iter()
    .collect();
    Arc::new(rule_map(&sampled))
}

fn tcp(src: &str, sport: u16, dst: &str, dport: u16) -> PacketHeaders {
    PacketHeaders {
        protocol: 6,
        src: ip(src),
        dst: ip(dst),
        src_port: Some(sport),
        dst_port: Some(dport),
        icmp_type: None,
    }
}

fn sample(prefix: &str, packet: PacketHeaders) -> Sample {
    Sample {
        group: 1,
        prefix: prefix.into(),
        packet: Some(packet),
        original: None,
    }
}

fn record(d: Decoded) -> Flow {
    match d {
        Decoded::Record(f) => *f,
        other => panic!("not a record: {other:?}"),
    }
}

#[test]
fn an_allowed_connection_to_a_service_names_both_ends_the_rule_and_the_service() {
    let resolver = Resolver::new(&view(), &services());
    let mut d = Decoder::new(100);
    d.set_rules(rules());
    // From the world through the ClusterIP, translated to the pod.
    let mut s = sample(
        "Ai:np/prod/web/ingress/0",
        tcp("203.0.113.4", 5555, "10.0.0.5", 8080),
    );
    s.original = Some(CtOriginal {
        protocol: 6,
        src: (ip("203.0.113.4"), 5555),
        dst: (ip("10.96.0.10"), 80),
    });
    let flow = record(d.decode(&s, 1_000, &resolver));
    let r = flow.record("n1");
    assert_eq!(r.node, "n1");
    assert_eq!(r.protocol, "TCP");
    assert_eq!((r.src.kind, r.src.name.as_deref()), (PeerKind::World, None));
    assert_eq!(r.dst.kind, PeerKind::Pod);
    assert_eq!(
        (r.dst.namespace.as_deref(), r.dst.name.as_deref()),
        (Some("prod"), Some("web-1"))
    );
    assert_eq!((r.dst.port, r.src.port), (Some(8080), Some(5555)));
    assert_eq!(r.verdict, FlowVerdict::Allowed);
    assert_eq!(r.direction, FlowDirection::Ingress);
    assert_eq!(
        (r.tier.as_deref(), r.reason),
        (Some("namespace"), FlowReason::Rule)
    );
    assert_eq!(r.policy.as_deref(), Some("NetworkPolicy prod/web"));
    assert_eq!(r.rule.as_deref(), Some("np/prod/web/ingress/0"));
    let svc = r.service.unwrap();
    assert_eq!(
        (svc.service.as_str(), svc.ip, svc.port),
        ("prod/web", ip("10.96.0.10"), 80)
    );
    // A NodePort on the node's address is the same Service; an untranslated connection has none.
    s.original.as_mut().unwrap().dst = (ip("172.16.0.1"), 30080);
    let r = record(d.decode(&s, 1_001, &resolver)).record("n1");
    assert_eq!(r.service.unwrap().port, 30080);
    s.original.as_mut().unwrap().dst = (ip("10.0.0.5"), 8080);
    assert_eq!(record(d.decode(&s, 1_002, &resolver)).service, None);
}

#[test]
fn a_refused_connection_to_a_service_without_endpoints_names_the_service() {
    let resolver = Resolver::new(&view(), &services());
    let mut d = Decoder::new(100);
    d.set_rules(rules());
    let prefix = seam_nft::services::RefusalSampling::prefix(true);
    let r = record(d.decode(
        &sample(&prefix, tcp("10.0.0.5", 4000, "10.96.0.10", 80)),
        5,
        &resolver,
    ))
    .record("n1");
    assert_eq!(
        (r.verdict, r.reason),
        (FlowVerdict::Denied, FlowReason::NoEndpoints)
    );
    assert_eq!((r.tier, r.policy, r.rule), (None, None, None));
    assert_eq!(r.direction, FlowDirection::Egress);
    assert_eq!(r.service.unwrap().service, "prod/web");
    assert_eq!(r.src.name.as_deref(), Some("web-1"));
    // Its suppressed counts are the refusal chains' (listed under their comment).
    d.kernel_suppressed([("svc-no-endpoints".to_string(), 9)].into());
    let r = record(d.decode(
        &sample(&prefix, tcp("10.0.0.5", 4001, "10.96.0.10", 80)),
        6,
        &resolver,
    ));
    assert_eq!(r.suppressed, 9);
}

#[test]
fn ends_resolve_to_vms_externals_nodes_and_the_world() {
    let r = Resolver::new(&view(), &DesiredServices::default());
    assert_eq!(r.peer(ip("10.0.0.9")).kind, PeerKind::Vm);
    let ext = r.peer(ip("192.168.7.7"));
    assert_eq!(
        (ext.kind, ext.name.as_deref()),
        (PeerKind::External, Some("legacy-db"))
    );
    let node = r.peer(ip("172.16.0.1"));
    assert_eq!(
        (node.kind, node.name.as_deref()),
        (PeerKind::Node, Some("n1"))
    );
    assert_eq!(r.peer(ip("8.8.8.8")).kind, PeerKind::World);
}

#[test]
fn unknown_prefixes_and_non_ipv4_samples_make_no_record() {
    let resolver = Resolver::default();
    let mut d = Decoder::new(100);
    d.set_rules(rules());
    let s = sample("seam contract/web ", tcp("10.0.0.1", 1, "10.0.0.2", 2));
    assert_eq!(d.decode(&s, 0, &resolver), Decoded::Unknown);
    let mut s = sample("Di:ns-isolation/ingress", tcp("10.0.0.1", 1, "10.0.0.2", 2));
    s.packet = None;
    assert_eq!(d.decode(&s, 0, &resolver), Decoded::Unknown);
    // Rules of the table before a change still resolve the samples sent before it.
    d.set_rules(Arc::default());
    let s = sample("Di:ns-isolation/ingress", tcp("10.0.0.1", 1, "10.0.0.2", 2));
    assert!(matches!(d.decode(&s, 0, &resolver), Decoded::Record(_)));
}

#[test]
fn the_node_limit_and_the_kernels_limit_are_counted_into_the_rules_next_record() {
    let resolver = Resolver::default();
    let mut d = Decoder::new(3);
    d.set_rules(rules());
    let s = sample(
        "Di:ns-isolation/ingress",
        tcp("10.0.0.1", 1, "10.0.0.5", 81),
    );
    // What the kernel counted before the agent started is nobody's.
    d.kernel_baseline([("ns-isolation/ingress".to_string(), 500)].into());
    // A burst of 10 at one instant: 3 records, 7 suppressed by the node's limit.
    let got: Vec<Decoded> = (0..10).map(|_| d.decode(&s, 10_000, &resolver)).collect();
    assert!(matches!(&got[0], Decoded::Record(f) if f.suppressed == 0));
    let records = got
        .iter()
        .filter(|g| matches!(g, Decoded::Record(_)))
        .count();
    assert_eq!(records, 3);
    assert_eq!(got.iter().filter(|g| **g == Decoded::Suppressed).count(), 7);
    // The kernel's limit suppressed 40 more since.
    assert_eq!(
        d.kernel_suppressed([("ns-isolation/ingress".to_string(), 540)].into()),
        40
    );
    // Allowed connections are not under the node's limit.
    let allow = sample(
        "Ai:np/prod/web/ingress/0",
        tcp("10.0.0.1", 2, "10.0.0.5", 80),
    );
    assert_eq!(record(d.decode(&allow, 10_000, &resolver)).suppressed, 0);
    // A second later the bucket has refilled: the next record carries the 47.
    let next = record(d.decode(&s, 11_000, &resolver));
    assert_eq!(next.suppressed, 47);
    assert_eq!(record(d.decode(&s, 11_000, &resolver)).suppressed, 0);
    // No limit to speak of, at any time.
    let mut unlimited = Decoder::new(u32::MAX);
    unlimited.set_rules(rules());
    assert!(matches!(
        unlimited.decode(&s, u64::MAX / 2, &resolver),
        Decoded::Record(_)
    ));
    // A rule written anew starts counting at 0.
    assert_eq!(
        d.kernel_suppressed([("ns-isolation/ingress".to_string(), 5)].into()),
        5
    );
}

#[test]
fn a_pass_then_the_baselines_drop_is_one_record_with_reason_pass() {
    let resolver = Resolver::default();
    let mut d = Decoder::new(100);
    d.set_rules(rules());
    let p = tcp("10.0.0.1", 7, "10.0.0.5", 22);
    assert_eq!(
        d.decode(&sample("Pi:anp/gate/ingress/0", p), 0, &resolver),
        Decoded::Pass
    );
    let r = record(d.decode(&sample("Di:default/ingress", p), 1, &resolver)).record("n1");
    assert_eq!(
        (r.reason, r.verdict, r.tier.as_deref()),
        (FlowReason::Pass, FlowVerdict::Denied, Some("baseline"))
    );
    // Without a Pass before it, the baseline's own reason.
    let r = record(d.decode(&sample("Di:default/ingress", p), 2, &resolver)).record("n1");
    assert_eq!(r.reason, FlowReason::DefaultDeny);
}

#[test]
fn the_ring_keeps_the_newest_and_its_memory_is_bounded() {
    let resolver = Resolver::default();
    let mut d = Decoder::new(1_000_000);
    d.set_rules(rules());
    let mut ring = FlowRing::with_capacity(4);
    for t in 0..10u64 {
        let s = sample(
            "Ai:np/prod/web/ingress/0",
            tcp("10.0.0.1", 1, "10.0.0.5", 80),
        );
        ring.push(record(d.decode(&s, t, &resolver)));
    }
    assert_eq!(ring.len(), 4);
    let times: Vec<u64> = ring.recent(0, 10).iter().map(|f| f.time_ms).collect();
    assert_eq!(times, [6, 7, 8, 9]);
    assert_eq!(ring.recent(8, 10).len(), 2);
    assert_eq!(ring.recent(0, 1)[0].time_ms, 9);
    // A full ring's flows, names aside (shared with the view and the rule map), under 32 MiB
    // with room to spare.
    let per_flow = std::mem::size_of::<Flow>();
    assert!(per_flow <= 200, "a flow is {per_flow} bytes");
    assert!(per_flow * RING_CAPACITY < 16 << 20);
}

#[test]
fn a_full_outbox_drops_and_counts_and_a_failed_batch_is_counted_for_the_next() {
    let resolver = Resolver::default();
    let mut d = Decoder::new(1_000_000);
    d.set_rules(rules());
    let flow = record(d.decode(
        &sample(
            "Ai:np/prod/web/ingress/0",
            tcp("10.0.0.1", 1, "10.0.0.5", 80),
        ),
        0,
        &resolver,
    ));
    let outbox = Outbox::with_capacity(3);
    assert!(outbox.take_batch("n1").is_none());
    for _ in 0..5 {
        outbox.push(flow.clone());
    }
    let batch = outbox.take_batch("n1").unwrap();
    assert_eq!((batch.records.len(), batch.dropped), (3, 2));
    assert!(batch.records.iter().all(|r| r.node == "n1"));
    // The controller did not take it: all five are dropped and said so in the next batch.
    outbox.failed(&batch);
    outbox.push(flow.clone());
    let next = outbox.take_batch("n1").unwrap();
    assert_eq!((next.records.len(), next.dropped), (1, 5));
    assert!(outbox.is_empty());
    // Batches are bounded.
    let big = Outbox::with_capacity(MAX_BATCH + 10);
    for _ in 0..MAX_BATCH + 10 {
        big.push(flow.clone());
    }
    assert_eq!(big.take_batch("n1").unwrap().records.len(), MAX_BATCH);
    assert_eq!(big.take_batch("n1").unwrap().records.len(), 10);
}

#[tokio::test]
async fn the_ring_is_served_as_ndjson_oldest_first() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    let recorder = Arc::new(FlowRecorder::new("n1"));
    let resolver = Resolver::new(&view(), &DesiredServices::default());
    let mut d = Decoder::new(100);
    d.set_rules(rules());
    for (t, port) in [(1u64, 80u16), (2, 81)] {
        let prefix = if port == 80 {
            "Ai:np/prod/web/ingress/0"
        } else {
            "Di:ns-isolation/ingress"
        };
        recorder.keep(record(d.decode(
            &sample(prefix, tcp("10.0.0.9", 1, "10.0.0.5", port)),
            t,
            &resolver,
        )));
    }
    assert_eq!(recorder.metrics().emitted.get(), 2);
    let get = |uri: &str| {
        router(recorder.clone()).oneshot(Request::get(uri).body(Body::empty()).unwrap())
    };
    let response = get("/v1/flows").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let lines: Vec<seam_model::flow::FlowRecord> = String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].verdict, FlowVerdict::Allowed);
    assert_eq!(lines[1].reason, FlowReason::Isolation);
    assert_eq!(lines[0].src.kind, PeerKind::Vm);
    let response = get("/v1/flows?since=2").await.unwrap();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(body.iter().filter(|b| **b == b'\n').count(), 1);
    assert_eq!(get("/v1/flows?since=soon").await.unwrap().status(), 400);
}

#[test]
fn metrics_are_registered_under_their_names() {
    let m = FlowMetrics::default();
    m.suppressed.inc_by(7);
    // Under the agent's registry prefix, as `/metrics` serves them.
    let mut registry = prometheus_client::registry::Registry::with_prefix("seam");
    m.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("seam_flow_samples_suppressed_total 7"),
        "{text}"
    );
    assert!(text.contains("seam_flow_records_emitted_total 0"));
    assert!(text.contains("seam_flow_records_dropped_total 0"));
    assert!(text.contains("seam_flow_service_lookups_found_total 0"));
    assert!(text.contains("seam_flow_service_lookups_failed_total 0"));
}

mod service_lookups {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use seam_nft::conntrack::{CtDirection, CtEntry, CtQuery};

    use super::super::service::{plan, resolve, ConntrackGet, Outcome, ServiceLookups};
    use super::*;

    const CLIENT: (&str, u16) = ("203.0.113.4", 5555);

    fn resolver() -> Resolver {
        Resolver::new(&view(), &services()).with_local(Some(ip("172.16.0.1")))
    }

    /// A record of a connection translated to the pod, from a sample without its original
    /// tuple (the kernel would not attach conntrack to NFLOG).
    fn to_backend() -> Flow {
        let mut d = Decoder::new(100);
        d.set_rules(rules());
        let s = sample(
            "Ai:np/prod/web/ingress/0",
            tcp(CLIENT.0, CLIENT.1, "10.0.0.5", 8080),
        );
        record(d.decode(&s, 1_000, &resolver()))
    }

    /// Conntrack holding `entries`, answering gets by either tuple; every query asked is logged.
    fn conntrack(entries: Vec<CtEntry>, asked: mpsc::Sender<CtQuery>) -> ConntrackGet {
        Box::new(move |q: &CtQuery| {
            let _ = asked.send(*q);
            Ok(entries.iter().copied().find(|e| {
                let tuple = match q.direction {
                    CtDirection::Original => (e.orig_src, e.orig_dst),
                    CtDirection::Reply => (e.reply_src, e.reply_dst),
                };
                e.protocol == q.protocol && tuple == (q.src, q.dst)
            }))
        })
    }

    fn entry(orig_dst: (&str, u16), reply_dst: (&str, u16)) -> CtEntry {
        CtEntry {
            protocol: 6,
            orig_src: (ip(CLIENT.0), CLIENT.1),
            orig_dst: (ip(orig_dst.0), orig_dst.1),
            reply_src: (ip("10.0.0.5"), 8080),
            reply_dst: (ip(reply_dst.0), reply_dst.1),
        }
    }

    #[test]
    fn a_connection_to_a_backend_names_its_service_from_the_entry_conntrack_finds() {
        let flow = to_backend();
        assert_eq!(flow.service, None, "NFLOG gave no original tuple");
        let lookup = plan(&flow, &resolver()).expect("the pod backs two frontends");
        let client = (ip(CLIENT.0), CLIENT.1);
        let pod = (ip("10.0.0.5"), 8080);
        // The reply tuple first (the packet reversed), then the original tuple of each frontend:
        // the ClusterIP, and the NodePort at this node's address.
        assert_eq!(
            lookup.queries,
            [
                (CtDirection::Reply, pod, client),
                (CtDirection::Original, client, (ip("10.96.0.10"), 80)),
                (CtDirection::Original, client, (ip("172.16.0.1"), 30080)),
            ]
            .map(|(direction, src, dst)| CtQuery {
                direction,
                protocol: 6,
                src,
                dst
            })
        );
        // Through the ClusterIP: found by the reply tuple.
        let (tx, asked) = mpsc::channel();
        let mut get = conntrack(vec![entry(("10.96.0.10", 80), CLIENT)], tx);
        assert_eq!(
            resolve(&mut get, &lookup),
            Outcome::Service("prod/web".into(), ip("10.96.0.10"), 80)
        );
        assert_eq!(asked.try_iter().count(), 1);
        // Through the NodePort, masqueraded to the node's address (the reply goes there): found
        // by the NodePort's original tuple.
        let (tx, asked) = mpsc::channel();
        let mut get = conntrack(
            vec![entry(("172.16.0.1", 30080), ("172.16.0.1", CLIENT.1))],
            tx,
        );
        assert_eq!(
            resolve(&mut get, &lookup),
            Outcome::Service("prod/web".into(), ip("172.16.0.1"), 30080)
        );
        assert_eq!(asked.try_iter().count(), 3);
        // Translated on the client's node: the entry here is to the pod itself.
        let (tx, asked) = mpsc::channel();
        let mut get = conntrack(vec![entry(("10.0.0.5", 8080), CLIENT)], tx);
        assert_eq!(resolve(&mut get, &lookup), Outcome::NotTranslated);
        assert_eq!(asked.try_iter().count(), 1, "no lookup after an answer");
        // No entry (the connection ended), or a kernel that does not answer: failed.
        let (tx, _asked) = mpsc::channel();
        assert!(matches!(
            resolve(&mut conntrack(vec![], tx), &lookup),
            Outcome::Failed(_)
        ));
        let mut refusing: ConntrackGet = Box::new(|_: &CtQuery| Err("timed out".to_string()));
        assert_eq!(
            resolve(&mut refusing, &lookup),
            Outcome::Failed("timed out".into())
        );
    }

    #[test]
    fn only_allowed_records_of_a_backend_without_a_service_are_looked_up() {
        let r = resolver();
        let flow = to_backend();
        // Denied: the entry was never confirmed, nothing to find.
        let denied = Flow {
            verdict: FlowVerdict::Denied,
            ..flow.clone()
        };
        assert_eq!(plan(&denied, &r), None);
        // Named already (NFLOG gave the original tuple).
        let named = Flow {
            service: Some(("prod/web".into(), ip("10.96.0.10"), 80)),
            ..flow.clone()
        };
        assert_eq!(plan(&named, &r), None);
        // Not a backend's port.
        let mut other = flow.clone();
        other.dst.port = Some(9090);
        assert_eq!(plan(&other, &r), None);
        // The reply direction: the backend is the source; the same tuples are asked.
        let mut reply = flow.clone();
        std::mem::swap(&mut reply.src, &mut reply.dst);
        assert_eq!(
            plan(&reply, &r).map(|l| l.queries),
            plan(&flow, &r).map(|l| l.queries)
        );
    }

    fn eventually(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_worker_keeps_records_with_their_service_and_a_full_queue_never_waits() {
        let recorder = Arc::new(FlowRecorder::new("n1"));
        // A conntrack that answers only once let go: the queue fills meanwhile.
        let (go, gate) = mpsc::channel::<()>();
        let (tx, _asked) = mpsc::channel();
        let mut inner = conntrack(vec![entry(("10.96.0.10", 80), CLIENT)], tx);
        let get: ConntrackGet = Box::new(move |q: &CtQuery| {
            let _ = gate.recv();
            inner(q)
        });
        let lookups = ServiceLookups::spawn(get, recorder.clone()).unwrap();
        let lookup = plan(&to_backend(), &resolver()).unwrap();
        let mut queued = 0;
        let handed_back = loop {
            match lookups.submit(to_backend(), lookup.clone()) {
                Ok(()) => queued += 1,
                Err(flow) => break flow,
            }
            assert!(queued <= 2_000, "the queue is bounded");
        };
        assert_eq!(handed_back.dst.ip, ip("10.0.0.5"));
        assert!(recorder.recent(0, 10).is_empty(), "nothing kept yet");
        for _ in 0..queued {
            go.send(()).unwrap();
        }
        eventually("every queued record is kept", || {
            recorder.metrics().emitted.get() == queued
        });
        let kept = recorder.recent(0, 1);
        let r = kept[0].record("n1");
        let svc = r.service.expect("named from conntrack");
        assert_eq!(
            (svc.service.as_str(), svc.ip, svc.port),
            ("prod/web", ip("10.96.0.10"), 80)
        );
        assert_eq!(r.dst.name.as_deref(), Some("web-1"));
        assert_eq!(recorder.metrics().service_found.get(), queued);
    }
}
