//! The lab's control plane as on a real cluster: every agent joined with a one-time token and
//! talks to the controller over TLS on the underlay with a certificate of its own; the CLI is the
//! lab's admin; a pod trying the controller's port gets nothing it can use. Checked with the
//! tools an operator would use: `openssl`, `curl`, the `seam` CLI.

use std::path::Path;
use std::process::{Command, Output};

use seam_e2e::{seam, LabGuard, TestLab};
use seam_lab::{node_cert_dir, LabUser};

/// The controller's API in an embedded-store lab.
const API: &str = "https://198.18.0.1:7440";

/// Runs `cmd` inside the network namespace at `netns`.
fn run_in(netns: &Path, cmd: &mut Command) -> Output {
    seam_linux::netns::run_in(netns, || cmd.output())
        .unwrap()
        .unwrap()
}

/// `curl` from `netns` to `API + path` with `args`: (HTTP status, 0 when there was no HTTP
/// answer; body).
fn curl(netns: &Path, path: &str, args: &[&str]) -> (u16, String) {
    let out = run_in(
        netns,
        Command::new("curl")
            .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"])
            .args(args)
            .arg(format!("{API}{path}")),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "privileged: netns"]
fn agents_join_with_their_own_certificates_and_a_pod_gets_nothing_from_the_api() {
    let mut g = LabGuard::up("e2e-ident", 2, &[]);
    let pki = g.lab.pki.clone().expect("the lab has a PKI");
    let ca = pki.ca_cert.to_string_lossy().into_owned();
    assert_eq!(g.lab.api, API);

    for name in ["n1", "n2"] {
        let node = g.node(name);
        // The agent talks to the API over TLS, not to the Unix socket.
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", node.agent_pid)).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            cmdline.contains(&format!("--controller {API}")),
            "{cmdline}"
        );
        // Its certificate is its own, signed by the lab's CA when it joined; its key is private.
        let cert = node_cert_dir(&node).join("node.crt");
        let cert = cert.to_string_lossy();
        let subject = openssl(&["x509", "-in", &cert, "-noout", "-subject"]);
        assert!(subject.contains(&format!("CN = {name}")), "{subject}");
        assert!(subject.contains("O = seam:nodes"), "{subject}");
        assert!(openssl(&["verify", "-CAfile", &ca, &cert]).contains("OK"));
        let key = node_cert_dir(&node).join("node.key");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", key.display());
    }

    // The CLI, as the lab's admin over TLS, sees both nodes registered by their agents.
    let out = seam(&g.lab, &["get", "nodes"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("n1") && out.stdout.contains("n2"),
        "{}",
        out.stdout
    );
    // And the audit names each node as the writer of its own Node object.
    let out = seam(&g.lab, &["audit", "-o", "json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let audit: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for name in ["n1", "n2"] {
        let own = audit.as_array().into_iter().flatten().any(|r| {
            r["who"] == format!("node/{name}")
                && r["key"]
                    .as_str()
                    .is_some_and(|k| k.ends_with(&format!("/nodes/{name}")))
        });
        assert!(own, "no write of node {name} by node/{name} in {audit:#}");
    }

    // From n1's own namespace, which reaches the API: n1's certificate may read, no
    // certificate may not, and plain HTTP gets no answer.
    let n1 = g.node("n1");
    let (cert, key) = (
        node_cert_dir(&n1).join("node.crt"),
        node_cert_dir(&n1).join("node.key"),
    );
    let (code, _) = curl(
        &n1.netns_path,
        "/v1/nodes",
        &[
            "--cacert",
            &ca,
            "--cert",
            &cert.to_string_lossy(),
            "--key",
            &key.to_string_lossy(),
        ],
    );
    assert_eq!(code, 200, "n1's certificate reads the nodes");
    let (code, body) = curl(&n1.netns_path, "/v1/snapshot", &["--cacert", &ca]);
    assert_eq!(code, 401, "no certificate: {body}");
    let out = run_in(
        &n1.netns_path,
        Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg("http://198.18.0.1:7440/v1/snapshot"),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "000",
        "plain HTTP is answered"
    );

    // A pod on n1 gets nothing it can use: the port is unreachable from it or refuses it.
    let pod = g.lab.workloads().add_pod("n1", "blue", "curious").unwrap();
    for args in [&["-k"][..], &["--cacert", &ca][..]] {
        let (code, body) = curl(&pod.netns_path, "/v1/snapshot", args);
        assert!(
            code == 0 || code == 401,
            "a pod got HTTP {code} from the API with {args:?}: {body}"
        );
        assert!(
            !body.contains("revision"),
            "a pod read the snapshot: {body}"
        );
    }
    // The reader's certificate reads but may not write.
    let (rcert, rkey) = pki.user(LabUser::Reader);
    let (code, _) = curl(
        &n1.netns_path,
        "/v1/segments",
        &[
            "--cacert",
            &ca,
            "--cert",
            &rcert.to_string_lossy(),
            "--key",
            &rkey.to_string_lossy(),
        ],
    );
    assert_eq!(code, 200, "the reader reads");
    let (code, body) = curl(
        &n1.netns_path,
        "/v1/nodes/n2",
        &[
            "--cacert",
            &ca,
            "--cert",
            &cert.to_string_lossy(),
            "--key",
            &key.to_string_lossy(),
            "-X",
            "DELETE",
        ],
    );
    assert_eq!(code, 403, "n1 may not delete node n2: {body}");
}
