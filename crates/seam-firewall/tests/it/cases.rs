//! Loading the conformance data of crates/seam-policy/test_data/netpol (the harness of seam-policy's
//! tests/it/conformance.rs, copied): the 9-pod x/y/z × a/b/c model and the ANP model, cases and probes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use seam_policy::{
    ContainerPort, Endpoint, EndpointKind, Inventory, Namespace, PolicySet, Protocol,
};
use serde_json::Value;

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
