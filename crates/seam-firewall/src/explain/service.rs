//! `seam explain` through a Service: which Service port an address and port are, the backends
//! the translating node would choose among (as the agents' dataplane chooses them, from
//! [`seam_model::resolve`] and [`seam_model::usable`]) and, for each, the verdict of the flow the
//! policy actually sees: the source to the backend's address and target port (the dataplane
//! translates in prerouting/output, before the forward hook's policy).

use std::net::Ipv4Addr;

use seam_model::{
    Backend, ClusterIp, PortProtocol, ResolvedPort, Service, ServicePort, ServiceType, Snapshot,
    TargetPort, TrafficPolicy,
};
use seam_policy::{evaluate, Flow, FlowEnd, Inventory, PolicySet, Protocol, Verdict};
use serde_json::{json, Value};

use super::Realization;
use super::{decision, describe_end, direction_json, node_of, realize, tier, CounterReader};
use crate::error::ExplainError;

/// What the Services make of a flow's destination.
#[derive(Debug, Clone)]
pub enum ServiceMatch {
    /// A Service port translates the destination: the flow reaches one of its backends.
    Translated(ServiceFlow),
    /// The address is a Service's, but none of its ports is this port and protocol: nothing
    /// translates the flow (it is evaluated as addressed).
    NotTranslated {
        /// The Services holding the address (`namespace/name`) and how (`ClusterIP`, …).
        services: Vec<String>,
    },
}

/// The Service port a flow's destination is, and its candidate backends.
#[derive(Debug, Clone)]
pub struct ServiceFlow {
    /// `namespace/name` of the Service.
    pub service: String,
    /// The Service port: its name, else its number.
    pub port: String,
    /// The `targetPort` as written (`8080`, `http`; the Service port when absent).
    pub target_port: String,
    /// Which of the Service's addresses the destination is (`ClusterIP 10.96.0.10`,
    /// `NodePort 30080 of node n2`, …).
    pub frontend: String,
    /// The node whose table translates the flow (the source's, or for a NodePort the node whose
    /// address it is), when known.
    pub node: Option<String>,
    /// The traffic policy that applies and what it does here.
    pub traffic_policy: String,
    /// Every backend of the Service port, used or not, in address order.
    pub backends: Vec<BackendFlow>,
}

impl ServiceFlow {
    /// The backends the translating node would send new connections to.
    pub fn used(&self) -> impl Iterator<Item = &BackendFlow> {
        self.backends.iter().filter(|b| b.unused.is_none())
    }

    /// Whether every connection is allowed: at least one backend is used and every used one
    /// allows the flow.
    pub fn allowed(&self) -> bool {
        self.used().count() > 0 && self.used().all(|b| b.verdict.allowed())
    }

    /// `allowed`, `denied`, `partly allowed` (the backend chosen decides) or `refused` (no
    /// usable backend: the dataplane refuses at once).
    pub fn outcome(&self) -> &'static str {
        let used = self.used().count();
        let allowed = self.used().filter(|b| b.verdict.allowed()).count();
        match (used, allowed) {
            (0, _) => "refused",
            (u, a) if u == a => "allowed",
            (_, 0) => "denied",
            _ => "partly allowed",
        }
    }
}

/// One candidate backend and the verdict of the translated flow to it.
#[derive(Debug, Clone)]
pub struct BackendFlow {
    /// The backend (address, resolved target port, node, conditions).
    pub backend: Backend,
    /// The backend as resolved, with its port (`web/web-1 10.1.0.7:8080 on n2`).
    pub resolved: String,
    /// Why the translating node does not send new connections to it (`None`: it does).
    pub unused: Option<String>,
    /// The verdict of the source to the backend's address and target port.
    pub verdict: Verdict,
    /// Whether the deciding rules are in the dataplane.
    pub realized: Realization,
}

fn port_protocol(p: Protocol) -> Option<PortProtocol> {
    match p {
        Protocol::Tcp => Some(PortProtocol::Tcp),
        Protocol::Udp => Some(PortProtocol::Udp),
        Protocol::Sctp => Some(PortProtocol::Sctp),
        Protocol::Icmp => None,
    }
}

/// How a Service holds an address: the frontend's description and the traffic policy that
/// governs it (`None`: none restricts, as for LoadBalancer addresses).
fn address_roles(service: &Service, addr: Ipv4Addr) -> Vec<(String, Option<&'static str>)> {
    let spec = &service.spec;
    let mut roles = Vec::new();
    let ClusterIp::Address(cluster_ip) = spec.cluster_ip else {
        // Headless or not yet allocated: nothing is translated.
        return roles;
    };
    if cluster_ip == addr {
        roles.push((format!("ClusterIP {addr}"), Some("internalTrafficPolicy")));
    }
    if spec.external_ips.contains(&addr) {
        roles.push((format!("externalIP {addr}"), Some("externalTrafficPolicy")));
    }
    if spec.service_type == ServiceType::LoadBalancer
        && service
            .status
            .load_balancer
            .ingress
            .iter()
            .any(|i| i.ip == addr)
    {
        // Every node and the gateways send these to every usable backend (the gateway path
        // keeps the client's address without restricting to local backends).
        roles.push((format!("LoadBalancer address {addr}"), None));
    }
    roles
}

fn port_label(p: &ServicePort) -> String {
    match &p.name {
        Some(n) if !n.is_empty() => format!("{n} ({}/{})", p.port, p.protocol.as_str()),
        _ => format!("{}/{}", p.port, p.protocol.as_str()),
    }
}

/// The Service port `flow` is addressed to, with every candidate backend's verdict; `None` when
/// the destination is no Service's address.
pub(super) fn explain_service(
    snapshot: &Snapshot,
    inv: &Inventory,
    set: &PolicySet,
    flow: &Flow,
    counters: Option<CounterReader<'_>>,
) -> Result<Option<ServiceMatch>, ExplainError> {
    let FlowEnd::Address(addr) = flow.dst else {
        return Ok(None);
    };
    let protocol = port_protocol(flow.protocol);
    let src_node = node_of(snapshot, inv, &flow.src);
    let mut holders = Vec::new();
    // The first Service (in store order) with a frontend wins, as the agents keep the first of
    // two frontends with one key.
    for service in &snapshot.services {
        for (frontend, policy) in address_roles(service, addr) {
            holders.push(format!("{} ({frontend})", service.key()));
            let Some(index) = service
                .spec
                .ports
                .iter()
                .position(|p| Some(p.protocol) == protocol && p.port == flow.port)
            else {
                continue;
            };
            let local = policy.filter(|p| {
                let tp = if *p == "internalTrafficPolicy" {
                    service.spec.internal_traffic_policy
                } else {
                    service.spec.external_traffic_policy
                };
                tp == TrafficPolicy::Local
            });
            let t = translate(
                snapshot,
                inv,
                set,
                flow,
                counters,
                service,
                index,
                frontend,
                policy,
                local,
                src_node.clone(),
            )?;
            return Ok(Some(ServiceMatch::Translated(t)));
        }
    }
    // A node's address and a NodePort: translated on that node.
    if let Some(node) = snapshot.nodes.iter().find(|n| n.underlay_ip == addr) {
        for service in &snapshot.services {
            if !matches!(
                service.spec.service_type,
                ServiceType::NodePort | ServiceType::LoadBalancer
            ) || !matches!(service.spec.cluster_ip, ClusterIp::Address(_))
            {
                continue;
            }
            let Some(index) = service
                .spec
                .ports
                .iter()
                .position(|p| Some(p.protocol) == protocol && p.node_port == Some(flow.port))
            else {
                continue;
            };
            let local = (service.spec.external_traffic_policy == TrafficPolicy::Local)
                .then_some("externalTrafficPolicy");
            let t = translate(
                snapshot,
                inv,
                set,
                flow,
                counters,
                service,
                index,
                format!("NodePort {} of node {}", flow.port, node.name),
                Some("externalTrafficPolicy"),
                local,
                Some(node.name.clone()),
            )?;
            return Ok(Some(ServiceMatch::Translated(t)));
        }
    }
    Ok((!holders.is_empty()).then_some(ServiceMatch::NotTranslated { services: holders }))
}

#[allow(clippy::too_many_arguments)]
fn translate(
    snapshot: &Snapshot,
    inv: &Inventory,
    set: &PolicySet,
    flow: &Flow,
    counters: Option<CounterReader<'_>>,
    service: &Service,
    index: usize,
    frontend: String,
    policy: Option<&'static str>,
    local: Option<&'static str>,
    node: Option<String>,
) -> Result<ServiceFlow, ExplainError> {
    let resolved: Vec<ResolvedPort> =
        seam_model::resolve(service, &snapshot.endpoints, &snapshot.endpoint_slices);
    // `resolve` gives one entry per Service port, in order; the fallback is never taken.
    let port = resolved
        .into_iter()
        .nth(index)
        .unwrap_or_else(|| ResolvedPort {
            port: service.spec.ports[index].clone(),
            backends: Vec::new(),
        });
    let publish = service.spec.publish_not_ready_addresses;
    // Local with an unknown translating node (a source outside Seam reaching an externalIP):
    // the node the network delivers it to decides; every node's candidates are listed.
    let local_node = local.and(node.as_deref());
    let usable: Vec<&Backend> = seam_model::usable(&port.backends, publish, local_node);
    let traffic_policy = match (policy, local, node.as_deref()) {
        (None, _, _) => "none applies: every usable backend in the cluster".to_string(),
        (Some(p), None, _) => format!("{p} Cluster: usable backends on every node"),
        (Some(p), Some(_), Some(n)) => format!("{p} Local: only backends on {n}"),
        (Some(p), Some(_), None) => {
            format!("{p} Local: only backends on the node the traffic arrives at (not known here)")
        }
    };
    let any_ready = port
        .backends
        .iter()
        .filter(|b| local_node.is_none_or(|n| b.node.as_deref() == Some(n)))
        .any(|b| publish || b.state.ready);
    let mut backends = Vec::new();
    for b in &port.backends {
        let unused = if usable.contains(&b) {
            None
        } else if let (Some(p), Some(n)) = (local, local_node) {
            if b.node.as_deref() != Some(n) {
                Some(format!(
                    "not used: runs on {}, not on {n} ({p} Local)",
                    b.node.as_deref().unwrap_or("an unknown node")
                ))
            } else {
                Some(condition_reason(b, any_ready))
            }
        } else {
            Some(condition_reason(b, any_ready))
        };
        let to_backend = Flow {
            src: flow.src.clone(),
            dst: FlowEnd::Address(b.ip),
            protocol: flow.protocol,
            port: b.port,
        };
        let verdict = evaluate(set, inv, &to_backend).map_err(ExplainError::Eval)?;
        let realized = realize(snapshot, inv, &to_backend, &verdict, counters);
        backends.push(BackendFlow {
            backend: b.clone(),
            resolved: describe_backend(snapshot, inv, b),
            unused,
            verdict,
            realized,
        });
    }
    let sp = &port.port;
    Ok(ServiceFlow {
        service: service.key(),
        port: port_label(sp),
        target_port: match &sp.target_port {
            None => sp.port.to_string(),
            Some(TargetPort::Number(n)) => n.to_string(),
            Some(TargetPort::Name(n)) => n.clone(),
        },
        frontend,
        node,
        traffic_policy,
        backends,
    })
}

/// `web/web-1 10.1.0.7:8080 on n2`, or `10.1.0.9:8080 on n2 (outside address)` for a backend
/// that is no Seam endpoint.
fn describe_backend(snapshot: &Snapshot, inv: &Inventory, b: &Backend) -> String {
    let described = describe_end(snapshot, inv, &FlowEnd::Address(b.ip));
    let with_port = described.replacen(&format!("{} ", b.ip), &format!("{}:{} ", b.ip, b.port), 1);
    match (&b.node, with_port.ends_with("(outside address)")) {
        (Some(node), true) => with_port.replacen(" (outside", &format!(" on {node} (outside"), 1),
        _ => with_port,
    }
}

fn condition_reason(b: &Backend, any_ready: bool) -> String {
    let s = b.state;
    if s.terminating && s.serving {
        if any_ready {
            "not used: terminating (used only when no ready backend is left)".into()
        } else {
            "not used: terminating".into()
        }
    } else if s.terminating {
        "not used: terminating and no longer serving".into()
    } else {
        "not used: not ready".into()
    }
}

fn state_text(b: &Backend) -> String {
    let s = b.state;
    let mut parts = vec![if s.ready { "ready" } else { "not ready" }];
    if s.terminating {
        parts.push("terminating");
        parts.push(if s.serving { "serving" } else { "not serving" });
    }
    parts.join(", ")
}

/// The text of a Service explanation (after the `flow` line).
pub(super) fn render_text(m: &ServiceMatch, flow: &Flow, out: &mut String) {
    let t = match m {
        ServiceMatch::NotTranslated { services } => {
            out.push_str(&format!(
                "service  {} is {}, with no port {}/{}: nothing translates it (evaluated as addressed)\n",
                flow.dst,
                services.join(", "),
                flow.port,
                flow.protocol.as_str()
            ));
            return;
        }
        ServiceMatch::Translated(t) => t,
    };
    out.push_str(&format!(
        "service  {} port {} -> targetPort {}, {}{}\n",
        t.service,
        t.port,
        t.target_port,
        t.frontend,
        t.node
            .as_deref()
            .map(|n| format!(", translated on {n}"))
            .unwrap_or_default()
    ));
    out.push_str(&format!("  traffic policy: {}\n", t.traffic_policy));
    let used = t.used().count();
    let allowed = t.used().filter(|b| b.verdict.allowed()).count();
    let verdict = match t.outcome() {
        "refused" => format!(
            "REFUSED  no usable backend: connections are refused at once ({})",
            if flow.protocol == Protocol::Tcp {
                "TCP reset"
            } else {
                "ICMP port unreachable"
            }
        ),
        "allowed" => format!("ALLOWED  by policy to each of the {used} backend(s) in use"),
        "denied" => format!("DENIED  by policy to each of the {used} backend(s) in use"),
        _ => format!(
            "PARTLY ALLOWED  {allowed} of {used} backends in use allow it: the backend chosen decides"
        ),
    };
    out.push_str(&format!("verdict  {verdict}\n"));
    if t.backends.is_empty() {
        out.push_str("backends none\n");
    }
    for b in &t.backends {
        out.push_str(&format!(
            "backend  {} ({}; {})  {}\n",
            b.resolved,
            state_text(&b.backend),
            b.unused.as_deref().unwrap_or("used"),
            if b.verdict.allowed() {
                "allowed"
            } else {
                "DENIED"
            },
        ));
        for (name, d) in [
            ("egress", &b.verdict.egress),
            ("ingress", &b.verdict.ingress),
        ] {
            out.push_str(&format!(
                "  {name:<8} {:<5}  tier {:<10}  {}{}\n",
                decision(d),
                tier(d.tier),
                seam_policy::reason_text(&d.reason),
                if d.log { "  [log]" } else { "" }
            ));
        }
        out.push_str(&format!("  realized: {}\n", b.realized.describe()));
    }
}

/// The `service` member of the JSON layout.
pub(super) fn render_json(m: &ServiceMatch) -> Value {
    let t = match m {
        ServiceMatch::NotTranslated { services } => {
            return json!({ "translated": false, "services": services });
        }
        ServiceMatch::Translated(t) => t,
    };
    let backends: Vec<Value> = t
        .backends
        .iter()
        .map(|b| {
            json!({
                "ip": b.backend.ip.to_string(),
                "port": b.backend.port,
                "node": b.backend.node,
                "endpoint": b.backend.endpoint,
                "resolved": b.resolved,
                "state": b.backend.state,
                "used": b.unused.is_none(),
                "unused": b.unused,
                "allowed": b.verdict.allowed(),
                "egress": direction_json(&b.verdict.egress),
                "ingress": direction_json(&b.verdict.ingress),
                "realized": b.realized.describe(),
            })
        })
        .collect();
    json!({
        "translated": true,
        "service": t.service,
        "port": t.port,
        "targetPort": t.target_port,
        "frontend": t.frontend,
        "node": t.node,
        "trafficPolicy": t.traffic_policy,
        "outcome": t.outcome(),
        "backends": backends,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use seam_model::manifest::{parse_manifests, Manifest};
    use seam_model::{endpoint_mac, ContainerPort, EndpointKind, Node, Snapshot};

    use super::super::{explain, parse_end, parse_port_protocol, render_json, render_text};
    use super::*;

    fn pod(
        ns: &str,
        name: &str,
        ip: [u8; 4],
        node: &str,
        http: Option<u16>,
    ) -> seam_model::Endpoint {
        seam_model::Endpoint {
            name: format!("{ns}/{name}"),
            kind: EndpointKind::Pod,
            namespace: ns.into(),
            segment: format!("ns-{ns}"),
            node: node.into(),
            ip: ip.into(),
            mac: endpoint_mac(ip.into()),
            labels: BTreeMap::from([
                ("app".to_string(), ns.to_string()),
                ("pod".to_string(), name.to_string()),
            ]),
            container_id: None,
            ifname: None,
            ports: http
                .map(|port| ContainerPort {
                    name: "http".into(),
                    port,
                    protocol: PortProtocol::Tcp,
                })
                .into_iter()
                .collect(),
            conditions: None,
        }
    }

    fn service(yaml: &str) -> Service {
        match parse_manifests(yaml).unwrap().pop() {
            Some(Manifest::Service(s)) => s,
            other => panic!("not a Service: {other:?}"),
        }
    }

    /// Two web pods on two nodes serving the named port `http` on 8080 and 8081, a client on
    /// n1, a NetworkPolicy that isolates web-2, and `web/web` in front of them.
    fn snapshot(spec_extra: &str) -> Snapshot {
        let policies = seam_policy::parse_yaml(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-web-2, namespace: web}
spec:
  podSelector: {matchLabels: {pod: web-2}}
  policyTypes: [Ingress]
"#,
        )
        .unwrap();
        let svc = service(&format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: web}}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  externalIPs: [192.0.2.10]
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80, targetPort: http, nodePort: 30080}}
  - {{name: dns, protocol: UDP, port: 53}}
{spec_extra}
"#
        ));
        Snapshot {
            nodes: ["n1", "n2"]
                .iter()
                .zip(1u8..)
                .map(|(n, i)| Node {
                    name: n.to_string(),
                    underlay_ip: [198, 18, 0, i].into(),
                    role: Default::default(),
                    transit_encap: Default::default(),
                    underlay_prefix_len: None,
                    underlay_mac: None,
                    segment_encap: Default::default(),
                })
                .collect(),
            endpoints: vec![
                pod("client", "c1", [10, 2, 0, 5], "n1", None),
                pod("web", "web-1", [10, 1, 0, 5], "n1", Some(8080)),
                pod("web", "web-2", [10, 1, 0, 6], "n2", Some(8081)),
            ],
            policies,
            services: vec![svc],
            ..Snapshot::default()
        }
    }

    fn run(snap: &Snapshot, src: &str, dst: &str, pp: &str) -> super::super::Explanation {
        let (port, protocol) = parse_port_protocol(pp).unwrap();
        let flow = Flow {
            src: parse_end(src).unwrap(),
            dst: parse_end(dst).unwrap(),
            protocol,
            port,
        };
        explain(snap, flow, None).unwrap()
    }

    fn translated(x: &super::super::Explanation) -> &ServiceFlow {
        match &x.service {
            Some(ServiceMatch::Translated(t)) => t,
            other => panic!("not translated: {other:?}"),
        }
    }

    #[test]
    fn cluster_ip_lists_each_backend_with_its_target_port_and_verdict() {
        let snap = snapshot("");
        let x = run(&snap, "client/c1", "10.96.0.10", "80/tcp");
        let t = translated(&x);
        assert_eq!(t.service, "web/web");
        assert_eq!(t.target_port, "http");
        assert_eq!(t.node.as_deref(), Some("n1"));
        // The named targetPort is resolved per backend; the NetworkPolicy denies only web-2.
        let rows: Vec<(Ipv4Addr, u16, bool, bool)> = t
            .backends
            .iter()
            .map(|b| {
                (
                    b.backend.ip,
                    b.backend.port,
                    b.unused.is_none(),
                    b.verdict.allowed(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ([10, 1, 0, 5].into(), 8080, true, true),
                ([10, 1, 0, 6].into(), 8081, true, false)
            ]
        );
        assert_eq!(t.outcome(), "partly allowed");
        let denied = &t.backends[1].verdict.ingress;
        assert!(seam_policy::reason_text(&denied.reason).contains("deny-web-2"));

        let text = render_text(&x);
        assert!(
            text.contains("service  web/web port http (80/TCP) -> targetPort http, ClusterIP 10.96.0.10, translated on n1"),
            "{text}"
        );
        assert!(text.contains("verdict  PARTLY ALLOWED  1 of 2"), "{text}");
        // One line per backend names it with its verdict (what `seam explain` readers grep).
        let line = |ip: &str| text.lines().find(|l| l.contains(ip)).unwrap().to_string();
        assert!(
            line("10.1.0.5").contains("web/web-1 10.1.0.5:8080 on n1"),
            "{text}"
        );
        assert!(line("10.1.0.5").ends_with("allowed"), "{text}");
        assert!(line("10.1.0.6").contains(":8081") && line("10.1.0.6").ends_with("DENIED"));
        assert!(!text.contains("verdict  ALLOWED\n"), "{text}");

        let j = render_json(&x);
        assert_eq!(j["allowed"], false);
        assert_eq!(j["ingress"], Value::Null);
        assert_eq!(j["service"]["outcome"], "partly allowed");
        assert_eq!(j["service"]["backends"][0]["port"], 8080);
        assert_eq!(j["service"]["backends"][1]["ingress"]["decision"], "deny");
        assert_eq!(j["service"]["backends"][1]["ingress"]["tier"], "namespace");

        // The externalIP and the NodePort of either node translate to the same backends.
        let x = run(&snap, "client/c1", "192.0.2.10", "80/tcp");
        assert_eq!(translated(&x).frontend, "externalIP 192.0.2.10");
        let x = run(&snap, "client/c1", "198.18.0.2", "30080/tcp");
        let t = translated(&x);
        assert_eq!(t.frontend, "NodePort 30080 of node n2");
        assert_eq!(t.node.as_deref(), Some("n2"));
        assert_eq!(t.used().count(), 2);
    }

    #[test]
    fn internal_traffic_policy_local_uses_the_source_nodes_backends_only() {
        let snap = snapshot("  internalTrafficPolicy: Local\n  externalTrafficPolicy: Local");
        let x = run(&snap, "client/c1", "10.96.0.10", "80/tcp");
        let t = translated(&x);
        assert_eq!(
            t.traffic_policy,
            "internalTrafficPolicy Local: only backends on n1"
        );
        assert!(t.backends[0].unused.is_none());
        assert_eq!(
            t.backends[1].unused.as_deref(),
            Some("not used: runs on n2, not on n1 (internalTrafficPolicy Local)")
        );
        // Only web-1 is used and it is allowed: every connection passes.
        assert_eq!(t.outcome(), "allowed");
        assert_eq!(render_json(&x)["allowed"], true);
        // eTP Local on n2's NodePort: only web-2, which policy denies.
        let x = run(&snap, "client/c1", "198.18.0.2", "30080/tcp");
        let t = translated(&x);
        assert_eq!(t.outcome(), "denied");
        assert!(render_text(&x).contains("verdict  DENIED"));
    }

    #[test]
    fn no_usable_backend_is_refused_and_unready_ones_say_why() {
        // The UDP port's backends (target port 53 on each pod) exist; a selector matching nothing
        // leaves none.
        let mut snap = snapshot("");
        snap.services[0].spec.selector = Some(BTreeMap::from([("app".into(), "none".into())]));
        let x = run(&snap, "client/c1", "10.96.0.10", "53/udp");
        let t = translated(&x);
        assert!(t.backends.is_empty());
        assert_eq!(t.outcome(), "refused");
        assert!(!t.allowed());
        let text = render_text(&x);
        assert!(
            text.contains("verdict  REFUSED  no usable backend: connections are refused at once (ICMP port unreachable)"),
            "{text}"
        );
        assert_eq!(render_json(&x)["service"]["outcome"], "refused");

        // Without a selector, from an EndpointSlice: a ready backend and a terminating one.
        let mut snap = snapshot("");
        snap.services[0].spec.selector = None;
        let slice = parse_manifests(
            r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: web, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 9090}]
endpoints:
- {addresses: [10.1.0.5], nodeName: n1}
- {addresses: [10.1.0.6], nodeName: n2, conditions: {ready: false, serving: true, terminating: true}}
"#,
        )
        .unwrap()
        .pop();
        let Some(Manifest::EndpointSlice(slice)) = slice else {
            panic!("not a slice");
        };
        snap.endpoint_slices.push(slice);
        let x = run(&snap, "client/c1", "10.96.0.10", "80/tcp");
        let t = translated(&x);
        assert_eq!(t.backends.len(), 2);
        assert_eq!(t.backends[0].backend.port, 9090);
        // Slice backends that are no Seam endpoint still say where they run.
        snap.endpoints.retain(|e| e.namespace != "web");
        let x2 = run(&snap, "client/c1", "10.96.0.10", "80/tcp");
        assert_eq!(
            translated(&x2).backends[1].resolved,
            "10.1.0.6:9090 on n2 (outside address)"
        );
        assert!(t.backends[0].unused.is_none());
        assert_eq!(
            t.backends[1].unused.as_deref(),
            Some("not used: terminating (used only when no ready backend is left)")
        );
        assert_eq!(t.outcome(), "allowed");
        let text = render_text(&x);
        assert!(
            text.contains("(not ready, terminating, serving; not used: terminating"),
            "{text}"
        );
    }

    #[test]
    fn a_selected_pod_that_is_not_ready_or_terminating_says_why_it_is_not_used() {
        // As the Kubernetes adapter writes them: web-1 fails its readiness probe; web-2 is in
        // its grace period, still serving.
        let mut snap = snapshot("");
        let conditions = |ready, serving, terminating| {
            Some(seam_model::EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            })
        };
        snap.endpoints[1].conditions = conditions(false, false, false);
        snap.endpoints[2].conditions = conditions(false, true, true);
        snap.policies.clear();
        let x = run(&snap, "client/c1", "10.96.0.10", "80/tcp");
        let t = translated(&x);
        assert_eq!(t.backends.len(), 2);
        assert_eq!(t.backends[0].unused.as_deref(), Some("not used: not ready"));
        // Nothing is ready: the terminating pod that still serves takes the connections.
        assert!(t.backends[1].unused.is_none());
        assert_eq!(t.outcome(), "allowed");
        // Once web-1 is ready again, the terminating pod is left out.
        snap.endpoints[1].conditions = None;
        let x = run(&snap, "client/c1", "10.96.0.10", "80/tcp");
        let t = translated(&x);
        assert!(t.backends[0].unused.is_none());
        assert_eq!(
            t.backends[1].unused.as_deref(),
            Some("not used: terminating (used only when no ready backend is left)")
        );
        let text = render_text(&x);
        assert!(text.contains("not ready, terminating, serving"), "{text}");
    }

    #[test]
    fn a_port_the_service_does_not_have_is_not_translated() {
        let snap = snapshot("");
        let x = run(&snap, "client/c1", "10.96.0.10", "81/tcp");
        assert!(matches!(
            &x.service,
            Some(ServiceMatch::NotTranslated { services }) if services == &["web/web (ClusterIP 10.96.0.10)"]
        ));
        let text = render_text(&x);
        assert!(
            text.contains("service  10.96.0.10 is web/web (ClusterIP 10.96.0.10), with no port 81/TCP: nothing translates it"),
            "{text}"
        );
        // Evaluated as addressed, as before.
        assert!(text.contains("verdict  ALLOWED"), "{text}");
        assert_eq!(render_json(&x)["service"]["translated"], false);
        // ICMP to a ClusterIP: nothing translates it either.
        let x = run(&snap, "client/c1", "10.96.0.10", "icmp");
        assert!(matches!(
            x.service,
            Some(ServiceMatch::NotTranslated { .. })
        ));
        // An endpoint or an address no Service holds: no Service part.
        let x = run(&snap, "client/c1", "web/web-1", "8080/tcp");
        assert!(x.service.is_none());
        assert_eq!(render_json(&x)["service"], Value::Null);
        let x = run(&snap, "client/c1", "198.18.0.1", "22/tcp");
        assert!(x.service.is_none());
    }
}
