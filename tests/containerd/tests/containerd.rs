//! containerd 1.6 + runc set up a `ctr run --cni` container and a CRI pod sandbox through
//! `seam-cni` on a 2-node lab, and the two ping each other. Everything is done by
//! `tests/containerd/run.sh` (which also cleans up and checks that nothing is left); this test
//! runs it and asserts that it passed.
//!
//! Run with `cargo test -p seam-e2e-cri -- --ignored` as root on a machine with containerd, runc
//! and busybox-static (scripts/setup.sh installs them).

use std::path::Path;
use std::process::Command;

#[test]
#[ignore = "privileged: containerd"]
fn ctr_container_and_cri_pod_ping_each_other_through_seam_cni() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("run.sh");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "{} failed ({}):\n{stdout}\n{stderr}",
        script.display(),
        out.status
    );
    assert!(stdout.contains("== PASS"), "script did not reach PASS");
}
