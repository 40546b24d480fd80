//! `seamd`, the node agent: serves `seam-cni`, keeps leases, follows the controller and owns the
//! node's dataplane through netlink.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use seam_agent::{Agent, AgentConfig};
use seam_dataplane::{NodeKernel, Underlay};
use seam_linux::LinuxKernel;
use seam_model::{NodeRole, TransitEncap};
use seam_store::AnyStore;

/// VXLAN adds 50 bytes (outer Ethernet 14, IPv4 20, UDP 8, VXLAN 8) to every frame.
const VXLAN_OVERHEAD: u32 = 50;

#[derive(Parser, Debug)]
#[command(name = "seamd", version, about = "Seam node agent")]
struct Args {
    /// This node's name.
    #[arg(long, env = "SEAM_NODE")]
    node: String,
    /// Controller endpoint: unix:/path, http://host:port or https://host:port (mutual TLS with
    /// the node's certificate: see --ca, --cert-dir, --join-token-file), or a comma-separated list of
    /// controller replicas (the agent moves on to the next while one is unreachable or a
    /// standby). With --with-controller it defaults to that listener.
    #[arg(
        long,
        env = "SEAM_CONTROLLER",
        required_unless_present = "with_controller"
    )]
    controller: Option<String>,
    /// One-machine mode: also run the controller in this process, listening here
    /// (unix:/path or tcp:ADDR:PORT).
    #[arg(long, value_name = "LISTENER")]
    with_controller: Option<seam_controller::Listener>,
    /// The controller's store in one-machine mode (one redb file).
    #[arg(long, default_value = "/var/lib/seam/controller.redb")]
    controller_store: PathBuf,
    /// Segment mode of the controller in one-machine mode.
    #[arg(long, value_enum, default_value = "namespace")]
    segment_mode: SegmentModeArg,
    /// The CA certificate (PEM) that verifies an https:// controller.
    #[arg(long, env = "SEAM_CA")]
    ca: Option<PathBuf>,
    /// The name the controller's certificate carries, when the controller endpoint's host is
    /// not it (e.g. a Kubernetes Service's ClusterIP, with the certificate naming the Service's
    /// DNS name).
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// Where the node's key and certificate live (node.key, node.crt; mode 0600).
    #[arg(long, default_value = "/var/lib/seam/pki")]
    cert_dir: PathBuf,
    /// A file holding a join token (`seam node token create`), used when --cert-dir holds no
    /// valid certificate of this node (or the controller refuses it). The token may instead be
    /// given in the environment variable SEAM_JOIN_TOKEN.
    #[arg(long)]
    join_token_file: Option<PathBuf>,
    /// CNI socket path (mode 0600).
    #[arg(long, default_value = "/run/seam/seamd.sock")]
    socket: PathBuf,
    /// Local lease store (one redb file).
    #[arg(long, default_value = "/var/lib/seam/agent.redb")]
    state: PathBuf,
    /// Underlay interface: VXLAN packets leave through it, its address is the tunnel endpoint.
    #[arg(long, default_value = "eth0")]
    underlay_interface: String,
    /// Enter this network namespace (a name under /run/netns or a path) before anything else.
    #[arg(long)]
    netns: Option<String>,
    /// Node role.
    #[arg(long, value_enum, default_value = "worker")]
    role: Role,
    /// On a gateway node: how the other nodes send it the traffic for its external endpoints.
    /// `cross-subnet` routes it without encapsulation from nodes in this node's underlay subnet
    /// (reverse-path filtering on the underlay interface is set loose, where their pods' source
    /// addresses arrive) and through the transit VXLAN from the rest; `always` encapsulates
    /// from every node (for an underlay whose switches drop addresses they do not know).
    #[arg(long, value_enum, default_value = "cross-subnet")]
    transit_encap: TransitEncapArg,
    /// How the other nodes send this node's endpoints the traffic of routed segments (every
    /// segment but those with `forwarding: overlay`). `cross-subnet` routes it without
    /// encapsulation between this node and the nodes of its underlay subnet that publish
    /// `cross-subnet` too (strict reverse-path filtering on the underlay interface is set loose
    /// before the node is published), and through the segments' VXLAN with the rest. `always` keeps the
    /// VXLAN with every node: use it where the underlay drops source addresses it did not
    /// assign (cloud VPCs with source/destination checks, switches with IP source guard), since
    /// routed packets carry the pods' and VMs' own addresses on the underlay.
    #[arg(
        long,
        env = "SEAM_SEGMENT_ENCAP",
        value_enum,
        default_value = "cross-subnet"
    )]
    segment_encap: TransitEncapArg,
    /// On a gateway node: the interface on the external network. The LoadBalancer addresses this
    /// gateway owns are added to it as /32s and announced with gratuitous ARP; without it the
    /// gateway serves none (the other gateways do).
    #[arg(long, value_name = "IFACE")]
    external_interface: Option<String>,
    /// How long a released address stays out of use, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    quarantine_ms: u64,
    /// How long an address block with no lease (and no address in quarantine) stays with this
    /// node before it goes back to its segment, in milliseconds.
    #[arg(long, default_value_t = 300_000)]
    block_release_after_ms: u64,
    /// How often the agent compares the controller's record of this node and of its pods'
    /// endpoints with what it would publish, and publishes again what differs, in milliseconds
    /// (it also does at once when a watch event contradicts them).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..))]
    reassert_ms: u64,
    /// Flow recording: `on` samples every verdict of the node's policy table to an NFLOG group
    /// and turns the samples into flow records for the controller; `off` writes the table with
    /// no log statements at all (but Contracts' own `log`).
    #[arg(long, env = "SEAM_FLOWS", value_enum, default_value = "off")]
    flows: Switch,
    /// The NFLOG group of the flow samples (one reader per group per node: a group another
    /// process reads is refused at start).
    #[arg(long, default_value_t = 6100)]
    flow_group: u16,
    /// Drop (and Pass) samples per second of each policy rule, at most (the kernel counts
    /// what is over and the next record of the rule says how many).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    flow_drop_rate: u32,
    /// Drop (and Pass) samples per second of the whole node, at most (counted like the above).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    flow_node_drop_rate: u32,
    /// Allowed-connection samples per second of each policy rule, at most (0: every new
    /// connection).
    #[arg(long, default_value_t = 1000)]
    flow_allow_rate: u32,
    /// Where the agent's HTTPS API listens (ADDR:PORT): health, readiness, Prometheus metrics
    /// and the rule counters, over TLS 1.3 with the node's certificate (so only with an
    /// https:// controller); `off` disables it.
    #[arg(long, default_value = "0.0.0.0:9473", value_parser = parse_api_listen, value_name = "ADDR:PORT|off")]
    api_listen: ApiListen,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

// The flow flags' defaults are seam_nft's: a lab's conformance run renders the table an agent
// with them writes.
const _: () = assert!(
    seam_nft::rule::DEFAULT_FLOW_GROUP == 6100
        && seam_nft::rule::DEFAULT_FLOW_DROP_RATE == 10
        && seam_nft::rule::DEFAULT_FLOW_ALLOW_RATE == 1000
);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Switch {
    On,
    Off,
}

/// `--api-listen`: an address, or off.
#[derive(Clone, Copy, Debug)]
enum ApiListen {
    Off,
    On(std::net::SocketAddr),
}

fn parse_api_listen(text: &str) -> Result<ApiListen, String> {
    if text == "off" {
        return Ok(ApiListen::Off);
    }
    text.parse()
        .map(ApiListen::On)
        .map_err(|e| format!("expected ADDR:PORT or off: {e}"))
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Role {
    Worker,
    Hypervisor,
    Gateway,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TransitEncapArg {
    Always,
    CrossSubnet,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SegmentModeArg {
    Namespace,
    Flat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("seamd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(ns) = &args.netns {
        // Before the runtime starts: every thread it spawns inherits this namespace.
        let path = if ns.contains('/') {
            PathBuf::from(ns)
        } else {
            seam_linux::netns::path_of(ns)
        };
        seam_linux::netns::enter(&path).with_context(|| format!("enter network namespace {ns}"))?;
    }
    // One runtime thread: the agent waits on the kernel, the socket and the controller, and
    // spends well under a millisecond of CPU per CNI call. Few threads also means few glibc
    // malloc arenas, which otherwise each keep what a burst of ADDs once touched.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .context("start async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let kernel = LinuxKernel::connect().context("open netlink")?;
    let interface = kernel
        .underlay_interface(&args.underlay_interface)
        .await
        .with_context(|| format!("read underlay interface {}", args.underlay_interface))?;
    // The first address, as `ip -4 addr` lists it; the agent follows it from here.
    let Some(underlay_net) = interface.addresses.first() else {
        anyhow::bail!(
            "underlay interface {} has no IPv4 address",
            args.underlay_interface
        );
    };
    let (underlay_ip, underlay_prefix) = (underlay_net.addr(), underlay_net.prefix_len());
    let underlay_mac = interface.mac;
    let underlay_mtu = interface.mtu;
    seam_linux::sysctl::write("net/ipv4/ip_forward", "1").context("enable forwarding")?;
    // Policy between endpoints on one bridge is enforced in the inet forward hook, which sees
    // bridged IPv4 only through br_netfilter (a per-namespace setting). Services need it too: a
    // pod's connection to a Service is routed (to the gateway MAC) and translated, but a backend
    // on the same bridge answers the client's MAC directly; only br_netfilter puts that bridged
    // reply through conntrack, which gives it the Service's address back (without it the client
    // never recognises the reply and the connection times out).
    if let Err(e) = seam_linux::sysctl::write("net/bridge/bridge-nf-call-iptables", "1") {
        tracing::warn!(
            "br_netfilter is not available ({e}): traffic bridged within a segment on this node is not filtered, \
             and connections through a Service to a backend on the client's own segment on this node time out; \
             load the br_netfilter module"
        );
    }
    let segment_encap = match args.segment_encap {
        TransitEncapArg::Always => TransitEncap::Always,
        TransitEncapArg::CrossSubnet => TransitEncap::CrossSubnet,
    };
    if segment_encap == TransitEncap::CrossSubnet {
        // Before the Node says `crossSubnet`: from then on peers route their endpoints' traffic
        // here over the underlay, from source addresses this node routes elsewhere while a mode
        // switch is under way, which strict filtering would drop.
        seam_linux::sysctl::loosen_rp_filter(&args.underlay_interface).with_context(|| {
            format!(
                "loosen reverse-path filtering on {}",
                args.underlay_interface
            )
        })?;
    }
    if let Some(dir) = args.state.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    // The lease store is small (one record per attachment); a 2 MiB page cache keeps the
    // agent's memory flat as pods come and go.
    let store_config = seam_store::StoreConfig {
        cache_bytes: 2 << 20,
        ..seam_store::StoreConfig::default()
    };
    let store = AnyStore::open_embedded_with(&args.state, store_config)
        .with_context(|| format!("open lease store {}", args.state.display()))?;
    let controller = match (&args.with_controller, &args.controller) {
        (Some(listener), given) => {
            let endpoint = given.clone().unwrap_or_else(|| match listener {
                seam_controller::Listener::Unix(path) => format!("unix:{}", path.display()),
                seam_controller::Listener::Tcp(addr) => format!("http://{addr}"),
            });
            start_controller(&args, listener.clone()).await?;
            endpoint
        }
        (None, Some(endpoint)) => endpoint.clone(),
        (None, None) => anyhow::bail!("--controller or --with-controller is required"),
    };
    let node_pki = node_certificate(&args, &controller).await?;
    // The API serves with the node's certificate: its files and the CA that verifies clients.
    let node_pki_files = node_pki
        .as_ref()
        .map(|pki| (pki.ca.clone(), pki.cert_path(), pki.key_path()));
    let tls = match &node_pki {
        Some(pki) => Some(pki.client_tls().context("load the node certificate")?),
        None => None,
    };
    let config = AgentConfig {
        node: args.node.clone(),
        role: match args.role {
            Role::Worker => NodeRole::Worker,
            Role::Hypervisor => NodeRole::Hypervisor,
            Role::Gateway => NodeRole::Gateway,
        },
        underlay: Underlay {
            ifname: args.underlay_interface.clone(),
            ip: underlay_ip,
            prefix_len: underlay_prefix,
        },
        transit_encap: match args.transit_encap {
            TransitEncapArg::Always => TransitEncap::Always,
            TransitEncapArg::CrossSubnet => TransitEncap::CrossSubnet,
        },
        underlay_mac,
        segment_encap,
        mtu: underlay_mtu.saturating_sub(VXLAN_OVERHEAD),
        socket: args.socket.clone(),
        controller,
        quarantine_ms: args.quarantine_ms,
        block_release_after_ms: args.block_release_after_ms,
        reassert_interval: std::time::Duration::from_millis(args.reassert_ms),
        serves_lb_addresses: args.external_interface.is_some(),
        external_interface: args.external_interface.clone(),
    };
    let running = Agent::start_with_tls(config, tls, kernel, store)
        .await
        .context("start agent")?;
    // The agent follows its underlay address; this wakes it at each change of the interface
    // (it also reads it periodically, and does only that when the watch cannot be opened).
    let underlay_watch = match seam_linux::watch::InterfaceWatch::open(&args.underlay_interface) {
        Ok(mut watch) => {
            let agent = running.agent.clone();
            Some(tokio::spawn(async move {
                while watch.changed().await {
                    agent.underlay_now.notify_one();
                }
                tracing::warn!(
                    "the underlay interface's watch ended; its address is read periodically only"
                );
            }))
        }
        Err(e) => {
            tracing::warn!(error = %e, "watching the underlay interface failed; its address is read periodically only");
            None
        }
    };
    // Renews the node certificate before it expires; the agent's client reads the new files.
    let renewal = node_pki.map(|pki| tokio::spawn(pki.run_renewal(running.agent.client.clone())));
    // Routes to external endpoints through gateway nodes, and the gateway role's transit.
    let transit_kernel = LinuxKernel::connect().context("open netlink for the transit")?;
    let transit = tokio::spawn(seam_agent::transit::run(
        running.agent.clone(),
        transit_kernel,
    ));
    // LoadBalancer addresses on a gateway's external interface; stale Service conntrack entries
    // on every node.
    let gateway_kernel = LinuxKernel::connect().context("open netlink for the gateway")?;
    let gateway = tokio::spawn(seam_agent::gateway::run(
        running.agent.clone(),
        gateway_kernel,
        args.external_interface.clone(),
    ));
    let flows = match args.flows {
        Switch::On => Some(start_flows(&args, &running.agent).await?),
        Switch::Off => None,
    };
    let recorder = flows.as_ref().map(|(recorder, _)| recorder.clone());
    let api = start_api(
        &args,
        node_pki_files.as_ref(),
        running.agent.clone(),
        recorder,
    )
    .await?;
    tracing::info!(node = %args.node, %underlay_ip, socket = %args.socket.display(), "seamd serving");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("signal handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    // The dataplane stays as it is: pods keep forwarding while the agent is down.
    tracing::info!("seamd stopping; dataplane left in place");
    transit.abort();
    gateway.abort();
    if let Some(watch) = underlay_watch {
        watch.abort();
    }
    for task in flows.into_iter().flat_map(|(_, tasks)| tasks) {
        task.abort();
    }
    if let Some(api) = api {
        api.abort();
    }
    if let Some(renewal) = renewal {
        renewal.abort();
    }
    running.abort();
    let _ = std::fs::remove_file(&args.socket);
    Ok(())
}

/// Flow recording: binds the NFLOG group (in this process's namespace, the node's), reads it on
/// a thread of its own into a bounded channel (a batch that finds it full is lost and counted),
/// and starts the recorder, which turns sampling on in the table.
async fn start_flows(
    args: &Args,
    agent: &std::sync::Arc<Agent<LinuxKernel>>,
) -> anyhow::Result<(
    std::sync::Arc<seam_agent::flows::FlowRecorder>,
    Vec<tokio::task::JoinHandle<()>>,
)> {
    use seam_agent::flows::{self, FlowConfig, SampleBatch};
    let config = FlowConfig {
        group: args.flow_group,
        drop_rate: args.flow_drop_rate,
        node_drop_rate: args.flow_node_drop_rate,
        allow_rate: (args.flow_allow_rate > 0).then_some(args.flow_allow_rate),
    };
    let socket = seam_linux::nflog::NflogSocket::bind(
        config.group,
        seam_linux::nflog::seam_config(flows::SNAPLEN),
    )
    .context("bind the NFLOG group of flow samples (--flow-group)")?;
    let (tx, rx) = tokio::sync::mpsc::channel::<SampleBatch>(1024);
    let suppressed: flows::SuppressedReader =
        std::sync::Arc::new(|| seam_linux::nft::read_suppressed().map_err(|e| e.to_string()));
    // Records of a Service's connections name it from conntrack when NFLOG cannot (see
    // `seam_agent::flows::service`): a get waits 100 ms at most, on the lookups' own thread.
    let conntrack = match seam_linux::conntrack::ConntrackReader::open(
        std::time::Duration::from_millis(100),
    ) {
        Ok(mut reader) => Some(Box::new(move |query: &seam_nft::conntrack::CtQuery| {
            reader.get(query).map_err(|e| e.to_string())
        }) as flows::ConntrackGet),
        Err(e) => {
            tracing::warn!(error = %e, "no conntrack socket: flow records of Service connections name the backend, not the Service");
            None
        }
    };
    let kernel = flows::FlowKernel {
        suppressed,
        conntrack,
    };
    let (recorder, tasks) = flows::start(agent.clone(), config, rx, kernel).await;
    let lost = recorder.metrics().lost.clone();
    socket
        .spawn_reader(move |read| {
            let batch = SampleBatch {
                samples: read.samples,
                lost: read.lost,
            };
            match tx.try_send(batch) {
                Ok(()) => true,
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                    lost.inc();
                    true
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
            }
        })
        .context("start the NFLOG reader")?;
    tracing::info!(group = config.group, "flow recording on");
    Ok((recorder, tasks))
}

/// Starts the agent's HTTPS API (`--api-listen`) with the node's certificate; `None` when it is
/// off, or when the node has no certificate (a unix: or http:// controller).
async fn start_api(
    args: &Args,
    pki: Option<&(PathBuf, PathBuf, PathBuf)>,
    agent: std::sync::Arc<seam_agent::Agent<LinuxKernel>>,
    recorder: Option<std::sync::Arc<seam_agent::flows::FlowRecorder>>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let ApiListen::On(addr) = args.api_listen else {
        return Ok(None);
    };
    let Some((ca, cert, key)) = pki else {
        tracing::warn!(
            "the agent API is off: it serves with the node's certificate, which a node gets from an https:// controller"
        );
        return Ok(None);
    };
    let ca_pem =
        std::fs::read_to_string(ca).with_context(|| format!("read the CA {}", ca.display()))?;
    let cert = seam_pki::ReloadingCert::from_files(cert, key)
        .context("load the node certificate for the agent API")?;
    let tls = seam_agent::api::tls_config(&ca_pem, cert.clone())
        .context("TLS settings of the agent API")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on {addr} (--api-listen)"))?;
    let mut registry = seam_agent::metrics::registry(&agent.metrics);
    let mut app_extra = axum::Router::new();
    if let Some(recorder) = recorder {
        recorder.metrics().register(&mut registry);
        app_extra = seam_agent::api::for_readers(seam_agent::flows::router(recorder));
    }
    let app = seam_agent::api::router(agent, registry).merge(app_extra);
    tracing::info!(%addr, "agent API serving");
    Ok(Some(tokio::spawn(seam_agent::api::serve(
        listener,
        tls,
        Some(cert),
        app,
    ))))
}

/// For an https:// controller: a valid node certificate in --cert-dir, joined for with the token
/// when there is none. `None` for unix: and http:// controllers (no client certificate).
async fn node_certificate(
    args: &Args,
    controller: &str,
) -> anyhow::Result<Option<seam_agent::identity::NodePki>> {
    if !controller
        .split(',')
        .any(|e| e.trim().starts_with("https://"))
    {
        return Ok(None);
    }
    let ca = args.ca.clone().context(
        "--ca (the CA that verifies the controller) is required with an https:// controller",
    )?;
    let token = join_token(args)?;
    let pki = seam_agent::identity::NodePki {
        node: args.node.clone(),
        ca,
        dir: args.cert_dir.clone(),
        server_name: args.tls_server_name.clone(),
    };
    let obtained = pki
        .ensure(controller, token.as_deref(), std::time::SystemTime::now())
        .await
        .context("get this node's certificate")?;
    tracing::info!(?obtained, dir = %args.cert_dir.display(), "node certificate ready");
    Ok(Some(pki))
}

/// The join token from --join-token-file or SEAM_JOIN_TOKEN (never from the command line,
/// where other users of the machine could read it).
fn join_token(args: &Args) -> anyhow::Result<Option<String>> {
    if let Some(path) = &args.join_token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read the join token file {}", path.display()))?;
        let token = text.trim().to_string();
        anyhow::ensure!(
            !token.is_empty(),
            "join token file {} is empty",
            path.display()
        );
        return Ok(Some(token));
    }
    Ok(std::env::var("SEAM_JOIN_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

/// Starts the controller inside this process (one-machine mode) and waits until it listens.
async fn start_controller(args: &Args, listener: seam_controller::Listener) -> anyhow::Result<()> {
    if let Some(dir) = args.controller_store.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let store = AnyStore::open_embedded(&args.controller_store)
        .with_context(|| format!("open controller store {}", args.controller_store.display()))?;
    let config = seam_controller::ControllerConfig {
        segment_mode: match args.segment_mode {
            SegmentModeArg::Namespace => seam_controller::SegmentMode::PerNamespace,
            SegmentModeArg::Flat => seam_controller::SegmentMode::Flat,
        },
        ..seam_controller::ControllerConfig::default()
    };
    let socket = match &listener {
        seam_controller::Listener::Unix(path) => Some(path.clone()),
        seam_controller::Listener::Tcp(_) => None,
    };
    tokio::spawn(async move {
        if let Err(e) =
            seam_controller::serve(config, store, vec![listener], std::future::pending()).await
        {
            tracing::error!("embedded controller stopped: {e}");
        }
    });
    if let Some(path) = socket {
        for _ in 0..200 {
            if path.exists() {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        anyhow::bail!(
            "embedded controller did not start listening on {}",
            path.display()
        );
    }
    Ok(())
}
