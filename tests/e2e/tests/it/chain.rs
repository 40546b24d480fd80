//! seam-cni inside a conflist, followed by Debian's reference portmap and bandwidth plug-ins,
//! driven the way libcni drives a chain: each plug-in gets the previous result as prevResult.

use seam_e2e::{eventually, host_ports, LabGuard, TestLab};
use seam_lab::CniCall;
use serde_json::{json, Value};

fn chained(
    g: &LabGuard,
    plugin: &str,
    command: &str,
    netns: &str,
    prev: &Value,
    extra: Value,
) -> (i32, Value) {
    let node = g.node("n1");
    let mut config = json!({ "cniVersion": "1.0.0", "name": "seam", "type": plugin });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    if !prev.is_null() {
        config["prevResult"] = prev.clone();
    }
    let plugin_path = if plugin == "seam-cni" {
        g.lab.cni_plugin.clone()
    } else {
        std::path::PathBuf::from("/usr/lib/cni").join(plugin)
    };
    let call = CniCall {
        plugin: plugin_path,
        command: command.into(),
        container_id: "chain1".into(),
        netns: netns.into(),
        ifname: "eth0".into(),
        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=p".into(),
        cni_path: g.lab.cni_path.clone(),
        config,
    };
    let out = call.run_in(&node.netns_path).unwrap();
    let v = if out.stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&out.stdout).unwrap()
    };
    assert_eq!(
        out.status, 0,
        "{plugin} {command}: {} {}",
        out.stdout, out.stderr
    );
    (out.status, v)
}

#[test]
#[ignore = "privileged: netns"]
fn portmap_and_bandwidth_follow_seam_in_a_chain() {
    let g = LabGuard::up("e2e-chain", 1, &[]);
    let _ = seam_linux::netns::delete("e2e-chain-p");
    let path = seam_linux::netns::create("e2e-chain-p")
        .unwrap()
        .display()
        .to_string();
    let socket = json!({ "agentSocket": g.node("n1").agent_socket });
    let (_, r1) = chained(&g, "seam-cni", "ADD", &path, &Value::Null, socket.clone());
    let portmap = json!({
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]}
    });
    let (_, r2) = chained(&g, "portmap", "ADD", &path, &r1, portmap.clone());
    let bandwidth = json!({
        "capabilities": {"bandwidth": true},
        "runtimeConfig": {"bandwidth": {"ingressRate": 100_000_000, "ingressBurst": 1_000_000}}
    });
    let (_, r3) = chained(&g, "bandwidth", "ADD", &path, &r2, bandwidth.clone());
    assert_eq!(r3["ips"], r1["ips"], "the chain keeps seam's addresses");
    // portmap's DNAT rule is in the node's namespace (never the root's).
    let rules = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &g.node("n1").netns,
            "iptables-save",
            "-t",
            "nat",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&rules.stdout).contains("18080"),
        "portmap rule installed in the node namespace"
    );
    // The bandwidth plug-in shaped seam's host veth.
    let host = r1["interfaces"][0]["name"].as_str().unwrap().to_string();
    let qdisc = std::process::Command::new("tc")
        .args(["-n", &g.node("n1").netns, "qdisc", "show", "dev", &host])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&qdisc.stdout).contains("tbf"),
        "{}",
        String::from_utf8_lossy(&qdisc.stdout)
    );
    // DEL runs in reverse order, each with the final result.
    chained(&g, "bandwidth", "DEL", &path, &r3, bandwidth);
    chained(&g, "portmap", "DEL", &path, &r3, portmap);
    chained(&g, "seam-cni", "DEL", &path, &r3, socket);
    eventually("seam's veth removed", || {
        host_ports(&g.node("n1")).is_empty()
    });
    let _ = seam_linux::netns::delete("e2e-chain-p");
}
