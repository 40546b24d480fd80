//! [`FlowFilter`]: which flow records a reader wants, as `GET /v1/flows` takes it in its query
//! and `seam flows` in its flags. One parser for both, so the CLI and the controller refuse the
//! same input with the same words.
//!
//! Pure: the time a `since` is counted back from is the caller's (`now_ms`).

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use seam_policy::PolicyKind;

use super::{FlowPeer, FlowRecord, FlowVerdict, PeerKind};
use crate::error::{FieldError, ValidationError};

/// The most records one `GET /v1/flows` answers before following (`limit`).
pub const MAX_FLOW_LIMIT: usize = 100_000;
/// The records `GET /v1/flows` answers when the query names no `limit`.
pub const DEFAULT_FLOW_LIMIT: usize = 1_000;
/// The longest `since`: 30 days (the controller keeps far less than that anyway).
pub const MAX_FLOW_SINCE_MS: u64 = 30 * 24 * 3600 * 1000;

/// The kind of the [`ValidationError`] a malformed query is refused with.
pub const FLOW_QUERY: &str = "FlowQuery";

/// Which records a reader wants. Every field that is set must match (an empty filter matches
/// every record).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// The sender (`from`).
    pub from: Option<PeerFilter>,
    /// The receiver (`to`). An address or range also matches the records of connections sent
    /// to it as a Service's address (`service.ip`: the ClusterIP, external or LoadBalancer
    /// address, or the node address of a NodePort, which the record's `dst`, the backend, is
    /// not).
    pub to: Option<PeerFilter>,
    /// The node whose table decided (`node`).
    pub node: Option<String>,
    /// The verdict (`verdict`: `allowed` or `denied`).
    pub verdict: Option<FlowVerdict>,
    /// The policy or contract that decided (`policy`).
    pub policy: Option<PolicyFilter>,
    /// Only records this recent, in milliseconds (`since`: `30s`, `5m`, `2h`, `1h30m`).
    pub since_ms: Option<u64>,
    /// At most this many of the newest matching records before following (`limit`; the
    /// controller's default is [`DEFAULT_FLOW_LIMIT`]).
    pub limit: Option<usize>,
    /// After the records held, keep streaming new matching ones (`follow=true`).
    pub follow: bool,
}

/// One end of a flow, as a filter names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerFilter {
    /// `namespace/name`: one endpoint (a pod, a VM, an external endpoint).
    Endpoint {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// `namespace/`: every endpoint of a namespace.
    Namespace(String),
    /// `10.0.0.5` or `10.0.0.0/24`: an address or a range.
    Net(Ipv4Net),
    /// `node:NAME`: the node's own address (a peer of kind node).
    Node(String),
}

/// A policy or contract, as a filter names it: `NetworkPolicy prod/allow-web` (as a record's
/// `policy` names it), `Contract web`, or without the kind: `prod/allow-web`, `allow-web`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFilter {
    /// The kind, when given.
    pub kind: Option<PolicyKind>,
    /// The namespace, when given.
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl PeerFilter {
    /// Parses `namespace/name`, `namespace/`, an IPv4 address or CIDR, or `node:NAME`.
    pub fn parse(s: &str) -> Result<PeerFilter, String> {
        let bad = || {
            format!(
                "{s:?} is not namespace/name, namespace/, an IPv4 address or CIDR, or node:NAME"
            )
        };
        if let Some(node) = s.strip_prefix("node:") {
            return if crate::is_valid_name(node) {
                Ok(PeerFilter::Node(node.to_string()))
            } else {
                Err(bad())
            };
        }
        if let Ok(ip) = s.parse::<Ipv4Addr>() {
            return Ok(PeerFilter::Net(Ipv4Net::from(ip)));
        }
        if let Ok(net) = s.parse::<Ipv4Net>() {
            return Ok(PeerFilter::Net(net.trunc()));
        }
        match s.split_once('/') {
            // An address before the slash was meant as a CIDR, and it is not one.
            Some((ns, _)) if ns.parse::<Ipv4Addr>().is_ok() => Err(bad()),
            Some((ns, "")) if is_name(ns) => Ok(PeerFilter::Namespace(ns.to_string())),
            Some((ns, name)) if is_name(ns) && is_name(name) => Ok(PeerFilter::Endpoint {
                namespace: ns.to_string(),
                name: name.to_string(),
            }),
            _ => Err(bad()),
        }
    }

    /// Whether `peer` is what this names.
    pub fn matches(&self, peer: &FlowPeer) -> bool {
        match self {
            PeerFilter::Endpoint { namespace, name } => {
                peer.namespace.as_deref() == Some(namespace) && peer.name.as_deref() == Some(name)
            }
            PeerFilter::Namespace(namespace) => peer.namespace.as_deref() == Some(namespace),
            PeerFilter::Net(net) => net.contains(&peer.ip),
            PeerFilter::Node(node) => {
                peer.kind == PeerKind::Node && peer.name.as_deref() == Some(node)
            }
        }
    }
}

impl PeerFilter {
    /// Whether this is an address or range that holds `ip` (a Service's address, which is no
    /// peer's: only an address names it).
    pub fn matches_address(&self, ip: Ipv4Addr) -> bool {
        matches!(self, PeerFilter::Net(net) if net.contains(&ip))
    }
}

impl fmt::Display for PeerFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerFilter::Endpoint { namespace, name } => write!(f, "{namespace}/{name}"),
            PeerFilter::Namespace(namespace) => write!(f, "{namespace}/"),
            PeerFilter::Net(net) if net.prefix_len() == 32 => write!(f, "{}", net.addr()),
            PeerFilter::Net(net) => write!(f, "{net}"),
            PeerFilter::Node(node) => write!(f, "node:{node}"),
        }
    }
}

/// A namespace or object name as the API accepts it (a label value's characters, not empty).
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// The policy kind `s` names: its kind (any case) or its plural.
fn policy_kind(s: &str) -> Option<PolicyKind> {
    PolicyKind::ALL
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(s) || k.plural().eq_ignore_ascii_case(s))
}

impl PolicyFilter {
    /// Parses `KIND NAMESPACE/NAME`, `KIND NAME`, `NAMESPACE/NAME` or `NAME`.
    pub fn parse(s: &str) -> Result<PolicyFilter, String> {
        let s = s.trim();
        let (kind, rest) = match s.split_once(' ') {
            Some((kind, rest)) => match policy_kind(kind) {
                Some(k) => (Some(k), rest.trim()),
                None => {
                    let kinds: Vec<&str> = PolicyKind::ALL.iter().map(|k| k.as_str()).collect();
                    return Err(format!(
                        "{kind:?} is not a policy kind (one of {})",
                        kinds.join(", ")
                    ));
                }
            },
            None => (None, s),
        };
        let (namespace, name) = match rest.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, rest),
        };
        if !is_name(name) || namespace.is_some_and(|ns| !is_name(ns)) {
            return Err(format!(
                "{s:?} is not a policy as a flow names it: [KIND] [NAMESPACE/]NAME, e.g. \"NetworkPolicy prod/allow-web\", \"Contract web\" or \"allow-web\""
            ));
        }
        Ok(PolicyFilter {
            kind,
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        })
    }

    /// Whether the policy `kind`, `namespace`, `name` (a stored object's) is one this names.
    pub fn matches_object(&self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        self.name == name
            && self
                .kind
                .is_none_or(|k| k.as_str().eq_ignore_ascii_case(kind))
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| namespace == Some(ns))
    }

    /// Whether a record's `policy` (`NetworkPolicy prod/allow-web`, `Contract web`) is one this
    /// names.
    pub fn matches_record(&self, policy: &str) -> bool {
        let (kind, rest) = policy.split_once(' ').unwrap_or(("", policy));
        let (namespace, name) = match rest.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, rest),
        };
        self.matches_object(kind, namespace, name)
    }
}

impl fmt::Display for PolicyFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(kind) = self.kind {
            write!(f, "{} ", kind.as_str())?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        f.write_str(&self.name)
    }
}

/// Parses a duration: one or more `<number><unit>` with units `ms`, `s`, `m`, `h`, `d`
/// (`30s`, `5m`, `1h30m`), at least a millisecond and at most [`MAX_FLOW_SINCE_MS`].
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration such as 30s, 5m, 2h or 1h30m");
    let mut total: u64 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        total = number
            .checked_mul(scale)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(bad)?;
        rest = tail;
    }
    if total == 0 || total > MAX_FLOW_SINCE_MS {
        return Err(format!(
            "{s:?} is out of range: from 1ms to 30d ({MAX_FLOW_SINCE_MS} ms)"
        ));
    }
    Ok(total)
}

/// A duration in milliseconds as [`parse_duration_ms`] reads it (`90000` → `1m30s`).
fn format_duration_ms(mut ms: u64) -> String {
    let mut out = String::new();
    for (unit, scale) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= scale {
            out.push_str(&format!("{}{unit}", ms / scale));
            ms %= scale;
        }
    }
    out
}

impl FlowFilter {
    /// Parses a query string (`from=web%2F&verdict=denied&follow=true`, without the `?`).
    /// Every problem is reported at once, each under the parameter's name; an unknown or
    /// repeated parameter is a problem too.
    pub fn from_query(query: &str) -> Result<FlowFilter, ValidationError> {
        let mut pairs = Vec::new();
        let mut errors = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match (percent_decode(key), percent_decode(value)) {
                (Some(key), Some(value)) => pairs.push((key, value)),
                _ => errors.push(field(
                    parameter_path(key),
                    format!("{pair:?} is not valid percent-encoded UTF-8"),
                )),
            }
        }
        match FlowFilter::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            Ok(filter) if errors.is_empty() => Ok(filter),
            Ok(_) => Err(query_error(errors)),
            Err(mut e) => {
                errors.append(&mut e.errors);
                Err(query_error(errors))
            }
        }
    }

    /// Parses decoded `(parameter, value)` pairs: `from`, `to`, `node`, `verdict`, `policy`,
    /// `since`, `limit`, `follow` (`true`, `false`, or no value: true).
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<FlowFilter, ValidationError> {
        let mut filter = FlowFilter::default();
        let mut errors = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in pairs {
            if seen.contains(&key) {
                errors.push(field(key, "given more than once".to_string()));
                continue;
            }
            seen.push(key);
            let problem = match key {
                "from" => PeerFilter::parse(value).map(|p| filter.from = Some(p)),
                "to" => PeerFilter::parse(value).map(|p| filter.to = Some(p)),
                "node" => parse_node(value).map(|n| filter.node = Some(n)),
                "verdict" => parse_verdict(value).map(|v| filter.verdict = Some(v)),
                "policy" => PolicyFilter::parse(value).map(|p| filter.policy = Some(p)),
                "since" => parse_duration_ms(value).map(|ms| filter.since_ms = Some(ms)),
                "limit" => parse_limit(value).map(|n| filter.limit = Some(n)),
                "follow" => parse_follow(value).map(|b| filter.follow = b),
                other => Err(format!(
                    "unknown parameter {other:?} (from, to, node, verdict, policy, since, limit, follow)"
                )),
            };
            if let Err(message) = problem {
                errors.push(field(parameter_path(key), message));
            }
        }
        if errors.is_empty() {
            Ok(filter)
        } else {
            Err(query_error(errors))
        }
    }

    /// The query string that [`FlowFilter::from_query`] reads back as this filter (empty for
    /// the empty filter).
    pub fn to_query(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(p) = &self.from {
            pairs.push(("from", p.to_string()));
        }
        if let Some(p) = &self.to {
            pairs.push(("to", p.to_string()));
        }
        if let Some(n) = &self.node {
            pairs.push(("node", n.clone()));
        }
        if let Some(v) = self.verdict {
            pairs.push(("verdict", verdict_name(v).to_string()));
        }
        if let Some(p) = &self.policy {
            pairs.push(("policy", p.to_string()));
        }
        if let Some(ms) = self.since_ms {
            pairs.push(("since", format_duration_ms(ms)));
        }
        if let Some(n) = self.limit {
            pairs.push(("limit", n.to_string()));
        }
        if self.follow {
            pairs.push(("follow", "true".to_string()));
        }
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// Whether `record` passes every part of the filter but `limit` and `follow`; `now_ms` is
    /// what `since` counts back from.
    pub fn matches(&self, record: &FlowRecord, now_ms: u64) -> bool {
        self.from.as_ref().is_none_or(|p| p.matches(&record.src))
            && self.to.as_ref().is_none_or(|p| {
                p.matches(&record.dst)
                    || record
                        .service
                        .as_ref()
                        .is_some_and(|s| p.matches_address(s.ip))
            })
            && self.node.as_ref().is_none_or(|n| *n == record.node)
            && self.verdict.is_none_or(|v| v == record.verdict)
            && self.policy.as_ref().is_none_or(|p| {
                record
                    .policy
                    .as_deref()
                    .is_some_and(|name| p.matches_record(name))
            })
            && self
                .since_ms
                .is_none_or(|since| record.time_ms >= now_ms.saturating_sub(since))
    }
}

fn parse_node(value: &str) -> Result<String, String> {
    if crate::is_valid_name(value) {
        Ok(value.to_string())
    } else {
        Err(format!("{value:?} is not a node name"))
    }
}

fn parse_verdict(value: &str) -> Result<FlowVerdict, String> {
    match value {
        "allowed" => Ok(FlowVerdict::Allowed),
        "denied" => Ok(FlowVerdict::Denied),
        _ => Err(format!("{value:?} is not a verdict: allowed or denied")),
    }
}

fn parse_limit(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=MAX_FLOW_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!(
            "{value:?} is not a number of records from 1 to {MAX_FLOW_LIMIT}"
        )),
    }
}

fn parse_follow(value: &str) -> Result<bool, String> {
    match value {
        "" | "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{value:?} is not true or false")),
    }
}

/// `allowed` or `denied`.
pub fn verdict_name(verdict: FlowVerdict) -> &'static str {
    match verdict {
        FlowVerdict::Allowed => "allowed",
        FlowVerdict::Denied => "denied",
    }
}

/// The field path a problem with parameter `key` is reported under: the parameter, or `query`
/// for one the filter does not know.
fn parameter_path(key: &str) -> &str {
    const KNOWN: [&str; 8] = [
        "from", "to", "node", "verdict", "policy", "since", "limit", "follow",
    ];
    KNOWN.into_iter().find(|k| *k == key).unwrap_or("query")
}

fn field(path: &str, message: String) -> FieldError {
    FieldError {
        path: path.to_string(),
        message,
    }
}

fn query_error(errors: Vec<FieldError>) -> ValidationError {
    ValidationError {
        kind: FLOW_QUERY,
        name: String::new(),
        errors,
    }
}

/// Decodes `%XX` escapes and `+` (a space, as forms send it); `None` when an escape is broken
/// or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Escapes everything but unreserved characters (RFC 3986).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
