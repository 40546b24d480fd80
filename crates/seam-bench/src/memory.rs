//! `seam-bench memory`: the agent's resident memory with many pods on its node.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::cleanup::LabGuard;
use crate::stats::{ms, verdict, Stats};
use crate::util;

/// Options of `seam-bench memory`.
#[derive(Debug, Clone, clap::Args)]
pub struct MemoryOpts {
    /// Pods to create on the node.
    #[arg(long, default_value_t = 500)]
    pub pods: usize,
    /// Threads doing the ADDs.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Kubernetes namespaces the pods are spread over (one Seam segment each).
    #[arg(long, default_value_t = 1)]
    pub namespaces: usize,
}

impl MemoryOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "memory --pods {} --threads {} --namespaces {}",
            self.pods, self.threads, self.namespaces
        )
    }
}

/// The results of `seam-bench memory`.
#[derive(Debug, Clone, Default)]
pub struct MemorySummary {
    /// Pods created.
    pub pods: usize,
    /// Agent VmRSS right after the lab came up (KiB).
    pub rss_idle_kib: u64,
    /// Agent VmRSS with all pods (KiB).
    pub rss_kib: u64,
    /// Agent peak RSS (VmHWM, KiB).
    pub hwm_kib: u64,
    /// Controller VmRSS with all pods (KiB).
    pub controller_rss_kib: u64,
    /// Wall time to create all pods (namespace + ADD).
    pub create_secs: f64,
    /// ADD latencies while creating them.
    pub add: Stats,
}

impl MemorySummary {
    /// Agent RSS below 30 MiB.
    pub fn ok(&self) -> bool {
        self.rss_kib < 30 * 1024
    }
}

/// Runs the benchmark on a fresh 1-node lab and removes it again.
pub fn run(bin_dir: &Path, opts: &MemoryOpts) -> anyhow::Result<MemorySummary> {
    println!(
        "== seam-bench {}  ({} CPUs, load {})",
        opts.command(),
        util::cpus(),
        util::loadavg()
    );
    let guard = crate::cleanup::lab_up("bmem", 1, bin_dir)?;
    let result = bench(&guard, opts);
    let teardown = Instant::now();
    let down = guard.finish();
    let summary = result?;
    down?;
    println!(
        "   teardown (agent, controller, {} pod namespaces): {:.1} s",
        summary.pods,
        teardown.elapsed().as_secs_f64()
    );
    Ok(summary)
}

fn bench(guard: &LabGuard, opts: &MemoryOpts) -> anyhow::Result<MemorySummary> {
    let lab = &guard.lab;
    let node = lab.nodes.first().context("lab has no node")?;
    std::thread::sleep(Duration::from_millis(500));
    let rss_idle_kib = util::proc_status_kib(node.agent_pid, "VmRSS")?;
    let (add_ms, create_secs) = create_pods(lab, node, opts.pods, opts.threads, opts.namespaces)?;
    let add = Stats::of(&add_ms);
    // Let the agent publish the endpoints and settle before reading its memory.
    std::thread::sleep(Duration::from_secs(1));
    let ports = util::links(&node.netns)?
        .iter()
        .filter(|l| l.starts_with("sv"))
        .count();
    let summary = MemorySummary {
        pods: add.n,
        rss_idle_kib,
        rss_kib: util::proc_status_kib(node.agent_pid, "VmRSS")?,
        hwm_kib: util::proc_status_kib(node.agent_pid, "VmHWM")?,
        controller_rss_kib: util::proc_status_kib(lab.controller_pid, "VmRSS").unwrap_or(0),
        create_secs,
        add,
    };
    let mib = |k: u64| k as f64 / 1024.0;
    println!("   {:<44} {:>10}", "", "value");
    println!(
        "   {:<44} {:>10}",
        "pods attached (sv* ports on the node)", ports
    );
    println!(
        "   {:<44} {:>8.1} s  ({:.1} pods/s, {} threads)",
        "time to create them (netns + seam-cni ADD)",
        create_secs,
        summary.pods as f64 / create_secs,
        opts.threads.max(1)
    );
    println!(
        "   {:<44} {:>8.2} ms (p95 {:.2}, max {:.2})",
        "ADD latency median", add.median, add.p95, add.max
    );
    println!(
        "   {:<44} {:>8.1} MiB",
        "seamd VmRSS, idle before the pods",
        mib(summary.rss_idle_kib)
    );
    println!(
        "   {:<44} {:>8.1} MiB  target < 30 MiB: {}",
        format!("seamd VmRSS with {} pods", summary.pods),
        mib(summary.rss_kib),
        verdict(summary.ok())
    );
    println!(
        "   {:<44} {:>8.1} MiB",
        "seamd VmHWM (peak)",
        mib(summary.hwm_kib)
    );
    println!(
        "   {:<44} {:>8.1} MiB",
        "seam-controller VmRSS",
        mib(summary.controller_rss_kib)
    );
    if ports != summary.pods {
        bail!(
            "{} pods were ADDed but {ports} sv* ports exist",
            summary.pods
        );
    }
    Ok(summary)
}

/// Creates `pods` pods on `node` (a network namespace and a real `seam-cni` ADD each) with
/// `threads` threads, spread over `namespaces` Kubernetes namespaces (`mem0`, `mem1`, …): each
/// ADD's latency (ms) and the wall time (s).
pub(crate) fn create_pods(
    lab: &seam_lab::Lab,
    node: &seam_lab::NodeInfo,
    pods: usize,
    threads: usize,
    namespaces: usize,
) -> anyhow::Result<(Vec<f64>, f64)> {
    let opts = MemoryOpts {
        pods,
        threads,
        namespaces,
    };
    let template = lab.cni_call(node, "ADD", "", "", "")?;
    let namespaces = opts.namespaces.max(1);

    let next = AtomicUsize::new(0);
    let add_ms = Mutex::new(Vec::with_capacity(opts.pods));
    let errors = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= opts.pods {
                    break;
                }
                match add_one(&template, &node.netns_path, &lab.name, i, namespaces) {
                    Ok(t) => push(&add_ms, t),
                    Err(e) => {
                        push(&errors, format!("{e:#}"));
                        // Stop everyone early: the lab is broken.
                        next.store(opts.pods, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let create_secs = started.elapsed().as_secs_f64();
    let errors = take(errors);
    if let Some(first) = errors.first() {
        bail!("{} pod ADD(s) failed, first: {first}", errors.len());
    }
    Ok((take(add_ms), create_secs))
}

fn add_one(
    template: &seam_lab::CniCall,
    node_netns: &Path,
    lab: &str,
    i: usize,
    namespaces: usize,
) -> anyhow::Result<f64> {
    let netns: PathBuf = util::netns_with_lo(&format!("{lab}-p{i}"))?;
    let ns = format!("mem{}", i % namespaces);
    let mut call = template.clone();
    call.command = "ADD".into();
    call.container_id = format!("mem-{i:05}");
    call.netns = netns.display().to_string();
    call.args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME=p{i}");
    let out = call.run_in(node_netns)?;
    out.json("ADD")
        .with_context(|| format!("ADD pod {i} (stderr: {})", out.stderr.trim()))?;
    Ok(ms(out.elapsed))
}

fn push<T>(m: &Mutex<Vec<T>>, v: T) {
    match m.lock() {
        Ok(mut g) => g.push(v),
        Err(p) => p.into_inner().push(v),
    }
}

fn take<T>(m: Mutex<Vec<T>>) -> Vec<T> {
    m.into_inner().unwrap_or_else(|p| p.into_inner())
}
