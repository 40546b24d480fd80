//! `seam-bench throughput`: iperf3 between two pods on different nodes against iperf3 between
//! the two nodes themselves (the underlay), alternated in one run. The pods' traffic takes the
//! path of the lab's default mode (routed between nodes of one underlay subnet, once routed
//! segments exist; the path is read from the nodes' routes and printed). `--compare-encap` also
//! measures pod -> pod with both nodes' agents on `--segment-encap always` (VXLAN) in the same
//! run; `--vm` also measures a lab VM on n1 (made a hypervisor host) -> the pod on n2.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use seam_lab::vm::{VmInfo, VmOptions};

use crate::cleanup::{ChildGuard, LabGuard};
use crate::encap::{self, Block, Modes, Pair, PathKind};
use crate::stats::{ratio, verdict, Stats};
use crate::util;

const PORT: u16 = 5201;

/// Issue 14: pod -> pod (and VM -> pod) across nodes at least this share of node -> node.
pub const TARGET: f64 = 0.95;

/// Options of `seam-bench throughput`.
#[derive(Debug, Clone, clap::Args)]
pub struct ThroughputOpts {
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Rounds; each measures every path once, alternating which goes first.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Also measure with both nodes on `--segment-encap always` (VXLAN), in the same rounds.
    #[arg(long)]
    pub compare_encap: bool,
    /// Also measure a VM on n1 (a hypervisor host) -> the pod on n2.
    #[arg(long)]
    pub vm: bool,
}

impl ThroughputOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "throughput --seconds {} --rounds {}{}{}",
            self.seconds,
            self.rounds,
            if self.compare_encap {
                " --compare-encap"
            } else {
                ""
            },
            if self.vm { " --vm" } else { "" }
        )
    }
}

/// The results of `seam-bench throughput` (Gbit/s, per round).
#[derive(Debug, Clone)]
pub struct ThroughputSummary {
    /// The pods' path in the lab's default mode.
    pub default_path: PathKind,
    /// Pod to pod across nodes, default mode.
    pub pod_pod: Vec<f64>,
    /// Node to node.
    pub node_node: Vec<f64>,
    /// VM (n1) to pod (n2), default mode; empty without `--vm`.
    pub vm_pod: Vec<f64>,
    /// Pod to pod, both nodes on `always`; empty without `--compare-encap`.
    pub pod_pod_always: Vec<f64>,
    /// VM to pod, both nodes on `always`; empty without both options.
    pub vm_pod_always: Vec<f64>,
}

impl ThroughputSummary {
    fn new(default_path: PathKind) -> ThroughputSummary {
        ThroughputSummary {
            default_path,
            pod_pod: Vec::new(),
            node_node: Vec::new(),
            vm_pod: Vec::new(),
            pod_pod_always: Vec::new(),
            vm_pod_always: Vec::new(),
        }
    }
    /// Median pod -> pod, default mode.
    pub fn pod_median(&self) -> f64 {
        Stats::of(&self.pod_pod).median
    }
    /// Median node -> node.
    pub fn node_median(&self) -> f64 {
        Stats::of(&self.node_node).median
    }
    /// A series' median / median node -> node.
    pub fn ratio_of(&self, series: &[f64]) -> f64 {
        ratio(Stats::of(series).median, self.node_median())
    }
    /// Median pod -> pod / median node -> node.
    pub fn ratio(&self) -> f64 {
        self.ratio_of(&self.pod_pod)
    }
    /// Pod -> pod, and VM -> pod when measured, at least [`TARGET`] of node -> node.
    pub fn ok(&self) -> bool {
        self.ratio() >= TARGET && (self.vm_pod.is_empty() || self.ratio_of(&self.vm_pod) >= TARGET)
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

/// The MTU of `eth0` in namespace `ns`, for the report.
pub(crate) fn mtu(ns: &str) -> String {
    util::ip(ns, &["-o", "link", "show", "eth0"])
        .ok()
        .and_then(|s| {
            let mut w = s.split_whitespace();
            w.find(|x| *x == "mtu").and(w.next().map(str::to_string))
        })
        .unwrap_or_else(|| "?".into())
}

/// Makes n1 a hypervisor host and starts a VM on it in the pods' segment.
fn add_vm(guard: &mut LabGuard, pair: &Pair) -> anyhow::Result<VmInfo> {
    let lab = &mut guard.lab;
    lab.topology().make_hypervisor("n1")?;
    let segment = format!("ns-{}", pair.client.namespace);
    let vm = lab
        .workloads()
        .add_vm("tput-vm", "n1", &segment, &VmOptions::default())?;
    encap::wait_reachable(lab, &vm.netns_path, pair.server.ip, "vm on n1")?;
    Ok(vm)
}

fn bench(guard: &mut LabGuard, opts: &ThroughputOpts) -> anyhow::Result<ThroughputSummary> {
    let pair = encap::pod_pair(guard, "tput")?;
    let vm = if opts.vm {
        Some(add_vm(guard, &pair)?)
    } else {
        None
    };
    // Making n1 a hypervisor restarted its agent: read the default path after that.
    let mut modes = Modes::new(&pair)?;
    let (n1, n2, client, server) = (&pair.n1, &pair.n2, &pair.client, &pair.server);
    println!(
        "   pod->pod: pod {} (n1) -> pod {} (n2), pod eth0 mtu {}; path in the default mode: {}",
        client.ip,
        server.ip,
        mtu(&util::netns_name(&client.netns_path)),
        modes.default_path()
    );
    if let Some(vm) = &vm {
        println!(
            "   vm->pod : vm {} (n1, hypervisor) -> pod {} (n2), vm eth0 mtu {}; path in the default mode: {}",
            vm.ip,
            server.ip,
            mtu(&vm.netns()),
            encap::settled_path_of(n1, vm.ip, n2, server.ip, modes.default_path())?
        );
    }
    println!(
        "   underlay: node n1 {} -> node n2 {}, node eth0 mtu {}",
        n1.underlay_ip,
        n2.underlay_ip,
        mtu(&n1.netns)
    );
    let mut s = ThroughputSummary::new(modes.default_path());
    let reach: Vec<(&Path, Ipv4Addr)> = vm
        .iter()
        .map(|v| (v.netns_path.as_path(), server.ip))
        .collect();
    for round in 0..opts.rounds.max(1) {
        for block in encap::schedule(round, opts.compare_encap) {
            if block == Block::Underlay {
                let g = iperf(&n2.netns_path, &n1.netns_path, n2.underlay_ip, opts.seconds)
                    .context("node->node iperf3")?;
                s.node_node.push(g);
                continue;
            }
            let always = block == Block::Always;
            modes.enter(&mut guard.lab, &pair, always, &reach)?;
            let mode = if always {
                encap::ALWAYS
            } else {
                "default mode"
            };
            // Pod first in even rounds, the VM first in odd ones.
            let mut clients: Vec<(&Path, bool)> = vec![(&client.netns_path, false)];
            if let Some(vm) = &vm {
                clients.push((&vm.netns_path, true));
            }
            if round % 2 == 1 {
                clients.reverse();
            }
            if let Some(vm) = &vm {
                // The VM's routes move on their own reconcile pass: measure it on the mode's path.
                let want = if always {
                    PathKind::Vxlan
                } else {
                    modes.default_path()
                };
                encap::settled_path_of(n1, vm.ip, n2, server.ip, want)?;
            }
            for (from, is_vm) in clients {
                let g = iperf(&server.netns_path, from, server.ip, opts.seconds).with_context(
                    || {
                        format!(
                            "{}->pod iperf3 ({mode}), round {}",
                            if is_vm { "vm" } else { "pod" },
                            round + 1
                        )
                    },
                )?;
                match (is_vm, always) {
                    (false, false) => s.pod_pod.push(g),
                    (true, false) => s.vm_pod.push(g),
                    (false, true) => s.pod_pod_always.push(g),
                    (true, true) => s.vm_pod_always.push(g),
                }
            }
        }
    }
    print(&s);
    Ok(s)
}

fn print(s: &ThroughputSummary) {
    let row = |label: &str, v: &[f64], of_node: bool| {
        if v.is_empty() {
            return;
        }
        let rounds: String = v.iter().map(|g| format!(" {g:>7.2}")).collect();
        let share = if of_node {
            format!("   / node->node {:.3}", s.ratio_of(v))
        } else {
            String::new()
        };
        println!(
            "   {label:<34}{rounds}   median {:>6.2}{share}",
            Stats::of(v).median
        );
    };
    let head: String = (1..=s.node_node.len())
        .map(|r| format!(" {:>7}", format!("run{r}")))
        .collect();
    println!("   {:<34}{head}   (Gbit/s, iperf3 sum_received)", "path");
    let default = s.default_path.short();
    row(&format!("pod -> pod ({default})"), &s.pod_pod, true);
    row(&format!("vm -> pod ({default})"), &s.vm_pod, true);
    row("pod -> pod (always: VXLAN)", &s.pod_pod_always, true);
    row("vm -> pod (always: VXLAN)", &s.vm_pod_always, true);
    row("node -> node (underlay)", &s.node_node, false);
    println!(
        "   ratio pod->pod / node->node (medians), default mode ({}): {:.3}   target >= {TARGET}: {}",
        s.default_path.short(),
        s.ratio(),
        verdict(s.ratio() >= TARGET)
    );
    if !s.vm_pod.is_empty() {
        let r = s.ratio_of(&s.vm_pod);
        println!(
            "   ratio vm->pod / node->node (medians), default mode: {r:.3}   target >= {TARGET}: {}",
            verdict(r >= TARGET)
        );
    }
    if !s.pod_pod_always.is_empty() {
        println!(
            "   beside it, VXLAN (always): pod->pod / node->node {:.3}{}",
            s.ratio_of(&s.pod_pod_always),
            if s.vm_pod_always.is_empty() {
                String::new()
            } else {
                format!(", vm->pod / node->node {:.3}", s.ratio_of(&s.vm_pod_always))
            }
        );
    }
    if s.default_path != PathKind::Routed {
        println!(
            "   note: the default mode's path is {}, not routed: the routed target was not measured",
            s.default_path
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vm_counts_only_when_measured() {
        let mut s = ThroughputSummary::new(PathKind::Routed);
        s.node_node = vec![10.0, 12.0, 11.0];
        s.pod_pod = vec![10.6, 10.4, 10.5];
        assert!((s.ratio() - 10.5 / 11.0).abs() < 1e-9);
        assert!(s.ok());
        s.vm_pod = vec![9.0, 9.0, 9.0];
        assert!(!s.ok());
        s.vm_pod = vec![10.5; 3];
        // VXLAN beside it is reported, not judged.
        s.pod_pod_always = vec![7.0; 3];
        assert!(s.ok());
        s.pod_pod = vec![10.0; 3];
        assert!(!s.ok());
    }
}
