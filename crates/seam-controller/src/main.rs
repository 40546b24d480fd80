//! `seam-controller`: reads flags, opens the store and serves the controller API until SIGTERM
//! or SIGINT. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ipnet::Ipv4Net;
use seam_controller::{ControllerConfig, Listener, SegmentMode};
use seam_store::AnyStore;

/// EX_USAGE from sysexits.h: the command line or configuration is wrong.
const EXIT_USAGE: u8 = 64;

/// Seam's control plane: serves desired state over a versioned HTTP API.
#[derive(Debug, Parser)]
#[command(name = "seam-controller", version)]
struct Args {
    /// Where to listen: unix:/path (mode 0600) or tcp:ADDR:PORT; repeatable.
    #[arg(
        long = "listen",
        value_name = "LISTENER",
        default_value = "unix:/run/seam/controller.sock"
    )]
    listen: Vec<Listener>,
    /// The datastore: embedded:/path/file.redb or memory.
    #[arg(
        long,
        value_name = "STORE",
        default_value = "embedded:/var/lib/seam/controller.redb"
    )]
    store: StoreSpec,
    /// How namespaces map to segments: namespace (one segment each) or flat (one for all).
    #[arg(long, value_name = "MODE", default_value = "namespace")]
    segment_mode: SegmentMode,
    /// The address pool segments are carved from.
    #[arg(long, default_value = "10.240.0.0/12")]
    pool: Ipv4Net,
    /// Prefix length of per-namespace segments.
    #[arg(long, default_value_t = 20)]
    segment_prefix: u8,
    /// Prefix length of per-node address blocks.
    #[arg(long, default_value_t = 26)]
    block_prefix: u8,
    /// Lowest VNI given to segments the controller creates.
    #[arg(long, default_value_t = 4096)]
    vni_base: u32,
    /// Log format: text or json.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Clone)]
enum StoreSpec {
    Memory,
    Embedded(PathBuf),
}

impl std::str::FromStr for StoreSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "memory" {
            return Ok(StoreSpec::Memory);
        }
        match s.strip_prefix("embedded:") {
            Some(path) if !path.is_empty() => Ok(StoreSpec::Embedded(PathBuf::from(path))),
            _ => Err(format!(
                "invalid store {s:?}: expected embedded:/path/file.redb or memory"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum LogFormat {
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("invalid log format {s:?}: expected text or json")),
        }
    }
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
    let config = ControllerConfig {
        segment_mode: args.segment_mode,
        pool: args.pool,
        segment_prefix: args.segment_prefix,
        block_prefix: args.block_prefix,
        vni_base: args.vni_base,
    };
    // All configuration is checked before anything is opened or bound.
    if let Err(e) = config.validate() {
        eprintln!("seam-controller: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    match run(config, args.store, args.listen) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seam-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(config: ControllerConfig, store: StoreSpec, listen: Vec<Listener>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let store = match store {
            StoreSpec::Memory => AnyStore::memory(),
            StoreSpec::Embedded(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating store directory {}", dir.display()))?;
                }
                AnyStore::open_embedded(&path)
                    .with_context(|| format!("opening store {}", path.display()))?
            }
        };
        let shutdown = shutdown_signal()?;
        seam_controller::serve(config, store, listen, shutdown)
            .await
            .context("serving the controller API")
    })
}

/// Resolves on the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("received SIGTERM"),
            _ = int.recv() => tracing::info!("received SIGINT"),
        }
    })
}
