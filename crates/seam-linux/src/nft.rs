//! The nftables edge: apply one rendered transaction (`nft -f -`), read rule counters back
//! (`nft -j list table inet seam`), delete the table.
//!
//! Everything runs in the calling thread's network namespace (the `nft` child inherits it): callers
//! that act on another namespace wrap the call in [`crate::netns::run_in`]. The text comes from
//! `seam_firewall::render`, which replaces the table in one batch, so applying is atomic.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The table Seam owns.
pub const TABLE_FAMILY: &str = "inet";
/// Its name.
pub const TABLE_NAME: &str = "seam";

/// What went wrong talking to nftables.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NftError {
    /// The `nft` program could not be run (not installed, or no permission).
    #[error("run nft to {operation}: {source}")]
    Spawn {
        /// What was being done: `apply ruleset`, `list table`, `delete table`.
        operation: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `nft` refused the input or the request.
    #[error("nft rejected {operation} (exit status {status:?}): {stderr}{}", line_context(.line))]
    Rejected {
        /// What was being done.
        operation: &'static str,
        /// nft's exit status.
        status: Option<i32>,
        /// nft's standard error, trimmed.
        stderr: String,
        /// The offending input line (number, text) when nft named one.
        line: Option<(usize, String)>,
    },
    /// `table inet seam` does not exist in this namespace.
    #[error("table inet seam does not exist")]
    NoTable,
    /// The kernel refused (or never answered) an nf_tables netlink batch; nothing of it applied.
    #[error("{0}")]
    Batch(#[from] crate::nfnl::NfnlError),
    /// `nft -j` printed something that is not the JSON expected.
    #[error("parse nft -j output: {source}")]
    Json {
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

fn line_context(line: &Option<(usize, String)>) -> String {
    match line {
        Some((n, text)) => format!(" (input line {n}: {})", text.trim()),
        None => String::new(),
    }
}

/// Packets and bytes a rule's counter has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleCounter {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Runs `nft args…` with `input` on stdin; returns stdout.
fn run(operation: &'static str, args: &[&str], input: Option<&str>) -> Result<Vec<u8>, NftError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NftError::Spawn { operation, source })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // nft reads its whole input before it answers, so writing first cannot deadlock.
        stdin
            .write_all(text.as_bytes())
            .map_err(|source| NftError::Spawn { operation, source })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| NftError::Spawn { operation, source })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if stderr.contains("No such file or directory") && operation == "list table" {
        return Err(NftError::NoTable);
    }
    let line = input.and_then(|text| offending_line(&stderr, text));
    Err(NftError::Rejected {
        operation,
        status: out.status.code(),
        stderr,
        line,
    })
}

/// The input line nft's error names (`/dev/stdin:12:5-20: Error: …`).
fn offending_line(stderr: &str, input: &str) -> Option<(usize, String)> {
    stderr.lines().find_map(|l| {
        let rest = l.split_once(':')?.1;
        let n: usize = rest.split(':').next()?.trim().parse().ok()?;
        let text = input.lines().nth(n.checked_sub(1)?)?;
        Some((n, text.to_string()))
    })
}

/// Applies one nftables transaction (`nft -f -`), e.g. the output of `seam_firewall::render`.
/// The kernel applies it all or nothing.
pub fn apply_ruleset(text: &str) -> Result<(), NftError> {
    run("apply ruleset", &["-f", "-"], Some(text)).map(|_| ())
}

/// Changes `table inet seam` in place: the `switch` batch, then the `cleanup` batch (see
/// [`seam_nft::FirewallDelta`]).
pub fn apply_delta(delta: &seam_nft::FirewallDelta) -> Result<(), NftError> {
    crate::nfnl::apply_batch(TABLE_NAME, &delta.switch)?;
    crate::nfnl::apply_batch(TABLE_NAME, &delta.cleanup)?;
    Ok(())
}

/// `nft -j list table inet seam` as text, `None` when the table does not exist.
pub fn list_table_text() -> Result<Option<String>, NftError> {
    match run(
        "list table",
        &["-j", "list", "table", TABLE_FAMILY, TABLE_NAME],
        None,
    ) {
        Ok(out) => Ok(Some(String::from_utf8_lossy(&out).into_owned())),
        Err(NftError::NoTable) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Seam's NAT table as the kernel holds it (`nft -j list table ip seam-nat`), `None` when
/// absent.
pub fn list_nat_table() -> Result<Option<seam_dataplane::ObservedNat>, NftError> {
    use seam_dataplane::snat::{NAT_FAMILY, NAT_TABLE};
    match run(
        "list table",
        &["-j", "list", "table", NAT_FAMILY, NAT_TABLE],
        None,
    ) {
        Ok(out) => {
            let value: Value =
                serde_json::from_slice(&out).map_err(|source| NftError::Json { source })?;
            Ok(Some(nat_from_json(&value)))
        }
        Err(NftError::NoTable) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads Seam's NAT table out of `nft -j` output: the two sets as merged ranges, and whether the
/// base chain holds exactly Seam's masquerade rule. Unknown objects are tolerated (they only
/// make `rule_ok` false when they are rules).
pub fn nat_from_json(value: &Value) -> seam_dataplane::ObservedNat {
    use seam_dataplane::snat::{
        merge_ranges, NAT_CHAIN, NAT_KNOWN_SET, NAT_RULE_COMMENT, NAT_SOURCES_SET,
    };
    let items = value
        .get("nftables")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut observed = seam_dataplane::ObservedNat {
        exists: true,
        ..Default::default()
    };
    let mut chain_ok = false;
    let mut rules = Vec::new();
    for item in items {
        if let Some(set) = item.get("set") {
            let ranges = merge_ranges(
                set.get("elem")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(element_range),
            );
            match set.get("name").and_then(Value::as_str) {
                Some(NAT_SOURCES_SET) => observed.sources = ranges,
                Some(NAT_KNOWN_SET) => observed.known = ranges,
                _ => {}
            }
        } else if let Some(chain) = item.get("chain") {
            if chain.get("name").and_then(Value::as_str) == Some(NAT_CHAIN) {
                chain_ok = chain.get("type").and_then(Value::as_str) == Some("nat")
                    && chain.get("hook").and_then(Value::as_str) == Some("postrouting");
            }
        } else if let Some(rule) = item.get("rule") {
            rules.push(rule);
        }
    }
    observed.rule_ok = chain_ok
        && matches!(rules.as_slice(), [rule]
        if rule.get("chain").and_then(Value::as_str) == Some(NAT_CHAIN)
            && rule.get("comment").and_then(Value::as_str) == Some(NAT_RULE_COMMENT)
            && rule.get("expr").and_then(Value::as_array).is_some_and(|e| {
                e.iter().any(|x| x.get("masquerade").is_some())
            }));
    observed
}

/// One element of an `ipv4_addr` interval set in `nft -j` output (an address, a prefix or a
/// range) as an inclusive range.
fn element_range(elem: &Value) -> Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)> {
    let addr = |v: &Value| v.as_str()?.parse::<std::net::Ipv4Addr>().ok();
    if let Some(a) = addr(elem) {
        return Some((a, a));
    }
    // A set element with options (counter, timeout) wraps the value in `elem.val`.
    if let Some(inner) = elem.get("elem").and_then(|e| e.get("val")) {
        return element_range(inner);
    }
    if let Some(p) = elem.get("prefix") {
        let net = ipnet::Ipv4Net::new(
            addr(p.get("addr")?)?,
            u8::try_from(p.get("len")?.as_u64()?).ok()?,
        )
        .ok()?;
        return Some((net.network(), net.broadcast()));
    }
    let range = elem.get("range")?.as_array()?;
    Some((addr(range.first()?)?, addr(range.get(1)?)?))
}

/// Applies `nft -f` text that touches tables other than `inet seam` (Seam's NAT table).
pub fn apply_text(operation: &'static str, text: &str) -> Result<(), NftError> {
    run(operation, &["-f", "-"], Some(text)).map(|_| ())
}

/// Deletes Seam's tables (`inet seam` and `bridge seam`); absent is success.
pub fn delete_table() -> Result<(), NftError> {
    let text = format!(
        "table {TABLE_FAMILY} {TABLE_NAME} {{}}\ndelete table {TABLE_FAMILY} {TABLE_NAME}\ntable bridge {TABLE_NAME} {{}}\ndelete table bridge {TABLE_NAME}\n"
    );
    run("delete table", &["-f", "-"], Some(&text)).map(|_| ())
}

/// The counters of every rule of `table inet seam` that has a comment, summed by comment (the
/// renderer gives every rule of one policy rule the same comment: `seam_firewall::nft_comment`).
pub fn read_counters() -> Result<BTreeMap<String, RuleCounter>, NftError> {
    Ok(counters_from_json(&list_table()?))
}

/// `table inet seam` as the kernel holds it (`nft -j list table inet seam`).
pub fn list_table() -> Result<Value, NftError> {
    let out = run(
        "list table",
        &["-j", "list", "table", TABLE_FAMILY, TABLE_NAME],
        None,
    )?;
    serde_json::from_slice(&out).map_err(|source| NftError::Json { source })
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
    fn counters_are_summed_by_comment() {
        let json = r#"{"nftables": [{"metainfo": {}}, {"table": {"name": "seam"}},
          {"rule": {"chain": "a", "comment": "np/x/p/ingress/0", "expr": [{"match": {}}, {"counter": {"packets": 2, "bytes": 120}}, {"return": null}]}},
          {"rule": {"chain": "a", "comment": "np/x/p/ingress/0", "expr": [{"counter": {"packets": 1, "bytes": 60}}, {"return": null}]}},
          {"rule": {"chain": "a", "expr": [{"counter": {"packets": 9, "bytes": 9}}]}},
          {"rule": {"chain": "b", "comment": "default/egress", "expr": [{"counter": {"packets": 0, "bytes": 0}}]}}]}"#;
        let value: Value = serde_json::from_str(json).unwrap_or_default();
        let c = counters_from_json(&value);
        assert_eq!(c.len(), 2);
        assert_eq!(
            c.get("np/x/p/ingress/0"),
            Some(&RuleCounter {
                packets: 3,
                bytes: 180
            })
        );
    }

    #[test]
    fn the_nat_table_is_read_in_canonical_form() {
        // As nft 1.0.6 lists what `seam_dataplane::render_nat` wrote.
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
          {"table": {"family": "ip", "name": "seam-nat", "handle": 5}},
          {"set": {"family": "ip", "name": "snat_sources", "table": "seam-nat", "type": "ipv4_addr", "handle": 1, "flags": ["interval"], "elem": [{"prefix": {"addr": "10.240.1.0", "len": 24}}]}},
          {"set": {"family": "ip", "name": "not_masqueraded", "table": "seam-nat", "type": "ipv4_addr", "handle": 2, "flags": ["interval"],
            "elem": [{"prefix": {"addr": "10.240.0.0", "len": 23}}, {"range": ["198.18.0.11", "198.18.0.12"]}, "203.0.113.10"]}},
          {"chain": {"family": "ip", "table": "seam-nat", "name": "postrouting", "handle": 3, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
          {"rule": {"family": "ip", "table": "seam-nat", "chain": "postrouting", "handle": 4, "comment": "seam snat",
            "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@snat_sources"}}, {"masquerade": null}]}}]}"#;
        let value: Value = serde_json::from_str(json).unwrap_or_default();
        let desired = seam_dataplane::DesiredNat {
            sources: ["10.240.1.0/24".parse().unwrap_or_else(|_| unreachable!())].into(),
            known: [
                "10.240.0.0/24",
                "10.240.1.0/24",
                "198.18.0.11/32",
                "198.18.0.12/32",
                "203.0.113.10/32",
            ]
            .iter()
            .map(|s| s.parse().unwrap_or_else(|_| unreachable!()))
            .collect(),
        };
        let observed = nat_from_json(&value);
        assert!(observed.rule_ok, "{observed:?}");
        assert_eq!(seam_dataplane::plan_nat(Some(&desired), &observed), None);
        // A rule added by hand to Seam's chain gets the table rewritten.
        let extra = json.replace(
            r#"{"metainfo""#,
            r#"{"rule": {"chain": "postrouting", "expr": [{"accept": null}]}}, {"metainfo""#,
        );
        let value: Value = serde_json::from_str(&extra).unwrap_or_default();
        assert!(!nat_from_json(&value).rule_ok);
    }

    #[test]
    fn offending_line_is_found() {
        let input = "table inet seam {}\nbogus line here\n";
        let stderr =
            "/dev/stdin:2:1-5: Error: syntax error, unexpected string\nbogus line here\n^^^^^";
        assert_eq!(
            offending_line(stderr, input),
            Some((2, "bogus line here".to_string()))
        );
    }
}
