//! `seam-bench throughput`: iperf3 between two pods on different nodes (the overlay) against
//! iperf3 between the two nodes themselves (the underlay), alternated in one run.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use seam_lab::probe;

use crate::cleanup::{ChildGuard, LabGuard};
use crate::stats::{ratio, verdict, Stats};
use crate::util;

const PORT: u16 = 5201;

/// Options of `seam-bench throughput`.
#[derive(Debug, Clone, clap::Args)]
pub struct ThroughputOpts {
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Rounds; each measures overlay and underlay once, alternating which goes first.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

impl ThroughputOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "throughput --seconds {} --rounds {}",
            self.seconds, self.rounds
        )
    }
}

/// The results of `seam-bench throughput` (Gbit/s).
#[derive(Debug, Clone, Default)]
pub struct ThroughputSummary {
    /// Pod to pod across nodes, per round.
    pub overlay: Vec<f64>,
    /// Node to node, per round.
    pub underlay: Vec<f64>,
}

impl ThroughputSummary {
    /// Median overlay.
    pub fn overlay_median(&self) -> f64 {
        Stats::of(&self.overlay).median
    }
    /// Median underlay.
    pub fn underlay_median(&self) -> f64 {
        Stats::of(&self.underlay).median
    }
    /// Median overlay / median underlay.
    pub fn ratio(&self) -> f64 {
        ratio(self.overlay_median(), self.underlay_median())
    }
    /// Ratio at least 0.85.
    pub fn ok(&self) -> bool {
        self.ratio() >= 0.85
    }
}

/// Runs the benchmark on a fresh 2-node lab and removes it again.
pub fn run(bin_dir: &Path, opts: &ThroughputOpts) -> anyhow::Result<ThroughputSummary> {
    println!(
        "== seam-bench {}  ({} CPUs, load {})",
        opts.command(),
        util::cpus(),
        util::loadavg()
    );
    let mut guard = crate::cleanup::lab_up("btput", 2, bin_dir)?;
    let result = bench(&mut guard, opts);
    let down = guard.finish();
    let summary = result?;
    down?;
    Ok(summary)
}

fn bench(guard: &mut LabGuard, opts: &ThroughputOpts) -> anyhow::Result<ThroughputSummary> {
    let client = guard.lab.workloads().add_pod("n1", "tput", "client")?;
    let server = guard.lab.workloads().add_pod("n2", "tput", "server")?;
    let lab = &guard.lab;
    let n1 = lab.node("n1")?;
    let n2 = lab.node("n2")?;
    // The agents learn each other's endpoints through the controller; wait for the path.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !probe::ping(&client.netns_path, server.ip, 1)? {
        if Instant::now() > deadline {
            bail!(
                "pod {} on n1 cannot reach pod {} on n2 (see {})",
                client.ip,
                server.ip,
                lab.dir.display()
            );
        }
    }
    let mtu = |ns: &str| -> String {
        util::ip(ns, &["-o", "link", "show", "eth0"])
            .ok()
            .and_then(|s| {
                let mut w = s.split_whitespace();
                w.find(|x| *x == "mtu").and(w.next().map(str::to_string))
            })
            .unwrap_or_else(|| "?".into())
    };
    println!(
        "   overlay : pod {} (n1) -> pod {} (n2), pod eth0 mtu {}",
        client.ip,
        server.ip,
        mtu(&util::netns_name(&client.netns_path))
    );
    println!(
        "   underlay: node n1 {} -> node n2 {}, node eth0 mtu {}",
        n1.underlay_ip,
        n2.underlay_ip,
        mtu(&n1.netns)
    );
    let mut summary = ThroughputSummary::default();
    for round in 0..opts.rounds.max(1) {
        for overlay in [round % 2 == 0, round % 2 != 0] {
            if overlay {
                let g = iperf(
                    &server.netns_path,
                    &client.netns_path,
                    server.ip,
                    opts.seconds,
                )
                .context("overlay iperf3")?;
                summary.overlay.push(g);
            } else {
                let g = iperf(&n2.netns_path, &n1.netns_path, n2.underlay_ip, opts.seconds)
                    .context("underlay iperf3")?;
                summary.underlay.push(g);
            }
        }
    }
    print(&summary);
    Ok(summary)
}

fn print(s: &ThroughputSummary) {
    let row = |label: &str, v: &[f64]| {
        let rounds: String = v.iter().map(|g| format!(" {g:>7.2}")).collect();
        println!(
            "   {label:<28}{rounds}   median {:>6.2}",
            Stats::of(v).median
        );
    };
    let head: String = (1..=s.overlay.len())
        .map(|r| format!(" {:>7}", format!("run{r}")))
        .collect();
    println!("   {:<28}{head}   (Gbit/s, iperf3 sum_received)", "path");
    row("overlay  (pod -> pod)", &s.overlay);
    row("underlay (node -> node)", &s.underlay);
    println!(
        "   ratio overlay/underlay (medians): {:.2}   target >= 0.85: {}",
        s.ratio(),
        verdict(s.ok())
    );
}

/// One iperf3 run: a server in `server_ns` bound to `ip`, a client in `client_ns`; Gbit/s received.
pub(crate) fn iperf(
    server_ns: &Path,
    client_ns: &Path,
    ip: Ipv4Addr,
    seconds: u64,
) -> anyhow::Result<f64> {
    iperf_towards(server_ns, client_ns, ip, seconds, false)
}

/// Like [`iperf`]; with `reverse` the data flows from the server to the client (`iperf3 -R`).
pub(crate) fn iperf_towards(
    server_ns: &Path,
    client_ns: &Path,
    ip: Ipv4Addr,
    seconds: u64,
    reverse: bool,
) -> anyhow::Result<f64> {
    let ip_s = ip.to_string();
    let port = PORT.to_string();
    let child = seam_linux::netns::run_in(server_ns, || {
        Command::new("iperf3")
            .args(["-s", "-B", &ip_s, "-p", &port])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    })?
    .context("spawn iperf3 -s")?;
    let server = ChildGuard::new(child);
    wait_listening(server.0.id(), ip, PORT)?;
    let secs = seconds.to_string();
    let out = seam_linux::netns::run_in(client_ns, || {
        Command::new("iperf3")
            .args([
                "-c",
                &ip_s,
                "-p",
                &port,
                "-t",
                &secs,
                "-J",
                "--connect-timeout",
                "3000",
            ])
            .args(reverse.then_some("-R"))
            .stdin(Stdio::null())
            .output()
    })?
    .context("run iperf3 -c")?;
    drop(server);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 -c {ip} output (exit {}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(err) = json["error"].as_str() {
        bail!("iperf3 -c {ip}: {err}");
    }
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .with_context(|| format!("iperf3 -c {ip}: no end.sum_received.bits_per_second"))
}

/// Waits until process `pid` listens on `ip:port` (its namespace's `/proc/<pid>/net/tcp`).
pub(crate) fn wait_listening(pid: u32, ip: Ipv4Addr, port: u16) -> anyhow::Result<()> {
    // /proc/net/tcp writes the address as the in-memory u32, i.e. little-endian hex here.
    let want = format!("{:08X}:{port:04X}", u32::from_le_bytes(ip.octets()));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
        let listening = table.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&want.as_str()) && f.get(3) == Some(&"0A")
        });
        if listening {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("iperf3 -s (pid {pid}) is not listening on {ip}:{port} after 15 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
