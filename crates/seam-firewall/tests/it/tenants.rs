//! Tenant operations (join, isolate, make-global) through the compiler: after each operation the compiled
//! rulesets, interpreted, agree with the engine on every pair and probe, on one node and per namespace, and the
//! forward path changes the way multitenant mode says it must.

use std::collections::BTreeMap;

use seam_firewall::{compile, evaluate_packet};
use seam_policy::{Inventory, PolicySet, Protocol};

use crate::cnp::cnp_policies;
use crate::contracts::{inventory, policies, PROBES};
use crate::oracle::mismatches;

fn placements(inv: &Inventory) -> Vec<Vec<Vec<String>>> {
    let mut per_ns: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for e in &inv.endpoints {
        per_ns.entry(&e.namespace).or_default().push(e.reference());
    }
    vec![
        vec![inv.endpoints.iter().map(|e| e.reference()).collect()],
        per_ns.into_values().collect(),
    ]
}

fn assert_agree(what: &str, set: &PolicySet, inv: &Inventory) {
    for placement in placements(inv) {
        let bad = mismatches(set, inv, &placement, &PROBES);
        assert!(
            bad.is_empty(),
            "{what}: {} mismatch(es) over {} node(s): {:#?}",
            bad.len(),
            placement.len(),
            &bad[..bad.len().min(10)]
        );
    }
}

/// Whether `src` reaches `dst` on TCP 5000 (a port no policy of the scenarios names) through the nodes of both
/// ends, each endpoint on its own node.
fn reaches(set: &PolicySet, inv: &Inventory, src: &str, dst: &str) -> bool {
    let (s, d) = (inv.endpoint(src).unwrap(), inv.endpoint(dst).unwrap());
    let src_node = compile(set, inv, &[src]).unwrap();
    let dst_node = compile(set, inv, &[dst]).unwrap();
    let (sa, da) = (s.addresses[0], d.addresses[0]);
    evaluate_packet(&src_node, sa, da, Protocol::Tcp, 5000).allowed()
        && evaluate_packet(&dst_node, sa, da, Protocol::Tcp, 5000).allowed()
}

#[test]
fn join_isolate_make_global_compiled_agree_with_the_engine() {
    // b1, b2: blue; r1: red; s1: shared (global); all multitenant. g1: green (flat), d1: default (policy).
    for (name, set) in [
        ("no policies", PolicySet::new()),
        ("contracts", policies()),
        ("contracts and CNPs", cnp_policies()),
    ] {
        let mut inv = inventory();
        assert_agree(&format!("{name}, initial"), &set, &inv);

        inv.join("b1", "r1").unwrap();
        assert_agree(&format!("{name}, r1 joined b1"), &set, &inv);

        inv.isolate("b2").unwrap();
        assert_agree(&format!("{name}, b2 isolated"), &set, &inv);

        inv.make_global("r1").unwrap();
        assert_agree(&format!("{name}, r1 global"), &set, &inv);

        inv.isolate("s1").unwrap();
        assert_agree(&format!("{name}, s1 no longer global"), &set, &inv);

        inv.join("s1", "g1").unwrap();
        assert_agree(&format!("{name}, g1 joined s1"), &set, &inv);
        inv.validate().unwrap();
    }
}

#[test]
fn the_forward_path_follows_the_tenant_operations() {
    let set = PolicySet::new();
    let mut inv = inventory();
    // Blue and red are isolated from each other, both reach the global tenant.
    assert!(!reaches(&set, &inv, "b1/cli", "r1/web"));
    assert!(!reaches(&set, &inv, "r1/cli", "b2/db"));
    assert!(reaches(&set, &inv, "r1/cli", "s1/dns") && reaches(&set, &inv, "s1/dns", "b1/web"));
    assert!(reaches(&set, &inv, "b1/cli", "b2/db"));

    // join: r1 in blue reaches b1 and b2, both ways.
    inv.join("b1", "r1").unwrap();
    assert!(reaches(&set, &inv, "b1/cli", "r1/web") && reaches(&set, &inv, "r1/cli", "b2/db"));

    // isolate: b2 is cut off from b1 and r1, still reaches the global tenant.
    let t = inv.isolate("b2").unwrap();
    assert_eq!(t, "b2");
    assert!(!reaches(&set, &inv, "b1/cli", "b2/db") && !reaches(&set, &inv, "b2/db", "r1/web"));
    assert!(reaches(&set, &inv, "b2/db", "s1/dns"));
    assert!(
        reaches(&set, &inv, "b1/cli", "r1/web"),
        "b1 and r1 stay joined"
    );

    // make_global: r1 reaches the isolated b2 again; b1 (its former tenant-mate) does not.
    inv.make_global("r1").unwrap();
    assert!(reaches(&set, &inv, "r1/cli", "b2/db") && reaches(&set, &inv, "b2/db", "r1/web"));
    assert!(!reaches(&set, &inv, "b1/cli", "b2/db"));

    // isolate undoes global: s1 becomes a tenant of its own, multitenant, and blue no longer reaches it.
    inv.isolate("s1").unwrap();
    assert!(!reaches(&set, &inv, "b1/cli", "s1/dns"));
    assert!(reaches(&set, &inv, "r1/cli", "s1/dns"), "r1 is global now");
}
