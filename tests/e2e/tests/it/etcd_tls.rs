//! The lab's etcd speaks only mutual TLS (`seam lab up --store etcd`): what the controllers
//! wrote is readable with the lab's client certificate, and nothing is without one. Checked
//! with Debian's `etcdctl`, as an operator would.

use std::process::{Command, Output};

use seam_e2e::{LabGuard, TestLab};
use seam_lab::pki;

/// `etcdctl` in the lab's underlay namespace against every member, trusting the lab CA, with
/// `extra` flags (a client certificate or none).
fn etcdctl(g: &LabGuard, extra: &[String], args: &[&str]) -> Output {
    let endpoints: Vec<&str> = g.lab.etcd.iter().map(|m| m.client_url.as_str()).collect();
    Command::new("ip")
        .args(["netns", "exec", &g.lab.underlay_netns, "etcdctl"])
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg(format!("--cacert={}", pki::ca_cert(&g.lab.dir).display()))
        .args(["--dial-timeout=2s", "--command-timeout=4s"])
        .args(extra)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("etcdctl (Debian package etcd-client) did not run: {e}"))
}

#[test]
#[ignore = "privileged: netns, etcd, etcdctl"]
fn the_labs_etcd_serves_the_controllers_data_only_to_holders_of_a_lab_certificate() {
    let g = LabGuard::up_etcd("e2e-etcdtls", 1, 2);
    // Every member listens on https only; the controllers reached it (they elected a leader
    // and wrote the node), so their client certificate works.
    for m in &g.lab.etcd {
        assert!(m.client_url.starts_with("https://"), "{}", m.client_url);
        assert!(m.peer_url.starts_with("https://"), "{}", m.peer_url);
    }
    let client = pki::cert_files(&g.lab.dir, pki::ETCD_CLIENT);
    let with_cert = [
        format!("--cert={}", client.cert.display()),
        format!("--key={}", client.key.display()),
    ];
    let out = etcdctl(&g, &with_cert, &["get", "--prefix", "/seam", "--keys-only"]);
    let keys = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "etcdctl with the lab's client certificate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(keys.contains("/seam/v1/nodes/n1"), "keys: {keys}");

    // Without a client certificate: refused, nothing read.
    let out = etcdctl(&g, &[], &["get", "--prefix", "/seam", "--keys-only"]);
    assert!(
        !out.status.success(),
        "etcdctl without a client certificate read: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("/seam/"));

    // A certificate from another CA is refused as well.
    let other_dir = g.lab.dir.join("other-ca");
    let other = pki::LabPki::open(&other_dir).unwrap();
    let intruder = other
        .issue_server("intruder", &[], &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let foreign = [
        format!("--cert={}", intruder.cert.display()),
        format!("--key={}", intruder.key.display()),
    ];
    let out = etcdctl(&g, &foreign, &["get", "--prefix", "/seam", "--keys-only"]);
    assert!(
        !out.status.success(),
        "etcdctl with a foreign certificate read: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The members' peer connections are mutual TLS too: the cluster has all three members.
    let out = etcdctl(&g, &with_cert, &["endpoint", "health"]);
    let health =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        health.matches("is healthy").count(),
        g.lab.etcd.len(),
        "{health}"
    );
}
