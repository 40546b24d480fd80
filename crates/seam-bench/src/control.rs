//! Benchmarks of the control plane (issue 4): propagation of API changes to 50 watching agents,
//! controller fail-over, agent restart under traffic, controller memory at scale. Each builds
//! its own lab (`--store embedded` or `--store etcd` with 3 controller replicas) and removes it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
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

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
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
    /// Controller endpoint(s), comma-separated: `unix:`, `http://` or `https://`.
    #[arg(long)]
    pub controller: String,
    /// For `https://`: the CA that verifies the controller.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// For `https://`: the client certificate to present (with `--key`).
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Follow the controller across restarts as seamd does: when the watch breaks, take a
    /// fresh snapshot and watch again (backoff 100 ms doubling to 5 s), printing `ready` each
    /// time. Only "the controller is not there" is retried, for at most 20 s; anything else
    /// (a refused handshake or certificate, 401/403) ends the process with its error.
    #[arg(long)]
    pub resync: bool,
}

const RESYNC_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RESYNC_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A watcher that cannot reach its controller for this long gives up, loudly.
const RESYNC_GIVE_UP: Duration = Duration::from_secs(20);

/// Why one follow of the controller ended.
enum FollowEnd {
    /// Snapshot or watch could not be started.
    Connect(seam_client::ClientError),
    /// The watch was established and then broke.
    Broken(seam_client::ClientError),
    /// The watch ended cleanly.
    Ended,
}

/// Whether `e` says only that the controller is not there (refused, reset, closed, its socket
/// missing), or is busy, which a restart of the controller causes and a retry cures.
fn controller_away(e: &seam_client::ClientError) -> bool {
    use std::io::ErrorKind;
    if matches!(e, seam_client::ClientError::Timeout { .. }) || e.status() == Some(503) {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            // A TLS alert (a refused certificate) arrives as InvalidData: not retried.
            return matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::NotFound
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            );
        }
        source = err.source();
    }
    false
}

/// One snapshot + watch, acknowledging `bprop*` namespace changes until the stream ends.
async fn follow(client: &ControllerClient, out: &mut impl Write) -> anyhow::Result<FollowEnd> {
    let snapshot = match client.snapshot().await {
        Ok(s) => s,
        Err(e) => return Ok(FollowEnd::Connect(e)),
    };
    let mut stream = match client.watch(snapshot.revision + 1).await {
        Ok(s) => s,
        Err(e) => return Ok(FollowEnd::Connect(e)),
    };
    writeln!(out, "ready {} {}", snapshot.revision, client.endpoint())?;
    out.flush()?;
    while let Some(event) = stream.next().await {
        let event: WatchEvent = match event {
            Ok(ev) => ev,
            Err(e) => return Ok(FollowEnd::Broken(e)),
        };
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
    Ok(FollowEnd::Ended)
}

/// The watcher process: follows the controller as an agent does (snapshot, then the watch
/// from the snapshot's revision, through seam-client), prints `ready <revision> <endpoint>`
/// once the watch stands, and acknowledges every change of a `bprop*` namespace on stdout
/// (`ack <namespace> <seq>`), flushing each line. Its first snapshot and watch must succeed:
/// a refused handshake or certificate ends it at once with the error, never a hang.
pub fn watcher(opts: &WatcherOpts) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let mut client = ControllerClient::new(&opts.controller)?;
        if let Some(ca) = &opts.ca {
            let cert = opts.cert.as_deref().zip(opts.key.as_deref());
            client = client.with_tls(
                seam_client::ClientTls::from_files(ca, cert).context("the watcher's TLS files")?,
            );
        }
        let mut out = std::io::stdout().lock();
        let mut ready_once = false;
        let mut backoff = RESYNC_BACKOFF_MIN;
        let mut away_since: Option<Instant> = None;
        loop {
            let end = follow(&client, &mut out).await?;
            let e = match end {
                FollowEnd::Ended if opts.resync => {
                    ready_once = true;
                    backoff = RESYNC_BACKOFF_MIN;
                    away_since = None;
                    continue;
                }
                FollowEnd::Ended => return Ok(()),
                FollowEnd::Broken(_) if opts.resync => {
                    // It stood, then the controller went away (a restart): wait as seamd does
                    // and count the time away afresh.
                    ready_once = true;
                    backoff = RESYNC_BACKOFF_MIN;
                    away_since = Some(Instant::now());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RESYNC_BACKOFF_MAX);
                    continue;
                }
                FollowEnd::Broken(e) => {
                    return Err(anyhow::Error::new(e).context("the watch broke"))
                }
                FollowEnd::Connect(e) => e,
            };
            // The first follow must succeed (this is where a refused certificate shows); later,
            // only an absent controller is waited for, and not for ever.
            let since = *away_since.get_or_insert_with(Instant::now);
            if !opts.resync || !ready_once || !controller_away(&e) {
                return Err(anyhow::Error::new(e).context(format!(
                    "watcher of {}: snapshot + watch refused",
                    opts.controller
                )));
            }
            if since.elapsed() > RESYNC_GIVE_UP {
                return Err(anyhow::Error::new(e).context(format!(
                    "watcher of {}: controller away for more than {RESYNC_GIVE_UP:?}",
                    opts.controller
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RESYNC_BACKOFF_MAX);
        }
    })
}

/// What a watcher process reported, stamped when the line was read.
pub(crate) enum WatcherEvent {
    /// It saw change `key` (`<namespace> <seq>`).
    Ack {
        watcher: usize,
        key: String,
        at: Instant,
    },
    /// Its snapshot + watch stands (again).
    Ready {
        watcher: usize,
        endpoint: String,
        at: Instant,
    },
    /// It exited; what it wrote on stderr.
    Gone { watcher: usize, stderr: String },
}

/// A watcher process ended (while it should have been following the controller).
#[derive(Debug)]
pub(crate) struct WatcherExited {
    watcher: usize,
    stderr: String,
}

impl WatcherExited {
    /// The first line of what it wrote on stderr (its error).
    pub(crate) fn first_line(&self) -> &str {
        self.stderr.lines().next().unwrap_or("(no message)")
    }
}

impl std::fmt::Display for WatcherExited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "watcher {} exited: {}", self.watcher, self.stderr.trim())
    }
}

impl std::error::Error for WatcherExited {}

pub(crate) struct Watchers {
    pub(crate) children: Vec<ChildGuard>,
    events: mpsc::Receiver<WatcherEvent>,
    /// Watchers per endpoint they first reached.
    pub(crate) endpoints: BTreeMap<String, usize>,
}

impl Watchers {
    /// The next event within `timeout`; a watcher that exited is an error naming its stderr.
    pub(crate) fn next(&self, timeout: Duration, what: &str) -> anyhow::Result<WatcherEvent> {
        match self.events.recv_timeout(timeout) {
            Ok(WatcherEvent::Gone { watcher, stderr }) => {
                Err(anyhow::Error::new(WatcherExited { watcher, stderr }).context(what.to_string()))
            }
            Ok(ev) => Ok(ev),
            Err(_) => bail!("{what}: nothing from the watchers for {timeout:?}"),
        }
    }
}

/// Starts `n` watcher processes (`propagation-watcher` with `args(i)`) and waits until every one
/// has its watch standing; one that exits first fails this at once, with its error.
pub(crate) fn start_watchers(
    n: usize,
    args: impl Fn(usize) -> Vec<std::ffi::OsString>,
) -> anyhow::Result<Watchers> {
    let exe = std::env::current_exe().context("locate seam-bench")?;
    let (tx, rx) = mpsc::channel();
    let mut children = Vec::new();
    for i in 0..n {
        let mut child: Child = Command::new(&exe)
            .arg("propagation-watcher")
            .args(args(i))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn a watcher")?;
        let stdout = child.stdout.take().context("watcher stdout")?;
        let stderr = child.stderr.take().context("watcher stderr")?;
        children.push(ChildGuard::new(child));
        let out_tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                let event = if let Some(rest) = line.strip_prefix("ack ") {
                    WatcherEvent::Ack {
                        watcher: i,
                        key: rest.to_string(),
                        at,
                    }
                } else if let Some(rest) = line.strip_prefix("ready ") {
                    let endpoint = rest.split_once(' ').map_or(rest, |(_, e)| e);
                    WatcherEvent::Ready {
                        watcher: i,
                        endpoint: endpoint.to_string(),
                        at,
                    }
                } else {
                    continue;
                };
                if out_tx.send(event).is_err() {
                    break;
                }
            }
        });
        let err_tx = tx.clone();
        // stderr closes when the process ends: that is the "gone" signal, with its text.
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
            let _ = err_tx.send(WatcherEvent::Gone {
                watcher: i,
                stderr: text,
            });
        });
    }
    let watchers = Watchers {
        children,
        events: rx,
        endpoints: BTreeMap::new(),
    };
    let mut endpoints = BTreeMap::new();
    let mut ready = BTreeSet::new();
    while ready.len() < n {
        if let WatcherEvent::Ready {
            watcher, endpoint, ..
        } = watchers.next(Duration::from_secs(30), "starting the watchers")?
        {
            if ready.insert(watcher) {
                *endpoints.entry(endpoint).or_insert(0) += 1;
            }
        }
    }
    Ok(Watchers {
        endpoints,
        ..watchers
    })
}

pub(crate) fn bprop(name: &str, seq: usize) -> Namespace {
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
    // Spread the watchers over the replicas: each starts its list at another one.
    let replicas: Vec<&str> = lab.controller.split(',').collect();
    let watchers = start_watchers(opts.watchers, |i| {
        let mut list = replicas.clone();
        list.rotate_left(i % replicas.len().max(1));
        vec!["--controller".into(), list.join(",").into()]
    })?;
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
            let what = format!("change {seq}: {} watchers saw it", seen.len());
            if let WatcherEvent::Ack {
                watcher,
                key: k,
                at,
            } = watchers.next(Duration::from_secs(10), &what)?
            {
                if k == key && seen.insert(watcher) {
                    last = at;
                }
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
        let what = format!("burst: {complete} of {n} watchers saw every change");
        if let WatcherEvent::Ack { watcher, key, at } =
            watchers.next(Duration::from_secs(30), &what)?
        {
            if key.starts_with("bprop-w") {
                per_watcher[watcher] += 1;
                if per_watcher[watcher] == total {
                    complete += 1;
                    last = at;
                }
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
