//! Issue 13: time from a flow batch posted to the controller until a `seam flows --follow`
//! reader has its record (p50/p99, target p99 < 500 ms), beside a plain API round trip
//! (`GET /v1/leader`) measured in the same run.
//!
//! One `seam-controller` (embedded store) on `tcp:127.0.0.1:<free port>` with mutual TLS and
//! the CA key, so nodes join as agents do (a join token, a CSR, a node certificate each). While
//! `--nodes` nodes each post a batch of `--batch` records every 200 ms (an agent's pace), a
//! probe node posts one-record batches and a reader follows `GET /v1/flows?follow=true` with its
//! own reader certificate: each probe is timed from just before its POST until the follower
//! decodes it. This is the controller's share of "allowed connection → record in `seam flows
//! --follow`"; the agent's share (NFLOG read, batching interval) adds to it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use seam_client::{ClientTls, ControllerClient, FlowEvent};
use seam_model::flow::{
    FlowBatch, FlowDirection, FlowFilter, FlowPeer, FlowReason, FlowRecord, FlowVerdict, PeerKind,
};
use seam_model::{CallerRole, Identity};
use seam_pki::Ca;

use crate::stats::{ms, verdict, Stats};

const VALIDITY: Duration = Duration::from_secs(86_400);
/// An agent's posting interval.
const INTERVAL: Duration = Duration::from_millis(200);

/// `seam-bench flows-follow` (defaults: 10 nodes x 25 records every 200 ms = 1,250 records/s).
#[derive(Debug, clap::Args)]
pub struct FlowsOpts {
    /// Nodes posting in the background.
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Records per background batch.
    #[arg(long, default_value_t = 25)]
    pub batch: usize,
    /// Probe records timed (and API round trips, interleaved).
    #[arg(long, default_value_t = 300)]
    pub samples: usize,
    /// Pause between probes, milliseconds (the probe is a node: at most 20 batches/s,
    /// `FLOW_POSTS_PER_SECOND`, are taken from one node).
    #[arg(long, default_value_t = 60)]
    pub gap_ms: u64,
}

impl FlowsOpts {
    /// The arguments that reproduce this run.
    pub fn command(&self) -> String {
        format!(
            "flows-follow --nodes {} --batch {} --samples {} --gap-ms {}",
            self.nodes, self.batch, self.samples, self.gap_ms
        )
    }
}

/// What one run measured.
pub struct FlowsReport {
    /// POST of a probe → the follower has it, ms.
    pub delivery: Stats,
    /// `GET /v1/leader` round trips, ms.
    pub round_trip: Stats,
    /// Probes the follower never got.
    pub lost: usize,
    /// Records the follower was told it skipped.
    pub skipped: u64,
    /// Background records posted per second.
    pub load_per_sec: f64,
}

impl FlowsReport {
    /// Whether the target is met.
    pub fn ok(&self) -> bool {
        self.delivery.n > 0 && self.delivery.p99 < 500.0 && self.lost == 0
    }

    /// Prints the figures.
    pub fn print(&self, opts: &FlowsOpts) {
        println!("== flows-follow: POST /v1/flows -> GET /v1/flows?follow=true at the controller");
        println!(
            "   one seam-controller (embedded store), mutual TLS on 127.0.0.1; {} joined nodes each post {} records every 200 ms ({:.0} records/s), a probe node posts one-record batches, a reader follows",
            opts.nodes, opts.batch, self.load_per_sec
        );
        let line = |what: &str, s: &Stats| {
            println!(
                "   {what:<44} n={:<5} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
                s.n, s.median, s.p99, s.max
            );
        };
        line("baseline: GET /v1/leader round trip", &self.round_trip);
        line("post -> follower has the record", &self.delivery);
        println!(
            "   probes lost {}, records the follower skipped {}",
            self.lost, self.skipped
        );
        println!("   target: p99 < 500 ms: {}", verdict(self.ok()));
    }
}

/// Certificates of the run, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> anyhow::Result<Pki> {
        let dir = tempfile::tempdir().context("temporary directory")?;
        let ca = Ca::generate("seam-bench flows-follow CA", VALIDITY)?;
        ca.save(&dir.path().join("ca.crt"), &dir.path().join("ca.key"))?;
        ca.issue_server(
            "seam-controller",
            &["localhost".to_string()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            VALIDITY,
        )?
        .save(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))?;
        Ok(Pki { dir, ca })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A client of `endpoint` with a certificate of `identity` issued by the CA.
    fn client(&self, endpoint: &str, identity: &Identity) -> anyhow::Result<ControllerClient> {
        let (cert, key) = (
            self.path(&format!("{}.crt", identity.name)),
            self.path(&format!("{}.key", identity.name)),
        );
        self.ca
            .issue_client(identity, VALIDITY)?
            .save(&cert, &key)?;
        let tls = ClientTls::from_files(&self.path("ca.crt"), Some((&cert, &key)))?;
        Ok(ControllerClient::new(endpoint)?.with_tls(tls))
    }

    /// A node that joined with `token`, as an agent does: its own key, a CSR, the certificate
    /// the controller signs.
    async fn join(
        &self,
        endpoint: &str,
        token: &str,
        node: &str,
    ) -> anyhow::Result<ControllerClient> {
        let anonymous = ControllerClient::new(endpoint)?
            .with_tls(ClientTls::from_files(&self.path("ca.crt"), None)?);
        let (csr, key) = seam_pki::new_csr(&Identity::node(node, 0))?;
        let joined = anonymous
            .join(token, node, &csr)
            .await
            .with_context(|| format!("join node {node}"))?;
        let (cert_path, key_path) = (
            self.path(&format!("{node}.crt")),
            self.path(&format!("{node}.key")),
        );
        std::fs::write(&cert_path, joined.certificate)?;
        std::fs::write(&key_path, key)?;
        let tls = ClientTls::from_files(&self.path("ca.crt"), Some((&cert_path, &key_path)))?;
        Ok(ControllerClient::new(endpoint)?.with_tls(tls))
    }
}

/// The controller process, killed on drop.
struct ControllerProcess(Child);

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A record of `node`; `rule` marks probes.
fn record(node: &str, i: usize, rule: Option<String>) -> FlowRecord {
    let peer = |ip: [u8; 4], name: String, port: u16| FlowPeer {
        ip: Ipv4Addr::from(ip),
        port: Some(port),
        kind: PeerKind::Pod,
        namespace: Some("bench".to_string()),
        name: Some(name),
    };
    FlowRecord {
        time_ms: now_ms(),
        node: node.to_string(),
        direction: FlowDirection::Ingress,
        protocol: "TCP".to_string(),
        src: peer(
            [10, 1, (i >> 8) as u8, i as u8],
            format!("client-{i}"),
            40000,
        ),
        dst: peer([10, 2, 0, 7], "server".to_string(), 8080),
        verdict: FlowVerdict::Allowed,
        reason: FlowReason::Rule,
        tier: Some("namespace".to_string()),
        policy: Some("NetworkPolicy bench/allow".to_string()),
        rule: Some(rule.unwrap_or_else(|| "np/bench/allow/ingress/0".to_string())),
        service: None,
        suppressed: 0,
    }
}

/// Runs the benchmark against `bin_dir`'s `seam-controller`.
pub fn run(bin_dir: &Path, opts: &FlowsOpts) -> anyhow::Result<FlowsReport> {
    let pki = Pki::new()?;
    let port = free_port()?;
    let endpoint = format!("https://127.0.0.1:{port}");
    let mut child = Command::new(bin_dir.join("seam-controller"));
    child
        .arg("--listen")
        .arg(format!("tcp:127.0.0.1:{port}"))
        .arg("--store")
        .arg(format!("embedded:{}", pki.path("store.redb").display()))
        .arg("--tls-cert")
        .arg(pki.path("tls.crt"))
        .arg("--tls-key")
        .arg(pki.path("tls.key"))
        .arg("--ca")
        .arg(pki.path("ca.crt"))
        .arg("--ca-key")
        .arg(pki.path("ca.key"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _controller = ControllerProcess(child.spawn().context("start seam-controller")?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(measure(&pki, &endpoint, opts))
}

async fn measure(pki: &Pki, endpoint: &str, opts: &FlowsOpts) -> anyhow::Result<FlowsReport> {
    let admin = pki.client(endpoint, &Identity::of(CallerRole::Admin, "bench-admin"))?;
    let reader = pki.client(endpoint, &Identity::of(CallerRole::Reader, "bench-reader"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin.healthz().await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "seam-controller did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token = admin
        .create_join_token_with(&seam_model::CreateJoinToken {
            ttl_seconds: 600,
            node: None,
            uses: Some(u32::try_from(opts.nodes + 1)?),
        })
        .await
        .context("create a join token")?
        .token;
    let probe = pki.join(endpoint, &token, "probe").await?;
    let mut nodes = Vec::new();
    for i in 0..opts.nodes {
        nodes.push((
            format!("n{i}"),
            pki.join(endpoint, &token, &format!("n{i}")).await?,
        ));
    }
    eprintln!(
        "seam-bench flows-follow: {} nodes joined; measuring {} probes",
        opts.nodes + 1,
        opts.samples
    );

    // The follower: records every probe it decodes.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let delivered: Arc<Mutex<Vec<f64>>> = Arc::default();
    let skipped = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let filter = FlowFilter {
        follow: true,
        limit: Some(1),
        ..FlowFilter::default()
    };
    let mut stream = reader.flows(&filter).await.context("follow flows")?;
    let follower = {
        let (sent, delivered, skipped) = (sent.clone(), delivered.clone(), skipped.clone());
        tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                match event {
                    FlowEvent::Record(r) if r.node == "probe" => {
                        let at = Instant::now();
                        let start = r.rule.and_then(|id| sent.lock().ok()?.remove(&id));
                        if let (Some(start), Ok(mut d)) = (start, delivered.lock()) {
                            d.push(ms(at - start));
                        }
                    }
                    FlowEvent::Lagged(n) => {
                        skipped.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    }
                    FlowEvent::Record(_) => {}
                }
            }
        })
    };

    // The background: every node posts a batch every 200 ms, phases spread over the interval.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let posted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut load = Vec::new();
    for (k, (name, client)) in nodes.into_iter().enumerate() {
        let (stop, posted, batch) = (stop.clone(), posted.clone(), opts.batch);
        let phase = INTERVAL.mul_f64(k as f64 / opts.nodes.max(1) as f64);
        load.push(tokio::spawn(async move {
            tokio::time::sleep(phase).await;
            let mut tick = tokio::time::interval(INTERVAL);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let records = (0..batch).map(|i| record(&name, i, None)).collect();
                let batch = FlowBatch {
                    records,
                    dropped: 0,
                };
                if client.post_flows(&batch).await.is_ok() {
                    posted.fetch_add(
                        batch.records.len() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
            }
        }));
    }
    // Let the load settle into its pace.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let started = Instant::now();
    let posted_before = posted.load(std::sync::atomic::Ordering::Relaxed);
    let mut round_trips = Vec::new();
    for i in 0..opts.samples {
        let id = format!("probe-{i}");
        let batch = FlowBatch {
            records: vec![record("probe", i, Some(id.clone()))],
            dropped: 0,
        };
        if let Ok(mut sent) = sent.lock() {
            sent.insert(id, Instant::now());
        }
        probe.post_flows(&batch).await.context("post a probe")?;
        tokio::time::sleep(Duration::from_millis(opts.gap_ms / 2)).await;
        let t = Instant::now();
        reader.leader().await.context("GET /v1/leader")?;
        round_trips.push(ms(t.elapsed()));
        tokio::time::sleep(Duration::from_millis(opts.gap_ms / 2)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let load_records = posted.load(std::sync::atomic::Ordering::Relaxed) - posted_before;
    // Stragglers get a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.abort();
    }
    follower.abort();
    let delivery = delivered.lock().map(|d| d.clone()).unwrap_or_default();
    let lost = sent.lock().map(|s| s.len()).unwrap_or(opts.samples);
    Ok(FlowsReport {
        delivery: Stats::of(&delivery),
        round_trip: Stats::of(&round_trips),
        lost,
        skipped: skipped.load(std::sync::atomic::Ordering::Relaxed),
        load_per_sec: load_records as f64 / elapsed.max(f64::EPSILON),
    })
}
