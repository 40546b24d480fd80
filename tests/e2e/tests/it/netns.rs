//! `seam lab down` after iproute2 named a namespace while the lab was up: iproute2 binds
//! `/run/netns` on itself on first use, which covered the lab's namespaces and made every one of
//! them undeletable (`Device or resource busy`). Runs in a mount namespace of its own with a fresh
//! `/run`, so it starts as after boot and never changes the machine's `/run/netns` under labs of
//! other runs; whatever it leaves goes with that mount namespace.

use std::process::Command;

use seam_e2e::{bin_dir, require_root, LabGuard, TestLab};

const LAB: &str = "netns-h";

/// `ip netns ARGS…`, which must succeed.
fn ip_netns(args: &[&str]) {
    let out = Command::new("ip").arg("netns").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip netns {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Whether `pid` still runs: the lab's daemons are this process's children, and one that was
/// stopped but not yet reaped is a zombie (state Z), which runs nothing.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
#[ignore = "privileged: lab"]
fn lab_goes_down_after_ip_netns_add() {
    require_root();
    // Not under the lab's prefix, so only the lab's own teardown could remove the lab's.
    let other = format!("x-{LAB}");
    seam_linux::netns::with_private_run(|| {
        let guard = LabGuard::up(LAB, 2, &[]);
        let lab_namespaces: Vec<String> = seam_linux::netns::list()
            .into_iter()
            .filter(|n| n.starts_with(&format!("{LAB}-")))
            .collect();
        assert!(!lab_namespaces.is_empty(), "the lab made no namespaces");
        ip_netns(&["add", &other]);

        let down = Command::new(bin_dir().join("seam"))
            .args(["lab", "down", "--name", LAB])
            .output()
            .unwrap();
        assert!(
            down.status.success(),
            "seam lab down: {}",
            String::from_utf8_lossy(&down.stderr).trim()
        );
        let left = seam_linux::netns::list();
        for ns in &lab_namespaces {
            assert!(!left.contains(ns), "{ns} left behind: {left:?}");
        }
        assert!(
            seam_lab::Lab::load(LAB).is_err(),
            "the lab's state is left behind"
        );
        let pids = guard.lab.nodes.iter().map(|n| n.agent_pid);
        for pid in pids.chain([guard.lab.controller_pid]) {
            assert!(!running(pid), "lab process {pid} still running");
        }
        // iproute2's namespace is untouched by the lab's teardown and goes its own way.
        assert!(left.contains(&other), "lab down removed {other}");
        ip_netns(&["del", &other]);
    })
    .unwrap();
}
