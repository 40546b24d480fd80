//! `seam-bench services`: Services (issue 12's "Measured, in a benchmark"), each figure against a
//! baseline measured in the same run.
//!
//! - Sync of N Services × E endpoints from nothing to applied in the kernel, through the agent's
//!   first pass and write (`DesiredServices` → `ServiceModel::from_desired` → `TableModel`, then
//!   what `seam-linux`'s `Firewall::apply_ruleset` runs: `table::split_write`, `nft -f` of the
//!   table without its Services elements, the elements over netlink), against kube-proxy's
//!   iptables layout of the same Services loaded with `iptables-restore`; and the same Services
//!   written in place from a table without Services (`table::delta` from the empty model).
//! - One Service added on top of N, and one endpoint changed: the agent's incremental pass (the
//!   Service resolved, `ServiceModel::update` of the frontends that moved, the last
//!   `DesiredServices` edited in place) and in-place write (`table::delta` → nf_tables netlink
//!   batches, `Firewall::apply_delta`), p99, alternating with kube-proxy's partial
//!   `iptables-restore --noflush` of the same change.
//! - New-connection latency through a ClusterIP with few and with N Services, Seam's table against
//!   kube-proxy's iptables layout (one `KUBE-SERVICES` rule per Service port, `KUBE-SVC-…` chains of
//!   `statistic mode random` rules, `KUBE-SEP-…` chains that DNAT), batches alternating (ABBA).
//! - Throughput client → ClusterIP → server against client → server through the same router
//!   namespace (iperf3, rounds alternating).
//! - The memory of a process holding the desired Services and the table model (a child process).
//!
//! Every namespace is named `bsvc-<pid>-…` and removed on exit, error or signal
//! ([`crate::cleanup::ScopeGuard`]); the root namespace is never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{ErrorKind, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ipnet::Ipv4Net;
use seam_dataplane::services::{assemble, service_frontends};
use seam_linux::{netns, sysctl};
use seam_model::fnv::fnv1a;
use seam_model::service::{EndpointSlice, Service};
use seam_model::PortProtocol;
use seam_nft::services::{DesiredServices, Frontend, FrontendKey, ServiceModel};
use seam_nft::table::TableModel;
use serde_json::{json, Value};

use crate::cleanup::{ChildGuard, ScopeGuard};
use crate::policy_gen::Rng;
use crate::stats::{ms, ratio, verdict, Stats};
use crate::util;

/// The Service port of every generated Service.
const SVC_PORT: u16 = 80;
/// The port of every backend.
const TARGET_PORT: u16 = 8080;

/// Options of `seam-bench services`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServicesOpts {
    /// Services (one TCP port each).
    #[arg(long, default_value_t = 10_000)]
    pub services: usize,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    pub endpoints: usize,
    /// Services in the small configuration of the latency test.
    #[arg(long, default_value_t = 10)]
    pub few: usize,
    /// Full syncs from nothing (each way).
    #[arg(long, default_value_t = 3)]
    pub syncs: usize,
    /// Incremental changes of each kind (Service added, endpoint changed).
    #[arg(long, default_value_t = 200)]
    pub changes: usize,
    /// Of those, how many kube-proxy's partial iptables-restore repeats (seconds each at 10,000).
    #[arg(long, default_value_t = 10)]
    pub baseline_changes: usize,
    /// TCP connections per configuration.
    #[arg(long, default_value_t = 2000)]
    pub connections: usize,
    /// Connections per batch; configurations alternate between batches (ABBA).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// iperf3 rounds (each measures both paths, alternating which goes first); 0 skips it.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

impl ServicesOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "services --services {} --endpoints {} --few {} --syncs {} --changes {} --baseline-changes {} \
             --connections {} --batch {} --seconds {} --rounds {}",
            self.services,
            self.endpoints,
            self.few,
            self.syncs,
            self.changes,
            self.baseline_changes,
            self.connections,
            self.batch,
            self.seconds,
            self.rounds
        )
    }
}

/// Options of the hidden `services-memory` child.
#[derive(Debug, Clone, clap::Args)]
pub struct MemoryChildOpts {
    /// Services.
    #[arg(long, default_value_t = 10_000)]
    pub services: usize,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    pub endpoints: usize,
}

/// The results of `seam-bench services`.
#[derive(Debug, Clone, Default)]
pub struct ServicesSummary {
    /// Rows of the closing table: (measure, value, target, ok).
    pub rows: Vec<(String, String, String, bool)>,
}

impl ServicesSummary {
    /// Every target met.
    pub fn ok(&self) -> bool {
        self.rows.iter().all(|r| r.3)
    }

    fn row(&mut self, what: impl Into<String>, value: impl Into<String>, target: &str, ok: bool) {
        self.rows
            .push((what.into(), value.into(), target.to_string(), ok));
    }

    /// Prints the table.
    pub fn print(&self) {
        println!("== summary (seam-bench services, load {})", util::loadavg());
        println!(
            "   {:<62} {:>44} {:>12} {:>5}",
            "measure", "value", "target", ""
        );
        for (what, value, target, ok) in &self.rows {
            let v = if target == "-" { "" } else { verdict(*ok) };
            println!("   {what:<62} {value:>44} {target:>12} {v:>5}");
        }
    }
}

// ---- the generated Services -----------------------------------------------------------------

fn add(base: Ipv4Addr, n: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base).wrapping_add(n as u32))
}

/// ClusterIP of Service `i` (in the default service range 10.96.0.0/12).
fn vip(i: usize) -> Ipv4Addr {
    add(Ipv4Addr::new(10, 96, 0, 1), i)
}

/// The probe's client and server (router `c0` 10.0.0.1, `s0` 10.1.0.1).
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const SERVER_BASE: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

/// The generated Services of one configuration: Service `i` has ClusterIP `vip(i)`, port 80/TCP,
/// and `per` pod backends on 8080 (a tenth of them on this node, as on node 0 of 10); the probe
/// Service sits in the middle (so kube-proxy's `KUBE-SERVICES` scan meets it after half of the
/// others, the average) and has the probe server's addresses as its backends.
#[derive(Debug, Clone)]
struct Generated {
    services: usize,
    per: usize,
    probe: usize,
    desired: DesiredServices,
    /// Addresses handed out to replaced endpoints.
    fresh: usize,
}

impl Generated {
    fn new(services: usize, per: usize) -> Generated {
        let probe = services / 2;
        let mut g = Generated {
            services: 0,
            per: per.max(1),
            probe,
            desired: DesiredServices {
                segment_subnets: [
                    Ipv4Net::new(Ipv4Addr::new(10, 128, 0, 0), 9).ok(),
                    Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 15).ok(),
                ]
                .into_iter()
                .flatten()
                .collect(),
                ..DesiredServices::default()
            },
            fresh: 0,
        };
        for _ in 0..services {
            g.push_service();
        }
        g
    }

    fn probe_vip(&self) -> Ipv4Addr {
        vip(self.probe)
    }

    fn probe_backends(&self) -> Vec<Ipv4Addr> {
        (0..self.per).map(|j| add(SERVER_BASE, j)).collect()
    }

    /// Appends Service number `self.services` (its ClusterIP sorts last, so the list stays sorted).
    fn push_service(&mut self) {
        let i = self.services;
        let backends: Vec<(Ipv4Addr, u16)> = if i == self.probe {
            self.probe_backends()
                .into_iter()
                .map(|a| (a, TARGET_PORT))
                .collect()
        } else {
            (0..self.per)
                .map(|j| {
                    let a = add(Ipv4Addr::new(10, 128, 0, 0), i * self.per + j);
                    if (i * self.per + j).is_multiple_of(10) {
                        self.desired.hairpin.insert(a);
                    }
                    (a, TARGET_PORT)
                })
                .collect()
        };
        self.desired.frontends.push(Frontend {
            key: FrontendKey::Address {
                addr: vip(i),
                protocol: PortProtocol::Tcp,
                port: SVC_PORT,
            },
            service: format!("ns-{}/svc-{i}:http", i % 200),
            backends,
            affinity_timeout: None,
            masquerade_outside: false,
        });
        self.services += 1;
    }

    /// A random (Service, endpoint) among the first `services` Services, never the probe.
    fn pick(&self, rng: &mut Rng, services: usize) -> (usize, usize) {
        let n = services.min(self.services).max(1);
        let mut i = rng.below(n);
        if i == self.probe {
            i = (i + 1) % n;
        }
        (i, rng.below(self.per))
    }

    /// Replaces backend `j` of Service `i` by a new address: a pod replaced. Returns the backend
    /// replaced.
    fn change_endpoint(&mut self, i: usize, j: usize) -> Option<(Ipv4Addr, u16)> {
        let fresh = add(Ipv4Addr::new(10, 200, 0, 0), self.fresh);
        self.fresh += 1;
        let mut old = None;
        if let Some(f) = self.desired.frontends.get_mut(i) {
            if let Some(b) = f.backends.get_mut(j) {
                self.desired.hairpin.remove(&b.0);
                old = Some(*b);
                b.0 = fresh;
            }
            f.backends.sort();
        }
        old
    }
}

/// The agent's path from the desired Services to the table it writes (no policy: the policy part
/// of the table is empty, so only the Services' objects differ between configurations).
fn seam_table(desired: &DesiredServices) -> TableModel {
    TableModel {
        services: ServiceModel::from_desired(desired),
        ..TableModel::default()
    }
}

// ---- kube-proxy's iptables layout -----------------------------------------------------------

// Chain names of kube-proxy's shape (`KUBE-SVC-` + 16 characters) from FNV-1a; kube-proxy
// hashes with SHA-256 and base32, the length is what matters to the kernel.
fn svc_chain(f: &Frontend) -> String {
    format!("KUBE-SVC-{:016X}", fnv1a(&format!("{}/tcp", f.service)))
}

fn sep_chain(f: &Frontend, b: (Ipv4Addr, u16)) -> String {
    format!(
        "KUBE-SEP-{:016X}",
        fnv1a(&format!("{}/tcp/{}:{}", f.service, b.0, b.1))
    )
}

fn kp_frontend(f: &Frontend) -> Option<(Ipv4Addr, u16)> {
    match f.key {
        FrontendKey::Address { addr, port, .. } => Some((addr, port)),
        FrontendKey::NodePort { .. } => None,
    }
}

/// `-A KUBE-SERVICES` for every Service port, in the given order, then the NodePorts jump last,
/// as kube-proxy writes it on every sync.
fn kp_services_rules(out: &mut String, frontends: &[Frontend]) {
    for f in frontends {
        if let Some((addr, port)) = kp_frontend(f) {
            let _ = writeln!(
                out,
                "-A KUBE-SERVICES -d {addr}/32 -p tcp -m comment --comment \"{} cluster IP\" -m tcp --dport {port} -j {}",
                f.service,
                svc_chain(f)
            );
        }
    }
    out.push_str("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n");
}

/// One Service port's `KUBE-SVC-…` chain (masquerade from outside the pod range, then one
/// `statistic mode random` rule per endpoint with probability 1/(endpoints left), the last one
/// unconditional) and its `KUBE-SEP-…` chains (masquerade hairpin, DNAT).
fn kp_service_rules(out: &mut String, f: &Frontend) {
    let Some((addr, port)) = kp_frontend(f) else {
        return;
    };
    let svc = svc_chain(f);
    let _ = writeln!(
        out,
        "-A {svc} ! -s 10.128.0.0/9 -d {addr}/32 -p tcp -m comment --comment \"{} cluster IP\" -m tcp --dport {port} -j KUBE-MARK-MASQ",
        f.service
    );
    let n = f.backends.len();
    for (k, b) in f.backends.iter().enumerate() {
        let sep = sep_chain(f, *b);
        if k + 1 < n {
            let _ = writeln!(
                out,
                "-A {svc} -m comment --comment \"{} -> {}:{}\" -m statistic --mode random --probability {:.11} -j {sep}",
                f.service,
                b.0,
                b.1,
                1.0 / (n - k) as f64
            );
        } else {
            let _ = writeln!(
                out,
                "-A {svc} -m comment --comment \"{} -> {}:{}\" -j {sep}",
                f.service, b.0, b.1
            );
        }
    }
    for b in &f.backends {
        let sep = sep_chain(f, *b);
        let _ = writeln!(
            out,
            "-A {sep} -m comment --comment \"{}\" -s {}/32 -j KUBE-MARK-MASQ",
            f.service, b.0
        );
        let _ = writeln!(
            out,
            "-A {sep} -m comment --comment \"{}\" -p tcp -m tcp -j DNAT --to-destination {}:{}",
            f.service, b.0, b.1
        );
    }
}

fn kp_declare(out: &mut String, f: &Frontend) {
    let _ = writeln!(out, ":{} - [0:0]", svc_chain(f));
    for b in &f.backends {
        let _ = writeln!(out, ":{} - [0:0]", sep_chain(f, *b));
    }
}

/// The whole nat table as kube-proxy's iptables mode writes it on a full sync.
fn kp_full(desired: &DesiredServices) -> String {
    let mut out = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         :KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n",
    );
    for f in &desired.frontends {
        kp_declare(&mut out, f);
    }
    out.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n",
    );
    kp_services_rules(&mut out, &desired.frontends);
    for f in &desired.frontends {
        kp_service_rules(&mut out, f);
    }
    out.push_str("COMMIT\n");
    out
}

/// kube-proxy's partial sync (`iptables-restore --noflush`, since 1.27): `KUBE-SERVICES` is
/// always rewritten whole; the changed Service's chains are rewritten; chains gone are deleted.
fn kp_partial(desired: &DesiredServices, changed: &Frontend, gone: &[String]) -> String {
    let mut out = String::from("*nat\n:KUBE-SERVICES - [0:0]\n");
    kp_declare(&mut out, changed);
    // As kube-proxy does: a chain to delete is declared (flushed) first, `-X` needs it empty.
    for c in gone {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    kp_services_rules(&mut out, &desired.frontends);
    kp_service_rules(&mut out, changed);
    for c in gone {
        let _ = writeln!(out, "-X {c}");
    }
    out.push_str("COMMIT\n");
    out
}

/// `iptables-restore [--noflush]` in the calling thread's namespace.
fn iptables_restore(text: &str, noflush: bool) -> anyhow::Result<()> {
    let mut child = Command::new("iptables-restore")
        .args(noflush.then_some("--noflush"))
        .arg("-w")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("run iptables-restore (iptables-nft)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .context("write to iptables-restore")?;
    }
    let out = child
        .wait_with_output()
        .context("wait for iptables-restore")?;
    if !out.status.success() {
        bail!(
            "iptables-restore: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

// ---- the run ----------------------------------------------------------------------------------

/// Runs the benchmark.
pub fn run(opts: &ServicesOpts) -> anyhow::Result<ServicesSummary> {
    println!(
        "== seam-bench {}  ({} CPUs, load {})",
        opts.command(),
        util::cpus(),
        util::loadavg()
    );
    let started = Instant::now();
    let mut sum = ServicesSummary::default();
    let scope = ScopeGuard::new("bsvc");
    let t = Instant::now();
    let big = Generated::new(opts.services, opts.endpoints);
    println!(
        "== {} Services x {} endpoints generated in {:.0} ms: ClusterIPs from 10.96.0.1, port 80/TCP -> 8080, {} hairpin (local backend) addresses",
        big.services,
        big.per,
        ms(t.elapsed()),
        big.desired.hairpin.len()
    );

    memory(opts, &mut sum)?;
    let at = sum.rows.len();
    // kube-proxy's full restore of all the Services takes a minute or more: it is timed once
    // here, and again where the incremental and latency parts load it (fresh namespaces too).
    let mut kp_loads = Vec::new();
    let (seam_sync, seam_sync_cpu, in_place) = sync(opts, &scope, &big, &mut kp_loads)?;
    incremental(opts, &scope, &big, &mut sum, &mut kp_loads)?;
    latency(opts, &scope, &big, &mut sum, &mut kp_loads)?;
    let kp = Stats::of(&kp_loads);
    println!(
        "== kube-proxy iptables layout of {} Services from nothing, every full restore of this run: {:.0?} ms, median {:.0} ms",
        big.services, kp_loads, kp.median
    );
    sum.rows.insert(
        at,
        (
            format!(
                "sync {} Services x {} endpoints, nothing -> kernel",
                big.services, big.per
            ),
            format!("{seam_sync:.0} ms (CPU {seam_sync_cpu:.0} ms), split write"),
            "< 1000 ms".into(),
            seam_sync < 1000.0,
        ),
    );
    sum.rows.insert(
        at + 1,
        (
            "  seam in place over netlink, from a table without Services".into(),
            in_place.map_or("not measured (refused or empty)".into(), |t| {
                format!("{t:.0} ms")
            }),
            "-".into(),
            true,
        ),
    );
    sum.rows.insert(
        at + 2,
        (
            format!(
                "  baseline: kube-proxy iptables layout, iptables-restore (n={})",
                kp.n
            ),
            format!(
                "{:.0} ms (seam / it = {:.3})",
                kp.median,
                ratio(seam_sync, kp.median)
            ),
            "-".into(),
            true,
        ),
    );

    scope.finish()?;
    println!("   whole run: {:.0} s", started.elapsed().as_secs_f64());
    Ok(sum)
}

// ---- sync from nothing ------------------------------------------------------------------------

/// Returns Seam's median sync time and CPU time; kube-proxy's full restores go to `kp_loads`.
fn sync(
    opts: &ServicesOpts,
    scope: &ScopeGuard,
    g: &Generated,
    kp_loads: &mut Vec<f64>,
) -> anyhow::Result<(f64, f64, Option<f64>)> {
    let syncs = opts.syncs.max(1);
    let (mut model, mut render, mut apply, mut total) = (vec![], vec![], vec![], vec![]);
    let mut listing = vec![];
    let mut nl_total = vec![];
    let (mut kp_gen, mut kp_apply, mut kp_total) = (vec![], vec![], vec![]);
    let mut text_kib = 0;
    let mut nl_ops = 0;
    let mut nl_error = None;
    let mut sync_cpu = vec![];
    let mut kp_cpu = vec![];
    let mut kp_kib = 0;
    // The view as the watch delivered it.
    let (view, slices) = view_of(&g.desired);
    let mut resolve = vec![];
    for round in 0..syncs {
        // Seam: a fresh namespace, no table; the agent's first pass and first write.
        let name = scope.netns(&format!("sync{round}"));
        let path = util::netns_with_lo(&name)?;
        let r = netns::run_in(&path, || -> anyhow::Result<_> {
            let c0 = thread_cpu_ms() + children_cpu_ms();
            let t0 = Instant::now();
            let mut agent = AgentPath::new(&g.desired.segment_subnets, g.desired.hairpin.clone());
            for (service, slice) in view.iter().zip(&slices) {
                agent.update(service, slice);
            }
            let desired = agent.desired();
            let ta = Instant::now();
            let model = ServiceModel::from_desired(&desired);
            let table = TableModel {
                services: model,
                ..TableModel::default()
            };
            let t1 = Instant::now();
            // The agent reads the kernel's table first (none here), then writes it whole.
            if seam_linux::nft::list_table_text()?.is_some() {
                bail!("a fresh namespace has a seam table");
            }
            let (nft_ms, fill_ms, text_len) = write_whole(&table)?;
            let t3 = Instant::now();
            let cpu = thread_cpu_ms() + children_cpu_ms() - c0;
            if desired != g.desired {
                bail!("the agent's path from the view gives other DesiredServices than generated");
            }
            // The same, in place over netlink, from a table that exists without Services (an
            // agent that had no Service before): delta from the empty model.
            seam_linux::delete_table()?;
            let empty = TableModel::default();
            seam_linux::apply_ruleset(&seam_nft::table::full_text(&empty))?;
            let t4 = Instant::now();
            let table = seam_table(&desired);
            let delta = seam_nft::table::delta(&empty, &table);
            // Reported, not fatal: the agent writes its first table whole.
            let in_place = seam_linux::apply_delta(&delta).map_err(|e| e.to_string());
            let t5 = Instant::now();
            let ops = delta.switch.len() + delta.cleanup.len();
            Ok((
                ms(t1 - ta),
                nft_ms,
                fill_ms,
                ms(t3 - t0),
                in_place.map(|()| ms(t5 - t4)),
                text_len,
                ops,
                cpu,
                ms(ta - t0),
                ms(t3 - t1) - nft_ms - fill_ms,
            ))
        })??;
        netns::delete(&name)?;
        model.push(r.0);
        render.push(r.1);
        apply.push(r.2);
        total.push(r.3);
        listing.push(r.9);
        match r.4 {
            Ok(t) => nl_total.push(t),
            Err(e) => nl_error = Some(e),
        }
        text_kib = r.5 / 1024;
        nl_ops = r.6;
        sync_cpu.push(r.7);
        resolve.push(r.8);
        // kube-proxy: a fresh namespace, iptables-restore of the whole nat table (once).
        if round > 0 {
            continue;
        }
        let name = scope.netns(&format!("kpsync{round}"));
        let path = util::netns_with_lo(&name)?;
        let r = netns::run_in(&path, || -> anyhow::Result<_> {
            let c0 = thread_cpu_ms() + children_cpu_ms();
            let t0 = Instant::now();
            let text = kp_full(&g.desired);
            let t1 = Instant::now();
            iptables_restore(&text, false)?;
            let t2 = Instant::now();
            let cpu = thread_cpu_ms() + children_cpu_ms() - c0;
            Ok((ms(t1 - t0), ms(t2 - t1), ms(t2 - t0), text.len(), cpu))
        })??;
        netns::delete(&name)?;
        kp_gen.push(r.0);
        kp_apply.push(r.1);
        kp_total.push(r.2);
        kp_loads.push(r.2);
        kp_kib = r.3 / 1024;
        kp_cpu.push(r.4);
    }
    let m = |v: &[f64]| Stats::of(v).median;
    println!(
        "== sync of {} Services x {} endpoints from nothing to applied in the kernel ({syncs} runs each, fresh namespaces, medians)",
        g.services, g.per
    );
    println!(
        "   seam, the agent's first pass and write: resolve + frontends + assemble {:.0} ms + ServiceModel::from_desired {:.0} ms + nft -j list (no table) {:.0} ms + Firewall::apply_ruleset's split write: nft -f of the table without the Services elements {:.0} ms ({text_kib} KiB, text rendered included) + the elements over netlink {:.0} ms = {:.0} ms (min {:.0}, max {:.0}); CPU {:.0} ms (this thread + nft)",
        m(&resolve),
        m(&model),
        m(&listing),
        m(&render),
        m(&apply),
        m(&total),
        Stats::of(&total).min,
        Stats::of(&total).max,
        m(&sync_cpu)
    );
    let nl = if let Some(e) = &nl_error {
        format!("refused: {e}")
    } else if nl_ops > 0 {
        format!("{:.0} ms ({nl_ops} operations)", m(&nl_total))
    } else {
        "not measured: this tree's table::delta does not carry Services".to_string()
    };
    println!(
        "   seam, in place over netlink from a table without Services (ServiceModel + delta + nf_tables batches): {nl}"
    );
    println!(
        "   kube-proxy iptables layout (once): generate {:.0} ms ({kp_kib} KiB) + iptables-restore {:.0} ms = {:.0} ms; CPU {:.0} ms (this thread + iptables-restore)",
        m(&kp_gen),
        m(&kp_apply),
        m(&kp_total),
        m(&kp_cpu)
    );
    let nl_ms = (nl_error.is_none() && nl_ops > 0).then(|| m(&nl_total));
    Ok((m(&total), m(&sync_cpu), nl_ms))
}

// ---- incremental changes ------------------------------------------------------------------------

#[derive(Default)]
struct Timings {
    /// Resolve the Service, its frontends, assemble the node's DesiredServices.
    resolve: Vec<f64>,
    model: Vec<f64>,
    delta: Vec<f64>,
    apply: Vec<f64>,
    total: Vec<f64>,
    /// CPU time of the applying thread (model, delta, the kernel's work in sendmsg).
    cpu: Vec<f64>,
    ops: Vec<f64>,
    kp: Vec<f64>,
    /// CPU time of iptables-restore (user + system, 10 ms ticks).
    kp_cpu: Vec<f64>,
}

/// CPU time of the calling thread in ms (`/proc/thread-self/schedstat`), 0 when unreadable.
fn thread_cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e6)
}

/// User + system CPU time of this process's waited-for children in ms (`/proc/self/stat`
/// cutime + cstime, in clock ticks of 10 ms), 0 when unreadable.
fn children_cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            // After the command: state is field 3, cutime 16 and cstime 17 (1-based, whole line).
            let cu: u64 = f.get(13)?.parse().ok()?;
            let cs: u64 = f.get(14)?.parse().ok()?;
            Some((cu + cs) as f64 * 10.0)
        })
        .unwrap_or(0.0)
}

fn incremental(
    opts: &ServicesOpts,
    scope: &ScopeGuard,
    g: &Generated,
    sum: &mut ServicesSummary,
    kp_loads: &mut Vec<f64>,
) -> anyhow::Result<()> {
    let seam_ns = scope.netns("inc");
    let seam_path = util::netns_with_lo(&seam_ns)?;
    let kp_ns = scope.netns("kpinc");
    let kp_path = util::netns_with_lo(&kp_ns)?;
    let n0 = g.services;
    let mut g = g.clone();
    // kube-proxy's copy: the same changes, the first `baseline_changes` of each kind only.
    let mut gk = g.clone();
    let t = Instant::now();
    netns::run_in(&kp_path, || iptables_restore(&kp_full(&g.desired), false))??;
    kp_loads.push(ms(t.elapsed()));
    let mut rng = Rng::new(0x005E_4112);
    // The agent's cache and model, as after its first pass over the view, and its first write.
    let mut agent = AgentPath::new(&g.desired.segment_subnets, g.desired.hairpin.clone());
    let (view, slices) = view_of(&g.desired);
    for (service, slice) in view.iter().zip(&slices) {
        agent.update(service, slice);
    }
    drop((view, slices));
    // What the agent publishes as applied holds the last result (so the next pass copies it).
    let mut published = agent.first_pass();
    let mut applied = agent.table();
    netns::run_in(&seam_path, || write_whole(&applied))??;
    // One thread in Seam's namespace for every change: it keeps its nf_tables socket, as the
    // agent's blocking threads do (closing one waits for the kernel, 5-12 ms).
    let out = netns::run_in(&seam_path, || -> anyhow::Result<_> {
        let mut out: Vec<(&str, Timings)> = Vec::new();
        for kind in ["Service added", "endpoint changed"] {
            let mut tm = Timings::default();
            for k in 0..opts.changes {
                let with_kp = k < opts.baseline_changes;
                // (the Service changed, kube-proxy's chains to delete) in kube-proxy's copy.
                let (i, changed, gone) = if kind == "Service added" {
                    g.push_service();
                    if with_kp {
                        gk.push_service();
                    }
                    let f = gk.desired.frontends.last().context("no Service")?.clone();
                    (g.services - 1, f, Vec::new())
                } else {
                    // Among the Services both copies hold.
                    let (i, j) = g.pick(&mut rng, n0);
                    g.change_endpoint(i, j);
                    let old = if with_kp {
                        gk.change_endpoint(i, j)
                    } else {
                        None
                    };
                    let f = gk.desired.frontends.get(i).context("no Service")?.clone();
                    // kube-proxy deletes the KUBE-SEP chain of the endpoint that went away.
                    let gone = old.map(|b| sep_chain(&f, b)).into_iter().collect();
                    (i, f, gone)
                };
                // The Service (or its EndpointSlice) as the watch event brings it; this node's
                // endpoints as the view holds them.
                let (service, slice) = g
                    .desired
                    .frontends
                    .get(i)
                    .and_then(|f| view_one(i, f))
                    .context("no Service")?;
                agent.local.clone_from(&g.desired.hairpin);
                let mut seam = |applied: &TableModel| -> anyhow::Result<_> {
                    let c0 = thread_cpu_ms();
                    let t0 = Instant::now();
                    agent.update(&service, &slice);
                    let (desired, update_ms) = agent.pass();
                    let t1 = Instant::now();
                    let table = agent.table();
                    let model_ms = update_ms + ms(t1.elapsed());
                    let t1 = Instant::now();
                    let delta = seam_nft::table::delta(applied, &table);
                    let t2 = Instant::now();
                    seam_linux::apply_delta(&delta).context("apply a Service change in place")?;
                    let t3 = Instant::now();
                    let cpu = thread_cpu_ms() - c0;
                    let ops = delta.switch.len() + delta.cleanup.len();
                    Ok((
                        table,
                        [
                            model_ms,
                            ms(t2 - t1),
                            ms(t3 - t2),
                            ms(t3 - t0),
                            cpu,
                            ms(t1 - t0) - model_ms,
                        ],
                        ops,
                        desired,
                    ))
                };
                let kp = || {
                    netns::run_in(&kp_path, || -> anyhow::Result<(f64, f64)> {
                        let c0 = children_cpu_ms();
                        let t0 = Instant::now();
                        let text = kp_partial(&gk.desired, &changed, &gone);
                        iptables_restore(&text, true)?;
                        Ok((ms(t0.elapsed()), children_cpu_ms() - c0))
                    })?
                };
                // Alternate which goes first.
                let (s, kp_ms) = if !with_kp {
                    (seam(&applied)?, None)
                } else if k % 2 == 0 {
                    let s = seam(&applied)?;
                    (s, Some(kp()?))
                } else {
                    let kp_ms = kp()?;
                    (seam(&applied)?, Some(kp_ms))
                };
                let (table, t, ops, desired) = s;
                // The agent's path gives what the generator says (checked outside the timing).
                if k < 3 && *desired != g.desired {
                    bail!("{kind}: the agent's path gives other DesiredServices than generated");
                }
                applied = table;
                published = desired;
                tm.resolve.push(t[5]);
                tm.model.push(t[0]);
                tm.delta.push(t[1]);
                tm.apply.push(t[2]);
                tm.total.push(t[3]);
                tm.cpu.push(t[4]);
                tm.ops.push(ops as f64);
                if let Some((wall, cpu)) = kp_ms {
                    tm.kp.push(wall);
                    tm.kp_cpu.push(cpu);
                }
            }
            out.push((kind, tm));
        }
        Ok(out)
    })??;
    // The kernel holds what the model says: the element counts of the final table.
    let listed = netns::run_in(&seam_path, seam_linux::nft::list_table_text)??;
    netns::delete(&seam_ns)?;
    netns::delete(&kp_ns)?;
    let adopted = listed
        .as_deref()
        .and_then(seam_nft::table::from_nft_json)
        .map(|t| (t.services.enabled, t.services == applied.services.listed()));
    println!(
        "== one change at a time on top of {} Services x {} endpoints, {} of each, as the agent makes them (ServiceCache::sync's incremental pass): the Service resolved, its frontends, the frontends that moved edited into the last DesiredServices (copied once: the applied one shares it), ServiceModel::update of those frontends (model: update + the TableModel's copy of it), table::delta, nf_tables netlink batches; the first {} alternating with kube-proxy's partial iptables-restore --noflush of the same change",
        opts.services, g.per, opts.changes, opts.baseline_changes.min(opts.changes)
    );
    println!(
        "   {:<17} {:>15} {:>15} {:>13} {:>13} {:>13} {:>13} {:>6} {:>19} {:>13} {:>9}",
        "ms p50 / p99",
        "seam total",
        "resolve+assemble",
        "model",
        "delta",
        "netlink apply",
        "seam CPU",
        "ops",
        "kube-proxy iptables",
        "its CPU",
        "ratio p99"
    );
    let pp = |v: &[f64]| {
        let s = Stats::of(v);
        format!("{:.1} / {:.1}", s.median, s.p99)
    };
    for (kind, tm) in &out {
        let s = Stats::of(&tm.total);
        let kp = Stats::of(&tm.kp);
        println!(
            "   {:<17} {:>15} {:>15} {:>13} {:>13} {:>13} {:>13} {:>6.0} {:>19} {:>13} {:>9.3}",
            kind,
            pp(&tm.total),
            pp(&tm.resolve),
            pp(&tm.model),
            pp(&tm.delta),
            pp(&tm.apply),
            pp(&tm.cpu),
            Stats::of(&tm.ops).median,
            pp(&tm.kp),
            pp(&tm.kp_cpu),
            ratio(s.p99, kp.p99)
        );
        let target = if *kind == "Service added" { 20.0 } else { 10.0 };
        // A change that sends nothing to the kernel is not a change measured.
        let empty = tm.ops.iter().filter(|o| **o == 0.0).count();
        if empty > 0 {
            println!(
                "   {kind}: {empty} of {} changes gave table::delta no operation: this tree's delta does not carry Service changes",
                tm.ops.len()
            );
        }
        sum.row(
            format!("{kind} on top of {}: p50 / p99", opts.services),
            if empty > 0 {
                format!("not measured ({empty} empty deltas)")
            } else {
                format!(
                    "{:.1} / {:.1} ms (CPU {:.1} / {:.1})",
                    s.median,
                    s.p99,
                    Stats::of(&tm.cpu).median,
                    Stats::of(&tm.cpu).p99
                )
            },
            if target == 20.0 {
                "p99 < 20 ms"
            } else {
                "p99 < 10 ms"
            },
            empty == 0 && s.p99 < target,
        );
        sum.row(
            "  baseline: kube-proxy iptables partial restore p50 / p99",
            format!(
                "{:.1} / {:.1} ms (seam / it p99 = {:.3})",
                kp.median,
                kp.p99,
                ratio(s.p99, kp.p99)
            ),
            "-",
            true,
        );
    }
    println!(
        "   kube-proxy's nftables mode, cited (not measured here): about 140 ms for one Service added at 10,000"
    );
    match adopted {
        Some((true, true)) => println!(
            "   the kernel's table read back (nft -j list, table::from_nft_json) equals the last model's Services"
        ),
        Some((true, false)) => {
            bail!("the kernel's Services differ from the model after the changes")
        }
        Some((false, _)) => println!(
            "   (table::from_nft_json does not read the Services part back on this tree: not compared)"
        ),
        None => println!("   (the kernel's table could not be read back into a model)"),
    }
    Ok(())
}

// ---- memory -------------------------------------------------------------------------------------

fn memory(opts: &ServicesOpts, sum: &mut ServicesSummary) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locate seam-bench")?;
    let out = Command::new(&exe)
        .arg("services-memory")
        .args(["--services", &opts.services.to_string()])
        .args(["--endpoints", &opts.endpoints.to_string()])
        .output()
        .context("run seam-bench services-memory")?;
    if !out.status.success() {
        bail!(
            "services-memory child failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("parse services-memory output")?;
    let kib = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mib = |k: &str| kib(k) as f64 / 1024.0;
    println!(
        "== memory of a process holding {} Services x {} endpoints (a child process, VmRSS)",
        opts.services, opts.endpoints
    );
    println!(
        "   at start (binary, libraries): {:.1} MiB",
        mib("start_kib")
    );
    println!(
        "   + the view ({} v1 Services and their EndpointSlices, as seam-model holds them): {:.1} MiB",
        kib("services"),
        mib("view_kib")
    );
    println!(
        "   + each Service resolved and its frontends cached (the agent's ServiceCache): {:.1} MiB",
        mib("cache_kib")
    );
    println!(
        "   + the node's DesiredServices ({} frontends, {} backends): {:.1} MiB",
        kib("frontends"),
        kib("backends"),
        mib("desired_kib")
    );
    println!(
        "   + the table model (ServiceModel in TableModel): {:.1} MiB",
        mib("model_kib")
    );
    println!(
        "   + the full nft text rendered and dropped: {:.1} MiB (peak VmHWM {:.1} MiB; text {} KiB)",
        mib("rendered_kib"),
        mib("hwm_kib"),
        kib("text_bytes") / 1024
    );
    sum.row(
        format!(
            "memory: VmRSS, {} Services x {} endpoints (view, cache, desired, model)",
            opts.services, opts.endpoints
        ),
        format!(
            "{:.1} MiB (+{:.1} over start; peak {:.1})",
            mib("rendered_kib"),
            mib("rendered_kib") - mib("start_kib"),
            mib("hwm_kib")
        ),
        "-",
        true,
    );
    Ok(())
}

/// Service `i` of the generated ones as the agent's view holds it: a `v1 Service` without a
/// selector and its EndpointSlice (as the Kubernetes adapter forwards them), with `f`'s
/// addresses.
fn view_one(i: usize, f: &Frontend) -> Option<(Service, EndpointSlice)> {
    use seam_model::service::{
        ClusterIp, EndpointConditions, ServicePort, ServiceSpec, SliceEndpoint, SlicePort,
        TargetPort, SERVICE_NAME_LABEL,
    };
    let FrontendKey::Address { addr, .. } = f.key else {
        return None;
    };
    let namespace = format!("ns-{}", i % 200);
    let name = format!("svc-{i}");
    let service = Service {
        name: name.clone(),
        namespace: namespace.clone(),
        labels: Default::default(),
        annotations: Default::default(),
        spec: ServiceSpec {
            ports: vec![ServicePort {
                name: Some("http".into()),
                protocol: PortProtocol::Tcp,
                port: SVC_PORT,
                target_port: Some(TargetPort::Number(TARGET_PORT)),
                node_port: None,
                app_protocol: None,
            }],
            cluster_ip: ClusterIp::Address(addr),
            ..ServiceSpec::default()
        },
        status: Default::default(),
    };
    let slice = EndpointSlice {
        name: format!("{name}-abcde"),
        namespace,
        service: name.clone(),
        labels: [(SERVICE_NAME_LABEL.to_string(), name)]
            .into_iter()
            .collect(),
        endpoints: f
            .backends
            .iter()
            .enumerate()
            .map(|(j, (a, _))| SliceEndpoint {
                addresses: vec![*a],
                conditions: EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                },
                node_name: Some(format!("node-{}", j % 10)),
                hostname: None,
                zone: None,
                target_ref: None,
            })
            .collect(),
        ports: vec![SlicePort {
            name: Some("http".into()),
            port: TARGET_PORT,
            protocol: PortProtocol::Tcp,
            app_protocol: None,
        }],
    };
    Some((service, slice))
}

/// The view the agent holds for the generated Services ([`view_one`] of each).
fn view_of(desired: &DesiredServices) -> (Vec<Service>, Vec<EndpointSlice>) {
    desired
        .frontends
        .iter()
        .enumerate()
        .filter_map(|(i, f)| view_one(i, f))
        .unzip()
}

/// The node the agent path runs for (every generated Service is `internalTrafficPolicy:
/// Cluster`, so which node does not matter to the result).
const NODE: &str = "node-0";

/// seam-agent's Services pass (`seam_agent::services::ServiceCache::sync`), step for step, with
/// the public functions it calls. A Service written (or its EndpointSlice) is resolved again
/// (`seam_model::resolve`) and its frontends on this node computed
/// (`seam_dataplane::services::service_frontends`) and cached ([`AgentPath::update`]). The first
/// pass ([`AgentPath::first_pass`]) assembles the node's `DesiredServices` from every Service's
/// frontends (`assemble`) and makes the table's `ServiceModel` from it (`from_desired`); every
/// later pass ([`AgentPath::pass`]) changes both at the cost of the frontends that moved
/// (`ServiceModel::update`, the last `DesiredServices` copied once if it is still shared and
/// edited in place). What the agent does besides (finding the Services an endpoint event
/// touches, this node's endpoint addresses) is left out: the caller sets `local`.
struct AgentPath {
    frontends: BTreeMap<String, Vec<Frontend>>,
    /// The Services with a frontend at each key (the first one's is the result's).
    owners: BTreeMap<FrontendKey, BTreeSet<String>>,
    /// How many backends of the result's frontends have each address.
    backend_addrs: BTreeMap<Ipv4Addr, usize>,
    /// The frontend keys of the Services updated since the last pass.
    touched: BTreeSet<FrontendKey>,
    subnets: BTreeSet<Ipv4Net>,
    /// This node's endpoint addresses (hairpin: those that are backends).
    local: BTreeSet<Ipv4Addr>,
    /// The last result (`None` before the first pass).
    last: Option<Arc<DesiredServices>>,
    /// The table's Services part for it.
    model: ServiceModel,
}

impl AgentPath {
    fn new(subnets: &BTreeSet<Ipv4Net>, local: BTreeSet<Ipv4Addr>) -> AgentPath {
        AgentPath {
            frontends: BTreeMap::new(),
            owners: BTreeMap::new(),
            backend_addrs: BTreeMap::new(),
            touched: BTreeSet::new(),
            subnets: subnets.clone(),
            local,
            last: None,
            model: ServiceModel::default(),
        }
    }

    /// Service `service` (with its EndpointSlice) written: resolved again.
    fn update(&mut self, service: &Service, slice: &EndpointSlice) {
        let key = service.key();
        let ports = seam_model::resolve(service, &[], std::slice::from_ref(slice));
        let now = Some(service_frontends(NODE, service, &ports)).filter(|f| !f.is_empty());
        if self.frontends.get(&key) == now.as_ref() {
            return;
        }
        let before = match now {
            Some(f) => self.frontends.insert(key.clone(), f),
            None => self.frontends.remove(&key),
        };
        for f in before.iter().flatten() {
            self.touched.insert(f.key);
            if let Some(owners) = self.owners.get_mut(&f.key) {
                owners.remove(&key);
                if owners.is_empty() {
                    self.owners.remove(&f.key);
                }
            }
        }
        for f in self.frontends.get(&key).into_iter().flatten() {
            self.touched.insert(f.key);
            self.owners.entry(f.key).or_default().insert(key.clone());
        }
    }

    /// The node's desired Services assembled from every Service's frontends.
    fn desired(&self) -> DesiredServices {
        assemble(
            self.frontends.values().flatten(),
            self.subnets.iter().copied(),
            &self.local,
            &BTreeSet::new(),
        )
    }

    /// The first pass: the result assembled from everything, its model made from scratch.
    fn first_pass(&mut self) -> Arc<DesiredServices> {
        let desired = self.desired();
        self.backend_addrs.clear();
        for f in &desired.frontends {
            count_backends(&mut self.backend_addrs, f, true);
        }
        self.model = ServiceModel::from_desired(&desired);
        self.touched.clear();
        let desired = Arc::new(desired);
        self.last = Some(desired.clone());
        desired
    }

    /// A later pass over the Services updated since the last one: the result and its model
    /// changed by the frontends that moved. Returns the result and the ms spent in
    /// `ServiceModel::update`.
    fn pass(&mut self) -> (Arc<DesiredServices>, f64) {
        let Some(last) = self.last.take() else {
            return (self.first_pass(), 0.0);
        };
        let mut edits: Vec<(FrontendKey, Option<Frontend>)> = Vec::new();
        for key in std::mem::take(&mut self.touched) {
            let winner = self
                .owners
                .get(&key)
                .and_then(|owners| owners.first())
                .and_then(|service| self.frontends.get(service))
                .and_then(|list| list.iter().find(|f| f.key == key));
            let current = last
                .frontends
                .binary_search_by_key(&key, |f| f.key)
                .ok()
                .and_then(|i| last.frontends.get(i));
            if winner != current {
                if let Some(f) = current {
                    count_backends(&mut self.backend_addrs, f, false);
                }
                if let Some(f) = winner {
                    count_backends(&mut self.backend_addrs, f, true);
                }
                edits.push((key, winner.cloned()));
            }
        }
        let hairpin: BTreeSet<Ipv4Addr> = self
            .local
            .iter()
            .filter(|ip| self.backend_addrs.contains_key(ip))
            .copied()
            .collect();
        if edits.is_empty() && hairpin == last.hairpin {
            self.last = Some(last.clone());
            return (last, 0.0);
        }
        let t = Instant::now();
        // What the model takes besides the frontends, as the agent passes it (no gateway
        // addresses, no external backends, no node address in this benchmark).
        let rest = DesiredServices {
            hairpin,
            segment_subnets: self.subnets.clone(),
            ..DesiredServices::default()
        };
        self.model
            .update(edits.iter().map(|(key, f)| (*key, f.as_ref())), &rest);
        let hairpin = rest.hairpin;
        let model_ms = ms(t.elapsed());
        // As the agent: shared with what was applied last, copied once, then changed in place.
        let mut next = last;
        let desired = Arc::make_mut(&mut next);
        for (key, f) in edits {
            match (desired.frontends.binary_search_by_key(&key, |f| f.key), f) {
                (Ok(i), Some(f)) => desired.frontends[i] = f,
                (Ok(i), None) => {
                    desired.frontends.remove(i);
                }
                (Err(i), Some(f)) => desired.frontends.insert(i, f),
                (Err(_), None) => {}
            }
        }
        desired.hairpin = hairpin;
        self.last = Some(next.clone());
        (next, model_ms)
    }

    /// The table the agent writes for the last pass (no policy), as `reconcile` makes it.
    fn table(&self) -> TableModel {
        TableModel {
            services: self.model.clone(),
            ..TableModel::default()
        }
    }
}

/// Counts the addresses of `f`'s backends in `addrs` (`add`) or takes them out.
fn count_backends(addrs: &mut BTreeMap<Ipv4Addr, usize>, f: &Frontend, add: bool) {
    for (ip, _) in &f.backends {
        if add {
            *addrs.entry(*ip).or_insert(0) += 1;
        } else if let Some(n) = addrs.get_mut(ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                addrs.remove(ip);
            }
        }
    }
}

/// The agent's whole write of `table` (`seam_linux::LinuxKernel`'s `Firewall::apply_ruleset`,
/// in the calling thread): with a large Services part, `nft -f` of the table without its
/// elements, then the elements over netlink (`seam_nft::table::split_write`); otherwise one
/// `nft -f`. Returns the ms of the two steps and the bytes of text.
fn write_whole(table: &TableModel) -> anyhow::Result<(f64, f64, usize)> {
    let t0 = Instant::now();
    let (text, fill) = match seam_nft::table::split_write(table) {
        Some((first, fill)) => (seam_nft::table::full_text(&first), Some(fill)),
        None => (seam_nft::table::full_text(table), None),
    };
    if let Some(dump) = std::env::var_os("SEAM_BENCH_DUMP_TABLE") {
        std::fs::write(dump, &text)?;
    }
    seam_linux::apply_ruleset(&text).context("write the table (nft -f)")?;
    let t1 = Instant::now();
    if let Some(fill) = fill {
        seam_linux::apply_delta(&fill).context("fill the Services elements (netlink)")?;
    }
    Ok((ms(t1 - t0), ms(t1.elapsed()), text.len()))
}

/// The hidden `services-memory` child: builds the view (Services and EndpointSlices), their
/// backends (`seam_model::resolve`), the desired Services and the table model, and prints its
/// own VmRSS at each step as JSON.
pub fn memory_child(opts: &MemoryChildOpts) -> anyhow::Result<()> {
    let me = std::process::id();
    let start = util::proc_status_kib(me, "VmRSS")?;
    let (view, slices, subnets, local) = {
        let g = Generated::new(opts.services, opts.endpoints);
        let (view, slices) = view_of(&g.desired);
        (view, slices, g.desired.segment_subnets, g.desired.hairpin)
    };
    let view_kib = util::proc_status_kib(me, "VmRSS")?;
    let mut agent = AgentPath::new(&subnets, local);
    for (service, slice) in view.iter().zip(&slices) {
        agent.update(service, slice);
    }
    let cache_kib = util::proc_status_kib(me, "VmRSS")?;
    let desired = agent.desired();
    let desired_kib = util::proc_status_kib(me, "VmRSS")?;
    let table = seam_table(&desired);
    let model_kib = util::proc_status_kib(me, "VmRSS")?;
    let text_bytes = seam_nft::table::full_text(&table).len();
    let rendered_kib = util::proc_status_kib(me, "VmRSS")?;
    let hwm_kib = util::proc_status_kib(me, "VmHWM")?;
    println!(
        "{}",
        json!({
            "start_kib": start,
            "view_kib": view_kib,
            "cache_kib": cache_kib,
            "desired_kib": desired_kib,
            "model_kib": model_kib,
            "rendered_kib": rendered_kib,
            "hwm_kib": hwm_kib,
            "services": view.len(),
            "frontends": desired.frontends.len(),
            "backends": desired.frontends.iter().map(|f| f.backends.len()).sum::<usize>(),
            "text_bytes": text_bytes,
        })
    );
    drop((table, view, slices, agent));
    Ok(())
}

// ---- connection latency and throughput -------------------------------------------------------

/// Client, router ("node") and server namespaces: `client eth0 10.0.0.2 — c0 10.0.0.1 [node] s0
/// 10.1.0.1 — server eth0 10.1.0.2…` (the server holds every backend address of the probe
/// Service). The node forwards and holds the Service dataplane under test.
struct Routed {
    node: PathBuf,
    client: PathBuf,
    server: PathBuf,
    stop: Arc<AtomicBool>,
    listener: Option<JoinHandle<()>>,
}

impl Routed {
    fn stop_listener(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.listener.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        self.stop_listener();
    }
}

fn routed(scope: &ScopeGuard, tag: &str, backends: &[Ipv4Addr]) -> anyhow::Result<Routed> {
    let node = scope.netns(&format!("{tag}-node"));
    let client = scope.netns(&format!("{tag}-cli"));
    let server = scope.netns(&format!("{tag}-srv"));
    let node_path = util::netns_with_lo(&node)?;
    let client_path = util::netns_with_lo(&client)?;
    let server_path = util::netns_with_lo(&server)?;
    for (port, peer, router_addr) in [
        ("c0", &client, "10.0.0.1/24"),
        ("s0", &server, "10.1.0.1/24"),
    ] {
        util::ip(
            &node,
            &[
                "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", peer,
            ],
        )?;
        util::ip(&node, &["addr", "add", router_addr, "dev", port])?;
        util::ip(&node, &["link", "set", port, "up"])?;
        util::ip(peer, &["link", "set", "eth0", "up"])?;
    }
    util::ip(
        &client,
        &["addr", "add", &format!("{CLIENT_IP}/24"), "dev", "eth0"],
    )?;
    util::ip(&client, &["route", "add", "default", "via", "10.0.0.1"])?;
    for a in backends {
        util::ip(&server, &["addr", "add", &format!("{a}/24"), "dev", "eth0"])?;
    }
    util::ip(&server, &["route", "add", "default", "via", "10.1.0.1"])?;
    netns::run_in(&node_path, || sysctl::write("net/ipv4/ip_forward", "1"))??;
    let listener = netns::run_in(&server_path, || {
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, TARGET_PORT))
    })??;
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // Accepting does not affect connect latency (the kernel completes the handshake); the
    // accepted sockets are closed at once.
    let handle = std::thread::spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    });
    Ok(Routed {
        node: node_path,
        client: client_path,
        server: server_path,
        stop,
        listener: Some(handle),
    })
}

/// `n` TCP connect+close from the client to `to`; connect latencies in ms.
fn connects(client: &Path, to: SocketAddr, n: usize) -> anyhow::Result<Vec<f64>> {
    netns::run_in(client, || -> anyhow::Result<Vec<f64>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let s = TcpStream::connect_timeout(&to, Duration::from_secs(1))
                .with_context(|| format!("connect to {to}"))?;
            out.push(ms(t.elapsed()));
            drop(s);
        }
        Ok(out)
    })?
}

struct LatConfig {
    label: String,
    services: usize,
    lab: Routed,
    to: SocketAddr,
    samples: Vec<f64>,
}

fn latency(
    opts: &ServicesOpts,
    scope: &ScopeGuard,
    big: &Generated,
    sum: &mut ServicesSummary,
    kp_loads: &mut Vec<f64>,
) -> anyhow::Result<()> {
    let few = Generated::new(opts.few.max(1), opts.endpoints);
    let mut configs = Vec::new();
    for (tag, g, seam) in [
        ("sf", &few, true),
        ("sn", big, true),
        ("kf", &few, false),
        ("kn", big, false),
    ] {
        let lab = routed(scope, tag, &g.probe_backends())?;
        let t = Instant::now();
        if seam {
            let table = seam_table(&g.desired);
            netns::run_in(&lab.node, || write_whole(&table))??;
        } else {
            let text = kp_full(&g.desired);
            netns::run_in(&lab.node, || iptables_restore(&text, false))??;
        }
        let load_ms = ms(t.elapsed());
        if !seam && g.services == big.services {
            kp_loads.push(load_ms);
        }
        let label = format!(
            "{} {} Services",
            if seam { "seam" } else { "kube-proxy iptables" },
            g.services
        );
        println!("   {label}: loaded in {load_ms:.0} ms");
        configs.push(LatConfig {
            label,
            services: g.services,
            lab,
            to: SocketAddr::from((g.probe_vip(), SVC_PORT)),
            samples: Vec::new(),
        });
    }
    let batch = opts.batch.max(1);
    let rounds = opts.connections.div_ceil(batch);
    let t = Instant::now();
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..configs.len()).collect()
        } else {
            (0..configs.len()).rev().collect()
        };
        for i in order {
            let c = &mut configs[i];
            connects(&c.lab.client, c.to, 10)?; // warm-up
            let s = connects(&c.lab.client, c.to, batch)?;
            c.samples.extend(s);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "== new-connection latency through a ClusterIP: client, router node (the dataplane under test), server namespaces; TCP connect+close to the probe Service (in the middle of the list, 10 backends), {} per configuration in batches of {batch}, ABBA ({secs:.0} s, load {})",
        rounds * batch,
        util::loadavg()
    );
    println!(
        "   {:<34} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "configuration", "median", "p99", "min", "ratio", "vs seam same"
    );
    let base = Stats::of(&configs[0].samples).median;
    for (k, c) in configs.iter().enumerate() {
        let s = Stats::of(&c.samples);
        let same = if k >= 2 {
            format!(
                "{:.2}",
                ratio(s.median, Stats::of(&configs[k - 2].samples).median)
            )
        } else {
            "-".into()
        };
        println!(
            "   {:<34} {:>7.3}ms {:>7.3}ms {:>7.3}ms {:>9.3} {:>12}",
            c.label,
            s.median,
            s.p99,
            s.min,
            ratio(s.median, base),
            same
        );
    }
    let med = |k: usize| Stats::of(&configs[k].samples).median;
    let r = ratio(med(1), med(0));
    sum.row(
        format!(
            "connect latency median, seam {} / {} Services",
            configs[1].services, configs[0].services
        ),
        format!("{:.3} / {:.3} ms = {r:.3}", med(1), med(0)),
        "< 1.05",
        r < 1.05,
    );
    let rk = ratio(med(3), med(2));
    sum.row(
        format!(
            "  baseline: kube-proxy iptables {} / {} Services",
            configs[3].services, configs[2].services
        ),
        format!("{:.3} / {:.3} ms = {rk:.3}", med(3), med(2)),
        "-",
        true,
    );
    sum.row(
        format!(
            "  kube-proxy iptables / seam, both {} Services",
            configs[1].services
        ),
        format!(
            "{:.3} / {:.3} ms = {:.3}",
            med(3),
            med(1),
            ratio(med(3), med(1))
        ),
        "-",
        true,
    );
    // Throughput on the seam configuration with all the Services.
    if opts.rounds > 0 {
        let mut lab = configs.swap_remove(1).lab;
        drop(configs);
        lab.stop_listener();
        throughput(opts, &lab, big, sum)?;
    }
    Ok(())
}

/// iperf3 client → ClusterIP → server against client → server directly, both through the router
/// namespace holding the Services table (rounds alternate which goes first).
fn throughput(
    opts: &ServicesOpts,
    lab: &Routed,
    g: &Generated,
    sum: &mut ServicesSummary,
) -> anyhow::Result<()> {
    // iperf3 listens on the backends' port, so the ClusterIP's port 80 reaches it.
    let port = TARGET_PORT.to_string();
    let child = netns::run_in(&lab.server, || {
        Command::new("iperf3")
            // -B: an IPv4 socket (iperf3 listens on IPv6 `::` otherwise, not in /proc/net/tcp).
            .args(["-s", "-B", "0.0.0.0", "-p", &port])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    })?
    .context("spawn iperf3 -s")?;
    let server = ChildGuard::new(child);
    crate::throughput::wait_listening(server.0.id(), Ipv4Addr::UNSPECIFIED, TARGET_PORT)?;
    let direct = SocketAddr::from((SERVER_BASE, TARGET_PORT));
    let via = SocketAddr::from((g.probe_vip(), SVC_PORT));
    let (mut d, mut v) = (Vec::new(), Vec::new());
    for round in 0..opts.rounds {
        for through in [round % 2 == 0, round % 2 != 0] {
            let to = if through { via } else { direct };
            let gbit = iperf_client(&lab.client, to, opts.seconds)?;
            if through {
                v.push(gbit);
            } else {
                d.push(gbit);
            }
        }
    }
    drop(server);
    let (dm, vm) = (Stats::of(&d).median, Stats::of(&v).median);
    println!(
        "== throughput through the router node holding {} Services (iperf3 {} s x {} rounds, Gbit/s)",
        g.services, opts.seconds, opts.rounds
    );
    println!("   client -> ClusterIP {via} -> server: {v:.2?} median {vm:.2}");
    println!("   client -> server {direct} directly:       {d:.2?} median {dm:.2}");
    let r = ratio(vm, dm);
    sum.row(
        "throughput via ClusterIP / direct, same router (medians)",
        format!("{vm:.2} / {dm:.2} Gbit/s = {r:.3}"),
        ">= 0.95",
        r >= 0.95,
    );
    Ok(())
}

pub(crate) fn iperf_client(client: &Path, to: SocketAddr, seconds: u64) -> anyhow::Result<f64> {
    let (ip, port, secs) = (
        to.ip().to_string(),
        to.port().to_string(),
        seconds.to_string(),
    );
    let out = netns::run_in(client, || {
        Command::new("iperf3")
            .args([
                "-c",
                &ip,
                "-p",
                &port,
                "-t",
                &secs,
                "-J",
                "--connect-timeout",
                "3000",
            ])
            .stdin(Stdio::null())
            .output()
    })?
    .context("run iperf3 -c")?;
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 -c {to} output (exit {}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(err) = v["error"].as_str() {
        bail!("iperf3 -c {to}: {err}");
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .with_context(|| format!("iperf3 -c {to}: no end.sum_received.bits_per_second"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_proxy_layout() -> anyhow::Result<()> {
        let g = Generated::new(3, 2);
        let text = kp_full(&g.desired);
        // One KUBE-SERVICES rule per Service port, then the NodePorts jump.
        let svc_rules: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES"))
            .collect();
        assert_eq!(svc_rules.len(), 4);
        assert!(svc_rules[1].contains("-d 10.96.0.2/32") && svc_rules[1].contains("--dport 80"));
        assert!(svc_rules[3].contains("KUBE-NODEPORTS"));
        // 1/2 then unconditional.
        assert_eq!(text.matches("--probability 0.50000000000").count(), 3);
        assert_eq!(text.matches("-j DNAT --to-destination").count(), 6);
        // The probe (the middle one) has the server's addresses.
        assert!(text.contains("--to-destination 10.1.0.2:8080"));
        assert!(text.ends_with("COMMIT\n"));
        let mut g2 = g.clone();
        g2.push_service();
        let f = g2.desired.frontends.last().cloned().context("no Service")?;
        let p = kp_partial(&g2.desired, &f, &[]);
        assert_eq!(
            p.lines()
                .filter(|l| l.starts_with("-A KUBE-SERVICES"))
                .count(),
            5
        );
        assert!(p.starts_with("*nat\n:KUBE-SERVICES - [0:0]\n"));
        Ok(())
    }

    #[test]
    fn view_resolves_to_the_desired_backends() {
        let g = Generated::new(4, 3);
        let (services, slices) = view_of(&g.desired);
        for ((svc, slice), f) in services.iter().zip(&slices).zip(&g.desired.frontends) {
            let ports = seam_model::resolve(svc, &[], std::slice::from_ref(slice));
            let got: Vec<(Ipv4Addr, u16)> = ports
                .iter()
                .flat_map(|p| p.backends.iter().map(|b| (b.ip, b.port)))
                .collect();
            assert_eq!(got, f.backends);
        }
    }

    #[test]
    fn the_agent_path_gives_the_generated_services() {
        let mut g = Generated::new(30, 4);
        let mut agent = AgentPath::new(&g.desired.segment_subnets, g.desired.hairpin.clone());
        let (services, slices) = view_of(&g.desired);
        for (svc, slice) in services.iter().zip(&slices) {
            agent.update(svc, slice);
        }
        assert_eq!(*agent.first_pass(), g.desired);
        let held = agent.last.clone();
        g.push_service();
        let (i, j) = g.pick(&mut Rng::new(3), 30);
        g.change_endpoint(i, j);
        for k in [i, 30] {
            let (svc, slice) =
                view_one(k, &g.desired.frontends[k]).unwrap_or_else(|| unreachable!());
            agent.update(&svc, &slice);
        }
        agent.local.clone_from(&g.desired.hairpin);
        let (desired, _) = agent.pass();
        assert_eq!(*desired, g.desired);
        assert_eq!(agent.desired(), g.desired);
        // The incremental model is the one made from scratch; the held result is untouched.
        assert_eq!(
            agent.model.listed(),
            ServiceModel::from_desired(&g.desired).listed()
        );
        assert_ne!(held.as_deref(), Some(&g.desired));
        // Nothing updated: the same result.
        let (again, _) = agent.pass();
        assert!(Arc::ptr_eq(&again, &desired));
    }

    #[test]
    fn endpoint_change_keeps_order() {
        let mut g = Generated::new(5, 4);
        let mut rng = Rng::new(1);
        for _ in 0..10 {
            let (i, j) = g.pick(&mut rng, 5);
            assert_ne!(i, g.probe);
            assert!(g.change_endpoint(i, j).is_some());
            let b = &g.desired.frontends[i].backends;
            assert!(b.windows(2).all(|w| w[0] < w[1]));
        }
        assert!(g.desired.frontends.windows(2).all(|w| w[0].key < w[1].key));
    }
}
