//! `seam-bench vm`: VMs on a hypervisor host. (1) attach-to-first-packet: from `seam vm attach`
//! (the controller leases the address and publishes the endpoint) through the lab making the
//! VM's interface (as a hypervisor starts a VM with its tap) until the VM's first echo reply from
//! a pod on another node; (2) iperf3 throughput VM -> pod across nodes against pod -> pod across
//! nodes, alternated in one run (target ratio >= 0.9).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use seam_lab::probe;
use seam_lab::vm::VmOptions;

use crate::cleanup::LabGuard;
use crate::stats::{ms, ratio, verdict, Stats};
use crate::throughput::iperf;
use crate::util;

/// Options of `seam-bench vm`.
#[derive(Debug, Clone, clap::Args)]
pub struct VmOpts {
    /// VMs attached one after another for the attach-to-first-packet time.
    #[arg(long, default_value_t = 10)]
    pub attaches: usize,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Rounds; each measures VM->pod and pod->pod once, alternating which goes first.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

impl VmOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "vm --attaches {} --seconds {} --rounds {}",
            self.attaches, self.seconds, self.rounds
        )
    }
}

/// The results of `seam-bench vm`.
#[derive(Debug, Clone, Default)]
pub struct VmSummary {
    /// Attach to first echo reply, ms.
    pub first_packet_ms: Vec<f64>,
    /// VM (n2) -> pod (n1), Gbit/s per round.
    pub vm_pod: Vec<f64>,
    /// Pod (n3) -> pod (n1), Gbit/s per round.
    pub pod_pod: Vec<f64>,
}

impl VmSummary {
    /// Median VM->pod / median pod->pod.
    pub fn ratio(&self) -> f64 {
        ratio(
            Stats::of(&self.vm_pod).median,
            Stats::of(&self.pod_pod).median,
        )
    }
    /// Ratio at least 0.9.
    pub fn ok(&self) -> bool {
        self.ratio() >= 0.9
    }
}

/// Runs the benchmark on a fresh 3-node lab (n2 a hypervisor) and removes it again.
pub fn run(bin_dir: &Path, opts: &VmOpts) -> anyhow::Result<VmSummary> {
    println!(
        "== seam-bench {}  ({} CPUs, load {})",
        opts.command(),
        util::cpus(),
        util::loadavg()
    );
    if !bin_dir.join("seam").is_file() {
        bail!(
            "{} not found; build with `cargo build --release -p seam` or pass --bin-dir",
            bin_dir.join("seam").display()
        );
    }
    let mut guard = crate::cleanup::lab_up("bvm", 3, bin_dir)?;
    let result = bench(&mut guard, opts);
    let down = guard.finish();
    let summary = result?;
    down?;
    Ok(summary)
}

fn bench(guard: &mut LabGuard, opts: &VmOpts) -> anyhow::Result<VmSummary> {
    let lab = &mut guard.lab;
    lab.topology().make_hypervisor("n2")?;
    let server = lab.workloads().add_pod("n1", "bvm", "server")?;
    let peer = lab.workloads().add_pod("n3", "bvm", "peer")?;
    let mut summary = VmSummary::default();
    // Attach-to-first-packet: a fresh VM each time, pinged every 10 ms until the first reply.
    for i in 0..opts.attaches.max(1) {
        let name = format!("bvm-{i}");
        let started = Instant::now();
        let vm = lab
            .workloads()
            .add_vm(&name, "n2", "ns-bvm", &VmOptions::default())?;
        let deadline = started + Duration::from_secs(20);
        loop {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &vm.netns(), "ping", "-c1", "-W", "0.01"])
                .arg(server.ip.to_string())
                .output()
                .context("ping")?;
            if out.status.success() {
                break;
            }
            if Instant::now() > deadline {
                bail!("vm {name} got no echo reply from {} within 20 s", server.ip);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        summary.first_packet_ms.push(ms(started.elapsed()));
        if i + 1 < opts.attaches.max(1) {
            lab.workloads().del_vm(&name)?;
        }
    }
    let vm = lab
        .workloads()
        .vm(&format!("bvm-{}", opts.attaches.max(1) - 1))?;
    let s = Stats::of(&summary.first_packet_ms);
    println!(
        "   attach-to-first-packet (seam vm attach -> interface -> first echo reply from a pod on another node), {} VMs: median {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        summary.first_packet_ms.len(),
        s.median,
        s.p95,
        s.max
    );
    if !probe::ping(&peer.netns_path, server.ip, 2)? {
        bail!("pod on n3 cannot reach pod on n1");
    }
    println!(
        "   vm->pod : vm {} (n2, hypervisor) -> pod {} (n1); pod->pod: pod {} (n3) -> pod {} (n1)",
        vm.ip, server.ip, peer.ip, server.ip
    );
    for round in 0..opts.rounds.max(1) {
        for vm_first in [round % 2 == 0, round % 2 != 0] {
            if vm_first {
                let g = iperf(&server.netns_path, &vm.netns_path, server.ip, opts.seconds)
                    .context("vm->pod iperf3")?;
                summary.vm_pod.push(g);
            } else {
                let g = iperf(
                    &server.netns_path,
                    &peer.netns_path,
                    server.ip,
                    opts.seconds,
                )
                .context("pod->pod iperf3")?;
                summary.pod_pod.push(g);
            }
        }
    }
    let v = Stats::of(&summary.vm_pod);
    let p = Stats::of(&summary.pod_pod);
    println!(
        "   vm->pod  Gbit/s: median {:.2} (min {:.2}, max {:.2})",
        v.median, v.min, v.max
    );
    println!(
        "   pod->pod Gbit/s: median {:.2} (min {:.2}, max {:.2})",
        p.median, p.min, p.max
    );
    println!(
        "   ratio vm->pod / pod->pod (medians): {:.2}   target >= 0.9: {}",
        summary.ratio(),
        verdict(summary.ok())
    );
    Ok(summary)
}
