//! Loading the conformance data of crates/seam-policy/test_data/netpol (the harness of seam-policy's
//! tests/it/conformance.rs, copied): the 9-pod x/y/z × a/b/c model and the ANP model, cases and probes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use seam_policy::{
    ContainerPort, Endpoint, EndpointKind, Inventory, Namespace, PolicySet, Protocol,
};
use serde_json::{json, Value};

pub const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../seam-policy/test_data/netpol"
);

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

pub fn protocol(v: &Value) -> Protocol {
    v.as_str().unwrap().parse().unwrap()
}

/// Replaces `{{ip:NS/POD}}` and `{{net:NS/POD/N}}` (model.json `symbolic_values`).
fn substitute(text: &str, plan: &BTreeMap<String, Ipv4Addr>) -> String {
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

pub fn policy_set(policies: &Value, plan: &BTreeMap<String, Ipv4Addr>) -> PolicySet {
    let text = substitute(&policies.to_string(), plan);
    PolicySet::from_objects(seam_policy::parse_json(&text).unwrap()).unwrap()
}

/// The x/y/z × a/b/c inventory for one case (its label overrides applied).
pub fn xyz_inventory(model: &Value, case: &Value, plan: &BTreeMap<String, Ipv4Addr>) -> Inventory {
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

/// The (port, protocol) probes of a case: its own, plus 80/81 over TCP, UDP and SCTP.
pub fn probes(case: &Value) -> Vec<(u16, Protocol)> {
    let mut out = Vec::new();
    let mut add = |p: &Value| {
        let probe = (
            u16::try_from(p["port"].as_u64().unwrap()).unwrap(),
            protocol(&p["protocol"]),
        );
        if !out.contains(&probe) {
            out.push(probe);
        }
    };
    if case.get("probe").is_some() {
        add(&case["probe"]);
    }
    for p in case["additional_probes"].as_array().into_iter().flatten() {
        add(&p["probe"]);
    }
    for p in case["probes"].as_array().into_iter().flatten() {
        add(p);
    }
    for port in [80, 81] {
        for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            if !out.contains(&(port, proto)) {
                out.push((port, proto));
            }
        }
    }
    out
}

// ---- ANP/BANP → ClusterNetworkPolicy (v1alpha2), as seam-policy's tests/it/cnp.rs rewrites them -------------

/// `ports` (v1alpha1) → `protocols` (v1alpha2).
fn convert_ports(ports: &Value) -> Value {
    let out: Vec<Value> = ports
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let proto = |v: &Value| v["protocol"].as_str().unwrap_or("TCP").to_ascii_lowercase();
            if let Some(n) = p.get("portNumber") {
                json!({ proto(n): {"destinationPort": {"number": n["port"]}} })
            } else if let Some(r) = p.get("portRange") {
                let port = if r["start"] == r["end"] {
                    json!({"number": r["start"]})
                } else {
                    json!({"range": {"start": r["start"], "end": r["end"]}})
                };
                json!({ proto(r): {"destinationPort": port} })
            } else {
                json!({"destinationNamedPort": p["namedPort"]})
            }
        })
        .collect();
    Value::Array(out)
}

fn convert_rules(rules: Option<&Value>) -> Value {
    let Some(rules) = rules else {
        return json!([]);
    };
    let out: Vec<Value> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut m = r.as_object().unwrap().clone();
            if m["action"] == "Allow" {
                m.insert("action".into(), "Accept".into());
            }
            if let Some(ports) = m.remove("ports") {
                m.insert("protocols".into(), convert_ports(&ports));
            }
            Value::Object(m)
        })
        .collect();
    Value::Array(out)
}

/// Every ANP as an Admin-tier CNP (Allow → Accept, `ports` → `protocols`), the BANP as a Baseline-tier CNP
/// (priority 0, named `banp-default`); other objects unchanged.
pub fn to_cnps(policies: &Value) -> Value {
    let out: Vec<Value> = policies
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let (tier, priority, name) = match p["kind"].as_str().unwrap() {
                "AdminNetworkPolicy" => (
                    "Admin",
                    p["spec"]["priority"].clone(),
                    p["metadata"]["name"].clone(),
                ),
                "BaselineAdminNetworkPolicy" => ("Baseline", json!(0), json!("banp-default")),
                _ => return p.clone(),
            };
            json!({
                "apiVersion": "policy.networking.k8s.io/v1alpha2",
                "kind": "ClusterNetworkPolicy",
                "metadata": {"name": name},
                "spec": {
                    "tier": tier,
                    "priority": priority,
                    "subject": p["spec"]["subject"],
                    "ingress": convert_rules(p["spec"].get("ingress")),
                    "egress": convert_rules(p["spec"].get("egress")),
                }
            })
        })
        .collect();
    Value::Array(out)
}
