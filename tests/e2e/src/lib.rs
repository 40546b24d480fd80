//! Shared fixtures for the end-to-end tests: a lab that always goes away, and helpers that read
//! the kernel the way a user would (`ip -j`, `bridge -j`).

// Test fixtures: failing loudly is how they report a broken lab to the test using them.
#![allow(clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use seam_lab::{Lab, LabSpec, NodeInfo};

/// The directory with the built binaries: `SEAM_BIN_DIR`, else the workspace's `target/debug`.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("SEAM_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug"))
}

/// Fails loudly when not root: a privileged test never passes by skipping.
pub fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        });
    assert_eq!(
        uid,
        Some(true),
        "this test needs root (network namespaces); run it through scripts/test.sh"
    );
}

/// The lab guard of every test: seam-lab's (torn down on drop, also when the test panics, with
/// the logs' tails printed first), shared with the benchmarks.
pub use seam_lab::LabGuard;

/// How a test brings up its lab: the guard's constructors with the tests' defaults, failing the
/// test loudly when the lab cannot be built or is asked for a node it lacks.
pub trait TestLab: Sized {
    /// Brings up lab `name` with `nodes` nodes (names are per test, so tests never collide).
    fn up(name: &str, nodes: usize, controller_args: &[&str]) -> Self {
        Self::up_with(name, nodes, controller_args, false)
    }

    /// Like [`TestLab::up`]; with `one_process`, node n1's agent also runs the controller.
    fn up_with(name: &str, nodes: usize, controller_args: &[&str], one_process: bool) -> Self {
        Self::up_spec(name, nodes, controller_args, one_process, "namespace")
    }

    /// Like [`TestLab::up_with`], with the controller's segment mode (`namespace` or `flat`).
    fn up_spec(
        name: &str,
        nodes: usize,
        controller_args: &[&str],
        one_process: bool,
        segment_mode: &str,
    ) -> Self;

    /// Brings up lab `name` with `nodes` nodes on a 3-member etcd cluster with `controllers`
    /// controller replicas (`seam lab up --store etcd --controllers N`).
    fn up_etcd(name: &str, nodes: usize, controllers: usize) -> Self;

    /// The node called `name`.
    fn node(&self, name: &str) -> NodeInfo;
}

impl TestLab for LabGuard {
    fn up_spec(
        name: &str,
        nodes: usize,
        controller_args: &[&str],
        one_process: bool,
        segment_mode: &str,
    ) -> LabGuard {
        require_root();
        let spec = LabSpec {
            name: name.to_string(),
            nodes,
            segment_mode: segment_mode.to_string(),
            bin_dir: bin_dir(),
            controller_args: controller_args.iter().map(|s| s.to_string()).collect(),
            one_process,
            store: seam_lab::LabStore::Embedded,
            controllers: 1,
            flows: false,
        };
        LabGuard::new(&spec).unwrap_or_else(|e| panic!("lab up {name}: {e}"))
    }

    fn up_etcd(name: &str, nodes: usize, controllers: usize) -> LabGuard {
        require_root();
        let spec = LabSpec {
            name: name.to_string(),
            nodes,
            segment_mode: "namespace".to_string(),
            bin_dir: bin_dir(),
            controller_args: Vec::new(),
            one_process: false,
            store: seam_lab::LabStore::Etcd,
            controllers,
            flows: false,
        };
        LabGuard::new(&spec).unwrap_or_else(|e| panic!("lab up {name} --store etcd: {e}"))
    }

    fn node(&self, name: &str) -> NodeInfo {
        self.lab
            .node(name)
            .cloned()
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// `ip [-j] -n NETNS args…`, which must succeed; its standard output.
fn ip_run(json: bool, netns: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new("ip")
        .args(json.then_some("-j"))
        .arg("-n")
        .arg(netns)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip: {e}"));
    assert!(
        out.status.success(),
        "ip -n {netns} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `ip -n NETNS args…`, which must succeed: a change a test makes to a lab's namespace.
pub fn ip(netns: &str, args: &[&str]) {
    ip_run(false, netns, args);
}

/// `ip -j -n NETNS args…` parsed.
pub fn ip_json(netns: &str, args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&ip_run(true, netns, args)).unwrap_or(serde_json::Value::Null)
}

/// Names of Seam's host-side veths in a node namespace.
pub fn host_ports(node: &NodeInfo) -> Vec<String> {
    ip_json(&node.netns, &["link", "show"])
        .as_array()
        .map(|links| {
            links
                .iter()
                .filter_map(|l| l["ifname"].as_str())
                .filter(|n| n.starts_with("sv"))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// `bridge -j -n NETNS fdb show dev DEV` entries with a `dst` (the static VXLAN entries).
pub fn vxlan_fdb(netns: &str, dev: &str) -> Vec<(String, String)> {
    let out = Command::new("bridge")
        .args(["-j", "-n", netns, "fdb", "show", "dev", dev])
        .output()
        .unwrap_or_else(|e| panic!("bridge: {e}"));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    Some((
                        e["mac"].as_str()?.to_string(),
                        e["dst"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The namespace name of a pod's netns path.
pub fn netns_name(path: &std::path::Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string()
}

/// Waits up to two seconds for `cond`: the agent removes a DEL'd veth in the background (the
/// kernel's link deletion takes an RCU grace period), so "gone" is checked with a deadline.
pub fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Runs one controller API call against the lab's controller (a tiny runtime per call).
pub fn controller<T>(
    lab: &Lab,
    call: impl AsyncFnOnce(seam_client::ControllerClient) -> Result<T, seam_client::ClientError>,
) -> T {
    let client = lab.client().unwrap_or_else(|e| panic!("client: {e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(call(client))
        .unwrap_or_else(|e| panic!("controller call: {e}"))
}

/// What a `seam` command printed.
#[derive(Debug, Clone)]
pub struct SeamOutput {
    /// Exit status (0 = success).
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs the `seam` CLI (next to the lab's other binaries) against the lab's controller, as an
/// operator would: `--lab NAME`, i.e. over TLS on the lab's underlay with the lab's admin
/// certificate (the Unix socket in one-process mode).
pub fn seam(lab: &Lab, args: &[&str]) -> SeamOutput {
    let bin = lab.bin_dir.join("seam");
    let out = Command::new(&bin)
        .args(args)
        .arg("--lab")
        .arg(&lab.name)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    SeamOutput {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
