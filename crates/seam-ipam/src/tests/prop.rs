//! Property tests: arbitrary sequences of reserve/bind/release/gc/crash against a simulated
//! durable store.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use proptest::prelude::*;

use crate::{Ipam, IpamError, LeaseKey, PersistedState, Reuse};

const Q: u64 = 50;
const NETWORKS: [&str; 2] = ["n0", "n1"];
const SEGMENTS: [&str; 2] = ["s0", "s1"];

#[derive(Debug, Clone)]
enum Step {
    /// Reserve; when `persist` is false the process crashes before the changes are written.
    Reserve {
        key: usize,
        segment: usize,
        early: bool,
        persist: bool,
    },
    Bind {
        key: usize,
    },
    Release {
        key: usize,
    },
    Gc {
        network: usize,
        valid: u16,
    },
    Crash,
    Wait {
        ms: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..16usize, 0..2usize, prop::bool::weighted(0.2), prop::bool::weighted(0.9))
            .prop_map(|(key, segment, early, persist)| Step::Reserve { key, segment, early, persist }),
        2 => (0..16usize).prop_map(|key| Step::Bind { key }),
        4 => (0..16usize).prop_map(|key| Step::Release { key }),
        1 => (0..2usize, any::<u16>()).prop_map(|(network, valid)| Step::Gc { network, valid }),
        1 => Just(Step::Crash),
        2 => (0..80u64).prop_map(|ms| Step::Wait { ms }),
    ]
}

/// Key `i`: network `i % 2`, container `c{i / 2}`.
fn key(i: usize) -> LeaseKey {
    LeaseKey::new(NETWORKS[i % 2], format!("c{}", i / 2), "eth0")
}

/// The node's segments: s0 10.0.0.0/28 gw .1 with blocks .0/29 and .8/29 (13 usable: not .0,
/// .1, .15); s1 10.1.0.0/24 gw .254 with block .248/29 (6 usable: not .254, .255).
fn node() -> Ipam {
    let mut ipam = Ipam::new(Q);
    ipam.add_segment(
        "s0",
        "10.0.0.0/28".parse().unwrap(),
        "10.0.0.1".parse().unwrap(),
    )
    .unwrap();
    ipam.add_block("s0", "10.0.0.0/29".parse().unwrap())
        .unwrap();
    ipam.add_block("s0", "10.0.0.8/29".parse().unwrap())
        .unwrap();
    ipam.add_segment(
        "s1",
        "10.1.0.0/24".parse().unwrap(),
        "10.1.0.254".parse().unwrap(),
    )
    .unwrap();
    ipam.add_block("s1", "10.1.0.248/29".parse().unwrap())
        .unwrap();
    ipam
}

/// Usable addresses per segment, worked out independently of the implementation.
fn usable() -> BTreeMap<&'static str, BTreeSet<Ipv4Addr>> {
    let s0 = (0..16u8)
        .filter(|i| ![0, 1, 15].contains(i))
        .map(|i| Ipv4Addr::new(10, 0, 0, i));
    let s1 = (248..=255u8)
        .filter(|i| ![254, 255].contains(i))
        .map(|i| Ipv4Addr::new(10, 1, 0, i));
    [("s0", s0.collect()), ("s1", s1.collect())].into()
}

fn restore(durable: &PersistedState) -> Ipam {
    let mut ipam = node();
    let (leases, quarantine) = durable.restore_parts();
    let cleanup = ipam.restore(leases, quarantine).unwrap();
    assert!(
        cleanup.is_empty(),
        "nothing stale was ever persisted: {cleanup:?}"
    );
    ipam
}

/// The in-memory state matches the durable one and every address is accounted for.
fn check_invariants(ipam: &Ipam, durable: &PersistedState) {
    let mut seen = BTreeMap::new();
    for lease in ipam.leases() {
        let previous = seen.insert((lease.segment.clone(), lease.ip), lease.key.clone());
        assert!(
            previous.is_none(),
            "{} shared by {:?} and {}",
            lease.ip,
            previous,
            lease.key
        );
    }
    let live: BTreeMap<_, _> = ipam.leases().map(|l| (l.key.clone(), l.clone())).collect();
    assert_eq!(
        live, durable.leases,
        "in-memory leases differ from persisted ones"
    );
    for (segment, addrs) in usable() {
        let leased: BTreeSet<_> = ipam
            .leases()
            .filter(|l| l.segment == segment)
            .map(|l| l.ip)
            .collect();
        let quarantined: BTreeSet<_> = ipam
            .quarantined(segment)
            .into_iter()
            .map(|(ip, _)| ip)
            .collect();
        let persisted_q: BTreeSet<_> = durable
            .quarantine
            .keys()
            .filter(|(s, _)| s == segment)
            .map(|(_, ip)| *ip)
            .collect();
        assert_eq!(
            quarantined, persisted_q,
            "quarantine of {segment} differs from persisted"
        );
        assert!(leased.is_disjoint(&quarantined));
        assert!(
            leased.is_subset(&addrs) && quarantined.is_subset(&addrs),
            "address outside usable set"
        );
        assert_eq!(
            ipam.free_count(segment) + leased.len() + quarantined.len(),
            addrs.len(),
            "addresses of {segment} leaked"
        );
    }
}

fn run(steps: Vec<Step>) {
    let usable = usable();
    let mut durable = PersistedState::default();
    let mut ipam = node();
    let mut now = 0u64;
    for step in steps {
        match step {
            Step::Reserve {
                key: k,
                segment,
                early,
                persist,
            } => {
                let seg = SEGMENTS[segment];
                let key = key(k);
                let existing = ipam.lease(&key).cloned();
                let quarantine: BTreeMap<_, _> = ipam.quarantined(seg).into_iter().collect();
                let leased: BTreeSet<_> = ipam
                    .leases()
                    .filter(|l| l.segment == seg)
                    .map(|l| l.ip)
                    .collect();
                let never_used = usable[seg]
                    .iter()
                    .any(|ip| !leased.contains(ip) && !quarantine.contains_key(ip));
                let expired = |ip: &Ipv4Addr| quarantine.get(ip).is_some_and(|t| t + Q <= now);
                let any_expired = quarantine.keys().any(expired);
                let reuse = if early {
                    Reuse::AllowEarly
                } else {
                    Reuse::AfterQuarantine
                };
                match ipam.reserve_with(key.clone(), seg, "/ns", now, reuse) {
                    Ok((lease, changes)) => {
                        if let Some(existing) = existing {
                            assert_eq!(lease, existing);
                            assert!(changes.is_empty());
                        } else {
                            assert!(
                                usable[seg].contains(&lease.ip),
                                "handed out unusable {}",
                                lease.ip
                            );
                            assert!(
                                !leased.contains(&lease.ip),
                                "handed out leased {}",
                                lease.ip
                            );
                            if let Some(released) = quarantine.get(&lease.ip) {
                                assert!(
                                    !never_used,
                                    "reused {} while a never-used address was free",
                                    lease.ip
                                );
                                if !expired(&lease.ip) {
                                    assert!(
                                        early,
                                        "reused {} in quarantine without permission",
                                        lease.ip
                                    );
                                    assert!(
                                        !any_expired,
                                        "reused {} early while an expired one was free",
                                        lease.ip
                                    );
                                }
                                let oldest = quarantine
                                    .iter()
                                    .filter(|(ip, _)| expired(ip) == expired(&lease.ip))
                                    .map(|(_, t)| *t)
                                    .min();
                                assert_eq!(Some(*released), oldest, "not the oldest release");
                            }
                        }
                        if !persist {
                            ipam = restore(&durable);
                        } else {
                            durable.apply_all(&changes);
                        }
                    }
                    Err(IpamError::Exhausted { .. }) => {
                        assert!(
                            !never_used && !any_expired,
                            "exhausted with addresses to give"
                        );
                        assert!(
                            !early || quarantine.is_empty(),
                            "exhausted with quarantine and early reuse"
                        );
                    }
                    Err(IpamError::LeaseInOtherSegment { .. }) => {
                        assert!(existing.is_some_and(|l| l.segment != seg));
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            Step::Bind { key: k } => match ipam.bind(&key(k)) {
                Ok((_, changes)) => durable.apply_all(&changes),
                Err(e) => assert_eq!(e, IpamError::NoLease { key: key(k) }),
            },
            Step::Release { key: k } => {
                let had = ipam.lease(&key(k)).is_some();
                match ipam.release(&key(k), now) {
                    Some((_, changes)) => durable.apply_all(&changes),
                    None => assert!(!had),
                }
            }
            Step::Gc { network, valid } => {
                let valid: BTreeSet<_> = (0..8)
                    .filter(|i| valid & (1 << i) != 0)
                    .map(|i| (format!("c{i}"), "eth0".to_string()))
                    .collect();
                for (lease, changes) in ipam.gc(NETWORKS[network], &valid, now) {
                    assert_eq!(lease.key.network, NETWORKS[network]);
                    durable.apply_all(&changes);
                }
                assert!(ipam
                    .leases()
                    .filter(|l| l.key.network == NETWORKS[network])
                    .all(|l| valid.contains(&(l.key.container_id.clone(), l.key.ifname.clone()))));
            }
            Step::Crash => {
                ipam = restore(&durable);
                for lease in durable.leases.values() {
                    assert_eq!(ipam.lease(&lease.key), Some(lease), "persisted lease lost");
                }
            }
            Step::Wait { ms } => now += ms,
        }
        check_invariants(&ipam, &durable);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_duplicates_no_leaks_across_crashes(steps in prop::collection::vec(step(), 1..120)) {
        run(steps);
    }
}
