//! `seam`, the one user-facing command: cluster objects and the lab.

mod cli;
mod demo;
mod external_cmd;
mod segment_cmd;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use seam_lab::{Lab, LabSpec, LabStore};

#[derive(Parser, Debug)]
#[command(
    name = "seam",
    version,
    about = "Seam: one network and one policy for pods, VMs and servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Where the controller is.
#[derive(clap::Args, Debug, Clone)]
struct Target {
    /// Controller endpoint (unix:/path or http://host:port); defaults to the lab's.
    #[arg(long, env = "SEAM_CONTROLLER")]
    controller: Option<String>,
    /// Lab whose controller to ask when --controller is not given.
    #[arg(long, default_value = "seam")]
    lab: String,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// One line per object.
    Table,
    /// JSON (a list).
    Json,
    /// YAML (one document per object).
    Yaml,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build, inspect and remove a lab of network namespaces on this machine.
    Lab {
        #[command(subcommand)]
        command: LabCmd,
    },
    /// Create or replace objects from a file (YAML documents or JSON): NetworkPolicy,
    /// AdminNetworkPolicy, BaselineAdminNetworkPolicy, EndpointGroup, Contract, v1 Namespace,
    /// Tenant.
    /// Every document is validated first, then all are written in one transaction on the
    /// controller: one bad document, or one the controller refuses, and nothing is applied.
    Apply {
        /// The file, or - for standard input.
        #[arg(short = 'f', long = "filename")]
        file: String,
        #[command(flatten)]
        target: Target,
    },
    /// List objects of a kind: policies, networkpolicies, adminnetworkpolicies,
    /// baselineadminnetworkpolicies, endpointgroups, contracts, namespaces, tenants, nodes,
    /// segments, blocks, endpoints.
    Get {
        /// The kind (plural).
        kind: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
        #[command(flatten)]
        target: Target,
    },
    /// Delete one object: KIND is a policy kind (networkpolicy, contract, ...; singular or
    /// plural), namespace or tenant.
    Delete {
        /// The kind.
        kind: String,
        /// The name.
        name: String,
        /// The namespace (NetworkPolicy only).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Explain the policy verdict for a new connection, per direction, from the engine.
    Explain {
        /// Source: namespace/name of an endpoint, or an IPv4 address.
        src: String,
        /// Destination: namespace/name of an endpoint, or an IPv4 address.
        dst: String,
        /// PORT/PROTO: 80/tcp, 53/udp, 8/icmp (ICMP type), or just a TCP port.
        port: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// External endpoints: servers outside the overlay reached through a gateway node, no NAT.
    External {
        #[command(subcommand)]
        command: external_cmd::ExternalCmd,
    },
    /// Segments: create or replace one from a file, turn its SNAT on or off.
    Segment {
        #[command(subcommand)]
        command: segment_cmd::SegmentCmd,
    },
    /// VMs on hypervisor hosts: attach, detach, move, delete, list.
    Vm {
        #[command(subcommand)]
        command: vm::VmCmd,
    },
    /// Tenant operations (OpenShift's `oc adm pod-network`): join, isolate, make-global.
    Tenant {
        #[command(subcommand)]
        command: TenantCmd,
    },
    /// Conformance suites.
    Conformance {
        #[command(subcommand)]
        command: ConformanceCmd,
    },
}

#[derive(Subcommand, Debug)]
enum TenantCmd {
    /// NS joins the tenant of namespace INTO (INTO is unchanged).
    Join {
        /// The namespace that moves.
        namespace: String,
        /// The namespace whose tenant it joins.
        into: String,
        #[command(flatten)]
        target: Target,
    },
    /// NS gets a tenant of its own (named after it), with the mode of the tenant it leaves.
    Isolate {
        /// The namespace.
        namespace: String,
        #[command(flatten)]
        target: Target,
    },
    /// NS gets a global tenant of its own: it reaches and is reached by every tenant.
    MakeGlobal {
        /// The namespace.
        namespace: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand, Debug)]
enum ConformanceCmd {
    /// Kubernetes NetworkPolicy and AdminNetworkPolicy cases (cases.json / anp_cases.json).
    Netpol {
        /// The cases file; the kind of case is detected from its shape.
        #[arg(long)]
        cases: PathBuf,
        /// The model; default: model.json next to the cases file.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Check with real packets through the dataplane of a fresh lab (needs root): the model's
        /// pods, each case's policies applied through the API, every pair probed.
        #[arg(long)]
        dataplane: bool,
        /// --dataplane: name of the lab to build (removed afterwards).
        #[arg(long, default_value = "conf")]
        lab_name: String,
        /// --dataplane: number of nodes the pods are spread over.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// --dataplane: probe timeout in milliseconds (a denied probe waits this long).
        #[arg(long, default_value_t = 1000)]
        probe_timeout_ms: u64,
        /// --dataplane: keep the lab afterwards.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Subcommand, Debug)]
enum LabCmd {
    /// Start a lab: underlay, controller, one agent per node.
    Up {
        #[arg(long, default_value = "seam")]
        name: String,
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// `namespace` (a segment per namespace, NSX style) or `flat` (one segment).
        #[arg(long, default_value = "namespace")]
        segment_mode: String,
        /// Print the lab description as JSON.
        #[arg(long)]
        json: bool,
        /// One-machine mode: node n1's seamd also runs the controller (no separate process).
        #[arg(long)]
        one_process: bool,
        /// The controller's datastore: `embedded` (one controller, a redb file) or `etcd` (a
        /// 3-member etcd cluster in the underlay namespace, shared by --controllers replicas
        /// that elect a leader; agents are given every replica).
        #[arg(long, default_value = "embedded")]
        store: LabStore,
        /// Number of seam-controller replicas (1 with the embedded store, 1..=5 with etcd).
        #[arg(long, default_value_t = 1)]
        controllers: usize,
    },
    /// Stop a lab and remove everything it made (also after a crash).
    Down {
        #[arg(long, default_value = "seam")]
        name: String,
    },
    /// Describe a running lab.
    Status {
        #[arg(long, default_value = "seam")]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Create a pod (a namespace attached through seam-cni ADD).
    PodAdd {
        #[arg(long, default_value = "seam")]
        name: String,
        #[arg(long)]
        node: String,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        pod: String,
    },
    /// Delete a pod (seam-cni DEL, then its namespace).
    PodDel {
        #[arg(long, default_value = "seam")]
        name: String,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        pod: String,
    },
    /// Add a gateway node (seamd --role gateway) on the underlay and on the lab's external
    /// network (203.0.113.0/24).
    GatewayAdd {
        #[arg(long, default_value = "seam")]
        name: String,
        /// The gateway node's name.
        #[arg(long, default_value = "gw1")]
        node: String,
        /// Its `seamd --transit-encap`: `cross-subnet` routes to and from the lab's nodes (one
        /// underlay subnet) without encapsulation, `always` through the transit VXLAN.
        #[arg(long, default_value = "cross-subnet", value_parser = seam_lab::gateway::TRANSIT_ENCAP_MODES)]
        transit_encap: String,
    },
    /// Add a bare-metal server on the external network, with static routes to the pod and VM
    /// prefixes via its gateway (`ip route add PREFIX via GATEWAY`).
    ServerAdd {
        #[arg(long, default_value = "seam")]
        name: String,
        /// The server's name.
        #[arg(long)]
        server: String,
        /// Its address on the external network (203.0.113.0/24).
        #[arg(long)]
        address: std::net::Ipv4Addr,
        /// The gateway node its routes point at.
        #[arg(long, default_value = "gw1")]
        gateway: String,
        /// Prefixes routed via the gateway (the controller's pool by default).
        #[arg(long = "route", default_value = seam_lab::gateway::DEFAULT_POOL)]
        routes: Vec<String>,
    },
    /// Add a host on the lab's "internet" (198.51.100.0/24): behind a router on the external
    /// network that every gateway uses as its default route, with no route to the pod prefixes,
    /// so pods reach it only from segments with SNAT on (`seam segment snat`).
    InternetAdd {
        #[arg(long, default_value = "seam")]
        name: String,
        /// The host's name.
        #[arg(long)]
        host: String,
        /// Its address (198.51.100.0/24, not .1: the router).
        #[arg(long)]
        address: std::net::Ipv4Addr,
    },
    /// Make a node a hypervisor host (restarts its seamd with --role hypervisor).
    Hypervisor {
        #[arg(long, default_value = "seam")]
        name: String,
        /// The node.
        #[arg(long)]
        node: String,
    },
    /// Start a lab VM (a namespace behind a veth named as Seam names the VM's port) on a
    /// hypervisor node and attach it through the API (`seam vm attach`).
    VmAdd {
        #[arg(long, default_value = "seam")]
        name: String,
        /// The VM's name.
        #[arg(long)]
        vm: String,
        /// The hypervisor node.
        #[arg(long)]
        host: String,
        /// The segment.
        #[arg(long)]
        segment: String,
        /// Labels: k=v[,k=v…].
        #[arg(long, default_value = "")]
        labels: String,
    },
    /// The demo: 2 nodes, 2 namespaces with 2 pods each, a measured connectivity matrix.
    Demo {
        #[arg(long, default_value = "seamdemo")]
        name: String,
        /// Keep the lab up afterwards.
        #[arg(long)]
        keep: bool,
    },
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locate the seam binary")?;
    let dir = exe
        .parent()
        .map(PathBuf::from)
        .context("seam binary has no directory")?;
    for needed in ["seamd", "seam-controller", "seam-cni"] {
        anyhow::ensure!(
            dir.join(needed).exists(),
            "{} not found next to seam (build the workspace: cargo build --release)",
            needed
        );
    }
    Ok(dir)
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("seam: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_lab(lab: &Lab, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(lab)?);
        return Ok(());
    }
    println!(
        "lab {} (state {}), controller {}",
        lab.name,
        lab.dir.display(),
        lab.controller
    );
    if lab.store == LabStore::Etcd {
        for (i, r) in lab.replicas.iter().enumerate() {
            let role = if r.pid == 0 {
                "stopped".to_string()
            } else {
                lab.replica_role(i)
                    .unwrap_or_else(|| "not answering".to_string())
            };
            println!(
                "  controller {} {} pid {} {role} log {}",
                r.name,
                r.endpoint,
                r.pid,
                r.log.display()
            );
        }
        for m in &lab.etcd {
            println!(
                "  etcd {} {} pid {} data {}",
                m.name,
                m.client_url,
                m.pid,
                m.data_dir.display()
            );
        }
    }
    for n in &lab.nodes {
        println!(
            "  node {} netns {} underlay {} agent {} cni {}",
            n.name,
            n.netns,
            n.underlay_ip,
            n.agent_socket.display(),
            n.cni_config.display()
        );
    }
    for p in &lab.pods {
        println!(
            "  pod {}/{} on {} ip {} netns {}",
            p.namespace,
            p.name,
            p.node,
            p.ip,
            p.netns_path.display()
        );
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Lab { command } => run_lab(command)?,
        Cmd::Apply { file, target } => cli::apply(&file, &target)?,
        Cmd::Get {
            kind,
            output,
            target,
        } => cli::get(&kind, output, &target)?,
        Cmd::Delete {
            kind,
            name,
            namespace,
            target,
        } => cli::delete(&kind, &name, namespace.as_deref(), &target)?,
        Cmd::Explain {
            src,
            dst,
            port,
            json,
            target,
        } => cli::explain(&src, &dst, &port, json, &target)?,
        Cmd::External { command } => external_cmd::run(command)?,
        Cmd::Segment { command } => segment_cmd::run(command)?,
        Cmd::Vm { command } => vm::run(command)?,
        Cmd::Tenant { command } => {
            let (op, target) = match command {
                TenantCmd::Join {
                    namespace,
                    into,
                    target,
                } => (cli::TenantOp::Join { namespace, into }, target),
                TenantCmd::Isolate { namespace, target } => {
                    (cli::TenantOp::Isolate(namespace), target)
                }
                TenantCmd::MakeGlobal { namespace, target } => {
                    (cli::TenantOp::MakeGlobal(namespace), target)
                }
            };
            cli::tenant(op, &target)?
        }
        Cmd::Conformance {
            command:
                ConformanceCmd::Netpol {
                    cases,
                    model,
                    dataplane,
                    lab_name,
                    nodes,
                    probe_timeout_ms,
                    keep,
                },
        } => {
            let dataplane = if dataplane {
                Some(seam_lab::conformance::Options {
                    lab: lab_name,
                    nodes,
                    timeout: std::time::Duration::from_millis(probe_timeout_ms),
                    keep,
                    converge: std::time::Duration::from_secs(20),
                })
            } else {
                None
            };
            return cli::conformance(&cases, model.as_deref(), dataplane.as_ref());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_lab(command: LabCmd) -> anyhow::Result<()> {
    match command {
        LabCmd::Up {
            name,
            nodes,
            segment_mode,
            json,
            one_process,
            store,
            controllers,
        } => {
            let lab = seam_lab::up(&LabSpec {
                name,
                nodes,
                segment_mode,
                controller_args: Vec::new(),
                one_process,
                store,
                controllers,
                bin_dir: bin_dir()?,
            })?;
            print_lab(&lab, json)
        }
        LabCmd::Down { name } => Ok(seam_lab::down(&name)?),
        LabCmd::Status { name, json } => print_lab(&Lab::load(&name)?, json),
        LabCmd::PodAdd {
            name,
            node,
            namespace,
            pod,
        } => {
            let mut lab = Lab::load(&name)?;
            let p = lab.add_pod(&node, &namespace, &pod)?;
            println!("{}", serde_json::to_string_pretty(&p)?);
            Ok(())
        }
        LabCmd::PodDel {
            name,
            namespace,
            pod,
        } => Ok(Lab::load(&name)?.del_pod(&namespace, &pod)?),
        LabCmd::GatewayAdd {
            name,
            node,
            transit_encap,
        } => external_cmd::lab_gateway_add(&name, &node, &transit_encap),
        LabCmd::ServerAdd {
            name,
            server,
            address,
            gateway,
            routes,
        } => external_cmd::lab_server_add(&name, &server, address, &gateway, &routes),
        LabCmd::InternetAdd {
            name,
            host,
            address,
        } => {
            let h = Lab::load(&name)?.add_internet_host(&host, address)?;
            println!("{}", serde_json::to_string_pretty(&h)?);
            Ok(())
        }
        LabCmd::Hypervisor { name, node } => Ok(Lab::load(&name)?.make_hypervisor(&node)?),
        LabCmd::VmAdd {
            name,
            vm,
            host,
            segment,
            labels,
        } => {
            let mut options = seam_lab::vm::VmOptions::default();
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("label {pair:?} is not k=v"))?;
                options.labels.insert(k.to_string(), v.to_string());
            }
            let info = Lab::load(&name)?.add_vm(&vm, &host, &segment, &options)?;
            println!("{}", serde_json::to_string_pretty(&info)?);
            Ok(())
        }
        LabCmd::Demo { name, keep } => demo::run(&name, keep, bin_dir()?),
    }
}
