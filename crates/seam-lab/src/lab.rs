//! Bringing a lab up and down, and attaching pods to it.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cni::CniCall;
use crate::error::{LabError, Result};

/// Where labs keep their state, sockets and logs.
pub const STATE_ROOT: &str = "/run/seam-lab";
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
}

/// The datastore of a lab's controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabStore {
    /// One controller with an embedded redb file (the default).
    #[default]
    Embedded,
    /// A 3-member etcd cluster on the underlay namespace's addresses 198.18.0.2–.4, shared
    /// by the controller replicas, which elect a leader.
    Etcd,
}

impl std::str::FromStr for LabStore {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "embedded" => Ok(LabStore::Embedded),
            "etcd" => Ok(LabStore::Etcd),
            _ => Err(format!("invalid store {s:?}: expected embedded or etcd")),
        }
    }
}

impl std::fmt::Display for LabStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LabStore::Embedded => "embedded",
            LabStore::Etcd => "etcd",
        })
    }
}

/// Number of etcd members of a lab with `--store etcd`.
pub const ETCD_MEMBERS: usize = 3;

/// One `seam-controller` replica of a running lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaInfo {
    /// Replica id (`c1`, …), also its `--replica-id`.
    pub name: String,
    /// Its API endpoint (`unix:/…`).
    pub endpoint: String,
    /// Its log.
    pub log: PathBuf,
    /// Its process id (0 while stopped).
    pub pid: u32,
}

/// One etcd member of a running lab (it runs in the underlay namespace).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdMemberInfo {
    /// Member name (`e1`, …).
    pub name: String,
    /// Client URL (`http://198.18.0.2:2379`).
    pub client_url: String,
    /// Peer URL.
    pub peer_url: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Its log.
    pub log: PathBuf,
    /// Its process id (0 while stopped).
    pub pid: u32,
}

/// One node of a running lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// Node name (`n1`, …).
    pub name: String,
    /// Its network namespace name.
    pub netns: String,
    /// Its network namespace path.
    pub netns_path: PathBuf,
    /// Its underlay address.
    pub underlay_ip: Ipv4Addr,
    /// Its agent's CNI socket.
    pub agent_socket: PathBuf,
    /// Its agent's lease store.
    pub agent_state: PathBuf,
    /// Its agent's log.
    pub agent_log: PathBuf,
    /// The CNI conflist for this node (it names the node's agent socket).
    pub cni_config: PathBuf,
    /// The agent's process id.
    pub agent_pid: u32,
}

/// One pod of a running lab.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodInfo {
    /// Pod name.
    pub name: String,
    /// Kubernetes-style namespace.
    pub namespace: String,
    /// Node it runs on.
    pub node: String,
    /// Its network namespace path.
    pub netns_path: PathBuf,
    /// The container id used for CNI.
    pub container_id: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// A running lab, as written to `lab.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lab {
    /// Lab name.
    pub name: String,
    /// State directory.
    pub dir: PathBuf,
    /// The underlay namespace name.
    pub underlay_netns: String,
    /// Controller API endpoint (`unix:/…`); with replicas, all of them, comma-separated (the
    /// form `seamd --controller` and seam-client take).
    pub controller: String,
    /// Controller process id (with replicas, the first replica's at start).
    pub controller_pid: u32,
    /// Controller log.
    pub controller_log: PathBuf,
    /// The `seam-cni` binary.
    pub cni_plugin: PathBuf,
    /// Directory of plug-ins (`CNI_PATH`): seam-cni's and Debian's reference plug-ins.
    pub cni_path: String,
    /// Directory holding the binaries.
    pub bin_dir: PathBuf,
    /// Node n1's agent also runs the controller.
    #[serde(default)]
    pub one_process: bool,
    /// The controller's segment mode.
    #[serde(default)]
    pub segment_mode: String,
    /// The controller's datastore.
    #[serde(default)]
    pub store: LabStore,
    /// Extra `seam-controller` flags (kept to restart replicas with them).
    #[serde(default)]
    pub controller_args: Vec<String>,
    /// The controller replicas (one entry with the embedded store, too).
    #[serde(default)]
    pub replicas: Vec<ReplicaInfo>,
    /// The etcd members (empty with the embedded store).
    #[serde(default)]
    pub etcd: Vec<EtcdMemberInfo>,
    /// The nodes.
    pub nodes: Vec<NodeInfo>,
    /// The pods.
    pub pods: Vec<PodInfo>,
}

fn run(cmd: &mut Command) -> Result<()> {
    let what = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| LabError::Io {
        path: PathBuf::from(&what),
        source,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Command {
            what,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// `ip -n NETNS args…` — the lab wires its imitation of a physical network with iproute2; the
/// agent itself never shells out (it uses netlink).
pub(crate) fn ip(netns: &str, args: &[&str]) -> Result<()> {
    run(Command::new("ip").arg("-n").arg(netns).args(args))
}

pub(crate) fn state_dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Lab {
    /// Reads the state of the running lab `name`.
    pub fn load(name: &str) -> Result<Lab> {
        let path = state_dir(name).join("lab.json");
        let text = std::fs::read_to_string(&path).map_err(|_| LabError::NotUp(name.to_string()))?;
        serde_json::from_str(&text).map_err(|source| LabError::State { path, source })
    }

    /// Writes `lab.json` (atomically, so a crash never leaves half a file).
    pub fn save(&self) -> Result<()> {
        let path = self.dir.join("lab.json");
        let tmp = self.dir.join("lab.json.tmp");
        let text = serde_json::to_vec_pretty(self).map_err(|source| LabError::State {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&NodeInfo> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
            LabError::Invalid(format!(
                "lab {} has no node {name:?} (nodes: {})",
                self.name,
                self.node_names()
            ))
        })
    }

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

    fn node_names(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The plug-in config for one call, as a runtime derives it from the node's conflist
    /// (the conflist's `name` and `cniVersion` injected into the plug-in's entry).
    pub fn plugin_config(&self, node: &NodeInfo) -> Result<serde_json::Value> {
        let text = std::fs::read_to_string(&node.cni_config).map_err(io_err(&node.cni_config))?;
        let list: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| LabError::State {
                path: node.cni_config.clone(),
                source,
            })?;
        let mut plugin = list["plugins"][0].clone();
        plugin["name"] = list["name"].clone();
        plugin["cniVersion"] = list["cniVersion"].clone();
        Ok(plugin)
    }

    /// A CNI call for `pod` on `node` with the node's config.
    pub fn cni_call(
        &self,
        node: &NodeInfo,
        command: &str,
        container_id: &str,
        netns: &str,
        args: &str,
    ) -> Result<CniCall> {
        Ok(CniCall {
            plugin: self.cni_plugin.clone(),
            command: command.to_string(),
            container_id: container_id.to_string(),
            netns: netns.to_string(),
            ifname: "eth0".to_string(),
            args: args.to_string(),
            cni_path: self.cni_path.clone(),
            config: self.plugin_config(node)?,
        })
    }

    /// Creates pod `namespace/name` on `node`: a new network namespace, attached by `seam-cni ADD`.
    pub fn add_pod(&mut self, node: &str, namespace: &str, name: &str) -> Result<PodInfo> {
        self.add_pod_with_labels(node, namespace, name, &std::collections::BTreeMap::new())
    }

    /// Like [`Lab::add_pod`], with pod labels (passed in the plug-in config's `labels`, which
    /// seam-cni publishes with the endpoint) for policy selectors.
    pub fn add_pod_with_labels(
        &mut self,
        node: &str,
        namespace: &str,
        name: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<PodInfo> {
        self.add_pod_with(node, namespace, name, labels, &[])
    }

    /// Like [`Lab::add_pod_with_labels`], with named container ports (the plug-in config's
    /// `ports`, published with the endpoint) for NetworkPolicies that name a port.
    pub fn add_pod_with(
        &mut self,
        node: &str,
        namespace: &str,
        name: &str,
        labels: &std::collections::BTreeMap<String, String>,
        ports: &[seam_model::ContainerPort],
    ) -> Result<PodInfo> {
        if self
            .pods
            .iter()
            .any(|p| p.namespace == namespace && p.name == name)
        {
            return Err(LabError::Invalid(format!(
                "pod {namespace}/{name} already exists in lab {}",
                self.name
            )));
        }
        let node = self.node(node)?.clone();
        let netns = format!("{}-p-{namespace}-{name}", self.name);
        let netns_path = seam_linux::netns::create(&netns)?;
        let container_id = format!("{}-{namespace}-{name}", self.name);
        let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}");
        let mut call = self.cni_call(
            &node,
            "ADD",
            &container_id,
            &netns_path.display().to_string(),
            &args,
        )?;
        if !labels.is_empty() {
            call.config["labels"] = serde_json::json!(labels);
        }
        if !ports.is_empty() {
            call.config["ports"] = serde_json::json!(ports);
        }
        let result = call
            .run_in(&node.netns_path)
            .and_then(|out| out.json("ADD"));
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = seam_linux::netns::delete(&netns);
                return Err(e);
            }
        };
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| LabError::Cni {
                command: "ADD".into(),
                status: 0,
                stdout: result.to_string(),
            })?;
        let pod = PodInfo {
            name: name.into(),
            namespace: namespace.into(),
            node: node.name.clone(),
            netns_path,
            container_id,
            ip,
        };
        self.pods.push(pod.clone());
        self.save()?;
        Ok(pod)
    }

    /// Deletes pod `namespace/name`: `seam-cni DEL`, then its namespace.
    pub fn del_pod(&mut self, namespace: &str, name: &str) -> Result<()> {
        let Some(index) = self
            .pods
            .iter()
            .position(|p| p.namespace == namespace && p.name == name)
        else {
            return Err(LabError::Invalid(format!(
                "no pod {namespace}/{name} in lab {}",
                self.name
            )));
        };
        let pod = self.pods[index].clone();
        let node = self.node(&pod.node)?.clone();
        let call = self.cni_call(
            &node,
            "DEL",
            &pod.container_id,
            &pod.netns_path.display().to_string(),
            "",
        )?;
        call.run_in(&node.netns_path)?.json("DEL")?;
        if let Some(ns) = pod.netns_path.file_name().and_then(|n| n.to_str()) {
            seam_linux::netns::delete(ns)?;
        }
        self.pods.remove(index);
        self.save()
    }
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<u32> {
    let out = File::create(log).map_err(io_err(log))?;
    let err = out.try_clone().map_err(io_err(log))?;
    // Own process group: the daemons outlive `seam lab up` and ignore its terminal's signals.
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|source| LabError::Io {
            path: PathBuf::from(format!("{cmd:?}")),
            source,
        })?;
    Ok(child.id())
}

pub(crate) fn wait_for(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(LabError::Timeout(what.to_string()))
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
    ip(&underlay, &["addr", "add", "198.18.0.1/15", "dev", "ul0"])?;
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
        segment_mode: spec.segment_mode.clone(),
        store: spec.store,
        controller_args: spec.controller_args.clone(),
        replicas: Vec::new(),
        etcd: Vec::new(),
        nodes: Vec::new(),
        pods: Vec::new(),
    };
    if spec.store == LabStore::Etcd {
        for i in 1..=ETCD_MEMBERS {
            let address = etcd_address(i);
            ip(
                &underlay,
                &["addr", "add", &format!("{address}/15"), "dev", "ul0"],
            )?;
            let name = format!("e{i}");
            lab.etcd.push(EtcdMemberInfo {
                client_url: format!("http://{address}:2379"),
                peer_url: format!("http://{address}:2380"),
                data_dir: dir.join("etcd").join(&name),
                log: dir.join(format!("etcd-{name}.log")),
                name,
                pid: 0,
            });
        }
        lab.save()?;
        for i in 0..lab.etcd.len() {
            lab.start_etcd(i)?;
        }
        let mut endpoints = Vec::new();
        for i in 1..=spec.controllers {
            let name = format!("c{i}");
            let socket = dir.join(format!("controller-{name}.sock"));
            endpoints.push(format!("unix:{}", socket.display()));
            lab.replicas.push(ReplicaInfo {
                endpoint: format!("unix:{}", socket.display()),
                log: dir.join(format!("controller-{name}.log")),
                name,
                pid: 0,
            });
        }
        lab.controller = endpoints.join(",");
        lab.controller_log = lab.replicas[0].log.clone();
        lab.save()?;
        for i in 0..lab.replicas.len() {
            lab.start_controller(i)?;
        }
        lab.controller_pid = lab.replicas[0].pid;
        lab.save()?;
        lab.wait_for_leader(Duration::from_secs(30))?;
    } else if !spec.one_process {
        lab.replicas.push(ReplicaInfo {
            name: "c1".into(),
            endpoint: lab.controller.clone(),
            log: lab.controller_log.clone(),
            pid: 0,
        });
        lab.start_controller(0)?;
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
        let node_dir = dir.join(&name);
        std::fs::create_dir_all(node_dir.join("cni")).map_err(io_err(&node_dir))?;
        let agent_socket = node_dir.join("seamd.sock");
        let agent_state = node_dir.join("agent.redb");
        let agent_log = node_dir.join("seamd.log");
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
        let mut node = NodeInfo {
            name,
            netns,
            netns_path,
            underlay_ip,
            agent_socket,
            agent_state,
            agent_log,
            cni_config,
            agent_pid: 0,
        };
        node.agent_pid = spawn_agent(&lab, &node, false, None)?;
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

pub(crate) fn spawn_agent(
    lab: &Lab,
    node: &NodeInfo,
    append_log: bool,
    binary: Option<&Path>,
) -> Result<u32> {
    if append_log {
        // Keep the previous run's log: a restart test wants to read both.
        let mut old = std::fs::read(&node.agent_log).unwrap_or_default();
        old.extend_from_slice(b"\n--- agent restarted ---\n");
        let _ = std::fs::write(node.agent_log.with_extension("log.prev"), old);
    }
    let seamd = binary
        .map(Path::to_path_buf)
        .unwrap_or_else(|| lab.bin_dir.join("seamd"));
    let mut cmd = Command::new(seamd);
    cmd.args([
        "--node",
        &node.name,
        "--netns",
        &node.netns,
        "--controller",
        &lab.controller,
    ])
    .arg("--socket")
    .arg(&node.agent_socket)
    .arg("--state")
    .arg(&node.agent_state);
    // A node's role other than worker is kept next to its socket (`role`), so restarts keep it.
    if let Some(role) = crate::gateway::node_role(node) {
        cmd.args(["--role", &role]);
    }
    if let Some(mode) = crate::gateway::node_transit_encap(node) {
        cmd.args(["--transit-encap", &mode]);
    }
    if lab.one_process && node.name == "n1" {
        let socket = lab.controller.trim_start_matches("unix:");
        cmd.arg("--with-controller")
            .arg(format!("unix:{socket}"))
            .arg("--controller-store")
            .arg(lab.dir.join("controller.redb"))
            .args(["--segment-mode", &lab.segment_mode]);
    }
    spawn_logged(&mut cmd, &node.agent_log)
}

impl Lab {
    /// Sends `signal` (e.g. `KILL`, `TERM`) to `node`'s agent and waits until it is gone.
    pub fn kill_agent(&self, node: &str, signal: &str) -> Result<()> {
        signal_and_wait(self.node(node)?.agent_pid, signal)
    }

    /// Starts `node`'s agent again (same socket, same lease store) and waits until it is ready.
    pub fn start_agent(&mut self, node: &str) -> Result<()> {
        self.start_agent_from(node, None)
    }

    /// Like [`Lab::start_agent`], from another `seamd` binary (an upgrade: new binary, same
    /// state) when `binary` is given.
    pub fn start_agent_from(&mut self, node: &str, binary: Option<&Path>) -> Result<()> {
        let info = self.node(node)?.clone();
        let pid = spawn_agent(self, &info, true, binary)?;
        if let Some(n) = self.nodes.iter_mut().find(|n| n.name == node) {
            n.agent_pid = pid;
        }
        self.save()?;
        wait_for_agent(self, self.node(node)?)
    }

    /// Starts controller replica `index` (0-based; again after [`Lab::kill_controller`], with
    /// its old socket and log appended). Does not wait for it.
    pub fn start_controller(&mut self, index: usize) -> Result<()> {
        let replica = self.replica(index)?.clone();
        let socket = replica.endpoint.trim_start_matches("unix:").to_string();
        let _ = std::fs::remove_file(&socket);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.underlay_netns])
            .arg(self.bin_dir.join("seam-controller"))
            .arg("--listen")
            .arg(&replica.endpoint);
        match self.store {
            LabStore::Embedded => {
                cmd.arg("--store").arg(format!(
                    "embedded:{}",
                    self.dir.join("controller.redb").display()
                ));
            }
            LabStore::Etcd => {
                let urls: Vec<&str> = self.etcd.iter().map(|m| m.client_url.as_str()).collect();
                cmd.arg("--store")
                    .arg(format!("etcd:{}", urls.join(",")))
                    .args(["--replica-id", &replica.name]);
            }
        }
        cmd.args(["--segment-mode", &self.segment_mode])
            .args(&self.controller_args);
        let pid = spawn_logged_append(&mut cmd, &replica.log)?;
        if let Some(r) = self.replicas.get_mut(index) {
            r.pid = pid;
        }
        self.save()
    }

    /// Sends `signal` to controller replica `index` and waits until it is gone.
    pub fn kill_controller(&mut self, index: usize, signal: &str) -> Result<()> {
        let pid = self.replica(index)?.pid;
        signal_and_wait(pid, signal)?;
        if let Some(r) = self.replicas.get_mut(index) {
            r.pid = 0;
        }
        self.save()
    }

    fn replica(&self, index: usize) -> Result<&ReplicaInfo> {
        self.replicas.get(index).ok_or_else(|| {
            LabError::Invalid(format!(
                "lab {} has {} controller replicas, no index {index}",
                self.name,
                self.replicas.len()
            ))
        })
    }

    /// What replica `index` says it is (`leader`, `standby`, `single`), or `None` when it does
    /// not answer `GET /v1/leader`.
    pub fn replica_role(&self, index: usize) -> Option<String> {
        let replica = self.replicas.get(index)?;
        let body = http_get_unix(
            replica.endpoint.trim_start_matches("unix:"),
            "/v1/leader",
            Duration::from_secs(2),
        )?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["role"].as_str().map(str::to_string)
    }

    /// The index of the replica that leads now, if exactly one says so.
    pub fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..self.replicas.len())
            .filter(|&i| {
                self.replicas[i].pid != 0
                    && matches!(self.replica_role(i).as_deref(), Some("leader" | "single"))
            })
            .collect();
        match leaders[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    /// Waits until exactly one replica leads and returns its index.
    pub fn wait_for_leader(&self, timeout: Duration) -> Result<usize> {
        let mut found = None;
        wait_for(
            &format!(
                "a controller leader (logs: {})",
                self.replicas
                    .iter()
                    .map(|r| r.log.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            timeout,
            || {
                found = self.leader();
                found.is_some()
            },
        )?;
        found.ok_or_else(|| LabError::Timeout("a controller leader".into()))
    }

    /// Starts etcd member `index` (0-based; again after [`Lab::kill_etcd`], with its data).
    /// Does not wait for it.
    pub fn start_etcd(&mut self, index: usize) -> Result<()> {
        let member = self.etcd_member(index)?.clone();
        let initial_cluster = self
            .etcd
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        std::fs::create_dir_all(&member.data_dir).map_err(io_err(&member.data_dir))?;
        let pid = spawn_logged_append(
            Command::new("ip")
                .args(["netns", "exec", &self.underlay_netns, "etcd"])
                .args(["--name", &member.name, "--data-dir"])
                .arg(&member.data_dir)
                .args([
                    "--listen-client-urls",
                    &member.client_url,
                    "--advertise-client-urls",
                    &member.client_url,
                    "--listen-peer-urls",
                    &member.peer_url,
                    "--initial-advertise-peer-urls",
                    &member.peer_url,
                    "--initial-cluster",
                    &initial_cluster,
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    &format!("seam-lab-{}", self.name),
                    // Short elections: a killed etcd leader is replaced within about a second.
                    "--heartbeat-interval",
                    "50",
                    "--election-timeout",
                    "500",
                ]),
            &member.log,
        )?;
        if let Some(m) = self.etcd.get_mut(index) {
            m.pid = pid;
        }
        self.save()
    }

    /// Sends `signal` to etcd member `index` and waits until it is gone.
    pub fn kill_etcd(&mut self, index: usize, signal: &str) -> Result<()> {
        let pid = self.etcd_member(index)?.pid;
        signal_and_wait(pid, signal)?;
        if let Some(m) = self.etcd.get_mut(index) {
            m.pid = 0;
        }
        self.save()
    }

    fn etcd_member(&self, index: usize) -> Result<&EtcdMemberInfo> {
        self.etcd.get(index).ok_or_else(|| {
            LabError::Invalid(format!(
                "lab {} has {} etcd members, no index {index}",
                self.name,
                self.etcd.len()
            ))
        })
    }
}

/// Underlay address of etcd member `i` (1-based): 198.18.0.2, .3, …
fn etcd_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + i as u32)
}

fn spawn_logged_append(cmd: &mut Command, log: &Path) -> Result<u32> {
    if log.exists() {
        let mut old = std::fs::read(log).unwrap_or_default();
        old.extend_from_slice(b"\n--- restarted ---\n");
        let _ = std::fs::write(log.with_extension("log.prev"), old);
    }
    spawn_logged(cmd, log)
}

fn gone(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; its state line says Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.split(") ")
                .nth(1)
                .is_some_and(|rest| rest.starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Sends `signal` to `pid` and waits (10 s) until it is gone; a pid of 0 (stopped) is a no-op.
fn signal_and_wait(pid: u32, signal: &str) -> Result<()> {
    if pid <= 1 {
        return Ok(());
    }
    run(Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string()))?;
    wait_for(
        &format!("process {pid} to exit"),
        Duration::from_secs(10),
        || gone(pid),
    )
}

/// `GET path` over a Unix socket with HTTP/1.0 semantics (the response ends with the
/// connection); the body when the status is 200.
fn http_get_unix(socket: &str, path: &str, timeout: Duration) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: seam\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    // A chunked body: the JSON object is the part between the first `{` and the last `}`.
    let start = body.find('{')?;
    let end = body.rfind('}')?;
    Some(body[start..=end].to_string())
}

/// Waits until `node`'s agent answers CNI STATUS with success. Generous: on a loaded 2-core
/// machine (CI building in parallel) a restarted agent has been seen to need well over 20 s.
pub fn wait_for_agent(lab: &Lab, node: &NodeInfo) -> Result<()> {
    let call = lab.cni_call(node, "STATUS", "", "", "")?;
    wait_for(
        &format!(
            "agent of {} to be ready (log: {})",
            node.name,
            node.agent_log.display()
        ),
        Duration::from_secs(60),
        || call.run_here().map(|o| o.status == 0).unwrap_or(false),
    )
}

/// Lab-owned namespaces still present.
fn leftovers(name: &str) -> Vec<String> {
    let prefix = format!("{name}-");
    seam_linux::netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn kill(pid: u32, signal: &str) {
    // 0 would signal our own process group, 1 is init: a pid not yet recorded is never killed.
    if pid <= 1 {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
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
