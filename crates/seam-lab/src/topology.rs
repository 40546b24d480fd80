//! The lab's topology: bringing a lab up (an underlay namespace holding a bridge on
//! 198.18.0.0/15, one namespace per node joined to it by a veth, the controller, etcd and the
//! agents started through [`crate::process`]) and down again, also after a crash.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::pki::{self, LabPki};
use crate::process::{gone, kill, run, spawn_agent, wait_for, wait_for_agent};
use crate::state::{io_err, state_dir, EtcdMemberInfo, Lab, LabStore, NodeInfo, ReplicaInfo};

/// The CNI network name the lab uses.
pub const NETWORK: &str = "seam";

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Lab name; prefixes every namespace (`<name>-n1`, `<name>-ul`, …).
    pub name: String,
    /// Number of nodes.
    pub nodes: usize,
    /// `namespace` (a segment per namespace) or `flat`.
    pub segment_mode: String,
    /// Directory holding `seamd`, `seam-controller` and `seam-cni`.
    pub bin_dir: PathBuf,
    /// Extra `seam-controller` flags (e.g. `--pool 10.250.0.0/28`).
    pub controller_args: Vec<String>,
    /// One-machine mode: node n1's `seamd` also runs the controller (`--with-controller`)
    /// instead of a separate `seam-controller` process.
    pub one_process: bool,
    /// The controller's datastore.
    pub store: LabStore,
    /// Number of `seam-controller` replicas (1 with the embedded store; 1..=5 with etcd).
    pub controllers: usize,
    /// The agents record flows (`seamd --flows on`, default sampling).
    pub flows: bool,
}

/// The lab's topology after `up`: node roles (gateways, hypervisor hosts), the external network
/// and the dataplane of the nodes. Reached through [`Lab::topology`]; gateway nodes are kept in
/// `lab.json` with the others and in `external.json`.
#[derive(Debug)]
pub struct Topology<'a> {
    pub(crate) lab: &'a mut Lab,
}

impl Lab {
    /// The lab's topology: gateways, hypervisor hosts, the external network.
    pub fn topology(&mut self) -> Topology<'_> {
        Topology { lab: self }
    }
}

/// Number of etcd members of a lab with `--store etcd`.
pub const ETCD_MEMBERS: usize = 3;

/// `ip -n NETNS args…` — the lab wires its imitation of a physical network with iproute2; the
/// agent itself never shells out (it uses netlink).
pub(crate) fn ip(netns: &str, args: &[&str]) -> Result<()> {
    run(Command::new("ip").arg("-n").arg(netns).args(args))
}

/// Builds and starts a lab. On any failure everything made so far is removed again.
pub fn up(spec: &LabSpec) -> Result<Lab> {
    if spec.nodes == 0 || spec.nodes > 200 {
        return Err(LabError::Invalid(format!(
            "--nodes must be 1..=200, got {}",
            spec.nodes
        )));
    }
    let valid = !spec.name.is_empty()
        && spec.name.len() <= 16
        && spec
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(LabError::Invalid(format!(
            "lab name {:?} must be 1-16 of a-z, 0-9, '-'",
            spec.name
        )));
    }
    let controllers_ok = match spec.store {
        LabStore::Embedded => spec.controllers == 1,
        LabStore::Etcd => (1..=5).contains(&spec.controllers) && !spec.one_process,
    };
    if !controllers_ok {
        return Err(LabError::Invalid(format!(
            "--controllers {} with --store {}: the embedded store serves exactly 1 controller, \
             etcd 1..=5 (and no --one-process)",
            spec.controllers, spec.store
        )));
    }
    if state_dir(&spec.name).join("lab.json").exists() || !leftovers(&spec.name).is_empty() {
        return Err(LabError::AlreadyUp(spec.name.clone()));
    }
    match build(spec) {
        Ok(lab) => Ok(lab),
        Err(e) => {
            let _ = down(&spec.name);
            Err(e)
        }
    }
}

fn build(spec: &LabSpec) -> Result<Lab> {
    let dir = state_dir(&spec.name);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let underlay = format!("{}-ul", spec.name);
    seam_linux::netns::create(&underlay)?;
    ip(&underlay, &["link", "set", "lo", "up"])?;
    ip(&underlay, &["link", "add", "ul0", "type", "bridge"])?;
    ip(
        &underlay,
        &[
            "addr",
            "add",
            &format!("{UNDERLAY_BRIDGE}/15"),
            "dev",
            "ul0",
        ],
    )?;
    ip(&underlay, &["link", "set", "ul0", "up"])?;

    let controller_sock = dir.join("controller.sock");
    let cni_path = format!("{}:/usr/lib/cni:/opt/cni/bin", spec.bin_dir.display());
    let mut lab = Lab {
        name: spec.name.clone(),
        dir: dir.clone(),
        underlay_netns: underlay.clone(),
        controller: format!("unix:{}", controller_sock.display()),
        controller_pid: 0,
        controller_log: dir.join("controller.log"),
        cni_plugin: spec.bin_dir.join("seam-cni"),
        cni_path,
        bin_dir: spec.bin_dir.clone(),
        one_process: spec.one_process,
        flows: spec.flows,
        segment_mode: spec.segment_mode.clone(),
        store: spec.store,
        controller_args: spec.controller_args.clone(),
        api: String::new(),
        pki: None,
        replicas: Vec::new(),
        etcd: Vec::new(),
        nodes: Vec::new(),
        pods: Vec::new(),
    };
    // The lab's CA and certificates first: the controller serves them from its start. In
    // one-process mode the embedded controller serves its Unix socket only (so no address).
    let api_addresses: Vec<Ipv4Addr> = match spec.store {
        _ if spec.one_process => Vec::new(),
        LabStore::Embedded => vec![UNDERLAY_BRIDGE],
        LabStore::Etcd => (1..=spec.controllers).map(replica_address).collect(),
    };
    let lab_ca = LabPki::open(&dir)?;
    lab.pki = Some(pki::issue_api(&lab_ca, &api_addresses)?);
    let api_of = |address: Ipv4Addr| format!("https://{address}:{}", pki::API_PORT);
    if spec.store == LabStore::Etcd {
        // etcd speaks only mutual TLS, to clients and to its peers, with the lab CA's
        // certificates: one per member for its address, one for the controllers.
        let pki = &lab_ca;
        pki.issue_server(pki::ETCD_CLIENT, &[], &[])?;
        for i in 1..=ETCD_MEMBERS {
            let address = etcd_address(i);
            ip(
                &underlay,
                &["addr", "add", &format!("{address}/15"), "dev", "ul0"],
            )?;
            let name = format!("e{i}");
            // etcd checks a peer's certificate against the address the connection comes
            // from, and members share the underlay's bridge, whose first address
            // (198.18.0.1) is the source the kernel picks for their peer connections.
            let ips = [IpAddr::V4(address), IpAddr::V4(UNDERLAY_BRIDGE)];
            pki.issue_server(&format!("etcd-{name}"), &[], &ips)?;
            lab.etcd.push(EtcdMemberInfo {
                client_url: format!("https://{address}:2379"),
                peer_url: format!("https://{address}:2380"),
                data_dir: dir.join("etcd").join(&name),
                log: dir.join(format!("etcd-{name}.log")),
                name,
                pid: 0,
            });
        }
        lab.save()?;
        for i in 0..lab.etcd.len() {
            lab.processes().start_etcd(i)?;
        }
        let mut endpoints = Vec::new();
        for i in 1..=spec.controllers {
            let name = format!("c{i}");
            let socket = dir.join(format!("controller-{name}.sock"));
            endpoints.push(format!("unix:{}", socket.display()));
            let address = replica_address(i);
            ip(
                &underlay,
                &["addr", "add", &format!("{address}/15"), "dev", "ul0"],
            )?;
            lab.replicas.push(ReplicaInfo {
                endpoint: format!("unix:{}", socket.display()),
                api: api_of(address),
                log: dir.join(format!("controller-{name}.log")),
                name,
                pid: 0,
            });
        }
        lab.controller = endpoints.join(",");
        lab.api = lab
            .replicas
            .iter()
            .map(|r| r.api.as_str())
            .collect::<Vec<_>>()
            .join(",");
        lab.controller_log = lab.replicas[0].log.clone();
        lab.save()?;
        for i in 0..lab.replicas.len() {
            lab.processes().start_controller(i)?;
        }
        lab.controller_pid = lab.replicas[0].pid;
        lab.save()?;
        lab.wait_for_leader(Duration::from_secs(30))?;
    } else if !spec.one_process {
        lab.api = api_of(UNDERLAY_BRIDGE);
        lab.replicas.push(ReplicaInfo {
            name: "c1".into(),
            endpoint: lab.controller.clone(),
            api: lab.api.clone(),
            log: lab.controller_log.clone(),
            pid: 0,
        });
        lab.processes().start_controller(0)?;
        lab.controller_pid = lab.replicas[0].pid;
        lab.save()?;
        wait_for("the controller socket", Duration::from_secs(10), || {
            controller_sock.exists()
        })?;
    }
    lab.save()?;

    for i in 1..=spec.nodes {
        let name = format!("n{i}");
        let netns = format!("{}-{name}", spec.name);
        let netns_path = seam_linux::netns::create(&netns)?;
        let underlay_ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 10)) + i as u32);
        let port = name.clone();
        ip(
            &underlay,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
        )?;
        ip(&underlay, &["link", "set", &port, "master", "ul0", "up"])?;
        ip(&netns, &["link", "set", "lo", "up"])?;
        ip(
            &netns,
            &["addr", "add", &format!("{underlay_ip}/15"), "dev", "eth0"],
        )?;
        ip(&netns, &["link", "set", "eth0", "up"])?;
        let mut node = node_entry(&dir, name, netns, netns_path, underlay_ip)?;
        node.agent_pid = spawn_agent(&lab, &node, false, None, &[])?;
        if spec.one_process && i == 1 {
            lab.controller_pid = node.agent_pid;
            wait_for(
                "the embedded controller socket",
                Duration::from_secs(10),
                || controller_sock.exists(),
            )?;
        }
        lab.nodes.push(node);
        lab.save()?;
    }
    for node in &lab.nodes {
        wait_for_agent(&lab, node)?;
    }
    Ok(lab)
}

/// Writes node `name`'s files under the lab's state directory `lab_dir` (`<name>/`: the CNI
/// conflist naming the agent's socket; the socket, lease store and log come with the agent) and
/// returns its `lab.json` entry, agent not started yet.
pub(crate) fn node_entry(
    lab_dir: &Path,
    name: String,
    netns: String,
    netns_path: PathBuf,
    underlay_ip: Ipv4Addr,
) -> Result<NodeInfo> {
    let node_dir = lab_dir.join(&name);
    std::fs::create_dir_all(node_dir.join("cni")).map_err(io_err(&node_dir))?;
    let agent_socket = node_dir.join("seamd.sock");
    let cni_config = node_dir.join("cni").join("10-seam.conflist");
    let conflist = serde_json::json!({
        "cniVersion": "1.1.0",
        "name": NETWORK,
        "plugins": [{ "type": "seam-cni", "agentSocket": agent_socket }],
    });
    std::fs::write(
        &cni_config,
        serde_json::to_vec_pretty(&conflist).unwrap_or_default(),
    )
    .map_err(io_err(&cni_config))?;
    Ok(NodeInfo {
        name,
        netns,
        netns_path,
        underlay_ip,
        agent_socket,
        agent_state: node_dir.join("agent.redb"),
        agent_log: node_dir.join("seamd.log"),
        cni_config,
        agent_pid: 0,
    })
}

/// The underlay bridge's own address in the underlay namespace; with the embedded store, the
/// controller's API listens on it. The address plan of the underlay (198.18.0.0/15): .1 the
/// bridge, .2–.4 the etcd members, .5–.9 the controller replicas with etcd, .11 onwards the
/// nodes, 198.18.1.K the gateways.
pub const UNDERLAY_BRIDGE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// Underlay address of etcd member `i` (1-based): 198.18.0.2, .3, …
fn etcd_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(UNDERLAY_BRIDGE) + i as u32)
}

/// Underlay address of controller replica `i` (1-based) with the etcd store: 198.18.0.5, .6, …
/// (at most 5 replicas, below the nodes' .11).
fn replica_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 4)) + i as u32)
}

/// Lab-owned namespaces still present.
fn leftovers(name: &str) -> Vec<String> {
    let prefix = format!("{name}-");
    seam_linux::netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Stops the lab's processes and removes all its namespaces and state. Works from the state
/// file when there is one and by name prefix in any case, so it also cleans up after a crash.
pub fn down(name: &str) -> Result<()> {
    let mut errors = Vec::new();
    let mut pids = Vec::new();
    if let Ok(lab) = Lab::load(name) {
        pids.extend(lab.nodes.iter().map(|n| n.agent_pid));
        pids.push(lab.controller_pid);
        pids.extend(lab.replicas.iter().map(|r| r.pid));
        pids.extend(lab.etcd.iter().map(|m| m.pid));
    }
    // Daemons whose pid was never recorded (a crash during `up`) are found by their sockets'
    // or data directory on the command line.
    let marker = state_dir(name).display().to_string() + "/";
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for entry in procs.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&marker)
                && (cmdline.contains("seamd")
                    || cmdline.contains("seam-controller")
                    || cmdline.contains("etcd"))
            {
                pids.push(pid);
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    // A recorded pid may since belong to another process: only signal ours.
    pids.retain(|&pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&cmdline).contains(&marker)
    });
    for &pid in &pids {
        // etcd's data goes with the lab, and a last member without quorum hangs on TERM.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let etcd = cmdline.split(|&b| b == 0).next() == Some(b"etcd".as_slice());
        kill(pid, if etcd { "KILL" } else { "TERM" });
    }
    // etcd and the stores must be gone before their directories are removed.
    let _ = wait_for(
        "the lab's processes to exit",
        Duration::from_secs(5),
        || pids.iter().all(|&pid| gone(pid)),
    );
    for &pid in pids.iter().filter(|&&pid| !gone(pid)) {
        kill(pid, "KILL");
    }
    std::thread::sleep(Duration::from_millis(100));
    for ns in leftovers(name) {
        if let Err(e) = seam_linux::netns::delete(&ns) {
            errors.push(e.to_string());
        }
    }
    let dir = state_dir(name);
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            errors.push(format!("{}: {e}", dir.display()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(LabError::Command {
            what: format!("lab down {name}"),
            detail: errors.join("; "),
        })
    }
}

impl Lab {
    /// The rule counters of `node`'s `table inet seam`, by rule comment: (packets, bytes).
    pub fn rule_counters(
        &self,
        node: &str,
    ) -> Result<std::collections::BTreeMap<String, (u64, u64)>> {
        let info = self.node(node)?;
        let table = seam_linux::netns::run_in(&info.netns_path, seam_linux::nft::read_counters)??;
        Ok(table
            .into_iter()
            .map(|(k, c)| (k, (c.packets, c.bytes)))
            .collect())
    }
}
