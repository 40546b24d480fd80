//! Reading objects another Seam version wrote: strict at the door, lenient inside.
//!
//! The API refuses unknown fields (the types deny them, so a typo is an error). But what the
//! controller stores and streams may come from a newer version with fields this one does not
//! know, and a rolling upgrade is mixed-version for a while: readers of stored and watched
//! objects use [`from_value`], which drops the unknown fields and names them, instead of
//! refusing the whole object. The types stay strict, so every path that decodes user input
//! with them stays strict too.

use std::collections::BTreeSet;
use std::sync::Mutex;

use seam_policy::PolicyObject;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// An object decoded with its unknown fields dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Tolerated<T> {
    /// The object.
    pub value: T,
    /// The dropped fields, as paths with `[]` for any element of a list (`ports[].weight`).
    pub unknown: Vec<String>,
}

/// More distinct unknown fields than this in one object is not a newer version's object.
const MAX_UNKNOWN: usize = 64;

/// Decodes `value` as `T`, dropping fields `T` does not know (everywhere the same path occurs,
/// so a list of a thousand objects with one new field decodes in two passes, not a thousand).
/// Any other problem (a wrong type, a missing field) is an error naming its path.
pub fn from_value<T: DeserializeOwned>(
    mut value: Value,
) -> Result<Tolerated<T>, serde_json::Error> {
    let mut unknown = Vec::new();
    loop {
        let error = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(decoded) => {
                unknown.sort();
                return Ok(Tolerated {
                    value: decoded,
                    unknown,
                });
            }
            Err(e) => e,
        };
        let segments: Vec<Step> = error.path().iter().map(Step::from).collect();
        let field = unknown_field(&error.inner().to_string());
        let last_is_field =
            matches!((segments.last(), &field), (Some(Step::Key(k)), Some(f)) if k == f);
        if !last_is_field || unknown.len() >= MAX_UNKNOWN || !remove_all(&mut value, &segments) {
            let path = error.path().to_string();
            let inner = error.into_inner();
            return Err(serde::de::Error::custom(format!("{path}: {inner}")));
        }
        unknown.push(pattern(&segments));
    }
}

/// Like [`from_value`], from JSON text.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<Tolerated<T>, serde_json::Error> {
    from_value(serde_json::from_slice(bytes)?)
}

/// A stored or streamed policy object decoded into its wire type and validated, tolerating
/// fields this version does not know outside `spec` (top level, `metadata`): a newer controller
/// may store them during a rolling upgrade, and they do not change what the policy allows. An
/// unknown field inside `spec` may restrict what a rule matches (a new kind of source, say), and
/// dropping it could widen an allow rule, so such an object stays undecodable, as does one whose
/// `apiVersion` + `kind` this version does not support: the reader leaves it out and says so.
/// [`Tolerated::unknown`] names the dropped fields (`metadata.x`). The API still refuses unknown
/// fields ([`PolicyObject::from_value`]).
pub fn policy(mut value: Value) -> Result<Tolerated<PolicyObject>, seam_policy::ParseError> {
    let mut unknown = Vec::new();
    loop {
        // The decode consumes its input; the kept value is what an unknown field is dropped from.
        match PolicyObject::from_value(value.clone()) {
            Ok(object) => {
                unknown.sort();
                return Ok(Tolerated {
                    value: object,
                    unknown,
                });
            }
            Err(seam_policy::ParseError::Decode { path, message, .. })
                if unknown.len() < MAX_UNKNOWN
                    && !within_spec(&path)
                    && unknown_field(&message)
                        .is_some_and(|f| path.rsplit('.').next() == Some(f.as_str()))
                    && remove_path(&mut value, &path) =>
            {
                unknown.push(path_pattern(&path));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a decode error's field path lies inside the object's `spec`.
fn within_spec(path: &str) -> bool {
    path.strip_prefix("spec")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Removes the field at a dotted path as serde_path_to_error prints it (`spec.ingress[0].x`),
/// from every element of the lists on the way; `false` when there was nothing to remove. For
/// callers whose decoder reports paths as text (seam-policy's `ParseError::Decode`).
pub fn remove_path(value: &mut Value, path: &str) -> bool {
    let mut segments = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            segments.push(Step::Key(key.to_string()));
        }
        while let Some(end) = rest.find(']') {
            segments.push(Step::Index);
            rest = &rest[end + 1..];
        }
    }
    matches!(segments.last(), Some(Step::Key(_))) && remove_all(value, &segments)
}

/// The path pattern [`Tolerated::unknown`] reports for a dotted path (`a[3].b` → `a[].b`).
pub fn path_pattern(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            c => out.push(c),
        }
    }
    out
}

/// The field named by serde's "unknown field `x`, expected …" error.
pub fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// True the first time `(kind, field)` is seen in this process, so a reader says once in its
/// log that it ignores a field, not at every event. Bounded: past a few thousand distinct
/// fields it stops saying so.
pub fn first_sighting(kind: &str, field: &str) -> bool {
    static SEEN: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());
    let mut seen = SEEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if seen.len() >= 4096 {
        return false;
    }
    seen.insert((kind.to_string(), field.to_string()))
}

impl<T> Tolerated<T> {
    /// The unknown fields of this object not reported before for `kind` in this process.
    pub fn first_sightings(&self, kind: &str) -> Vec<&str> {
        self.unknown
            .iter()
            .filter(|f| first_sighting(kind, f))
            .map(String::as_str)
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index,
    Other,
}

impl From<&serde_path_to_error::Segment> for Step {
    fn from(s: &serde_path_to_error::Segment) -> Self {
        match s {
            serde_path_to_error::Segment::Map { key } => Step::Key(key.clone()),
            serde_path_to_error::Segment::Seq { .. } => Step::Index,
            _ => Step::Other,
        }
    }
}

fn pattern(steps: &[Step]) -> String {
    let mut out = String::new();
    for s in steps {
        match s {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index => out.push_str("[]"),
            Step::Other => out.push_str(".?"),
        }
    }
    out
}

/// Removes the last step's key under every value the steps before it reach.
fn remove_all(value: &mut Value, steps: &[Step]) -> bool {
    match steps {
        [] => false,
        [Step::Key(k)] => value.as_object_mut().is_some_and(|m| m.remove(k).is_some()),
        [Step::Key(k), rest @ ..] => value
            .as_object_mut()
            .and_then(|m| m.get_mut(k))
            .is_some_and(|v| remove_all(v, rest)),
        [Step::Index, rest @ ..] => match value.as_array_mut() {
            // Every element, not just up to the first that had the field.
            Some(items) => {
                items
                    .iter_mut()
                    .map(|item| remove_all(item, rest))
                    .filter(|removed| *removed)
                    .count()
                    > 0
            }
            None => false,
        },
        [Step::Other, ..] => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Endpoint, Node, Snapshot};
    use serde_json::json;

    #[test]
    fn unknown_fields_are_dropped_and_named() {
        let t: Tolerated<Node> = from_value(json!({
            "name": "n1", "underlayIp": "10.0.0.1", "zone": "a", "future": {"x": 1}
        }))
        .unwrap();
        assert_eq!(t.value.name, "n1");
        assert_eq!(t.unknown, vec!["future".to_string(), "zone".to_string()]);
        // The type itself stays strict.
        assert!(serde_json::from_value::<Node>(json!({
            "name": "n1", "underlayIp": "10.0.0.1", "zone": "a"
        }))
        .is_err());
    }

    #[test]
    fn a_field_in_every_element_is_dropped_at_once() {
        let ep = |i: u8| {
            json!({
                "name": format!("ns/p{i}"), "kind": "pod", "namespace": "ns", "segment": "s",
                "node": "n1", "ip": format!("10.0.0.{i}"), "mac": "0a:58:0a:00:00:01",
                "weight": i, "ports": [{"name": "http", "port": 80, "protocol": "TCP", "tls": true}]
            })
        };
        let t: Tolerated<Snapshot> = from_value(json!({
            "revision": 3, "nodes": [], "segments": [], "blocks": [],
            "endpoints": (1..=50).map(ep).collect::<Vec<_>>(), "newKind": []
        }))
        .unwrap();
        assert_eq!(t.value.endpoints.len(), 50);
        assert_eq!(
            t.unknown,
            vec!["endpoints[].ports[].tls", "endpoints[].weight"]
        );
    }

    #[test]
    fn other_problems_are_still_errors_with_their_path() {
        let e = from_value::<Endpoint>(json!({"name": "x", "kind": "pod", "ip": 7})).unwrap_err();
        assert!(e.to_string().contains("ip"), "{e}");
    }

    #[test]
    fn text_paths_are_removed_everywhere() {
        let mut v = json!({"spec": {"ingress": [{"a": 1, "x": 2}, {"x": 3}]}});
        assert!(remove_path(&mut v, "spec.ingress[0].x"));
        assert_eq!(v, json!({"spec": {"ingress": [{"a": 1}, {}]}}));
        assert!(!remove_path(&mut v, "spec.ingress[0].x"));
        assert_eq!(path_pattern("spec.ingress[12].x"), "spec.ingress[].x");
    }

    #[test]
    fn a_stored_policy_with_fields_this_version_does_not_know_still_applies() {
        let doc = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "web", "generation": 4},
            "status": {"conditions": []},
            "spec": {
                "podSelector": {}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {}}]}]
            }
        });
        // The API refuses it ...
        assert!(PolicyObject::from_value(doc.clone()).is_err());
        // ... the agent enforces it, minus the fields it does not know outside `spec`.
        let t = policy(doc.clone()).unwrap();
        assert_eq!(t.unknown, vec!["metadata.generation", "status"]);
        assert_eq!(t.value.key().name, "p");
        // Anything else wrong still keeps it out.
        let mut bad = doc.clone();
        bad["spec"]["policyTypes"] = json!("Ingress");
        assert!(policy(bad).is_err());
    }

    #[test]
    fn an_unknown_field_inside_spec_keeps_a_stored_policy_out_rather_than_widen_it() {
        // Dropping `newSourceField` would leave a rule with no `from`: every source admitted.
        let doc = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "db", "namespace": "web"},
            "spec": {
                "podSelector": {}, "policyTypes": ["Ingress"],
                "ingress": [{"newSourceField": [{"x": 1}], "ports": [{"port": 5432}]}]
            }
        });
        let err = policy(doc.clone()).unwrap_err().to_string();
        assert!(err.contains("newSourceField"), "{err}");
        // The same at the top of `spec`.
        let mut top = doc.clone();
        top["spec"]["ingress"] = json!([{"ports": [{"port": 5432}]}]);
        top["spec"]["futureMode"] = json!("strict");
        assert!(policy(top).is_err());
        assert!(within_spec("spec") && within_spec("spec[0]") && !within_spec("specs.x"));
    }

    #[test]
    fn a_policy_of_a_version_this_one_does_not_know_is_not_read_as_another() {
        let doc = json!({
            "apiVersion": "policy.networking.k8s.io/v1beta1", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "p"}, "spec": {}
        });
        let err = policy(doc).unwrap_err().to_string();
        assert!(err.contains("unsupported object kind"), "{err}");
    }

    #[test]
    fn each_field_is_reported_once() {
        assert!(first_sighting("TestKind", "f"));
        assert!(!first_sighting("TestKind", "f"));
        assert!(first_sighting("OtherKind", "f"));
    }
}
