//! LoadBalancer addresses on a gateway's external interface, and stale conntrack entries of a
//! UDP Service, with real namespaces and packets.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use seam_dataplane::lb::{LbKernel, LbOp};
use seam_linux::{netns, LinuxKernel};
use seam_model::PortProtocol;
use seam_nft::conntrack::StaleFlow;
use seam_nft::services::FrontendKey;

use crate::firewall::require_root;

/// Namespaces removed on drop, even after a panic.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn new(tag: &str, names: &[&str]) -> Self {
        let made = Namespaces(
            names
                .iter()
                .map(|n| format!("s{tag}{n}{}", std::process::id()))
                .collect(),
        );
        for n in &made.0 {
            netns::create(n).unwrap();
        }
        made
    }
    fn name(&self, i: usize) -> &str {
        &self.0[i]
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = netns::delete(n);
        }
    }
}

fn ip(netns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["-n", netns])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip -n {netns} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` with a kernel connected inside `netns`, on a runtime of that thread.
fn in_netns<T: Send>(netns: &str, f: impl AsyncFnOnce(LinuxKernel) -> T + Send) -> T {
    netns::run_in(&netns::path_of(netns), || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let kernel = LinuxKernel::connect().unwrap();
            f(kernel).await
        })
    })
    .unwrap()
}

fn mac_of(netns: &str, ifname: &str) -> String {
    let out = ip(netns, &["-j", "link", "show", ifname]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["address"].as_str().unwrap().to_string()
}

fn neighbour(netns: &str, addr: &str) -> Option<String> {
    let out = ip(netns, &["-j", "neigh", "show", addr]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v.get(0)?.get("lladdr")?.as_str().map(String::from)
}

#[test]
#[ignore = "privileged: netns"]
fn a_gateway_serves_its_load_balancer_address_announces_it_and_removes_only_its_own() {
    require_root();
    let ns = Namespaces::new("lb", &["gw", "peer"]);
    let (gw, peer) = (ns.name(0), ns.name(1));
    ip(
        gw,
        &[
            "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", peer,
        ],
    );
    ip(gw, &["addr", "add", "203.0.113.1/24", "dev", "eth1"]);
    ip(gw, &["link", "set", "eth1", "up"]);
    ip(peer, &["addr", "add", "203.0.113.50/24", "dev", "eth0"]);
    ip(peer, &["link", "set", "eth0", "up"]);
    // The external network believes the address is elsewhere (a gateway that has died).
    ip(
        peer,
        &[
            "neigh",
            "replace",
            "203.0.113.101",
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            "eth0",
            "nud",
            "stale",
        ],
    );
    // Neighbour entries younger than `locktime` (1 s) ignore announcements.
    std::thread::sleep(Duration::from_millis(1100));
    let lb: Ipv4Addr = "203.0.113.101".parse().unwrap();
    let add = |lifetime_secs| LbOp::Add {
        addr: lb,
        lifetime_secs,
    };
    let (after_add, after_again) = in_netns(gw, async |k| {
        k.apply_lb("eth1", &add(30)).await.unwrap();
        let first = k.observe_lb("eth1").await.unwrap();
        // Idempotent: adding what is there succeeds and changes nothing.
        k.apply_lb("eth1", &add(30)).await.unwrap();
        (first, k.observe_lb("eth1").await.unwrap())
    });
    assert_eq!(after_add, [lb].into());
    assert_eq!(after_again, [lb].into());
    // The operator's address is not Seam's, and no /32 route was added to the main table.
    let routes = ip(gw, &["route", "show", "table", "main"]);
    assert!(!routes.contains("203.0.113.101"), "{routes}");
    // The announcements moved the peer's entry to the gateway's MAC; the address answers.
    assert_eq!(
        neighbour(peer, "203.0.113.101").as_deref(),
        Some(mac_of(gw, "eth1").as_str())
    );
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            peer,
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "203.0.113.101",
        ])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );

    let left = in_netns(gw, async |k| {
        k.apply_lb("eth1", &LbOp::Remove(lb)).await.unwrap();
        // Removing what is absent succeeds.
        k.apply_lb("eth1", &LbOp::Remove(lb)).await.unwrap();
        k.observe_lb("eth1").await.unwrap()
    });
    assert!(left.is_empty());
    let addrs = ip(gw, &["-4", "addr", "show", "dev", "eth1"]);
    assert!(addrs.contains("203.0.113.1/24"), "{addrs}");
    assert!(!addrs.contains("203.0.113.101"), "{addrs}");

    // An address whose lease is not renewed goes by itself: a gateway whose agent died stops
    // answering for it about when the others take it over. A refresh keeps it.
    let (refreshed, expired) = in_netns(gw, async |k| {
        k.apply_lb("eth1", &add(2)).await.unwrap();
        k.apply_lb(
            "eth1",
            &LbOp::Refresh {
                addr: lb,
                lifetime_secs: 3,
                announce: false,
            },
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let refreshed = k.observe_lb("eth1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        (refreshed, k.observe_lb("eth1").await.unwrap())
    });
    assert_eq!(refreshed, [lb].into());
    assert!(expired.is_empty(), "{expired:?}");
}

/// `nft SCRIPT` in namespace `netns`.
fn nft(netns: &str, script: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "nft", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nft {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A node for the conntrack tests: one namespace whose backends and client are addresses of
/// `lo` (no dummy driver needed) in 10.0.0.0/24, with a route to the service range, as a node
/// has (its default route): the output hook's translation comes after the first route lookup.
fn conntrack_node(tag: &str) -> Namespaces {
    let ns = Namespaces::new(tag, &["node"]);
    let node = ns.name(0);
    ip(node, &["link", "set", "lo", "up"]);
    ip(node, &["addr", "add", "10.0.0.1/24", "dev", "lo"]);
    ip(node, &["route", "add", "10.96.0.0/12", "dev", "lo"]);
    ns
}

/// A UDP server that answers each datagram with its name.
fn server(sock: UdpSocket, name: &'static str) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = sock.recv_from(&mut buf) {
            if &buf[..4] == b"stop" {
                return;
            }
            let _ = sock.send_to(name.as_bytes(), from);
        }
    });
}

#[test]
#[ignore = "privileged: netns"]
fn a_udp_stream_moves_to_the_other_backend_once_its_stale_entry_is_deleted() {
    require_root();
    let ns = conntrack_node("ct");
    let node = ns.name(0);
    ip(node, &["addr", "add", "10.0.0.2/24", "dev", "lo"]);
    let nft = |script: &str| nft(node, script);
    nft("add table ip svc; add chain ip svc out { type nat hook output priority -100; }; add rule ip svc out ip daddr 10.96.0.10 udp dport 53 dnat to 10.0.0.1:5353");
    let (a, b, client) = netns::run_in(&netns::path_of(node), || {
        (
            UdpSocket::bind("10.0.0.1:5353").unwrap(),
            UdpSocket::bind("10.0.0.2:5353").unwrap(),
            UdpSocket::bind("10.0.0.1:40000").unwrap(),
        )
    })
    .unwrap();
    server(a, "A");
    server(b, "B");
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let frontend: SocketAddr = "10.96.0.10:53".parse().unwrap();
    let ask = || {
        client.send_to(b"ping", frontend).unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(from, frontend, "the reply comes from the frontend");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(ask(), "A");
    // A is removed from the Service: new connections go to B, but the stream keeps its entry.
    nft("flush chain ip svc out; add rule ip svc out ip daddr 10.96.0.10 udp dport 53 dnat to 10.0.0.2:5353");
    assert_eq!(ask(), "A");
    let flow = StaleFlow {
        frontend: FrontendKey::Address {
            addr: "10.96.0.10".parse().unwrap(),
            protocol: PortProtocol::Udp,
            port: 53,
        },
        backend: Some(("10.0.0.1".parse().unwrap(), 5353)),
    };
    // Another backend's flow deletes nothing.
    let other = StaleFlow {
        backend: Some(("10.0.0.3".parse().unwrap(), 5353)),
        ..flow
    };
    let (none, deleted, left) = netns::run_in(&netns::path_of(node), || {
        let none = seam_linux::conntrack::delete_stale(&[other]).unwrap();
        let deleted = seam_linux::conntrack::delete_stale(&[flow]).unwrap();
        (
            none,
            deleted,
            seam_linux::conntrack::list_entries().unwrap(),
        )
    })
    .unwrap();
    assert_eq!(none, 0);
    assert_eq!(deleted, 1);
    assert!(!left.iter().any(|e| e.is_of(&flow)), "{left:?}");
    // The next datagram of the same stream is a new connection: it reaches B.
    assert_eq!(ask(), "B");
    assert_eq!(ask(), "B");
    for port in ["10.0.0.1:5353", "10.0.0.2:5353"] {
        let _ = client.send_to(b"stop", port);
    }
}

#[test]
#[ignore = "privileged: netns"]
fn a_udp_stream_sent_before_its_service_had_a_backend_reaches_one_once_its_entry_is_deleted() {
    require_root();
    let ns = conntrack_node("cu");
    let node = ns.name(0);
    let nft = |script: &str| nft(node, script);
    // Conntrack is on, as on a node (policy matches `ct state`), before any translation.
    nft("add table ip svc; add chain ip svc out { type nat hook output priority -100; }; add chain ip svc filter { type filter hook output priority 0; }; add rule ip svc filter ct state new counter");
    let (a, client) = netns::run_in(&netns::path_of(node), || {
        (
            UdpSocket::bind("10.0.0.1:5353").unwrap(),
            UdpSocket::bind("10.0.0.1:40001").unwrap(),
        )
    })
    .unwrap();
    server(a, "A");
    client
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let frontend: SocketAddr = "10.96.0.11:53".parse().unwrap();
    // Nothing translates the frontend yet: the datagram makes an entry that is not translated
    // (and is lost).
    client.send_to(b"ping", frontend).unwrap();
    let ask = || {
        client.send_to(b"ping", frontend).unwrap();
        let mut buf = [0u8; 8];
        client
            .recv_from(&mut buf)
            .ok()
            .map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    // The Service gets its backend: the stream still follows its untranslated entry.
    nft("add rule ip svc out ip daddr 10.96.0.11 udp dport 53 dnat to 10.0.0.1:5353");
    assert_eq!(ask(), None, "the stream reached the backend past its entry");
    let flow = StaleFlow {
        frontend: FrontendKey::Address {
            addr: "10.96.0.11".parse().unwrap(),
            protocol: PortProtocol::Udp,
            port: 53,
        },
        backend: None,
    };
    let (deleted, left) = netns::run_in(&netns::path_of(node), || {
        (
            seam_linux::conntrack::delete_stale(&[flow]).unwrap(),
            seam_linux::conntrack::list_entries().unwrap(),
        )
    })
    .unwrap();
    assert_eq!(deleted, 1);
    assert!(!left.iter().any(|e| e.is_of(&flow)), "{left:?}");
    // The next datagram of the same stream is a new connection: translated, answered.
    assert_eq!(ask().as_deref(), Some("A"));
    let _ = client.send_to(b"stop", "10.0.0.1:5353");
}

#[test]
#[ignore = "privileged: netns"]
fn a_second_gateway_takes_an_address_over_when_the_first_stops_renewing_it() {
    require_root();
    // An external switch (a bridge in its own namespace) with two gateways and a client on it.
    let ns = Namespaces::new("to", &["sw", "gw1", "gw2", "cl"]);
    let (sw, gw1, gw2, cl) = (ns.name(0), ns.name(1), ns.name(2), ns.name(3));
    ip(sw, &["link", "add", "xn0", "type", "bridge"]);
    ip(sw, &["link", "set", "xn0", "up"]);
    for (i, (host, addr)) in [
        (gw1, "203.0.113.1/24"),
        (gw2, "203.0.113.2/24"),
        (cl, "203.0.113.50/24"),
    ]
    .into_iter()
    .enumerate()
    {
        let port = format!("p{i}");
        ip(
            sw,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", "eth1", "netns", host,
            ],
        );
        ip(sw, &["link", "set", &port, "master", "xn0", "up"]);
        ip(host, &["addr", "add", addr, "dev", "eth1"]);
        ip(host, &["link", "set", "eth1", "up"]);
    }
    let lb: Ipv4Addr = "203.0.113.101".parse().unwrap();
    let ping = || {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                cl,
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "203.0.113.101",
            ])
            .output()
            .unwrap()
            .status
            .success()
    };
    // gw1 owns the address; its agent then dies: the lease's last 2 s run out on the address too.
    in_netns(gw1, async |k| {
        k.apply_lb(
            "eth1",
            &LbOp::Add {
                addr: lb,
                lifetime_secs: 2,
            },
        )
        .await
        .unwrap()
    });
    assert!(ping());
    assert_eq!(
        neighbour(cl, "203.0.113.101").as_deref(),
        Some(mac_of(gw1, "eth1").as_str())
    );
    // gw2 sees gw1's lease gone and takes the address over.
    std::thread::sleep(Duration::from_millis(2500));
    in_netns(gw2, async |k| {
        k.apply_lb(
            "eth1",
            &LbOp::Add {
                addr: lb,
                lifetime_secs: 6,
            },
        )
        .await
        .unwrap()
    });
    let gw1_left = in_netns(gw1, async |k| k.observe_lb("eth1").await.unwrap());
    assert!(gw1_left.is_empty(), "{gw1_left:?}");
    // The client's neighbour entry moved with the announcements, and the address answers.
    assert_eq!(
        neighbour(cl, "203.0.113.101").as_deref(),
        Some(mac_of(gw2, "eth1").as_str())
    );
    assert!(ping());
}
