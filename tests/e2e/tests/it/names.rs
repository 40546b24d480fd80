//! The longest names Kubernetes allows, through the real plug-in and agents on two nodes.

use std::net::Ipv4Addr;

use seam_e2e::{controller, LabGuard, TestLab};
use seam_lab::probe;
use serde_json::Value;

/// A sandbox namespace of its own (pod netns names in the lab derive from pod names, and a
/// 253-character pod name would not fit a file name).
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Netns {
        let _ = seam_linux::netns::delete(name);
        seam_linux::netns::create(name).unwrap();
        Netns(name.to_string())
    }

    fn path(&self) -> std::path::PathBuf {
        seam_linux::netns::path_of(&self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = seam_linux::netns::delete(&self.0);
    }
}

/// `seam-cni` ADD on `node`; the pod's address.
fn add(
    g: &LabGuard,
    node: &str,
    ns: &str,
    pod: &str,
    container: &str,
    sandbox: &Netns,
) -> Ipv4Addr {
    let node = g.node(node);
    let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod}");
    let call = g
        .lab
        .cni_call(
            &node,
            "ADD",
            container,
            &sandbox.path().display().to_string(),
            &args,
        )
        .unwrap();
    let out = call.run_in(&node.netns_path).unwrap();
    assert_eq!(out.status, 0, "ADD {pod}: {}", out.stdout);
    let result: Value = serde_json::from_str(&out.stdout).unwrap();
    result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {result}"))
}

#[test]
#[ignore = "privileged: netns"]
fn the_longest_kubernetes_names_attach_on_two_nodes_and_reach_each_other() {
    let g = LabGuard::up("e2e-hnames", 2, &[]);
    let ns = format!("longest-namespace-{}", "n".repeat(45));
    assert_eq!(ns.len(), 63);
    let pod = |tag: char| {
        let name = format!(
            "{}.{}.{}.{}",
            String::from(tag).repeat(63),
            "x".repeat(63),
            "y".repeat(63),
            "z".repeat(61)
        );
        assert_eq!(name.len(), 253);
        name
    };
    let (pod1, pod2) = (pod('a'), pod('b'));
    // A runtime's container id can be longer than any name; the second is a usual one.
    let cid1 = "0123456789abcdef".repeat(64);
    let cid2 = "fedcba9876543210".repeat(4);
    let (s1, s2) = (Netns::new("e2e-hnames-s1"), Netns::new("e2e-hnames-s2"));
    let ip1 = add(&g, "n1", &ns, &pod1, &cid1, &s1);
    let ip2 = add(&g, "n2", &ns, &pod2, &cid2, &s2);

    // ADD replied success, so the controller holds both endpoints under their full names.
    let endpoints = controller(&g.lab, async |c| c.list_endpoints().await);
    for (pod, ip, node) in [(&pod1, ip1, "n1"), (&pod2, ip2, "n2")] {
        let name = format!("{ns}/{pod}");
        let ep = endpoints.iter().find(|e| e.name == name);
        assert_eq!(
            ep.map(|e| (e.ip, e.node.as_str())),
            Some((ip, node)),
            "{name}: {endpoints:?}"
        );
    }
    let segment = controller(&g.lab, async |c| c.get_segment(&format!("ns-{ns}")).await);
    assert!(segment.subnet.contains(&ip1) && segment.subnet.contains(&ip2));

    // Across nodes, both ways (the remote node learns the endpoint from the controller).
    let reach = |from: &Netns, to: Ipv4Addr| {
        (0..20).any(|_| probe::ping(&from.path(), to, 1).unwrap_or(false))
    };
    assert!(reach(&s1, ip2), "ping {pod1} -> {pod2}");
    assert!(reach(&s2, ip1), "ping {pod2} -> {pod1}");

    // DEL removes both endpoints.
    for (node, ns_, pod, cid, s) in [
        ("n1", &ns, &pod1, &cid1, &s1),
        ("n2", &ns, &pod2, &cid2, &s2),
    ] {
        let node = g.node(node);
        let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns_};K8S_POD_NAME={pod}");
        let call = g
            .lab
            .cni_call(&node, "DEL", cid, &s.path().display().to_string(), &args)
            .unwrap();
        assert_eq!(call.run_in(&node.netns_path).unwrap().status, 0);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = controller(&g.lab, async |c| c.list_endpoints().await);
        if !left.iter().any(|e| e.namespace == ns) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "endpoints left: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
