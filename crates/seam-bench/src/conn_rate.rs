//! `seam-bench conn-rate`: new connections per second (connect + close, one client, a server that
//! accepts and closes) from a pod on n1 to a pod on n2 against node n1 to node n2 on the
//! underlay, alternated in one run; the pods' path is the lab's default mode's (routed between
//! nodes of one underlay subnet, once routed segments exist). `--compare-encap` also measures
//! pod -> pod with both nodes on `--segment-encap always` (VXLAN) in the same rounds. Target:
//! pod -> pod at least 0.8 of node -> node (issue 14).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::cleanup::LabGuard;
use crate::connector::{self, AcceptServer, RateSample};
use crate::encap::{self, Block, Modes, PathKind};
use crate::stats::{ratio, verdict, Stats};
use crate::util;

const PORT: u16 = 7000;

/// Issue 14: pod -> pod new-connection rate at least this share of node -> node.
pub const TARGET: f64 = 0.8;

/// Options of `seam-bench conn-rate`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnRateOpts {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Rounds; each measures every path once, alternating which goes first.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Also measure with both nodes on `--segment-encap always` (VXLAN), in the same rounds.
    #[arg(long)]
    pub compare_encap: bool,
}

impl ConnRateOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "conn-rate --seconds {} --rounds {}{}",
            self.seconds,
            self.rounds,
            if self.compare_encap {
                " --compare-encap"
            } else {
                ""
            }
        )
    }
}

/// The results of `seam-bench conn-rate` (connections per second, per round).
#[derive(Debug, Clone)]
pub struct ConnRateSummary {
    /// The pods' path in the lab's default mode.
    pub default_path: PathKind,
    /// Pod to pod, default mode.
    pub pod_pod: Vec<RateSample>,
    /// Node to node.
    pub node_node: Vec<RateSample>,
    /// Pod to pod, both nodes on `always`; empty without `--compare-encap`.
    pub pod_pod_always: Vec<RateSample>,
}

fn median(v: &[RateSample]) -> f64 {
    Stats::of(&v.iter().map(|s| s.per_second).collect::<Vec<_>>()).median
}

impl ConnRateSummary {
    /// A series' median / median node -> node.
    pub fn ratio_of(&self, series: &[RateSample]) -> f64 {
        ratio(median(series), median(&self.node_node))
    }
    /// Pod -> pod (default mode) / node -> node, medians.
    pub fn ratio(&self) -> f64 {
        self.ratio_of(&self.pod_pod)
    }
    /// The ratio at least [`TARGET`].
    pub fn ok(&self) -> bool {
        self.ratio() >= TARGET
    }
}

/// Runs the benchmark on a fresh 2-node lab and removes it again.
pub fn run(bin_dir: &Path, opts: &ConnRateOpts) -> anyhow::Result<ConnRateSummary> {
    println!(
        "== seam-bench {}  ({} CPUs, load {})",
        opts.command(),
        util::cpus(),
        util::loadavg()
    );
    let mut guard = crate::cleanup::lab_up("bcr", 2, bin_dir)?;
    let result = bench(&mut guard, opts);
    let down = guard.finish();
    let summary = result?;
    down?;
    Ok(summary)
}

/// One measurement: a server in `server_ns` on `to`, the client in `client_ns`.
fn measure(
    server_ns: &Path,
    client_ns: &Path,
    to: SocketAddr,
    seconds: u64,
) -> anyhow::Result<RateSample> {
    let std::net::IpAddr::V4(ip) = to.ip() else {
        anyhow::bail!("{to} is not IPv4");
    };
    let _server = AcceptServer::start(server_ns, ip, to.port())?;
    connector::connect_rate(client_ns, to, Duration::from_secs(seconds))
}

fn bench(guard: &mut LabGuard, opts: &ConnRateOpts) -> anyhow::Result<ConnRateSummary> {
    let pair = encap::pod_pair(guard, "bcr")?;
    let mut modes = Modes::new(&pair)?;
    for ns in [&pair.client.netns_path, &pair.n1.netns_path] {
        connector::prepare_client(ns)?;
    }
    let (n1, n2, client, server) = (&pair.n1, &pair.n2, &pair.client, &pair.server);
    println!(
        "   pod->pod: pod {} (n1) -> pod {}:{PORT} (n2), path in the default mode: {}",
        client.ip,
        server.ip,
        modes.default_path()
    );
    println!(
        "   underlay: node n1 {} -> node n2 {}:{PORT}",
        n1.underlay_ip, n2.underlay_ip
    );
    println!(
        "   one client: connect, close, repeat for {} s; the server accepts and closes",
        opts.seconds
    );
    let mut s = ConnRateSummary {
        default_path: modes.default_path(),
        pod_pod: Vec::new(),
        node_node: Vec::new(),
        pod_pod_always: Vec::new(),
    };
    for round in 0..opts.rounds.max(1) {
        for block in encap::schedule(round, opts.compare_encap) {
            let sample = match block {
                Block::Underlay => measure(
                    &n2.netns_path,
                    &n1.netns_path,
                    SocketAddr::from((n2.underlay_ip, PORT)),
                    opts.seconds,
                )
                .context("node->node connections")?,
                Block::Default | Block::Always => {
                    let always = block == Block::Always;
                    modes.enter(&mut guard.lab, &pair, always, &[])?;
                    measure(
                        &server.netns_path,
                        &client.netns_path,
                        SocketAddr::from((server.ip, PORT)),
                        opts.seconds,
                    )
                    .with_context(|| format!("pod->pod connections, round {}", round + 1))?
                }
            };
            match block {
                Block::Underlay => s.node_node.push(sample),
                Block::Default => s.pod_pod.push(sample),
                Block::Always => s.pod_pod_always.push(sample),
            }
        }
    }
    print(&s);
    Ok(s)
}

fn print(s: &ConnRateSummary) {
    let row = |label: &str, v: &[RateSample], of_node: bool| {
        if v.is_empty() {
            return;
        }
        let rounds: String = v
            .iter()
            .map(|r| format!(" {:>8.0}", r.per_second))
            .collect();
        let failed: u64 = v.iter().map(|r| r.failed).sum();
        let share = if of_node {
            format!("   / node->node {:.3}", s.ratio_of(v))
        } else {
            String::new()
        };
        println!(
            "   {label:<30}{rounds}   median {:>8.0}{share}   failed {failed}",
            median(v)
        );
    };
    let head: String = (1..=s.node_node.len())
        .map(|r| format!(" {:>8}", format!("run{r}")))
        .collect();
    println!("   {:<30}{head}   (connections/s)", "path");
    let default = s.default_path.short();
    row(&format!("pod -> pod ({default})"), &s.pod_pod, true);
    row("pod -> pod (always: VXLAN)", &s.pod_pod_always, true);
    row("node -> node (underlay)", &s.node_node, false);
    println!(
        "   ratio pod->pod / node->node (medians), default mode ({}): {:.3}   target >= {TARGET}: {}",
        s.default_path.short(),
        s.ratio(),
        verdict(s.ok())
    );
    if !s.pod_pod_always.is_empty() {
        println!(
            "   beside it, VXLAN (always): pod->pod / node->node {:.3}",
            s.ratio_of(&s.pod_pod_always)
        );
    }
}
