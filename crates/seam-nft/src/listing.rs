//! Reading `nft -j` listings: the JSON `nft -j list table …` prints, parsed once here
//! ([`parse_listing`]), then read for rule counters ([`counters_from_json`]) or put in a canonical
//! form that two tables made from the same text share ([`canonical_listing`]). The tables
//! themselves are read back by [`crate::table::from_nft_json`] and [`crate::nat::nat_from_json`].
//!
//! The listing is read as a `serde_json::Value`, not a typed model: Seam reads a handful of
//! fields (names, set elements, map entries, counters, comments) and tolerates every other
//! object and expression, which a typed model of the whole `nft -j` schema would have to know.

use std::collections::BTreeMap;

use serde_json::Value;

/// `nft -j` output that is not the JSON expected.
#[derive(Debug, thiserror::Error)]
#[error("parse nft -j output: {0}")]
pub struct ListingError(#[from] serde_json::Error);

/// `nft -j` output (bytes or text) as JSON, for the readers of this crate.
pub fn parse_listing(out: impl AsRef<[u8]>) -> Result<Value, ListingError> {
    Ok(serde_json::from_slice(out.as_ref())?)
}

/// Packets and bytes a rule's counter has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleCounter {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// The kernel's listing of a table without what differs between two tables made from the same
/// text: `metainfo`, object handles, counter values and the order objects were created in (a table
/// changed in place lists its chains in another order than one written whole). Rules keep their
/// order within their chain. Two namespaces given the same ruleset have equal canonical listings,
/// whatever traffic they saw and however the table got there.
pub fn canonical_listing(value: &Value) -> Value {
    let stripped = strip_listing(value);
    let Some(items) = stripped.get("nftables").and_then(Value::as_array) else {
        return stripped;
    };
    let (mut rules, mut objects): (Vec<Value>, Vec<Value>) =
        items.iter().cloned().partition(|i| i.get("rule").is_some());
    objects.sort_by_cached_key(Value::to_string);
    rules.sort_by_cached_key(|r| {
        r.get("rule")
            .and_then(|r| r.get("chain"))
            .map(Value::to_string)
            .unwrap_or_default()
    });
    objects.extend(rules);
    serde_json::json!({ "nftables": objects })
}

fn strip_listing(value: &Value) -> Value {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| k.as_str() != "handle")
                    .map(|(k, v)| {
                        if k == "counter" && v.is_object() {
                            (k.clone(), Value::Null)
                        } else if let (true, Value::Array(elems)) = (k == "elem", v) {
                            // A hash set lists its elements in the kernel's hash order.
                            let mut elems: Vec<Value> = elems.iter().map(strip).collect();
                            elems.sort_by_cached_key(Value::to_string);
                            (k.clone(), Value::Array(elems))
                        } else {
                            (k.clone(), strip(v))
                        }
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .filter(|i| i.get("metainfo").is_none())
                    .map(strip)
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    strip(value)
}

/// Sums the counters of the commented rules in `nft -j` output. Unknown objects and expressions
/// are skipped.
pub fn counters_from_json(value: &Value) -> BTreeMap<String, RuleCounter> {
    let mut out: BTreeMap<String, RuleCounter> = BTreeMap::new();
    let items = value
        .get("nftables")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for item in items {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let Some(comment) = rule.get("comment").and_then(Value::as_str) else {
            continue;
        };
        let exprs = rule
            .get("expr")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for e in exprs {
            if let Some(c) = e.get("counter") {
                let entry = out.entry(comment.to_string()).or_default();
                entry.packets += c.get("packets").and_then(Value::as_u64).unwrap_or(0);
                entry.bytes += c.get("bytes").and_then(Value::as_u64).unwrap_or(0);
            }
        }
    }
    out
}

fn items(value: &Value) -> impl Iterator<Item = &Value> {
    value
        .get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The rules of `chain` in a listing, in order, each as its expressions and comment only (what
/// two equal rules share; handles and counters differ).
pub fn chain_rules(value: &Value, chain: &str) -> Vec<Value> {
    items(value)
        .filter_map(|i| i.get("rule"))
        .filter(|r| r.get("chain").and_then(Value::as_str) == Some(chain))
        .map(|r| serde_json::json!({ "expr": r["expr"], "comment": r["comment"] }))
        .collect()
}

/// The set (or map) named `name` in a listing.
pub fn set<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    items(value).find_map(|i| {
        i.get("set")
            .filter(|s| s.get("name").and_then(Value::as_str) == Some(name))
    })
}

/// What the sample limits suppressed, by rule comment: the counters of the rules that take what
/// is over a rule's sample limit (`limit rate over …`, see `NftSample::limit`), summed by comment.
/// Read by the agent and put into the next flow record of the rule.
pub fn suppressed_from_json(value: &Value) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for rule in items(value).filter_map(|i| i.get("rule")) {
        let Some(comment) = rule.get("comment").and_then(Value::as_str) else {
            continue;
        };
        let exprs = rule
            .get("expr")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let over = exprs.iter().any(|e| {
            e.get("limit")
                .and_then(|l| l.get("inv"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        });
        if !over {
            continue;
        }
        let packets: u64 = exprs
            .iter()
            .filter_map(|e| e.get("counter"))
            .filter_map(|c| c.get("packets").and_then(Value::as_u64))
            .sum();
        *out.entry(comment.to_string()).or_default() += packets;
    }
    out
}

/// How many rules of the listing have a counter (every rule Seam writes to `inet seam` has one).
pub fn counted_rules(value: &Value) -> usize {
    value
        .get("nftables")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("rule"))
                .filter(|r| {
                    r.get("expr")
                        .and_then(Value::as_array)
                        .is_some_and(|e| e.iter().any(|x| x.get("counter").is_some()))
                })
                .count()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_listings_ignore_handles_counters_and_metainfo() {
        let a: Value = serde_json::from_str(r#"{"nftables": [{"metainfo": {"version": "1"}},
          {"table": {"family": "inet", "name": "seam", "handle": 3}},
          {"rule": {"chain": "a", "handle": 7, "comment": "x", "expr": [{"counter": {"packets": 2, "bytes": 120}}]}}]}"#).unwrap_or_default();
        let b: Value = serde_json::from_str(r#"{"nftables": [{"metainfo": {"version": "2"}},
          {"table": {"family": "inet", "name": "seam", "handle": 9}},
          {"rule": {"chain": "a", "handle": 1, "comment": "x", "expr": [{"counter": {"packets": 0, "bytes": 0}}]}}]}"#).unwrap_or_default();
        assert_eq!(canonical_listing(&a), canonical_listing(&b));
        let c = b.to_string().replace("\"x\"", "\"y\"");
        let c: Value = serde_json::from_str(&c).unwrap_or_default();
        assert_ne!(canonical_listing(&a), canonical_listing(&c));
    }

    #[test]
    fn suppressed_samples_are_the_over_limit_rules_counters() {
        let json = r#"{"nftables": [
          {"rule": {"chain": "a", "comment": "np/x/p/ingress/0", "expr": [{"limit": {"rate": 10, "burst": 10, "per": "second", "inv": true}}, {"counter": {"packets": 40, "bytes": 2400}}, {"drop": null}]}},
          {"rule": {"chain": "a", "comment": "np/x/p/ingress/0", "expr": [{"counter": {"packets": 12, "bytes": 720}}, {"log": {"group": 5}}, {"drop": null}]}},
          {"rule": {"chain": "b", "comment": "np/x/p/ingress/0", "expr": [{"limit": {"rate": 10, "per": "second", "inv": true}}, {"counter": {"packets": 2, "bytes": 120}}, {"drop": null}]}},
          {"rule": {"chain": "b", "comment": "default/egress", "expr": [{"limit": {"rate": 10, "per": "second"}}, {"counter": {"packets": 7, "bytes": 0}}]}}]}"#;
        let value: Value = serde_json::from_str(json).unwrap_or_default();
        let s = suppressed_from_json(&value);
        assert_eq!(s.len(), 1);
        assert_eq!(s.get("np/x/p/ingress/0"), Some(&42));
        // The rule's hits are still both rules' counters.
        assert_eq!(counters_from_json(&value)["np/x/p/ingress/0"].packets, 54);
    }

    #[test]
    fn counters_are_summed_by_comment() {
        let json = r#"{"nftables": [{"metainfo": {}}, {"table": {"name": "seam"}},
          {"rule": {"chain": "a", "comment": "np/x/p/ingress/0", "expr": [{"match": {}}, {"counter": {"packets": 2, "bytes": 120}}, {"return": null}]}},
          {"rule": {"chain": "a", "comment": "np/x/p/ingress/0", "expr": [{"counter": {"packets": 1, "bytes": 60}}, {"return": null}]}},
          {"rule": {"chain": "a", "expr": [{"counter": {"packets": 9, "bytes": 9}}]}},
          {"rule": {"chain": "b", "comment": "default/egress", "expr": [{"counter": {"packets": 0, "bytes": 0}}]}}]}"#;
        let value: Value = serde_json::from_str(json).unwrap_or_default();
        let c = counters_from_json(&value);
        assert_eq!(c.len(), 2);
        assert_eq!(counted_rules(&value), 4);
        assert_eq!(
            c.get("np/x/p/ingress/0"),
            Some(&RuleCounter {
                packets: 3,
                bytes: 180
            })
        );
    }
}
