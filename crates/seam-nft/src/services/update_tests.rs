//! [`ServiceModel::update`] against [`ServiceModel::from_desired`]: random sequences of changes,
//! and timings at scale.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;

/// A small deterministic generator (xorshift64*): the same sequences on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn key(rng: &mut Rng) -> FrontendKey {
    let protocol = [PortProtocol::Tcp, PortProtocol::Udp, PortProtocol::Sctp]
        [usize::try_from(rng.below(3)).unwrap()];
    if rng.below(4) == 0 {
        FrontendKey::NodePort {
            protocol,
            port: 30000 + u16::try_from(rng.below(3)).unwrap(),
        }
    } else {
        FrontendKey::Address {
            addr: Ipv4Addr::new(10, 96, 0, u8::try_from(rng.below(6)).unwrap()),
            protocol,
            port: 80,
        }
    }
}

fn frontend(rng: &mut Rng, key: FrontendKey) -> Frontend {
    let mut backends: Vec<(Ipv4Addr, u16)> = (0..rng.below(5))
        .map(|_| {
            (
                Ipv4Addr::new(10, 1, 0, u8::try_from(rng.below(6)).unwrap()),
                8080,
            )
        })
        .collect();
    backends.sort_unstable();
    backends.dedup();
    Frontend {
        key,
        // Two Service ports: frontends of one share their affinity chains and sets.
        service: format!("test/s:{}", rng.below(2)),
        backends,
        affinity_timeout: [None, None, Some(10), Some(20)][usize::try_from(rng.below(4)).unwrap()],
        masquerade_outside: rng.below(2) == 0,
    }
}

fn desired_of(
    frontends: &BTreeMap<FrontendKey, Frontend>,
    rest: &DesiredServices,
) -> DesiredServices {
    DesiredServices {
        frontends: frontends.values().cloned().collect(),
        ..rest.clone()
    }
}

fn table(services: ServiceModel) -> crate::table::TableModel {
    crate::table::TableModel {
        services,
        ..Default::default()
    }
}

#[test]
fn an_updated_model_is_the_model_made_from_scratch() {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut frontends: BTreeMap<FrontendKey, Frontend> = BTreeMap::new();
        let mut rest = DesiredServices::default();
        let mut model = ServiceModel::from_desired(&desired_of(&frontends, &rest));
        for step in 0..60 {
            let before = model.clone();
            let mut changes: Vec<(FrontendKey, Option<Frontend>)> = Vec::new();
            for _ in 0..=rng.below(3) {
                let k = key(&mut rng);
                let now = (rng.below(3) != 0).then(|| frontend(&mut rng, k));
                match &now {
                    Some(f) => frontends.insert(k, f.clone()),
                    None => frontends.remove(&k),
                };
                changes.push((k, now));
            }
            if rng.below(5) == 0 {
                rest.hairpin =
                    [Ipv4Addr::new(10, 1, 0, u8::try_from(rng.below(6)).unwrap())].into();
                rest.lb_addresses = if rng.below(2) == 0 {
                    [Ipv4Addr::new(192, 0, 2, 1)].into()
                } else {
                    BTreeSet::new()
                };
                rest.segment_subnets =
                    [format!("10.1.{}.0/24", rng.below(2)).parse().unwrap()].into();
                rest.node_address = [None, Some(Ipv4Addr::new(192, 168, 0, 1))]
                    [usize::try_from(rng.below(2)).unwrap()];
                rest.snat_backends = [Ipv4Addr::new(
                    203,
                    0,
                    113,
                    u8::try_from(rng.below(3)).unwrap(),
                )]
                .into();
            }
            model.update(changes.iter().map(|(k, f)| (*k, f.as_ref())), &rest);
            let scratch = ServiceModel::from_desired(&desired_of(&frontends, &rest));
            assert_eq!(model, scratch, "seed {seed} step {step}");
            // The change it makes in the kernel is the one from scratch would make.
            let (old, new) = (table(before), table(model.clone()));
            let d = crate::table::delta(&old, &new);
            assert_eq!(d, crate::table::delta(&old, &table(scratch)));
            let mut t = old.listed();
            t.apply_batch(&d.switch).unwrap();
            t.apply_batch(&d.cleanup).unwrap();
            assert_eq!(t, new.listed(), "seed {seed} step {step}");
        }
    }
}

#[test]
fn a_model_read_back_is_counted_before_it_is_updated() {
    let mut rng = Rng(7);
    let frontends: BTreeMap<FrontendKey, Frontend> = (0..20)
        .map(|_| {
            let k = key(&mut rng);
            (k, frontend(&mut rng, k))
        })
        .collect();
    let rest = DesiredServices::default();
    let full = ServiceModel::from_desired(&desired_of(&frontends, &rest));
    // A model changed by operations (as a fake kernel's is) counts its chains' users again.
    let mut model = full;
    model.apply_op(&crate::TableOp::AddServiceBase).unwrap();
    let mut remaining = frontends.clone();
    for k in frontends.keys() {
        remaining.remove(k);
        model.update([(*k, None)], &rest);
        assert_eq!(
            model,
            ServiceModel::from_desired(&desired_of(&remaining, &rest))
        );
    }
    assert!(model.chains.is_empty() && model.affinity_sets.is_empty());
}

/// `n` Services of `per` backends each, at `10.96.0.0/16` and up.
fn many(n: u32, per: u32) -> DesiredServices {
    let frontends = (0..n)
        .map(|i| Frontend {
            key: FrontendKey::Address {
                addr: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + i),
                protocol: PortProtocol::Tcp,
                port: 80,
            },
            service: format!("test/s{i}:http"),
            backends: (0..per)
                .map(|b| {
                    let n = u32::from(Ipv4Addr::new(10, 1, 0, 1)) + (i * per + b) % 60_000;
                    (Ipv4Addr::from(n), 8080)
                })
                .collect(),
            affinity_timeout: None,
            masquerade_outside: false,
        })
        .collect();
    DesiredServices {
        frontends,
        ..DesiredServices::default()
    }
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    format!("p50 {:?} p99 {:?}", v[v.len() / 2], v[v.len() * 99 / 100])
}

#[test]
#[ignore = "timings at 10,000 Services x 10 backends (prints; run with --release --nocapture)"]
fn update_at_scale_timings() {
    let big = many(10_000, 10);
    let started = Instant::now();
    let base = ServiceModel::from_desired(&big);
    println!("from_desired, 10,000 x 10: {:?}", started.elapsed());
    let (mut scratch_adds, mut scratch_changes) = (Vec::new(), Vec::new());
    let (mut adds, mut changes) = (Vec::new(), Vec::new());
    let mut desired = big;
    let mut current = table(base.clone());
    let mut incremental = table(base);
    for i in 0..100u32 {
        // One Service added.
        let f = Frontend {
            key: FrontendKey::Address {
                addr: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 1)) + i),
                protocol: PortProtocol::Tcp,
                port: 80,
            },
            service: format!("test/new{i}:http"),
            backends: vec![
                (Ipv4Addr::new(10, 1, 0, 9), 8080),
                (Ipv4Addr::new(10, 1, 0, 10), 8080),
            ],
            affinity_timeout: None,
            masquerade_outside: false,
        };
        desired.frontends.push(f.clone());
        let started = Instant::now();
        let new = table(ServiceModel::from_desired(&desired));
        let d = crate::table::delta(&current, &new);
        scratch_adds.push(started.elapsed());
        current = new;
        let started = Instant::now();
        let mut next = incremental.clone();
        next.services.update([(f.key, Some(&f))], &desired);
        let d2 = crate::table::delta(&incremental, &next);
        adds.push(started.elapsed());
        assert_eq!(d, d2);
        incremental = next;
        // One endpoint changed.
        let k = usize::try_from(i).unwrap() * 7;
        desired.frontends[k].backends[3] = (
            Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 2, 0, 0)) + i),
            8080,
        );
        let f = desired.frontends[k].clone();
        let started = Instant::now();
        let new = table(ServiceModel::from_desired(&desired));
        let d = crate::table::delta(&current, &new);
        scratch_changes.push(started.elapsed());
        current = new;
        let started = Instant::now();
        let mut next = incremental.clone();
        next.services.update([(f.key, Some(&f))], &desired);
        let d2 = crate::table::delta(&incremental, &next);
        changes.push(started.elapsed());
        assert_eq!(d, d2);
        incremental = next;
    }
    assert_eq!(incremental.services, current.services);
    println!(
        "one Service added, from_desired + delta: {}",
        percentiles(scratch_adds)
    );
    println!(
        "one Service added, clone + update + delta: {}",
        percentiles(adds)
    );
    println!(
        "one endpoint changed, from_desired + delta: {}",
        percentiles(scratch_changes)
    );
    println!(
        "one endpoint changed, clone + update + delta: {}",
        percentiles(changes)
    );
}
