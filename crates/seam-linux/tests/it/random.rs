//! Random policies, real packets: seeded random NetworkPolicies and AdminNetworkPolicies over the
//! x/y/z × a/b/c model are compiled, applied to a node namespace in place (each case as a delta
//! from the previous one, as the agent does) and probed pair by pair; every outcome must be what
//! the reference evaluator (`seam_policy::evaluate`) says, and the deciding rules' counters must
//! move (see `firewall::run_case`). On a failure the seed and the case's policies are printed;
//! `SEAM_RANDOM_SEED` and `SEAM_RANDOM_CASES` replay or widen the run.

use std::net::Ipv4Addr;

use seam_policy::Protocol;
use serde_json::{json, Value};

use crate::firewall::{load, plan, policies, run_case, xyz_inventory, Lab};

/// xorshift64*: small, seedable, and stable across releases (the seed must replay a failure).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

fn label_selector(r: &mut Rng, key: &str, values: &[&str]) -> Value {
    match r.below(4) {
        0 => json!({}),
        1 | 2 => json!({"matchLabels": {key: r.pick(values)}}),
        _ => {
            let op = if r.chance(50) { "In" } else { "NotIn" };
            json!({"matchExpressions": [{"key": key, "operator": op,
                "values": [r.pick(values), r.pick(values)]}]})
        }
    }
}

fn np_peer(r: &mut Rng) -> Value {
    match r.below(5) {
        0 => json!({"podSelector": label_selector(r, "pod", &PODS)}),
        1 => json!({"namespaceSelector": label_selector(r, "ns", &NAMESPACES)}),
        2 => json!({"podSelector": label_selector(r, "pod", &PODS),
                    "namespaceSelector": label_selector(r, "ns", &NAMESPACES)}),
        3 => {
            let pod = format!("{}/{}", r.pick(&NAMESPACES), r.pick(&PODS));
            json!({"ipBlock": {"cidr": format!("{{{{ip:{pod}}}}}/32")}})
        }
        _ => {
            let pod = format!("{}/{}", r.pick(&NAMESPACES), r.pick(&PODS));
            let hole = format!("{}/{}", r.pick(&NAMESPACES), r.pick(&PODS));
            json!({"ipBlock": {"cidr": format!("{{{{net:{pod}/24}}}}"),
                               "except": [format!("{{{{ip:{hole}}}}}/32")]}})
        }
    }
}

fn np_port(r: &mut Rng) -> Value {
    let proto = r.pick(&["TCP", "UDP"]);
    match r.below(4) {
        0 => json!({"protocol": proto, "port": 80}),
        1 => json!({"protocol": proto, "port": 81}),
        2 => json!({"protocol": proto, "port": 80, "endPort": 81}),
        _ => {
            let n = r.pick(&["80", "81"]);
            json!({"protocol": proto, "port": format!("serve-{n}-{}", proto.to_lowercase())})
        }
    }
}

fn np_rules(r: &mut Rng, peer_field: &str) -> Value {
    let rules: Vec<Value> = (0..r.below(3))
        .map(|_| {
            let mut rule = serde_json::Map::new();
            if r.chance(70) {
                let peers: Vec<Value> = (0..1 + r.below(2)).map(|_| np_peer(r)).collect();
                rule.insert(peer_field.to_string(), Value::Array(peers));
            }
            if r.chance(60) {
                let ports: Vec<Value> = (0..1 + r.below(2)).map(|_| np_port(r)).collect();
                rule.insert("ports".into(), Value::Array(ports));
            }
            Value::Object(rule)
        })
        .collect();
    Value::Array(rules)
}

fn network_policy(r: &mut Rng, i: usize) -> Value {
    let mut spec = json!({"podSelector": label_selector(r, "pod", &PODS)});
    let types = match r.below(4) {
        0 => None,
        1 => Some(vec!["Ingress"]),
        2 => Some(vec!["Egress"]),
        _ => Some(vec!["Ingress", "Egress"]),
    };
    let (ingress, egress) = match &types {
        None => (true, r.chance(50)),
        Some(t) => (t.contains(&"Ingress"), t.contains(&"Egress")),
    };
    if let Some(t) = types {
        spec["policyTypes"] = json!(t);
    }
    if ingress {
        spec["ingress"] = np_rules(r, "from");
    }
    if egress {
        spec["egress"] = np_rules(r, "to");
    }
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": format!("np-{i}"), "namespace": r.pick(&NAMESPACES)},
           "spec": spec})
}

fn admin_peer(r: &mut Rng) -> Value {
    if r.chance(50) {
        json!({"namespaces": label_selector(r, "ns", &NAMESPACES)})
    } else {
        json!({"pods": {"namespaceSelector": label_selector(r, "ns", &NAMESPACES),
                        "podSelector": label_selector(r, "pod", &PODS)}})
    }
}

fn admin_network_policy(r: &mut Rng, i: usize) -> Value {
    let subject = if r.chance(50) {
        json!({"namespaces": {"matchLabels": {"ns": r.pick(&NAMESPACES)}}})
    } else {
        json!({"pods": {"namespaceSelector": label_selector(r, "ns", &NAMESPACES),
                        "podSelector": label_selector(r, "pod", &PODS)}})
    };
    let mut spec = json!({"priority": r.below(50), "subject": subject});
    for (dir, field) in [("ingress", "from"), ("egress", "to")] {
        if r.chance(40) {
            continue;
        }
        let rules: Vec<Value> = (0..1 + r.below(2))
            .map(|k| {
                let mut rule = json!({"name": format!("{dir}-{k}"),
                    "action": r.pick(&["Allow", "Deny", "Pass"]),
                    field: [admin_peer(r)]});
                if r.chance(50) {
                    rule["ports"] = json!([{"portNumber": {"protocol": r.pick(&["TCP", "UDP"]),
                        "port": if r.chance(50) { 80 } else { 81 }}}]);
                }
                rule
            })
            .collect();
        spec[dir] = Value::Array(rules);
    }
    json!({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
           "metadata": {"name": format!("anp-{i}")}, "spec": spec})
}

fn random_case(r: &mut Rng) -> Value {
    let mut objects: Vec<Value> = (0..1 + r.below(3)).map(|i| network_policy(r, i)).collect();
    if r.chance(35) {
        objects.push(admin_network_policy(r, 0));
    }
    Value::Array(objects)
}

#[test]
#[ignore = "privileged: netns"]
fn random_policies_with_real_packets() {
    let seed: u64 = std::env::var("SEAM_RANDOM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5ea4_2026);
    let cases: usize = std::env::var("SEAM_RANDOM_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let model = load("model.json");
    let refs: Vec<String> = model["pods_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let plan = plan(&refs);
    let addrs: Vec<Ipv4Addr> = refs.iter().map(|r| plan[r]).collect();
    let lab = Lab::build("r", &addrs, &[80, 81], &[80, 81]);
    let inv = xyz_inventory(&model, &Value::Null, &plan);
    let probes = [
        (80, Protocol::Tcp),
        (81, Protocol::Tcp),
        (80, Protocol::Udp),
    ];
    let mut r = Rng(seed | 1);
    let mut bad = Vec::new();
    for i in 0..cases {
        let case = random_case(&mut r);
        let id = format!("seed {seed} case {i}");
        let set = policies(&case, &plan);
        let failures = run_case(&lab, &id, &set, &inv, &probes);
        if !failures.is_empty() {
            bad.push(format!(
                "{}\npolicies: {}",
                failures.join("\n"),
                serde_json::to_string(&case).unwrap()
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} failing case(s) (replay with SEAM_RANDOM_SEED={seed}):\n{}",
        bad.len(),
        bad.join("\n\n")
    );
}
