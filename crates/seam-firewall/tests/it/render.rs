//! The nftables text: golden files (set `UPDATE_GOLDEN=1` to rewrite them after a deliberate change),
//! determinism, and the comment/set-name limits of nftables.

use seam_firewall::render::comments;
use seam_firewall::{compile, nft_comment, render, RuleId};
use seam_nft::names::nft_set_name;

use crate::contracts::{inventory, policies};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/test_data");

fn check_golden(name: &str, actual: &str) {
    let path = format!("{GOLDEN}/{name}");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {path}: {e} (run with UPDATE_GOLDEN=1 to create it)"));
    if expected != actual {
        panic!("{name} differs from the golden file (UPDATE_GOLDEN=1 rewrites it):\n{actual}");
    }
}

#[test]
fn node_b1_golden() {
    let rs = compile(&policies(), &inventory(), &["b1/web", "b1/cli", "b1/vm"]).unwrap();
    check_golden("node-b1.nft", &render(&rs));
}

#[test]
fn empty_policies_golden() {
    let rs = compile(&seam_policy::PolicySet::new(), &inventory(), &["g1/web"]).unwrap();
    check_golden("node-g1-no-policies.nft", &render(&rs));
}

#[test]
fn rendering_is_deterministic() {
    let inv = inventory();
    let all: Vec<String> = inv.endpoints.iter().map(|e| e.reference()).collect();
    let a = render(&compile(&policies(), &inv, &all).unwrap());
    let b = render(&compile(&policies(), &inv, &all).unwrap());
    assert_eq!(a, b);
    assert!(a.starts_with("table inet seam {}\ndelete table inet seam\n"));
    assert!(a.contains("\ntable inet seam {\n"));
}

#[test]
fn every_rule_carries_its_id_and_a_counter() {
    let inv = inventory();
    let all: Vec<String> = inv.endpoints.iter().map(|e| e.reference()).collect();
    let rs = compile(&policies(), &inv, &all).unwrap();
    let text = render(&rs);
    let map = comments(&rs);
    for id in rs.rule_ids() {
        assert!(
            text.contains(&format!("comment \"{}\"", nft_comment(&id))),
            "{id}"
        );
        assert_eq!(map[&nft_comment(&id)], id);
    }
    for line in text.lines().filter(|l| l.contains("comment")) {
        assert!(line.contains("counter "), "{line}");
        assert!(!line.contains("reject"), "{line}");
    }
}

#[test]
fn long_ids_and_odd_names_fit_nftables() {
    let long = RuleId(format!("np/ns/{}/ingress/3", "a".repeat(200)));
    let c = nft_comment(&long);
    assert!(c.len() <= 127, "{}", c.len());
    assert_ne!(
        c,
        nft_comment(&RuleId(format!("np/ns/{}/ingress/4", "a".repeat(200))))
    );
    assert_eq!(
        nft_comment(&RuleId("anp/x/egress/0".into())),
        "anp/x/egress/0"
    );
    assert_eq!(nft_set_name("tenant/blue"), "tenant/blue");
    let odd = nft_set_name("tenant/blue team\"");
    assert!(
        odd.starts_with("x_tenant/blue_team__") && !odd.contains('"'),
        "{odd}"
    );
}
