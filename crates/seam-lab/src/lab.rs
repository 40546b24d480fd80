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
    /// Controller API endpoint (`unix:/…`).
    pub controller: String,
    /// Controller process id.
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
fn ip(netns: &str, args: &[&str]) -> Result<()> {
    run(Command::new("ip").arg("-n").arg(netns).args(args))
}

fn state_dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
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

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
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
    let controller_log = dir.join("controller.log");
    let controller_pid = if spec.one_process {
        0
    } else {
        spawn_logged(
            Command::new("ip")
                .args(["netns", "exec", &underlay])
                .arg(spec.bin_dir.join("seam-controller"))
                .arg("--listen")
                .arg(format!("unix:{}", controller_sock.display()))
                .arg("--store")
                .arg(format!(
                    "embedded:{}",
                    dir.join("controller.redb").display()
                ))
                .args(["--segment-mode", &spec.segment_mode])
                .args(&spec.controller_args),
            &controller_log,
        )?
    };
    let controller = format!("unix:{}", controller_sock.display());
    let cni_path = format!("{}:/usr/lib/cni:/opt/cni/bin", spec.bin_dir.display());
    let mut lab = Lab {
        name: spec.name.clone(),
        dir: dir.clone(),
        underlay_netns: underlay.clone(),
        controller: controller.clone(),
        controller_pid,
        controller_log,
        cni_plugin: spec.bin_dir.join("seam-cni"),
        cni_path,
        bin_dir: spec.bin_dir.clone(),
        one_process: spec.one_process,
        segment_mode: spec.segment_mode.clone(),
        nodes: Vec::new(),
        pods: Vec::new(),
    };
    lab.save()?;
    if !spec.one_process {
        wait_for("the controller socket", Duration::from_secs(10), || {
            controller_sock.exists()
        })?;
    }

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
        node.agent_pid = spawn_agent(&lab, &node, false)?;
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

fn spawn_agent(lab: &Lab, node: &NodeInfo, append_log: bool) -> Result<u32> {
    if append_log {
        // Keep the previous run's log: a restart test wants to read both.
        let mut old = std::fs::read(&node.agent_log).unwrap_or_default();
        old.extend_from_slice(b"\n--- agent restarted ---\n");
        let _ = std::fs::write(node.agent_log.with_extension("log.prev"), old);
    }
    let mut cmd = Command::new(lab.bin_dir.join("seamd"));
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
        let pid = self.node(node)?.agent_pid;
        run(Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string()))?;
        wait_for(
            &format!("agent {pid} to exit"),
            Duration::from_secs(10),
            || {
                // A zombie still has /proc/<pid>; its state line says Z.
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| {
                        s.split(") ")
                            .nth(1)
                            .is_some_and(|rest| rest.starts_with('Z'))
                    })
                    .unwrap_or(true)
            },
        )
    }

    /// Starts `node`'s agent again (same socket, same lease store) and waits until it is ready.
    pub fn start_agent(&mut self, node: &str) -> Result<()> {
        let info = self.node(node)?.clone();
        let pid = spawn_agent(self, &info, true)?;
        if let Some(n) = self.nodes.iter_mut().find(|n| n.name == node) {
            n.agent_pid = pid;
        }
        self.save()?;
        wait_for_agent(self, self.node(node)?)
    }
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

fn kill(pid: u32) {
    // 0 would signal our own process group, 1 is init: a pid not yet recorded is never killed.
    if pid <= 1 {
        return;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

/// Stops the lab's processes and removes all its namespaces and state. Works from the state
/// file when there is one and by name prefix in any case, so it also cleans up after a crash.
pub fn down(name: &str) -> Result<()> {
    let mut errors = Vec::new();
    if let Ok(lab) = Lab::load(name) {
        for node in &lab.nodes {
            kill(node.agent_pid);
        }
        kill(lab.controller_pid);
    }
    // Daemons whose pid was never recorded (a crash during `up`) are found by their sockets'
    // directory on the command line.
    let marker = state_dir(name).display().to_string() + "/";
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for entry in procs.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&marker)
                && (cmdline.contains("seamd") || cmdline.contains("seam-controller"))
            {
                kill(pid);
            }
        }
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
