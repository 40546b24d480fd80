//! `seam-controller`: reads flags, opens the store and serves the controller API until SIGTERM
//! or SIGINT. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ipnet::Ipv4Net;
use seam_controller::{
    ConnectionLimits, Controller, ControllerConfig, Listener, PortRange, ReplicaConfig,
    SegmentMode, ServeOptions, Signing, TcpSecurity, TlsFiles,
};
use seam_store::{AnyStore, EtcdClientCert, EtcdConfig, EtcdTls};

/// EX_USAGE from sysexits.h: the command line or configuration is wrong.
const EXIT_USAGE: u8 = 64;

/// Seam's control plane: serves desired state over a versioned HTTP API.
#[derive(Debug, Parser)]
#[command(name = "seam-controller", version)]
struct Args {
    /// Where to listen: unix:/path (mode 0600) or tcp:ADDR:PORT (mutual TLS 1.3: needs
    /// --tls-cert, --tls-key and --ca); repeatable.
    #[arg(
        long = "listen",
        value_name = "LISTENER",
        default_value = "unix:/run/seam/controller.sock"
    )]
    listen: Vec<Listener>,
    /// The datastore: embedded:/path/file.redb, memory, or etcd:http://host:port[,http://…]
    /// (an etcd cluster shared by several controller replicas, which elect a leader);
    /// etcd:https://… with --etcd-ca, --etcd-cert and --etcd-key.
    #[arg(
        long,
        value_name = "STORE",
        default_value = "embedded:/var/lib/seam/controller.redb"
    )]
    store: StoreSpec,
    /// With an etcd store: a prefix put in front of every key, so several Seam clusters can
    /// share one etcd (e.g. /cluster-a).
    #[arg(long, value_name = "PREFIX", default_value = "")]
    store_prefix: String,
    /// With an etcd:https:// store: the CA certificate (PEM) that signed etcd's certificates.
    #[arg(long, value_name = "PATH")]
    etcd_ca: Option<PathBuf>,
    /// With an etcd:https:// store: the client certificate (PEM) presented to etcd.
    #[arg(long, value_name = "PATH")]
    etcd_cert: Option<PathBuf>,
    /// With an etcd:https:// store: the client certificate's key (PEM).
    #[arg(long, value_name = "PATH")]
    etcd_key: Option<PathBuf>,
    /// With an etcd:https:// store: the name etcd's certificates carry, when the endpoints'
    /// addresses are not in them (etcd reached through a Kubernetes Service's ClusterIP).
    #[arg(long, value_name = "NAME")]
    etcd_server_name: Option<String>,
    /// With an etcd store: where clients reach this replica (published while it leads).
    /// Defaults to the first tcp listener.
    #[arg(long, value_name = "URL")]
    advertise: Option<String>,
    /// With an etcd store: this replica's unique id. Defaults to the advertised address, the
    /// host name and the process id.
    #[arg(long, value_name = "ID")]
    replica_id: Option<String>,
    /// With an etcd store: TTL of the leader lease in milliseconds; a dead leader is replaced
    /// after about this long.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    lease_ttl_ms: u64,
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
    /// The range Services' ClusterIPs are allocated from (outside the pool).
    #[arg(long, value_name = "CIDR", default_value = "10.96.0.0/12")]
    service_cidr: Ipv4Net,
    /// The ports NodePort and LoadBalancer Services' node ports are allocated from.
    #[arg(long, value_name = "FIRST-LAST", default_value = "30000-32767")]
    node_port_range: PortRange,
    /// Requests per second one client (identity; anonymous: peer address) may send, with
    /// bursts of twice as many; 0 turns the limit off. Root on the Unix socket is not limited.
    // Literal, so deploy/CONFIG.md can be checked against it; a test holds it to the library's.
    #[arg(long, value_name = "N", default_value_t = 200)]
    rate_limit: u32,
    /// Watch streams one client may hold open at once; 0 turns the cap off.
    #[arg(long, value_name = "N", default_value_t = 8)]
    max_watches_per_client: u32,
    /// The serving certificate of tcp listeners (PEM; re-read every 5 s, so it rotates without
    /// a restart).
    #[arg(long, value_name = "PATH")]
    tls_cert: Option<PathBuf>,
    /// The serving certificate's key (PEM).
    #[arg(long, value_name = "PATH")]
    tls_key: Option<PathBuf>,
    /// The CA certificate that verifies client certificates (PEM).
    #[arg(long, value_name = "PATH")]
    ca: Option<PathBuf>,
    /// The CA's key (PEM), to sign nodes' certificates at join and renewal; without it join and
    /// renew answer 503.
    #[arg(long, value_name = "PATH")]
    ca_key: Option<PathBuf>,
    /// How long node certificates signed at join and renewal are valid.
    #[arg(long, value_name = "SECONDS", default_value_t = 604800)]
    node_cert_validity_secs: u64,
    /// Serve tcp listeners as PLAIN HTTP, every caller an administrator: for loopback labs and
    /// the TLS-vs-plain benchmark only, never on a network.
    #[arg(long)]
    insecure_plain_tcp: bool,
    /// Open TCP connections at most (also kept below the open-files limit).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_connections: usize,
    /// Log format: text or json.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormat,
}

/// TLS to etcd: --etcd-ca, --etcd-cert and --etcd-key (only with an etcd:https:// store, and
/// then all three).
#[derive(Debug)]
struct EtcdTlsArgs {
    etcd_ca: Option<PathBuf>,
    etcd_cert: Option<PathBuf>,
    etcd_key: Option<PathBuf>,
    etcd_server_name: Option<String>,
}

impl EtcdTlsArgs {
    /// Puts the TLS settings into an etcd:https:// store, reading the files; refuses https
    /// without them and them without https, so neither fails later in an obscure way.
    fn apply(&self, store: StoreSpec) -> Result<StoreSpec, String> {
        let https = matches!(&store, StoreSpec::Etcd(endpoints, _)
            if endpoints.iter().any(|e| e.starts_with("https://")));
        let given = [&self.etcd_ca, &self.etcd_cert, &self.etcd_key];
        if !https {
            if given.iter().any(|p| p.is_some()) || self.etcd_server_name.is_some() {
                return Err(
                    "--etcd-ca, --etcd-cert, --etcd-key and --etcd-server-name are only for an \
                     etcd:https://… store"
                        .to_string(),
                );
            }
            return Ok(store);
        }
        let (Some(ca), Some(cert), Some(key)) = (&self.etcd_ca, &self.etcd_cert, &self.etcd_key)
        else {
            return Err(
                "an etcd:https://… store needs --etcd-ca, --etcd-cert and --etcd-key \
                        (etcd's CA, and this controller's client certificate and key)"
                    .to_string(),
            );
        };
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))
        };
        let tls = EtcdTls {
            ca_pem: read("--etcd-ca", ca)?,
            client: Some(EtcdClientCert {
                cert_pem: read("--etcd-cert", cert)?,
                key_pem: read("--etcd-key", key)?,
            }),
            server_name: self.etcd_server_name.clone(),
        };
        Ok(match store {
            StoreSpec::Etcd(endpoints, _) => StoreSpec::Etcd(endpoints, Some(tls)),
            other => other,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum StoreSpec {
    Memory,
    Embedded(PathBuf),
    /// Client URLs of the etcd members, and TLS settings for https:// ones.
    Etcd(Vec<String>, Option<EtcdTls>),
}

impl std::str::FromStr for StoreSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "memory" {
            return Ok(StoreSpec::Memory);
        }
        if let Some(list) = s.strip_prefix("etcd:") {
            let endpoints: Vec<String> = list.split(',').map(str::to_string).collect();
            let valid = |e: &String| {
                e.strip_prefix("http://")
                    .or_else(|| e.strip_prefix("https://"))
                    .is_some_and(|rest| rest.contains(':') && !rest.starts_with(':'))
            };
            let https = endpoints
                .iter()
                .filter(|e| e.starts_with("https://"))
                .count();
            if endpoints.iter().all(valid) && (https == 0 || https == endpoints.len()) {
                return Ok(StoreSpec::Etcd(endpoints, None));
            }
            return Err(format!(
                "invalid store {s:?}: expected etcd:http://host:port[,http://host:port...] or etcd:https://… (one scheme for all)"
            ));
        }
        match s.strip_prefix("embedded:") {
            Some(path) if !path.is_empty() => Ok(StoreSpec::Embedded(PathBuf::from(path))),
            _ => Err(format!(
                "invalid store {s:?}: expected embedded:/path/file.redb, memory or etcd:http://host:port[,...]"
            )),
        }
    }
}

/// The replica identity for an etcd store (None for the local stores: one controller).
fn replica_config(args: &Args) -> Option<ReplicaConfig> {
    if !matches!(args.store, StoreSpec::Etcd(..)) {
        return None;
    }
    let advertise = args.advertise.clone().unwrap_or_else(|| {
        args.listen
            .iter()
            .find_map(|l| match l {
                // A TLS listener is reached with https://.
                Listener::Tcp(addr) if args.tls_cert.is_some() => Some(format!("https://{addr}")),
                Listener::Tcp(addr) => Some(format!("http://{addr}")),
                Listener::Unix(_) => None,
            })
            .or_else(|| args.listen.first().map(|l| l.to_string()))
            .unwrap_or_default()
    });
    let id = args.replica_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{advertise}@{}#{}", host.trim(), std::process::id())
    });
    Some(ReplicaConfig {
        id,
        advertise,
        lease_ttl: Duration::from_millis(args.lease_ttl_ms),
    })
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
        service_cidr: args.service_cidr,
        node_port_range: args.node_port_range,
    };
    // All configuration is checked before anything is opened or bound.
    if let Err(e) = config.validate() {
        eprintln!("seam-controller: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    if args.lease_ttl_ms < 1000 {
        eprintln!("seam-controller: invalid lease-ttl-ms {}: expected at least 1000 (etcd counts whole seconds)", args.lease_ttl_ms);
        return ExitCode::from(EXIT_USAGE);
    }
    let options = match serve_options(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("seam-controller: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let signing = match (&args.ca, &args.ca_key) {
        (Some(ca), Some(key)) => match seam_pki::Ca::load(ca, key) {
            Ok(ca) => Some(Signing {
                ca: std::sync::Arc::new(ca),
                node_cert_validity: Duration::from_secs(args.node_cert_validity_secs),
            }),
            Err(e) => {
                eprintln!("seam-controller: invalid CA for signing: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        (None, Some(_)) => {
            eprintln!("seam-controller: invalid --ca-key without --ca: expected both");
            return ExitCode::from(EXIT_USAGE);
        }
        _ => None,
    };
    match seam_controller::raise_open_files_limit() {
        Ok(limit) => tracing::debug!(limit, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    let replica = replica_config(&args);
    let limits = seam_controller::Limits {
        rate_limit: args.rate_limit,
        max_watches_per_client: args.max_watches_per_client,
    };
    let etcd_tls = EtcdTlsArgs {
        etcd_ca: args.etcd_ca,
        etcd_cert: args.etcd_cert,
        etcd_key: args.etcd_key,
        etcd_server_name: args.etcd_server_name,
    };
    let store = match etcd_tls.apply(args.store) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("seam-controller: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(Startup {
        config,
        limits,
        store,
        store_prefix: args.store_prefix,
        replica,
        listen: args.listen,
        options,
        signing,
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seam-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How tcp listeners are served, from the TLS flags; an error names what is missing.
fn serve_options(args: &Args) -> Result<ServeOptions, String> {
    let tcp = match (&args.tls_cert, &args.tls_key, &args.ca) {
        (Some(cert), Some(key), Some(ca)) => {
            if args.insecure_plain_tcp {
                return Err(
                    "invalid --insecure-plain-tcp together with --tls-cert/--tls-key: expected one of them"
                        .to_string(),
                );
            }
            TcpSecurity::Tls(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })
        }
        (None, None, _) if args.insecure_plain_tcp => TcpSecurity::InsecurePlain,
        (None, None, _) => TcpSecurity::Refuse,
        _ => {
            return Err(
                "invalid TLS flags: expected --tls-cert, --tls-key and --ca together".to_string(),
            )
        }
    };
    if tcp == TcpSecurity::Refuse {
        if let Some(l) = args.listen.iter().find(|l| matches!(l, Listener::Tcp(_))) {
            return Err(format!(
                "invalid listener {l}: tcp listeners need TLS: give --tls-cert, --tls-key and --ca (or --insecure-plain-tcp, for a loopback lab only)"
            ));
        }
    }
    if args.max_connections == 0 {
        return Err("invalid max-connections 0: expected at least 1".to_string());
    }
    Ok(ServeOptions {
        tcp,
        limits: ConnectionLimits {
            max_connections: args.max_connections,
            ..ConnectionLimits::default()
        },
    })
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

/// Everything checked from the flags, before anything is opened or bound.
struct Startup {
    config: ControllerConfig,
    limits: seam_controller::Limits,
    store: StoreSpec,
    store_prefix: String,
    replica: Option<ReplicaConfig>,
    listen: Vec<Listener>,
    options: ServeOptions,
    signing: Option<Signing>,
}

fn run(startup: Startup) -> anyhow::Result<()> {
    let Startup {
        config,
        limits,
        store,
        store_prefix,
        replica,
        listen,
        options,
        signing,
    } = startup;
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
            // Connecting is lazy: the controller starts while etcd is down and its election
            // retries with backoff until etcd answers.
            StoreSpec::Etcd(endpoints, tls) => AnyStore::connect_etcd(EtcdConfig {
                endpoints,
                namespace: store_prefix,
                tls,
            })
            .await
            .context("connecting to etcd")?,
        };
        let controller = match replica {
            Some(replica) => {
                tracing::info!(id = %replica.id, advertise = %replica.advertise, "running as a replica; electing a leader");
                Controller::replicated(config, store, replica)
            }
            None => Controller::new(config, store),
        }
        .context("checking the configuration")?
        .with_limits(limits);
        let controller = match signing {
            Some(signing) => controller.with_signing(signing),
            None => controller,
        };
        let shutdown = shutdown_signal()?;
        seam_controller::serve_controller_with(controller, listen, options, shutdown)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_specs_parse() {
        assert_eq!("memory".parse(), Ok(StoreSpec::Memory));
        assert_eq!(
            "etcd:http://127.0.0.1:2379,http://10.0.0.2:2379".parse(),
            Ok(StoreSpec::Etcd(
                vec![
                    "http://127.0.0.1:2379".to_string(),
                    "http://10.0.0.2:2379".to_string()
                ],
                None
            ))
        );
        for bad in [
            "etcd:",
            "etcd:127.0.0.1:2379",
            "etcd:http://a:1,",
            "etcd:http://a:1,https://b:2",
            "embedded:",
            "redis:x",
        ] {
            assert!(bad.parse::<StoreSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn flag_defaults_are_the_librarys() {
        let args = Args::try_parse_from(["seam-controller"]).unwrap();
        assert_eq!(args.rate_limit, seam_controller::DEFAULT_RATE_LIMIT);
        assert_eq!(
            args.max_watches_per_client,
            seam_controller::DEFAULT_MAX_WATCHES_PER_CLIENT
        );
        assert_eq!(
            args.max_connections,
            seam_controller::DEFAULT_MAX_CONNECTIONS
        );
        let defaults = ControllerConfig::default();
        assert_eq!(args.service_cidr, defaults.service_cidr);
        assert_eq!(args.node_port_range, defaults.node_port_range);
    }

    fn tls_args(ca: Option<&str>, cert: Option<&str>, key: Option<&str>) -> EtcdTlsArgs {
        EtcdTlsArgs {
            etcd_ca: ca.map(PathBuf::from),
            etcd_cert: cert.map(PathBuf::from),
            etcd_key: key.map(PathBuf::from),
            etcd_server_name: None,
        }
    }

    #[test]
    fn etcd_https_needs_all_three_tls_files_and_they_need_https() {
        let https: StoreSpec = "etcd:https://127.0.0.1:2379".parse().unwrap();
        let http: StoreSpec = "etcd:http://127.0.0.1:2379".parse().unwrap();
        let err = tls_args(None, None, None).apply(https.clone()).unwrap_err();
        assert!(
            err.contains("--etcd-ca, --etcd-cert and --etcd-key"),
            "{err}"
        );
        let err = tls_args(Some("/ca"), None, None)
            .apply(https.clone())
            .unwrap_err();
        assert!(err.contains("needs --etcd-ca"), "{err}");
        let err = tls_args(Some("/ca"), None, None)
            .apply(http.clone())
            .unwrap_err();
        assert!(err.contains("only for an etcd:https"), "{err}");
        assert_eq!(tls_args(None, None, None).apply(http.clone()), Ok(http));
        assert_eq!(
            tls_args(None, None, None).apply(StoreSpec::Memory),
            Ok(StoreSpec::Memory)
        );

        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        for (name, text) in [("ca", "CA PEM"), ("cert", "CERT PEM"), ("key", "KEY PEM")] {
            std::fs::write(path(name), text).unwrap();
        }
        let missing = tls_args(Some(&path("ca")), Some(&path("cert")), Some(&path("nope")));
        let err = missing.apply(https.clone()).unwrap_err();
        assert!(err.contains("cannot read --etcd-key"), "{err}");
        let ok = tls_args(Some(&path("ca")), Some(&path("cert")), Some(&path("key")));
        let StoreSpec::Etcd(endpoints, Some(tls)) = ok.apply(https).unwrap() else {
            panic!("expected an etcd store with TLS");
        };
        assert_eq!(endpoints, ["https://127.0.0.1:2379"]);
        assert_eq!(tls.ca_pem, "CA PEM");
        let client = tls.client.unwrap();
        assert_eq!(
            (client.cert_pem.as_str(), client.key_pem.as_str()),
            ("CERT PEM", "KEY PEM")
        );
    }
}
