//! The Services part of `table inet seam` in a real kernel: changes sent in place (netlink
//! batches, the base as `nft -f` text) list exactly as the whole table written by `nft -f`, read
//! back into the model that was written (a restarted agent adopts them), and carry real traffic:
//! spread over backends, ClientIP affinity that holds and expires, immediate refusal without
//! backends, NodePort masquerade, hairpin, the LoadBalancer address guard, an endpoint change.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use seam_linux::nft::list_table;
use seam_linux::{apply_delta, apply_ruleset, netns};
use seam_model::PortProtocol;
use seam_nft::listing::{canonical_listing, parse_listing};
use seam_nft::services::{DesiredServices, Frontend, FrontendKey, ServiceModel};
use seam_nft::table::{delta, from_nft_json, full_text, TableModel};
use serde_json::Value;

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

fn namespaces(prefix: &str, names: &[&str]) -> Namespaces {
    let guard = Namespaces(
        names
            .iter()
            .map(|n| format!("{prefix}{}{n}", std::process::id()))
            .collect(),
    );
    for n in &guard.0 {
        netns::create(n).unwrap();
    }
    guard
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect("run");
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn ip_in(ns: &str, args: &str) {
    let mut all = vec!["-n", ns];
    all.extend(args.split_whitespace());
    run("ip", &all);
}

fn a(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn tcp(addr: &str, port: u16) -> FrontendKey {
    FrontendKey::Address {
        addr: a(addr),
        protocol: PortProtocol::Tcp,
        port,
    }
}

fn frontend(key: FrontendKey, backends: &[(Ipv4Addr, u16)]) -> Frontend {
    Frontend {
        key,
        service: format!("test/{key}"),
        backends: backends.to_vec(),
        affinity_timeout: None,
        masquerade_outside: false,
    }
}

fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    netns::run_in(&netns::path_of(ns), f).unwrap()
}

fn listing(ns: &str) -> Value {
    canonical_listing(&parse_listing(in_ns(ns, list_table).unwrap()).unwrap())
}

fn model(desired: &DesiredServices) -> TableModel {
    TableModel {
        services: ServiceModel::from_desired(desired),
        ..TableModel::default()
    }
}

/// A sequence of Services tables: every kind of chain and element, then changes of each.
fn steps() -> Vec<TableModel> {
    let b = |i: u8| (Ipv4Addr::new(10, 1, i, 2), 8080);
    let np = FrontendKey::NodePort {
        protocol: PortProtocol::Sctp,
        port: 30080,
    };
    let udp = FrontendKey::Address {
        addr: a("10.96.0.12"),
        protocol: PortProtocol::Udp,
        port: 53,
    };
    let mut sticky = frontend(tcp("10.96.0.11", 80), &[b(1), b(2)]);
    sticky.affinity_timeout = Some(30);
    let mut node_port = frontend(np, &[b(1), b(2), b(3)]);
    node_port.masquerade_outside = true;
    // The sticky Service port at an external IP too: its affinity chains are shared.
    let sticky_external = Frontend {
        key: tcp("10.9.0.11", 80),
        ..sticky.clone()
    };
    let first = DesiredServices {
        frontends: vec![
            frontend(tcp("10.96.0.10", 80), &[b(1), b(2), b(3)]),
            sticky.clone(),
            frontend(udp, &[]),
            node_port,
            sticky_external,
        ],
        hairpin: [b(1).0].into(),
        segment_subnets: ["10.1.0.0/16".parse().unwrap()].into(),
        lb_addresses: [a("10.9.0.100")].into(),
        node_address: Some(a("10.9.0.1")),
        snat_backends: [a("203.0.113.5")].into(),
    };
    let mut second = first.clone();
    // An endpoint changes; an affinity Service gains a backend; a Service with 4 comes.
    second.frontends[0].backends[2] = b(4);
    second.frontends[1].backends.push(b(3));
    second.frontends[2].backends = vec![(b(5).0, 53)];
    second
        .frontends
        .push(frontend(tcp("10.96.0.13", 443), &[b(1), b(2), b(3), b(4)]));
    second.hairpin.insert(b(2).0);
    second.node_address = Some(a("10.9.0.2"));
    second.snat_backends = [a("203.0.113.6"), a("203.0.113.7")].into();
    second
        .segment_subnets
        .insert("10.2.0.0/16".parse().unwrap());
    let mut third = second.clone();
    // Services go; the affinity Service loses its affinity.
    third.frontends.remove(3);
    third.frontends[1].affinity_timeout = None;
    third.lb_addresses.clear();
    third.node_address = None;
    vec![
        TableModel::default(),
        model(&first),
        model(&second),
        model(&third),
        model(&DesiredServices::default()),
        TableModel::default(),
        model(&first),
    ]
}

#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn services_changed_in_place_list_as_the_whole_table_and_read_back() {
    require_root();
    let guard = namespaces("ssv", &["a", "b"]);
    let (changed, whole) = (&guard.0[0], &guard.0[1]);
    let mut previous: Option<TableModel> = None;
    for (i, new) in steps().into_iter().enumerate() {
        in_ns(changed, || match &previous {
            Some(old) => {
                let d = delta(old, &new);
                apply_delta(&d).unwrap_or_else(|e| panic!("step {i}: {e}\n{d:?}"));
            }
            None => apply_ruleset(&full_text(&new)).unwrap(),
        });
        in_ns(whole, || apply_ruleset(&full_text(&new)).unwrap());
        let (got, want) = (listing(changed), listing(whole));
        if got != want {
            if let Some(dir) = std::env::var_os("SEAM_SERVICES_DUMP") {
                let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap();
                let dir = std::path::Path::new(&dir);
                std::fs::write(dir.join(format!("changed-{i}.json")), pretty(&got)).unwrap();
                std::fs::write(dir.join(format!("whole-{i}.json")), pretty(&want)).unwrap();
            }
            panic!("step {i}: the table changed in place differs from the whole table");
        }
        // Adoption: what the kernel lists reads back as the model written.
        let text = in_ns(changed, list_table).unwrap();
        assert_eq!(
            from_nft_json(&text).map(|t| t.services),
            Some(new.listed().services),
            "step {i}: read back"
        );
        previous = Some(new);
    }
}

/// Backend servers: each answers a connection with `<its address> <the client's address>`.
struct Servers(Arc<AtomicBool>);

impl Drop for Servers {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

fn serve(listeners: Vec<TcpListener>) -> Servers {
    let stop = Arc::new(AtomicBool::new(false));
    for l in listeners {
        l.set_nonblocking(true).unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                match l.accept() {
                    Ok((mut s, peer)) => {
                        let local = s.local_addr().unwrap();
                        let _ = writeln!(s, "{} {}", local.ip(), peer.ip());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
    }
    Servers(stop)
}

/// What the backend answered: its address and the client address it saw.
fn ask(to: SocketAddr) -> std::io::Result<(Ipv4Addr, Ipv4Addr)> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_millis(700))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let mut words = text.split_whitespace();
    let parse = |w: Option<&str>| {
        w.and_then(|w| w.parse().ok())
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    };
    Ok((parse(words.next()), parse(words.next())))
}

fn count(answers: &[(Ipv4Addr, Ipv4Addr)]) -> std::collections::BTreeMap<Ipv4Addr, usize> {
    let mut out = std::collections::BTreeMap::new();
    for (backend, _) in answers {
        *out.entry(*backend).or_default() += 1;
    }
    out
}

#[test]
#[ignore = "needs root: network namespaces, nftables and traffic"]
fn services_carry_real_traffic() {
    require_root();
    // client (10.9.0.2) — node (10.9.0.1, LB address 10.9.0.100) — backend k (10.1.k.2), k = 1..3;
    // node (203.0.113.1) — external server x (203.0.113.5), which also reaches the client
    // directly (`xc` — `cx`), as a server on the external network reaches bm1.
    let guard = namespaces("sst", &["c", "n", "b1", "b2", "b3", "x"]);
    let [client, node, b1, b2, b3, x] = [0, 1, 2, 3, 4, 5].map(|i| guard.0[i].clone());
    ip_in(&client, "link add c0 type veth peer name n0");
    ip_in(&client, &format!("link set n0 netns {node}"));
    ip_in(&client, "addr add 10.9.0.2/24 dev c0");
    ip_in(&client, "link set c0 up");
    ip_in(&client, "route add default via 10.9.0.1");
    ip_in(&node, "addr add 10.9.0.1/24 dev n0");
    ip_in(&node, "addr add 10.9.0.100/24 dev n0");
    ip_in(&node, "link set n0 up");
    ip_in(&node, "link set lo up");
    // No default route on the node (as in the lab): a ClusterIP without backends is refused
    // before routing, or not at all.
    ip_in(&x, "link add x0 type veth peer name nx");
    ip_in(&x, &format!("link set nx netns {node}"));
    ip_in(&x, "addr add 203.0.113.5/24 dev x0");
    ip_in(&x, "link set x0 up");
    ip_in(&x, "link set lo up");
    ip_in(&x, "route add default via 203.0.113.1");
    ip_in(&node, "addr add 203.0.113.1/24 dev nx");
    ip_in(&node, "link set nx up");
    ip_in(&x, "link add xc type veth peer name cx");
    ip_in(&x, &format!("link set cx netns {client}"));
    ip_in(&x, "link set xc up");
    ip_in(&x, "route add 10.9.0.2/32 dev xc");
    ip_in(&client, "link set cx up");
    let backends = [&b1, &b2, &b3];
    for (k, b) in (1u8..).zip(backends) {
        ip_in(b, &format!("link add b0 type veth peer name n{k}"));
        ip_in(b, &format!("link set n{k} netns {node}"));
        ip_in(b, &format!("addr add 10.1.{k}.2/24 dev b0"));
        ip_in(b, "link set b0 up");
        ip_in(b, "link set lo up");
        ip_in(b, &format!("route add default via 10.1.{k}.1"));
        ip_in(&node, &format!("addr add 10.1.{k}.1/24 dev n{k}"));
        ip_in(&node, &format!("link set n{k} up"));
    }
    run(
        "ip",
        &[
            "netns",
            "exec",
            &node,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ],
    );
    let listeners: Vec<TcpListener> = (1u8..)
        .zip(backends)
        .map(|(k, b)| {
            in_ns(b, || {
                TcpListener::bind((Ipv4Addr::new(10, 1, k, 2), 8080)).unwrap()
            })
        })
        .collect();
    let mut listeners = listeners;
    listeners.push(in_ns(&x, || {
        TcpListener::bind((Ipv4Addr::new(203, 0, 113, 5), 8080)).unwrap()
    }));
    let _servers = serve(listeners);

    let back = |k: u8| (Ipv4Addr::new(10, 1, k, 2), 8080);
    let all = [back(1), back(2), back(3)];
    let mut sticky = frontend(tcp("10.96.0.11", 80), &all);
    sticky.affinity_timeout = Some(1);
    // The same Service port at the LB address: it shares the ClusterIP's affinity.
    let sticky_lb = Frontend {
        key: tcp("10.9.0.100", 82),
        ..sticky.clone()
    };
    let mut node_port = frontend(
        FrontendKey::NodePort {
            protocol: PortProtocol::Tcp,
            port: 30080,
        },
        &all,
    );
    node_port.masquerade_outside = true;
    let desired = DesiredServices {
        frontends: vec![
            frontend(tcp("10.9.0.100", 80), &all),
            frontend(tcp("10.96.0.10", 80), &all),
            sticky,
            sticky_lb,
            frontend(tcp("10.96.0.12", 80), &[]),
            frontend(
                FrontendKey::Address {
                    addr: a("10.96.0.12"),
                    protocol: PortProtocol::Udp,
                    port: 53,
                },
                &[],
            ),
            node_port,
            frontend(tcp("10.9.0.100", 81), &[(a("203.0.113.5"), 8080)]),
        ],
        hairpin: [back(1).0].into(),
        segment_subnets: ["10.1.0.0/16".parse().unwrap()].into(),
        lb_addresses: [a("10.9.0.100")].into(),
        node_address: Some(a("10.9.0.1")),
        snat_backends: [a("203.0.113.5")].into(),
    };
    // A policy-only table first, then the Services in place (the path of an agent upgraded).
    let empty = TableModel::default();
    let table = model(&desired);
    in_ns(&node, || {
        apply_ruleset(&full_text(&empty)).unwrap();
        apply_delta(&delta(&empty, &table)).unwrap();
    });

    // Spread: 300 connections over 3 backends, each client seen as itself.
    let answers: Vec<_> = in_ns(&client, || {
        (0..300)
            .map(|_| ask("10.96.0.10:80".parse().unwrap()).unwrap())
            .collect()
    });
    let spread = count(&answers);
    assert_eq!(spread.len(), 3, "{spread:?}");
    assert!(spread.values().all(|n| *n >= 60), "imbalance: {spread:?}");
    assert!(answers.iter().all(|(_, peer)| *peer == a("10.9.0.2")));

    // No backends: refused at once, TCP by a reset, UDP by ICMP port unreachable.
    in_ns(&client, || {
        let started = Instant::now();
        let e = ask("10.96.0.12:80".parse().unwrap()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        assert!(started.elapsed() < Duration::from_millis(500));
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        u.connect("10.96.0.12:53").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        u.send(b"q").unwrap();
        let e = u.recv(&mut [0u8; 16]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    });

    // NodePort: spread, and the client outside the segments is translated to the node's address
    // (`node_address`: what a backend on another node routes back to this node), not to the
    // address of the backend's side (a segment's gateway, the same on every node).
    let answers: Vec<_> = in_ns(&client, || {
        (0..30)
            .map(|_| ask("10.9.0.1:30080".parse().unwrap()).unwrap())
            .collect()
    });
    assert_eq!(count(&answers).len(), 3);
    for (backend, peer) in &answers {
        assert_eq!(*peer, a("10.9.0.1"), "{backend} saw {peer}");
    }

    // An external backend: the client outside the segments is masqueraded (the server would
    // answer it directly, past the translation: `xc`); a client inside keeps its address.
    let (server, peer) = in_ns(&client, || ask("10.9.0.100:81".parse().unwrap())).unwrap();
    assert_eq!((server, peer), (a("203.0.113.5"), a("203.0.113.1")));
    let (_, peer) = in_ns(&b2, || ask("10.9.0.100:81".parse().unwrap())).unwrap();
    assert_eq!(peer, a("10.1.2.2"));

    // The LB address: its Service port works; anything else is dropped, not answered (the
    // node's own address answers a closed port with a reset).
    in_ns(&client, || {
        let (_, peer) = ask("10.9.0.100:80".parse().unwrap()).unwrap();
        assert_eq!(peer, a("10.9.0.2"));
        let e = ask("10.9.0.100:22".parse().unwrap()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        let e = ask("10.9.0.1:22".parse().unwrap()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    });

    // Hairpin: backend 1 reaches every backend through the ClusterIP, itself too (masqueraded).
    let answers: Vec<_> = in_ns(&b1, || {
        (0..40)
            .map(|_| ask("10.96.0.10:80".parse().unwrap()).unwrap())
            .collect()
    });
    let to_itself: Vec<_> = answers.iter().filter(|(b, _)| *b == back(1).0).collect();
    assert!(!to_itself.is_empty() && to_itself.len() < answers.len());
    assert!(to_itself.iter().all(|(_, peer)| *peer == a("10.1.1.1")));

    // Affinity holds: every connection within the timeout goes to the same backend, and the
    // client is in that backend's timed set.
    let answers: Vec<_> = in_ns(&client, || {
        (0..20)
            .map(|_| ask("10.96.0.11:80".parse().unwrap()).unwrap())
            .collect()
    });
    assert_eq!(count(&answers).len(), 1, "{:?}", count(&answers));
    // Through the Service port's other frontend, the same backend (one set per backend).
    let (backend, _) = in_ns(&client, || ask("10.9.0.100:82".parse().unwrap())).unwrap();
    assert_eq!(backend, answers[0].0);
    let remembered = |ns: &str| {
        let text = in_ns(ns, list_table).unwrap();
        text.matches("\"10.9.0.2\"").count()
    };
    assert_eq!(remembered(&node), 1);
    // … and expires: after the timeout the client is forgotten, and new choices are random.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(remembered(&node), 0);
    let mut firsts = Vec::new();
    for _ in 0..8 {
        firsts.push(in_ns(&client, || {
            ask("10.96.0.11:80".parse().unwrap()).unwrap()
        }));
        std::thread::sleep(Duration::from_millis(1300));
    }
    assert!(count(&firsts).len() >= 2, "{:?}", count(&firsts));

    // An endpoint goes, in place: the Service's connections avoid it at once, and every other
    // element of the table is as it was.
    let mut fewer = desired.clone();
    fewer.frontends[1].backends = vec![back(1), back(2)];
    let next = model(&fewer);
    let d = delta(&table, &next);
    assert!(d.cleanup.is_empty(), "{d:?}");
    in_ns(&node, || apply_delta(&d).unwrap());
    let answers: Vec<_> = in_ns(&client, || {
        (0..60)
            .map(|_| ask("10.96.0.10:80".parse().unwrap()).unwrap())
            .collect()
    });
    assert_eq!(
        count(&answers).keys().copied().collect::<Vec<_>>(),
        [back(1).0, back(2).0]
    );
    let text = in_ns(&node, list_table).unwrap();
    assert_eq!(
        from_nft_json(&text).map(|t| t.services),
        Some(next.listed().services)
    );
}

/// 10,000 Services × 10 backends, as the benchmark has them.
fn many(services: u32, backends: u8) -> DesiredServices {
    let frontends = (0..services)
        .map(|i| {
            let key = FrontendKey::Address {
                addr: Ipv4Addr::from(u32::from(a("10.96.0.0")) + 1 + i),
                protocol: PortProtocol::Tcp,
                port: 80,
            };
            let list: Vec<(Ipv4Addr, u16)> = (0..backends)
                .map(|b| {
                    let n = u32::from(a("10.1.0.0"))
                        + (i * u32::from(backends) + u32::from(b)) % 60_000;
                    (Ipv4Addr::from(n + 1), 8080)
                })
                .collect();
            frontend(key, &list)
        })
        .collect();
    DesiredServices {
        frontends,
        segment_subnets: ["10.1.0.0/16".parse().unwrap()].into(),
        ..DesiredServices::default()
    }
}

#[test]
#[ignore = "needs root: timings of Services tables at scale (prints, asserts only that it works)"]
fn services_at_scale_timings() {
    require_root();
    let guard = namespaces("ssx", &["a", "b"]);
    let big = many(10_000, 10);
    let full = model(&big);
    // From nothing, whole: `nft -f` of the full text.
    let text = full_text(&full);
    let started = Instant::now();
    in_ns(&guard.0[0], || apply_ruleset(&text).unwrap());
    println!("whole table, nft -f: {:?}", started.elapsed());
    // From nothing in two steps, as `LinuxKernel::apply_ruleset` writes a large Services part.
    let started = Instant::now();
    let (first, fill) = seam_nft::table::split_write(&full).unwrap();
    let planned = started.elapsed();
    in_ns(&guard.0[1], || {
        apply_ruleset(&full_text(&first)).unwrap();
        apply_delta(&fill).unwrap();
    });
    println!(
        "split write (nft -f without elements, then elements over netlink): {:?} (planned in {planned:?})",
        started.elapsed()
    );
    assert_eq!(listing(&guard.0[0]), listing(&guard.0[1]));
    // One Service added, one endpoint changed, 50 of each, in one thread (whose netlink socket
    // is reused, as the agent's is): the model from scratch + delta (as before
    // `ServiceModel::update`), and what the agent does now: the last table cloned, its model
    // updated by the changed frontend, delta, apply.
    let timings = in_ns(&guard.0[0], move || {
        let mut t: [Vec<Duration>; 4] = Default::default();
        let mut current = full;
        let mut desired = big;
        for i in 0..50u32 {
            for step in 0..2 {
                let changed = if step == 0 {
                    let f = frontend(
                        tcp(
                            &Ipv4Addr::from(u32::from(a("10.100.0.1")) + i).to_string(),
                            80,
                        ),
                        &[(a("10.1.0.9"), 8080), (a("10.1.0.10"), 8080)],
                    );
                    desired.frontends.push(f.clone());
                    f
                } else {
                    let k = usize::try_from(i).unwrap() * 7;
                    desired.frontends[k].backends[3] =
                        (Ipv4Addr::from(u32::from(a("10.2.0.0")) + i), 8080);
                    desired.frontends[k].clone()
                };
                let started = Instant::now();
                let scratch = model(&desired);
                let d0 = delta(&current, &scratch);
                t[step * 2].push(started.elapsed());
                let started = Instant::now();
                let mut new = current.clone();
                new.services
                    .update([(changed.key, Some(&changed))], &desired);
                let d = delta(&current, &new);
                apply_delta(&d).unwrap();
                t[step * 2 + 1].push(started.elapsed());
                assert_eq!(d, d0);
                assert_eq!(new.services, scratch.services);
                current = new;
            }
        }
        t
    });
    for (what, mut v) in [
        "one Service added, from_desired + delta",
        "one Service added, clone + update + delta + apply",
        "one endpoint changed, from_desired + delta",
        "one endpoint changed, clone + update + delta + apply",
    ]
    .into_iter()
    .zip(timings)
    {
        v.sort();
        println!(
            "{what}: p50 {:?} p99 {:?}",
            v[v.len() / 2],
            v[v.len() * 99 / 100]
        );
    }
}
