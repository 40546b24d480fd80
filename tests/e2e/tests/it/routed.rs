//! Routed segments (`seamd --segment-encap cross-subnet`, the default): the lab's nodes share
//! one underlay subnet, so pods and VMs on different nodes reach each other routed over the
//! underlay, not through the segments' VXLAN devices, in one segment and across segments; with
//! `always` the VXLAN carries them again, as it does for an `overlay` segment. And the faults:
//! a mode switch while a TCP stream and a ping run (at most one lost echo and one retransmitted
//! segment per switch), a peer that moves to another subnet (back to the VXLAN), and a node whose
//! underlay address changes. Strict reverse-path filtering on every node, as distributions that
//! default to it have: seamd loosens its underlay interface itself.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use seam_e2e::{controller, ip, ip_json, netns_name, vxlan_fdb, LabGuard, TestLab};
use seam_lab::probe;
use seam_lab::vm::VmOptions;
use seam_lab::{NodeInfo, PodInfo};
use seam_model::{gateway_mac, SegmentForwarding};

use crate::gateway::{strict_rp_filter, sysctl, within};

fn vni(lab: &seam_lab::Lab, segment: &str) -> u32 {
    let segs = controller(lab, async |c| c.list_segments().await);
    segs.iter()
        .find(|s| s.name == segment)
        .unwrap_or_else(|| panic!("no segment {segment}"))
        .vni
}

fn vxlan(vni: u32) -> String {
    format!("seam-v{vni}")
}

/// Packets the device sent (`ip -s link`).
fn tx_packets(netns: &str, dev: &str) -> u64 {
    let v = ip_json(netns, &["-s", "link", "show", "dev", dev]);
    v[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no tx counter: {v}"))
}

/// The MAC of `ip`'s neighbour entry in `netns` (on `dev` when given), as `ip neigh` shows it.
fn neighbour(netns: &str, ip: Ipv4Addr, dev: Option<&str>) -> String {
    let ip = ip.to_string();
    let mut args = vec!["neigh", "show", "to", ip.as_str()];
    if let Some(dev) = dev {
        args.extend(["dev", dev]);
    }
    ip_json(netns, &args)[0]["lladdr"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Seam's routes to a peer's underlay (`proto 83`): destination → next hop.
fn routes83(netns: &str) -> Vec<(String, String)> {
    ip_json(netns, &["route", "show", "proto", "83"])
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["dst"].as_str().unwrap_or_default().to_string(),
                r["gateway"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// `ping -c COUNT -i INTERVAL` from `netns`: (sent, received).
fn pings(netns: &str, ip: Ipv4Addr, count: u32, interval: &str) -> (u32, u32) {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "ping", "-q", "-n", "-i", interval])
        .args(["-c", &count.to_string(), "-W", "1", &ip.to_string()])
        .output()
        .unwrap();
    summary(&String::from_utf8_lossy(&out.stdout))
}

/// `N packets transmitted, M received` of ping's summary.
fn summary(text: &str) -> (u32, u32) {
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in {text:?}"));
    let num = |i: usize| -> u32 {
        line.split(',')
            .nth(i)
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("ping summary {line:?}"))
    };
    (num(0), num(1))
}

/// Every counter of the namespace's `/proc/net/netstat` and `/proc/net/snmp` (`TcpExt:` and
/// `Tcp:` lines), by name.
fn tcp_counters(netns: &std::path::Path) -> std::collections::BTreeMap<String, i64> {
    let text = seam_linux::netns::run_in(netns, || {
        let a = std::fs::read_to_string("/proc/thread-self/net/netstat")?;
        let b = std::fs::read_to_string("/proc/thread-self/net/snmp")?;
        Ok::<_, std::io::Error>(a + &b)
    })
    .unwrap()
    .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = std::collections::BTreeMap::new();
    for pair in lines.chunks(2) {
        if let [names, values] = pair {
            let mut n = names.split_whitespace();
            let prefix = n.next().unwrap_or_default();
            if prefix != "TcpExt:" && prefix != "Tcp:" {
                continue;
            }
            for (k, v) in n.zip(values.split_whitespace().skip(1)) {
                out.insert(k.to_string(), v.parse().unwrap_or(0));
            }
        }
    }
    out
}

/// The sum of the tx counters of `devs` on the lab's nodes `(netns, dev)`.
fn vxlan_tx(devs: &[(String, String)]) -> u64 {
    devs.iter().map(|(ns, dev)| tx_packets(ns, dev)).sum()
}

/// Waits until `node` routes `pod` over the underlay to `via` and answers ARP for it with the
/// segment's gateway MAC.
fn wait_routed(netns: &str, vni: u32, pod: Ipv4Addr, via: Ipv4Addr) {
    let gw = gateway_mac(vni).to_string();
    within(15, &format!("{netns} routes {pod} via {via}"), || {
        routes83(netns).contains(&(pod.to_string(), via.to_string()))
            && neighbour(netns, pod, Some(&vxlan(vni))) == gw
    });
}

/// The lab most of these tests start from: `n1` and `n2` with strict reverse-path filtering,
/// pod `a` of `blue` on n1 and `b` on n2, each node routing the other's pod.
struct RoutedPair {
    g: LabGuard,
    a: PodInfo,
    b: PodInfo,
    blue: u32,
    n1: NodeInfo,
    n2: NodeInfo,
}

fn routed_pair(lab: &str) -> RoutedPair {
    let mut g = LabGuard::up(lab, 2, &[]);
    strict_rp_filter(&g.lab, &["n1", "n2"]);
    let a = g.lab.workloads().add_pod("n1", "blue", "a").unwrap();
    let b = g.lab.workloads().add_pod("n2", "blue", "b").unwrap();
    let blue = vni(&g.lab, "ns-blue");
    let (n1, n2) = (g.node("n1"), g.node("n2"));
    wait_routed(&n1.netns, blue, b.ip, n2.underlay_ip);
    wait_routed(&n2.netns, blue, a.ip, n1.underlay_ip);
    RoutedPair {
        g,
        a,
        b,
        blue,
        n1,
        n2,
    }
}

#[test]
#[ignore = "privileged: netns"]
fn pods_and_vms_on_nodes_of_one_subnet_are_routed_without_vxlan_and_always_keeps_it() {
    let mut g = LabGuard::up("e2e-routed", 2, &[]);
    strict_rp_filter(&g.lab, &["n1", "n2"]);
    g.lab.topology().make_hypervisor("n2").unwrap();
    let a = g.lab.workloads().add_pod("n1", "blue", "a").unwrap();
    let b = g.lab.workloads().add_pod("n2", "blue", "b").unwrap();
    let c = g.lab.workloads().add_pod("n2", "green", "c").unwrap();
    let vm = g
        .lab
        .workloads()
        .add_vm("vm1", "n2", "ns-blue", &VmOptions::default())
        .unwrap();
    probe::serve_tcp(&b.netns_path, 8080, "b".into()).unwrap();
    let (blue, green) = (vni(&g.lab, "ns-blue"), vni(&g.lab, "ns-green"));
    let (n1, n2) = (g.node("n1"), g.node("n2"));
    // n1 routes b and the VM to n2's underlay address (proto 83) and answers ARP for them with
    // the segment's gateway MAC; n2 routes a back; the FDB entries stay.
    wait_routed(&n1.netns, blue, b.ip, n2.underlay_ip);
    wait_routed(&n1.netns, blue, vm.ip, n2.underlay_ip);
    wait_routed(&n1.netns, green, c.ip, n2.underlay_ip);
    wait_routed(&n2.netns, blue, a.ip, n1.underlay_ip);
    let route = ip_json(&n1.netns, &["route", "get", &b.ip.to_string()]);
    assert_eq!(route[0]["dev"], "eth0", "{route}");
    assert_eq!(route[0]["gateway"], n2.underlay_ip.to_string(), "{route}");
    assert!(
        vxlan_fdb(&n1.netns, &vxlan(blue))
            .iter()
            .any(|(_, dst)| *dst == n2.underlay_ip.to_string()),
        "the FDB entries stay"
    );
    let devs: Vec<(String, String)> = [&n1, &n2]
        .iter()
        .flat_map(|n| [blue, green].map(|v| (n.netns.clone(), vxlan(v))))
        .collect();
    let vm_ns = vm.netns();
    let flows = |count: u32| {
        let a_ns = netns_name(&a.netns_path);
        for (from, to, what) in [
            (&a_ns, b.ip, "pod -> pod, one segment"),
            (&a_ns, c.ip, "pod -> pod, across segments"),
            (&vm_ns, a.ip, "VM -> pod"),
        ] {
            assert_eq!(pings(from, to, count, "0.02"), (count, count), "{what}");
        }
        let said = probe::tcp(&a.netns_path, b.ip, 8080, Duration::from_secs(2)).unwrap();
        assert_eq!(said.as_deref(), Some("b"), "tcp a -> b");
    };
    let before = vxlan_tx(&devs);
    flows(20);
    let routed_tx = vxlan_tx(&devs) - before;
    // 60 echoes and their replies, and a TCP connection: none through a VXLAN device.
    assert!(routed_tx < 5, "{routed_tx} packets went through VXLAN");
    // What the pod sees: the remote pod's MAC is its gateway's.
    assert_eq!(
        neighbour(&netns_name(&a.netns_path), b.ip, None),
        gateway_mac(blue).to_string()
    );

    // An overlay segment keeps the VXLAN: green's entries on n1 go back to c's own MAC.
    let mut seg = controller(&g.lab, async |cl| cl.get_segment("ns-green").await);
    seg.forwarding = SegmentForwarding::Overlay;
    controller(&g.lab, async |cl| cl.put_segment(&seg).await);
    within(10, "n1 no longer routes c", || {
        !routes83(&n1.netns)
            .iter()
            .any(|(d, _)| *d == c.ip.to_string())
            && neighbour(&n1.netns, c.ip, Some(&vxlan(green))) != gateway_mac(green).to_string()
    });
    let before = vxlan_tx(&devs);
    assert_eq!(
        pings(&netns_name(&a.netns_path), c.ip, 10, "0.02"),
        (10, 10)
    );
    // a's request goes routed into green on n1, then through green's VXLAN.
    assert!(vxlan_tx(&devs) - before >= 10, "overlay: through VXLAN");
    seg.forwarding = SegmentForwarding::Routed;
    controller(&g.lab, async |cl| cl.put_segment(&seg).await);
    wait_routed(&n1.netns, green, c.ip, n2.underlay_ip);

    // `always` on one end: both keep the VXLAN, and traffic flows through it.
    g.lab.topology().set_segment_encap("n1", "always").unwrap();
    within(
        15,
        "n1 and n2 no longer route each other's endpoints",
        || {
            routes83(&n1.netns).is_empty()
                && routes83(&n2.netns).is_empty()
                && neighbour(&n1.netns, b.ip, Some(&vxlan(blue))) != gateway_mac(blue).to_string()
        },
    );
    let before = vxlan_tx(&devs);
    flows(20);
    let vxlan_sent = vxlan_tx(&devs) - before;
    // Every echo and every reply crossed a VXLAN device.
    assert!(vxlan_sent >= 120, "only {vxlan_sent} packets through VXLAN");

    // a resolves b again while both keep the VXLAN: it caches b's own MAC. Back to
    // `cross-subnet`, n1 tells its pods that b is now at the gateway MAC (one gratuitous ARP
    // per port), so a moves to the routed path at once instead of when its entry expires.
    let a_ns = netns_name(&a.netns_path);
    ip(&a_ns, &["neigh", "flush", "to", &b.ip.to_string()]);
    assert_eq!(pings(&a_ns, b.ip, 2, "0.02"), (2, 2));
    assert_ne!(
        neighbour(&a_ns, b.ip, None),
        gateway_mac(blue).to_string(),
        "a cached b's own MAC"
    );
    g.lab
        .topology()
        .set_segment_encap("n1", "cross-subnet")
        .unwrap();
    wait_routed(&n1.netns, blue, b.ip, n2.underlay_ip);
    wait_routed(&n2.netns, blue, a.ip, n1.underlay_ip);
    within(5, "a learns b's gateway MAC", || {
        neighbour(&a_ns, b.ip, None) == gateway_mac(blue).to_string()
    });
    let before = vxlan_tx(&devs);
    assert_eq!(pings(&a_ns, b.ip, 20, "0.02"), (20, 20));
    let after_switch = vxlan_tx(&devs) - before;
    assert!(
        after_switch < 5,
        "{after_switch} packets went through VXLAN"
    );
}

/// A TCP stream from `a` to `b` (a server in `b` that reads everything), writing until `stop`.
fn stream(a: &PodInfo, b: &PodInfo, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let listener = seam_linux::netns::run_in(&b.netns_path, || {
        TcpListener::bind(SocketAddr::from((b.ip, 9100)))
    })
    .unwrap()
    .unwrap();
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    let target = SocketAddr::from((b.ip, 9100));
    let mut conn = seam_linux::netns::run_in(&a.netns_path, || {
        TcpStream::connect_timeout(&target, Duration::from_secs(2))
    })
    .unwrap()
    .unwrap();
    std::thread::spawn(move || {
        let chunk = vec![7u8; 16 << 10];
        while !stop.load(Ordering::Acquire) {
            conn.write_all(&chunk).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(conn);
        reader.join().unwrap()
    })
}

#[test]
#[ignore = "privileged: netns"]
fn a_mode_switch_while_traffic_flows_loses_at_most_one_packet() {
    let RoutedPair {
        mut g,
        a,
        b,
        blue,
        n1,
        n2,
    } = routed_pair("e2e-rswitch");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = stream(&a, &b, stop.clone());
    let a_ns = netns_name(&a.netns_path);
    for (mode, routed) in [("always", false), ("cross-subnet", true)] {
        let counters = tcp_counters(&a.netns_path);
        // An echo every 10 ms from before the switch until after it has settled.
        let ping = {
            let (a_ns, ip) = (a_ns.clone(), b.ip);
            std::thread::spawn(move || {
                let out = Command::new("ip")
                    .args(["netns", "exec", &a_ns, "ping", "-q", "-n", "-i", "0.01"])
                    .args(["-w", "8", &ip.to_string()])
                    .output()
                    .unwrap();
                summary(&String::from_utf8_lossy(&out.stdout))
            })
        };
        std::thread::sleep(Duration::from_secs(1));
        g.lab.topology().set_segment_encap("n2", mode).unwrap();
        if routed {
            wait_routed(&n1.netns, blue, b.ip, n2.underlay_ip);
            wait_routed(&n2.netns, blue, a.ip, n1.underlay_ip);
        } else {
            within(15, "both back on the VXLAN", || {
                routes83(&n1.netns).is_empty() && routes83(&n2.netns).is_empty()
            });
        }
        let (echoes, answered) = ping.join().unwrap();
        let after = tcp_counters(&a.netns_path);
        let delta =
            |k: &str| after.get(k).copied().unwrap_or(0) - counters.get(k).copied().unwrap_or(0);
        let resent = delta("RetransSegs");
        // A retransmission the receiver reports as a duplicate (D-SACK) was not a loss: a tail
        // loss probe fired while the path changed (a probe after 10 ms without an ACK here).
        let spurious = delta("TCPDSACKRecv") + delta("TCPDSACKOfoRecv");
        let lost = (resent - spurious).max(0);
        eprintln!(
            "switch to {mode}: {echoes} echoes, {} lost; {resent} TCP segments retransmitted, {spurious} of them duplicates (probes {}, fast retransmits {}, timeouts {})",
            echoes - answered,
            delta("TCPLossProbes"),
            delta("TCPFastRetrans"),
            delta("TCPTimeouts"),
        );
        assert!(echoes > 300, "the ping ran: {echoes}");
        assert!(
            echoes - answered <= 1,
            "switch to {mode}: {echoes} sent, {answered} answered"
        );
        assert!(
            lost <= 1,
            "switch to {mode}: {lost} segments lost and retransmitted"
        );
    }
    stop.store(true, Ordering::Release);
    let total = sent.join().unwrap();
    assert!(total > 1 << 20, "the stream ran: {total} bytes");
}

/// Stops `node`'s agent, runs `change` on its namespace (the underlay), starts it again.
fn with_agent_stopped(g: &mut LabGuard, node: &str, change: &[&[&str]]) {
    g.lab.processes().kill_agent(node, "TERM").unwrap();
    let netns = g.node(node).netns.clone();
    for args in change {
        ip(&netns, args);
    }
    g.lab.processes().start_agent(node).unwrap();
}

#[test]
#[ignore = "privileged: netns"]
fn a_peer_in_another_subnet_gets_the_vxlan_and_a_new_underlay_address_is_followed() {
    let RoutedPair {
        mut g,
        a,
        b,
        blue,
        n1,
        n2,
    } = routed_pair("e2e-rmove");
    let a_ns = netns_name(&a.netns_path);
    let old = format!("{}/15", n2.underlay_ip);
    // n2 moves to a subnet of its own (a /32; the rest of the underlay stays reachable on-link,
    // as through a router): n1's subnet still holds n2, but n2's no longer holds n1, so both
    // fall back to the VXLAN.
    let own = format!("{}/32", n2.underlay_ip);
    with_agent_stopped(
        &mut g,
        "n2",
        &[
            &["addr", "del", &old, "dev", "eth0"],
            &["addr", "add", &own, "dev", "eth0"],
            &["route", "add", "198.18.0.0/15", "dev", "eth0"],
        ],
    );
    within(15, "n1 and n2 keep the VXLAN", || {
        routes83(&n1.netns).is_empty()
            && routes83(&n2.netns).is_empty()
            && neighbour(&n1.netns, b.ip, Some(&vxlan(blue))) != gateway_mac(blue).to_string()
    });
    let tx = tx_packets(&n1.netns, &vxlan(blue));
    assert_eq!(
        pings(&a_ns, b.ip, 10, "0.02"),
        (10, 10),
        "a -> b over VXLAN"
    );
    assert!(tx_packets(&n1.netns, &vxlan(blue)) - tx >= 10);

    // n2 comes back into the subnet with another address: n1's entries and route follow it,
    // and n2's VXLAN device is bound to the new address.
    let new_ip = Ipv4Addr::new(198, 18, 0, 42);
    let new = format!("{new_ip}/15");
    with_agent_stopped(
        &mut g,
        "n2",
        &[
            &["route", "del", "198.18.0.0/15", "dev", "eth0"],
            &["addr", "del", &own, "dev", "eth0"],
            &["addr", "add", &new, "dev", "eth0"],
        ],
    );
    wait_routed(&n1.netns, blue, b.ip, new_ip);
    within(10, "n1's FDB entry for b points at the new address", || {
        vxlan_fdb(&n1.netns, &vxlan(blue))
            .iter()
            .any(|(_, dst)| *dst == new_ip.to_string())
    });
    let dev = ip_json(&n2.netns, &["-d", "link", "show", "dev", &vxlan(blue)]);
    assert_eq!(
        dev[0]["linkinfo"]["info_data"]["local"],
        new_ip.to_string(),
        "{dev}"
    );
    assert_eq!(pings(&a_ns, b.ip, 10, "0.02"), (10, 10), "a -> b routed");
    assert_eq!(
        pings(&netns_name(&b.netns_path), a.ip, 10, "0.02"),
        (10, 10),
        "b -> a routed"
    );
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

#[test]
#[ignore = "privileged: netns"]
fn a_node_follows_its_own_underlay_address_without_a_restart() {
    let RoutedPair {
        g,
        a,
        b,
        blue,
        n1,
        n2,
    } = routed_pair("e2e-rfollow");
    let (a_ns, b_ns) = (netns_name(&a.netns_path), netns_name(&b.netns_path));
    let pid = n2.agent_pid;
    let published = |lab: &seam_lab::Lab| {
        let node = controller(lab, async |c| c.get_node("n2").await);
        (node.underlay_ip, node.underlay_prefix_len)
    };
    let vxlan_local = |ip: Ipv4Addr| {
        let dev = ip_json(&n2.netns, &["-d", "link", "show", "dev", &vxlan(blue)]);
        dev[0]["linkinfo"]["info_data"]["local"] == ip.to_string()
    };
    let fdb_to = |ip: Ipv4Addr| {
        vxlan_fdb(&n1.netns, &vxlan(blue))
            .iter()
            .any(|(_, dst)| *dst == ip.to_string())
    };
    let traffic = |what: &str| {
        assert_eq!(pings(&a_ns, b.ip, 10, "0.02"), (10, 10), "a -> b {what}");
        assert_eq!(pings(&b_ns, a.ip, 10, "0.02"), (10, 10), "b -> a {what}");
    };
    let devs = [
        (n1.netns.clone(), vxlan(blue)),
        (n2.netns.clone(), vxlan(blue)),
    ];

    // n2's address is replaced within the subnet: its Node, n1's route and FDB entry, and its
    // own VXLAN device follow; the path stays routed.
    let moved = Ipv4Addr::new(198, 18, 0, 42);
    let old = format!("{}/15", n2.underlay_ip);
    ip(&n2.netns, &["addr", "del", &old, "dev", "eth0"]);
    ip(
        &n2.netns,
        &["addr", "add", &format!("{moved}/15"), "dev", "eth0"],
    );
    let changed = std::time::Instant::now();
    within(10, "n2 publishes 198.18.0.42/15", || {
        published(&g.lab) == (moved, Some(15))
    });
    let published_after = changed.elapsed();
    wait_routed(&n1.netns, blue, b.ip, moved);
    eprintln!(
        "n2 moved: its Node published after {} ms, n1 routes b to the new address after {} ms",
        published_after.as_millis(),
        changed.elapsed().as_millis()
    );
    within(10, "n1's FDB entry for b points at 198.18.0.42", || {
        fdb_to(moved)
    });
    within(10, "n2's VXLAN device is bound to 198.18.0.42", || {
        vxlan_local(moved)
    });
    wait_routed(&n2.netns, blue, a.ip, n1.underlay_ip);
    let before = vxlan_tx(&devs);
    traffic("routed from the new address");
    let through_vxlan = vxlan_tx(&devs) - before;
    assert!(
        through_vxlan < 5,
        "{through_vxlan} packets went through VXLAN"
    );

    // A moment without any IPv4 address: n2 keeps publishing the last one and says so once.
    let warnings = || {
        std::fs::read_to_string(&n2.agent_log)
            .unwrap()
            .matches("the underlay interface has no IPv4 address")
            .count()
    };
    let before = warnings();
    ip(&n2.netns, &["addr", "flush", "dev", "eth0"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(published(&g.lab), (moved, Some(15)));
    assert_eq!(warnings() - before, 1, "warned once");
    assert!(alive(pid), "n2's agent ({pid}) is still running");

    // n2 comes back in another subnet, behind a router (the underlay namespace, which gets an
    // address there and forwards): n1's subnet no longer holds n2, so both keep the VXLAN.
    let other = Ipv4Addr::new(192, 0, 2, 12);
    let underlay_ns = g.lab.underlay_netns.clone();
    ip(&underlay_ns, &["addr", "add", "192.0.2.1/24", "dev", "ul0"]);
    sysctl(&underlay_ns, &["net.ipv4.ip_forward=1"]);
    ip(
        &n1.netns,
        &["route", "add", "192.0.2.0/24", "via", "198.18.0.1"],
    );
    ip(
        &n2.netns,
        &["addr", "add", &format!("{other}/24"), "dev", "eth0"],
    );
    ip(
        &n2.netns,
        &["route", "add", "198.18.0.0/15", "via", "192.0.2.1"],
    );
    within(15, "n2 publishes 192.0.2.12/24", || {
        published(&g.lab) == (other, Some(24))
    });
    within(15, "n1 and n2 keep the VXLAN", || {
        routes83(&n1.netns).is_empty()
            && routes83(&n2.netns).is_empty()
            && neighbour(&n1.netns, b.ip, Some(&vxlan(blue))) != gateway_mac(blue).to_string()
            && neighbour(&n2.netns, a.ip, Some(&vxlan(blue))) != gateway_mac(blue).to_string()
    });
    within(10, "n1's FDB entry for b points at 192.0.2.12", || {
        fdb_to(other)
    });
    within(10, "n2's VXLAN device is bound to 192.0.2.12", || {
        vxlan_local(other)
    });
    let before = vxlan_tx(&devs);
    traffic("over the VXLAN, through the router");
    assert!(vxlan_tx(&devs) - before >= 40, "every echo through VXLAN");

    // Back into the subnet: routed again.
    ip(&n2.netns, &["addr", "flush", "dev", "eth0"]);
    ip(
        &n2.netns,
        &["addr", "add", &format!("{moved}/15"), "dev", "eth0"],
    );
    within(15, "n2 publishes 198.18.0.42/15 again", || {
        published(&g.lab) == (moved, Some(15))
    });
    wait_routed(&n1.netns, blue, b.ip, moved);
    wait_routed(&n2.netns, blue, a.ip, n1.underlay_ip);
    let before = vxlan_tx(&devs);
    traffic("routed again");
    let through_vxlan = vxlan_tx(&devs) - before;
    assert!(
        through_vxlan < 5,
        "{through_vxlan} packets went through VXLAN"
    );

    // All of it without a restart.
    assert_eq!(
        g.node("n2").agent_pid,
        pid,
        "the lab did not restart n2's agent"
    );
    assert!(alive(pid), "n2's agent ({pid}) is still running");
}
