//! Conntrack gets by tuple in a real kernel, through Seam's Service translation: the entry of a
//! connection to a ClusterIP is found by the translated packet's reply tuple (the backend to the
//! client), and that of a masqueraded NodePort connection by its original tuple; both name the
//! address the client used. This is what the flow recorder asks (`seam_agent::flows::service`).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use seam_linux::conntrack::ConntrackReader;
use seam_linux::{apply_ruleset, netns};
use seam_model::PortProtocol;
use seam_nft::conntrack::{CtDirection, CtQuery};
use seam_nft::services::{DesiredServices, Frontend, FrontendKey, ServiceModel};
use seam_nft::table::{full_text, TableModel};

use crate::firewall::require_root;

/// Removes the namespaces even when the test fails.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = netns::delete(n);
        }
    }
}

fn ip_in(ns: &str, args: &str) {
    let mut all = vec!["-n", ns];
    all.extend(args.split_whitespace());
    let out = std::process::Command::new("ip")
        .args(&all)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    netns::run_in(&netns::path_of(ns), f).unwrap()
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const NODE: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 2);
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

#[test]
#[ignore = "privileged: netns, nftables and traffic"]
fn a_service_connections_entry_is_found_by_tuple_and_names_the_address_the_client_used() {
    require_root();
    // client (10.9.0.2) — node (10.9.0.1; 10.1.1.1) — backend (10.1.1.2:8080).
    let guard = Namespaces(
        ["c", "n", "b"]
            .map(|n| format!("sct{}{n}", std::process::id()))
            .to_vec(),
    );
    for n in &guard.0 {
        netns::create(n).unwrap();
    }
    let [client, node, backend] = [0, 1, 2].map(|i| guard.0[i].clone());
    ip_in(
        &client,
        &format!("link add c0 type veth peer name n0 netns {node}"),
    );
    ip_in(&client, "addr add 10.9.0.2/24 dev c0");
    ip_in(&client, "link set c0 up");
    ip_in(&client, "route add default via 10.9.0.1");
    ip_in(&node, "addr add 10.9.0.1/24 dev n0");
    ip_in(&node, "link set n0 up");
    ip_in(&node, "link set lo up");
    ip_in(
        &backend,
        &format!("link add b0 type veth peer name n1 netns {node}"),
    );
    ip_in(&backend, "addr add 10.1.1.2/24 dev b0");
    ip_in(&backend, "link set b0 up");
    ip_in(&backend, "route add default via 10.1.1.1");
    ip_in(&node, "addr add 10.1.1.1/24 dev n1");
    ip_in(&node, "link set n1 up");
    in_ns(&node, || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap()
    });
    // The ClusterIP 10.96.0.10:80 and NodePort 30080 of one Service, to the backend; the client
    // is outside Seam's segments, so its NodePort connections are translated to the node's
    // address (the reply tuple then is not the packet's).
    let to_backend = vec![(BACKEND, 8080)];
    let desired = DesiredServices {
        frontends: vec![
            Frontend {
                key: FrontendKey::Address {
                    addr: CLUSTER_IP,
                    protocol: PortProtocol::Tcp,
                    port: 80,
                },
                service: "prod/web:http".into(),
                backends: to_backend.clone(),
                affinity_timeout: None,
                masquerade_outside: true,
            },
            Frontend {
                key: FrontendKey::NodePort {
                    protocol: PortProtocol::Tcp,
                    port: 30080,
                },
                service: "prod/web:http".into(),
                backends: to_backend,
                affinity_timeout: None,
                masquerade_outside: true,
            },
        ],
        segment_subnets: [
            "10.1.0.0/16".parse().unwrap(),
            "10.9.0.2/32".parse().unwrap(),
        ]
        .into(),
        node_address: Some(NODE),
        ..DesiredServices::default()
    };
    let mut model = TableModel {
        services: ServiceModel::from_desired(&desired),
        ..TableModel::default()
    };
    in_ns(&node, || apply_ruleset(&full_text(&model))).unwrap();
    let listener = in_ns(&backend, || TcpListener::bind((BACKEND, 8080)).unwrap());
    let connect = |to: SocketAddr| {
        in_ns(&client, || {
            TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap()
        })
    };
    let get = |query: CtQuery| {
        in_ns(&node, move || {
            ConntrackReader::open(Duration::from_millis(500))
                .unwrap()
                .get(&query)
        })
        .unwrap()
    };

    // Through the ClusterIP, from inside the segments (not masqueraded): the translated packet
    // the policy sees is client → backend; reversed, it is the entry's reply tuple.
    let held = connect(SocketAddr::from((CLUSTER_IP, 80)));
    let (_accepted, seen) = listener.accept().unwrap();
    assert_eq!(seen.ip(), std::net::IpAddr::V4(CLIENT));
    let port = held.local_addr().unwrap().port();
    let entry = get(CtQuery {
        direction: CtDirection::Reply,
        protocol: 6,
        src: (BACKEND, 8080),
        dst: (CLIENT, port),
    })
    .expect("the entry of the ClusterIP connection");
    assert_eq!(entry.orig_dst, (CLUSTER_IP, 80), "{entry:?}");
    assert_eq!(entry.orig_src, (CLIENT, port));
    assert_eq!(entry.reply_src, (BACKEND, 8080));

    // Through the NodePort, from outside the segments: masqueraded to the node's address, so the
    // reversed packet is no entry's reply tuple; the original tuple (the client to the node's
    // address and the NodePort) finds it.
    model.services = ServiceModel::from_desired(&DesiredServices {
        segment_subnets: ["10.1.0.0/16".parse().unwrap()].into(),
        ..desired
    });
    in_ns(&node, || apply_ruleset(&full_text(&model))).unwrap();
    let held = connect(SocketAddr::from((NODE, 30080)));
    let (_accepted, seen) = listener.accept().unwrap();
    assert_eq!(seen.ip(), std::net::IpAddr::V4(NODE), "masqueraded");
    let port = held.local_addr().unwrap().port();
    let reversed = CtQuery {
        direction: CtDirection::Reply,
        protocol: 6,
        src: (BACKEND, 8080),
        dst: (CLIENT, port),
    };
    assert_eq!(get(reversed), None);
    let entry = get(CtQuery {
        direction: CtDirection::Original,
        protocol: 6,
        src: (CLIENT, port),
        dst: (NODE, 30080),
    })
    .expect("the entry of the NodePort connection");
    assert_eq!(entry.reply_src, (BACKEND, 8080), "{entry:?}");
    assert_eq!(entry.reply_dst.0, NODE);
    // A tuple of no connection: none, not an error.
    assert_eq!(
        get(CtQuery {
            direction: CtDirection::Original,
            protocol: 17,
            src: (CLIENT, 1),
            dst: (NODE, 2),
        }),
        None
    );
    drop(held);
}
