//! Runs every case of `test_data/netpol/` (copied from the shared netpol data) against the reference evaluator:
//! the 9-pod x/y/z × a/b/c model for `cases.json` (all 81 pairs, every probe) and the ANP model for
//! `anp_cases.json`. Prints one line per failing case and `N passed, M failed`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use seam_policy::{
    evaluate, ContainerPort, Endpoint, EndpointKind, Flow, FlowEnd, Inventory, Namespace,
    PolicySet, Protocol,
};
use serde_json::Value;

pub const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/test_data/netpol");

pub fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{DATA}/{name}")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

fn protocol(v: &Value) -> Protocol {
    v.as_str().unwrap().parse().unwrap()
}

/// Replaces `{{ip:NS/POD}}` with the pod's address and `{{net:NS/POD/N}}` with the canonical /N network holding
/// it (model.json `symbolic_values`).
pub fn substitute(text: &str, plan: &BTreeMap<String, Ipv4Addr>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").unwrap() + start;
        let token = &rest[start + 2..end];
        let (what, arg) = token.split_once(':').unwrap();
        match what {
            "ip" => out.push_str(&plan[arg].to_string()),
            "net" => {
                let (pod, len) = arg.rsplit_once('/').unwrap();
                let net = ipnet::Ipv4Net::new(plan[pod], len.parse().unwrap())
                    .unwrap()
                    .trunc();
                out.push_str(&net.to_string());
            }
            other => panic!("unknown symbol {other}"),
        }
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

fn policy_set(
    policies: &Value,
    plan: &BTreeMap<String, Ipv4Addr>,
    drop: bool,
) -> Result<PolicySet, String> {
    if drop {
        return Ok(PolicySet::new());
    }
    let text = substitute(&policies.to_string(), plan);
    let objects = seam_policy::parse_json(&text).map_err(|e| e.to_string())?;
    PolicySet::from_objects(objects).map_err(|e| e.to_string())
}

/// The x/y/z × a/b/c inventory for one case (its label overrides applied).
fn xyz_inventory(model: &Value, case: &Value, plan: &BTreeMap<String, Ipv4Addr>) -> Inventory {
    let mut inv = Inventory::default();
    for ns in model["namespaces"].as_array().unwrap() {
        let name = ns["name"].as_str().unwrap();
        let labels = match case["namespace_labels"].get(name) {
            Some(l) => labels(l),
            None => labels(&ns["labels"]),
        };
        inv.namespaces.insert(
            name.to_string(),
            Namespace {
                labels,
                tenant: None,
            },
        );
    }
    for pod in model["pods"].as_array().unwrap() {
        let reference = pod["ref"].as_str().unwrap();
        let pod_labels = match case["pod_labels"].get(reference) {
            Some(l) => labels(l),
            None => labels(&pod["labels"]),
        };
        inv.endpoints.push(Endpoint {
            name: pod["name"].as_str().unwrap().to_string(),
            namespace: pod["namespace"].as_str().unwrap().to_string(),
            kind: EndpointKind::Pod,
            labels: pod_labels,
            addresses: vec![plan[reference]],
            ports: pod["container_ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| ContainerPort {
                    name: Some(p["name"].as_str().unwrap().to_string()),
                    port: u16::try_from(p["containerPort"].as_u64().unwrap()).unwrap(),
                    protocol: protocol(&p["protocol"]),
                })
                .collect(),
        });
    }
    inv.validate().unwrap();
    inv
}

pub fn anp_inventory(model: &Value, plan: &BTreeMap<String, Ipv4Addr>) -> Inventory {
    let anp = &model["anp_model"];
    let mut inv = Inventory::default();
    for ns in anp["namespaces"].as_array().unwrap() {
        inv.namespaces.insert(
            ns["name"].as_str().unwrap().to_string(),
            Namespace {
                labels: labels(&ns["labels"]),
                tenant: None,
            },
        );
    }
    let ports: Vec<ContainerPort> = anp["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| ContainerPort {
            name: s["container_port_name"].as_str().map(str::to_string),
            port: u16::try_from(s["port"].as_u64().unwrap()).unwrap(),
            protocol: protocol(&s["protocol"]),
        })
        .collect();
    for pod in anp["pods"].as_array().unwrap() {
        // Host-network pods are only used by the node-peer tests, which the cases do not hold.
        if pod["host_network"].as_bool().unwrap() {
            continue;
        }
        let ns = pod["namespace"].as_str().unwrap();
        let name = pod["name"].as_str().unwrap();
        inv.endpoints.push(Endpoint {
            name: name.to_string(),
            namespace: ns.to_string(),
            kind: EndpointKind::Pod,
            labels: labels(&pod["labels"]),
            addresses: vec![plan[&format!("{ns}/{name}")]],
            ports: ports.clone(),
        });
    }
    inv.validate().unwrap();
    inv
}

pub fn ip_plan(v: &Value) -> BTreeMap<String, Ipv4Addr> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().parse().unwrap()))
        .collect()
}

pub fn flow(src: &str, dst: &str, probe: &Value) -> Flow {
    Flow {
        src: FlowEnd::Endpoint(src.to_string()),
        dst: FlowEnd::Endpoint(dst.to_string()),
        protocol: protocol(&probe["protocol"]),
        port: u16::try_from(probe["port"].as_u64().unwrap()).unwrap(),
    }
}

/// Compares one probe's 81 pairs; returns the mismatches that count and the number of ignored self mismatches.
fn check_matrix(
    set: &PolicySet,
    inv: &Inventory,
    order: &[String],
    probe: &Value,
    expected: &Value,
    self_enforced: bool,
) -> (Vec<String>, usize) {
    let mut bad = Vec::new();
    let mut ignored = 0;
    for src in order {
        for dst in order {
            let want = expected[src][dst].as_bool().unwrap();
            let verdict = evaluate(set, inv, &flow(src, dst, probe)).unwrap();
            if verdict.allowed() != want {
                if src == dst && !self_enforced {
                    ignored += 1;
                    continue;
                }
                bad.push(format!(
                    "{src}->{dst} {}/{}: want {want}, got egress {:?} ({:?}) ingress {:?} ({:?})",
                    probe["port"],
                    probe["protocol"].as_str().unwrap(),
                    verdict.egress.decision,
                    verdict.egress.reason,
                    verdict.ingress.decision,
                    verdict.ingress.reason,
                ));
            }
        }
    }
    (bad, ignored)
}

/// Runs every case; with `drop_policies` the policies are not applied (to prove the harness can fail).
/// Returns (passed, failed).
fn run(drop_policies: bool) -> (usize, usize) {
    let model = load("model.json");
    let plan = ip_plan(&model["reference_ip_plan"]["pods"]);
    let order: Vec<String> = model["pods_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut passed = 0;
    let mut failed = 0;
    let mut ignored_self = 0;

    for case in load("cases.json").as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
        let inv = xyz_inventory(&model, case, &plan);
        let set = match policy_set(&case["policies"], &plan, drop_policies) {
            Ok(set) => set,
            Err(e) => {
                println!("FAIL {id}: policies rejected: {e}");
                failed += 1;
                continue;
            }
        };
        let self_enforced = case["self_probes_enforced_upstream"]
            .as_bool()
            .unwrap_or(true);
        let mut probes = vec![(&case["probe"], &case["expected"])];
        if let Some(extra) = case["additional_probes"].as_array() {
            probes.extend(extra.iter().map(|p| (&p["probe"], &p["expected"])));
        }
        let mut bad = Vec::new();
        for (probe, expected) in probes {
            let (b, ignored) = check_matrix(&set, &inv, &order, probe, expected, self_enforced);
            bad.extend(b);
            ignored_self += ignored;
        }
        if bad.is_empty() {
            passed += 1;
        } else {
            failed += 1;
            if !drop_policies {
                println!("FAIL {id}: {} pair(s) differ; first: {}", bad.len(), bad[0]);
            }
        }
    }

    let anp_plan = ip_plan(&model["reference_ip_plan"]["anp_pods"]);
    let anp_inv = anp_inventory(&model, &anp_plan);
    for case in load("anp_cases.json").as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
        let set = match policy_set(&case["policies"], &anp_plan, drop_policies) {
            Ok(set) => set,
            Err(e) => {
                println!("FAIL {id}: policies rejected: {e}");
                failed += 1;
                continue;
            }
        };
        let mut bad = Vec::new();
        for probe in case["probes"].as_array().unwrap() {
            let (src, dst) = (
                probe["from"].as_str().unwrap(),
                probe["to"].as_str().unwrap(),
            );
            let want = probe["expected"].as_bool().unwrap();
            let verdict = evaluate(&set, &anp_inv, &flow(src, dst, probe)).unwrap();
            if verdict.allowed() != want {
                bad.push(format!(
                    "{src}->{dst} {}/{}: want {want}, got egress {:?} ingress {:?}",
                    probe["port"],
                    probe["protocol"].as_str().unwrap(),
                    verdict.egress.reason,
                    verdict.ingress.reason,
                ));
            }
        }
        if bad.is_empty() {
            passed += 1;
        } else {
            failed += 1;
            if !drop_policies {
                println!(
                    "FAIL {id}: {} probe(s) differ; first: {}",
                    bad.len(),
                    bad[0]
                );
            }
        }
    }
    if !drop_policies {
        println!("{passed} passed, {failed} failed ({ignored_self} self-pair mismatches ignored where upstream ignores them)");
    }
    (passed, failed)
}

#[test]
fn netpol_and_anp_cases() {
    let (passed, failed) = run(false);
    assert_eq!(failed, 0, "{failed} conformance case(s) failed");
    assert_eq!(
        passed,
        113 + 17,
        "every case of cases.json and anp_cases.json ran"
    );
}

/// The harness itself can fail: without the policies most cases must differ.
#[test]
fn harness_detects_a_wrong_engine() {
    let (_, failed) = run(true);
    assert!(
        failed > 100,
        "only {failed} cases failed with no policies applied"
    );
}
