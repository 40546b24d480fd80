//! `seam-k8s`: reads flags, connects to the Kubernetes API (in-cluster config by default) and
//! runs the adapter against a Seam controller until SIGTERM or SIGINT. Everything else lives in
//! the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use seam_client::{ClientTls, ControllerClient};
use seam_k8s::{Adapter, WatchedKind};

/// EX_USAGE from sysexits.h: the command line or configuration is wrong.
const EXIT_USAGE: u8 = 64;

/// Seam's Kubernetes adapter: maps Namespaces, Pods, network policies and Seam's CRDs into the
/// Seam controller.
#[derive(Debug, Parser)]
#[command(name = "seam-k8s", version)]
struct Args {
    /// The controller API: https://host:port (mutual TLS with --ca, --cert, --key), unix:/path
    /// or http://host:port.
    #[arg(long, value_name = "ENDPOINT", env = "SEAM_CONTROLLER")]
    controller: String,
    /// The CA certificate (PEM) that verifies an https:// controller.
    #[arg(long, value_name = "PATH", env = "SEAM_CA")]
    ca: Option<PathBuf>,
    /// The adapter's client certificate (PEM; organization seam:adapter), re-read when it
    /// changes.
    #[arg(long, value_name = "PATH", env = "SEAM_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "PATH", env = "SEAM_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// The name the controller's certificate carries, when the endpoint's host is not it.
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// A kubeconfig file; without it the in-cluster service account is used.
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, requires = "kubeconfig")]
    context: Option<String>,
    /// Do not watch the policy.networking.k8s.io kinds (AdminNetworkPolicy,
    /// BaselineAdminNetworkPolicy, ClusterNetworkPolicy), e.g. when their CRDs are not installed.
    #[arg(long)]
    no_cluster_policies: bool,
    /// Do not watch Seam's own CRDs (EndpointGroup, Contract, Tenant).
    #[arg(long)]
    no_seam_crds: bool,
    /// Where `/healthz`, `/readyz` and `/metrics` are served over plain HTTP (ADDR:PORT, for
    /// kubelet's probes and Prometheus); `off` disables it.
    #[arg(long, value_name = "ADDR:PORT|off", default_value = "0.0.0.0:9474")]
    metrics_listen: String,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return if usage {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_tracing(args.log_format);
    // The endpoint is checked before anything connects.
    let controller = match controller_client(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("seam-k8s: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(args, controller) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seam-k8s: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The controller client, with TLS settings when --ca is given (required for https://).
fn controller_client(args: &Args) -> anyhow::Result<ControllerClient> {
    let client = ControllerClient::new(&args.controller)?;
    let Some(ca) = &args.ca else {
        anyhow::ensure!(
            !args.controller.contains("https://"),
            "invalid controller {}: an https:// controller needs --ca (and --cert, --key)",
            args.controller
        );
        return Ok(client);
    };
    let cert = args.cert.as_deref().zip(args.key.as_deref());
    let mut tls = ClientTls::from_files(ca, cert).context("the controller's TLS settings")?;
    if let Some(name) = &args.tls_server_name {
        tls = tls.with_server_name(name)?;
    }
    Ok(client.with_tls(tls))
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(args: Args, controller: ControllerClient) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    runtime.block_on(async {
        let config = match &args.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .with_context(|| format!("read kubeconfig {}", path.display()))?;
                let options = KubeConfigOptions {
                    context: args.context.clone(),
                    ..KubeConfigOptions::default()
                };
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .with_context(|| format!("use kubeconfig {}", path.display()))?
            }
            None => kube::Config::incluster()
                .context("read the in-cluster config (not in a pod? pass --kubeconfig)")?,
        };
        let client = kube::Client::try_from(config).context("build the Kubernetes client")?;
        let kinds = WatchedKind::ALL.into_iter().filter(|k| {
            let cluster_policy = matches!(
                k,
                WatchedKind::AdminNetworkPolicy
                    | WatchedKind::BaselineAdminNetworkPolicy
                    | WatchedKind::ClusterNetworkPolicy
            );
            let seam_crd = matches!(
                k,
                WatchedKind::EndpointGroup | WatchedKind::Contract | WatchedKind::Tenant
            );
            let skipped =
                (args.no_cluster_policies && cluster_policy) || (args.no_seam_crds && seam_crd);
            !skipped
        });
        tracing::info!(controller = %controller.endpoint(), "starting Kubernetes adapter");
        let adapter = Adapter::new(client, controller).with_kinds(kinds);
        if args.metrics_listen != "off" {
            let addr: std::net::SocketAddr = args.metrics_listen.parse().with_context(|| {
                format!(
                    "--metrics-listen {}: expected ADDR:PORT or off",
                    args.metrics_listen
                )
            })?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listen on {addr} (--metrics-listen)"))?;
            let app = seam_k8s::metrics::router(adapter.metrics());
            tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "the metrics server stopped");
                }
            });
        }
        adapter.run(shutdown_signal()).await;
        Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT. If the handlers cannot be installed the adapter runs until
/// killed, which is what a pod's adapter does anyway.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; running until killed");
            std::future::pending::<()>().await;
        }
    }
}
