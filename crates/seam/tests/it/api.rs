//! apply / get / explain / delete through the binary against an in-process controller.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use seam_client::ControllerClient;
use seam_controller::{ControllerConfig, Listener};
use seam_model::{endpoint_mac, Endpoint, EndpointKind, Node, NodeRole, Segment};
use seam_store::AnyStore;

pub(crate) struct Controller {
    pub(crate) endpoint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl Controller {
    pub(crate) fn start() -> Controller {
        Controller::start_on(AnyStore::memory())
    }

    /// A controller on `store` (which the test may also write into directly).
    fn start_on(store: AnyStore) -> Controller {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.sock");
        let endpoint = format!("unix:{}", path.display());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(seam_controller::serve(
                ControllerConfig::default(),
                store,
                vec![Listener::Unix(path)],
                async {
                    let _ = stopped.await;
                },
            ))
            .unwrap();
        });
        let c = Controller {
            endpoint,
            stop: Some(stop),
            thread: Some(thread),
            dir,
        };
        c.block_on(|client| async move {
            for _ in 0..300 {
                if client.healthz().await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("controller did not come up");
        });
        c
    }

    pub(crate) fn block_on<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce(ControllerClient) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let client = ControllerClient::new(&self.endpoint).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f(client))
    }

    pub(crate) fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Runs `seam ARGS --controller …` with `stdin`; returns (success, stdout, stderr).
    pub(crate) fn seam(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_seam"))
            .args(args)
            .args(["--controller", &self.endpoint])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.seam(args, "");
        assert!(ok, "seam {args:?} failed:\n{stdout}{stderr}");
        stdout
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Node n1 (a worker at 198.18.0.1).
pub(crate) fn node_n1() -> Node {
    Node {
        name: "n1".into(),
        underlay_ip: [198, 18, 0, 1].into(),
        role: NodeRole::Worker,
        transit_encap: Default::default(),
        underlay_prefix_len: None,
        underlay_mac: None,
        segment_encap: Default::default(),
    }
}

/// The cluster most CLI tests start from: node n1, segments blue and green (namespaces of the
/// same names) with a block of each on n1, and the pods blue/web-1 (10.1.0.5) and green/db-1
/// (10.2.0.5) on n1. (A pod's address is in a block of its node: the first /26 holds .5.)
pub(crate) async fn pods_on_n1(c: &ControllerClient) {
    c.put_node(&node_n1()).await.unwrap();
    c.put_segment(&segment("blue", 1, 100)).await.unwrap();
    c.put_segment(&segment("green", 2, 101)).await.unwrap();
    c.claim_block("blue", "n1").await.unwrap();
    c.claim_block("green", "n1").await.unwrap();
    c.put_endpoint(&endpoint("blue", "web-1", 1)).await.unwrap();
    c.put_endpoint(&endpoint("green", "db-1", 2)).await.unwrap();
}

pub(crate) fn segment(name: &str, third: u8, vni: u32) -> Segment {
    Segment {
        name: name.into(),
        tenant: name.into(),
        subnet: format!("10.{third}.0.0/24").parse().unwrap(),
        gateway: [10, third, 0, 1].into(),
        vni,
        block_prefix: 26,
        namespace: Some(name.into()),
        snat: false,
        forwarding: Default::default(),
    }
}

pub(crate) fn endpoint(ns: &str, pod: &str, third: u8) -> Endpoint {
    let ip = [10, third, 0, 5].into();
    Endpoint {
        name: format!("{ns}/{pod}"),
        kind: EndpointKind::Pod,
        namespace: ns.into(),
        segment: ns.into(),
        node: "n1".into(),
        ip,
        mac: endpoint_mac(ip),
        labels: BTreeMap::from([("app".to_string(), pod.to_string())]),
        container_id: None,
        ifname: None,
        ports: Vec::new(),
        conditions: None,
    }
}

pub(crate) const SEED: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: blue, labels: {tier: web}}
---
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: epg-client}
spec: {selectors: [{namespaces: [green]}]}
---
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: epg-webserver}
spec: {selectors: [{namespaceSelector: {matchLabels: {tier: web}}}]}
---
apiVersion: seam.dev/v1alpha1
kind: Contract
metadata: {name: contract-web}
spec:
  consumers: [epg-client]
  providers: [epg-webserver]
  subjects: [{name: web, filters: [{protocol: TCP, ports: [80, 443]}]}]
  action: allow
"#;

#[test]
fn apply_get_explain_delete() {
    let ctl = Controller::start();
    ctl.block_on(|c| async move {
        pods_on_n1(&c).await;
    });

    // One bad document: nothing applied, every problem listed with its path.
    let bad = format!(
        "{SEED}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: x, namespace: blue}}\n\
         spec: {{podSelector: {{}}, ingress: [{{ports: [{{port: 99, endPort: 10}}], frm: []}}]}}\n"
    );
    let (ok, _, stderr) = ctl.seam(
        &["apply", "-f", ctl.file("bad.yaml", &bad).to_str().unwrap()],
        "",
    );
    assert!(!ok);
    assert!(
        stderr.contains("nothing applied") && stderr.contains("document 5"),
        "{stderr}"
    );
    assert!(stderr.contains("frm"), "{stderr}");
    assert_eq!(ctl.ok(&["get", "policies", "-o", "json"]).trim(), "[]");
    assert!(!ctl.ok(&["get", "namespaces"]).contains("tier=web"));

    // The seed's example, from standard input.
    let (ok, stdout, stderr) = ctl.seam(&["apply", "-f", "-"], SEED);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    assert!(stdout.contains("Contract contract-web applied"), "{stdout}");
    assert!(stderr.is_empty(), "{stderr}");

    let table = ctl.ok(&["get", "policies"]);
    assert!(table.starts_with("KIND"), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");
    let yaml = ctl.ok(&["get", "contracts", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Contract") && !yaml.contains("EndpointGroup"),
        "{yaml}"
    );
    let ns = ctl.ok(&["get", "namespaces"]);
    assert!(ns.contains("tier=web"), "{ns}");

    let allowed = ctl.ok(&["explain", "green/db-1", "blue/web-1", "443/tcp"]);
    assert!(allowed.contains("verdict  ALLOWED"), "{allowed}");
    assert!(
        allowed.contains("Contract contract-web rule 0 (web)"),
        "{allowed}"
    );
    assert!(
        allowed.contains("realized: unknown (pass --lab to read the nodes' tables)"),
        "{allowed}"
    );
    let denied = ctl.ok(&["explain", "10.2.0.5", "10.1.0.5", "8080/tcp", "--json"]);
    let j: serde_json::Value = serde_json::from_str(&denied).unwrap();
    assert_eq!(j["allowed"], false);
    assert_eq!(j["ingress"]["decision"], "deny");
    assert_eq!(j["egress"]["decision"], "allow");

    let (ok, _, stderr) = ctl.seam(&["explain", "blue/nope", "blue/web-1", "80"], "");
    assert!(!ok && stderr.contains("unknown endpoint"), "{stderr}");

    // Delete: the provider is no longer isolated.
    ctl.ok(&["delete", "contract", "contract-web"]);
    let (ok, _, stderr) = ctl.seam(&["delete", "contract", "contract-web"], "");
    assert!(!ok && stderr.contains("not found"), "{stderr}");
    let (ok, _, stderr) = ctl.seam(&["delete", "networkpolicy", "x"], "");
    assert!(!ok && stderr.contains("-n"), "{stderr}");
    let after = ctl.ok(&["explain", "green/db-1", "blue/web-1", "8080/tcp"]);
    assert!(after.contains("verdict  ALLOWED"), "{after}");
    assert_eq!(
        ctl.ok(&["get", "endpointgroups", "-o", "json"])
            .matches("\"kind\"")
            .count(),
        2
    );
}

/// A stored policy object this version cannot read (a newer Seam's: an unknown field inside
/// `spec`) is not enforced, and `seam explain` says so, as a warning in its text and in `--json`.
#[test]
fn explain_warns_of_a_stored_policy_it_cannot_read() {
    use seam_store::{Datastore, Op, Txn};

    let store = AnyStore::memory();
    let ctl = Controller::start_on(store.clone());
    ctl.block_on(|c| async move {
        c.put_node(&node_n1()).await.unwrap();
        c.put_segment(&segment("blue", 1, 100)).await.unwrap();
        c.claim_block("blue", "n1").await.unwrap();
        c.put_endpoint(&endpoint("blue", "web-1", 1)).await.unwrap();
        let newer = serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "db", "namespace": "blue"},
            "spec": {
                "podSelector": {}, "policyTypes": ["Ingress"],
                "ingress": [{"newSourceField": [{"x": 1}], "ports": [{"port": 5432}]}]
            }
        });
        let mut txn = Txn::new();
        txn.success.push(Op::Put {
            key: "/seam/v1/policies/NetworkPolicy/blue/db".into(),
            value: serde_json::to_vec(&newer).unwrap(),
            lease: None,
        });
        store.txn(txn).await.unwrap();
    });

    let text = ctl.ok(&["explain", "10.1.0.9", "blue/web-1", "5432/tcp"]);
    assert!(text.contains("verdict  ALLOWED"), "{text}");
    let warning = text
        .lines()
        .find(|l| l.starts_with("warning: stored policy object ignored: "))
        .unwrap_or_else(|| panic!("no warning: {text}"));
    assert!(warning.contains("newSourceField"), "{text}");
    let json = ctl.ok(&["explain", "10.1.0.9", "blue/web-1", "5432/tcp", "--json"]);
    let j: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        j["warnings"],
        serde_json::json!([warning.trim_start_matches("warning: ")]),
        "{json}"
    );
}

/// A manifest of three documents whose third the controller refuses (for a reason `seam` cannot
/// know: seam-k8s manages that policy) leaves nothing applied; an oversized one is refused before
/// it is sent, naming the field.
#[test]
fn apply_is_all_or_nothing_on_the_controller() {
    let ctl = Controller::start();
    let managed = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "db", "namespace": "blue",
                     "annotations": {"seam.dev/managed-by": "seam-k8s"}},
        "spec": {"podSelector": {}}
    });
    ctl.block_on(|c| async move {
        c.put_policy("NetworkPolicy", Some("blue"), "db", &managed)
            .await
            .unwrap();
    });
    let first_two =
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: blue, labels: {tier: web}}\n---\n\
         apiVersion: seam.dev/v1alpha1\nkind: EndpointGroup\nmetadata: {name: epg-blue}\n\
         spec: {selectors: [{namespaces: [blue]}]}\n";
    let third = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: db, namespace: blue}\nspec: {podSelector: {matchLabels: {app: db}}}\n";
    let file = ctl.file("three.yaml", &format!("{first_two}{third}"));
    let (ok, stdout, stderr) = ctl.seam(&["apply", "-f", file.to_str().unwrap()], "");
    assert!(!ok, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "nothing is reported applied: {stdout}");
    for needle in [
        "nothing applied",
        "409",
        "document 3 (NetworkPolicy blue/db)",
        "managed by \"seam-k8s\"",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    assert!(!ctl.ok(&["get", "namespaces"]).contains("blue"));
    assert_eq!(
        ctl.ok(&["get", "endpointgroups", "-o", "json"]).trim(),
        "[]"
    );
    let stored = ctl.ok(&["get", "networkpolicies", "-o", "json"]);
    assert!(
        stored.contains("seam-k8s") && !stored.contains("matchLabels"),
        "{stored}"
    );

    // Over a bound: refused by `seam` itself with the field named. (A NetworkPolicy has no list
    // bound, as in Kubernetes; an AdminNetworkPolicy has the network-policy-api's.)
    let rules = vec!["{action: Allow, from: [{namespaces: {}}]}"; 101].join(", ");
    let big = format!(
        "{first_two}---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n\
         metadata: {{name: web}}\nspec: {{priority: 10, subject: {{namespaces: {{}}}}, ingress: [{rules}]}}\n"
    );
    let (ok, _, stderr) = ctl.seam(&["apply", "-f", "-"], &big);
    assert!(!ok);
    for needle in [
        "nothing applied",
        "document 3 (AdminNetworkPolicy web)",
        "spec.ingress: 101 items",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    assert!(!ctl.ok(&["get", "namespaces"]).contains("blue"));

    // Without the refused document: both applied, reported as before.
    let (ok, stdout, stderr) = ctl.seam(&["apply", "-f", "-"], first_two);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "Namespace blue applied\nEndpointGroup epg-blue applied\n"
    );
    assert!(ctl.ok(&["get", "namespaces"]).contains("tier=web"));
}

/// An https:// controller without a CA to verify it is a clear error naming the flag, before
/// any connection; a lab that is not up names the lab.
#[test]
fn an_https_controller_needs_a_ca_and_a_missing_lab_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_seam"))
        .args(["get", "nodes", "--controller", "https://127.0.0.1:1"])
        .env_remove("SEAM_CA")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--ca"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_seam"))
        .args(["get", "nodes", "--lab", "no-such-lab-here"])
        .env_remove("SEAM_CONTROLLER")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-lab-here"), "{stderr}");
}

#[test]
fn audit_lists_writes_newest_last() {
    let ctl = Controller::start();
    ctl.block_on(|c| async move {
        c.put_segment(&segment("web", 1, 100)).await.unwrap();
        let mut changed = segment("web", 1, 100);
        changed.snat = true;
        c.put_segment(&changed).await.unwrap();
    });
    let table = ctl.ok(&["audit"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("TIME"), "{table}");
    // Over the Unix socket the caller is root on the machine.
    for line in &lines[1..] {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells[1..4],
            ["admin/local-root", "PUT", "/seam/v1/segments/web"],
            "{line}"
        );
    }
    assert!(
        lines[1].contains("-→"),
        "a create has no revision before: {table}"
    );
    let json = ctl.ok(&["audit", "--limit", "1", "-o", "json"]);
    let records: Vec<seam_model::AuditRecord> = serde_json::from_str(&json).unwrap();
    assert_eq!(records.len(), 1);
    assert!(records[0].before.is_some(), "{json}");
    assert!(records[0].before < Some(records[0].revision), "{json}");
    let (ok, _, stderr) = ctl.seam(&["audit", "--limit", "20000"], "");
    assert!(!ok && stderr.contains("10000"), "{stderr}");
}

#[test]
fn get_and_delete_services_pools_and_slices() {
    let ctl = Controller::start();
    ctl.block_on(|c| async move {
        c.put_address_pool(&seam_model::AddressPool {
            name: "public".to_string(),
            addresses: vec!["203.0.113.0/30".parse().unwrap()],
            auto_assign: true,
        })
        .await
        .unwrap();
        let service: seam_model::Service = serde_json::from_value(serde_json::json!({
            "name": "front", "namespace": "web",
            "spec": {
                "type": "LoadBalancer", "selector": {"app": "web"},
                "ports": [{"port": 80, "nodePort": 30080}],
                "clusterIP": {"address": "10.96.0.10"}
            }
        }))
        .unwrap();
        c.put_service(&service).await.unwrap();
    });
    let table = ctl.ok(&["get", "services"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("NAMESPACE  NAME"), "{table}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "web",
            "front",
            "LoadBalancer",
            "10.96.0.10",
            "203.0.113.0",
            "80:30080/TCP",
            "0"
        ],
        "{table}"
    );
    let wide = ctl.ok(&["get", "svc", "-o", "wide"]);
    assert!(
        wide.contains("SELECTOR") && wide.contains("app=web"),
        "{wide}"
    );
    let json = ctl.ok(&["get", "services", "-o", "json"]);
    let services: Vec<seam_model::Service> = serde_json::from_str(&json).unwrap();
    assert_eq!(services[0].key(), "web/front");
    let pools = ctl.ok(&["get", "addresspools"]);
    assert!(
        pools.contains("public") && pools.contains("203.0.113.0/30"),
        "{pools}"
    );
    let slices = ctl.ok(&["get", "endpointslices"]);
    assert_eq!(slices.lines().count(), 1, "{slices}");

    // A pool in use cannot go; the Service can, then the pool.
    let (ok, _, stderr) = ctl.seam(&["delete", "addresspool", "public"], "");
    assert!(!ok && stderr.contains("web/front"), "{stderr}");
    let (ok, _, stderr) = ctl.seam(&["delete", "service", "front"], "");
    assert!(!ok && stderr.contains("NAMESPACE/NAME"), "{stderr}");
    assert!(ctl
        .ok(&["delete", "service", "web/front"])
        .contains("deleted"));
    assert!(ctl
        .ok(&["delete", "addresspool", "public"])
        .contains("deleted"));
    assert_eq!(ctl.ok(&["get", "services"]).lines().count(), 1);
}

#[test]
fn apply_of_a_service_its_slice_and_a_pool_as_kubernetes_writes_them() {
    let ctl = Controller::start();
    let manifest = "\
apiVersion: v1
kind: Service
metadata: {name: front, namespace: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: web}
spec:
  ports: [{port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: web
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
endpoints: [{addresses: [192.0.2.10]}]
ports: [{port: 5432}]
---
apiVersion: seam.dev/v1alpha1
kind: AddressPool
metadata: {name: public}
spec: {addresses: [203.0.113.0/30]}
";
    let (ok, stdout, stderr) = ctl.seam(&["apply", "-f", "-"], manifest);
    assert!(ok, "{stdout}{stderr}");
    let table = ctl.ok(&["get", "services"]);
    let front = table
        .lines()
        .find(|l| l.contains("front"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(front.contains("203.0.113.0"), "{table}");
    let db = table.lines().find(|l| l.contains(" db ")).unwrap();
    // One ready backend, from the slice.
    assert!(db.trim_end().ends_with('1'), "{table}");
    let wide = ctl.ok(&["get", "services", "-o", "wide"]);
    assert!(wide.contains("192.0.2.10:5432"), "{wide}");
    assert!(ctl.ok(&["get", "endpointslices"]).contains("db-1"));
}

/// `seam explain` to a ClusterIP: the Service port, the backend with its target port and the
/// verdict of the flow to it (policy sees the backend); `-o json` the same; a port the Service
/// does not have is not translated.
#[test]
fn explain_through_a_service_names_each_backend_with_its_verdict() {
    let ctl = Controller::start();
    ctl.block_on(|c| async move {
        pods_on_n1(&c).await;
        let service: seam_model::Service = serde_json::from_value(serde_json::json!({
            "name": "web", "namespace": "blue",
            "spec": {
                "selector": {"app": "web-1"},
                "ports": [
                    {"name": "https", "port": 80, "targetPort": 443},
                    {"name": "alt", "port": 81, "targetPort": 8080}
                ],
                "clusterIP": {"address": "10.96.0.10"}
            }
        }))
        .unwrap();
        c.put_service(&service).await.unwrap();
    });
    let (ok, stdout, stderr) = ctl.seam(&["apply", "-f", "-"], SEED);
    assert!(ok, "{stdout}{stderr}");

    let text = ctl.ok(&["explain", "green/db-1", "10.96.0.10", "80/tcp"]);
    assert!(
        text.contains("service  blue/web port https (80/TCP) -> targetPort 443, ClusterIP 10.96.0.10, translated on n1"),
        "{text}"
    );
    assert!(text.contains("verdict  ALLOWED"), "{text}");
    let line = text.lines().find(|l| l.contains("10.1.0.5")).unwrap();
    assert!(
        line.contains("blue/web-1 10.1.0.5:443 on n1") && line.ends_with("allowed"),
        "{text}"
    );
    assert!(
        text.contains("Contract contract-web rule 0 (web)"),
        "{text}"
    );

    // Port 81 goes to 8080, which the contract does not open.
    let json = ctl.ok(&[
        "explain",
        "green/db-1",
        "10.96.0.10",
        "81/tcp",
        "-o",
        "json",
    ]);
    let j: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(j["allowed"], false, "{json}");
    assert_eq!(j["service"]["outcome"], "denied", "{json}");
    assert_eq!(j["service"]["backends"][0]["port"], 8080, "{json}");
    assert_eq!(
        j["service"]["backends"][0]["ingress"]["decision"], "deny",
        "{json}"
    );

    let text = ctl.ok(&["explain", "green/db-1", "10.96.0.10", "82/tcp"]);
    assert!(text.contains("nothing translates it"), "{text}");
}
