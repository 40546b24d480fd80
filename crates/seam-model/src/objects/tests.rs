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
