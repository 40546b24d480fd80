//! `seam explain`: the engine's inputs built from a controller [`Snapshot`], one flow evaluated,
//! whether the deciding rules are in the enforcing nodes' tables, and the verdict rendered per
//! direction (as text and as JSON; `seam explain` prints them). A destination that is a Service
//! address and port is explained as the dataplane treats it: translated to one of the Service's
//! backends before policy sees it, so each candidate backend gets its own verdict
//! ([`ServiceMatch`]).
//!
//! What the controller does not know is said, not guessed: endpoints carry no named ports (rules
//! on named ports match nothing here). Whether a deciding rule is realized is read back from the
//! enforcing node's rule counters when the caller can read them ([`CounterReader`]; `seam explain`
//! reads a lab's nodes), else it is [`Realization::Unknown`]. Pure: the counters are the caller's
//! input; nothing here reads a table.

use std::net::Ipv4Addr;

use seam_model::Snapshot;
use seam_policy::{
    evaluate, reason_text, DirectionVerdict, Flow, FlowEnd, Inventory, PolicySet, Protocol, Tier,
    Verdict,
};
use serde_json::{json, Value};

use crate::error::ExplainError;

mod service;

pub use service::{BackendFlow, ServiceFlow, ServiceMatch};

/// Where a direction's verdict is enforced, and what the node's kernel says about its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realized {
    /// `egress` or `ingress`.
    pub direction: &'static str,
    /// The node whose table enforces it (the source's node for egress, the destination's for
    /// ingress).
    pub node: String,
    /// The deciding rule's id in the node's IR (`np/blue/web/ingress/0`), when one rule decides.
    pub rule_id: Option<String>,
    /// What reading the node's `table inet seam` found.
    pub state: RuleState,
}

/// The kernel side of one deciding rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleState {
    /// The rule is in the table; its counter.
    Present {
        /// Packets that matched it.
        packets: u64,
        /// Bytes that matched it.
        bytes: u64,
    },
    /// The table has no rule with that id: the node has not applied it (yet).
    Missing,
    /// The table could not be read; why.
    Unreadable(String),
    /// No single rule decides (nothing is enforced at this end).
    NotApplicable,
}

/// Whether the deciding rules are in the dataplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Realization {
    /// Not looked up (no way to read the nodes' tables from here).
    Unknown(String),
    /// One entry per enforced direction.
    Checked(Vec<Realized>),
}

impl Realization {
    fn describe(&self) -> String {
        match self {
            Realization::Unknown(why) => format!("unknown ({why})"),
            Realization::Checked(rows) => rows
                .iter()
                .map(|r| {
                    let rule = r.rule_id.as_deref().unwrap_or("-");
                    let state = match &r.state {
                        RuleState::Present { packets, bytes } => {
                            format!("in the table, counter {packets} packets / {bytes} bytes")
                        }
                        RuleState::Missing => "NOT in the table".to_string(),
                        RuleState::Unreadable(why) => format!("table unreadable: {why}"),
                        RuleState::NotApplicable => "nothing to realize".to_string(),
                    };
                    format!("{} on {}: {rule}: {state}", r.direction, r.node)
                })
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

/// Reads one node's rule counters (by nft comment); `Err` says why it could not.
pub type CounterReader<'a> =
    &'a dyn Fn(&str) -> Result<std::collections::BTreeMap<String, (u64, u64)>, String>;

pub use crate::cluster::inventory_name;

/// The engine's inventory from a snapshot (see [`crate::cluster::tenant_inventory`]).
pub fn inventory(snapshot: &Snapshot) -> Inventory {
    crate::cluster::tenant_inventory(&snapshot.tenants, &snapshot.namespaces, &snapshot.endpoints)
}

/// The policies in force from a snapshot, with warnings about what was left out.
pub fn policy_set(snapshot: &Snapshot) -> (PolicySet, Vec<String>) {
    crate::cluster::snapshot_policy_set(snapshot)
}

/// Parses `PORT/PROTO` (`80/tcp`, `53/UDP`, `8/icmp`), `PORT` (TCP) or `icmp` (type 8, echo).
pub fn parse_port_protocol(s: &str) -> Result<(u16, Protocol), ExplainError> {
    let bad = || ExplainError::PortProtocol(s.to_string());
    let (port, proto) = match s.split_once('/') {
        Some((port, proto)) => (port, proto),
        None if s.eq_ignore_ascii_case("icmp") => ("8", "ICMP"),
        None => (s, "TCP"),
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    let proto: Protocol = proto.to_ascii_uppercase().parse().map_err(|_| bad())?;
    Ok((port, proto))
}

/// A flow end from the command line: an IPv4 address or `namespace/name`.
pub fn parse_end(s: &str) -> Result<FlowEnd, ExplainError> {
    s.parse::<FlowEnd>()
        .map_err(|_| ExplainError::End(s.to_string()))
}

/// One explained flow.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The flow.
    pub flow: Flow,
    /// The source as resolved (`blue/web-1 10.1.0.5 on n1`).
    pub src: String,
    /// The destination as resolved.
    pub dst: String,
    /// The engine's verdict.
    pub verdict: Verdict,
    /// Whether the deciding rules are in the dataplane.
    pub realized: Realization,
    /// When the destination is a Service address: the Service port that translates the flow and
    /// each candidate backend with its own verdict (the policy sees the backend, not the
    /// Service address: `verdict` and `realized` above are then the flow as addressed, which
    /// no packet is checked against), or that nothing translates this port.
    pub service: Option<ServiceMatch>,
    /// Warnings about the inputs (ignored objects, dangling groups).
    pub warnings: Vec<String>,
}

fn describe_end(snapshot: &Snapshot, inv: &Inventory, end: &FlowEnd) -> String {
    let endpoint = match end {
        FlowEnd::Endpoint(r) => inv.endpoint(r),
        FlowEnd::Address(a) => inv.endpoint_by_address(*a),
    };
    let Some(e) = endpoint else {
        return format!("{end} (outside address)");
    };
    let addr = e
        .addresses
        .first()
        .copied()
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let node = snapshot
        .endpoints
        .iter()
        .find(|m| m.ip == addr && m.namespace == e.namespace && inventory_name(m) == e.name)
        .map(|m| m.node.as_str())
        .unwrap_or("?");
    format!("{} {addr} on {node}", e.reference())
}

fn node_of(snapshot: &Snapshot, inv: &Inventory, end: &FlowEnd) -> Option<String> {
    let e = match end {
        FlowEnd::Endpoint(r) => inv.endpoint(r),
        FlowEnd::Address(a) => inv.endpoint_by_address(*a),
    }?;
    let addr = e.addresses.first().copied()?;
    snapshot
        .endpoints
        .iter()
        .find(|m| m.ip == addr && m.namespace == e.namespace && inventory_name(m) == e.name)
        .map(|m| m.node.clone())
}

/// Evaluates `flow` against what `snapshot` holds; with `counters`, also checks that each
/// deciding rule is in the enforcing node's table and reads its counter.
pub fn explain(
    snapshot: &Snapshot,
    flow: Flow,
    counters: Option<CounterReader<'_>>,
) -> Result<Explanation, ExplainError> {
    let inv = inventory(snapshot);
    let (set, warnings) = policy_set(snapshot);
    let verdict = evaluate(&set, &inv, &flow).map_err(ExplainError::Eval)?;
    let realized = realize(snapshot, &inv, &flow, &verdict, counters);
    let service = service::explain_service(snapshot, &inv, &set, &flow, counters)?;
    let dst = match &service {
        Some(ServiceMatch::Translated(t)) => format!("{} ({})", flow.dst, t.frontend),
        _ => describe_end(snapshot, &inv, &flow.dst),
    };
    Ok(Explanation {
        src: describe_end(snapshot, &inv, &flow.src),
        dst,
        flow,
        verdict,
        realized,
        service,
        warnings,
    })
}

/// Whether the rules deciding `verdict` for `flow` are in the enforcing nodes' tables.
fn realize(
    snapshot: &Snapshot,
    inv: &Inventory,
    flow: &Flow,
    verdict: &Verdict,
    counters: Option<CounterReader<'_>>,
) -> Realization {
    let Some(read) = counters else {
        return Realization::Unknown("pass --lab to read the nodes' tables".into());
    };
    let mut rows = Vec::new();
    for (direction, d, end) in [
        ("egress", &verdict.egress, &flow.src),
        ("ingress", &verdict.ingress, &flow.dst),
    ] {
        let Some(node) = node_of(snapshot, inv, end) else {
            continue;
        };
        let rule_id = crate::verdict_rule_id(d);
        let state = match (&rule_id, d.tier) {
            (_, Tier::Unenforced) | (None, _) => RuleState::NotApplicable,
            (Some(id), _) => match read(&node) {
                Err(why) => RuleState::Unreadable(why),
                Ok(table) => match table.get(&crate::nft_comment(id)) {
                    Some((packets, bytes)) => RuleState::Present {
                        packets: *packets,
                        bytes: *bytes,
                    },
                    None => RuleState::Missing,
                },
            },
        };
        rows.push(Realized {
            direction,
            node,
            rule_id: rule_id.map(|r| r.as_str().to_string()),
            state,
        });
    }
    Realization::Checked(rows)
}

fn tier(t: Tier) -> &'static str {
    match t {
        Tier::Admin => "admin",
        Tier::Namespace => "namespace",
        Tier::Baseline => "baseline",
        Tier::Unenforced => "unenforced",
    }
}

fn decision(d: &DirectionVerdict) -> &'static str {
    if d.allowed() {
        "allow"
    } else {
        "deny"
    }
}

/// The human layout.
pub fn render_text(x: &Explanation) -> String {
    let mut out = String::new();
    let flow = &x.flow;
    out.push_str(&format!(
        "flow     {} -> {}  {}/{}\n",
        x.src,
        x.dst,
        flow.port,
        flow.protocol.as_str()
    ));
    if let Some(m) = &x.service {
        service::render_text(m, flow, &mut out);
        if matches!(m, ServiceMatch::Translated(_)) {
            // The policy never sees the Service address: the per-backend verdicts are the answer.
            for w in &x.warnings {
                out.push_str(&format!("warning: {w}\n"));
            }
            return out;
        }
    }
    out.push_str(&format!(
        "verdict  {}\n",
        if x.verdict.allowed() {
            "ALLOWED"
        } else {
            "DENIED"
        }
    ));
    for (name, d) in [
        ("egress", &x.verdict.egress),
        ("ingress", &x.verdict.ingress),
    ] {
        out.push_str(&format!(
            "  {name:<8} {:<5}  tier {:<10}  {}{}\n",
            decision(d),
            tier(d.tier),
            reason_text(&d.reason),
            if d.log { "  [log]" } else { "" }
        ));
    }
    out.push_str(&format!("realized: {}\n", x.realized.describe()));
    for w in &x.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

fn direction_json(d: &DirectionVerdict) -> Value {
    let rule = d.rule().map(|r| {
        json!({
            "kind": r.kind.as_str(),
            "namespace": r.namespace,
            "name": r.name,
            "ruleIndex": r.rule_index,
            "ruleName": r.rule_name,
            "text": r.to_string(),
        })
    });
    json!({
        "decision": decision(d),
        "tier": tier(d.tier),
        "reason": reason_text(&d.reason),
        "rule": rule,
        "log": d.log,
    })
}

/// The `--json` layout. When a Service port translates the destination, `service` holds it and
/// its backends (each with `allowed`, `egress`, `ingress`), `allowed` is true when every backend
/// in use allows the flow (false when none is usable: refused), and `egress`, `ingress` and
/// `realized` are null (no packet is checked against the Service address itself).
pub fn render_json(x: &Explanation) -> Value {
    if let Some(m @ ServiceMatch::Translated(t)) = &x.service {
        return json!({
            "src": x.flow.src.to_string(),
            "dst": x.flow.dst.to_string(),
            "srcResolved": x.src,
            "dstResolved": x.dst,
            "port": x.flow.port,
            "protocol": x.flow.protocol.as_str(),
            "allowed": t.allowed(),
            "egress": null,
            "ingress": null,
            "realized": null,
            "service": service::render_json(m),
            "warnings": x.warnings,
        });
    }
    json!({
        "src": x.flow.src.to_string(),
        "dst": x.flow.dst.to_string(),
        "srcResolved": x.src,
        "dstResolved": x.dst,
        "port": x.flow.port,
        "protocol": x.flow.protocol.as_str(),
        "allowed": x.verdict.allowed(),
        "egress": direction_json(&x.verdict.egress),
        "ingress": direction_json(&x.verdict.ingress),
        "realized": x.realized.describe(),
        "service": x.service.as_ref().map(service::render_json),
        "warnings": x.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use seam_model::{endpoint_mac, EndpointKind as K};
    use std::collections::BTreeMap;

    fn ep(ns: &str, pod: &str, ip: [u8; 4], app: &str) -> seam_model::Endpoint {
        seam_model::Endpoint {
            name: format!("{ns}/{pod}"),
            kind: K::Pod,
            namespace: ns.into(),
            segment: format!("ns-{ns}"),
            node: "n1".into(),
            ip: ip.into(),
            mac: endpoint_mac(ip.into()),
            labels: BTreeMap::from([("app".to_string(), app.to_string())]),
            container_id: None,
            ifname: None,
            ports: Vec::new(),
            conditions: None,
        }
    }

    fn snapshot() -> Snapshot {
        let policies = seam_policy::parse_yaml(
            r#"
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: epg-client}
spec: {selectors: [{namespaces: [green]}]}
---
apiVersion: seam.dev/v1alpha1
kind: EndpointGroup
metadata: {name: epg-webserver}
spec: {selectors: [{namespaces: [blue]}]}
---
apiVersion: seam.dev/v1alpha1
kind: Contract
metadata: {name: contract-web}
spec:
  consumers: [epg-client]
  providers: [epg-webserver]
  subjects: [{name: web, filters: [{protocol: TCP, ports: [80, 443]}]}]
  action: allow
"#,
        )
        .unwrap();
        Snapshot {
            endpoints: vec![
                ep("blue", "web-1", [10, 1, 0, 5], "web"),
                ep("green", "db-1", [10, 2, 0, 5], "db"),
            ],
            namespaces: vec![seam_model::Namespace::named("blue")],
            policies,
            ..Snapshot::default()
        }
    }

    fn flow(src: &str, dst: &str, pp: &str) -> Flow {
        let (port, protocol) = parse_port_protocol(pp).unwrap();
        Flow {
            src: parse_end(src).unwrap(),
            dst: parse_end(dst).unwrap(),
            protocol,
            port,
        }
    }

    #[test]
    fn contract_allows_and_isolates() {
        let snap = snapshot();
        let x = explain(&snap, flow("green/db-1", "blue/web-1", "443/tcp"), None).unwrap();
        assert!(x.verdict.allowed());
        let text = render_text(&x);
        assert!(text.contains("ALLOWED"), "{text}");
        assert!(
            text.contains("Contract contract-web rule 0 (web)"),
            "{text}"
        );
        assert!(text.contains("green/db-1 10.2.0.5 on n1"), "{text}");
        assert!(text.contains("realized: unknown (pass --lab"), "{text}");
        // With the nodes' tables: the egress rule is present with its counter, the ingress rule
        // is missing from the destination node's table.
        let read = |node: &str| -> Result<std::collections::BTreeMap<String, (u64, u64)>, String> {
            assert_eq!(node, "n1");
            Ok([("contract/contract-web/egress/0".to_string(), (3, 180))].into())
        };
        let x = explain(
            &snap,
            flow("green/db-1", "blue/web-1", "443/tcp"),
            Some(&read),
        )
        .unwrap();
        let text = render_text(&x);
        assert!(
            text.contains(
                "egress on n1: contract/contract-web/egress/0: in the table, counter 3 packets"
            ),
            "{text}"
        );
        assert!(
            text.contains("ingress on n1: contract/contract-web/ingress/0: NOT in the table"),
            "{text}"
        );

        // By address, and a port the contract does not open: the provider is isolated.
        let x = explain(&snap, flow("10.2.0.5", "10.1.0.5", "8080"), None).unwrap();
        assert!(!x.verdict.allowed());
        let j = render_json(&x);
        assert_eq!(j["ingress"]["decision"], "deny");
        assert_eq!(j["ingress"]["tier"], "namespace");
        assert!(j["ingress"]["reason"]
            .as_str()
            .unwrap()
            .contains("isolated by Contract contract-web"));
        assert_eq!(j["egress"]["decision"], "allow");
    }

    #[test]
    fn inputs_are_checked() {
        assert_eq!(parse_port_protocol("53/udp").unwrap(), (53, Protocol::Udp));
        assert_eq!(parse_port_protocol("icmp").unwrap(), (8, Protocol::Icmp));
        assert!(parse_port_protocol("x/tcp").is_err());
        assert!(parse_port_protocol("80/gre").is_err());
        assert!(parse_end("nope").is_err());
        let err = explain(&snapshot(), flow("blue/nope", "blue/web-1", "80"), None).unwrap_err();
        assert!(matches!(err, ExplainError::Eval(_)));
        // Endpoints without a namespace object get the name label.
        let inv = inventory(&snapshot());
        assert_eq!(
            inv.namespaces["green"].labels["kubernetes.io/metadata.name"],
            "green"
        );
    }
}
