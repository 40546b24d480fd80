//! In-place changes of the table: after every change, the namespace changed in place holds exactly
//! what a namespace given the whole new table holds (canonical listings equal), whether the old
//! table came from memory or was read back from the kernel, across policy changes, pods moving
//! between classes and pods leaving and joining.

use seam_firewall::compile;
use seam_firewall::render::table::{self, TableModel};
use seam_linux::nft::{canonical_listing, list_table, list_table_text};
use seam_linux::{apply_delta, apply_ruleset, netns};
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
    canonical_listing(
        &netns::run_in(&netns::path_of(ns), list_table)
            .unwrap()
            .unwrap(),
    )
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
                list_table_text()
                    .unwrap()
                    .and_then(|t| table::from_nft_json(&t))
            } else {
                previous.clone()
            };
            match old {
                Some(old) => {
                    let d = table::delta(&old, &new);
                    apply_delta(&d).unwrap_or_else(|e| panic!("{id}: delta: {e}\n{d:?}"));
                }
                None => apply_ruleset(&table::full_text(&new)).unwrap(),
            }
        })
        .unwrap();
        netns::run_in(&netns::path_of(whole), || {
            apply_ruleset(&table::full_text(&new)).unwrap()
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
    assert!(table::delta(&last, &last).is_empty());
}
