//! Endpoint ports are bridge ports in hairpin mode, so that a pod can reach itself through its
//! Service (the masqueraded packet leaves through the port it came in on). Read back with
//! iproute2's `bridge`, independent of Seam's own netlink parsing.

use std::net::Ipv4Addr;
use std::process::Command;

use ipnet::Ipv4Net;
use seam_dataplane::{
    contract, host_ifname, vm_port_name, LinkOp, NodeKernel, PodAttach, Underlay,
};
use seam_linux::netns;
use seam_model::MacAddr;

use crate::contract::{in_fresh_netns, Ns};

/// `bridge -d link show dev IFNAME`, run in the current thread's namespace.
fn bridge_port_details(ifname: &str) -> String {
    let out = Command::new("bridge")
        .args(["-d", "link", "show", "dev", ifname])
        .output()
        .expect("run bridge");
    assert!(
        out.status.success(),
        "bridge -d link show dev {ifname}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn set_hairpin_by_hand(ifname: &str, on: &str) {
    let out = Command::new("bridge")
        .args(["link", "set", "dev", ifname, "hairpin", on])
        .output()
        .expect("run bridge");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip_here(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "privileged: netns"]
fn endpoint_ports_are_in_hairpin_mode_and_repaired_without_it() {
    let underlay = Underlay {
        ifname: "u0".into(),
        ip: Ipv4Addr::new(198, 18, 0, 11),
        prefix_len: 24,
    };
    let sandbox = Ns(format!("sct{}hp", std::process::id()));
    netns::create(&sandbox.0).unwrap();
    let sandbox_path = netns::path_of(&sandbox.0).display().to_string();
    let setup: &[&[&str]] = &[
        &["link", "add", "u0", "type", "veth", "peer", "name", "u1"],
        &["addr", "add", "198.18.0.11/24", "dev", "u0"],
        &["link", "set", "u1", "up"],
        &["link", "set", "u0", "up"],
    ];
    in_fresh_netns("h", setup, |k| async move {
        let mut want = contract::sample_node(underlay);
        let vni = *want.segments.keys().next().unwrap();
        for op in seam_dataplane::plan(&want, &k.observe().await.unwrap()) {
            k.apply(&op).await.unwrap();
        }
        let pod = PodAttach {
            host_ifname: host_ifname("seam", "hairpin", "eth0"),
            netns: sandbox_path.clone(),
            ifname: "eth0".into(),
            address: "10.240.0.5/24".parse::<Ipv4Net>().unwrap(),
            gateway: Ipv4Addr::new(10, 240, 0, 1),
            mac: MacAddr([0x02, 0, 0, 0, 0, 5]),
            vni,
            mtu: 1450,
        };
        k.attach(&pod).await.unwrap();
        let details = bridge_port_details(&pod.host_ifname);
        assert!(details.contains("hairpin on"), "{details}");
        assert!(
            details.contains("state UP") || details.contains(",UP"),
            "{details}"
        );
        k.check(&pod).await.unwrap();

        // A VM's port (made by the hypervisor; a veth here) gets it when plugged.
        let vm = vm_port_name("vm1");
        ip_here(&["link", "add", &vm, "type", "veth", "peer", "name", "tvpeer"]);
        want.vm_ports.insert(vm.clone(), vni);
        want.local_ports.insert(pod.host_ifname.clone(), vni);
        for op in seam_dataplane::plan(&want, &k.observe().await.unwrap()) {
            k.apply(&op).await.unwrap();
        }
        let details = bridge_port_details(&vm);
        assert!(details.contains("hairpin on"), "{details}");
        let observed = k.observe().await.unwrap();
        assert!(observed.unhairpinned.is_empty(), "{observed:?}");
        assert_eq!(seam_dataplane::plan(&want, &observed), vec![]);

        // Ports of an older agent (no hairpin mode): observed, a CHECK fails, one pass repairs.
        set_hairpin_by_hand(&pod.host_ifname, "off");
        set_hairpin_by_hand(&vm, "off");
        let observed = k.observe().await.unwrap();
        assert_eq!(
            observed.unhairpinned,
            [pod.host_ifname.clone(), vm.clone()].into()
        );
        assert!(k.check(&pod).await.is_err());
        let ops = seam_dataplane::plan(&want, &observed);
        assert_eq!(ops.len(), 2, "{ops:?}");
        for op in &ops {
            k.apply(op).await.unwrap();
            // Idempotent.
            k.apply(op).await.unwrap();
        }
        assert!(bridge_port_details(&pod.host_ifname).contains("hairpin on"));
        assert!(bridge_port_details(&vm).contains("hairpin on"));
        assert!(k.observe().await.unwrap().unhairpinned.is_empty());
        k.check(&pod).await.unwrap();
        // A port that is gone is nothing to repair.
        k.detach(&pod.host_ifname).await.unwrap();
        k.apply(&LinkOp::SetHairpin {
            ifname: pod.host_ifname.clone(),
        })
        .await
        .unwrap();
    });
}
