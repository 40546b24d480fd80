//! VMs through the API: attach leases an address and MAC and publishes a `vm` endpoint on the
//! hypervisor; detach keeps the lease, attach again gets the same; move keeps address and MAC
//! and moves the endpoint; delete releases; every bad input is a clear error and changes nothing.

use std::collections::BTreeMap;

use seam_model::{endpoint_mac, EndpointKind, NodeRole, Snapshot, VmAttach};

use crate::server::{endpoint, node, segment, Server};

fn hypervisor(name: &str, octet: u8) -> seam_model::Node {
    seam_model::Node {
        role: NodeRole::Hypervisor,
        ..node(name, octet)
    }
}

fn attach(name: &str, segment: &str, host: &str) -> VmAttach {
    VmAttach {
        name: name.to_string(),
        segment: segment.to_string(),
        host: host.to_string(),
        namespace: None,
        ip: None,
        mac: None,
        labels: Some(BTreeMap::from([("role".to_string(), "client".to_string())])),
        ports: None,
    }
}

/// Everything a user could see changed, except revisions.
fn state(s: Snapshot, vms: Vec<seam_model::Vm>) -> String {
    format!(
        "{:?}{:?}{:?}{:?}{:?}",
        s.nodes, s.segments, s.blocks, s.endpoints, vms
    )
}

#[tokio::test]
async fn vm_lifecycle_keeps_its_lease_until_deleted() {
    let srv = Server::memory().await;
    let c = &srv.client;
    c.put_node(&hypervisor("hv1", 1)).await.unwrap();
    c.put_node(&hypervisor("hv2", 2)).await.unwrap();
    c.put_segment(&segment("vms", "192.168.10.0/24", 100))
        .await
        .unwrap();

    let vm = c.attach_vm(&attach("web-vm", "vms", "hv1")).await.unwrap();
    // Highest free address (blocks grow from the bottom), MAC derived as for pods.
    assert_eq!(vm.ip, std::net::Ipv4Addr::new(192, 168, 10, 254));
    assert_eq!(vm.mac, endpoint_mac(vm.ip));
    assert_eq!(vm.namespace, "default");
    assert!(vm.attached && vm.port.starts_with("tv"));
    let ep = c.get_endpoint("default/web-vm").await.unwrap();
    assert_eq!(
        (ep.kind, ep.node.as_str(), ep.ip, ep.mac),
        (EndpointKind::Vm, "hv1", vm.ip, vm.mac)
    );
    assert_eq!(ep.labels["role"], "client");
    // Its namespace exists for namespace selectors.
    c.get_namespace("default").await.unwrap();

    // Stop: the endpoint goes, the lease stays; a new VM does not get its address.
    let stopped = c.detach_vm("web-vm").await.unwrap();
    assert!(!stopped.attached);
    assert!(c
        .get_endpoint("default/web-vm")
        .await
        .unwrap_err()
        .is_not_found());
    let other = c.attach_vm(&attach("db-vm", "vms", "hv2")).await.unwrap();
    assert_ne!(other.ip, vm.ip);
    // A block claimed now skips the VM addresses.
    let block = c.claim_block("vms", "hv1").await.unwrap();
    assert!(!block.cidr.contains(&vm.ip) && !block.cidr.contains(&other.ip));

    // Start again: same address and MAC.
    let started = c.attach_vm(&attach("web-vm", "vms", "hv1")).await.unwrap();
    assert_eq!((started.ip, started.mac), (vm.ip, vm.mac));

    // Move: same address and MAC, endpoint on the new host.
    let moved = c.move_vm("web-vm", "hv2").await.unwrap();
    assert_eq!(
        (moved.ip, moved.mac, moved.host.as_str()),
        (vm.ip, vm.mac, "hv2")
    );
    assert_eq!(c.get_endpoint("default/web-vm").await.unwrap().node, "hv2");

    // Delete releases: the next VM may take the address.
    c.delete_vm("web-vm").await.unwrap();
    assert!(c
        .get_endpoint("default/web-vm")
        .await
        .unwrap_err()
        .is_not_found());
    assert!(c.get_vm("web-vm").await.unwrap_err().is_not_found());
    let mut again = attach("new-vm", "vms", "hv1");
    again.ip = Some(vm.ip);
    assert_eq!(c.attach_vm(&again).await.unwrap().ip, vm.ip);
    assert_eq!(c.list_vms().await.unwrap().len(), 2);
    srv.stop().await;
}

#[tokio::test]
async fn bad_vm_input_is_a_clear_error_and_changes_nothing() {
    let srv = Server::memory().await;
    let c = &srv.client;
    c.put_node(&hypervisor("hv1", 1)).await.unwrap();
    c.put_node(&hypervisor("hv2", 2)).await.unwrap();
    c.put_node(&node("w1", 3)).await.unwrap();
    c.put_segment(&segment("vms", "192.168.10.0/24", 100))
        .await
        .unwrap();
    let block = c.claim_block("vms", "w1").await.unwrap();
    c.put_endpoint(&endpoint("default/pod-a", "vms", "w1", [192, 168, 10, 2]))
        .await
        .unwrap();
    let mut first = attach("vm-a", "vms", "hv1");
    first.ip = Some([192, 168, 10, 100].into());
    first.mac = Some("52:54:00:00:00:01".parse().unwrap());
    c.attach_vm(&first).await.unwrap();
    let before = state(c.snapshot().await.unwrap(), c.list_vms().await.unwrap());

    let cases: Vec<(&str, VmAttach, &str)> = vec![
        (
            "segment that does not exist",
            attach("vm-b", "nope", "hv1"),
            "segment \"nope\" not found",
        ),
        (
            "address outside the segment",
            VmAttach {
                ip: Some([10, 0, 0, 5].into()),
                ..attach("vm-b", "vms", "hv1")
            },
            "10.0.0.5 is outside segment \"vms\" subnet 192.168.10.0/24",
        ),
        (
            "address already leased to a VM",
            VmAttach {
                ip: Some([192, 168, 10, 100].into()),
                ..attach("vm-b", "vms", "hv1")
            },
            "ip 192.168.10.100 is already held by endpoint \"vm vm-a\"",
        ),
        (
            "address already leased to a pod",
            VmAttach {
                ip: Some([192, 168, 10, 2].into()),
                ..attach("vm-b", "vms", "hv1")
            },
            "lies in block",
        ),
        (
            "the gateway",
            VmAttach {
                ip: Some([192, 168, 10, 1].into()),
                ..attach("vm-b", "vms", "hv1")
            },
            "is the gateway",
        ),
        (
            "MAC already taken",
            VmAttach {
                mac: Some("52:54:00:00:00:01".parse().unwrap()),
                ..attach("vm-b", "vms", "hv1")
            },
            "mac 52:54:00:00:00:01 is already held by endpoint \"vm vm-a\"",
        ),
        (
            "MAC of a pod",
            VmAttach {
                mac: Some(endpoint_mac([192, 168, 10, 2].into())),
                ..attach("vm-b", "vms", "hv1")
            },
            "already held by endpoint \"default/pod-a\"",
        ),
        (
            "host that is not a hypervisor",
            attach("vm-b", "vms", "w1"),
            "node \"w1\" has role worker, not hypervisor",
        ),
        (
            "host that does not exist",
            attach("vm-b", "vms", "hv9"),
            "node \"hv9\" not found",
        ),
        (
            "multicast MAC",
            VmAttach {
                mac: Some("01:00:5e:00:00:01".parse().unwrap()),
                ..attach("vm-b", "vms", "hv1")
            },
            "not a unicast MAC",
        ),
        (
            "existing VM with another address",
            VmAttach {
                ip: Some([192, 168, 10, 101].into()),
                ..attach("vm-a", "vms", "hv1")
            },
            "holds address 192.168.10.100",
        ),
    ];
    for (what, request, message) in cases {
        let err = c.attach_vm(&request).await.unwrap_err();
        assert!(
            err.status().is_some_and(|s| (400..500).contains(&s)),
            "{what}: {err}"
        );
        assert!(err.to_string().contains(message), "{what}: {err}");
        let after = state(c.snapshot().await.unwrap(), c.list_vms().await.unwrap());
        assert_eq!(before, after, "{what} changed something");
    }
    let err = c.move_vm("vm-a", "w1").await.unwrap_err();
    assert!(err.to_string().contains("not hypervisor"), "{err}");
    assert!(c.move_vm("nope", "hv2").await.unwrap_err().is_not_found());
    assert!(c.delete_vm("nope").await.unwrap_err().is_not_found());
    let after = state(c.snapshot().await.unwrap(), c.list_vms().await.unwrap());
    assert_eq!(before, after);
    let _ = block;
    srv.stop().await;
}
