//! Unit tests, one per rule; the property tests are in `tests/prop.rs`.

mod prop;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::{Change, Ipam, IpamError, Lease, LeaseKey, LeaseState, PersistedState, Reuse};

const Q: u64 = 1_000;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn key(c: &str) -> LeaseKey {
    LeaseKey::new("net", c, "eth0")
}

/// Segment `seg` 10.0.0.0/29, gateway .1, with the whole subnet as one block: usable .2-.6.
fn small() -> Ipam {
    let mut ipam = Ipam::new(Q);
    ipam.add_segment("seg", net("10.0.0.0/29"), ip("10.0.0.1"))
        .unwrap();
    ipam.add_block("seg", net("10.0.0.0/29")).unwrap();
    ipam
}

fn take_all(ipam: &mut Ipam, now: u64) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for i in 0.. {
        match ipam.reserve(key(&format!("c{i}")), "seg", "/ns", now) {
            Ok((lease, _)) => out.push(lease.ip),
            Err(IpamError::Exhausted { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    out
}

#[test]
fn gateway_network_and_broadcast_are_never_handed_out() {
    let mut ipam = small();
    assert_eq!(ipam.free_count("seg"), 5);
    let got = take_all(&mut ipam, 0);
    let want: Vec<_> = (2..=6).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
    assert_eq!(got, want);
    assert_eq!(ipam.free_count("seg"), 0);
}

#[test]
fn block_edges_inside_a_larger_subnet_are_usable() {
    let mut ipam = Ipam::new(Q);
    ipam.add_segment("seg", net("10.0.0.0/24"), ip("10.0.0.1"))
        .unwrap();
    ipam.add_block("seg", net("10.0.0.8/30")).unwrap();
    assert_eq!(
        ipam.free_count("seg"),
        4,
        "block network/broadcast are ordinary hosts of the subnet"
    );
    ipam.add_block("seg", net("10.0.0.0/30")).unwrap();
    assert_eq!(
        ipam.free_count("seg"),
        4 + 2,
        ".0 (network) and .1 (gateway) excluded"
    );
}

#[test]
fn reserve_is_idempotent() {
    let mut ipam = small();
    let (first, changes) = ipam.reserve(key("a"), "seg", "/ns/a", 5).unwrap();
    assert_eq!(first.state, LeaseState::Pending);
    assert_eq!(changes, vec![Change::PutLease(first.clone())]);
    let (again, changes) = ipam.reserve(key("a"), "seg", "/ns/other", 9).unwrap();
    assert_eq!(again, first);
    assert!(changes.is_empty());
    assert_eq!(ipam.leases().count(), 1);
    assert!(matches!(
        ipam.reserve(key("a"), "other", "/ns", 9),
        Err(IpamError::LeaseInOtherSegment { .. })
    ));
}

#[test]
fn bind_marks_bound_once() {
    let mut ipam = small();
    let (lease, _) = ipam.reserve(key("a"), "seg", "/ns", 0).unwrap();
    let (bound, changes) = ipam.bind(&key("a")).unwrap();
    assert_eq!(
        bound,
        Lease {
            state: LeaseState::Bound,
            ..lease
        }
    );
    assert_eq!(changes, vec![Change::PutLease(bound.clone())]);
    assert!(ipam.bind(&key("a")).unwrap().1.is_empty());
    assert_eq!(
        ipam.bind(&key("zz")),
        Err(IpamError::NoLease { key: key("zz") })
    );
}

#[test]
fn release_quarantines_and_is_idempotent() {
    let mut ipam = small();
    let (lease, _) = ipam.reserve(key("a"), "seg", "/ns", 0).unwrap();
    let (released, changes) = ipam.release(&key("a"), 7).unwrap();
    assert_eq!(released, lease);
    assert_eq!(
        changes,
        vec![
            Change::DeleteLease(key("a")),
            Change::PutQuarantine {
                segment: "seg".into(),
                ip: lease.ip,
                released_ms: 7
            },
        ]
    );
    assert_eq!(ipam.quarantined("seg"), vec![(lease.ip, 7)]);
    assert!(ipam.release(&key("a"), 8).is_none());
}

#[test]
fn quarantined_address_is_reused_last_and_only_after_expiry() {
    let mut ipam = small();
    let (a, _) = ipam.reserve(key("a"), "seg", "/ns", 0).unwrap();
    ipam.release(&key("a"), 10).unwrap();
    // The other four never-used addresses come first, even long after expiry.
    let rest = take_all(&mut ipam, 10 + 10 * Q);
    assert_eq!(rest.len(), 5, "four fresh, then the expired one");
    assert!(!rest[..4].contains(&a.ip));
    assert_eq!(rest[4], a.ip);
}

#[test]
fn quarantine_blocks_reuse_until_expired_unless_allowed() {
    let mut ipam = small();
    let all = take_all(&mut ipam, 0);
    assert_eq!(all.len(), 5);
    ipam.release(&key("c3"), 100).unwrap();
    ipam.release(&key("c1"), 200).unwrap();
    // Nothing fresh, nothing expired: exhausted, and says what is in quarantine.
    assert_eq!(
        ipam.reserve(key("x"), "seg", "/ns", 150),
        Err(IpamError::Exhausted {
            segment: "seg".into(),
            quarantined: 2
        })
    );
    // Early reuse takes the oldest release and removes its quarantine entry.
    let (lease, changes) = ipam
        .reserve_with(key("x"), "seg", "/ns", 150, Reuse::AllowEarly)
        .unwrap();
    assert_eq!(lease.ip, all[3]);
    assert_eq!(
        changes[0],
        Change::DeleteQuarantine {
            segment: "seg".into(),
            ip: all[3]
        }
    );
    // After expiry the other one is handed out normally.
    assert!(ipam.reserve(key("y"), "seg", "/ns", 200 + Q - 1).is_err());
    let (lease, _) = ipam.reserve(key("y"), "seg", "/ns", 200 + Q).unwrap();
    assert_eq!(lease.ip, all[1]);
}

#[test]
fn expired_addresses_are_reused_oldest_release_first() {
    let mut ipam = small();
    let all = take_all(&mut ipam, 0);
    for (i, c) in ["c4", "c0", "c2"].iter().enumerate() {
        ipam.release(&key(c), 10 * i as u64).unwrap();
    }
    let now = 10 * Q;
    let order: Vec<_> = ["x", "y", "z"]
        .iter()
        .map(|c| ipam.reserve(key(c), "seg", "/ns", now).unwrap().0.ip)
        .collect();
    assert_eq!(order, vec![all[4], all[0], all[2]]);
}

#[test]
fn next_fit_spreads_fresh_addresses() {
    let mut ipam = Ipam::new(Q);
    ipam.add_segment("seg", net("10.0.0.0/24"), ip("10.0.0.1"))
        .unwrap();
    ipam.add_block("seg", net("10.0.0.0/28")).unwrap();
    let (a, _) = ipam.reserve(key("a"), "seg", "/ns", 0).unwrap();
    ipam.release(&key("a"), 0).unwrap();
    let (b, _) = ipam.reserve(key("b"), "seg", "/ns", 0).unwrap();
    assert_eq!((a.ip, b.ip), (ip("10.0.0.2"), ip("10.0.0.3")));
    // A new block below the cursor is used after the cursor wraps.
    ipam.add_block("seg", net("10.0.0.16/30")).unwrap();
    let (c, _) = ipam.reserve(key("c"), "seg", "/ns", 0).unwrap();
    assert_eq!(c.ip, ip("10.0.0.4"));
}

#[test]
fn exhaustion_then_new_block() {
    let mut ipam = small();
    take_all(&mut ipam, 0);
    assert!(matches!(
        ipam.reserve(key("new"), "seg", "/ns", 0),
        Err(IpamError::Exhausted { quarantined: 0, .. })
    ));
    let mut ipam2 = Ipam::new(Q);
    ipam2
        .add_segment("seg", net("10.0.0.0/24"), ip("10.0.0.1"))
        .unwrap();
    ipam2.add_block("seg", net("10.0.0.4/30")).unwrap();
    take_all(&mut ipam2, 0);
    ipam2.add_block("seg", net("10.0.0.8/30")).unwrap();
    let (lease, _) = ipam2.reserve(key("new"), "seg", "/ns", 0).unwrap();
    assert_eq!(lease.ip, ip("10.0.0.8"));
    assert_eq!(
        ipam2.reserve(key("z"), "nope", "/ns", 0),
        Err(IpamError::UnknownSegment {
            segment: "nope".into()
        })
    );
}

#[test]
fn blocks_outside_subnet_or_overlapping_are_rejected() {
    let mut ipam = Ipam::new(Q);
    ipam.add_segment("a", net("10.0.0.0/24"), ip("10.0.0.1"))
        .unwrap();
    ipam.add_segment("b", net("10.1.0.0/24"), ip("10.1.0.1"))
        .unwrap();
    ipam.add_block("a", net("10.0.0.0/26")).unwrap();
    ipam.add_block("a", net("10.0.0.0/26")).unwrap(); // same block again: no-op
    assert_eq!(
        ipam.add_block("a", net("10.1.0.0/26")),
        Err(IpamError::BlockOutsideSubnet {
            segment: "a".into(),
            block: net("10.1.0.0/26"),
            subnet: net("10.0.0.0/24"),
        })
    );
    assert!(matches!(
        ipam.add_block("a", net("10.0.0.0/23")),
        Err(IpamError::BlockOverlap { .. }) | Err(IpamError::BlockOutsideSubnet { .. })
    ));
    assert_eq!(
        ipam.add_block("a", net("10.0.0.32/27")),
        Err(IpamError::BlockOverlap {
            segment: "a".into(),
            block: net("10.0.0.32/27"),
            other: net("10.0.0.0/26"),
            other_segment: "a".into(),
        })
    );
    assert!(matches!(
        ipam.add_block("a", net("10.0.0.0/25")),
        Err(IpamError::BlockOverlap { .. })
    ));
    assert!(matches!(
        ipam.add_block("zz", net("10.9.0.0/25")),
        Err(IpamError::UnknownSegment { .. })
    ));
    assert_eq!(ipam.blocks("a"), vec![net("10.0.0.0/26")]);
    assert_eq!(ipam.free_count("a"), 62);
}

#[test]
fn segment_rules() {
    let mut ipam = Ipam::new(Q);
    assert!(matches!(
        ipam.add_segment("a", net("10.0.0.0/24"), ip("10.9.0.1")),
        Err(IpamError::GatewayOutsideSubnet { .. })
    ));
    ipam.add_segment("a", net("10.0.0.0/24"), ip("10.0.0.1"))
        .unwrap();
    ipam.add_segment("a", net("10.0.0.0/24"), ip("10.0.0.1"))
        .unwrap();
    assert!(matches!(
        ipam.add_segment("a", net("10.0.0.0/24"), ip("10.0.0.2")),
        Err(IpamError::SegmentConflict { .. })
    ));
}

#[test]
fn restore_rebuilds_and_rejects_duplicates() {
    let mut ipam = small();
    let mut durable = PersistedState::default();
    for c in ["a", "b", "c"] {
        durable.apply_all(&ipam.reserve(key(c), "seg", "/ns", 0).unwrap().1);
    }
    durable.apply_all(&ipam.bind(&key("b")).unwrap().1);
    durable.apply_all(&ipam.release(&key("a"), 3).unwrap().1);

    let mut fresh = small();
    let (leases, quarantine) = durable.restore_parts();
    assert!(fresh
        .restore(leases.clone(), quarantine.clone())
        .unwrap()
        .is_empty());
    assert_eq!(
        fresh.leases().collect::<Vec<_>>(),
        ipam.leases().collect::<Vec<_>>()
    );
    assert_eq!(fresh.quarantined("seg"), ipam.quarantined("seg"));
    assert_eq!(fresh.free_count("seg"), ipam.free_count("seg"));

    // Two leases on one address: an error naming both keys, and nothing changed.
    let mut dup = leases[0].clone();
    dup.key = key("intruder");
    let mut bad = small();
    let err = bad
        .restore(vec![leases[0].clone(), dup], Vec::new())
        .unwrap_err();
    assert_eq!(
        err,
        IpamError::DuplicateAddress {
            segment: "seg".into(),
            ip: leases[0].ip,
            first: Box::new(leases[0].key.clone()),
            second: Box::new(key("intruder")),
        }
    );
    assert!(
        err.to_string().contains("attachment net/b/eth0") && err.to_string().contains("intruder")
    );
    assert_eq!(bad.leases().count(), 0);
    assert_eq!(bad.free_count("seg"), 5);

    // A lease outside the node's blocks is an error; stale quarantine entries are cleaned up.
    let mut outside = leases[0].clone();
    outside.ip = ip("10.0.0.7");
    assert!(matches!(
        small().restore(vec![outside], Vec::new()),
        Err(IpamError::OutsideBlocks { .. })
    ));
    let cleanup = small()
        .restore(
            leases.clone(),
            vec![
                ("seg".into(), leases[0].ip, 1),
                ("gone".into(), ip("1.2.3.4"), 1),
            ],
        )
        .unwrap();
    assert_eq!(cleanup.len(), 2);
}

#[test]
fn gc_releases_only_stale_leases_of_the_network() {
    let mut ipam = small();
    ipam.reserve(key("keep"), "seg", "/ns", 0).unwrap();
    ipam.reserve(key("stale"), "seg", "/ns", 0).unwrap();
    ipam.reserve(LeaseKey::new("other", "stale", "eth0"), "seg", "/ns", 0)
        .unwrap();
    let valid: BTreeSet<_> = [("keep".to_string(), "eth0".to_string())].into();
    let released = ipam.gc("net", &valid, 5);
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].0.key, key("stale"));
    assert_eq!(ipam.leases().count(), 2);
    assert!(ipam.gc("net", &valid, 6).is_empty());
}

#[test]
fn leases_and_changes_round_trip_as_camel_case_json() {
    let mut ipam = small();
    let (_, changes) = ipam
        .reserve(key("a"), "seg", "/var/run/netns/a", 42)
        .unwrap();
    let json = serde_json::to_value(&changes[0]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "op": "putLease",
            "key": { "network": "net", "containerId": "a", "ifname": "eth0" },
            "segment": "seg",
            "ip": "10.0.0.2",
            "state": "pending",
            "netns": "/var/run/netns/a",
            "createdMs": 42
        })
    );
    let back: Change = serde_json::from_value(json).unwrap();
    assert_eq!(back, changes[0]);
    let q = Change::PutQuarantine {
        segment: "seg".into(),
        ip: ip("10.0.0.2"),
        released_ms: 1,
    };
    let text = serde_json::to_string(&q).unwrap();
    assert!(text.contains("releasedMs"));
    assert_eq!(serde_json::from_str::<Change>(&text).unwrap(), q);
}

/// Segment `seg` 10.0.0.0/24 (gateway .1) with two /28 blocks got at time 100.
fn two_blocks() -> Ipam {
    let mut ipam = Ipam::new(Q);
    ipam.add_segment("seg", net("10.0.0.0/24"), ip("10.0.0.1"))
        .unwrap();
    ipam.add_block_at("seg", net("10.0.0.0/28"), 100).unwrap();
    ipam.add_block_at("seg", net("10.0.0.16/28"), 100).unwrap();
    ipam
}

#[test]
fn a_block_is_idle_only_without_leases_after_its_quarantine_and_the_idle_time() {
    const IDLE: u64 = 5_000;
    let mut ipam = two_blocks();
    let first = net("10.0.0.0/28");
    let second = net("10.0.0.16/28");
    // Never used: idle counts from when the node got the block.
    assert!(ipam.idle_blocks(100 + IDLE - 1, IDLE).is_empty());
    assert_eq!(
        ipam.idle_blocks(100 + IDLE, IDLE),
        vec![("seg".to_string(), first), ("seg".to_string(), second)]
    );

    // A lease in the first block keeps it, however long ago it was made.
    let (lease, _) = ipam.reserve(key("a"), "seg", "/ns", 200).unwrap();
    assert!(first.contains(&lease.ip));
    assert_eq!(
        ipam.idle_blocks(1_000_000, IDLE),
        vec![("seg".to_string(), second)]
    );

    // Released at 10_000: the block counts from then, and not before its quarantine ends,
    // even when the idle time is shorter than the quarantine.
    ipam.release(&key("a"), 10_000).unwrap();
    assert!(!ipam
        .idle_blocks(10_000 + IDLE - 1, IDLE)
        .contains(&("seg".to_string(), first)));
    assert!(ipam
        .idle_blocks(10_000 + IDLE, IDLE)
        .contains(&("seg".to_string(), first)));
    assert!(!ipam
        .idle_blocks(10_000 + Q - 1, 0)
        .contains(&("seg".to_string(), first)));
    assert!(ipam
        .idle_blocks(10_000 + Q, 0)
        .contains(&("seg".to_string(), first)));
}

#[test]
fn retiring_a_block_takes_its_addresses_away_and_refuses_a_busy_one() {
    let mut ipam = two_blocks();
    let first = net("10.0.0.0/28");
    let second = net("10.0.0.16/28");
    let (lease, _) = ipam.reserve(key("a"), "seg", "/ns", 200).unwrap();
    let free_before = ipam.free_count("seg");
    assert!(matches!(
        ipam.retire_block("seg", first, 300),
        Err(IpamError::BlockLeased { ip, .. }) if ip == lease.ip
    ));
    ipam.release(&key("a"), 400).unwrap();
    assert!(matches!(
        ipam.retire_block("seg", first, 400 + Q - 1),
        Err(IpamError::BlockQuarantined { until_ms, .. }) if until_ms == 400 + Q
    ));
    // Refusals changed nothing.
    assert!(ipam.holds_block("seg", first));
    assert_eq!(ipam.quarantined_count("seg"), 1);
    assert_eq!(ipam.free_count("seg"), free_before);

    let changes = ipam.retire_block("seg", first, 400 + Q).unwrap();
    assert_eq!(
        changes,
        vec![Change::DeleteQuarantine {
            segment: "seg".into(),
            ip: lease.ip
        }]
    );
    assert!(!ipam.holds_block("seg", first));
    assert_eq!(ipam.blocks("seg"), vec![second]);
    assert_eq!(ipam.quarantined_count("seg"), 0);
    assert_eq!(ipam.free_count("seg"), 16);
    // Every later lease lands in the block still held.
    for i in 0..16 {
        let (l, _) = ipam
            .reserve(key(&format!("b{i}")), "seg", "/ns", 500)
            .unwrap();
        assert!(second.contains(&l.ip), "{} outside {second}", l.ip);
    }
    assert!(matches!(
        ipam.reserve(key("late"), "seg", "/ns", 500),
        Err(IpamError::Exhausted { .. })
    ));
    assert!(matches!(
        ipam.retire_block("seg", first, 600),
        Err(IpamError::UnknownBlock { .. })
    ));
    assert!(matches!(
        ipam.retire_block("nope", first, 600),
        Err(IpamError::UnknownSegment { .. })
    ));
    // The block can be got again, whole.
    ipam.add_block_at("seg", first, 700).unwrap();
    assert_eq!(ipam.free_count("seg"), 14);
}
