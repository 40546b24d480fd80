//! Benchmarks of the control plane (issue 4): propagation of API changes to 50 watching agents,
//! controller fail-over, agent restart under traffic, controller memory at scale. Each builds
//! its own lab (`--store embedded` or `--store etcd` with 3 controller replicas) and removes it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use seam_client::ControllerClient;
use seam_lab::traffic::{Iperf, Pinger};
use seam_lab::{probe, LabStore};
use seam_model::{Namespace, Node, WatchEvent};

use crate::cleanup::{ChildGuard, LabGuard};
use crate::stats::{ms, verdict, Stats};
use crate::util;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start a tokio runtime")
}

fn stores(choice: &str) -> anyhow::Result<Vec<LabStore>> {
    match choice {
        "both" => Ok(vec![LabStore::Embedded, LabStore::Etcd]),
        other => Ok(vec![other.parse().map_err(anyhow::Error::msg)?]),
    }
}

fn up(kind: &str, nodes: usize, bin_dir: &Path, store: LabStore) -> anyhow::Result<LabGuard> {
    let controllers = if store == LabStore::Etcd { 3 } else { 1 };
    crate::cleanup::lab_up_with(kind, nodes, bin_dir, store, controllers)
}

fn describe(store: LabStore) -> &'static str {
    match store {
        LabStore::Embedded => "embedded store, 1 controller",
        LabStore::Etcd => "etcd (3 members), 3 controller replicas",
    }
}

// ---------------------------------------------------------------------------------------------
// propagation

/// Options of `seam-bench propagation`.
#[derive(Debug, Clone, clap::Args)]
pub struct PropagationOpts {
    /// Watching agents (separate processes, each one watch stream through seam-client).
    #[arg(long, default_value_t = 50)]
    pub watchers: usize,
    /// Single changes timed one at a time (latency).
    #[arg(long, default_value_t = 200)]
    pub changes: usize,
    /// Changes sent back to back by 16 writers (throughput).
    #[arg(long, default_value_t = 2000)]
    pub burst: usize,
    /// embedded, etcd or both.
    #[arg(long, default_value = "both")]
    pub store: String,
}

impl PropagationOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "propagation --watchers {} --changes {} --burst {} --store {}",
            self.watchers, self.changes, self.burst, self.store
        )
    }
}

/// Options of the hidden watcher process.
#[derive(Debug, Clone, clap::Args)]
pub struct WatcherOpts {
    /// Controller endpoint(s), comma-separated.
    #[arg(long)]
    pub controller: String,
}

/// The watcher process: follows the controller as an agent does (snapshot, then the watch
/// from the snapshot's revision, through seam-client) and acknowledges every change of a
/// `bprop*` namespace on stdout (`ack <namespace> <seq>`), flushing each line.
pub fn watcher(opts: &WatcherOpts) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = ControllerClient::new(&opts.controller)?;
        let snapshot = client.snapshot().await?;
        let mut stream = client.watch(snapshot.revision + 1).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready {}", client.endpoint())?;
        out.flush()?;
        while let Some(event) = stream.next().await {
            let event: WatchEvent = event?;
            if event.kind != seam_model::ObjectKind::Namespace || !event.name.starts_with("bprop") {
                continue;
            }
            let seq = event
                .object
                .as_ref()
                .and_then(|o| o["labels"]["seq"].as_str())
                .unwrap_or("-");
            writeln!(out, "ack {} {seq}", event.name)?;
            out.flush()?;
        }
        Ok(())
    })
}

struct Ack {
    watcher: usize,
    key: String,
    at: Instant,
}

struct Watchers {
    children: Vec<ChildGuard>,
    acks: mpsc::Receiver<Ack>,
    endpoints: BTreeMap<String, usize>,
}

fn start_watchers(lab_controller: &str, n: usize) -> anyhow::Result<Watchers> {
    let exe = std::env::current_exe().context("locate seam-bench")?;
    let replicas: Vec<&str> = lab_controller.split(',').collect();
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut children = Vec::new();
    for i in 0..n {
        // Spread the watchers over the replicas: each starts its list at another one.
        let mut list = replicas.clone();
        list.rotate_left(i % replicas.len().max(1));
        let mut child: Child = Command::new(&exe)
            .args(["propagation-watcher", "--controller", &list.join(",")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn a watcher")?;
        let stdout = child.stdout.take().context("watcher stdout")?;
        children.push(ChildGuard::new(child));
        let (tx, ready_tx) = (tx.clone(), ready_tx.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                if let Some(rest) = line.strip_prefix("ack ") {
                    let _ = tx.send(Ack {
                        watcher: i,
                        key: rest.to_string(),
                        at,
                    });
                } else if let Some(endpoint) = line.strip_prefix("ready ") {
                    let _ = ready_tx.send(endpoint.to_string());
                }
            }
        });
    }
    let mut endpoints = BTreeMap::new();
    for _ in 0..n {
        let endpoint = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .context("a watcher did not start its watch within 30 s")?;
        *endpoints.entry(endpoint).or_insert(0) += 1;
    }
    Ok(Watchers {
        children,
        acks: rx,
        endpoints,
    })
}

fn bprop(name: &str, seq: usize) -> Namespace {
    let mut ns = Namespace::named(name);
    ns.labels.insert("seq".into(), seq.to_string());
    ns
}

/// Results for one store.
#[derive(Debug, Clone)]
pub struct PropagationResult {
    /// The store.
    pub store: LabStore,
    /// API change (PUT sent) to the last of the watchers acknowledging it, ms.
    pub latency: Stats,
    /// The PUT's own latency, ms.
    pub write: Stats,
    /// Changes per second from the first PUT of the burst to every watcher having seen all.
    pub throughput: f64,
    /// Changes per second the writers got accepted.
    pub write_rate: f64,
    /// Watchers per replica endpoint.
    pub spread: BTreeMap<String, usize>,
}

/// Runs `seam-bench propagation`.
pub fn propagation(
    bin_dir: &Path,
    opts: &PropagationOpts,
) -> anyhow::Result<Vec<PropagationResult>> {
    println!(
        "== seam-bench {}  ({} CPUs, load {})",
        opts.command(),
        util::cpus(),
        util::loadavg()
    );
    println!(
        "   {} watcher processes, each following the controller as seamd does (snapshot, then \
         GET /v1/watch through seam-client) and acknowledging on stdout each change it sees; \
         1 real seamd on the lab's node",
        opts.watchers
    );
    let mut results = Vec::new();
    for store in stores(&opts.store)? {
        let guard = up("bprop", 1, bin_dir, store)?;
        let r = propagation_on(&guard, store, opts);
        guard.finish()?;
        let r = r?;
        println!("   -- {}", describe(r.store));
        println!(
            "      single change -> all {} watchers: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={}) \
             [PUT alone: p50 {:.1} ms, p99 {:.1} ms]   target p99 < 200 ms: {}",
            opts.watchers,
            r.latency.median,
            r.latency.p99,
            r.latency.max,
            r.latency.n,
            r.write.median,
            r.write.p99,
            verdict(r.latency.p99 < 200.0)
        );
        println!(
            "      burst of {} changes (16 writers): {:.0} changes/s seen by every watcher, \
             {:.0} changes/s accepted by the API",
            opts.burst, r.throughput, r.write_rate
        );
        println!("      watchers per replica: {:?}", r.spread);
        results.push(r);
    }
    Ok(results)
}

fn propagation_on(
    guard: &LabGuard,
    store: LabStore,
    opts: &PropagationOpts,
) -> anyhow::Result<PropagationResult> {
    let lab = &guard.lab;
    let watchers = start_watchers(&lab.controller, opts.watchers)?;
    let rt = runtime()?;
    let client = lab.client()?;
    let n = opts.watchers;
    let mut latencies = Vec::new();
    let mut writes = Vec::new();
    for seq in 0..opts.changes + 5 {
        let key = format!("bprop {seq}");
        let sent = Instant::now();
        rt.block_on(client.put_namespace(&bprop("bprop", seq)))?;
        let written = Instant::now();
        let mut seen = BTreeSet::new();
        let mut last = sent;
        while seen.len() < n {
            let ack = watchers
                .acks
                .recv_timeout(Duration::from_secs(10))
                .with_context(|| format!("change {seq}: only {} watchers saw it", seen.len()))?;
            if ack.key == key && seen.insert(ack.watcher) {
                last = ack.at;
            }
        }
        // The first few warm connections and caches up.
        if seq >= 5 {
            latencies.push(ms(last - sent));
            writes.push(ms(written - sent));
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // Throughput: 16 writers, each its own namespace object, back to back.
    let writers = 16;
    let per = opts.burst.div_ceil(writers);
    let total = per * writers;
    let start = Instant::now();
    let accepted = rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..writers {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                for seq in 0..per {
                    client
                        .put_namespace(&bprop(&format!("bprop-w{w}"), seq))
                        .await?;
                }
                Ok::<_, seam_client::ClientError>(())
            }));
        }
        for t in tasks {
            t.await.context("writer task")??;
        }
        Ok::<_, anyhow::Error>(Instant::now())
    })?;
    let mut per_watcher = vec![0usize; n];
    let mut complete = 0;
    let mut last = start;
    while complete < n {
        let ack = watchers
            .acks
            .recv_timeout(Duration::from_secs(30))
            .with_context(|| format!("burst: {complete} of {n} watchers saw every change"))?;
        if ack.key.starts_with("bprop-w") {
            per_watcher[ack.watcher] += 1;
            if per_watcher[ack.watcher] == total {
                complete += 1;
                last = ack.at;
            }
        }
    }
    drop(watchers.children);
    Ok(PropagationResult {
        store,
        latency: Stats::of(&latencies),
        write: Stats::of(&writes),
        throughput: total as f64 / (last - start).as_secs_f64(),
        write_rate: total as f64 / (accepted - start).as_secs_f64(),
        spread: watchers.endpoints,
    })
}

// ---------------------------------------------------------------------------------------------
// failover

/// Options of `seam-bench failover`.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverOpts {
    /// Leader kills timed.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Allocations (segments and blocks) with one fail-over in the middle.
    #[arg(long, default_value_t = 1000)]
    pub allocations: usize,
}

impl FailoverOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "failover --rounds {} --allocations {}",
            self.rounds, self.allocations
        )
    }
}

/// The results of `seam-bench failover`.
#[derive(Debug, Clone)]
pub struct FailoverResult {
    /// Leader kill -9 to the first write served, ms.
    pub to_write: Stats,
    /// Leader kill -9 to a replica answering "leader", ms.
    pub to_leader: Stats,
    /// Allocations made.
    pub allocations: usize,
    /// Duplicate subnets, VNIs or block CIDRs among them (and in the store afterwards).
    pub duplicates: usize,
    /// Kill to the first allocation served in the allocation run, ms.
    pub allocation_gap: f64,
}

impl FailoverResult {
    /// Both targets met.
    pub fn ok(&self) -> bool {
        self.to_write.max < 5000.0 && self.duplicates == 0
    }
}

fn bench_node(i: usize) -> anyhow::Result<Node> {
    Ok(serde_json::from_value(serde_json::json!({
        "name": format!("bf{i}"),
        "underlayIp": format!("192.0.2.{}", i + 1),
    }))?)
}

/// Retries `f` every 20 ms for up to 15 s; returns when it succeeded.
async fn until_ok<T, F, Fut>(mut f: F) -> anyhow::Result<(T, usize)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, seam_client::ClientError>>,
{
    let start = Instant::now();
    let mut retries = 0;
    loop {
        match f().await {
            Ok(v) => return Ok((v, retries)),
            Err(_) if start.elapsed() < Duration::from_secs(15) => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => bail!("no write served for 15 s: {e}"),
        }
    }
}

/// Runs `seam-bench failover` on an etcd lab with 3 controller replicas.
pub fn failover(bin_dir: &Path, opts: &FailoverOpts) -> anyhow::Result<FailoverResult> {
    println!(
        "== seam-bench {}  ({} CPUs, load {})",
        opts.command(),
        util::cpus(),
        util::loadavg()
    );
    let mut guard = up("bfail", 1, bin_dir, LabStore::Etcd)?;
    let r = failover_on(&mut guard, opts);
    guard.finish()?;
    let r = r?;
    println!("   -- {}, leader lease TTL 2 s", describe(LabStore::Etcd));
    println!(
        "      leader kill -9 -> first write served: p50 {:.0} ms, max {:.0} ms (n={})   target < 5 s: {}",
        r.to_write.median,
        r.to_write.max,
        r.to_write.n,
        verdict(r.to_write.max < 5000.0)
    );
    println!(
        "      leader kill -9 -> a replica says leader: p50 {:.0} ms, max {:.0} ms",
        r.to_leader.median, r.to_leader.max
    );
    println!(
        "      {} allocations (every 10th a segment: subnet + VNI, else a block), leader killed \
         at #{}: served again after {:.0} ms, duplicates {}   target 0: {}",
        r.allocations,
        r.allocations / 2,
        r.allocation_gap,
        r.duplicates,
        verdict(r.duplicates == 0)
    );
    Ok(r)
}

fn failover_on(guard: &mut LabGuard, opts: &FailoverOpts) -> anyhow::Result<FailoverResult> {
    let rt = runtime()?;
    let client = guard.lab.client()?.with_timeout(Duration::from_millis(500));
    // Nine nodes: each block claim of a segment goes to another node (a node holding two
    // unused blocks of a segment gets no third).
    for i in 0..9 {
        let node = bench_node(i)?;
        rt.block_on(until_ok(|| client.put_node(&node)))?;
    }
    let mut to_write = Vec::new();
    let mut to_leader = Vec::new();
    for round in 0..opts.rounds {
        let leader = guard.lab.wait_for_leader(Duration::from_secs(10))?;
        guard.lab.processes().kill_controller(leader, "KILL")?;
        let killed = Instant::now();
        let node = bench_node(10 + round)?;
        rt.block_on(until_ok(|| client.put_node(&node)))?;
        to_write.push(ms(killed.elapsed()));
        guard.lab.wait_for_leader(Duration::from_secs(10))?;
        to_leader.push(ms(killed.elapsed()));
        guard.lab.processes().start_controller(leader)?;
        // Back as a standby before the next round.
        let deadline = Instant::now() + Duration::from_secs(15);
        while guard.lab.replica_role(leader).as_deref() != Some("standby") {
            if Instant::now() > deadline {
                bail!("replica {leader} did not come back as a standby");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let mut subnets = Vec::new();
    let mut vnis = Vec::new();
    let mut cidrs = Vec::new();
    let mut gap = 0.0;
    for i in 0..opts.allocations {
        let mut killed = None;
        if i == opts.allocations / 2 {
            let leader = guard.lab.wait_for_leader(Duration::from_secs(10))?;
            guard.lab.processes().kill_controller(leader, "KILL")?;
            killed = Some(Instant::now());
        }
        if i % 10 == 0 {
            let ns = format!("bf{}", i / 10);
            let (s, _) = rt.block_on(until_ok(|| client.ensure_segment(&ns)))?;
            subnets.push(s.subnet.to_string());
            vnis.push(s.vni);
        } else {
            let segment = format!("ns-bf{}", i / 10);
            let node = format!("bf{}", i % 10 - 1);
            let (b, _) = rt.block_on(until_ok(|| client.claim_block(&segment, &node)))?;
            cidrs.push(b.cidr.to_string());
        }
        if let Some(at) = killed {
            gap = ms(at.elapsed());
        }
    }
    let dups = |v: &[String]| v.len() - v.iter().collect::<BTreeSet<_>>().len();
    let vni_dups = vnis.len() - vnis.iter().collect::<BTreeSet<_>>().len();
    // What the store holds afterwards, read back through the API.
    let stored: Vec<String> = rt
        .block_on(client.list_blocks())?
        .iter()
        .map(|b| b.cidr.to_string())
        .collect();
    let stored_dups = dups(&stored);
    Ok(FailoverResult {
        to_write: Stats::of(&to_write),
        to_leader: Stats::of(&to_leader),
        allocations: opts.allocations,
        duplicates: dups(&subnets) + vni_dups + dups(&cidrs) + stored_dups,
        allocation_gap: gap,
    })
}

// ---------------------------------------------------------------------------------------------
// restart

/// Options of `seam-bench restart`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestartOpts {
    /// Agent kill -9 + restarts (alternating the sending and the receiving node).
    #[arg(long, default_value_t = 6)]
    pub rounds: usize,
    /// embedded or etcd.
    #[arg(long, default_value = "embedded")]
    pub store: String,
}

impl RestartOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!("restart --rounds {} --store {}", self.rounds, self.store)
    }
}

/// The results of `seam-bench restart`.
#[derive(Debug, Clone)]
pub struct RestartResult {
    /// Echoes lost per round.
    pub lost: Vec<u32>,
    /// Echoes sent in all.
    pub sent: u32,
    /// kill -9 to CNI STATUS answered by the new agent, ms.
    pub ready: Stats,
    /// iperf3 retransmits per round.
    pub retransmits: Vec<u64>,
    /// Longest iperf3 stall per round, s.
    pub stalls: Vec<f64>,
}

impl RestartResult {
    /// Nothing lost.
    pub fn ok(&self) -> bool {
        self.lost.iter().all(|&l| l == 0) && self.stalls.iter().all(|&s| s == 0.0)
    }
}

/// Runs `seam-bench restart`.
pub fn restart(bin_dir: &Path, opts: &RestartOpts) -> anyhow::Result<RestartResult> {
    println!(
        "== seam-bench {}  ({} CPUs, load {})",
        opts.command(),
        util::cpus(),
        util::loadavg()
    );
    let store: LabStore = opts.store.parse().map_err(anyhow::Error::msg)?;
    let mut guard = up("brst", 2, bin_dir, store)?;
    let r = restart_on(&mut guard, opts);
    guard.finish()?;
    let r = r?;
    println!("   -- {}", describe(store));
    println!(
        "      per round: 50 Hz ping pod(n1) -> pod(n2) and an iperf3 TCP flow (100 Mbit/s) \
         across nodes while one agent is killed -9 and restarted"
    );
    println!(
        "      echoes lost per round {:?} of {} sent   target 0: {}",
        r.lost,
        r.sent,
        verdict(r.lost.iter().all(|&l| l == 0))
    );
    println!(
        "      iperf3 retransmits per round {:?}, longest stall per round {:?} s",
        r.retransmits, r.stalls
    );
    println!(
        "      kill -9 -> agent ready (CNI STATUS answered): p50 {:.0} ms, max {:.0} ms (n={})",
        r.ready.median, r.ready.max, r.ready.n
    );
    Ok(r)
}

fn restart_on(guard: &mut LabGuard, opts: &RestartOpts) -> anyhow::Result<RestartResult> {
    let a = guard.lab.workloads().add_pod("n1", "rst", "a")?;
    let b = guard.lab.workloads().add_pod("n2", "rst", "b")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !probe::ping(&a.netns_path, b.ip, 1)? {
        if Instant::now() > deadline {
            bail!("pod a cannot reach pod b");
        }
    }
    let mut lost = Vec::new();
    let mut sent = 0;
    let mut ready = Vec::new();
    let mut retransmits = Vec::new();
    let mut stalls = Vec::new();
    let interval = Duration::from_millis(500);
    for round in 0..opts.rounds {
        let node = if round % 2 == 0 { "n1" } else { "n2" };
        let flow = Iperf::start(
            &b.netns_path,
            &a.netns_path,
            b.ip,
            5201,
            6,
            "100M",
            interval,
        )?;
        let pinger = Pinger::start(&a.netns_path, b.ip, Duration::from_millis(20), 300)?;
        std::thread::sleep(Duration::from_secs(1));
        guard.lab.processes().kill_agent(node, "KILL")?;
        let killed = Instant::now();
        guard.lab.processes().start_agent(node)?;
        ready.push(ms(killed.elapsed()));
        let pings = pinger.finish()?;
        let report = flow.finish()?;
        sent += pings.sent;
        lost.push(pings.lost());
        retransmits.push(report.retransmits);
        stalls.push(report.longest_stall(interval));
    }
    Ok(RestartResult {
        lost,
        sent,
        ready: Stats::of(&ready),
        retransmits,
        stalls,
    })
}

// ---------------------------------------------------------------------------------------------
// controller memory

/// Options of `seam-bench controller-memory`.
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerMemoryOpts {
    /// Endpoints (100 per namespace, spread over 10 nodes).
    #[arg(long, default_value_t = 10_000)]
    pub endpoints: usize,
    /// NetworkPolicies (spread over the namespaces).
    #[arg(long, default_value_t = 1000)]
    pub policies: usize,
    /// embedded, etcd or both.
    #[arg(long, default_value = "embedded")]
    pub store: String,
}

impl ControllerMemoryOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "controller-memory --endpoints {} --policies {} --store {}",
            self.endpoints, self.policies, self.store
        )
    }
}

fn network_policy(ns: &str, i: usize) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": { "name": format!("np-{i}"), "namespace": ns },
        "spec": {
            "podSelector": { "matchLabels": { "app": format!("app-{}", i % 10) } },
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{ "podSelector": { "matchLabels": { "role": format!("client-{}", i % 7) } } }],
                "ports": [{ "protocol": "TCP", "port": 8000 + (i % 100) }]
            }]
        }
    })
}

/// Runs `seam-bench controller-memory`: loads endpoints and policies through the API and reads
/// every controller process's VmRSS/VmHWM.
pub fn controller_memory(bin_dir: &Path, opts: &ControllerMemoryOpts) -> anyhow::Result<()> {
    println!(
        "== seam-bench {}  ({} CPUs, load {})",
        opts.command(),
        util::cpus(),
        util::loadavg()
    );
    for store in stores(&opts.store)? {
        let guard = up("bcmem", 1, bin_dir, store)?;
        let r = controller_memory_on(&guard, opts);
        guard.finish()?;
        let lines = r?;
        println!("   -- {}", describe(store));
        for l in lines {
            println!("      {l}");
        }
    }
    Ok(())
}

fn rss_line(guard: &LabGuard, when: &str) -> Vec<String> {
    guard
        .lab
        .replicas
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let role = guard.lab.replica_role(i).unwrap_or_else(|| "?".into());
            format!(
                "{when}: controller {} ({role}) VmRSS {:.1} MiB, VmHWM {:.1} MiB",
                r.name,
                util::proc_status_kib(r.pid, "VmRSS").unwrap_or(0) as f64 / 1024.0,
                util::proc_status_kib(r.pid, "VmHWM").unwrap_or(0) as f64 / 1024.0
            )
        })
        .collect()
}

fn controller_memory_on(
    guard: &LabGuard,
    opts: &ControllerMemoryOpts,
) -> anyhow::Result<Vec<String>> {
    let mut lines = rss_line(guard, "empty");
    let rt = runtime()?;
    let client = guard.lab.client()?.with_timeout(Duration::from_secs(30));
    let start = Instant::now();
    let namespaces = opts.endpoints.div_ceil(100).max(1);
    rt.block_on(async {
        for n in 0..10 {
            let node: Node = serde_json::from_value(serde_json::json!({
                "name": format!("m{n}"),
                "underlayIp": format!("192.0.2.{}", n + 100),
            }))?;
            client.put_node(&node).await?;
        }
        let mut segments = Vec::new();
        // A pod's address is in a block of its node: one block per node and segment, ten
        // endpoints in each.
        let mut blocks = std::collections::BTreeMap::new();
        for k in 0..namespaces {
            let segment = client.ensure_segment(&format!("mem{k}")).await?;
            for n in 0..10 {
                let block = client.claim_block(&segment.name, &format!("m{n}")).await?;
                blocks.insert((k, n), block.cidr.network());
            }
            segments.push(segment);
        }
        let blocks = std::sync::Arc::new(blocks);
        // 8 writers; the controller serializes writes anyway.
        let mut tasks = Vec::new();
        for w in 0..8 {
            let client = client.clone();
            let segments = segments.clone();
            let blocks = blocks.clone();
            let total = opts.endpoints;
            tasks.push(tokio::spawn(async move {
                for e in (w..total).step_by(8) {
                    let seg = &segments[e / 100];
                    let block = blocks
                        .get(&(e / 100, e % 10))
                        .copied()
                        .context("no block claimed for the endpoint's node")?;
                    let ip = std::net::Ipv4Addr::from(u32::from(block) + 2 + (e % 100 / 10) as u32);
                    let o = ip.octets();
                    let endpoint: seam_model::Endpoint = serde_json::from_value(serde_json::json!({
                        "name": format!("mem{}/pod-{e}", e / 100),
                        "kind": "pod",
                        "namespace": format!("mem{}", e / 100),
                        "segment": seg.name,
                        "node": format!("m{}", e % 10),
                        "ip": ip,
                        "mac": format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]),
                        "labels": { "app": format!("app-{}", e % 10), "role": format!("client-{}", e % 7) },
                    }))?;
                    client.put_endpoint(&endpoint).await?;
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        for t in tasks {
            t.await.context("endpoint writer")??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let endpoints_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    rt.block_on(async {
        for i in 0..opts.policies {
            let ns = format!("mem{}", i % namespaces);
            client
                .put_policy(
                    "NetworkPolicy",
                    Some(&ns),
                    &format!("np-{i}"),
                    &network_policy(&ns, i),
                )
                .await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let policies_secs = start.elapsed().as_secs_f64();
    let snapshot = rt.block_on(client.snapshot())?;
    lines.push(format!(
        "loaded {} endpoints in {endpoints_secs:.0} s ({:.0}/s), {} policies in {policies_secs:.0} s; snapshot holds {} endpoints, {} policies",
        opts.endpoints,
        opts.endpoints as f64 / endpoints_secs,
        opts.policies,
        snapshot.endpoints.len(),
        snapshot.policies.len()
    ));
    lines.extend(rss_line(guard, "loaded"));
    Ok(lines)
}
