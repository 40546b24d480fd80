//! `seam apply --wait` on a lab: it returns once both agents enforce the applied contract in
//! their kernels; with one agent killed it times out naming that node.

use seam_e2e::{seam, LabGuard, SeamOutput, TestLab};

const CONTRACT: &str = r#"
apiVersion: seam.dev/v1alpha1
kind: Contract
metadata: {name: web}
spec:
  consumers: [cluster]
  providers: [cluster]
  subjects: [{filters: [{protocol: TCP, ports: [PORT]}]}]
  action: allow
"#;

fn shown(out: &SeamOutput) -> String {
    format!("exit {}\n{}{}", out.status, out.stdout, out.stderr)
}

#[test]
#[ignore = "privileged: netns"]
fn apply_wait_returns_once_both_agents_enforce_and_names_a_dead_one_on_timeout() {
    let mut g = LabGuard::up("e2e-rz", 2, &[]);
    let file = g.lab.dir.join("web.yaml");
    std::fs::write(&file, CONTRACT.replace("PORT", "80")).unwrap();
    let path = file.to_str().unwrap().to_string();
    let out = seam(
        &g.lab,
        &["apply", "-f", &path, "--wait", "--timeout", "30s"],
    );
    assert_eq!(out.status, 0, "{}", shown(&out));
    assert!(
        out.stdout.contains("realized on every node: Contract web"),
        "{}",
        shown(&out)
    );
    let table = seam(&g.lab, &["get", "contracts"]);
    assert!(table.stdout.contains("2/2"), "{}", shown(&table));

    // n2's agent is dead: nothing enforces the next generation there.
    g.lab.processes().kill_agent("n2", "KILL").unwrap();
    std::fs::write(&file, CONTRACT.replace("PORT", "443")).unwrap();
    let out = seam(&g.lab, &["apply", "-f", &path, "--wait", "--timeout", "3s"]);
    assert_ne!(out.status, 0, "{}", shown(&out));
    assert!(
        out.stderr.contains("timed out after 3s")
            && out
                .stderr
                .contains("realized on 1/2 nodes; n2 at generation"),
        "{}",
        shown(&out)
    );
    let wide = seam(&g.lab, &["get", "contracts", "-o", "wide"]);
    assert!(
        wide.stdout.contains("1/2") && wide.stdout.contains("n2: at generation"),
        "{}",
        shown(&wide)
    );
    // Started again, it catches up.
    g.lab.processes().start_agent("n2").unwrap();
    let out = seam(
        &g.lab,
        &["apply", "-f", &path, "--wait", "--timeout", "30s"],
    );
    assert_eq!(out.status, 0, "{}", shown(&out));
}
