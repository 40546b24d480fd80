//! `seam-bench cni`: CNI ADD/DEL latency of seam-cni against Debian's bridge + host-local,
//! called the same way (exec with CNI env and stdin config, from inside a node namespace),
//! alternating so machine noise hits both; then ADDs from many threads at once.

use std::path::{Path, PathBuf};
use std::sync::Barrier;

use anyhow::{bail, Context};
use seam_lab::CniCall;
use serde_json::{json, Value};

use crate::cleanup::LabGuard;
use crate::stats::{ms, ratio, verdict, Stats};
use crate::util;

/// Kubernetes namespace of the benchmark pods (one Seam segment).
const POD_NS: &str = "bench";
/// Seam's host-side veth prefix.
const SEAM_PORT_PREFIX: &str = "sv";
/// The bridge plug-in's host-side veth prefix.
const REF_PORT_PREFIX: &str = "veth";

/// Options of `seam-bench cni`.
#[derive(Debug, Clone, clap::Args)]
pub struct CniOpts {
    /// ADD+DEL pairs timed per plug-in (after the warm-up).
    #[arg(long, default_value_t = 100)]
    pub calls: usize,
    /// Untimed ADD+DEL pairs first (segment/bridge creation, page cache).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Threads doing ADDs at once in the concurrency phase.
    #[arg(long, default_value_t = 20)]
    pub threads: usize,
    /// ADDs per thread in the concurrency phase (distinct containers, fresh pod namespaces).
    #[arg(long, default_value_t = 5)]
    pub per_thread: usize,
    /// Directory of Debian's reference plug-ins.
    #[arg(long, default_value = "/usr/lib/cni")]
    pub ref_dir: PathBuf,
    /// How the lab's agents reach the controller: `tls` (the lab as it is: over TCP on the
    /// underlay with their node certificates) or `unix` (its Unix socket, as labs did before
    /// issue 11), for a baseline.
    #[arg(long, value_enum, default_value_t = AgentLink::Tls)]
    pub agents: AgentLink,
}

/// How the lab's agents reach the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AgentLink {
    /// Over TLS on the underlay, with node certificates (the lab's default).
    Tls,
    /// The controller's Unix socket, as the local admin.
    Unix,
}

impl AgentLink {
    /// As on the command line.
    pub fn label(self) -> &'static str {
        match self {
            AgentLink::Tls => "tls",
            AgentLink::Unix => "unix",
        }
    }
}

impl CniOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "cni --calls {} --warmup {} --threads {} --per-thread {} --agents {}",
            self.calls,
            self.warmup,
            self.threads,
            self.per_thread,
            self.agents.label()
        )
    }
}

/// One plug-in, ready to be called from inside its node namespace.
struct Plugin {
    label: &'static str,
    node_netns: PathBuf,
    template: CniCall,
    port_prefix: &'static str,
}

impl Plugin {
    fn call(
        &self,
        command: &str,
        container_id: &str,
        pod_netns: &Path,
        pod: &str,
        prev: Option<&Value>,
    ) -> anyhow::Result<(f64, Value)> {
        let mut call = self.template.clone();
        call.command = command.into();
        call.container_id = container_id.into();
        call.netns = pod_netns.display().to_string();
        call.args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={POD_NS};K8S_POD_NAME={pod}");
        if let Some(prev) = prev {
            call.config["prevResult"] = prev.clone();
        }
        let out = call
            .run_in(&self.node_netns)
            .with_context(|| format!("{} {command} {container_id}", self.label))?;
        let value = out.json(command).with_context(|| {
            format!(
                "{} {command} {container_id} (stderr: {})",
                self.label,
                out.stderr.trim()
            )
        })?;
        Ok((ms(out.elapsed), value))
    }

    /// ADD; returns its wall time and the result (the DEL's prevResult).
    fn add(&self, cid: &str, pod_netns: &Path, pod: &str) -> anyhow::Result<(f64, Value)> {
        let (t, result) = self.call("ADD", cid, pod_netns, pod, None)?;
        if result["ips"][0]["address"].as_str().is_none() {
            bail!("{} ADD {cid} gave no address: {result}", self.label);
        }
        Ok((t, result))
    }

    /// DEL with the ADD's result as prevResult, as a runtime sends it.
    fn del(&self, cid: &str, pod_netns: &Path, pod: &str, prev: &Value) -> anyhow::Result<f64> {
        Ok(self.call("DEL", cid, pod_netns, pod, Some(prev))?.0)
    }

    /// Host ports still present once removal had its chance: seamd deletes DEL'd veths in
    /// batches shortly after DEL returns (the kernel's per-link grace period is paid once per
    /// batch), so this waits up to 3 s before calling a port left behind.
    fn leftover_ports(&self) -> anyhow::Result<Vec<String>> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let left: Vec<String> = util::links(&util::netns_name(&self.node_netns))?
                .into_iter()
                .filter(|l| l.starts_with(self.port_prefix))
                .collect();
            if left.is_empty() || std::time::Instant::now() >= deadline {
                return Ok(left);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// What the concurrency phase measured for one plug-in.
#[derive(Debug, Clone, Default)]
pub struct Concurrent {
    /// ADD latencies.
    pub add: Stats,
    /// DEL latencies (also concurrent).
    pub del: Stats,
    /// ADDs per second over the whole phase.
    pub add_rate: f64,
    /// Failed calls.
    pub errors: Vec<String>,
    /// Host ports still present after all DELs.
    pub leftover: Vec<String>,
}

/// The results of `seam-bench cni`.
#[derive(Debug, Clone, Default)]
pub struct CniSummary {
    /// seam-cni ADD.
    pub seam_add: Stats,
    /// seam-cni DEL.
    pub seam_del: Stats,
    /// bridge+host-local ADD.
    pub ref_add: Stats,
    /// bridge+host-local DEL.
    pub ref_del: Stats,
    /// seam-cni under concurrency.
    pub seam_conc: Concurrent,
    /// bridge+host-local under concurrency.
    pub ref_conc: Concurrent,
}

impl CniSummary {
    /// Seam's median ADD and DEL at most half the reference's.
    pub fn latency_ok(&self) -> bool {
        self.seam_add.median <= 0.5 * self.ref_add.median
            && self.seam_del.median <= 0.5 * self.ref_del.median
    }

    /// p95 ADD under concurrency below 15 ms, no errors, nothing left.
    pub fn concurrency_ok(&self) -> bool {
        self.seam_conc.add.p95 < 15.0
            && self.seam_conc.errors.is_empty()
            && self.seam_conc.leftover.is_empty()
    }
}

/// Runs the benchmark on a fresh 1-node lab and removes it again.
pub fn run(bin_dir: &Path, opts: &CniOpts) -> anyhow::Result<CniSummary> {
    println!(
        "== seam-bench {}  ({} CPUs, load {})",
        opts.command(),
        util::cpus(),
        util::loadavg()
    );
    let mut guard = crate::cleanup::lab_up("bcni", 1, bin_dir)?;
    let result = link_agents(&mut guard, opts.agents).and_then(|()| bench(&guard, opts));
    let down = guard.finish();
    let summary = result?;
    down?;
    Ok(summary)
}

/// Restarts the lab's agents on the controller's Unix socket for `AgentLink::Unix` (the lab
/// starts them over TLS), and says which way they go.
fn link_agents(guard: &mut LabGuard, agents: AgentLink) -> anyhow::Result<()> {
    if agents == AgentLink::Unix && !guard.lab.api.is_empty() {
        // Without an API address the lab starts agents on the Unix socket, without certificate.
        guard.lab.api.clear();
        let nodes: Vec<String> = guard.lab.nodes.iter().map(|n| n.name.clone()).collect();
        for node in nodes {
            guard.lab.processes().kill_agent(&node, "KILL")?;
            guard.lab.processes().start_agent(&node)?;
        }
    }
    if guard.lab.api.is_empty() {
        println!(
            "   agents reach the controller on its Unix socket {} (no certificate)",
            guard.lab.controller
        );
    } else {
        println!(
            "   agents reach the controller over TLS at {} with their node certificates (joined with tokens); seam-cni talks to the agent's Unix socket",
            guard.lab.api
        );
    }
    Ok(())
}

fn bench(guard: &LabGuard, opts: &CniOpts) -> anyhow::Result<CniSummary> {
    let lab = &guard.lab;
    let node = lab.nodes.first().context("lab has no node")?;
    let seam = Plugin {
        label: "seam-cni",
        node_netns: node.netns_path.clone(),
        template: lab.cni_call(node, "ADD", "", "", "")?,
        port_prefix: SEAM_PORT_PREFIX,
    };
    // The reference runs in a sibling "node" namespace of its own (the lab's prefix, so the
    // lab's teardown removes it too): its bridge never meets seamd's devices.
    let ref_node = util::netns_with_lo(&format!("{}-rn", lab.name))?;
    let ipam_dir = tempfile::Builder::new()
        .prefix("seam-bench-ipam-")
        .tempdir()
        .context("temp dir for host-local")?;
    let reference = Plugin {
        label: "bridge+host-local",
        node_netns: ref_node,
        template: CniCall {
            plugin: opts.ref_dir.join("bridge"),
            command: String::new(),
            container_id: String::new(),
            netns: String::new(),
            ifname: "eth0".into(),
            args: String::new(),
            cni_path: opts.ref_dir.display().to_string(),
            config: json!({
                "cniVersion": "1.0.0",
                "name": "benchnet",
                "type": "bridge",
                "bridge": "cnibench0",
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": "10.94.0.0/24" }]],
                    "dataDir": ipam_dir.path(),
                },
            }),
        },
        port_prefix: REF_PORT_PREFIX,
    };
    // One pod namespace per plug-in, reused: each ADD makes eth0, each DEL removes it.
    let seam_pod = util::netns_with_lo(&format!("{}-sp", lab.name))?;
    let ref_pod = util::netns_with_lo(&format!("{}-rp", lab.name))?;

    let mut seam_add = Vec::new();
    let mut seam_del = Vec::new();
    let mut ref_add = Vec::new();
    let mut ref_del = Vec::new();
    let mut log_offset = 0;
    for i in 0..opts.warmup + opts.calls {
        if i == opts.warmup {
            log_offset = std::fs::metadata(&node.agent_log)
                .map(|m| m.len())
                .unwrap_or(0);
        }
        let cid = format!("seq-{i:04}");
        let pod = format!("p{i}");
        // ABBA: which plug-in goes first alternates.
        for first in [i % 2 == 0, i % 2 != 0] {
            let (p, pod_ns, adds, dels) = if first {
                (&seam, &seam_pod, &mut seam_add, &mut seam_del)
            } else {
                (&reference, &ref_pod, &mut ref_add, &mut ref_del)
            };
            let (t_add, result) = p.add(&cid, pod_ns, &pod)?;
            let t_del = p.del(&cid, pod_ns, &pod, &result)?;
            if i >= opts.warmup {
                adds.push(t_add);
                dels.push(t_del);
            }
        }
    }
    let agent_times = agent_log_times(&node.agent_log, log_offset);
    let mut summary = CniSummary {
        seam_add: Stats::of(&seam_add),
        seam_del: Stats::of(&seam_del),
        ref_add: Stats::of(&ref_add),
        ref_del: Stats::of(&ref_del),
        ..CniSummary::default()
    };
    for p in [&seam, &reference] {
        let left = p.leftover_ports()?;
        if !left.is_empty() {
            bail!(
                "{}: host ports left after the sequential ADD/DEL: {left:?}",
                p.label
            );
        }
    }
    print_sequential(&summary, opts);
    if let Some((add, del)) = agent_times {
        println!(
            "   seamd's own handling (its debug log, same calls): ADD median {:.2} ms p95 {:.2} ms, \
             DEL median {:.2} ms p95 {:.2} ms",
            add.median, add.p95, del.median, del.p95
        );
    }
    print_floors(&seam, &seam_pod)?;

    println!(
        "\n-- concurrent ADD: {} threads x {} ADDs (distinct containers, a fresh pod netns each), \
         then all DELs concurrently",
        opts.threads, opts.per_thread
    );
    summary.seam_conc = concurrent(&seam, &lab.name, "cs", opts)?;
    summary.ref_conc = concurrent(&reference, &lab.name, "cr", opts)?;
    print_concurrent(&summary);
    drop(ipam_dir);
    Ok(summary)
}

fn print_sequential(s: &CniSummary, opts: &CniOpts) {
    println!(
        "\n-- sequential, {} ADD+DEL per plug-in (+{} warm-up), alternating order (ms)",
        opts.calls, opts.warmup
    );
    println!(
        "   {:<20} {:>4} {:>8} {:>8} {:>8} {:>8}",
        "plug-in", "op", "median", "p95", "min", "max"
    );
    for (label, op, st) in [
        ("seam-cni", "ADD", s.seam_add),
        ("bridge+host-local", "ADD", s.ref_add),
        ("seam-cni", "DEL", s.seam_del),
        ("bridge+host-local", "DEL", s.ref_del),
    ] {
        println!(
            "   {label:<20} {op:>4} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            st.median, st.p95, st.min, st.max
        );
    }
    for (op, a, b) in [
        ("ADD", s.seam_add, s.ref_add),
        ("DEL", s.seam_del, s.ref_del),
    ] {
        let r = ratio(a.median, b.median);
        println!(
            "   ratio seam/ref {op}: median {r:.2}  p95 {:.2}   target median <= 0.50: {}",
            ratio(a.p95, b.p95),
            verdict(r <= 0.5)
        );
    }
}

/// What exec alone costs: `/bin/cat`, and seam-cni answering VERSION (no agent call).
fn print_floors(seam: &Plugin, pod: &Path) -> anyhow::Result<()> {
    let mut t_true = Vec::new();
    let mut t_version = Vec::new();
    for _ in 0..30 {
        let mut call = seam.template.clone();
        call.plugin = PathBuf::from("/bin/cat");
        call.command = "VERSION".into();
        t_true.push(ms(call.run_in(&seam.node_netns)?.elapsed));
        let (t, _) = seam.call("VERSION", "", pod, "x", None)?;
        t_version.push(t);
    }
    let (a, b) = (Stats::of(&t_true), Stats::of(&t_version));
    println!(
        "   exec floor (30 calls, same path): /bin/cat median {:.2} ms, seam-cni VERSION median {:.2} ms",
        a.median, b.median
    );
    Ok(())
}

fn concurrent(p: &Plugin, lab: &str, tag: &str, opts: &CniOpts) -> anyhow::Result<Concurrent> {
    let threads = opts.threads.max(1);
    let per = opts.per_thread.max(1);
    let mut pods = Vec::new();
    for t in 0..threads {
        let mut row = Vec::new();
        for j in 0..per {
            row.push(util::netns_with_lo(&format!("{lab}-{tag}{t}x{j}"))?);
        }
        pods.push(row);
    }
    let cid = |t: usize, j: usize| format!("{tag}-{t:02}-{j:02}");
    let pod = |t: usize, j: usize| format!("c{t}x{j}");

    // ADDs: every thread starts at the same moment.
    let barrier = Barrier::new(threads);
    let started = std::time::Instant::now();
    let adds: Vec<Vec<Result<(f64, Value), String>>> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(t, row)| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    row.iter()
                        .enumerate()
                        .map(|(j, ns)| {
                            p.add(&cid(t, j), ns, &pod(t, j))
                                .map_err(|e| format!("{e:#}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err("thread panicked".into())])
            })
            .collect()
    });
    let wall = started.elapsed().as_secs_f64();

    let mut out = Concurrent::default();
    let mut add_ms = Vec::new();
    let mut done = 0usize;
    for r in adds.iter().flatten() {
        match r {
            Ok((t, _)) => {
                add_ms.push(*t);
                done += 1;
            }
            Err(e) => out.errors.push(format!("ADD: {e}")),
        }
    }
    out.add = Stats::of(&add_ms);
    out.add_rate = done as f64 / wall;

    // DELs of everything ADDed (even after a failed ADD a runtime sends DEL).
    let barrier = Barrier::new(threads);
    let dels: Vec<Vec<Result<f64, String>>> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .zip(&adds)
            .enumerate()
            .map(|(t, (row, results))| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    row.iter()
                        .zip(results)
                        .enumerate()
                        .map(|(j, (ns, r))| {
                            let prev = r.as_ref().map(|(_, v)| v.clone()).unwrap_or(Value::Null);
                            p.del(&cid(t, j), ns, &pod(t, j), &prev)
                                .map_err(|e| format!("{e:#}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err("thread panicked".into())])
            })
            .collect()
    });
    let mut del_ms = Vec::new();
    for r in dels.iter().flatten() {
        match r {
            Ok(t) => del_ms.push(*t),
            Err(e) => out.errors.push(format!("DEL: {e}")),
        }
    }
    out.del = Stats::of(&del_ms);
    out.leftover = p.leftover_ports()?;
    for ns in pods.iter().flatten() {
        let _ = seam_linux::netns::delete(&util::netns_name(ns));
    }
    Ok(out)
}

fn print_concurrent(s: &CniSummary) {
    println!(
        "   {:<20} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9}",
        "plug-in", "ADDs", "median", "p95", "max", "ADD/s", "DEL p50", "errors", "leftover"
    );
    for (label, c) in [
        ("seam-cni", &s.seam_conc),
        ("bridge+host-local", &s.ref_conc),
    ] {
        println!(
            "   {label:<20} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>8.1} {:>8.2} {:>7} {:>9}",
            c.add.n,
            c.add.median,
            c.add.p95,
            c.add.max,
            c.add_rate,
            c.del.median,
            c.errors.len(),
            c.leftover.len()
        );
        for e in c.errors.iter().take(3) {
            println!("     error: {e}");
        }
        if !c.leftover.is_empty() {
            println!("     left behind: {:?}", c.leftover);
        }
    }
    println!(
        "   target: seam-cni p95 ADD under concurrency < 15 ms, all DELed, no sv* veth left: {}",
        verdict(s.concurrency_ok())
    );
}

/// Median/p95 of seamd's own ADD and DEL handling from its `cni request` debug lines after
/// `offset` (present when seam-bench runs with `RUST_LOG=seam_agent=debug`).
fn agent_log_times(log: &Path, offset: u64) -> Option<(Stats, Stats)> {
    let text = std::fs::read(log).ok()?;
    let text = String::from_utf8_lossy(text.get(offset as usize..)?);
    let mut add = Vec::new();
    let mut del = Vec::new();
    for line in text.lines().filter(|l| l.contains("cni request")) {
        let line = util::strip_ansi(line);
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name).map(str::to_string))
        };
        let (Some(op), Some(us)) = (field("op="), field("elapsed_us=")) else {
            continue;
        };
        let Ok(us) = us.parse::<f64>() else { continue };
        match op.as_str() {
            "ADD" => add.push(us / 1e3),
            "DEL" => del.push(us / 1e3),
            _ => {}
        }
    }
    (!add.is_empty()).then(|| (Stats::of(&add), Stats::of(&del)))
}
