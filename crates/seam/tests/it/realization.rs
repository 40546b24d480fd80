//! `seam apply --wait` and the REALIZED column against an in-process controller, with the test
//! playing the agents: each fake agent reports every policy object's current generation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seam_model::{Node, NodeRealization, NodeRole, ObjectRealization};

use crate::api::Controller;

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

/// Agents that report, every 50 ms, that they enforce what the controller holds.
struct FakeAgents {
    nodes: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeAgents {
    fn start(endpoint: &str, nodes: &[&str]) -> FakeAgents {
        let nodes: Arc<Mutex<Vec<String>>> =
            Arc::new(Mutex::new(nodes.iter().map(|n| n.to_string()).collect()));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, s, endpoint) = (nodes.clone(), stop.clone(), endpoint.to_string());
        let thread = std::thread::spawn(move || {
            let client = seam_client::ControllerClient::new(&endpoint).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                while !s.load(Ordering::Relaxed) {
                    let snapshot = client.snapshot().await.unwrap();
                    let objects: std::collections::BTreeMap<String, ObjectRealization> = snapshot
                        .generations
                        .iter()
                        .map(|(name, g)| {
                            let o = ObjectRealization {
                                generation: *g,
                                error: None,
                            };
                            (name.clone(), o)
                        })
                        .collect();
                    let live: Vec<String> = n.lock().unwrap().clone();
                    for node in live {
                        let report = NodeRealization {
                            node,
                            objects: objects.clone(),
                            error: None,
                        };
                        client.put_realization(&report).await.unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        });
        FakeAgents {
            nodes,
            stop,
            thread: Some(thread),
        }
    }

    /// Only `nodes` report from now on (the others' agents are dead).
    fn only(&self, nodes: &[&str]) {
        *self.nodes.lock().unwrap() = nodes.iter().map(|n| n.to_string()).collect();
    }
}

impl Drop for FakeAgents {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn node(name: &str, octet: u8) -> Node {
    Node {
        name: name.into(),
        underlay_ip: [198, 18, 0, octet].into(),
        role: NodeRole::Worker,
        transit_encap: Default::default(),
        underlay_prefix_len: None,
        underlay_mac: None,
        segment_encap: Default::default(),
    }
}

#[test]
fn apply_wait_returns_once_every_node_enforces_and_names_the_laggard_on_timeout() {
    let ctl = Controller::start();
    ctl.block_on(|c| async move {
        c.put_node(&node("n1", 1)).await.unwrap();
        c.put_node(&node("n2", 2)).await.unwrap();
    });
    let agents = FakeAgents::start(&ctl.endpoint, &["n1", "n2"]);
    let file = ctl.file("web.yaml", &CONTRACT.replace("PORT", "80"));
    let file = file.to_str().unwrap();
    let out = ctl.ok(&["apply", "-f", file, "--wait", "--timeout", "10s"]);
    assert!(out.contains("Contract web applied"), "{out}");
    assert!(
        out.contains("realized on every node: Contract web"),
        "{out}"
    );
    let table = ctl.ok(&["get", "contracts"]);
    assert!(
        table.lines().next().unwrap().ends_with("REALIZED"),
        "{table}"
    );
    assert!(table.contains("2/2"), "{table}");

    // n2's agent is dead: the next generation never reaches it.
    agents.only(&["n1"]);
    let file = ctl.file("web.yaml", &CONTRACT.replace("PORT", "443"));
    let (ok, stdout, stderr) = ctl.seam(
        &[
            "apply",
            "-f",
            file.to_str().unwrap(),
            "--wait",
            "--timeout",
            "1s",
        ],
        "",
    );
    assert!(!ok, "{stdout}{stderr}");
    assert!(stdout.contains("Contract web applied"), "{stdout}");
    assert!(
        stderr.contains("timed out after 1s waiting for 1 of 1 objects"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Contract web (generation")
            && stderr.contains("realized on 1/2 nodes; n2 at generation"),
        "{stderr}"
    );
    let wide = ctl.ok(&["get", "contracts", "-o", "wide"]);
    assert!(
        wide.contains("1/2") && wide.contains("n2: at generation"),
        "{wide}"
    );
    let yaml = ctl.ok(&["get", "contract", "web", "-o", "yaml"]);
    assert!(yaml.contains("realized: 1/2"), "{yaml}");
    assert!(yaml.contains("node: n2"), "{yaml}");

    // The node is gone for good: deleting it takes it out of the count.
    ctl.block_on(|c| async move { c.delete_node("n2").await.unwrap() });
    let table = ctl.ok(&["get", "contracts"]);
    assert!(table.contains("1/1"), "{table}");
    let (ok, _, stderr) = ctl.seam(&["get", "contract", "nope"], "");
    assert!(
        !ok && stderr.contains("no contract named \"nope\""),
        "{stderr}"
    );
}
