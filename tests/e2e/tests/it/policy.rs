//! Policies applied through the controller are enforced by every node's nftables table, with
//! real traffic: allowed flows connect, denied ones time out (dropped, not rejected).

use std::collections::BTreeMap;
use std::time::Duration;

use seam_e2e::{controller, eventually, LabGuard};
use seam_lab::probe;
use serde_json::json;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
#[ignore = "privileged: netns"]
fn a_network_policy_is_enforced_across_nodes_and_removed_again() {
    let mut g = LabGuard::up("e2e-np", 2, &[]);
    let web = g
        .lab
        .add_pod_with_labels("n1", "blue", "web", &labels(&[("app", "web")]))
        .unwrap();
    let client = g
        .lab
        .add_pod_with_labels("n2", "blue", "client", &labels(&[("app", "client")]))
        .unwrap();
    let other = g
        .lab
        .add_pod_with_labels("n2", "green", "other", &labels(&[("app", "client")]))
        .unwrap();
    let local = g
        .lab
        .add_pod_with_labels("n1", "blue", "local", &labels(&[("app", "other")]))
        .unwrap();
    for p in [&web, &client, &other, &local] {
        probe::serve_tcp(&p.netns_path, 8080, p.name.clone()).unwrap();
    }
    let reach = |from: &seam_lab::PodInfo, to: &seam_lab::PodInfo| {
        probe::tcp(&from.netns_path, to.ip, 8080, Duration::from_millis(700))
            .unwrap()
            .as_deref()
            == Some(to.name.as_str())
    };
    eventually("everything reachable before any policy", || {
        reach(&client, &web) && reach(&other, &web) && reach(&local, &web)
    });
    // Only pods labelled app=client in namespace blue may reach web on TCP 8080.
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
    eventually("the policy reaches n1's firewall", || !reach(&other, &web));
    assert!(reach(&client, &web), "blue/client (other node) is allowed");
    assert!(
        !reach(&local, &web),
        "blue/local (same node, same bridge) is denied"
    );
    assert!(reach(&web, &other), "web's egress is not isolated");
    // The deciding rule is realized with a counter in n1's table.
    let counters =
        seam_linux::netns::run_in(&g.node("n1").netns_path, seam_linux::nft::read_counters)
            .unwrap()
            .unwrap();
    let hits = counters
        .iter()
        .find(|(k, _)| k.starts_with("np/blue/web-from-client/ingress"))
        .map(|(_, c)| c.packets);
    assert!(hits.unwrap_or(0) > 0, "{counters:?}");
    controller(&g.lab, async |c| {
        c.delete_policy("NetworkPolicy", Some("blue"), "web-from-client")
            .await
    });
    eventually("deleting the policy restores access", || {
        reach(&other, &web) && reach(&local, &web)
    });
}
