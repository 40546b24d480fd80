//! `seam-bench flows`: what flow recording costs, in the kernel and in the recorder.
//!
//! A node namespace with a bridge (br_netfilter on) and two pods; the node's table realizes
//! "pod b accepts TCP 5201 and 7000 from pod a, everything else to b is isolated", rendered as
//! the agent renders it with flow recording off and on (`Renderer::with_sampling`), alternated
//! round by round. Measured in one run against its own baseline:
//! - pod → pod throughput (iperf3) and new-connection rate (connect + close, one client), on vs
//!   off (target ≥ 0.95 each);
//! - a flood of denied UDP packets from a to b with recording on: the recorder (the agent's
//!   NFLOG reader, decoder and ring, run here in-process on a thread of its own) must stay under
//!   half a core, its ring bounded, the per-rule limit must hold (samples of the flood ≤ rate ×
//!   seconds + burst, the rest counted as suppressed), and iperf3 alongside must keep ≥ 0.9 of
//!   its throughput without the flood. The flood is generated on this machine, so "without the
//!   flood" is iperf3 alongside the same generator at the same rate sending into a device in a
//!   that drops every packet (round by round, alternated): both runs pay for generating the
//!   flood, only one has the node handle it, as a node handles a flood that comes from elsewhere
//!   (the case). The generator is cheap (`sendmmsg`, 64 datagrams a call, paced per
//!   call) and its CPU is printed; the ratio against iperf3 with no generator is printed too.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use seam_agent::flows::decode::{rule_map, Decoded, Decoder, Resolver};
use seam_agent::flows::ring::{FlowRing, RING_CAPACITY};
use seam_firewall::render::table::Renderer;
use seam_firewall::NodeRuleset;
use seam_linux::netns;
use seam_nft::FlowSampling;

use crate::cleanup::{ChildGuard, ScopeGuard};
use crate::connector::{self, AcceptServer};
use crate::stats::{ratio, verdict, Stats};
use crate::util;

const A: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
const IPERF_PORT: u16 = 5201;
const CONNECT_PORT: u16 = 7000;
const DENIED_PORT: u16 = 9;
/// The sink device in a (the baseline flood's destination): its address and the peer sent to.
const SINK: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
const SINK_PEER: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 2);
const GROUP: u16 = 6199;

/// Options of `seam-bench flows`.
#[derive(Debug, Clone, clap::Args)]
pub struct FlowsOpts {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 4)]
    pub seconds: u64,
    /// Rounds of off/on (alternating which goes first).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Denied packets per second of the flood.
    #[arg(long, default_value_t = 100_000)]
    pub flood_pps: u64,
    /// Drop samples per second of each rule (seamd's --flow-drop-rate).
    #[arg(long, default_value_t = 10)]
    pub drop_rate: u32,
}

impl FlowsOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "flows --seconds {} --rounds {} --flood-pps {} --drop-rate {}",
            self.seconds, self.rounds, self.flood_pps, self.drop_rate
        )
    }
}

/// The node's compiled ruleset: b's ingress isolated but for TCP 5201 and 7000 from a.
fn ruleset() -> NodeRuleset {
    crate::rulesets::isolated_server(("a", A), ("b", B), &[IPERF_PORT, CONNECT_PORT])
}

struct Bench {
    node: String,
    a: String,
    b: String,
}

fn build(scope: &ScopeGuard) -> anyhow::Result<Bench> {
    let bench = Bench {
        node: scope.netns("node"),
        a: scope.netns("a"),
        b: scope.netns("b"),
    };
    util::netns_with_lo(&bench.node)?;
    util::ip(&bench.node, &["link", "add", "br0", "type", "bridge"])?;
    util::ip(&bench.node, &["link", "set", "br0", "up"])?;
    netns::run_in(&netns::path_of(&bench.node), || {
        seam_linux::sysctl::write("net/bridge/bridge-nf-call-iptables", "1")
    })??;
    for (i, (pod, addr)) in [(&bench.a, A), (&bench.b, B)].into_iter().enumerate() {
        util::netns_with_lo(pod)?;
        let host = format!("h{i}");
        util::ip(
            &bench.node,
            &[
                "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", pod,
            ],
        )?;
        util::ip(&bench.node, &["link", "set", &host, "master", "br0", "up"])?;
        util::ip(pod, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        util::ip(pod, &["link", "set", "eth0", "up"])?;
    }
    // The baseline flood's sink: a veth in a whose peer stays down (no carrier: its qdisc drops
    // what it is given; this kernel has no dummy devices), the peer's address resolved by hand.
    // The generator pays what it pays sending to b (socket, UDP/IP output, neighbour, device
    // queue); nothing reaches the node.
    util::ip(
        &bench.a,
        &[
            "link", "add", "sink0", "type", "veth", "peer", "name", "sink1",
        ],
    )?;
    util::ip(
        &bench.a,
        &["addr", "add", &format!("{SINK}/24"), "dev", "sink0"],
    )?;
    util::ip(&bench.a, &["link", "set", "sink0", "up"])?;
    util::ip(
        &bench.a,
        &[
            "neigh",
            "add",
            &SINK_PEER.to_string(),
            "lladdr",
            "02:00:00:00:89:02",
            "dev",
            "sink0",
            "nud",
            "permanent",
        ],
    )?;
    // The client closes first: its ports wait in TIME_WAIT, so it may reuse them, from a wide
    // range (thousands of connections a second for seconds).
    netns::run_in(&netns::path_of(&bench.a), || -> anyhow::Result<()> {
        seam_linux::sysctl::write("net/ipv4/tcp_tw_reuse", "1")?;
        seam_linux::sysctl::write("net/ipv4/ip_local_port_range", "1024 65000")?;
        Ok(())
    })??;
    Ok(bench)
}

fn apply(bench: &Bench, sampling: Option<FlowSampling>) -> anyhow::Result<()> {
    let model = Renderer::with_sampling(sampling).model(&ruleset());
    let text = seam_nft::table::full_text(&model);
    netns::run_in(&netns::path_of(&bench.node), || {
        seam_linux::apply_ruleset(&text)
    })??;
    Ok(())
}

/// iperf3 a → b for `seconds`, in Gbit/s.
fn iperf(bench: &Bench, seconds: u64) -> anyhow::Result<f64> {
    let _server = ChildGuard::new(
        Command::new("ip")
            .args(["netns", "exec", &bench.b, "iperf3", "-s", "-1", "-p"])
            .arg(IPERF_PORT.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start iperf3 -s")?,
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("ip")
        .args(["netns", "exec", &bench.a, "iperf3", "-J", "-c"])
        .arg(B.to_string())
        .args(["-p", &IPERF_PORT.to_string(), "-t", &seconds.to_string()])
        .output()
        .context("run iperf3 -c")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 -J")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 gave no result")?;
    Ok(bps / 1e9)
}

/// New connections a → b per second (connect and close, one client) over `seconds`.
fn connection_rate(bench: &Bench, seconds: u64) -> anyhow::Result<f64> {
    let _server = AcceptServer::start(&netns::path_of(&bench.b), B, CONNECT_PORT)?;
    let s = connector::connect_rate(
        &netns::path_of(&bench.a),
        SocketAddr::from((B, CONNECT_PORT)),
        Duration::from_secs(seconds),
    )?;
    if s.failed > 0 {
        eprintln!("  ({} connections failed)", s.failed);
    }
    Ok(s.per_second)
}

/// CPU time of the calling thread, ms.
fn thread_cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e6)
}

/// What the recorder did during the flood.
#[derive(Debug, Default)]
struct Recorded {
    cpu_ms: f64,
    samples: u64,
    flood_samples: u64,
    flood_allow_samples: u64,
    records: usize,
    ring_bytes: usize,
    lost: u64,
}

/// Reads the group as the agent does (socket, decoder, ring) until `stop`.
fn recorder(
    bench: &Bench,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<Recorded>> {
    let mut socket = seam_linux::nflog::NflogSocket::bind_in(
        Some(&netns::path_of(&bench.node)),
        GROUP,
        seam_linux::nflog::seam_config(seam_agent::flows::SNAPLEN),
    )?;
    let rules = Arc::new(rule_map(&seam_firewall::flows::sampled_rules(&ruleset())));
    Ok(std::thread::spawn(move || {
        let c0 = thread_cpu_ms();
        let mut decoder = Decoder::new(u32::MAX);
        decoder.set_rules(rules);
        let resolver = Resolver::default();
        let mut ring = FlowRing::default();
        let mut out = Recorded::default();
        while !stop.load(Ordering::Relaxed) {
            let Ok(read) = socket.read(Some(Duration::from_millis(100))) else {
                continue;
            };
            out.lost += u64::from(read.lost);
            let now = seam_now_ms();
            for s in &read.samples {
                out.samples += 1;
                if let Decoded::Record(f) = decoder.decode(s, now, &resolver) {
                    if f.protocol == 17 {
                        // The flood's drops, and a's egress allowing each of its packets
                        // (never confirmed by conntrack, each is new: under the allow limit).
                        if f.rule.as_deref() == Some("ns-isolation/ingress") {
                            out.flood_samples += 1;
                        } else {
                            out.flood_allow_samples += 1;
                        }
                    }
                    ring.push(*f);
                }
            }
        }
        out.cpu_ms = thread_cpu_ms() - c0;
        out.records = ring.len();
        out.ring_bytes = ring.len() * std::mem::size_of::<seam_agent::flows::Flow>();
        out
    }))
}

fn seam_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where the flood goes: to b (denied by b's isolation, sampled under the per-rule limit), or
/// into a device in a itself that drops it (the baseline: the same generator, the same packets
/// and system calls, and nothing for the node to handle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FloodTo {
    Denied,
    Sink,
}

impl FloodTo {
    fn addr(self) -> SocketAddr {
        match self {
            FloodTo::Denied => SocketAddr::from((B, DENIED_PORT)),
            FloodTo::Sink => SocketAddr::from((SINK_PEER, DENIED_PORT)),
        }
    }
}

/// What one flood did.
#[derive(Debug, Default, Clone, Copy)]
struct Flooded {
    sent: u64,
    /// The generator thread's CPU time (its system calls and what the kernel did for its
    /// packets in its context: for the denied flood, the node's bridge and table too).
    cpu_ms: f64,
    secs: f64,
}

/// Datagrams per `sendmmsg`: one system call per batch, one pacing decision per batch.
const FLOOD_BATCH: usize = 64;

/// Sends UDP datagrams from a to `to` at `pps` until `stop`, `FLOOD_BATCH` per `sendmmsg`
/// on a connected socket, paced per batch (it sleeps until the next batch is due: no busy
/// loop).
fn flood(
    bench: &Bench,
    pps: u64,
    to: FloodTo,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Flooded> {
    use nix::sys::socket::{sendmmsg, MsgFlags, MultiHeaders, SockaddrIn};
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;
    let path = netns::path_of(&bench.a);
    std::thread::spawn(move || {
        netns::run_in(&path, || {
            let mut out = Flooded::default();
            let Ok(s) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
                return out;
            };
            if s.connect(to.addr()).is_err() {
                return out;
            }
            let payload = *b"flood";
            let iov = [IoSlice::new(&payload)];
            let slices = [iov; FLOOD_BATCH];
            let addrs = [None::<SockaddrIn>; FLOOD_BATCH];
            let mut headers = MultiHeaders::<SockaddrIn>::preallocate(FLOOD_BATCH, None);
            let pps = pps.max(1);
            let c0 = thread_cpu_ms();
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let due = start.elapsed().as_micros() as u64 * pps / 1_000_000;
                if out.sent + FLOOD_BATCH as u64 > due {
                    // Ahead of schedule: sleep until the next batch is due.
                    let at_us = (out.sent + FLOOD_BATCH as u64) * 1_000_000 / pps;
                    let now_us = start.elapsed().as_micros() as u64;
                    std::thread::sleep(Duration::from_micros(at_us.saturating_sub(now_us).max(50)));
                    continue;
                }
                match sendmmsg(
                    s.as_raw_fd(),
                    &mut headers,
                    &slices,
                    addrs,
                    [],
                    MsgFlags::empty(),
                ) {
                    Ok(results) => out.sent += results.count() as u64,
                    // A full socket buffer or an ICMP error queued on the socket: go on.
                    Err(_) => std::thread::sleep(Duration::from_micros(50)),
                }
            }
            out.cpu_ms = thread_cpu_ms() - c0;
            out.secs = start.elapsed().as_secs_f64();
            out
        })
        .unwrap_or_default()
    })
}

/// iperf3 a → b while a flood of `pps` goes `to` (`pps` 0: no flood): (Gbit/s, the flood).
fn iperf_alongside(
    bench: &Bench,
    seconds: u64,
    pps: u64,
    to: FloodTo,
) -> anyhow::Result<(f64, Flooded)> {
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = (pps > 0).then(|| flood(bench, pps, to, stop.clone()));
    let tput = iperf(bench, seconds);
    stop.store(true, Ordering::Relaxed);
    let flooded = match flooder {
        Some(f) => f
            .join()
            .map_err(|_| anyhow::anyhow!("the flood generator panicked"))?,
        None => Flooded::default(),
    };
    Ok((tput?, flooded))
}

/// The results of `seam-bench flows`.
#[derive(Debug, Default)]
pub struct FlowsSummary {
    ok: bool,
}

impl FlowsSummary {
    /// Whether every target was met.
    pub fn ok(&self) -> bool {
        self.ok
    }
}

/// Runs the benchmark and prints its report.
pub fn run(o: &FlowsOpts) -> anyhow::Result<FlowsSummary> {
    let scope = ScopeGuard::new("flows");
    let bench = build(&scope)?;
    let sampling = FlowSampling {
        group: GROUP,
        drop_rate: o.drop_rate,
        allow_rate: Some(1000),
        snaplen: seam_agent::flows::SNAPLEN,
    };
    let (mut tput_off, mut tput_on, mut conn_off, mut conn_on) = (vec![], vec![], vec![], vec![]);
    for round in 0..o.rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for on in order {
            apply(&bench, on.then_some(sampling))?;
            // The samples go to a reader, as on a node with recording on.
            let stop = Arc::new(AtomicBool::new(false));
            let reader = if on {
                Some(recorder(&bench, stop.clone())?)
            } else {
                None
            };
            let t = iperf(&bench, o.seconds)?;
            let c = connection_rate(&bench, o.seconds)?;
            stop.store(true, Ordering::Relaxed);
            if let Some(r) = reader {
                let _ = r.join();
            }
            if on {
                tput_on.push(t);
                conn_on.push(c);
            } else {
                tput_off.push(t);
                conn_off.push(c);
            }
        }
    }
    // The flood, recording on, round by round against its baseline: the same generator at the
    // same rate into a device in a that drops it (nothing reaches the node). What the node does for the
    // flood (bridge, table, drop, samples) is what the ratio measures; generating it, which
    // the target's flood from elsewhere does not cost the node, is in both.
    apply(&bench, Some(sampling))?;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = recorder(&bench, stop.clone())?;
    let suppressed_before = netns::run_in(
        &netns::path_of(&bench.node),
        seam_linux::nft::read_suppressed,
    )??;
    let (mut tput_sink, mut tput_flood) = (vec![], vec![]);
    let (mut sink, mut denied) = (Flooded::default(), Flooded::default());
    for round in 0..o.rounds {
        let order = if round % 2 == 0 {
            [FloodTo::Sink, FloodTo::Denied]
        } else {
            [FloodTo::Denied, FloodTo::Sink]
        };
        for to in order {
            let (t, f) = iperf_alongside(&bench, o.seconds, o.flood_pps, to)?;
            let (tputs, total) = match to {
                FloodTo::Sink => (&mut tput_sink, &mut sink),
                FloodTo::Denied => (&mut tput_flood, &mut denied),
            };
            tputs.push(t);
            total.sent += f.sent;
            total.cpu_ms += f.cpu_ms;
            total.secs += f.secs;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let recorded = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the recorder panicked"))?;
    let suppressed_after = netns::run_in(
        &netns::path_of(&bench.node),
        seam_linux::nft::read_suppressed,
    )??;
    let key = "ns-isolation/ingress";
    let suppressed = suppressed_after.get(key).copied().unwrap_or(0)
        - suppressed_before.get(key).copied().unwrap_or(0);
    let (sent, flood_secs) = (denied.sent, denied.secs);
    scope.finish()?;

    let (t_off, t_on) = (Stats::of(&tput_off).median, Stats::of(&tput_on).median);
    let (c_off, c_on) = (Stats::of(&conn_off).median, Stats::of(&conn_on).median);
    let t_ratio = ratio(t_on, t_off);
    let c_ratio = ratio(c_on, c_off);
    let (t_sink, t_flood) = (Stats::of(&tput_sink).median, Stats::of(&tput_flood).median);
    let flood_ratio = ratio(t_flood, t_sink);
    // The recorder ran through the baseline rounds too (reading nothing then): its CPU over the
    // denied floods' time only is an upper bound.
    let cpu_share = recorded.cpu_ms / 1000.0 / flood_secs;
    // Each denied flood starts with the limit's full burst (it refilled during the baseline).
    let max_samples = (f64::from(o.drop_rate) * flood_secs).ceil() as u64
        + o.rounds as u64 * (u64::from(o.drop_rate) + 1);
    let limit_held = recorded.flood_samples <= max_samples;
    let accounted = recorded.flood_samples + suppressed;
    println!(
        "flow recording, {} rounds of {} s (medians):",
        o.rounds, o.seconds
    );
    println!(
        "  throughput a->b: off {t_off:.2} Gbit/s, on {t_on:.2} Gbit/s, ratio {t_ratio:.3} (target >= 0.95) {}",
        verdict(t_ratio >= 0.95)
    );
    println!(
        "  new connections: off {c_off:.0}/s, on {c_on:.0}/s, ratio {c_ratio:.3} (target >= 0.95) {}",
        verdict(c_ratio >= 0.95)
    );
    println!(
        "  flood: {sent} denied packets in {flood_secs:.1} s ({:.0}/s); samples of it {} (limit {} /s per rule: at most {max_samples}) {}; suppressed and counted {suppressed}; sampled + suppressed = {accounted}",
        sent as f64 / flood_secs,
        recorded.flood_samples,
        o.drop_rate,
        verdict(limit_held)
    );
    println!(
        "  recorder during the flood: {:.3} cores (target < 0.5) {}; {} samples read ({} of them a's egress allowing the flood, under the allow limit of 1000/s), {} records in the ring ({} KiB; full ring {} KiB, target < 32 MiB), reads with losses {}",
        cpu_share,
        verdict(cpu_share < 0.5),
        recorded.samples,
        recorded.flood_allow_samples,
        recorded.records,
        recorded.ring_bytes / 1024,
        RING_CAPACITY * std::mem::size_of::<seam_agent::flows::Flow>() / 1024,
        recorded.lost
    );
    let cores = |f: &Flooded| {
        if f.secs > 0.0 {
            f.cpu_ms / 1000.0 / f.secs
        } else {
            0.0
        }
    };
    let rate = |f: &Flooded| {
        if f.secs > 0.0 {
            f.sent as f64 / f.secs
        } else {
            0.0
        }
    };
    println!(
        "  flood generator (sendmmsg, {FLOOD_BATCH} a call, paced per call): into a device in a that drops (baseline) {:.0}/s on {:.3} cores; to b {:.0}/s on {:.3} cores (its thread also runs what the node does for its packets: bridge, conntrack, table, drop)",
        rate(&sink),
        cores(&sink),
        rate(&denied),
        cores(&denied)
    );
    println!(
        "  allowed throughput during the flood: {t_flood:.2} Gbit/s, {flood_ratio:.3} of {t_sink:.2} with the same generator into a device that drops (target >= 0.9) {}; {:.3} of {t_on:.2} without any generator",
        verdict(flood_ratio >= 0.9),
        ratio(t_flood, t_on)
    );
    if sent == 0 {
        bail!("the flood sent nothing");
    }
    Ok(FlowsSummary {
        ok: t_ratio >= 0.95
            && c_ratio >= 0.95
            && limit_held
            && cpu_share < 0.5
            && flood_ratio >= 0.9,
    })
}
