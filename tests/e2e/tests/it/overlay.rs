use std::time::Duration;

use seam_e2e::{eventually, host_ports, ip_json, netns_name, vxlan_fdb, LabGuard, TestLab};
use seam_lab::probe;

#[test]
#[ignore = "privileged: netns"]
fn pods_on_different_nodes_and_segments_reach_each_other_over_vxlan() {
    let mut g = LabGuard::up("e2e-overlay", 2, &[]);
    let a = g.lab.workloads().add_pod("n1", "blue", "a").unwrap();
    let b = g.lab.workloads().add_pod("n2", "blue", "b").unwrap();
    let c = g.lab.workloads().add_pod("n2", "green", "c").unwrap();
    for p in [&a, &b, &c] {
        probe::serve_tcp(&p.netns_path, 8080, p.name.clone()).unwrap();
    }
    // The pod's interface: MTU = underlay 1500 − 50, its address, a default route to the gateway.
    let link = ip_json(&netns_name(&a.netns_path), &["link", "show", "eth0"]);
    assert_eq!(link[0]["mtu"], 1450, "{link}");
    let routes = ip_json(&netns_name(&a.netns_path), &["route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], "10.240.0.1", "{routes}");
    std::thread::sleep(Duration::from_millis(300));
    for (src, dst) in [(&a, &b), (&b, &a), (&a, &c), (&c, &a), (&b, &c)] {
        let got = probe::tcp(&src.netns_path, dst.ip, 8080, Duration::from_secs(2)).unwrap();
        assert_eq!(
            got.as_deref(),
            Some(dst.name.as_str()),
            "tcp {} -> {}",
            src.name,
            dst.name
        );
        assert!(
            probe::ping(&src.netns_path, dst.ip, 2).unwrap(),
            "ping {} -> {}",
            src.name,
            dst.name
        );
    }
    // n1 reaches b (on n2) through a static FDB entry pointing at n2's underlay address.
    let n1 = g.node("n1");
    let fdb = vxlan_fdb(&n1.netns, "seam-v4096");
    assert!(fdb.iter().any(|(_, dst)| dst == "198.18.0.12"), "{fdb:?}");
    // Removing b removes its entries on n1 and its veth on n2.
    g.lab.workloads().del_pod("blue", "b").unwrap();
    eventually("n1's entries for b removed", || {
        vxlan_fdb(&n1.netns, "seam-v4096")
            .iter()
            .all(|(_, dst)| dst != "198.18.0.12")
    });
    eventually("only c's veth is left on n2", || {
        host_ports(&g.node("n2")).len() == 1
    });
}

#[test]
#[ignore = "privileged: netns"]
fn lab_down_cleans_up_after_a_crash() {
    let g = LabGuard::up("e2e-crash", 1, &[]);
    let name = g.lab.name.clone();
    // Simulate a crashed lab: its state file is gone, its processes still run.
    std::fs::remove_file(g.lab.dir.join("lab.json")).unwrap();
    seam_lab::down(&name).unwrap();
    let left: Vec<_> = seam_linux::netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{name}-")))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let cmdlines = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&format!("/run/seam-lab/{name}/")))
        .collect::<Vec<_>>();
    assert!(cmdlines.is_empty(), "{cmdlines:?}");
}

#[test]
#[ignore = "privileged: netns"]
fn one_process_holds_controller_and_agent() {
    let mut g = LabGuard::up_with("e2e-one", 2, &[], true);
    assert_eq!(
        g.lab.controller_pid,
        g.node("n1").agent_pid,
        "n1's seamd is the controller"
    );
    let a = g.lab.workloads().add_pod("n1", "blue", "a").unwrap();
    let b = g.lab.workloads().add_pod("n2", "blue", "b").unwrap();
    probe::serve_tcp(&b.netns_path, 8080, "b".into()).unwrap();
    eventually("n1 learned b", || {
        probe::tcp(&a.netns_path, b.ip, 8080, Duration::from_secs(1))
            .unwrap()
            .as_deref()
            == Some("b")
    });
    assert!(probe::ping(&a.netns_path, b.ip, 2).unwrap());
}

#[test]
#[ignore = "privileged: netns"]
fn flat_mode_puts_every_namespace_on_one_segment() {
    let mut g = LabGuard::up_spec("e2e-flat", 2, &[], false, "flat");
    let a = g.lab.workloads().add_pod("n1", "blue", "a").unwrap();
    let b = g.lab.workloads().add_pod("n2", "green", "b").unwrap();
    // One subnet, one gateway, one VNI for both namespaces: b is on a's link, no routing.
    let routes = ip_json(&netns_name(&a.netns_path), &["route", "show", "default"]);
    let gw = routes[0]["gateway"].as_str().unwrap().to_string();
    let routes_b = ip_json(&netns_name(&b.netns_path), &["route", "show", "default"]);
    assert_eq!(routes_b[0]["gateway"].as_str(), Some(gw.as_str()));
    let n1 = g.node("n1");
    let vxlans: Vec<String> = ip_json(&n1.netns, &["link", "show", "type", "vxlan"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(String::from))
        .collect();
    assert_eq!(vxlans.len(), 1, "{vxlans:?}");
    probe::serve_tcp(&b.netns_path, 8080, "b".into()).unwrap();
    eventually("a reaches b across nodes in one flat segment", || {
        probe::tcp(&a.netns_path, b.ip, 8080, Duration::from_secs(1))
            .unwrap()
            .as_deref()
            == Some("b")
    });
}
