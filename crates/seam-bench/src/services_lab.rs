//! `seam-bench services-throughput`: iperf3 pod → ClusterIP → pod on another node against pod →
//! pod directly, on a 2-node lab whose agents translate the Service (issue 12), rounds
//! alternating which goes first.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use seam_model::service::{ClusterIp, Service, ServicePort, ServiceSpec, TargetPort};
use seam_model::PortProtocol;

use crate::cleanup::ChildGuard;
use crate::stats::{ratio, verdict, Stats};
use crate::util;

/// The port iperf3 serves on in the backend pod (the Service's target port).
pub(crate) const PORT: u16 = 5201;
const SVC_PORT: u16 = 80;

/// Options of `seam-bench services-throughput`.
#[derive(Debug, Clone, clap::Args)]
pub struct LabThroughputOpts {
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Rounds; each measures both paths, alternating which goes first.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

impl LabThroughputOpts {
    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "services-throughput --seconds {} --rounds {}",
            self.seconds, self.rounds
        )
    }
}

/// Gbit/s per round of each path.
#[derive(Debug, Clone, Default)]
pub struct LabThroughput {
    /// Pod → ClusterIP → pod.
    pub via: Vec<f64>,
    /// Pod → pod.
    pub direct: Vec<f64>,
}

impl LabThroughput {
    /// Median via / median direct.
    pub fn ratio(&self) -> f64 {
        ratio(Stats::of(&self.via).median, Stats::of(&self.direct).median)
    }
    /// At least 0.95.
    pub fn ok(&self) -> bool {
        self.ratio() >= 0.95
    }
}

/// Runs the benchmark on a fresh 2-node lab and removes it again.
pub fn run(bin_dir: &Path, opts: &LabThroughputOpts) -> anyhow::Result<LabThroughput> {
    println!(
        "== seam-bench {}  ({} CPUs, load {})",
        opts.command(),
        util::cpus(),
        util::loadavg()
    );
    let mut guard = crate::cleanup::lab_up("bsvt", 2, bin_dir)?;
    let result = bench(&mut guard, opts);
    let down = guard.finish();
    let r = result?;
    down?;
    Ok(r)
}

fn bench(
    guard: &mut crate::cleanup::LabGuard,
    opts: &LabThroughputOpts,
) -> anyhow::Result<LabThroughput> {
    let labels = [("app".to_string(), "server".to_string())]
        .into_iter()
        .collect();
    let client = guard.lab.workloads().add_pod("n1", "tput", "client")?;
    let server = guard
        .lab
        .workloads()
        .add_pod_with_labels("n2", "tput", "server", &labels)?;
    let service = Service {
        name: "server".into(),
        namespace: "tput".into(),
        labels: Default::default(),
        annotations: Default::default(),
        spec: ServiceSpec {
            selector: Some(labels),
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
    let c = guard.lab.client()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stored = rt
        .block_on(c.put_service(&service))
        .context("put Service tput/server")?;
    let ClusterIp::Address(cluster_ip) = stored.spec.cluster_ip else {
        bail!(
            "Service tput/server got no ClusterIP: {:?}",
            stored.spec.cluster_ip
        );
    };
    // The agents translate asynchronously: wait until the client reaches the server through the
    // ClusterIP (a listener of our own on the server's port, before iperf3).
    {
        let listener = seam_linux::netns::run_in(&server.netns_path, || {
            TcpListener::bind((server.ip, PORT))
        })??;
        let to = SocketAddr::from((cluster_ip, SVC_PORT));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = seam_linux::netns::run_in(&client.netns_path, || {
                TcpStream::connect_timeout(&to, Duration::from_millis(300)).is_ok()
            })?;
            if ok {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "pod {} on n1 does not reach {to} (server {}) after 20 s",
                    client.ip,
                    server.ip
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        drop(listener);
    }
    println!(
        "   pod {} (n1) -> ClusterIP {cluster_ip}:{SVC_PORT} -> pod {}:{PORT} (n2), against pod {} -> pod {}:{PORT}",
        client.ip, server.ip, client.ip, server.ip
    );
    let mut r = LabThroughput::default();
    for round in 0..opts.rounds.max(1) {
        for via in [round % 2 == 0, round % 2 != 0] {
            let to = if via {
                SocketAddr::from((cluster_ip, SVC_PORT))
            } else {
                SocketAddr::from((server.ip, PORT))
            };
            let g = iperf(
                &server.netns_path,
                server.ip,
                &client.netns_path,
                to,
                opts.seconds,
            )?;
            if via {
                r.via.push(g);
            } else {
                r.direct.push(g);
            }
        }
    }
    println!(
        "   {:<34} {:.2?}  median {:.2}",
        "pod -> ClusterIP -> pod (Gbit/s)",
        r.via,
        Stats::of(&r.via).median
    );
    println!(
        "   {:<34} {:.2?}  median {:.2}",
        "pod -> pod (Gbit/s)",
        r.direct,
        Stats::of(&r.direct).median
    );
    println!(
        "   ratio (medians): {:.3}   target >= 0.95: {}",
        r.ratio(),
        verdict(r.ok())
    );
    Ok(r)
}

/// One iperf3 run: a server in `server_ns` bound to `bind`, a client in `client_ns` to `to`.
pub(crate) fn iperf(
    server_ns: &Path,
    bind: Ipv4Addr,
    client_ns: &Path,
    to: SocketAddr,
    seconds: u64,
) -> anyhow::Result<f64> {
    let (b, port) = (bind.to_string(), PORT.to_string());
    let child = seam_linux::netns::run_in(server_ns, || {
        Command::new("iperf3")
            .args(["-s", "-B", &b, "-p", &port])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    })?
    .context("spawn iperf3 -s")?;
    let server = ChildGuard::new(child);
    crate::throughput::wait_listening(server.0.id(), bind, PORT)?;
    let g = crate::services::iperf_client(client_ns, to, seconds);
    drop(server);
    g
}
