//! The size bounds of policy objects, each with its reason; the bounds of Seam's other objects
//! (endpoints, namespaces, request bodies, applies) are in seam-model's `bounds` module.
//!
//! Every agent parses and compiles every policy object of the cluster, so the size of one object
//! is memory and time on every node (measured before these bounds: one 1.6 MB NetworkPolicy took
//! each agent from 18 to 140 MB). These bounds are admission bounds: the controller's API and
//! `seam apply` check them ([`PolicyObject::check_bounds`], [`admit`]) before anything is stored.
//! Agents do not: an object stored before a bound existed keeps being enforced, never silently
//! dropped.
//!
//! Label keys and values (at most 63 characters, keys with an optional DNS-subdomain prefix of
//! at most 253) are checked by [`PolicyObject::validate`] wherever labels or selector match labels
//! appear, as Kubernetes checks them.

use serde_json::Value;

use crate::error::{ParseError, Problems, ValidationError};
use crate::object::{PolicyKind, PolicyObject};
use crate::selector::check_label_key;

/// Largest encoded JSON of one policy object (its stored form). Kubernetes lets etcd hold 1.5 MiB
/// per object, but a Kubernetes API server does not compile every policy on every node; 256 KiB
/// holds an AdminNetworkPolicy at its rule bounds with ordinary selectors (≈100 bytes a peer), or a
/// NetworkPolicy allowing thousands of `ipBlock`s, and keeps an agent's cost per object in tens of
/// megabytes at worst.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;

/// Largest total of annotation keys and values of one object: Kubernetes'
/// `TotalAnnotationSizeLimitB`. The engine does not read annotations; they are kept so that an
/// object read back is the object applied.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Most items of any list in a policy object: rules per direction, peers per rule, ports per rule,
/// `except` blocks, group selectors, consumers, providers, subjects, filters, values of a selector
/// expression. The network-policy-api bounds AdminNetworkPolicy and BaselineAdminNetworkPolicy
/// rules per direction, peers per rule and ports per rule to 100; Seam applies the same number to
/// every list of those kinds and of its own (EndpointGroup, Contract). Kubernetes' NetworkPolicy
/// is not list-bounded: its API server bounds it only by the object's size, and refusing a valid
/// one would leave it unenforced, so it gets only [`MAX_POLICY_BYTES`]. ClusterNetworkPolicy
/// keeps its own, smaller bound of 25 ([`crate::MAX_CNP_ITEMS`]) besides this one.
pub const MAX_LIST_ITEMS: usize = 100;

/// Most terms of one label selector (`matchLabels` entries plus `matchExpressions`). The terms are
/// ANDed; Kubernetes sets no number, and a selector no real object satisfies helps nobody, so the
/// list bound is reused.
pub const MAX_SELECTOR_TERMS: usize = MAX_LIST_ITEMS;

/// Decodes and validates one object and checks the admission bounds: what the controller's API
/// and `seam apply` run on every policy object they are given. Problems of both kinds are
/// reported together.
pub fn admit(value: Value) -> Result<PolicyObject, ParseError> {
    let mut bounds = Problems::default();
    check_value(&mut bounds, &value);
    match PolicyObject::from_value(value) {
        Ok(object) => {
            let mut source = match bounds.finish(object.kind().as_str(), String::new()) {
                Ok(()) => return Ok(object),
                Err(e) => e,
            };
            source.name = object.metadata().display_name();
            Err(ParseError::Invalid {
                document: 0,
                source,
            })
        }
        Err(ParseError::Invalid {
            document,
            mut source,
        }) => {
            if let Err(more) = bounds.finish(source.kind, String::new()) {
                source.errors.extend(more.errors);
            }
            Err(ParseError::Invalid { document, source })
        }
        Err(other) => Err(other),
    }
}

impl PolicyObject {
    /// Checks the admission bounds of this module, reporting every problem with its field path.
    pub fn check_bounds(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        check_value(&mut p, &self.to_value());
        p.finish(self.kind().as_str(), self.metadata().display_name())
    }
}

/// Every bound, on an object's wire form.
fn check_value(p: &mut Problems, value: &Value) {
    if let Some(Value::Object(annotations)) = value.pointer("/metadata/annotations") {
        check_annotations(p, annotations);
    }
    if list_bounded(value) {
        check_lists(p, "", value);
    }
    let len = encoded_len(value);
    if len > MAX_POLICY_BYTES {
        p.add(
            ".",
            format!("the object encodes to {len} bytes, over the bound of {MAX_POLICY_BYTES} bytes per policy object (MAX_POLICY_BYTES: every node compiles every policy)"),
        );
    }
}

/// Annotation keys are qualified names (checked lower-cased, as Kubernetes does) and keys and
/// values together stay within [`MAX_ANNOTATIONS_BYTES`].
fn check_annotations(p: &mut Problems, annotations: &serde_json::Map<String, Value>) {
    let mut total = 0usize;
    for (k, v) in annotations {
        // A value that is not a string is reported by decoding; its size counts all the same.
        let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
        check_label_key(
            p,
            &format!("metadata.annotations.{k}"),
            &k.to_ascii_lowercase(),
        );
        total = total.saturating_add(k.len()).saturating_add(v.len());
    }
    if total > MAX_ANNOTATIONS_BYTES {
        p.add(
            "metadata.annotations",
            format!("{total} bytes of keys and values, over the bound of {MAX_ANNOTATIONS_BYTES} (MAX_ANNOTATIONS_BYTES, as Kubernetes)"),
        );
    }
}

/// Whether the list and selector-term bounds apply: every kind but Kubernetes' NetworkPolicy,
/// whose upstream API sets none (see [`MAX_LIST_ITEMS`]).
fn list_bounded(value: &Value) -> bool {
    value.get("kind").and_then(Value::as_str) != Some(PolicyKind::NetworkPolicy.as_str())
}

/// Walks the object's wire form: every list holds at most [`MAX_LIST_ITEMS`], every selector at
/// most [`MAX_SELECTOR_TERMS`] terms. Paths are the field paths validation uses.
fn check_lists(p: &mut Problems, path: &str, value: &Value) {
    match value {
        Value::Array(items) => {
            if items.len() > MAX_LIST_ITEMS {
                p.add(
                    path,
                    format!(
                        "{} items, over the bound of {MAX_LIST_ITEMS} (MAX_LIST_ITEMS, the network-policy-api's bound for rules, peers and ports)",
                        items.len()
                    ),
                );
                // Its items would only repeat the problem.
                return;
            }
            for (i, item) in items.iter().enumerate() {
                check_lists(p, &format!("{path}[{i}]"), item);
            }
        }
        Value::Object(map) => {
            let count = |field: &str| match map.get(field) {
                Some(Value::Object(m)) => m.len(),
                Some(Value::Array(a)) => a.len(),
                _ => 0,
            };
            let terms = count("matchLabels") + count("matchExpressions");
            if terms > MAX_SELECTOR_TERMS {
                p.add(
                    path,
                    format!("{terms} matchLabels and matchExpressions terms, over the bound of {MAX_SELECTOR_TERMS} per selector (MAX_SELECTOR_TERMS)"),
                );
            }
            for (field, child) in map {
                let child_path = if path.is_empty() {
                    field.clone()
                } else {
                    format!("{path}.{field}")
                };
                check_lists(p, &child_path, child);
            }
        }
        _ => {}
    }
}

/// The length of `value` encoded as compact JSON.
fn encoded_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a JSON value to a counter cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// A user's text for a message: whole when short, else its start and its length (a refused
/// megabyte of label value must not come back as a megabyte of error).
pub(crate) fn shown(text: &str) -> String {
    const SHOWN: usize = 64;
    if text.len() <= SHOWN {
        return format!("{text:?}");
    }
    let mut end = SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn netpol(spec: Value) -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "db", "namespace": "x"},
            "spec": spec,
        })
    }

    fn refused(value: Value) -> ValidationError {
        match admit(value) {
            Err(ParseError::Invalid { source, .. }) => source,
            other => panic!("not refused by a bound: {other:?}"),
        }
    }

    fn anp(spec: Value) -> Value {
        json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha1",
            "kind": "AdminNetworkPolicy",
            "metadata": {"name": "db"},
            "spec": spec,
        })
    }

    #[test]
    fn rules_peers_ports_and_selector_terms_are_bounded() {
        let subject = json!({"namespaces": {}});
        let rule = json!({"action": "Allow", "from": [{"namespaces": {}}]});
        let at_bound = anp(
            json!({"priority": 1, "subject": subject, "ingress": vec![rule.clone(); MAX_LIST_ITEMS]}),
        );
        assert!(admit(at_bound).is_ok());
        let over = anp(
            json!({"priority": 1, "subject": subject, "ingress": vec![rule; MAX_LIST_ITEMS + 1]}),
        );
        let err = refused(over);
        assert!(
            err.errors
                .iter()
                .any(|e| e.path == "spec.ingress" && e.message.contains("MAX_LIST_ITEMS")),
            "{err}"
        );

        let peers = vec![json!({"namespaces": {}}); MAX_LIST_ITEMS + 1];
        let ports: Vec<Value> = (1..=MAX_LIST_ITEMS as i64 + 1)
            .map(|p| json!({"portNumber": {"protocol": "TCP", "port": p}}))
            .collect();
        let err = refused(anp(json!({
            "priority": 1, "subject": subject,
            "egress": [{"action": "Allow", "to": peers, "ports": ports}]
        })));
        let paths: Vec<&str> = err
            .errors
            .iter()
            .filter(|e| e.message.contains("MAX_LIST_ITEMS"))
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(
            paths,
            ["spec.egress[0].ports", "spec.egress[0].to"],
            "{err}"
        );

        let labels: serde_json::Map<String, Value> = (0..=MAX_SELECTOR_TERMS)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect();
        let err = refused(anp(
            json!({"priority": 1, "subject": {"namespaces": {"matchLabels": labels}}}),
        ));
        assert_eq!(err.errors[0].path, "spec.subject.namespaces", "{err}");
    }

    #[test]
    fn network_policy_lists_are_bounded_by_size_alone() {
        // Kubernetes sets no list bound on a NetworkPolicy; refusing a valid one would leave it
        // unenforced.
        let rule = json!({"from": [{"podSelector": {}}], "ports": [{"port": 80}]});
        let many_rules =
            netpol(json!({"podSelector": {}, "ingress": vec![rule; MAX_LIST_ITEMS + 50]}));
        assert!(admit(many_rules).is_ok());
        let peers: Vec<Value> = (0..150)
            .map(|i| json!({"ipBlock": {"cidr": format!("10.{i}.0.0/16")}}))
            .collect();
        let ports: Vec<Value> = (1..=150).map(|p| json!({"port": p})).collect();
        let many_peers =
            netpol(json!({"podSelector": {}, "egress": [{"to": peers, "ports": ports}]}));
        let object = admit(many_peers).unwrap();
        assert!(object.check_bounds().is_ok());
    }

    #[test]
    fn annotations_and_total_size_are_bounded() {
        let mut doc = netpol(json!({"podSelector": {}}));
        doc["metadata"]["annotations"] = json!({"note": "x".repeat(MAX_ANNOTATIONS_BYTES)});
        let err = refused(doc);
        let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["metadata.annotations", "."], "{err}");
        assert!(err.to_string().contains("MAX_POLICY_BYTES"), "{err}");
        assert!(
            err.to_string().len() < 2000,
            "nothing is echoed whole: {err}"
        );

        let mut doc = netpol(json!({"podSelector": {}}));
        doc["metadata"]["annotations"] = json!({"Example.COM/Note": "ok", "bad key": "x"});
        let err = refused(doc);
        assert_eq!(err.errors.len(), 1, "{err}");
        assert_eq!(err.errors[0].path, "metadata.annotations.bad key");

        let blocks: Vec<Value> = (0..MAX_LIST_ITEMS)
            .map(|i| json!({"ipBlock": {"cidr": format!("10.{}.0.0/16", i), "except": (0..MAX_LIST_ITEMS).map(|j| format!("10.{i}.{j}.0/24")).collect::<Vec<_>>()}}))
            .collect();
        // Each list within its bound, the whole over MAX_POLICY_BYTES.
        let rule = json!({"from": blocks});
        let err = refused(netpol(
            json!({"podSelector": {}, "ingress": [rule.clone(), rule]}),
        ));
        assert_eq!(err.errors.len(), 1, "{err}");
        assert_eq!(err.errors[0].path, ".");
    }

    #[test]
    fn a_megabyte_label_value_is_refused_without_being_echoed() {
        let mut doc = netpol(json!({"podSelector": {"matchLabels": {"app": "v".repeat(1 << 20)}}}));
        doc["metadata"]["labels"] = json!({"team": "a"});
        let err = match PolicyObject::from_value(doc) {
            Err(ParseError::Invalid { source, .. }) => source,
            other => panic!("accepted: {other:?}"),
        };
        assert_eq!(err.errors[0].path, "spec.podSelector.matchLabels.app");
        assert!(err.to_string().len() < 1000, "{err}");
    }
}
