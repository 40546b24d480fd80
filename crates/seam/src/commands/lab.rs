//! `seam lab …`: build, inspect and remove a lab of network namespaces on this machine, and add
//! pods, gateways, servers, hosts and VMs to it (the work is in `seam_lab`).

use std::path::PathBuf;

use anyhow::Context;
use seam_lab::balance::{self, Transport};
use seam_lab::{Lab, LabSpec, LabStore, LabUser};
use seam_model::{parse_labels, LabelSpaces};

use crate::cli::LabCmd;

/// The directory of the lab's other binaries: next to `seam` itself.
pub(crate) fn bin_dir() -> anyhow::Result<PathBuf> {
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

/// `seam lab up|status`: the lab as JSON, or one line per part.
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
    if let Some(pki) = lab.pki.as_ref().filter(|_| !lab.api.is_empty()) {
        let (cert, _) = pki.user(LabUser::Admin);
        println!(
            "  api {} over TLS on the underlay (CA {}, admin certificate {}; see `seam lab env`)",
            lab.api,
            pki.ca_cert.display(),
            cert.display()
        );
    }
    if lab.store == LabStore::Etcd {
        for (i, r) in lab.replicas.iter().enumerate() {
            let role = if r.pid == 0 {
                "stopped".to_string()
            } else {
                lab.replica_role(i)
                    .unwrap_or_else(|| "not answering".to_string())
            };
            println!(
                "  controller {} {} {} pid {} {role} log {}",
                r.name,
                r.endpoint,
                r.api,
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
        let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "  pod {}/{} on {} ip {} netns {}{}",
            p.namespace,
            p.name,
            p.node,
            p.ip,
            p.netns_path.display(),
            if labels.is_empty() {
                String::new()
            } else {
                format!(" labels {}", labels.join(","))
            }
        );
    }
    Ok(())
}

/// `seam lab env`: the environment that points `seam` at the lab's API over TLS as `user`.
fn print_env(lab: &Lab, user: LabUser) -> anyhow::Result<()> {
    let Some(pki) = lab.pki.as_ref().filter(|_| !lab.api.is_empty()) else {
        anyhow::bail!(
            "lab {} has no API over TLS (one-process mode, or made by an older seam); its \
             controller is the local admin's Unix socket: SEAM_CONTROLLER={}",
            lab.name,
            lab.controller
        );
    };
    let (cert, key) = pki.user(user);
    println!("export SEAM_CONTROLLER={}", lab.api);
    println!("export SEAM_CA={}", pki.ca_cert.display());
    println!("export SEAM_CERT={}", cert.display());
    println!("export SEAM_KEY={}", key.display());
    println!(
        "# the API is on the lab's underlay: e.g. ip netns exec {} seam get nodes",
        lab.underlay_netns
    );
    Ok(())
}

/// Runs one `seam lab` command.
pub(crate) fn run(command: LabCmd) -> anyhow::Result<()> {
    match command {
        LabCmd::Up {
            name,
            nodes,
            segment_mode,
            json,
            one_process,
            store,
            controllers,
            flows,
            segment_encap,
        } => {
            let mut lab = seam_lab::up(&LabSpec {
                name,
                nodes,
                segment_mode,
                controller_args: Vec::new(),
                one_process,
                store,
                controllers,
                flows: flows == "on",
                bin_dir: bin_dir()?,
            })?;
            if segment_encap != "cross-subnet" {
                // seamd's default is cross-subnet: the other mode restarts each agent with it.
                let nodes: Vec<String> = lab.nodes.iter().map(|n| n.name.clone()).collect();
                for node in nodes {
                    lab.topology().set_segment_encap(&node, &segment_encap)?;
                }
            }
            print_lab(&lab, json)
        }
        LabCmd::Down { name } => Ok(seam_lab::down(&name)?),
        LabCmd::Status { name, json } => print_lab(&Lab::load(&name)?, json),
        LabCmd::Env { name, user } => print_env(&Lab::load(&name)?, user),
        LabCmd::PodAdd {
            name,
            node,
            namespace,
            pod,
            labels,
            ports,
        } => {
            // Taken as typed, as `seam lab vm-add` takes them: the agent refuses invalid labels.
            let labels = parse_labels(&labels, LabelSpaces::Kept)?;
            let ports = ports
                .iter()
                .map(|p| seam_lab::parse_container_port(p))
                .collect::<Result<Vec<_>, _>>()?;
            let mut lab = Lab::load(&name)?;
            let p = lab
                .workloads()
                .add_pod_with(&node, &namespace, &pod, &labels, &ports)?;
            println!("{}", serde_json::to_string_pretty(&p)?);
            Ok(())
        }
        LabCmd::PodDel {
            name,
            namespace,
            pod,
        } => Ok(Lab::load(&name)?.workloads().del_pod(&namespace, &pod)?),
        LabCmd::GatewayAdd {
            name,
            node,
            transit_encap,
        } => {
            let mut lab = Lab::load(&name)?;
            let gw = lab.topology().add_gateway(&node)?;
            if transit_encap != "cross-subnet" {
                lab.topology().set_transit_encap(&node, &transit_encap)?;
            }
            println!("{}", serde_json::to_string_pretty(&gw)?);
            Ok(())
        }
        LabCmd::ServerAdd {
            name,
            server,
            address,
            gateway,
            routes,
        } => {
            let mut lab = Lab::load(&name)?;
            let routes: Vec<&str> = routes.iter().map(String::as_str).collect();
            let s = lab
                .workloads()
                .add_server(&server, address, &gateway, &routes)?;
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(())
        }
        LabCmd::InternetAdd {
            name,
            host,
            address,
        } => {
            let h = Lab::load(&name)?
                .workloads()
                .add_internet_host(&host, address)?;
            println!("{}", serde_json::to_string_pretty(&h)?);
            Ok(())
        }
        LabCmd::Hypervisor { name, node } => {
            Ok(Lab::load(&name)?.topology().make_hypervisor(&node)?)
        }
        LabCmd::VmAdd {
            name,
            vm,
            host,
            segment,
            labels,
        } => {
            let options = seam_lab::vm::VmOptions {
                // Taken as typed (no trimming), as `seam lab vm-add` always did.
                labels: parse_labels(&labels, LabelSpaces::Kept)?,
                ..seam_lab::vm::VmOptions::default()
            };
            let info = Lab::load(&name)?
                .workloads()
                .add_vm(&vm, &host, &segment, &options)?;
            println!("{}", serde_json::to_string_pretty(&info)?);
            Ok(())
        }
        LabCmd::Serve { backend, ports } => serve(&backend, &ports),
        LabCmd::Connect {
            address,
            port,
            count,
            udp,
            timeout_ms,
            json,
        } => connect(address, port, count, udp, timeout_ms, json),
        LabCmd::Demo { name, keep } => Ok(seam_lab::demo::run(&name, keep, bin_dir()?)?),
    }
}

/// This process's own network namespace (where `ip netns exec` started it).
const OWN_NETNS: &str = "/proc/self/ns/net";

/// `seam lab serve`: backends on every port, TCP and UDP, until interrupted.
fn serve(backend: &str, ports: &[u16]) -> anyhow::Result<()> {
    let here = std::path::Path::new(OWN_NETNS);
    for port in ports {
        for transport in [Transport::Tcp, Transport::Udp] {
            balance::serve(here, backend, transport, *port)
                .with_context(|| format!("serve {transport:?} port {port}"))?;
        }
    }
    println!(
        "{backend} answering on TCP and UDP {} (interrupt to stop)",
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    loop {
        std::thread::park();
    }
}

/// `seam lab connect`: COUNT attempts, the tally printed.
fn connect(
    address: std::net::Ipv4Addr,
    port: u16,
    count: u32,
    udp: bool,
    timeout_ms: u64,
    json: bool,
) -> anyhow::Result<()> {
    let transport = if udp { Transport::Udp } else { Transport::Tcp };
    let tally = balance::connect_many(
        std::path::Path::new(OWN_NETNS),
        transport,
        address,
        port,
        count,
        std::time::Duration::from_millis(timeout_ms),
    )?;
    if json {
        let out = serde_json::json!({
            "perBackend": tally.per_backend,
            "clientsSeen": tally.clients_seen,
            "failed": tally.failed,
            "refused": tally.refused,
            "slowestMs": tally.slowest.as_millis() as u64,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", tally.summary());
    }
    Ok(())
}
