use super::*;
use proptest::prelude::*;

fn segment() -> Segment {
    Segment {
        name: "ns-default".into(),
        tenant: "default".into(),
        subnet: "10.240.0.0/20".parse().unwrap_or_else(|_| unreachable!()),
        gateway: Ipv4Addr::new(10, 240, 0, 1),
        vni: 4097,
        block_prefix: 26,
        namespace: Some("default".into()),
        snat: false,
        forwarding: Default::default(),
    }
}

#[test]
fn a_good_segment_validates() {
    assert_eq!(segment().validate(), Ok(()));
}

#[test]
fn every_segment_problem_is_reported_with_its_field() {
    let bad = Segment {
        name: "Bad_Name".into(),
        subnet: "10.240.0.5/20".parse().unwrap_or_else(|_| unreachable!()),
        gateway: Ipv4Addr::new(192, 168, 0, 1),
        vni: 0,
        block_prefix: 8,
        ..segment()
    };
    let err = bad.validate().err().unwrap_or_else(|| unreachable!());
    let paths: Vec<_> = err.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["name", "subnet", "gateway", "vni", "blockPrefix"]);
    assert!(err.to_string().contains("10.240.0.0/20"), "{err}");
}

#[test]
fn unknown_fields_are_rejected() {
    let json = r#"{"name":"a","tenant":"t","subnet":"10.0.0.0/24","gateway":"10.0.0.1","vni":1,"blockPrefix":26,"vlan":5}"#;
    let err = serde_json::from_str::<Segment>(json)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("unknown field `vlan`"), "{err}");
}

#[test]
fn snat_defaults_to_off_round_trips_and_must_be_a_boolean() {
    let old = r#"{"name":"a","tenant":"t","subnet":"10.0.0.0/24","gateway":"10.0.0.1","vni":1,"blockPrefix":26}"#;
    let mut s: Segment = serde_json::from_str(old).unwrap();
    assert!(
        !s.snat,
        "a segment written before the option existed does not masquerade"
    );
    s.snat = true;
    let text = serde_json::to_string(&s).unwrap();
    assert!(text.contains(r#""snat":true"#), "{text}");
    assert_eq!(serde_json::from_str::<Segment>(&text).unwrap(), s);
    let wrong = old.replace('}', r#","snat":"yes"}"#);
    let err = serde_json::from_str::<Segment>(&wrong)
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected a boolean"), "{err}");
}

proptest! {
    #[test]
    fn object_parsers_never_panic(s in "\\PC{0,200}") {
        let _ = serde_json::from_str::<Segment>(&s);
        let _ = serde_json::from_str::<Endpoint>(&s);
        let _ = serde_json::from_str::<Node>(&s);
        let _ = serde_json::from_str::<WatchEvent>(&s);
    }

    #[test]
    fn validated_segments_hold_their_gateway(a in any::<u32>(), len in 8u8..=30, gw in any::<u32>()) {
        let subnet = Ipv4Net::new(Ipv4Addr::from(a), len).unwrap_or_else(|_| unreachable!()).trunc();
        let s = Segment { subnet, gateway: Ipv4Addr::from(gw), block_prefix: len, ..segment() };
        if s.validate().is_ok() {
            prop_assert!(subnet.contains(&s.gateway));
        }
    }
}

#[test]
fn forwarding_defaults_to_routed_round_trips_and_refuses_other_values() {
    let json = serde_json::to_value(segment()).unwrap_or_default();
    assert!(
        json.get("forwarding").is_none(),
        "the default is left out: {json}"
    );
    let overlay = Segment {
        forwarding: SegmentForwarding::Overlay,
        ..segment()
    };
    let json = serde_json::to_value(&overlay).unwrap_or_default();
    assert_eq!(json["forwarding"], "overlay");
    let back: Segment = serde_json::from_value(json.clone()).unwrap_or_else(|_| segment());
    assert_eq!(back, overlay);
    let mut wrong = json;
    wrong["forwarding"] = "bridged".into();
    assert!(serde_json::from_value::<Segment>(wrong).is_err());
}

#[test]
fn segment_encap_is_always_when_absent_and_published_only_when_cross_subnet() {
    let old: Node = serde_json::from_str(r#"{"name":"n1","underlayIp":"198.18.0.11"}"#)
        .unwrap_or_else(|_| unreachable!());
    assert_eq!(old.segment_encap, TransitEncap::Always);
    let json = serde_json::to_value(&old).unwrap_or_default();
    assert!(json.get("segmentEncap").is_none(), "{json}");
    let routed = Node {
        segment_encap: TransitEncap::CrossSubnet,
        ..old
    };
    let json = serde_json::to_value(&routed).unwrap_or_default();
    assert_eq!(json["segmentEncap"], "crossSubnet");
}

#[test]
fn namespace_validation_reports_every_problem() {
    let ns = Namespace::named("blue");
    assert_eq!(ns.validate(), Ok(()));
    assert_eq!(ns.labels[NAMESPACE_NAME_LABEL], "blue");
    let bad = Namespace {
        name: "Blue".into(),
        labels: [
            ("ok/key".to_string(), "-bad".to_string()),
            ("/x".to_string(), "v".to_string()),
        ]
        .into_iter()
        .collect(),
        tenant: Some("T".into()),
    };
    let err = bad.validate().unwrap_err();
    let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["name", "labels./x", "labels.ok/key", "tenant"]);
}

#[test]
fn snapshots_parse_across_versions() {
    // A snapshot from before namespaces and policies existed.
    let old = r#"{"revision":3,"nodes":[],"segments":[],"blocks":[],"endpoints":[]}"#;
    let snap: Snapshot = serde_json::from_str(old).unwrap();
    assert!(snap.namespaces.is_empty() && snap.policies.is_empty());
    // A snapshot with fields this version does not know.
    let newer = r#"{"revision":3,"nodes":[],"segments":[],"blocks":[],"endpoints":[],"future":1}"#;
    assert!(serde_json::from_str::<Snapshot>(newer).is_ok());
}

#[test]
fn policy_names_mark_cluster_scope() {
    assert_eq!(policy_name("Contract", None, "web"), "Contract/_/web");
    assert_eq!(
        policy_name("NetworkPolicy", Some("x"), "deny"),
        "NetworkPolicy/x/deny"
    );
    for kind in ObjectKind::ALL {
        assert_eq!(ObjectKind::from_plural(kind.plural()), Some(kind));
    }
}

#[test]
fn endpoint_ports_round_trip_default_to_none_and_are_validated() {
    let old = r#"{"name":"x/a","kind":"pod","namespace":"x","segment":"x","node":"n1","ip":"10.240.0.2","mac":"0a:58:0a:f0:00:02"}"#;
    let mut ep: Endpoint = serde_json::from_str(old).unwrap();
    assert!(ep.ports.is_empty());
    assert!(!serde_json::to_string(&ep).unwrap().contains("ports"));
    ep.ports = vec![ContainerPort {
        name: "serve-80-tcp".into(),
        port: 80,
        protocol: PortProtocol::Tcp,
    }];
    let text = serde_json::to_string(&ep).unwrap();
    assert!(
        text.contains(r#""ports":[{"name":"serve-80-tcp","port":80,"protocol":"TCP"}]"#),
        "{text}"
    );
    assert_eq!(serde_json::from_str::<Endpoint>(&text).unwrap(), ep);
    assert!(ep.validate().is_ok());
    ep.ports.push(ContainerPort {
        name: "Bad--".into(),
        port: 0,
        protocol: PortProtocol::Udp,
    });
    ep.ports.push(ContainerPort {
        name: "serve-80-tcp".into(),
        port: 81,
        protocol: PortProtocol::Udp,
    });
    let err = ep.validate().unwrap_err().to_string();
    for needle in [
        "ports[1].name",
        "ports[1].port",
        "ports[2].name: \"serve-80-tcp\" is named twice",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    for (name, ok) in [
        ("http", true),
        ("a", true),
        ("123456789012345", false),
        ("12345678901234a", true),
        ("1", false),
        ("-a", false),
        ("a-", false),
        ("a--b", false),
        ("a-b", true),
        ("UP", false),
    ] {
        assert_eq!(is_valid_port_name(name), ok, "{name}");
    }
    let bad = text.replace(r#""protocol":"TCP""#, r#""protocol":"ICMP""#);
    assert!(serde_json::from_str::<Endpoint>(&bad).is_err());
}

#[test]
fn tenants_default_to_policy_reject_unknown_fields_and_are_validated() {
    let t: Tenant = serde_json::from_str(r#"{"name":"t1"}"#).unwrap();
    assert_eq!(t, Tenant::named("t1"));
    assert_eq!(t.isolation, IsolationMode::Policy);
    let t: Tenant =
        serde_json::from_str(r#"{"name":"t1","isolation":"multitenant","global":true}"#).unwrap();
    assert_eq!(t.isolation, IsolationMode::Multitenant);
    assert!(t.global);
    assert_eq!(
        serde_json::to_value(&t).unwrap(),
        serde_json::json!({"name": "t1", "isolation": "multitenant", "global": true})
    );
    assert!(serde_json::from_str::<Tenant>(r#"{"name":"t1","isolation":"subnet"}"#).is_err());
    assert!(serde_json::from_str::<Tenant>(r#"{"name":"t1","mode":"flat"}"#).is_err());
    assert!(t.validate().is_ok());
    let err = Tenant::named("Bad_Name").validate().unwrap_err();
    assert_eq!(err.errors[0].path, "name");
    assert_eq!(ObjectKind::from_plural("tenants"), Some(ObjectKind::Tenant));
    // Snapshots from before tenants existed still decode.
    let snap: Snapshot = serde_json::from_str(
        r#"{"revision":1,"nodes":[],"segments":[],"blocks":[],"endpoints":[]}"#,
    )
    .unwrap();
    assert!(snap.tenants.is_empty());
}

fn pod(labels: &[(&str, &str)]) -> Endpoint {
    Endpoint {
        name: "x/a".into(),
        kind: EndpointKind::Pod,
        namespace: "x".into(),
        segment: "ns-x".into(),
        node: "n1".into(),
        ip: Ipv4Addr::new(10, 240, 0, 2),
        mac: crate::endpoint_mac(Ipv4Addr::new(10, 240, 0, 2)),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        container_id: None,
        ifname: None,
        ports: Vec::new(),
        conditions: None,
    }
}

#[test]
fn endpoint_labels_are_bounded_as_kubernetes_bounds_them() {
    // A DNS subdomain of 253 characters: four labels of 61 and one of 5, dot-separated.
    let label = "a".repeat(61);
    let prefix = format!("{label}.{label}.{label}.{label}.{}", "b".repeat(5));
    assert_eq!(prefix.len(), 253);
    let longest_key = format!("{prefix}/{}", "k".repeat(63));
    let v63 = "v".repeat(63);
    assert_eq!(
        pod(&[("app", "web"), (&longest_key, &v63), ("empty", "")]).validate(),
        Ok(())
    );
    let megabyte = "v".repeat(1 << 20);
    let err = pod(&[("app", &megabyte)]).validate().unwrap_err();
    let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["labels.app", "."], "{err}");
    let text = err.to_string();
    assert!(text.len() < 1000, "the value is not echoed whole: {text}");
    assert!(text.contains("MAX_RECORD_BYTES"), "{text}");
    for bad_key in [
        format!("{prefix}c/k"),
        format!("p/{}", "k".repeat(64)),
        "-p.x/k".to_string(),
        "p./k".to_string(),
        "a/b/c".to_string(),
        "/k".to_string(),
    ] {
        let err = pod(&[(&bad_key, "v")]).validate().unwrap_err();
        assert_eq!(err.errors[0].path, format!("labels.{bad_key}"), "{err}");
    }
    let err = pod(&[("app", &"v".repeat(64))]).validate().unwrap_err();
    assert_eq!(err.errors[0].path, "labels.app");
}

#[test]
fn endpoint_size_and_named_ports_are_bounded() {
    let mut ep = pod(&[]);
    ep.ports = (0..=crate::bounds::MAX_ENDPOINT_PORTS)
        .map(|i| ContainerPort {
            name: format!("p{i}"),
            port: 1000 + i as u16,
            protocol: PortProtocol::Tcp,
        })
        .collect();
    let err = ep.validate().unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    assert_eq!(err.errors[0].path, "ports");
    // Valid labels, but too many of them for one record.
    let many: Vec<(String, String)> = (0..300)
        .map(|i| (format!("key-{i:03}-{}", "k".repeat(50)), "v".repeat(63)))
        .collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let err = pod(&refs).validate().unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    assert_eq!(err.errors[0].path, ".");
}

#[test]
fn a_label_key_prefix_is_checked_as_kubernetes_checks_a_dns_subdomain() {
    // Kubernetes bounds the whole prefix (253), not each dot-separated part.
    let long_part = "a".repeat(70);
    for good in [
        format!("{long_part}.example.com/app"),
        format!("{long_part}/app"),
        "a.b-c.d1/Name_x.y".to_string(),
        format!("{}/k", "a".repeat(253)),
    ] {
        assert!(is_valid_label_key(&good), "{good}");
    }
    for bad in [
        format!("{}/k", "a".repeat(254)),
        "a..b/k".to_string(),
        ".a/k".to_string(),
        "a./k".to_string(),
        "a.-b/k".to_string(),
        "a-.b/k".to_string(),
        "A.b/k".to_string(),
        "a_b/k".to_string(),
        "/k".to_string(),
        "a/".to_string(),
        "a/-k".to_string(),
        "a/k_".to_string(),
        format!("a/{}", "k".repeat(64)),
    ] {
        assert!(!is_valid_label_key(&bad), "{bad}");
    }
}

#[test]
fn a_nodes_underlay_mac_is_optional_round_trips_and_must_be_unicast() {
    let old: Node =
        serde_json::from_str(r#"{"name":"gw1","underlayIp":"198.18.1.1","role":"gateway"}"#)
            .unwrap();
    assert_eq!(old.underlay_mac, None);
    assert!(!serde_json::to_string(&old).unwrap().contains("underlayMac"));
    let with: Node = serde_json::from_str(
        r#"{"name":"gw1","underlayIp":"198.18.1.1","role":"gateway","underlayMac":"02:00:00:00:01:01"}"#,
    )
    .unwrap();
    assert_eq!(with.underlay_mac, Some(MacAddr([2, 0, 0, 0, 1, 1])));
    assert!(with.validate().is_ok());
    let back: Node = serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
    assert_eq!(back, with);
    let multicast = Node {
        underlay_mac: Some(MacAddr([1, 0, 0x5e, 0, 0, 1])),
        segment_encap: Default::default(),
        ..with
    };
    let err = multicast.validate().unwrap_err().to_string();
    assert!(err.contains("underlayMac"), "{err}");
}
