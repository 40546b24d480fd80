//! The lab's processes: the controller replicas and etcd members in the underlay namespace, one
//! `seamd` per node; started in their own process group with their log, stopped by signal,
//! restarted with the same state. Also the commands the lab runs and its waits.

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};
use crate::pki;
use crate::state::{io_err, EtcdMemberInfo, Lab, LabStore, NodeInfo, ReplicaInfo};

/// Runs `cmd` to completion; a failure names the command, its status and its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
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

/// Starts `cmd` in its own process group with stdout and stderr in `log`; returns its pid.
fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<u32> {
    // Logs name addresses, nodes and identities: only root reads them.
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(log)
        .map_err(io_err(log))?;
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

/// Polls `ready` until it holds, or fails with [`LabError::Timeout`] naming `what` after
/// `timeout`.
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

/// How long a join token the lab makes for an agent stays valid: the agent spends it within
/// seconds of its start.
const JOIN_TOKEN_TTL: Duration = Duration::from_secs(600);

/// `node`'s directory under the lab's (`<lab dir>/<node>`: its socket, stores, log, and with the
/// API over TLS its `pki/` and `join-token`).
pub(crate) fn node_dir(node: &NodeInfo) -> PathBuf {
    node.agent_socket
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The agent's certificate directory (`seamd --cert-dir`): `node.crt`, `node.key`.
pub fn node_cert_dir(node: &NodeInfo) -> PathBuf {
    node_dir(node).join("pki")
}

/// Whether `node`'s agent has a certificate it can use now (then a restart needs no token).
fn has_usable_cert(node: &NodeInfo) -> bool {
    let Ok(pem) = std::fs::read_to_string(node_cert_dir(node).join("node.crt")) else {
        return false;
    };
    let now = std::time::SystemTime::now();
    seam_pki::validity_of(&pem)
        .is_ok_and(|(not_before, not_after)| not_before <= now && now < not_after)
}

/// The agent's flags to reach the lab's API over TLS as node `node`: the CA, its certificate
/// directory and, when it has no usable certificate yet, a one-time join token bound to its
/// name, made now by the local admin (the Unix socket) as an operator would
/// (`seam node token create --node NAME`) and written to `<node dir>/join-token` (0600).
fn agent_tls_args(lab: &Lab, node: &NodeInfo, cmd: &mut Command) -> Result<()> {
    let Some(pki) = &lab.pki else {
        return Ok(());
    };
    let cert_dir = node_cert_dir(node);
    std::fs::create_dir_all(&cert_dir).map_err(io_err(&cert_dir))?;
    cmd.arg("--controller")
        .arg(&lab.api)
        .arg("--ca")
        .arg(&pki.ca_cert)
        .arg("--cert-dir")
        .arg(&cert_dir);
    let token_file = node_dir(node).join("join-token");
    if has_usable_cert(node) {
        // A restart (or an upgrade) keeps its certificate; the token it joined with is spent.
        let _ = std::fs::remove_file(&token_file);
        return Ok(());
    }
    let client = lab.client()?;
    let token = crate::controller::block_on(
        client.create_join_token(JOIN_TOKEN_TTL, Some(node.name.as_str())),
    )?;
    crate::pki::write_secret(&token_file, &token.token)?;
    cmd.arg("--join-token-file").arg(&token_file);
    Ok(())
}

/// Starts `node`'s agent; `wrapper` is put before the `seamd` command line (e.g. `faketime`).
pub(crate) fn spawn_agent(
    lab: &Lab,
    node: &NodeInfo,
    append_log: bool,
    binary: Option<&Path>,
    wrapper: &[&str],
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
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(seamd);
            cmd
        }
        None => Command::new(seamd),
    };
    cmd.args(["--node", &node.name, "--netns", &node.netns]);
    if lab.api.is_empty() {
        // One-process mode (and labs made before the API over TLS): the Unix socket, no
        // certificate.
        cmd.args(["--controller", &lab.controller]);
    } else {
        // As on a real cluster: over TCP on the underlay, with the node's own certificate.
        agent_tls_args(lab, node, &mut cmd)?;
    }
    cmd.arg("--socket")
        .arg(&node.agent_socket)
        .arg("--state")
        .arg(&node.agent_state);
    // A node's role other than worker is kept next to its socket (`role`), so restarts keep it.
    if let Some(role) = crate::gateway::node_role(node) {
        // A gateway's `eth1` is on the external network: its LoadBalancer addresses go there.
        if role == "gateway" {
            cmd.args(["--external-interface", crate::gateway::EXTERNAL_INTERFACE]);
        }
        cmd.args(["--role", &role]);
    }
    cmd.args(["--flows", if lab.flows { "on" } else { "off" }]);
    if let Some(mode) = crate::gateway::node_transit_encap(node) {
        cmd.args(["--transit-encap", &mode]);
    }
    if let Some(mode) = crate::gateway::node_segment_encap(node) {
        cmd.args(["--segment-encap", &mode]);
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

/// The lab's processes: starting, stopping and restarting its controller replicas, etcd members
/// and agents. Reached through [`Lab::processes`]; every change of a pid is saved to `lab.json`.
#[derive(Debug)]
pub struct Processes<'a> {
    lab: &'a mut Lab,
}

impl Lab {
    /// The lab's processes: the controller replicas, the etcd members and the agents.
    pub fn processes(&mut self) -> Processes<'_> {
        Processes { lab: self }
    }
}

impl Processes<'_> {
    /// Sends `signal` (e.g. `KILL`, `TERM`) to `node`'s agent and waits until it is gone.
    pub fn kill_agent(&self, node: &str, signal: &str) -> Result<()> {
        signal_and_wait(self.lab.node(node)?.agent_pid, signal)
    }

    /// Starts `node`'s agent again (same socket, same lease store) and waits until it is ready.
    pub fn start_agent(&mut self, node: &str) -> Result<()> {
        self.start_agent_from(node, None)
    }

    /// Like [`Processes::start_agent`], from another `seamd` binary (an upgrade: new binary, same
    /// state) when `binary` is given.
    pub fn start_agent_from(&mut self, node: &str, binary: Option<&Path>) -> Result<()> {
        let info = self.lab.node(node)?.clone();
        let pid = spawn_agent(self.lab, &info, true, binary, &[])?;
        if let Some(n) = self.lab.nodes.iter_mut().find(|n| n.name == node) {
            n.agent_pid = pid;
        }
        self.lab.save()?;
        wait_for_agent(self.lab, self.lab.node(node)?)
    }

    /// Starts `node`'s agent with `wrapper` before its command line (e.g. `faketime -f +400d`:
    /// a node whose clock is wrong) and returns its pid without waiting for it to be ready,
    /// which such an agent may never be. The lab keeps the pid (teardown stops it).
    pub fn start_agent_wrapped(&mut self, node: &str, wrapper: &[&str]) -> Result<u32> {
        let info = self.lab.node(node)?.clone();
        let pid = spawn_agent(self.lab, &info, true, None, wrapper)?;
        if let Some(n) = self.lab.nodes.iter_mut().find(|n| n.name == node) {
            n.agent_pid = pid;
        }
        self.lab.save()?;
        Ok(pid)
    }

    /// Makes `node`'s agent join again, as an operator does after `seam node revoke`: stops it,
    /// removes its certificate and starts it with a new one-time token (it then holds the next
    /// epoch's certificate).
    pub fn rejoin_agent(&mut self, node: &str) -> Result<()> {
        self.kill_agent(node, "TERM")?;
        let cert_dir = node_cert_dir(self.lab.node(node)?);
        for file in ["node.crt", "node.key"] {
            let path = cert_dir.join(file);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(LabError::Io { path, source: e })
                }
                _ => {}
            }
        }
        self.start_agent(node)
    }

    /// Starts controller replica `index` (0-based; again after [`Processes::kill_controller`], with
    /// its old socket and log appended). Does not wait for it.
    pub fn start_controller(&mut self, index: usize) -> Result<()> {
        let replica = self.replica(index)?.clone();
        let socket = replica.endpoint.trim_start_matches("unix:").to_string();
        let _ = std::fs::remove_file(&socket);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.lab.underlay_netns])
            .arg(self.lab.bin_dir.join("seam-controller"))
            .arg("--listen")
            .arg(&replica.endpoint);
        if let (Some(pki), Some(address)) = (&self.lab.pki, replica.api.strip_prefix("https://")) {
            // The Unix socket above is the local admin's; everyone else comes over TLS on the
            // underlay, and the CA key lets the controller sign the certificates of joining nodes.
            cmd.arg("--listen")
                .arg(format!("tcp:{address}"))
                .arg("--tls-cert")
                .arg(&pki.controller_cert)
                .arg("--tls-key")
                .arg(&pki.controller_key)
                .arg("--ca")
                .arg(&pki.ca_cert)
                .arg("--ca-key")
                .arg(&pki.ca_key);
            if self.lab.store == LabStore::Etcd {
                cmd.arg("--advertise").arg(&replica.api);
            }
        }
        match self.lab.store {
            LabStore::Embedded => {
                cmd.arg("--store").arg(format!(
                    "embedded:{}",
                    self.lab.dir.join("controller.redb").display()
                ));
            }
            LabStore::Etcd => {
                let urls: Vec<&str> = self
                    .lab
                    .etcd
                    .iter()
                    .map(|m| m.client_url.as_str())
                    .collect();
                let client = pki::cert_files(&self.lab.dir, pki::ETCD_CLIENT);
                cmd.arg("--store")
                    .arg(format!("etcd:{}", urls.join(",")))
                    .arg("--etcd-ca")
                    .arg(pki::ca_cert(&self.lab.dir))
                    .arg("--etcd-cert")
                    .arg(&client.cert)
                    .arg("--etcd-key")
                    .arg(&client.key)
                    .args(["--replica-id", &replica.name]);
            }
        }
        cmd.args(["--segment-mode", &self.lab.segment_mode])
            .args(&self.lab.controller_args);
        let pid = spawn_logged_append(&mut cmd, &replica.log)?;
        if let Some(r) = self.lab.replicas.get_mut(index) {
            r.pid = pid;
        }
        self.lab.save()
    }

    /// Sends `signal` to controller replica `index` and waits until it is gone.
    pub fn kill_controller(&mut self, index: usize, signal: &str) -> Result<()> {
        let pid = self.replica(index)?.pid;
        signal_and_wait(pid, signal)?;
        if let Some(r) = self.lab.replicas.get_mut(index) {
            r.pid = 0;
        }
        self.lab.save()
    }

    fn replica(&self, index: usize) -> Result<&ReplicaInfo> {
        self.lab.replicas.get(index).ok_or_else(|| {
            LabError::Invalid(format!(
                "lab {} has {} controller replicas, no index {index}",
                self.lab.name,
                self.lab.replicas.len()
            ))
        })
    }

    /// Starts etcd member `index` (0-based; again after [`Processes::kill_etcd`], with its data).
    /// Does not wait for it.
    pub fn start_etcd(&mut self, index: usize) -> Result<()> {
        let member = self.etcd_member(index)?.clone();
        let initial_cluster = self
            .lab
            .etcd
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        std::fs::create_dir_all(&member.data_dir).map_err(io_err(&member.data_dir))?;
        // Mutual TLS for clients and peers: only holders of a lab CA certificate get in.
        let ca = pki::ca_cert(&self.lab.dir);
        let own = pki::cert_files(&self.lab.dir, &format!("etcd-{}", member.name));
        let pid = spawn_logged_append(
            Command::new("ip")
                .args(["netns", "exec", &self.lab.underlay_netns, "etcd"])
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&ca)
                .arg("--cert-file")
                .arg(&own.cert)
                .arg("--key-file")
                .arg(&own.key)
                .arg("--peer-client-cert-auth")
                .arg("--peer-trusted-ca-file")
                .arg(&ca)
                .arg("--peer-cert-file")
                .arg(&own.cert)
                .arg("--peer-key-file")
                .arg(&own.key)
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
                    &format!("seam-lab-{}", self.lab.name),
                    // Short elections: a killed etcd leader is replaced within about a second.
                    "--heartbeat-interval",
                    "50",
                    "--election-timeout",
                    "500",
                ]),
            &member.log,
        )?;
        if let Some(m) = self.lab.etcd.get_mut(index) {
            m.pid = pid;
        }
        self.lab.save()
    }

    /// Sends `signal` to etcd member `index` and waits until it is gone.
    pub fn kill_etcd(&mut self, index: usize, signal: &str) -> Result<()> {
        let pid = self.etcd_member(index)?.pid;
        signal_and_wait(pid, signal)?;
        if let Some(m) = self.lab.etcd.get_mut(index) {
            m.pid = 0;
        }
        self.lab.save()
    }

    fn etcd_member(&self, index: usize) -> Result<&EtcdMemberInfo> {
        self.lab.etcd.get(index).ok_or_else(|| {
            LabError::Invalid(format!(
                "lab {} has {} etcd members, no index {index}",
                self.lab.name,
                self.lab.etcd.len()
            ))
        })
    }
}

fn spawn_logged_append(cmd: &mut Command, log: &Path) -> Result<u32> {
    if log.exists() {
        let mut old = std::fs::read(log).unwrap_or_default();
        old.extend_from_slice(b"\n--- restarted ---\n");
        let _ = std::fs::write(log.with_extension("log.prev"), old);
    }
    spawn_logged(cmd, log)
}

pub(crate) fn gone(pid: u32) -> bool {
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

/// Waits until `node`'s agent answers CNI STATUS with success. Generous: on a loaded 2-core
/// machine (CI building in parallel) a restarted agent has been seen to need well over 20 s.
pub(crate) fn wait_for_agent(lab: &Lab, node: &NodeInfo) -> Result<()> {
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

pub(crate) fn kill(pid: u32, signal: &str) {
    // 0 would signal our own process group, 1 is init: a pid not yet recorded is never killed.
    if pid <= 1 {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}
