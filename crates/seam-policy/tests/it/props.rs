//! Property tests: the parsers never panic, and selector matching agrees with an independent brute-force
//! definition.

use std::collections::BTreeMap;

use proptest::prelude::*;
use seam_policy::{
    parse_json, parse_yaml, LabelSelector, LabelSelectorRequirement, PolicyObject, SelectorOperator,
};
use serde_json::{json, Value};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-zA-Z0-9./:{} -]{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "AdminNetworkPolicy",
            "policy.networking.k8s.io/v1alpha1",
            "policy.networking.k8s.io/v1alpha2",
            "ClusterNetworkPolicy",
            "Admin",
            "Baseline",
            "Accept",
            "seam.dev/v1alpha1",
            "Contract",
            "EndpointGroup",
            "TCP",
            "Allow",
            "Pass",
            "10.0.0.0/8",
            "In",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop::sample::select(vec![
            "apiVersion",
            "kind",
            "metadata",
            "name",
            "namespace",
            "spec",
            "podSelector",
            "ingress",
            "egress",
            "from",
            "to",
            "ports",
            "port",
            "endPort",
            "protocol",
            "ipBlock",
            "cidr",
            "except",
            "subject",
            "priority",
            "action",
            "pods",
            "namespaces",
            "networks",
            "matchLabels",
            "matchExpressions",
            "consumers",
            "providers",
            "subjects",
            "filters",
            "selectors",
            "policyTypes",
            "tier",
            "protocols",
            "tcp",
            "udp",
            "destinationPort",
            "destinationNamedPort",
            "number",
            "range",
            "start",
            "end",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..5).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #[test]
    fn parse_json_never_panics(text in "\\PC{0,200}") {
        let _ = parse_json(&text);
    }

    #[test]
    fn parse_yaml_never_panics(text in "\\PC{0,200}") {
        let _ = parse_yaml(&text);
    }

    #[test]
    fn structured_documents_never_panic(mut doc in arb_json(), kind in 0usize..6) {
        // Give most documents a real header so decoding and validation run, not just the header check.
        let headers = [
            ("networking.k8s.io/v1", "NetworkPolicy"),
            ("policy.networking.k8s.io/v1alpha1", "AdminNetworkPolicy"),
            ("policy.networking.k8s.io/v1alpha1", "BaselineAdminNetworkPolicy"),
            ("seam.dev/v1alpha1", "EndpointGroup"),
            ("seam.dev/v1alpha1", "Contract"),
            ("policy.networking.k8s.io/v1alpha2", "ClusterNetworkPolicy"),
        ];
        if let Value::Object(map) = &mut doc {
            map.insert("apiVersion".into(), json!(headers[kind].0));
            map.insert("kind".into(), json!(headers[kind].1));
        }
        let text = doc.to_string();
        let _ = parse_json(&text);
        let _ = parse_yaml(&text);
        if let Ok(obj) = PolicyObject::from_value(doc) {
            // Whatever is accepted survives the round trip through its wire form.
            prop_assert_eq!(PolicyObject::from_value(obj.to_value()).ok(), Some(obj));
        }
    }

    #[test]
    fn selector_matches_brute_force(
        labels in prop::collection::btree_map(key(), value(), 0..4),
        match_labels in prop::collection::btree_map(key(), value(), 0..3),
        exprs in prop::collection::vec((key(), 0usize..4, prop::collection::vec(value(), 0..3)), 0..3),
    ) {
        let ops = [SelectorOperator::In, SelectorOperator::NotIn, SelectorOperator::Exists, SelectorOperator::DoesNotExist];
        let sel = LabelSelector {
            match_labels: match_labels.clone(),
            match_expressions: exprs
                .iter()
                .map(|(k, op, vals)| LabelSelectorRequirement { key: k.clone(), operator: ops[*op], values: vals.clone() })
                .collect(),
        };
        prop_assert_eq!(sel.matches(&labels), brute_force(&labels, &match_labels, &exprs));
    }
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["app", "tier", "k8s.io/name", "x"]).prop_map(str::to_string)
}

fn value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", ""]).prop_map(str::to_string)
}

/// The selector semantics written as a set definition: the label sets a selector matches are those that contain
/// every matchLabels pair and, per requirement: In = key present with a listed value; NotIn = not(In);
/// Exists = key present; DoesNotExist = not(Exists).
fn brute_force(
    labels: &BTreeMap<String, String>,
    ml: &BTreeMap<String, String>,
    exprs: &[(String, usize, Vec<String>)],
) -> bool {
    let pairs: Vec<(&String, &String)> = labels.iter().collect();
    let has_pair = |k: &String, v: &String| pairs.iter().any(|(pk, pv)| *pk == k && *pv == v);
    let has_key = |k: &String| pairs.iter().any(|(pk, _)| *pk == k);
    let mut ok = ml.iter().all(|(k, v)| has_pair(k, v));
    for (k, op, vals) in exprs {
        let is_in = vals.iter().any(|v| has_pair(k, v));
        ok &= match op {
            0 => is_in,
            1 => !is_in,
            2 => has_key(k),
            _ => !has_key(k),
        };
    }
    ok
}
