use super::*;
use crate::flow::{FlowDirection, FlowReason};

fn peer(ip: [u8; 4], kind: PeerKind, ns: Option<&str>, name: Option<&str>) -> FlowPeer {
    FlowPeer {
        ip: Ipv4Addr::from(ip),
        port: Some(80),
        kind,
        namespace: ns.map(str::to_string),
        name: name.map(str::to_string),
    }
}

fn record(time_ms: u64, verdict: FlowVerdict, policy: Option<&str>) -> FlowRecord {
    FlowRecord {
        time_ms,
        node: "n1".to_string(),
        direction: FlowDirection::Ingress,
        protocol: "TCP".to_string(),
        src: peer([10, 1, 0, 5], PeerKind::Pod, Some("web"), Some("client")),
        dst: peer([10, 2, 0, 7], PeerKind::Pod, Some("db"), Some("pg-0")),
        verdict,
        reason: FlowReason::Rule,
        tier: Some("namespace".to_string()),
        policy: policy.map(str::to_string),
        rule: Some("np/db/allow/ingress/0".to_string()),
        service: None,
        suppressed: 0,
    }
}

#[test]
fn a_query_with_every_parameter_parses() {
    let f = FlowFilter::from_query(
        "from=web%2Fclient&to=10.2.0.0%2F16&node=n1&verdict=denied&policy=NetworkPolicy+db%2Fallow&since=1h30m&limit=50&follow=true",
    )
    .unwrap();
    assert_eq!(
        f.from,
        Some(PeerFilter::Endpoint {
            namespace: "web".into(),
            name: "client".into()
        })
    );
    assert_eq!(f.to, Some(PeerFilter::Net("10.2.0.0/16".parse().unwrap())));
    assert_eq!(f.node.as_deref(), Some("n1"));
    assert_eq!(f.verdict, Some(FlowVerdict::Denied));
    assert_eq!(
        f.policy,
        Some(PolicyFilter {
            kind: Some(PolicyKind::NetworkPolicy),
            namespace: Some("db".into()),
            name: "allow".into()
        })
    );
    assert_eq!(f.since_ms, Some(90 * 60 * 1000));
    assert_eq!(f.limit, Some(50));
    assert!(f.follow);
    // And back: what the client sends is what the controller reads.
    assert_eq!(FlowFilter::from_query(&f.to_query()).unwrap(), f);
    assert_eq!(FlowFilter::from_query("").unwrap(), FlowFilter::default());
    assert_eq!(FlowFilter::default().to_query(), "");
    assert!(FlowFilter::from_query("follow").unwrap().follow);
}

#[test]
fn every_peer_form_parses_and_matches() {
    let src = peer([10, 1, 0, 5], PeerKind::Pod, Some("web"), Some("client"));
    let node = peer([192, 168, 0, 1], PeerKind::Node, None, Some("n1"));
    let cases = [
        ("web/client", true, false),
        ("web/", true, false),
        ("db/", false, false),
        ("10.1.0.5", true, false),
        ("10.1.0.0/16", true, false),
        ("10.1.0.9", false, false),
        ("node:n1", false, true),
        ("node:n2", false, false),
        ("192.168.0.0/24", false, true),
    ];
    for (text, matches_pod, matches_node) in cases {
        let f = PeerFilter::parse(text).unwrap();
        assert_eq!(f.matches(&src), matches_pod, "{text} vs pod");
        assert_eq!(f.matches(&node), matches_node, "{text} vs node");
        assert_eq!(PeerFilter::parse(&f.to_string()).unwrap(), f, "{text}");
    }
    // A CIDR with host bits is read as its network.
    assert_eq!(
        PeerFilter::parse("10.1.2.3/16").unwrap().to_string(),
        "10.1.0.0/16"
    );
}

#[test]
fn malformed_parameters_are_refused_each_under_its_name() {
    let cases = [
        ("from=web%2Fa%2Fb", "from"),
        ("from=", "from"),
        ("to=node%3A", "to"),
        ("to=10.0.0.0%2F33", "to"),
        ("verdict=dropped", "verdict"),
        ("policy=Firewall+x", "policy"),
        ("policy=a%2Fb%2Fc", "policy"),
        ("since=5", "since"),
        ("since=5x", "since"),
        ("since=0s", "since"),
        ("since=31d", "since"),
        ("since=99999999999999999999h", "since"),
        ("limit=0", "limit"),
        ("limit=100001", "limit"),
        ("limit=x", "limit"),
        ("follow=yes", "follow"),
        ("node=N_1", "node"),
        ("colour=red", "query"),
        ("from=%zz", "from"),
        ("%zz=1", "query"),
    ];
    for (query, path) in cases {
        let err = FlowFilter::from_query(query).unwrap_err();
        assert_eq!(err.kind, FLOW_QUERY, "{query}");
        assert_eq!(err.errors.len(), 1, "{query}: {err}");
        assert_eq!(err.errors[0].path, path, "{query}: {err}");
    }
    // Every problem at once, and a parameter twice is one.
    let err = FlowFilter::from_query("verdict=x&since=y&limit=1&limit=2").unwrap_err();
    let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["verdict", "since", "limit"], "{err}");
    assert!(err.to_string().contains("given more than once"), "{err}");
    assert!(
        err.to_string()
            .contains("\"x\" is not a verdict: allowed or denied"),
        "{err}"
    );
}

#[test]
fn durations_read_as_people_write_them() {
    for (text, ms) in [
        ("30s", 30_000),
        ("5m", 300_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("1h30m", 5_400_000),
        ("250ms", 250),
        ("30d", MAX_FLOW_SINCE_MS),
    ] {
        assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
        assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms), "{text}");
    }
    for bad in ["", "m", "5", "-5m", "5 m", "1.5h", "5M"] {
        assert!(parse_duration_ms(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_policy_is_found_by_its_full_name_or_its_bare_name() {
    let in_db = "NetworkPolicy db/allow";
    let contract = "Contract web";
    for (filter, db, web) in [
        ("NetworkPolicy db/allow", true, false),
        ("networkpolicies db/allow", true, false),
        ("db/allow", true, false),
        ("allow", true, false),
        ("AdminNetworkPolicy allow", false, false),
        ("other/allow", false, false),
        ("Contract web", false, true),
        ("web", false, true),
        ("x/web", false, false),
    ] {
        let f = PolicyFilter::parse(filter).unwrap();
        assert_eq!(f.matches_record(in_db), db, "{filter} vs {in_db}");
        assert_eq!(f.matches_record(contract), web, "{filter} vs {contract}");
    }
    let f = PolicyFilter::parse("allow").unwrap();
    assert!(f.matches_object("NetworkPolicy", Some("db"), "allow"));
    assert!(!f.matches_object("NetworkPolicy", Some("db"), "allowed"));
}

#[test]
fn a_record_passes_only_when_every_part_matches() {
    let now = 1_000_000;
    let r = record(
        now - 10_000,
        FlowVerdict::Allowed,
        Some("NetworkPolicy db/allow"),
    );
    let q = |s: &str| FlowFilter::from_query(s).unwrap();
    assert!(q("").matches(&r, now));
    assert!(
        q("from=web%2F&to=db%2Fpg-0&verdict=allowed&policy=allow&since=30s&node=n1")
            .matches(&r, now)
    );
    for miss in [
        "from=db%2F",
        "to=web%2F",
        "verdict=denied",
        "policy=deny",
        "since=5s",
        "node=n2",
    ] {
        assert!(!q(miss).matches(&r, now), "{miss}");
    }
    // A record no policy decided matches no policy filter.
    let default = record(now, FlowVerdict::Denied, None);
    assert!(!q("policy=allow").matches(&default, now));
}

#[test]
fn to_a_services_address_matches_the_records_of_connections_sent_to_it() {
    let mut r = record(1_000, FlowVerdict::Allowed, None);
    r.service = Some(crate::flow::FlowService {
        service: "db/pg".into(),
        ip: Ipv4Addr::new(10, 96, 0, 10),
        port: 5432,
    });
    let to = |s: &str| FlowFilter {
        to: Some(PeerFilter::parse(s).unwrap()),
        ..FlowFilter::default()
    };
    // The ClusterIP the client used, and the backend the record names: both match.
    assert!(to("10.96.0.10").matches(&r, 1_000));
    assert!(to("10.96.0.0/12").matches(&r, 1_000));
    assert!(to("10.2.0.7").matches(&r, 1_000));
    assert!(!to("10.96.0.11").matches(&r, 1_000));
    // A Service address is no sender, and only an address names it.
    let from = FlowFilter {
        from: Some(PeerFilter::parse("10.96.0.10").unwrap()),
        ..FlowFilter::default()
    };
    assert!(!from.matches(&r, 1_000));
    assert!(!to("db/pg").matches(&r, 1_000));
    r.service = None;
    assert!(!to("10.96.0.10").matches(&r, 1_000));
}
