use super::*;
use serde_json::json;

fn attached() -> AttachResult {
    AttachResult {
        host_ifname: "seam1a2b3c".into(),
        host_mac: "0a:58:0a:01:00:01".parse().unwrap(),
        container_ifname: "eth0".into(),
        container_mac: "0a:58:0a:01:00:05".parse().unwrap(),
        sandbox: "/var/run/netns/pod1".into(),
        address: "10.1.0.5/24".parse().unwrap(),
        gateway: "10.1.0.1".parse().unwrap(),
        mtu: 1450,
        segment: "web".into(),
    }
}

fn dns() -> Dns {
    Dns {
        nameservers: vec!["10.96.0.10".into()],
        domain: Some("cluster.local".into()),
        search: vec![],
        options: vec![],
    }
}

/// Renders the ADD result for `version` without a prevResult.
fn render(version: CniVersion) -> Value {
    serde_json::to_value(add_result(version, &attached(), Some(&dns()), None)).unwrap()
}

#[test]
fn golden_1_1_0_has_interface_mtu_and_no_ip_version() {
    assert_eq!(
        render(CniVersion::V1_1_0),
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "seam1a2b3c", "mac": "0a:58:0a:01:00:01"},
                {"name": "eth0", "mac": "0a:58:0a:01:00:05", "mtu": 1450, "sandbox": "/var/run/netns/pod1"}
            ],
            "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
            "dns": {"nameservers": ["10.96.0.10"], "domain": "cluster.local"}
        })
    );
}

#[test]
fn golden_1_0_0_has_no_mtu() {
    assert_eq!(
        render(CniVersion::V1_0_0),
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "seam1a2b3c", "mac": "0a:58:0a:01:00:01"},
                {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/var/run/netns/pod1"}
            ],
            "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
            "dns": {"nameservers": ["10.96.0.10"], "domain": "cluster.local"}
        })
    );
}

#[test]
fn golden_pre_1_0_ips_carry_version() {
    for version in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
        assert_eq!(
            render(version),
            json!({
                "cniVersion": version.as_str(),
                "interfaces": [
                    {"name": "seam1a2b3c", "mac": "0a:58:0a:01:00:01"},
                    {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/var/run/netns/pod1"}
                ],
                "ips": [{"version": "4", "address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
                "dns": {"nameservers": ["10.96.0.10"], "domain": "cluster.local"}
            })
        );
    }
}

#[test]
fn no_dns_in_config_means_no_dns_in_result() {
    let v = serde_json::to_value(add_result(CniVersion::V1_0_0, &attached(), None, None)).unwrap();
    assert!(v.get("dns").is_none());
    let empty = Dns::default();
    let v = serde_json::to_value(add_result(
        CniVersion::V1_0_0,
        &attached(),
        Some(&empty),
        None,
    ))
    .unwrap();
    assert!(v.get("dns").is_none());
}

#[test]
fn prev_result_is_extended_with_fixed_interface_indexes() {
    let prev = CniResult::deserialize_value(&json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "macvlan0", "mac": "02:00:00:00:00:01", "sandbox": "/x", "pciID": "0000:00:01.0"}],
        "ips": [{"address": "fd00::5/64", "interface": 0}],
        "routes": [{"dst": "::/0", "priority": 10}],
        "dns": {"nameservers": ["fd00::53"]},
        "vendorExtension": {"k": "v"}
    }))
    .unwrap();
    let v = serde_json::to_value(add_result(
        CniVersion::V1_0_0,
        &attached(),
        None,
        Some(&prev),
    ))
    .unwrap();
    assert_eq!(
        v,
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "macvlan0", "mac": "02:00:00:00:00:01", "sandbox": "/x", "pciID": "0000:00:01.0"},
                {"name": "seam1a2b3c", "mac": "0a:58:0a:01:00:01"},
                {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/var/run/netns/pod1"}
            ],
            "ips": [
                {"address": "fd00::5/64", "interface": 0},
                {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 2}
            ],
            "routes": [{"dst": "::/0", "priority": 10}, {"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
            "dns": {"nameservers": ["fd00::53"]},
            "vendorExtension": {"k": "v"}
        })
    );
    // The config's dns wins over the previous plug-in's when it sets anything.
    let v = serde_json::to_value(add_result(
        CniVersion::V1_0_0,
        &attached(),
        Some(&dns()),
        Some(&prev),
    ))
    .unwrap();
    assert_eq!(v["dns"]["nameservers"], json!(["10.96.0.10"]));
}

#[test]
fn prev_result_ip_versions_follow_the_output_version() {
    let prev = CniResult::deserialize_value(&json!({
        "cniVersion": "0.4.0",
        "ips": [{"version": "6", "address": "fd00::5/64"}]
    }))
    .unwrap();
    let old = add_result(CniVersion::V0_4_0, &attached(), None, Some(&prev));
    let versions: Vec<_> = old.ips.iter().map(|i| i.version.as_deref()).collect();
    assert_eq!(versions, vec![Some("6"), Some("4")]);
    // The seam address points at the second interface we add, after none from prev.
    assert_eq!(old.ips[1].interface, Some(1));
    let new = add_result(CniVersion::V1_1_0, &attached(), None, Some(&prev));
    assert!(new.ips.iter().all(|i| i.version.is_none()));
}
