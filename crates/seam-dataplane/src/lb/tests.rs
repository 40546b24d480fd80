#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use seam_model::{LoadBalancerIngress, ServicePort, ServiceSpec, ServiceStatus};

fn gateway(name: &str, k: u8) -> Node {
    Node {
        name: name.into(),
        underlay_ip: Ipv4Addr::new(198, 18, 1, k),
        role: NodeRole::Gateway,
        transit_encap: Default::default(),
        underlay_prefix_len: Some(15),
        underlay_mac: None,
        segment_encap: Default::default(),
    }
}

fn lb(name: &str, ips: &[Ipv4Addr]) -> Service {
    Service {
        name: name.into(),
        namespace: "web".into(),
        labels: Default::default(),
        annotations: Default::default(),
        spec: ServiceSpec {
            service_type: ServiceType::LoadBalancer,
            ports: vec![ServicePort {
                name: None,
                protocol: seam_model::PortProtocol::Tcp,
                port: 80,
                target_port: None,
                node_port: Some(30080),
                app_protocol: None,
            }],
            ..Default::default()
        },
        status: ServiceStatus {
            load_balancer: seam_model::LoadBalancerStatus {
                ingress: ips
                    .iter()
                    .map(|ip| LoadBalancerIngress {
                        ip: *ip,
                        ip_mode: Some("VIP".into()),
                    })
                    .collect(),
            },
            conditions: vec![],
        },
    }
}

fn addresses(n: u8) -> Vec<Ipv4Addr> {
    (1..=n)
        .map(|i| Ipv4Addr::new(198, 51, i / 100, i % 100))
        .collect()
}

fn leases(names: &[&str]) -> BTreeMap<String, NodeLease> {
    names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                NodeLease {
                    node: n.to_string(),
                },
            )
        })
        .collect()
}

#[test]
fn the_owner_is_the_highest_fnv1a_of_address_and_node() {
    let addr = Ipv4Addr::new(203, 0, 113, 101);
    let score = |node: &str| fnv1a(&format!("{addr}/{node}"));
    let expected = if score("gw1") > score("gw2") {
        "gw1"
    } else {
        "gw2"
    };
    assert_eq!(owner(addr, ["gw1", "gw2"]), Some(expected));
    // The order the gateways are listed in changes nothing.
    assert_eq!(owner(addr, ["gw2", "gw1"]), Some(expected));
    assert_eq!(owner(addr, ["gw1"]), Some("gw1"));
    assert_eq!(owner(addr, []), None);
    // Pinned values: every agent version must agree with every other.
    assert_eq!(fnv1a("203.0.113.101/gw1"), 0x842f_92b7_d84e_19ff);
}

#[test]
fn addresses_spread_over_the_gateways() {
    let all = addresses(200);
    let mut count = BTreeMap::new();
    for a in &all {
        *count
            .entry(owner(*a, ["gw1", "gw2", "gw3"]).unwrap())
            .or_insert(0) += 1;
    }
    assert_eq!(count.len(), 3, "{count:?}");
    assert!(count.values().all(|c| *c > 40), "{count:?}");
}

#[test]
fn a_gateway_whose_lease_is_gone_hands_its_addresses_over_and_no_other_address_moves() {
    let nodes: BTreeMap<String, Node> = [gateway("gw1", 1), gateway("gw2", 2), gateway("gw3", 3)]
        .into_iter()
        .chain([Node {
            role: NodeRole::Worker,
            ..gateway("n1", 11)
        }])
        .map(|n| (n.name.clone(), n))
        .collect();
    let services = [lb("a", &addresses(30)[..20]), lb("b", &addresses(30)[20..])];
    let all = leases(&["gw1", "gw2", "gw3", "n1"]);
    let served = |me: &str, leases: &BTreeMap<String, NodeLease>| {
        served_addresses(me, &services, &nodes, leases)
    };
    let before: BTreeMap<&str, BTreeSet<Ipv4Addr>> = ["gw1", "gw2", "gw3"]
        .into_iter()
        .map(|g| (g, served(g, &all)))
        .collect();
    // Every address is served exactly once.
    let union: BTreeSet<Ipv4Addr> = before.values().flatten().copied().collect();
    assert_eq!(union.len(), 30);
    assert_eq!(before.values().map(BTreeSet::len).sum::<usize>(), 30);
    // A worker, even with a lease, serves nothing.
    assert!(served("n1", &all).is_empty());

    // gw2's lease expires: gw2 gives everything up (its own view says so too), gw1 and gw3 keep
    // what they had and take gw2's between them.
    let without_gw2 = leases(&["gw1", "gw3"]);
    assert!(served("gw2", &without_gw2).is_empty());
    for g in ["gw1", "gw3"] {
        let after = served(g, &without_gw2);
        assert!(after.is_superset(&before[g]), "{g} lost an address");
        assert!(after
            .difference(&before[g])
            .all(|a| before["gw2"].contains(a)));
    }
    let union: BTreeSet<Ipv4Addr> = ["gw1", "gw3"]
        .into_iter()
        .flat_map(|g| served(g, &without_gw2))
        .collect();
    assert_eq!(union.len(), 30);

    // gw2 comes back: exactly its addresses return to it.
    for g in ["gw1", "gw2", "gw3"] {
        assert_eq!(served(g, &all), before[g]);
    }
    // A gateway node that was deleted (lease or not) serves nothing and owns nothing.
    let mut fewer = nodes.clone();
    fewer.remove("gw3");
    assert_eq!(
        served_addresses("gw1", &services, &fewer, &all).len()
            + served_addresses("gw2", &services, &fewer, &all).len(),
        30
    );
}

#[test]
fn only_load_balancer_services_with_an_address_are_served() {
    let mut cluster_ip = lb("c", &addresses(1));
    cluster_ip.spec.service_type = ServiceType::ClusterIP;
    let pending = lb("p", &[]);
    let nodes: BTreeMap<String, Node> = [("gw1".to_string(), gateway("gw1", 1))].into();
    let served = served_addresses("gw1", [&cluster_ip, &pending], &nodes, &leases(&["gw1"]));
    assert!(served.is_empty());
    let one = lb("a", &addresses(2));
    assert_eq!(
        served_addresses("gw1", [&one], &nodes, &leases(&["gw1"])),
        addresses(2).into_iter().collect()
    );
}

#[test]
fn the_plan_removes_first_adds_what_is_missing_and_refreshes_what_is_kept() {
    let [a, b, c] = [1, 2, 3].map(|i| Ipv4Addr::new(203, 0, 113, i));
    let set = |v: &[Ipv4Addr]| v.iter().copied().collect::<BTreeSet<_>>();
    let add = |addr| LbOp::Add {
        addr,
        lifetime_secs: 6,
    };
    let refresh = |addr, announce| LbOp::Refresh {
        addr,
        lifetime_secs: 6,
        announce,
    };
    assert_eq!(
        plan_lb(&set(&[a, b]), &set(&[b, c]), 6, false),
        [LbOp::Remove(c), add(a), refresh(b, false)]
    );
    // Converged: only the lifetimes move on, and again (idempotent).
    assert_eq!(
        plan_lb(&set(&[a, b]), &set(&[a, b]), 6, false),
        [refresh(a, false), refresh(b, false)]
    );
    // A restarted agent adopts what it holds and announces it once more.
    assert_eq!(
        plan_lb(&set(&[a, b]), &set(&[a, b]), 6, true),
        [refresh(a, true), refresh(b, true)]
    );
    // Owning nothing any more removes everything Seam added.
    assert_eq!(
        plan_lb(&set(&[]), &set(&[a, c]), 6, true),
        [LbOp::Remove(a), LbOp::Remove(c)]
    );
    assert!(plan_lb(&set(&[]), &set(&[]), 6, true).is_empty());
}

#[test]
fn a_gratuitous_arp_is_a_broadcast_request_for_the_address_itself() {
    let mac = [0x02, 0, 0, 0, 0, 0x0a];
    let frame = gratuitous_arp(mac, Ipv4Addr::new(203, 0, 113, 101));
    let expected: Vec<u8> = [
        &[0xff; 6][..],
        &mac,
        &[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1],
        &mac,
        &[203, 0, 113, 101],
        &[0; 6],
        &[203, 0, 113, 101],
    ]
    .concat();
    assert_eq!(&frame[..42], expected.as_slice());
    assert!(frame[42..].iter().all(|b| *b == 0));
}

#[test]
fn replies_to_an_external_client_go_through_its_gateway_or_through_a_live_one_when_it_died() {
    let nodes: BTreeMap<String, Node> = [gateway("gw1", 1), gateway("gw2", 2), gateway("gw3", 3)]
        .into_iter()
        .map(|n| (n.name.clone(), n))
        .collect();
    let bm1 = Ipv4Addr::new(203, 0, 113, 10);
    // Its gateway is alive: through it.
    assert_eq!(
        return_gateway("gw1", bm1, &nodes, &leases(&["gw1", "gw2"])),
        "gw1"
    );
    // No gateway holds a lease (gateways from before leases): as named.
    assert_eq!(return_gateway("gw1", bm1, &nodes, &leases(&[])), "gw1");
    // Its gateway died: the live one (of two left, the owner of its address, as every node says).
    assert_eq!(return_gateway("gw1", bm1, &nodes, &leases(&["gw2"])), "gw2");
    let live = leases(&["gw2", "gw3"]);
    let picked = return_gateway("gw1", bm1, &nodes, &live);
    assert_eq!(Some(picked), owner(bm1, ["gw2", "gw3"]));
}
