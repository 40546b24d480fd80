//! `seam-bench`: measures Seam on a lab (network namespaces on this machine) — CNI latency
//! against Debian's reference plug-ins, agent memory with many pods, overlay throughput
//! against the underlay. Needs root; never touches the root network namespace.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cleanup;
mod cni;
mod conn_rate;
mod connector;
mod control;
mod control_tls;
mod encap;
mod fast_path;
mod flows;
mod flows_follow;
mod gateway;
mod lb_lab;
mod memory;
mod mode_switch;
mod policy;
mod policy_gen;
mod rulesets;
mod scrape;
mod services;
mod services_lab;
mod stats;
mod tcpstat;
mod throughput;
mod util;
mod vm;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::stats::{ratio, verdict};

#[derive(Debug, Parser)]
#[command(
    name = "seam-bench",
    about = "Benchmarks of Seam on a lab of network namespaces"
)]
struct Cli {
    /// Directory holding seamd, seam-controller and seam-cni (default: next to seam-bench).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// CNI ADD/DEL latency of seam-cni against bridge+host-local, and ADD under concurrency.
    Cni(cni::CniOpts),
    /// seamd's resident memory with many pods on its node.
    Memory(memory::MemoryOpts),
    /// Issue 13: a Prometheus scrape of an agent with 500 pods (GET /metrics over its HTTPS
    /// API) against GET /healthz on the same server: median, p99, body size.
    Scrape(scrape::ScrapeOpts),
    /// Pod-to-pod iperf3 throughput across nodes against node to node on the underlay (target
    /// ratio >= 0.95, issue 14); `--compare-encap` adds pod -> pod with both nodes on
    /// `--segment-encap always` (VXLAN), `--vm` a VM -> pod across nodes, in the same run.
    Throughput(throughput::ThroughputOpts),
    /// Issue 14: new connections per second (connect + close) pod -> pod across nodes against
    /// node -> node (target ratio >= 0.8); `--compare-encap` adds VXLAN beside it.
    ConnRate(conn_rate::ConnRateOpts),
    /// Issue 14: one node switched between `--segment-encap always` and `cross-subnet` and back
    /// under an iperf3 flow and a 50 Hz ping across nodes: retransmits and lost echoes per
    /// switch (target <= 1), beside a restart with the mode kept. Needs routed segments.
    ModeSwitch(mode_switch::ModeSwitchOpts),
    /// Flow recording on vs off (throughput, new-connection rate) and a flood of denied packets
    /// (the recorder's CPU and memory, the rate limit, allowed throughput alongside).
    Flows(flows::FlowsOpts),
    /// Issue 14: an nftables flowtable for established flows on a routed segment's path (pod ->
    /// bridge -> node -> underlay -> node -> bridge -> pod), with and without, against no table
    /// and node -> node: iperf3 and new connections per second. A measurement, no target.
    FastPath(fast_path::FastPathOpts),
    /// Pod to bare-metal server through a gateway node against the gateway's underlay path
    /// (iperf3, both ways; target ratio >= 0.9, issue 14).
    Gateway(gateway::GatewayOpts),
    /// VMs on a hypervisor host: attach-to-first-packet time, and iperf3 VM->pod across nodes
    /// against pod->pod across nodes (target ratio >= 0.9).
    Vm(vm::VmOpts),
    /// The policy compiler and nftables at scale: compile time, incremental changes applied to
    /// a real table, rules per node, memory, connection latency with 10 and 1,000 policies.
    Policy(policy::PolicyOpts),
    /// Issue 12, Services: sync of 10,000 Services x 10 endpoints into the kernel, one Service
    /// added and one endpoint changed (p99), new-connection latency through a ClusterIP with 10
    /// and 10,000 Services, each against kube-proxy's iptables layout in the same run; throughput
    /// through a ClusterIP; memory.
    Services(services::ServicesOpts),
    /// Issue 12: iperf3 pod -> ClusterIP -> pod on another node against pod -> pod, on a
    /// 2-node lab whose agents translate the Service (target ratio >= 0.95).
    ServicesThroughput(services_lab::LabThroughputOpts),
    /// Issue 12: iperf3 from the external server bm1 through a LoadBalancer address at the
    /// gateway to a pod on a worker, against bm1 to the pod's own address over the gateway's
    /// plain routed path (target ratio >= 0.9).
    LbThroughput(lb_lab::LbThroughputOpts),
    /// (internal) The child process `services` measures memory in.
    #[command(hide = true)]
    ServicesMemory(services::MemoryChildOpts),
    /// (internal) The child process `policy` measures memory in.
    #[command(hide = true)]
    PolicyMemory(policy::MemoryChildOpts),
    /// Time from an API change until 50 watching agents have seen it (p50/p99), and changes/s,
    /// on the embedded store and on etcd with 3 controller replicas.
    Propagation(control::PropagationOpts),
    /// Issue 11: mutual TLS against plain TCP in one run, alternating rounds: single-change
    /// propagation to 50 watchers (p99 ratio <= 1.1), re-sync of all of them after a controller
    /// kill -9 + restart (< 2 s), watchers with refused certificates exit with their error, and
    /// CNI ADD with the agents over TLS against the Unix socket.
    ControlTls(control_tls::ControlTlsOpts),
    /// (internal) One watching agent of `propagation` and `control-tls`.
    #[command(hide = true)]
    PropagationWatcher(control::WatcherOpts),
    /// Controller fail-over on etcd with 3 replicas: leader kill -9 to the first write served,
    /// and duplicates among 1,000 allocations with a fail-over in the middle.
    Failover(control::FailoverOpts),
    /// Agent kill -9 and restart under a 50 Hz ping and an iperf3 flow: lost packets, time
    /// until the agent answers CNI STATUS again.
    Restart(control::RestartOpts),
    /// Controller VmRSS with 10,000 endpoints and 1,000 policies loaded through the API.
    ControllerMemory(control::ControllerMemoryOpts),
    /// Issue 13: flow records at the controller, POST /v1/flows -> a `seam flows --follow`
    /// reader (p50/p99, target p99 < 500 ms) under 20 nodes posting every 200 ms, beside a
    /// GET /v1/leader round trip in the same run. Needs only seam-controller, no root.
    FlowsFollow(flows_follow::FlowsOpts),
    /// cni, throughput and memory with their defaults (or the options given here), then a
    /// summary. `policy` is not included: it takes about 25 minutes.
    All(AllOpts),
}

#[derive(Debug, clap::Args)]
struct AllOpts {
    /// ADD+DEL pairs per plug-in (cni).
    #[arg(long, default_value_t = 100)]
    calls: usize,
    /// Pods (memory).
    #[arg(long, default_value_t = 500)]
    pods: usize,
    /// Seconds per iperf3 run (throughput).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cleanup::install_signal_handler();
    cleanup::sweep_stale();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("seam-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn default_bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locate seam-bench")?;
    exe.parent()
        .map(Path::to_path_buf)
        .context("seam-bench has no parent directory")
}

fn check_bins(dir: &Path) -> anyhow::Result<()> {
    for bin in ["seamd", "seam-controller", "seam-cni"] {
        if !dir.join(bin).is_file() {
            anyhow::bail!(
                "{} not found; build with `cargo build --release -p seamd -p seam-controller \
                 -p seam-cni -p seam-bench` or pass --bin-dir",
                dir.join(bin).display()
            );
        }
    }
    Ok(())
}

fn reproduce(args: &str) {
    let exe = std::env::args()
        .next()
        .unwrap_or_else(|| "seam-bench".into());
    println!("   reproduce: sudo {exe} {args}\n");
}

/// Runs the command; `Ok(false)` when a target was missed.
fn run(cli: Cli) -> anyhow::Result<bool> {
    // The policy benchmark needs no lab binaries.
    match &cli.command {
        Cmd::Policy(o) => {
            let s = policy::run(o)?;
            s.print();
            reproduce(&o.command());
            return Ok(s.ok());
        }
        Cmd::PolicyMemory(o) => {
            policy::memory_child(o)?;
            return Ok(true);
        }
        Cmd::Services(o) => {
            let s = services::run(o)?;
            s.print();
            reproduce(&o.command());
            return Ok(s.ok());
        }
        Cmd::ServicesMemory(o) => {
            services::memory_child(o)?;
            return Ok(true);
        }
        Cmd::PropagationWatcher(o) => {
            control::watcher(o)?;
            return Ok(true);
        }
        Cmd::FastPath(o) => {
            let s = fast_path::run(o)?;
            reproduce(&o.command());
            if !s.flowtable {
                println!("   (no flowtable in this kernel: see crates/seam-bench/README.md)");
            }
            return Ok(true);
        }
        Cmd::FlowsFollow(o) => {
            let bin_dir = match &cli.bin_dir {
                Some(d) => d.clone(),
                None => default_bin_dir()?,
            };
            let r = flows_follow::run(&bin_dir, o)?;
            r.print(o);
            reproduce(&o.command());
            return Ok(r.ok());
        }
        _ => {}
    }
    let bin_dir = match cli.bin_dir {
        Some(d) => d,
        None => default_bin_dir()?,
    };
    check_bins(&bin_dir)?;
    match cli.command {
        Cmd::Cni(o) => {
            let s = cni::run(&bin_dir, &o)?;
            reproduce(&o.command());
            Ok(s.latency_ok() && s.concurrency_ok())
        }
        Cmd::Memory(o) => {
            let s = memory::run(&bin_dir, &o)?;
            reproduce(&o.command());
            Ok(s.ok())
        }
        Cmd::Scrape(o) => {
            let ok = scrape::run(&bin_dir, &o)?;
            reproduce(&o.command());
            Ok(ok)
        }
        Cmd::Gateway(o) => {
            let s = gateway::run(&bin_dir, &o)?;
            reproduce(&o.command());
            Ok(s.ok())
        }
        Cmd::Vm(o) => {
            let s = vm::run(&bin_dir, &o)?;
            reproduce(&o.command());
            Ok(s.ok())
        }
        Cmd::Throughput(o) => {
            let s = throughput::run(&bin_dir, &o)?;
            reproduce(&o.command());
            Ok(s.ok())
        }
        Cmd::ConnRate(o) => {
            let s = conn_rate::run(&bin_dir, &o)?;
            reproduce(&o.command());
            Ok(s.ok())
        }
        Cmd::ModeSwitch(o) => {
            let s = mode_switch::run(&bin_dir, &o)?;
            reproduce(&o.command());
            Ok(s.ok())
        }
        Cmd::Flows(o) => {
            let s = flows::run(&o)?;
            reproduce(&o.command());
            Ok(s.ok())
        }
        Cmd::Propagation(o) => {
            let r = control::propagation(&bin_dir, &o)?;
            reproduce(&o.command());
            Ok(r.iter().all(|r| r.latency.p99 < 200.0))
        }
        Cmd::ControlTls(o) => {
            let r = control_tls::run(&bin_dir, &o)?;
            reproduce(&o.command());
            Ok(r.ok())
        }
        Cmd::Failover(o) => {
            let r = control::failover(&bin_dir, &o)?;
            reproduce(&o.command());
            Ok(r.ok())
        }
        Cmd::Restart(o) => {
            let r = control::restart(&bin_dir, &o)?;
            reproduce(&o.command());
            Ok(r.ok())
        }
        Cmd::ServicesThroughput(o) => {
            let r = services_lab::run(&bin_dir, &o)?;
            reproduce(&o.command());
            Ok(r.ok())
        }
        Cmd::LbThroughput(o) => {
            let r = lb_lab::run(&bin_dir, &o)?;
            reproduce(&o.command());
            Ok(r.ok())
        }
        Cmd::ControllerMemory(o) => {
            control::controller_memory(&bin_dir, &o)?;
            reproduce(&o.command());
            Ok(true)
        }
        Cmd::All(a) => all(&bin_dir, &a),
        Cmd::Policy(_)
        | Cmd::PolicyMemory(_)
        | Cmd::Services(_)
        | Cmd::ServicesMemory(_)
        | Cmd::PropagationWatcher(_)
        | Cmd::FlowsFollow(_)
        | Cmd::FastPath(_) => Ok(true),
    }
}

fn all(bin_dir: &Path, a: &AllOpts) -> anyhow::Result<bool> {
    let cni_o = cni::CniOpts {
        calls: a.calls,
        warmup: 2,
        threads: 20,
        per_thread: 5,
        ref_dir: PathBuf::from("/usr/lib/cni"),
        agents: cni::AgentLink::Tls,
    };
    let tput_o = throughput::ThroughputOpts {
        seconds: a.seconds,
        rounds: 3,
        compare_encap: false,
        vm: false,
    };
    let mem_o = memory::MemoryOpts {
        pods: a.pods,
        threads: 4,
        namespaces: 1,
    };
    let c = cni::run(bin_dir, &cni_o)?;
    reproduce(&cni_o.command());
    // Namespace teardown finishes in the kernel after `ip netns del`; let it settle.
    std::thread::sleep(Duration::from_secs(2));
    let t = throughput::run(bin_dir, &tput_o)?;
    reproduce(&tput_o.command());
    std::thread::sleep(Duration::from_secs(2));
    let m = memory::run(bin_dir, &mem_o)?;
    reproduce(&mem_o.command());

    println!("== summary");
    println!(
        "   {:<42} {:>22} {:>16} {:>6}",
        "measure", "seam", "target", ""
    );
    let line = |what: &str, value: String, target: &str, ok: bool| {
        println!("   {what:<42} {value:>22} {target:>16} {:>6}", verdict(ok));
    };
    let add_r = ratio(c.seam_add.median, c.ref_add.median);
    let del_r = ratio(c.seam_del.median, c.ref_del.median);
    line(
        "CNI ADD median, seam / bridge+host-local",
        format!(
            "{:.2} / {:.2} ms = {add_r:.2}",
            c.seam_add.median, c.ref_add.median
        ),
        "<= 0.50",
        add_r <= 0.5,
    );
    line(
        "CNI DEL median, seam / bridge+host-local",
        format!(
            "{:.2} / {:.2} ms = {del_r:.2}",
            c.seam_del.median, c.ref_del.median
        ),
        "<= 0.50",
        del_r <= 0.5,
    );
    line(
        &format!("CNI ADD p95, {} concurrent ADDs", c.seam_conc.add.n),
        format!("{:.2} ms", c.seam_conc.add.p95),
        "< 15 ms",
        c.seam_conc.add.p95 < 15.0,
    );
    line(
        "  ... errors / sv* veths left after DEL",
        format!(
            "{} / {}",
            c.seam_conc.errors.len(),
            c.seam_conc.leftover.len()
        ),
        "0 / 0",
        c.seam_conc.errors.is_empty() && c.seam_conc.leftover.is_empty(),
    );
    line(
        &format!("iperf3 pod->pod ({}) / node->node", t.default_path.short()),
        format!(
            "{:.2} / {:.2} = {:.2}",
            t.pod_median(),
            t.node_median(),
            t.ratio()
        ),
        &format!(">= {}", throughput::TARGET),
        t.ok(),
    );
    line(
        &format!("seamd VmRSS with {} pods", m.pods),
        format!("{:.1} MiB", m.rss_kib as f64 / 1024.0),
        "< 30 MiB",
        m.ok(),
    );
    line(
        &format!("time to create {} pods", m.pods),
        format!("{:.1} s (ADD p50 {:.1} ms)", m.create_secs, m.add.median),
        "-",
        true,
    );
    reproduce(&format!(
        "all --calls {} --pods {} --seconds {}",
        a.calls, a.pods, a.seconds
    ));
    Ok(c.latency_ok() && c.concurrency_ok() && t.ok() && m.ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(command: &str) -> Cmd {
        let args = std::iter::once("seam-bench").chain(command.split_whitespace());
        match Cli::try_parse_from(args) {
            Ok(cli) => cli.command,
            Err(e) => panic!("{command}: {e}"),
        }
    }

    /// The printed `reproduce:` line runs the same benchmark again.
    #[test]
    fn issue_14_commands_reproduce_their_options() {
        let t = throughput::ThroughputOpts {
            seconds: 7,
            rounds: 4,
            compare_encap: true,
            vm: true,
        };
        match parse(&t.command()) {
            Cmd::Throughput(o) => {
                assert_eq!(
                    (o.seconds, o.rounds, o.compare_encap, o.vm),
                    (7, 4, true, true)
                );
            }
            other => panic!("{other:?}"),
        }
        let plain = throughput::ThroughputOpts {
            compare_encap: false,
            vm: false,
            ..t
        };
        match parse(&plain.command()) {
            Cmd::Throughput(o) => assert!(!o.compare_encap && !o.vm),
            other => panic!("{other:?}"),
        }
        let c = conn_rate::ConnRateOpts {
            seconds: 3,
            rounds: 5,
            compare_encap: true,
        };
        match parse(&c.command()) {
            Cmd::ConnRate(o) => assert_eq!((o.seconds, o.rounds, o.compare_encap), (3, 5, true)),
            other => panic!("{other:?}"),
        }
        let m = mode_switch::ModeSwitchOpts {
            window: 9,
            rounds: 2,
            rate: "500M".into(),
            ping_ms: 10,
        };
        match parse(&m.command()) {
            Cmd::ModeSwitch(o) => {
                assert_eq!(
                    (o.window, o.rounds, o.rate.as_str(), o.ping_ms),
                    (9, 2, "500M", 10)
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
