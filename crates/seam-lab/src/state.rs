//! The lab's state on disk: `/run/seam-lab/<name>/lab.json` (the [`Lab`] itself, what every
//! `seam lab` command and test reads back), and the atomic writes of it and of the lab's other
//! state files (`vms.json`, `external.json`). Its field names are the format scripts read: they
//! do not change.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};
use crate::pki::PkiPaths;

/// Where labs keep their state, sockets and logs.
pub const STATE_ROOT: &str = "/run/seam-lab";

/// The datastore of a lab's controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabStore {
    /// One controller with an embedded redb file (the default).
    #[default]
    Embedded,
    /// A 3-member etcd cluster on the underlay namespace's addresses 198.18.0.2–.4, shared
    /// by the controller replicas, which elect a leader. etcd speaks mutual TLS only, to
    /// clients and peers, with certificates of the lab CA ([`crate::pki`]).
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

/// One `seam-controller` replica of a running lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaInfo {
    /// Replica id (`c1`, …), also its `--replica-id`.
    pub name: String,
    /// Its local admin's API endpoint (`unix:/…`).
    pub endpoint: String,
    /// Its API endpoint over TLS on the underlay (`https://198.18.0.1:7440`): what the agents
    /// use, with their node certificates. Empty in one-process mode and in labs made before.
    #[serde(default)]
    pub api: String,
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
    /// Client URL (`https://198.18.0.2:2379`: mutual TLS with the lab CA, see [`crate::pki`]).
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
    /// The labels it was created with (published with its endpoint, as Kubernetes pod labels).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
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
    /// Controller API endpoint (`unix:/…`) of the local admin (root on this machine: the
    /// lab itself, tests); with replicas, all of them, comma-separated (the form
    /// `seamd --controller` and seam-client take).
    pub controller: String,
    /// The controller's API over TLS on the underlay (`https://198.18.0.1:7440`; with
    /// replicas, all of them, comma-separated): what the agents (with their node
    /// certificates, joined with a token) and the CLI (with the lab's admin certificate)
    /// use. Reachable from the lab's namespaces only. Empty in one-process mode (its
    /// embedded controller serves its Unix socket only) and in labs made before.
    #[serde(default)]
    pub api: String,
    /// The lab's CA and certificates (`<dir>/pki`); `None` in labs made before.
    #[serde(default)]
    pub pki: Option<PkiPaths>,
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
    /// The agents record flows (`seamd --flows on` with the default sampling).
    #[serde(default)]
    pub flows: bool,
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

pub(crate) fn state_dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `value` as pretty JSON to `path` through a temporary file and a rename, so a crash
/// never leaves half a file.
pub(crate) fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(value).map_err(|source| LabError::State {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Reads a state file of lab `name`; a file that does not exist yet reads as the default.
pub(crate) fn read_json_or_default<T: DeserializeOwned + Default>(
    name: &str,
    file: &str,
) -> Result<T> {
    let path = state_dir(name).join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|source| LabError::State { path, source }),
        Err(_) => Ok(T::default()),
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
        write_json_atomic(&self.dir.join("lab.json"), self)
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
}
