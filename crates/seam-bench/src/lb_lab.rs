//! `seam-bench lb-throughput`: iperf3 from the external server bm1 through a LoadBalancer address
//! served at the gateway to a backend pod on a worker node (bm1 -> gw1: DNAT to the pod -> routed
//! transit -> n1 -> pod; the reply back through gw1, the client address kept), against bm1 to the
//! same pod's own address over the gateway's plain routed path (no Service: what `seam-bench
//! gateway` measures as "bm1 -> pod"), rounds alternating which goes first (issue 12: ratio >=
//! 0.9).
//!
//! The lab: one worker n1, gateway gw1, server bm1 (203.0.113.10, registered as an external
//! endpoint so the pods' replies to it go through gw1, with a route to the pods' prefix via gw1),
//! the address pool `bench` (203.0.113.200/29, on-link on the external network) and a
//! LoadBalancer Service `tput/server` (port 80 -> 5201) in front of the pod `tput/server` on n1.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use seam_model::service::{
    AddressPool, Service, ServicePort, ServiceSpec, ServiceType, TargetPort,
};
use seam_model::PortProtocol;

use crate::cleanup::LabGuard;
use crate::services_lab::{iperf, PORT};
use crate::stats::{ratio, verdict, Stats};
use crate::util;

const BM1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const POOL: &str = "203.0.113.200/29";
const SVC_PORT: u16 = 80;
/// Issue 12's target for the LoadBalancer path against the plain routed one.
const TARGET: f64 = 0.9;

/// Options of `seam-bench lb-throughput`.
#[derive(Debug, Clone, clap::Args)]
pub struct LbThroughputOpts {
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Rounds; each measures both paths, alternating which goes first.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

impl LbThroughputOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "lb-throughput --seconds {} --rounds {}",
            self.seconds, self.rounds
        )
    }
}

/// Gbit/s per round of each path.
#[derive(Debug, Clone, Default)]
pub struct LbThroughput {
    /// bm1 -> LoadBalancer address at gw1 -> pod.
    pub via_lb: Vec<f64>,
    /// bm1 -> pod's address through gw1, routed.
    pub routed: Vec<f64>,
}

impl LbThroughput {
    /// Median via the LoadBalancer address / median routed.
    pub fn ratio(&self) -> f64 {
        ratio(
            Stats::of(&self.via_lb).median,
            Stats::of(&self.routed).median,
        )
    }
    /// At least [`TARGET`].
    pub fn ok(&self) -> bool {
        self.ratio() >= TARGET
    }
}

/// Runs the benchmark on a fresh lab (worker n1, gateway gw1, server bm1) and removes it again.
pub fn run(bin_dir: &Path, opts: &LbThroughputOpts) -> anyhow::Result<LbThroughput> {
    println!(
        "== seam-bench {}  ({} CPUs, load {})",
        opts.command(),
        util::cpus(),
        util::loadavg()
    );
    let mut guard = crate::cleanup::lab_up("blbt", 1, bin_dir)?;
    let result = bench(&mut guard, opts);
    let down = guard.finish();
    let r = result?;
    down?;
    println!("   load at the end: {}", util::loadavg());
    Ok(r)
}

fn bench(guard: &mut LabGuard, opts: &LbThroughputOpts) -> anyhow::Result<LbThroughput> {
    guard.lab.topology().add_gateway("gw1")?;
    let bm1 =
        guard
            .lab
            .workloads()
            .add_server("bm1", BM1, "gw1", &[seam_lab::gateway::DEFAULT_POOL])?;
    let labels: std::collections::BTreeMap<String, String> =
        [("app".to_string(), "server".to_string())]
            .into_iter()
            .collect();
    let pod = guard
        .lab
        .workloads()
        .add_pod_with_labels("n1", "tput", "server", &labels)?;
    let lb = set_up_service(guard, labels)?;
    wait_reaches(&bm1.netns_path, &pod.netns_path, pod.ip, lb)?;
    println!(
        "   via LB: bm1 {BM1} -> {lb}:{SVC_PORT} at gw1 -> pod {}:{PORT} (n1), against routed: bm1 -> gw1 -> pod {}:{PORT}",
        pod.ip, pod.ip
    );
    let mut r = LbThroughput::default();
    for round in 0..opts.rounds.max(1) {
        for via_lb in [round % 2 == 0, round % 2 != 0] {
            let to = if via_lb {
                SocketAddr::from((lb, SVC_PORT))
            } else {
                SocketAddr::from((pod.ip, PORT))
            };
            let g = iperf(&pod.netns_path, pod.ip, &bm1.netns_path, to, opts.seconds)
                .with_context(|| format!("iperf3 bm1 -> {to} in round {round}"))?;
            if via_lb {
                r.via_lb.push(g);
            } else {
                r.routed.push(g);
            }
        }
    }
    let row = |label: &str, v: &[f64]| {
        let rounds: String = v.iter().map(|g| format!(" {g:>7.2}")).collect();
        println!(
            "   {label:<38}{rounds}   median {:>6.2}",
            Stats::of(v).median
        );
    };
    println!("   (Gbit/s, iperf3 sum_received)");
    row("bm1 -> LoadBalancer address -> pod", &r.via_lb);
    row("bm1 -> pod through gw1 (routed)", &r.routed);
    println!(
        "   ratio LB/routed (medians): {:.3}   target >= {TARGET}: {}",
        r.ratio(),
        verdict(r.ok())
    );
    Ok(r)
}

/// Registers bm1 as an external endpoint, puts the pool and the LoadBalancer Service, and
/// returns the address the Service was given.
fn set_up_service(
    guard: &LabGuard,
    selector: std::collections::BTreeMap<String, String>,
) -> anyhow::Result<Ipv4Addr> {
    let client = guard.lab.client()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let external = seam_model::External {
        name: "bm1".into(),
        namespace: seam_model::EXTERNAL_NAMESPACE.into(),
        gateway: "gw1".into(),
        addresses: vec![BM1],
        labels: Default::default(),
    };
    rt.block_on(client.put_external(&external))
        .context("put external bm1")?;
    let pool = AddressPool {
        name: "bench".into(),
        addresses: vec![POOL.parse().context("pool prefix")?],
        auto_assign: true,
    };
    rt.block_on(client.put_address_pool(&pool))
        .context("put AddressPool bench")?;
    let service = Service {
        name: "server".into(),
        namespace: "tput".into(),
        labels: Default::default(),
        annotations: Default::default(),
        spec: ServiceSpec {
            service_type: ServiceType::LoadBalancer,
            selector: Some(selector),
            ports: vec![ServicePort {
                name: Some("iperf".into()),
                protocol: PortProtocol::Tcp,
                port: SVC_PORT,
                target_port: Some(TargetPort::Number(PORT)),
                node_port: None,
                app_protocol: None,
            }],
            ..ServiceSpec::default()
        },
        status: Default::default(),
    };
    rt.block_on(client.put_service(&service))
        .context("put Service tput/server")?;
    // The address is allocated in the Service's own transaction; read it back until it shows.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored = rt
            .block_on(client.get_service("tput", "server"))
            .context("get Service tput/server")?;
        if let Some(ingress) = stored.status.load_balancer.ingress.first() {
            return Ok(ingress.ip);
        }
        if Instant::now() > deadline {
            bail!("Service tput/server got no LoadBalancer address within 10 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until bm1 reaches the pod both through the LoadBalancer address and directly (the
/// gateway takes the address and the agents translate asynchronously), with a listener of our
/// own on the pod's port, before iperf3.
fn wait_reaches(bm1: &Path, pod_ns: &Path, pod: Ipv4Addr, lb: Ipv4Addr) -> anyhow::Result<()> {
    let listener = seam_linux::netns::run_in(pod_ns, || TcpListener::bind((pod, PORT)))??;
    let deadline = Instant::now() + Duration::from_secs(30);
    for to in [
        SocketAddr::from((lb, SVC_PORT)),
        SocketAddr::from((pod, PORT)),
    ] {
        loop {
            let ok = seam_linux::netns::run_in(bm1, || {
                TcpStream::connect_timeout(&to, Duration::from_millis(300)).is_ok()
            })?;
            if ok {
                break;
            }
            if Instant::now() > deadline {
                bail!("bm1 does not reach {to} (pod {pod}) after 30 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    drop(listener);
    Ok(())
}
