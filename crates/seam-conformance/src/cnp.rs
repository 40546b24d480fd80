//! The ANP cases once more as ClusterNetworkPolicies: AdminNetworkPolicy and
//! BaselineAdminNetworkPolicy (policy.networking.k8s.io/v1alpha1) rewritten as their successor
//! (v1alpha2), so the same expectations hold the CNP code paths to the same verdicts.

use serde_json::{json, Map, Value};

use crate::case::Case;

/// `ports` (v1alpha1) → `protocols` (v1alpha2).
fn convert_ports(ports: &Value) -> Value {
    let Some(list) = ports.as_array() else {
        return ports.clone();
    };
    let out: Vec<Value> = list
        .iter()
        .map(|p| {
            let proto = |v: &Value| v["protocol"].as_str().unwrap_or("TCP").to_ascii_lowercase();
            if let Some(n) = p.get("portNumber") {
                json!({ proto(n): {"destinationPort": {"number": n["port"]}} })
            } else if let Some(r) = p.get("portRange") {
                // v1alpha2 wants start < end; a one-port range is a number.
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

/// Allow → Accept, `ports` → `protocols`; anything but a list of rule objects is left as it is
/// (the engine's parser then says what is wrong).
fn convert_rules(rules: Option<&Value>) -> Value {
    let Some(rules) = rules else {
        return json!([]);
    };
    let Some(list) = rules.as_array() else {
        return rules.clone();
    };
    let out: Vec<Value> = list
        .iter()
        .map(|r| {
            let Some(rule) = r.as_object() else {
                return r.clone();
            };
            let mut m: Map<String, Value> = rule.clone();
            if m.get("action") == Some(&json!("Allow")) {
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

/// Rewrites every ANP of `policies` (a list of objects) as an Admin-tier CNP and the BANP as a
/// Baseline-tier CNP (priority 0, named `banp-default`); other objects stay.
pub fn anp_as_cnp(policies: &Value) -> Value {
    let Some(list) = policies.as_array() else {
        return policies.clone();
    };
    let out: Vec<Value> = list
        .iter()
        .map(|p| {
            let (tier, priority, name) = match p["kind"].as_str() {
                Some("AdminNetworkPolicy") => (
                    "Admin",
                    p["spec"]["priority"].clone(),
                    p["metadata"]["name"].clone(),
                ),
                Some("BaselineAdminNetworkPolicy") => ("Baseline", json!(0), json!("banp-default")),
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

impl Case {
    /// The case with its ANPs and BANP rewritten as ClusterNetworkPolicies ([`anp_as_cnp`]),
    /// its id marked ` (as CNPs)`.
    pub fn as_cnps(&self) -> Case {
        Case {
            id: format!("{} (as CNPs)", self.id),
            policies: anp_as_cnp(&self.policies),
            ..self.clone()
        }
    }
}
