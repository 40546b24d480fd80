//! Nothing a benchmark makes outlives it.
//!
//! Every lab is named `<kind>-<pid>` (so concurrent runs never collide) and everything else a
//! benchmark creates (reference-plug-in namespaces, pod namespaces) carries that lab's prefix,
//! so `seam_lab::down` removes it all. Three layers: a [`LabGuard`] (seam-lab's) tears its lab down on drop
//! (errors and early returns), seam-lab's teardown on signal removes every registered lab on
//! SIGINT/SIGTERM/SIGHUP ([`install_signal_handler`]), and [`sweep_stale`] removes labs of earlier runs that were killed
//! outright. iperf3 servers are [`ChildGuard`]s, killed on drop or signal.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Child;
use std::sync::Mutex;

use anyhow::Context;
use seam_lab::LabSpec;

/// Lab name prefixes this tool uses.
pub const KINDS: [&str; 18] = [
    "bcni", "bmem", "btput", "bpol", "bprop", "bfail", "brst", "bcmem", "bctls", "bsvc", "bsvt",
    "blbt", "bgw", "bvm", "bscr", "flows", "bcr", "bmsw",
];

static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn with<T>(m: &Mutex<Vec<T>>, f: impl FnOnce(&mut Vec<T>)) {
    match m.lock() {
        Ok(mut g) => f(&mut g),
        Err(poisoned) => f(&mut poisoned.into_inner()),
    }
}

/// The lab guard of every benchmark: seam-lab's, shared with the end-to-end tests.
pub use seam_lab::LabGuard;

/// Builds lab `<kind>-<pid>` with `nodes` nodes, per-namespace segments.
pub fn lab_up(kind: &str, nodes: usize, bin_dir: &Path) -> anyhow::Result<LabGuard> {
    lab_up_with(kind, nodes, bin_dir, seam_lab::LabStore::Embedded, 1)
}

/// Like [`lab_up`], with the controller's store and number of replicas.
pub fn lab_up_with(
    kind: &str,
    nodes: usize,
    bin_dir: &Path,
    store: seam_lab::LabStore,
    controllers: usize,
) -> anyhow::Result<LabGuard> {
    let name = format!("{kind}-{}", std::process::id());
    // The guard registers the lab for teardown on signal before building it.
    LabGuard::new(&LabSpec {
        name: name.clone(),
        nodes,
        segment_mode: "namespace".into(),
        bin_dir: bin_dir.to_path_buf(),
        controller_args: Vec::new(),
        one_process: false,
        store,
        controllers,
        flows: false,
    })
    .map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "build lab {name} (binaries from {})",
            bin_dir.display()
        ))
    })
}

/// Namespaces without a lab: every one is named `<kind>-<pid>-<tag>`, and all of them are
/// removed when the guard is dropped or finished, on a signal, or by the next run's sweep.
pub struct ScopeGuard {
    name: String,
    done: bool,
}

impl ScopeGuard {
    /// Registers scope `<kind>-<pid>` (removing anything an earlier process of this pid left).
    pub fn new(kind: &str) -> ScopeGuard {
        let name = format!("{kind}-{}", std::process::id());
        seam_lab::register_teardown(&name);
        let _ = seam_lab::down(&name);
        ScopeGuard { name, done: false }
    }

    /// The name of namespace `tag` of this scope.
    pub fn netns(&self, tag: &str) -> String {
        format!("{}-{tag}", self.name)
    }

    /// Removes every namespace of the scope and reports whether that worked.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.done = true;
        let result = seam_lab::down(&self.name)
            .with_context(|| format!("remove namespaces {}-*", self.name));
        seam_lab::unregister_teardown(&self.name);
        result
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        if !self.done {
            let _ = seam_lab::down(&self.name);
            seam_lab::unregister_teardown(&self.name);
        }
    }
}

/// A child process killed (and reaped) when dropped.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Guards `child`.
    pub fn new(child: Child) -> ChildGuard {
        let pid = child.id();
        with(&CHILDREN, |v| v.push(pid));
        ChildGuard(child)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let pid = self.0.id();
        let _ = self.0.kill();
        let _ = self.0.wait();
        with(&CHILDREN, |v| v.retain(|p| *p != pid));
    }
}

fn kill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .arg(pid.to_string())
        .status();
}

/// On SIGINT, SIGTERM or SIGHUP: kill guarded children, tear down every registered lab and scope,
/// and exit 130.
pub fn install_signal_handler() {
    seam_lab::teardown_on_signal(
        true,
        |_| {
            eprintln!("\nseam-bench: interrupted, tearing down");
            let mut children = Vec::new();
            with(&CHILDREN, |v| children = std::mem::take(v));
            for pid in children {
                kill(pid);
            }
        },
        |name, e| eprintln!("seam-bench: tearing down {name}: {e}"),
    );
}

/// `kind-pid` of a lab name or of one of its namespaces, when it is one of ours.
fn owner(name: &str) -> Option<(String, u32)> {
    let mut parts = name.splitn(3, '-');
    let kind = parts.next()?;
    let pid: u32 = parts.next()?.parse().ok()?;
    KINDS
        .contains(&kind)
        .then(|| (format!("{kind}-{pid}"), pid))
}

fn alive_bench(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let named_so = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|c| c.trim() == "seam-bench");
    // A killed run can linger as a zombie until it is reaped: that is not alive.
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st == "Z"))
        })
        .unwrap_or(true);
    named_so && !zombie
}

/// Removes labs (and namespaces) left by seam-bench runs that no longer exist.
pub fn sweep_stale() {
    let mut names: Vec<String> = seam_linux::netns::list();
    if let Ok(dir) = std::fs::read_dir(seam_lab::STATE_ROOT) {
        names.extend(
            dir.flatten()
                .filter_map(|e| e.file_name().into_string().ok()),
        );
    }
    let stale: BTreeSet<String> = names
        .iter()
        .filter_map(|n| owner(n))
        .filter(|(_, pid)| !alive_bench(*pid))
        .map(|(lab, _)| lab)
        .collect();
    for lab in stale {
        eprintln!("seam-bench: removing lab {lab} left by an earlier, killed run");
        if let Err(e) = seam_lab::down(&lab) {
            eprintln!("seam-bench: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        assert_eq!(owner("bcni-42-n1"), Some(("bcni-42".into(), 42)));
        assert_eq!(owner("btput-7"), Some(("btput-7".into(), 7)));
        assert_eq!(owner("bpol-9-node"), Some(("bpol-9".into(), 9)));
        assert_eq!(owner("demo-n1"), None);
        assert_eq!(owner("bcni-x-n1"), None);
    }
}
