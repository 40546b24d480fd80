//! `seam`, the one user-facing command: cluster objects and the lab.

mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use seam_lab::{Lab, LabSpec};

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

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build, inspect and remove a lab of network namespaces on this machine.
    Lab {
        #[command(subcommand)]
        command: LabCmd,
    },
    /// List objects of a kind from the controller: nodes, segments, blocks, endpoints.
    Get {
        /// The kind (plural).
        kind: String,
        /// Controller endpoint (unix:/path or http://host:port); defaults to the lab's.
        #[arg(long, env = "SEAM_CONTROLLER")]
        controller: Option<String>,
        /// Lab whose controller to ask when --controller is not given.
        #[arg(long, default_value = "seam")]
        lab: String,
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
        Ok(()) => ExitCode::SUCCESS,
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

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Lab { command } => match command {
            LabCmd::Up {
                name,
                nodes,
                segment_mode,
                json,
                one_process,
            } => {
                let lab = seam_lab::up(&LabSpec {
                    name,
                    nodes,
                    segment_mode,
                    controller_args: Vec::new(),
                    one_process,
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
            LabCmd::Demo { name, keep } => demo::run(&name, keep, bin_dir()?),
        },
        Cmd::Get {
            kind,
            controller,
            lab,
        } => {
            let endpoint = match controller {
                Some(c) => c,
                None => Lab::load(&lab)?.controller,
            };
            let client = seam_client::ControllerClient::new(&endpoint)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let value = rt.block_on(async {
                anyhow::Ok(match kind.as_str() {
                    "nodes" => serde_json::to_value(client.list_nodes().await?)?,
                    "segments" => serde_json::to_value(client.list_segments().await?)?,
                    "blocks" => serde_json::to_value(client.list_blocks().await?)?,
                    "endpoints" => serde_json::to_value(client.list_endpoints().await?)?,
                    other => anyhow::bail!(
                        "unknown kind {other:?}: use nodes, segments, blocks or endpoints"
                    ),
                })
            })?;
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
    }
}
