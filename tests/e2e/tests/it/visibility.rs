//! The agents' API on a lab, read with real clients: `curl` with the lab's reader certificate
//! gets a node's Prometheus metrics (drops by tier and reason among them) and readiness, without
//! a certificate only the health routes; `openssl s_client` sees TLS 1.3 and the node's own
//! certificate; `seam get networkpolicies -o wide` sums a policy's hits over the nodes and
//! `seam explain` reads the deciding rule's counter from the enforcing node's agent.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use seam_e2e::{bin_dir, controller, eventually, LabGuard, TestLab};
use seam_lab::probe;
use seam_lab::LabUser;
use serde_json::json;

/// `curl` from the lab's underlay namespace (where the nodes' addresses are) to
/// `https://<node>:9473<path>`, the node's certificate checked against the lab's CA and its
/// name; `user` presents that user's certificate. (status, body).
fn curl(g: &LabGuard, node: &str, path: &str, user: Option<LabUser>) -> (u16, String) {
    let pki = g.lab.pki.as_ref().expect("a lab with its own CA");
    let ip = g.lab.node(node).unwrap().underlay_ip;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &g.lab.underlay_netns, "curl", "-sS"])
        .arg("--cacert")
        .arg(&pki.ca_cert)
        .args(["--resolve", &format!("{node}:9473:{ip}")])
        .args(["-w", "\n%{http_code}", "--max-time", "5"]);
    if let Some(user) = user {
        let (cert, key) = pki.user(user);
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd
        .arg(format!("https://{node}:9473{path}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

/// The value of the sample `series` (name and labels) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next())
        .and_then(|v| v.parse().ok())
}

fn seam(lab: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin_dir().join("seam"))
        .args(args)
        .args(["--lab", lab])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "privileged: netns"]
fn a_nodes_metrics_and_counters_are_read_through_its_agent_api() {
    seam_e2e::require_root();
    let mut g = LabGuard::up("e2e-vis", 2, &[]);
    let lab = g.lab.name.clone();
    let labels = |app: &str| BTreeMap::from([("app".to_string(), app.to_string())]);
    let web = g
        .lab
        .workloads()
        .add_pod_with_labels("n1", "blue", "web", &labels("web"))
        .unwrap();
    let client = g
        .lab
        .workloads()
        .add_pod_with_labels("n2", "blue", "client", &labels("client"))
        .unwrap();
    let other = g
        .lab
        .workloads()
        .add_pod_with_labels("n2", "blue", "other", &labels("other"))
        .unwrap();
    probe::serve_tcp(&web.netns_path, 8080, "web".into()).unwrap();
    let reach = |from: &seam_lab::PodInfo| {
        probe::tcp(&from.netns_path, web.ip, 8080, Duration::from_millis(700))
            .unwrap()
            .as_deref()
            == Some("web")
    };
    let policy = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web-from-client", "namespace": "blue"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                "ports": [{"protocol": "TCP", "port": 8080}]
            }]
        }
    });
    controller(&g.lab, async |c| {
        c.put_policy("NetworkPolicy", Some("blue"), "web-from-client", &policy)
            .await
    });
    eventually("the policy reaches n1's firewall", || !reach(&other));
    assert!(reach(&client), "blue/client is allowed");

    // Health for anyone; metrics and counters for readers, refused without a certificate.
    assert_eq!(curl(&g, "n1", "/healthz", None).0, 200);
    assert_eq!(curl(&g, "n1", "/readyz", None), (200, "ok\n".to_string()));
    assert_eq!(curl(&g, "n1", "/metrics", None).0, 401);
    // A scrape shows the drop counters the scrape before read from the kernel (in the
    // background): the second one has them.
    let isolation = r#"seam_agent_drop_packets_total{tier="namespace",reason="isolation"}"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (status, metrics) = curl(&g, "n1", "/metrics", Some(LabUser::Reader));
        assert_eq!(status, 200, "{metrics}");
        if sample(&metrics, isolation).unwrap_or(0.0) > 0.0 {
            break metrics;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "blue/other's packets to web were dropped by web's isolation: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(sample(&metrics, "seam_agent_ready"), Some(1.0), "{metrics}");
    assert!(
        sample(&metrics, "seam_agent_firewall_rules").unwrap_or(0.0) > 0.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "seam_agent_leases"),
        Some(1.0),
        "one pod on n1: {metrics}"
    );
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    let (status, counters) = curl(&g, "n1", "/v1/counters", Some(LabUser::Reader));
    assert_eq!(status, 200, "{counters}");
    let counters: serde_json::Value = serde_json::from_str(&counters).unwrap();
    assert_eq!(counters["node"], "n1");
    assert!(
        counters["rules"]["np/blue/web-from-client/ingress/0"]["packets"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{counters}"
    );

    // TLS 1.3, and the certificate is the node's own.
    let ip = g.lab.node("n1").unwrap().underlay_ip;
    let pki = g.lab.pki.as_ref().unwrap();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &g.lab.underlay_netns,
            "openssl",
            "s_client",
        ])
        .args(["-connect", &format!("{ip}:9473"), "-servername", "n1"])
        .arg("-CAfile")
        .arg(&pki.ca_cert)
        .args(["-verify_hostname", "n1", "-verify_return_error", "-brief"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("TLSv1.3"), "{said}");
    assert!(said.contains("Verification: OK"), "{said}");

    // The CLI: the policy's hits summed over the nodes, and explain's counter.
    let (ok, wide, stderr) = seam(&lab, &["get", "networkpolicies", "-o", "wide"]);
    assert!(ok, "{stderr}");
    let row = wide
        .lines()
        .find(|l| l.contains("web-from-client"))
        .unwrap_or_default()
        .to_string();
    let hits: u64 = row
        .split_whitespace()
        .last()
        .and_then(|h| h.parse().ok())
        .unwrap_or(0);
    assert!(wide.contains("HITS") && hits > 0, "{wide}\n{stderr}");
    assert!(stderr.is_empty(), "every node was read: {stderr}");
    let (ok, text, stderr) = seam(&lab, &["explain", "blue/client", "blue/web", "8080/tcp"]);
    assert!(ok, "{stderr}");
    let line = text
        .lines()
        .find(|l| l.contains("np/blue/web-from-client/ingress/0: in the table, counter"))
        .unwrap_or_else(|| panic!("explain reads n1's counter: {text}"));
    assert!(!line.contains("counter 0 packets"), "{text}");
}
