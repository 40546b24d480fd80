//! Flow samples with real packets: the x/y/z pods on a node namespace whose table samples its
//! verdicts (the agent's renderer with sampling on), read over NFLOG as the agent reads them.

use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use seam_firewall::render::table::Renderer;
use seam_firewall::{compile, flows::sampled_rules};
use seam_linux::nflog::{seam_config, NflogError, NflogSocket};
use seam_linux::{apply_ruleset, netns, nft::read_suppressed};
use seam_nft::nflog::Sample;
use seam_nft::services::{FrontendKey, RefusalSampling};
use seam_nft::FlowSampling;

use crate::firewall::{plan, policies, suite, Lab};

/// Ingress of every pod of x: TCP 80 from namespace y only; everything else to x is isolated.
const POLICY: &str = r#"[{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
  "metadata": {"name": "web", "namespace": "x"},
  "spec": {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
    "ports": [{"protocol": "TCP", "port": 80}]}]}}]"#;

const GROUP: u16 = 4711;
/// A Service frontend without endpoints, in the pods' subnet.
const FRONTEND: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 200);
const DROP_RATE: u32 = 5;

/// Reads samples until none came for `quiet`.
fn drain(socket: &mut NflogSocket, quiet: Duration) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        let read = socket.read(Some(Duration::from_millis(100))).unwrap();
        assert!(!read.lost, "the kernel dropped samples");
        if !read.samples.is_empty() {
            last = Instant::now();
            out.extend(read.samples);
        }
    }
    out
}

#[test]
#[ignore = "privileged: netns"]
fn verdicts_are_sampled_once_per_new_connection_and_drops_under_a_counted_limit() {
    let suite = suite("cases.json");
    let refs = suite.model.order.clone();
    let plan = plan(&refs);
    let addrs: Vec<Ipv4Addr> = refs.iter().map(|r| plan[r]).collect();
    let lab = Lab::build("f", &addrs, &[80, 81], &[]);
    let inv = suite
        .model
        .xyz
        .clone()
        .unwrap()
        .base_inventory(&plan)
        .unwrap();
    let set = policies(&serde_json::from_str(POLICY).unwrap(), &plan);
    let names: Vec<String> = inv.endpoints.iter().map(|e| e.reference()).collect();
    let ruleset = compile(&set, &inv, &names).unwrap();
    let sampling = FlowSampling {
        group: GROUP,
        drop_rate: DROP_RATE,
        allow_rate: None,
        snaplen: 128,
    };
    let mut model = Renderer::with_sampling(Some(sampling)).model(&ruleset);
    // A Service frontend with no endpoint, refused (and sampled) on the node.
    let frontend = FrontendKey::Address {
        addr: FRONTEND,
        protocol: seam_model::PortProtocol::Tcp,
        port: 80,
    };
    model.services.enabled = true;
    model.services.reject.insert(frontend);
    model.services.refusal_sampling = Some(RefusalSampling::of(&sampling));
    netns::run_in(&lab.node_path(), || {
        apply_ruleset(&seam_nft::table::full_text(&model))
    })
    .unwrap()
    .unwrap();
    let meta = sampled_rules(&ruleset);
    let node = lab.node_path();
    let mut socket = NflogSocket::bind_in(Some(&node), GROUP, seam_config(128)).unwrap();
    // The group is this socket's: a second reader on the node is refused, clearly.
    let again = NflogSocket::bind_in(Some(&node), GROUP, seam_config(128));
    assert!(
        matches!(again, Err(NflogError::GroupInUse { group: GROUP })),
        "{again:?}"
    );

    let (xa, yb, yc) = (plan["x/a"], plan["y/b"], plan["y/c"]);
    // An allowed connection (y/b → x/a:80), a denied one (→ :81), a flood of denied datagrams.
    let allowed_port = netns::run_in(&lab.pod_path(yb), || {
        let s = TcpStream::connect_timeout(&SocketAddr::from((xa, 80)), Duration::from_secs(2))
            .unwrap();
        s.local_addr().unwrap().port()
    })
    .unwrap();
    netns::run_in(&lab.pod_path(yb), || {
        let denied =
            TcpStream::connect_timeout(&SocketAddr::from((xa, 81)), Duration::from_millis(500));
        assert!(denied.is_err());
    })
    .unwrap();
    // z/a connects to the frontend (its address resolved by hand: nothing answers ARP for it).
    let za = plan["z/a"];
    let z_ns = lab.pod_name(za);
    crate::firewall::ip(&[
        "-n",
        &z_ns,
        "neigh",
        "add",
        &FRONTEND.to_string(),
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "eth0",
    ]);
    netns::run_in(&lab.pod_path(za), || {
        let refused = TcpStream::connect_timeout(
            &SocketAddr::from((FRONTEND, 80)),
            Duration::from_millis(500),
        );
        assert!(refused.is_err());
    })
    .unwrap();
    let suppressed_before = netns::run_in(&node, read_suppressed).unwrap().unwrap();
    const FLOOD: u64 = 300;
    netns::run_in(&lab.pod_path(yc), || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        for _ in 0..FLOOD {
            s.send_to(b"flood", (xa, 81)).unwrap();
        }
    })
    .unwrap();
    let samples = drain(&mut socket, Duration::from_millis(700));
    let suppressed_after = netns::run_in(&node, read_suppressed).unwrap().unwrap();

    // Every prefix is one the agent can map back to its rule.
    for s in &samples {
        let refusal = [true, false]
            .map(RefusalSampling::prefix)
            .contains(&s.prefix);
        assert!(
            meta.contains_key(&s.prefix) || refusal,
            "unknown prefix {:?}",
            s.prefix
        );
        assert_eq!(s.group, GROUP);
    }
    let of = |prefix: &str, pred: &dyn Fn(&Sample) -> bool| -> Vec<&Sample> {
        samples
            .iter()
            .filter(|s| s.prefix == prefix && pred(s))
            .collect()
    };
    let conn = |s: &Sample| {
        s.packet.is_some_and(|p| {
            p.protocol == 6 && p.src == yb && p.dst == xa && p.src_port == Some(allowed_port)
        })
    };
    // The allowed connection: once at the ingress rule that allowed it, once at y/b's egress
    // (nothing selects y/b: the default allow).
    assert_eq!(of("Ai:np/x/web/ingress/0", &conn).len(), 1, "{samples:#?}");
    // With the kernel's conntrack glue, a sample carries its connection's original tuple (here
    // untranslated: the packet's own).
    if socket.conntrack() {
        let original = of("Ai:np/x/web/ingress/0", &conn)[0].original;
        assert_eq!(
            original.map(|o| (o.protocol, o.src, o.dst)),
            Some((6, (yb, allowed_port), (xa, 80)))
        );
    }
    assert_eq!(of("Ae:default/egress", &conn).len(), 1);
    let rule = &meta["Ai:np/x/web/ingress/0"];
    assert_eq!(rule.policy.as_deref(), Some("NetworkPolicy x/web"));
    // The denied connection: at the isolation of x/a's ingress.
    let syn81 = |s: &Sample| {
        s.packet
            .is_some_and(|p| p.protocol == 6 && p.src == yb && p.dst_port == Some(81))
    };
    assert!(!of("Di:ns-isolation/ingress", &syn81).is_empty());
    // The refusal: sampled on the client's side, to the frontend's address.
    let refusal = |s: &Sample| {
        s.packet
            .is_some_and(|p| p.src == za && p.dst == FRONTEND && p.dst_port == Some(80))
    };
    assert!(
        !of(&RefusalSampling::prefix(true), &refusal).is_empty(),
        "{samples:#?}"
    );
    // The flood: sampled at most at the limit (its burst, as it came at once), and every
    // datagram either sampled or counted as suppressed.
    let flood = |s: &Sample| s.packet.is_some_and(|p| p.protocol == 17 && p.src == yc);
    let sampled = of("Di:ns-isolation/ingress", &flood).len() as u64;
    let key = "ns-isolation/ingress";
    let suppressed = suppressed_after.get(key).copied().unwrap_or(0)
        - suppressed_before.get(key).copied().unwrap_or(0);
    assert!(
        (1..=u64::from(DROP_RATE) + 1).contains(&sampled),
        "{sampled} samples of the flood"
    );
    assert_eq!(
        sampled + suppressed,
        FLOOD,
        "sampled {sampled}, suppressed {suppressed}"
    );
}

#[test]
#[ignore = "privileged: netns"]
fn refusals_of_services_without_endpoints_are_sampled_and_the_table_reads_back() {
    use seam_nft::services::{RefusalSampling, ServiceModel};
    crate::firewall::require_root();
    let name = format!("sfl{}r", std::process::id());
    netns::create(&name).unwrap();
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = netns::delete(&self.0);
        }
    }
    let _gone = Gone(name.clone());
    let sampling = RefusalSampling {
        group: GROUP,
        rate: DROP_RATE,
        snaplen: 96,
    };
    let mut services = ServiceModel::default();
    services.enabled = true;
    services.refusal_sampling = Some(sampling);
    let model = seam_nft::table::TableModel {
        services: services.clone(),
        ..Default::default()
    };
    let text = seam_nft::table::full_text(&model);
    assert!(text.contains("jump svc_refused_e") && text.contains("jump svc_refused_i"));
    let listed = netns::run_in(&netns::path_of(&name), || {
        apply_ruleset(&text)?;
        seam_linux::nft::list_table_text()
    })
    .unwrap()
    .unwrap()
    .unwrap();
    let back = seam_nft::table::from_nft_json(&listed).expect("the table reads back");
    assert_eq!(back.services.refusal_sampling, Some(sampling));
    // Without sampling: no sample chains, nothing logged.
    services.refusal_sampling = None;
    let plain = seam_nft::table::TableModel {
        services,
        ..Default::default()
    };
    let listed = netns::run_in(&netns::path_of(&name), || {
        apply_ruleset(&seam_nft::table::full_text(&plain))?;
        seam_linux::nft::list_table_text()
    })
    .unwrap()
    .unwrap()
    .unwrap();
    assert!(!listed.contains("\"log\""));
    let back = seam_nft::table::from_nft_json(&listed).unwrap();
    assert_eq!(back.services.refusal_sampling, None);
}
