//! VMs on hypervisor hosts get networking and policy like pods: a lab VM (a namespace behind a
//! veth on a hypervisor node) attached with `seam vm attach` reaches a pod on another node over
//! the overlay, other nodes get its FDB entry, a NetworkPolicy selecting it is enforced on its
//! host, stop/start keeps its address, bad input changes nothing, and a move keeps address and
//! MAC while traffic resumes within a second.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use seam_e2e::{controller, seam, vxlan_fdb, LabGuard, TestLab};
use seam_lab::probe;
use seam_lab::vm::VmOptions;
use serde_json::json;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn eventually(what: &str, secs: u64, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn segment_vni(lab: &seam_lab::Lab, name: &str) -> u32 {
    let segs = controller(lab, async |c| c.list_segments().await);
    segs.iter().find(|s| s.name == name).unwrap().vni
}

#[test]
#[ignore = "privileged: netns"]
fn a_lab_vm_reaches_a_pod_across_nodes_under_policy_and_keeps_its_lease() {
    let mut g = LabGuard::up("e2e-vm", 2, &[]);
    g.lab.topology().make_hypervisor("n2").unwrap();
    let web = g
        .lab
        .workloads()
        .add_pod_with_labels("n1", "blue", "web", &labels(&[("app", "web")]))
        .unwrap();
    let opts = VmOptions {
        labels: labels(&[("role", "vm")]),
        ..VmOptions::default()
    };
    let vm = g
        .lab
        .workloads()
        .add_vm("vm1", "n2", "ns-blue", &opts)
        .unwrap();
    assert_eq!(vm.namespace, "blue", "the segment's namespace");
    // Its port is plugged into the segment's bridge on the hypervisor.
    let vni = segment_vni(&g.lab, "ns-blue");
    let n2 = g.node("n2");
    eventually("the VM's port is in the segment bridge", 10, || {
        let links = seam_e2e::ip_json(&n2.netns, &["link", "show", "dev", &vm.port]);
        links[0]["master"] == format!("seam-b{vni}") && links[0]["operstate"] != "DOWN"
    });
    // Across nodes, both ways, like a pod.
    eventually("VM pings the pod on n1", 10, || {
        probe::ping(&vm.netns_path, web.ip, 1).unwrap()
    });
    assert!(
        probe::ping(&web.netns_path, vm.ip, 1).unwrap(),
        "pod pings the VM"
    );
    // n1 holds a static FDB entry for the VM's MAC pointing at n2.
    let n1 = g.node("n1");
    let fdb = vxlan_fdb(&n1.netns, &format!("seam-v{vni}"));
    assert!(
        fdb.contains(&(vm.mac.clone(), n2.underlay_ip.to_string())),
        "{fdb:?}"
    );

    // Policy: the VM is selected like a pod and enforced on its hypervisor.
    probe::serve_tcp(&vm.netns_path, 8080, "vm1".into()).unwrap();
    probe::serve_tcp(&web.netns_path, 8080, "web".into()).unwrap();
    let reach_vm = || {
        probe::tcp(&web.netns_path, vm.ip, 8080, Duration::from_millis(700))
            .unwrap()
            .as_deref()
            == Some("vm1")
    };
    eventually("web reaches the VM before any policy", 10, reach_vm);
    let policy = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "vm-no-ingress", "namespace": "blue"},
        "spec": {"podSelector": {"matchLabels": {"role": "vm"}}, "policyTypes": ["Ingress"]}
    });
    controller(&g.lab, async |c| {
        c.put_policy("NetworkPolicy", Some("blue"), "vm-no-ingress", &policy)
            .await
    });
    eventually("the policy reaches the VM's host", 10, || !reach_vm());
    assert_eq!(
        probe::tcp(&vm.netns_path, web.ip, 8080, Duration::from_secs(2))
            .unwrap()
            .as_deref(),
        Some("web"),
        "the VM's egress is not isolated"
    );
    let explain = seam(&g.lab, &["explain", "blue/web", "blue/vm1", "8080/tcp"]);
    assert_eq!(explain.status, 0, "{}", explain.stderr);
    assert!(
        explain.stdout.contains("vm-no-ingress"),
        "explain names the policy: {}",
        explain.stdout
    );

    // Bad input through the CLI: a clear error, nothing changed.
    let before = controller(&g.lab, async |c| c.list_vms().await);
    let eps_before = controller(&g.lab, async |c| c.list_endpoints().await);
    for (args, message) in [
        (
            vec!["vm", "attach", "x", "--segment", "nope", "--host", "n2"],
            "segment \"nope\" not found",
        ),
        (
            vec!["vm", "attach", "x", "--segment", "ns-blue", "--host", "n1"],
            "node \"n1\" has role worker, not hypervisor",
        ),
        (
            vec![
                "vm",
                "attach",
                "x",
                "--segment",
                "ns-blue",
                "--host",
                "n2",
                "--ip",
                "192.0.2.9",
            ],
            "is outside segment",
        ),
        (
            vec![
                "vm",
                "attach",
                "x",
                "--segment",
                "ns-blue",
                "--host",
                "n2",
                "--mac",
                &vm.mac,
            ],
            "is already held by endpoint",
        ),
    ] {
        let out = seam(&g.lab, &args);
        assert_ne!(out.status, 0, "{args:?} succeeded");
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
    }
    let ip_taken = vm.ip.to_string();
    let out = seam(
        &g.lab,
        &[
            "vm",
            "attach",
            "x",
            "--segment",
            "ns-blue",
            "--host",
            "n2",
            "--ip",
            &ip_taken,
        ],
    );
    assert!(out.stderr.contains("already held"), "{}", out.stderr);
    assert_eq!(before, controller(&g.lab, async |c| c.list_vms().await));
    assert_eq!(
        eps_before,
        controller(&g.lab, async |c| c.list_endpoints().await)
    );

    // Stop and start: same address and MAC, traffic again.
    g.lab.workloads().stop_vm("vm1").unwrap();
    eventually("n1 drops the stopped VM's entry", 10, || {
        !vxlan_fdb(&n1.netns, &format!("seam-v{vni}"))
            .iter()
            .any(|(mac, _)| *mac == vm.mac)
    });
    let again = g.lab.workloads().start_vm("vm1", "n2").unwrap();
    assert_eq!((again.ip, &again.mac), (vm.ip, &vm.mac));
    eventually("the restarted VM pings the pod", 10, || {
        probe::ping(&vm.netns_path, web.ip, 1).unwrap()
    });

    // Delete releases the address: the endpoint and n1's entry go.
    g.lab.workloads().del_vm("vm1").unwrap();
    assert!(controller(&g.lab, async |c| c.list_vms().await).is_empty());
    eventually("n1 drops the deleted VM's entry", 10, || {
        !vxlan_fdb(&n1.netns, &format!("seam-v{vni}"))
            .iter()
            .any(|(mac, _)| *mac == vm.mac)
    });
}

/// The longest time between two consecutive echo replies of a `ping -D` transcript.
fn longest_gap(transcript: &str) -> (Duration, usize) {
    let times: Vec<f64> = transcript
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect();
    let gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(0.0_f64, f64::max);
    (Duration::from_secs_f64(gap), times.len())
}

#[test]
#[ignore = "privileged: netns"]
fn a_moved_vm_keeps_address_and_mac_and_traffic_resumes_within_a_second() {
    let mut g = LabGuard::up("e2e-vmmv", 3, &[]);
    g.lab.topology().make_hypervisor("n2").unwrap();
    g.lab.topology().make_hypervisor("n3").unwrap();
    let web = g
        .lab
        .workloads()
        .add_pod_with_labels("n1", "blue", "web", &labels(&[("app", "web")]))
        .unwrap();
    let opts = VmOptions {
        labels: labels(&[("role", "vm")]),
        ..VmOptions::default()
    };
    let vm = g
        .lab
        .workloads()
        .add_vm("mover", "n2", "ns-blue", &opts)
        .unwrap();
    eventually("VM pings the pod", 10, || {
        probe::ping(&vm.netns_path, web.ip, 1).unwrap()
    });
    // Policy must follow the VM: deny ingress to it before the move.
    probe::serve_tcp(&vm.netns_path, 8080, "mover".into()).unwrap();
    let policy = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "vm-no-ingress", "namespace": "blue"},
        "spec": {"podSelector": {"matchLabels": {"role": "vm"}}, "policyTypes": ["Ingress"]}
    });
    controller(&g.lab, async |c| {
        c.put_policy("NetworkPolicy", Some("blue"), "vm-no-ingress", &policy)
            .await
    });
    let reach_vm = || {
        probe::tcp(&web.netns_path, vm.ip, 8080, Duration::from_millis(700))
            .unwrap()
            .is_some()
    };
    eventually("the policy reaches n2", 10, || !reach_vm());

    // A continuous ping from the VM to the pod (every 20 ms) across the move.
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &vm.netns(),
            "ping",
            "-D",
            "-i",
            "0.02",
            "-w",
            "7",
        ])
        .arg(web.ip.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let moved = g.lab.workloads().move_vm("mover", "n3").unwrap();
    let output = ping.wait_with_output().unwrap();
    let transcript = String::from_utf8_lossy(&output.stdout);
    let (gap, replies) = longest_gap(&transcript);
    println!("vm move: longest gap between echo replies {gap:?} ({replies} replies in 7 s)");
    assert!(replies > 100, "the ping ran: {transcript}");
    assert!(gap < Duration::from_secs(1), "traffic gap {gap:?} >= 1 s");

    let record = controller(&g.lab, async |c| c.get_vm("mover").await);
    assert_eq!(
        (record.ip, record.mac.to_string(), record.host.as_str()),
        (vm.ip, vm.mac.clone(), "n3")
    );
    assert_eq!(moved.host, "n3");
    // n1's entry follows to n3; the policy is enforced on n3 now.
    let vni = segment_vni(&g.lab, "ns-blue");
    let n3 = g.node("n3");
    eventually("n1's FDB entry points at n3", 10, || {
        vxlan_fdb(&g.node("n1").netns, &format!("seam-v{vni}"))
            .contains(&(vm.mac.clone(), n3.underlay_ip.to_string()))
    });
    assert!(!reach_vm(), "the policy followed the VM to n3");
    assert!(probe::ping(&vm.netns_path, web.ip, 1).unwrap());
}

/// The seed's "VM EPG ↔ Namespace EPG" case, both ways as written: a group of VMs consumes a
/// namespace's web port, and the namespace consumes a port of the VMs; everything else between
/// them, and from other namespaces, is dropped.
#[test]
#[ignore = "privileged: netns"]
fn a_contract_between_a_namespace_and_a_group_of_vms_works_both_ways() {
    let mut g = LabGuard::up("e2e-vmns", 3, &[]);
    g.lab.topology().make_hypervisor("n3").unwrap();
    let web1 = g
        .lab
        .workloads()
        .add_pod_with_labels("n1", "shop", "web-1", &labels(&[("app", "web")]))
        .unwrap();
    let web2 = g
        .lab
        .workloads()
        .add_pod_with_labels("n2", "shop", "web-2", &labels(&[("app", "web")]))
        .unwrap();
    let other = g.lab.workloads().add_pod("n1", "misc", "other").unwrap();
    let opts = VmOptions {
        labels: labels(&[("role", "legacy")]),
        namespace: Some("legacy".into()),
        ..VmOptions::default()
    };
    let vm = g
        .lab
        .workloads()
        .add_vm("vm1", "n3", "ns-misc", &opts)
        .unwrap();
    for (p, name) in [(&web1.netns_path, "web-1"), (&web2.netns_path, "web-2")] {
        for port in [80, 81] {
            probe::serve_tcp(p, port, name.into()).unwrap();
        }
    }
    for port in [22, 8080] {
        probe::serve_tcp(&vm.netns_path, port, "vm1".into()).unwrap();
    }
    let reach = |from: &std::path::Path, ip: std::net::Ipv4Addr, port: u16| {
        probe::tcp(from, ip, port, Duration::from_millis(700))
            .unwrap()
            .is_some()
    };
    eventually("everything reachable before any policy", 15, || {
        reach(&vm.netns_path, web1.ip, 81)
            && reach(&other.netns_path, vm.ip, 8080)
            && reach(&web1.netns_path, vm.ip, 22)
    });
    let objects = [
        (
            "EndpointGroup",
            "legacy-vms",
            json!({"apiVersion": "seam.dev/v1alpha1", "kind": "EndpointGroup",
                   "metadata": {"name": "legacy-vms"},
                   "spec": {"selectors": [{"kinds": ["vm"], "labels": {"matchLabels": {"role": "legacy"}}}]}}),
        ),
        (
            "Contract",
            "vms-to-shop",
            json!({"apiVersion": "seam.dev/v1alpha1", "kind": "Contract",
                   "metadata": {"name": "vms-to-shop"},
                   "spec": {"consumers": ["legacy-vms"], "providers": ["namespace/shop"], "action": "allow",
                            "subjects": [{"filters": [{"protocol": "TCP", "ports": [80]}]}]}}),
        ),
        (
            "Contract",
            "shop-to-vms",
            json!({"apiVersion": "seam.dev/v1alpha1", "kind": "Contract",
                   "metadata": {"name": "shop-to-vms"},
                   "spec": {"consumers": ["namespace/shop"], "providers": ["legacy-vms"], "action": "allow",
                            "subjects": [{"filters": [{"protocol": "TCP", "ports": [8080]}]}]}}),
        ),
    ];
    for (kind, name, doc) in &objects {
        controller(&g.lab, async |c| c.put_policy(kind, None, name, doc).await);
    }
    eventually("the contracts are enforced", 15, || {
        !reach(&other.netns_path, vm.ip, 8080) && !reach(&vm.netns_path, web1.ip, 81)
    });
    // VMs -> namespace: the contract's port, on both web pods (two nodes); nothing else.
    assert!(reach(&vm.netns_path, web1.ip, 80), "vm1 -> web-1:80");
    assert!(
        reach(&vm.netns_path, web2.ip, 80),
        "vm1 -> web-2:80 (other node)"
    );
    assert!(
        !reach(&vm.netns_path, web2.ip, 81),
        "vm1 -> web-2:81 is not in the contract"
    );
    // Namespace -> VMs: the other contract's port; not the VM's SSH.
    assert!(reach(&web1.netns_path, vm.ip, 8080), "web-1 -> vm1:8080");
    assert!(reach(&web2.netns_path, vm.ip, 8080), "web-2 -> vm1:8080");
    assert!(
        !reach(&web1.netns_path, vm.ip, 22),
        "web-1 -> vm1:22 is not in the contract"
    );
    // Neither group's consumers include misc/other.
    assert!(!reach(&other.netns_path, vm.ip, 8080), "misc/other -> vm1");
    assert!(
        !reach(&other.netns_path, web1.ip, 80),
        "misc/other -> web-1"
    );
}
