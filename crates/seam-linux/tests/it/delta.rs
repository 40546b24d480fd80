//! In-place changes of the table: after every change, the namespace changed in place holds exactly
//! what a namespace given the whole new table holds (canonical listings equal), whether the old
//! table came from memory or was read back from the kernel, across policy changes, pods moving
//! between classes and pods leaving and joining.

use seam_firewall::compile;
use seam_firewall::render::table;
use seam_linux::nft::{list_table, list_table_text};
use seam_linux::{apply_delta, apply_ruleset, netns};
use seam_nft::listing::{canonical_listing, chain_rules, parse_listing};
use seam_nft::names::{TABLE, TABLE_NAME};
use seam_nft::table::{delta, from_nft_json, full_text, TableModel};
use serde_json::Value;

use crate::firewall::{load, plan, policies, require_root, xyz_inventory};

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = netns::delete(n);
        }
    }
}

fn listing(ns: &str) -> Value {
    let listed = netns::run_in(&netns::path_of(ns), list_table)
        .unwrap()
        .unwrap();
    canonical_listing(&parse_listing(listed).unwrap())
}

#[test]
#[ignore = "privileged: netns"]
fn changes_in_place_equal_the_whole_table() {
    require_root();
    let base = format!("sdl{}", std::process::id());
    let guard = Namespaces(vec![format!("{base}a"), format!("{base}b")]);
    for n in &guard.0 {
        netns::create(n).unwrap();
    }
    let (changed, whole) = (&guard.0[0], &guard.0[1]);
    let model = load("model.json");
    let refs: Vec<String> = model["pods_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let plan = plan(&refs);
    let cases = load("cases.json");
    let cases = cases.as_array().unwrap();
    let mut previous: Option<TableModel> = None;
    let mut steps = 0;
    // Every 7th case (about 16 steps over all kinds of policies), each with a different set of
    // local pods so that endpoints join, leave and change class too.
    for (step, case) in cases.iter().step_by(7).enumerate() {
        let mut inv = xyz_inventory(&model, case, &plan);
        if step % 3 == 1 {
            inv.endpoints.pop();
        }
        let locals: Vec<String> = inv
            .endpoints
            .iter()
            .enumerate()
            .filter(|(i, _)| (i + step) % 3 != 0)
            .map(|(_, e)| e.reference())
            .collect();
        let Ok(set) = std::panic::catch_unwind(|| policies(&case["policies"], &plan)) else {
            continue;
        };
        let new = table::model(&compile(&set, &inv, &locals).unwrap());
        let id = case["id"].as_str().unwrap_or("?");
        let from_kernel = step % 2 == 1;
        netns::run_in(&netns::path_of(changed), || {
            let old = if from_kernel {
                list_table_text().unwrap().and_then(|t| from_nft_json(&t))
            } else {
                previous.clone()
            };
            match old {
                Some(old) => {
                    let d = delta(&old, &new);
                    apply_delta(&d).unwrap_or_else(|e| panic!("{id}: delta: {e}\n{d:?}"));
                }
                None => apply_ruleset(&full_text(&new)).unwrap(),
            }
        })
        .unwrap();
        netns::run_in(&netns::path_of(whole), || {
            apply_ruleset(&full_text(&new)).unwrap()
        })
        .unwrap();
        assert_eq!(
            listing(changed),
            listing(whole),
            "{id}: the table changed in place differs from the whole table"
        );
        previous = Some(new);
        steps += 1;
    }
    assert!(steps >= 10, "only {steps} steps ran");
    // Nothing to change is no operation at all.
    let last = previous.unwrap();
    assert!(delta(&last, &last).is_empty());
}

#[test]
#[ignore = "privileged: netns"]
fn every_rule_form_sent_over_netlink_reads_back_as_its_text() {
    use seam_nft::{AddrField, NftMatch, NftRule, NftSample, NftVerdict, TableOp};
    require_root();
    let guard = Namespaces(vec![format!("sdr{}", std::process::id())]);
    netns::create(&guard.0[0]).unwrap();
    let addr = |field, set: &str, negate| NftMatch::AddrInSet {
        field,
        set: set.into(),
        negate,
    };
    let rule = |matches: Vec<NftMatch>, log: bool, verdict, comment: &str| NftRule {
        matches,
        log_prefix: log.then(|| seam_nft::names::log_prefix(comment)),
        sample: None,
        verdict,
        comment: comment.into(),
    };
    // Flow samples: every new connection of an allow rule, a deny's and a Pass's under a rate
    // limit (two kernel rules each).
    let sampled = |mut r: NftRule, limit| {
        r.sample = Some(NftSample {
            group: 4242,
            prefix: format!("Xi:{}", r.comment),
            snaplen: 128,
            limit,
        });
        r
    };
    let mut rules = vec![
        rule(
            vec![
                addr(AddrField::Source, "g/web", false),
                addr(AddrField::Destination, "np/x/a/except", true),
                NftMatch::L4Proto(6),
                NftMatch::DstPorts(vec![(80, 80), (443, 443)]),
            ],
            true,
            NftVerdict::Accept,
            "contract/web/ingress/0",
        ),
        rule(
            vec![
                addr(AddrField::Destination, "g/web", false),
                NftMatch::L4Proto(17),
                NftMatch::DstPorts(vec![(53, 53)]),
            ],
            false,
            NftVerdict::Drop,
            "np/x/dns/egress/0",
        ),
        rule(
            vec![
                NftMatch::L4Proto(132),
                NftMatch::DstPorts(vec![(8000, 8080)]),
            ],
            false,
            NftVerdict::Return,
            "anp/pass/ingress/1",
        ),
        rule(
            vec![
                NftMatch::L4Proto(6),
                NftMatch::DstPorts(vec![(22, 22), (8000, 8080), (65000, 65535)]),
            ],
            false,
            NftVerdict::Accept,
            "np/x/ranges/ingress/0",
        ),
        rule(
            vec![
                addr(AddrField::Source, "g/web", true),
                NftMatch::L4Proto(1),
                NftMatch::IcmpType(8),
            ],
            true,
            NftVerdict::Drop,
            "anp/icmp/egress/0",
        ),
        rule(
            vec![NftMatch::L4Proto(17)],
            false,
            NftVerdict::Accept,
            "cnp/udp/egress/0",
        ),
        rule(Vec::new(), false, NftVerdict::Drop, "default/ingress"),
    ];
    let plain = rules.clone();
    rules.extend([
        sampled(plain[0].clone(), None),
        sampled(plain[1].clone(), Some(10)),
        sampled(plain[2].clone(), Some(100)),
        sampled(plain[4].clone(), Some(1)),
        sampled(plain[6].clone(), Some(5)),
    ]);
    let kernel_rules: usize = rules.iter().map(|r| r.to_string().lines().count()).sum();
    let text_chain: String = rules
        .iter()
        .flat_map(|r| {
            r.to_string()
                .lines()
                .map(|l| format!("\t\t{l}\n"))
                .collect::<Vec<_>>()
        })
        .collect();
    let listing = netns::run_in(&netns::path_of(&guard.0[0]), || {
        apply_ruleset(
            &format!("table {TABLE} {{\n\tset g/web {{ type ipv4_addr; flags interval; elements = {{ 10.0.0.1 }} }}\n}}\n"),
        )
        .unwrap();
        // The other set and the chain arrive with their rules in one batch, as a policy edit does.
        let mut ops = vec![
            TableOp::AddSet {
                name: "np/x/a/except".into(),
                interval: true,
            },
            TableOp::AddChain {
                name: "from_netlink".into(),
            },
        ];
        ops.extend(rules.iter().map(|r| TableOp::AddRule {
            chain: "from_netlink".into(),
            rule: r.clone(),
        }));
        seam_linux::nfnl::apply_batch(TABLE_NAME, &ops).unwrap();
        apply_ruleset(&format!(
            "table {TABLE} {{\n\tchain from_text {{\n{text_chain}\t}}\n}}\n"
        ))
        .unwrap();
        parse_listing(list_table().unwrap()).unwrap()
    })
    .unwrap();
    let (text, netlink) = (
        chain_rules(&listing, "from_text"),
        chain_rules(&listing, "from_netlink"),
    );
    assert_eq!(text.len(), kernel_rules);
    let lines: Vec<String> = rules
        .iter()
        .flat_map(|r| {
            r.to_string()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    for (i, (t, n)) in text.iter().zip(&netlink).enumerate() {
        assert_eq!(t, n, "rule {i} ({}) differs", lines[i]);
    }
    assert_eq!(text.len(), netlink.len());
    let set = seam_nft::listing::set(&listing, "np/x/a/except")
        .expect("the set made over netlink is listed");
    assert_eq!(set["type"], "ipv4_addr");
    assert_eq!(set["flags"], serde_json::json!(["interval"]));
}
