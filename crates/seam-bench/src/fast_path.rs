//! `seam-bench fast-path`: does an nftables flowtable for established flows pay on a routed
//! segment (issue 14, point 2)?
//!
//! The path a routed segment gives pod → remote pod traffic between nodes of one underlay
//! subnet: pod → veth → the segment's bridge (holding the anycast gateway address, `br_netfilter`
//! on) → the node's IP stack → `/32 via PEER dev UNDERLAY` → the peer node → its bridge → pod.
//! Two node namespaces joined by a veth "underlay", each with a bridge and one pod. Both nodes
//! hold a real Seam table (`seam_firewall`'s renderer: base chains `egress`/`ingress` on the
//! forward hook, established first, dispatch maps, an isolated server pod that accepts TCP 5201
//! and 7000 from the client). Measured in one run, variants alternated round by round:
//! - `none`: no table at all (no nftables, no conntrack): the most any netfilter fast path can
//!   save on this path;
//! - `seam`: Seam's table as the agent writes it;
//! - `ft-bridge`: the same plus `flowtable ft { devices = { BRIDGE, UNDERLAY }; counter }` and
//!   `meta l4proto { tcp, udp } ct state established flow add @ft` first in `ingress` (the last
//!   base chain, so both directions' policy has accepted the connection);
//! - `ft-port`: the flowtable also on the pod's host veth (the bridge port). With it, the
//!   kernel's forward-path lookup (`dev_fill_forward_path`) makes the bridge port the flow's
//!   ingress device and transmits straight to it, past the bridge;
//! - node → node over the underlay: the ceiling.
//!
//! Each: iperf3 pod → pod (Gbit/s) and new connections per second (connect + close). A kernel
//! without flowtables (`CONFIG_NF_FLOW_TABLE` unset: the kernel answers ENOENT) measures `none`
//! and `seam` only, and says so.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use seam_firewall::render::table::Renderer;
use seam_firewall::NodeRuleset;
use seam_linux::netns;

use crate::cleanup::ScopeGuard;
use crate::stats::{ratio, Stats};
use crate::throughput::iperf;
use crate::util;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 11);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 12);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const UNDERLAY_A: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const UNDERLAY_B: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
/// The anycast gateway MAC, the same on both nodes' bridges.
const GATEWAY_MAC: &str = "02:5e:00:00:00:01";
const CONNECT_PORT: u16 = 7000;
const BRIDGE: &str = "seam-b77";
const HOST_PORT: &str = "sv0";

/// Options of `seam-bench fast-path`.
#[derive(Debug, Clone, clap::Args)]
pub struct FastPathOpts {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 4)]
    pub seconds: u64,
    /// Rounds; each measures every variant once, alternating the order.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

impl FastPathOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "fast-path --seconds {} --rounds {}",
            self.seconds, self.rounds
        )
    }
}

/// What a node's table holds in one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    None,
    Seam,
    FlowtableBridge,
    FlowtablePort,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::None => "none",
            Variant::Seam => "seam",
            Variant::FlowtableBridge => "ft-bridge",
            Variant::FlowtablePort => "ft-port",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Variant::None => "no table (no nftables, no conntrack)",
            Variant::Seam => "Seam's table",
            Variant::FlowtableBridge => "+ flowtable on bridge, underlay",
            Variant::FlowtablePort => "+ flowtable on bridge port too",
        }
    }
}

/// The results of `seam-bench fast-path`.
#[derive(Debug, Default)]
pub struct FastPathSummary {
    /// Whether the kernel has flowtables (else only `none` and `seam` were measured).
    pub flowtable: bool,
}

/// The compiled ruleset both nodes enforce: the server isolated but for TCP 5201 and 7000 from
/// the client (both pods local, so each node's table dispatches on both addresses).
fn ruleset() -> NodeRuleset {
    crate::rulesets::isolated_server(
        ("client", CLIENT),
        ("server", SERVER),
        &[5201, CONNECT_PORT],
    )
}

/// One node of the topology.
struct Node {
    ns: String,
    underlay: &'static str,
}

struct Topology {
    nodes: [Node; 2],
    client: PathBuf,
    server: PathBuf,
    node_a: PathBuf,
    node_b: PathBuf,
}

fn build(scope: &ScopeGuard) -> anyhow::Result<Topology> {
    let (na, nb) = (scope.netns("na"), scope.netns("nb"));
    let (pa, pb) = (scope.netns("pa"), scope.netns("pb"));
    for ns in [&na, &nb, &pa, &pb] {
        util::netns_with_lo(ns)?;
    }
    util::ip(
        &na,
        &[
            "link", "add", "ua", "type", "veth", "peer", "name", "ub", "netns", &nb,
        ],
    )?;
    for (node, dev, addr, pod, pod_addr, peer_pod, peer_underlay) in [
        (&na, "ua", UNDERLAY_A, &pa, CLIENT, SERVER, UNDERLAY_B),
        (&nb, "ub", UNDERLAY_B, &pb, SERVER, CLIENT, UNDERLAY_A),
    ] {
        util::ip(node, &["addr", "add", &format!("{addr}/24"), "dev", dev])?;
        util::ip(node, &["link", "set", dev, "up"])?;
        netns::run_in(&netns::path_of(node), || -> anyhow::Result<()> {
            seam_linux::sysctl::write("net/ipv4/ip_forward", "1")?;
            // Loose reverse-path filtering, as a node that routes segments sets it.
            seam_linux::sysctl::write("net/ipv4/conf/all/rp_filter", "2")?;
            seam_linux::sysctl::write("net/ipv4/tcp_tw_reuse", "1")?;
            seam_linux::sysctl::write("net/ipv4/ip_local_port_range", "1024 65000")?;
            Ok(())
        })??;
        util::ip(node, &["link", "add", BRIDGE, "type", "bridge"])?;
        util::ip(node, &["link", "set", BRIDGE, "address", GATEWAY_MAC])?;
        util::ip(
            node,
            &["addr", "add", &format!("{GATEWAY}/24"), "dev", BRIDGE],
        )?;
        util::ip(node, &["link", "set", BRIDGE, "up"])?;
        netns::run_in(&netns::path_of(node), || {
            seam_linux::sysctl::write("net/bridge/bridge-nf-call-iptables", "1")
        })??;
        util::ip(
            node,
            &[
                "link", "add", HOST_PORT, "type", "veth", "peer", "name", "eth0", "netns", pod,
            ],
        )?;
        util::ip(node, &["link", "set", HOST_PORT, "master", BRIDGE, "up"])?;
        util::ip(
            pod,
            &["addr", "add", &format!("{pod_addr}/24"), "dev", "eth0"],
        )?;
        util::ip(pod, &["link", "set", "eth0", "up"])?;
        util::ip(
            pod,
            &["route", "add", "default", "via", &GATEWAY.to_string()],
        )?;
        // What proxy ARP answers for a remote endpoint reached routed: the gateway's MAC.
        util::ip(
            pod,
            &[
                "neigh",
                "replace",
                &peer_pod.to_string(),
                "lladdr",
                GATEWAY_MAC,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        )?;
        util::ip(
            node,
            &[
                "route",
                "add",
                &format!("{peer_pod}/32"),
                "via",
                &peer_underlay.to_string(),
                "dev",
                dev,
            ],
        )?;
        netns::run_in(&netns::path_of(pod), || -> anyhow::Result<()> {
            seam_linux::sysctl::write("net/ipv4/tcp_tw_reuse", "1")?;
            seam_linux::sysctl::write("net/ipv4/ip_local_port_range", "1024 65000")?;
            Ok(())
        })??;
    }
    let t = Topology {
        client: netns::path_of(&pa),
        server: netns::path_of(&pb),
        node_a: netns::path_of(&na),
        node_b: netns::path_of(&nb),
        nodes: [
            Node {
                ns: na,
                underlay: "ua",
            },
            Node {
                ns: nb,
                underlay: "ub",
            },
        ],
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seam_lab::probe::ping(&t.client, SERVER, 1)? {
        if Instant::now() > deadline {
            bail!("pod {CLIENT} cannot reach pod {SERVER} over the routed path");
        }
    }
    Ok(t)
}

/// The `nft -f` text of `variant` for a node whose underlay interface is `underlay`.
fn table_text(variant: Variant, underlay: &str) -> String {
    let model = Renderer::with_sampling(None).model(&ruleset());
    let mut text = seam_nft::table::full_text(&model);
    let devices = match variant {
        Variant::None => return seam_nft::table::removal_text(),
        Variant::Seam => return text,
        Variant::FlowtableBridge => format!("{BRIDGE}, {underlay}"),
        Variant::FlowtablePort => format!("{BRIDGE}, {HOST_PORT}, {underlay}"),
    };
    text.push_str(&format!(
        "add flowtable inet seam ft {{ hook ingress priority filter; devices = {{ {devices} }}; counter; }}\n\
         insert rule inet seam ingress meta l4proto {{ tcp, udp }} ct state established flow add @ft\n"
    ));
    text
}

fn apply(t: &Topology, variant: Variant) -> anyhow::Result<()> {
    for node in &t.nodes {
        let text = table_text(variant, node.underlay);
        netns::run_in(&netns::path_of(&node.ns), || {
            seam_linux::apply_ruleset(&text)
        })?
        .with_context(|| format!("write the {} table in {}", variant.name(), node.ns))?;
    }
    Ok(())
}

/// Whether this kernel has flowtables: one written in a scratch table of node a.
fn flowtable_supported(t: &Topology) -> anyhow::Result<Result<(), String>> {
    let text = format!(
        "table inet seam_probe {{\n\tflowtable ft {{\n\t\thook ingress priority filter\n\t\tdevices = {{ {BRIDGE} }}\n\t}}\n}}\n"
    );
    let r = netns::run_in(&t.node_a, || seam_linux::apply_ruleset(&text))?;
    netns::run_in(&t.node_a, || {
        seam_linux::apply_ruleset("table inet seam_probe {}\ndelete table inet seam_probe\n")
    })??;
    Ok(r.map_err(|e| e.to_string()))
}

/// New connections client → `to` per second (connect and close, one client) over `seconds`.
fn connection_rate(
    server_ns: &Path,
    client_ns: &Path,
    to: Ipv4Addr,
    seconds: u64,
) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let listener = netns::run_in(server_ns, || TcpListener::bind((to, CONNECT_PORT)))??;
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = listener.accept();
            }
        })
    };
    let (n, failed) = netns::run_in(client_ns, || {
        let addr = SocketAddr::from((to, CONNECT_PORT));
        let end = Instant::now() + Duration::from_secs(seconds);
        let (mut n, mut failed) = (0u64, 0u64);
        while Instant::now() < end {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                Ok(s) => {
                    drop(s);
                    n += 1;
                }
                Err(_) => failed += 1,
            }
        }
        stop.store(true, Ordering::Relaxed);
        // Wakes the server's last accept.
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        (n, failed)
    })?;
    let _ = server.join();
    if failed > 0 {
        eprintln!("   ({failed} connections failed)");
    }
    Ok(n as f64 / seconds as f64)
}

/// The `conntrack -L` line of the iperf3 connection at node a while it runs: `[OFFLOAD]` when
/// the flowtable holds it (the kernel then lists no TCP state or timeout for it).
fn offload_check(t: &Topology, seconds: u64) -> anyhow::Result<String> {
    let server = t.server.clone();
    let client = t.client.clone();
    let run = std::thread::spawn(move || iperf(&server, &client, SERVER, seconds.max(3)));
    let mut seen = String::from("(no entry of the connection seen)");
    // Until iperf3 ends: under emulation it may take seconds to start.
    while !run.is_finished() {
        std::thread::sleep(Duration::from_millis(300));
        let out = netns::run_in(&t.node_a, || {
            Command::new("conntrack")
                .args(["-L", "-p", "tcp", "--dport", "5201"])
                .output()
        })?;
        let text = match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(e) => {
                seen = format!("(conntrack not available: {e})");
                break;
            }
        };
        if let Some(l) = text.lines().find(|l| !l.contains("TIME_WAIT")) {
            seen = l.split_whitespace().collect::<Vec<_>>().join(" ");
            if l.contains("[OFFLOAD]") {
                break;
            }
        }
    }
    let _ = run.join();
    Ok(seen)
}

#[derive(Default)]
struct Samples {
    tput: Vec<f64>,
    conn: Vec<f64>,
}

/// Runs the benchmark and prints its report.
pub fn run(o: &FastPathOpts) -> anyhow::Result<FastPathSummary> {
    let uname = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "== seam-bench {}  ({} CPUs, kernel {}, load {})",
        o.command(),
        util::cpus(),
        uname.trim(),
        util::loadavg()
    );
    let scope = ScopeGuard::new("bfast");
    let result = bench(&scope, o);
    let down = scope.finish();
    let s = result?;
    down?;
    Ok(s)
}

fn bench(scope: &ScopeGuard, o: &FastPathOpts) -> anyhow::Result<FastPathSummary> {
    let t = build(scope)?;
    let flowtable = flowtable_supported(&t)?;
    let mut variants = vec![Variant::None, Variant::Seam];
    match &flowtable {
        Ok(()) => variants.extend([Variant::FlowtableBridge, Variant::FlowtablePort]),
        Err(e) => println!(
            "   flowtable: NOT SUPPORTED by this kernel ({}); measuring `none` against `seam`: the \
             most any netfilter fast path could save here",
            e.lines().next().unwrap_or("").trim()
        ),
    }
    if flowtable.is_ok() {
        for v in [Variant::FlowtableBridge, Variant::FlowtablePort] {
            apply(&t, v)?;
            println!(
                "   {:<10} conntrack at node a: {}",
                v.name(),
                offload_check(&t, o.seconds)?
            );
        }
    }
    let mut samples: Vec<Samples> = variants.iter().map(|_| Samples::default()).collect();
    let mut node = Samples::default();
    for round in 0..o.rounds.max(1) {
        let mut order: Vec<usize> = (0..variants.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        println!("   round {} (load {})", round + 1, util::loadavg());
        for i in order {
            apply(&t, variants[i])?;
            let g = iperf(&t.server, &t.client, SERVER, o.seconds)
                .with_context(|| format!("iperf3 pod -> pod, {}", variants[i].name()))?;
            let c = connection_rate(&t.server, &t.client, SERVER, o.seconds)?;
            println!(
                "     {:<10} {g:>7.2} Gbit/s {c:>8.0} conn/s",
                variants[i].name()
            );
            samples[i].tput.push(g);
            samples[i].conn.push(c);
        }
        apply(&t, Variant::None)?;
        let g = iperf(&t.node_b, &t.node_a, UNDERLAY_B, o.seconds).context("iperf3 node")?;
        let c = connection_rate(&t.node_b, &t.node_a, UNDERLAY_B, o.seconds)?;
        println!("     {:<10} {g:>7.2} Gbit/s {c:>8.0} conn/s", "node");
        node.tput.push(g);
        node.conn.push(c);
    }
    let med = |v: &[f64]| Stats::of(v).median;
    let (node_t, node_c) = (med(&node.tput), med(&node.conn));
    let seam_i = 1;
    let (seam_t, seam_c) = (med(&samples[seam_i].tput), med(&samples[seam_i].conn));
    println!(
        "   medians over {} rounds of {} s (load now {}):",
        o.rounds,
        o.seconds,
        util::loadavg()
    );
    println!(
        "   {:<11} {:<34} {:>8} {:>9} {:>9} {:>10} {:>9} {:>9}",
        "variant", "", "Gbit/s", "/seam", "/node", "conn/s", "/seam", "/node"
    );
    for (v, s) in variants.iter().zip(&samples) {
        let (mt, mc) = (med(&s.tput), med(&s.conn));
        println!(
            "   {:<11} {:<34} {mt:>8.2} {:>9.3} {:>9.3} {mc:>10.0} {:>9.3} {:>9.3}",
            v.name(),
            v.describe(),
            ratio(mt, seam_t),
            ratio(mt, node_t),
            ratio(mc, seam_c),
            ratio(mc, node_c)
        );
    }
    println!(
        "   {:<11} {:<34} {node_t:>8.2} {:>9} {:>9} {node_c:>10.0}",
        "node", "node -> node over the underlay", "", ""
    );
    Ok(FastPathSummary {
        flowtable: flowtable.is_ok(),
    })
}
