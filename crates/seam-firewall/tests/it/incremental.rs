//! The incremental compiler against the full one: random sequences of changes to a small cluster (endpoints added,
//! removed, relabelled, moved between nodes, given other ports, addresses or kinds; namespaces relabelled, moved
//! between tenants, created and deleted; tenants changed; policies of every kind added, edited, removed, reordered,
//! duplicated and broken), and after every step `IncrementalCompiler::sync` must return exactly what
//! `cluster::node_ruleset` returns (sets, rules in order, local endpoints, warnings) on every node. So must
//! `IncrementalCompiler::sync_changes`, given the view by name and the names each step touched, as the agent's
//! view records them from watch events (a re-list now and then says "everything"); one more compiler of it reads
//! only every third step, with the names of the steps in between merged. The full compile is in turn held to the
//! engine: `seam_policy::evaluate` decides flows between the view's endpoints (a rotating sample of the pairs
//! after every step, every pair after the last) as the compiled rulesets do, by the rules `verdict_rule_id` names.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use seam_firewall::cluster::{node_ruleset, policy_set, tenant_inventory};
use seam_firewall::{IncrementalCompiler, KeyedView, NodeRuleset, ViewChanges};
use seam_policy::PolicyObject;
use seam_policy::Protocol;
use serde_json::{json, Value};

use crate::oracle::{compare, End, Pairs};

const NAMESPACES: [&str; 5] = ["alpha", "beta", "gamma", "delta", "omega"];
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const APPS: [&str; 4] = ["web", "db", "api", "cache"];
const TIERS: [&str; 3] = ["frontend", "backend", "data"];
const TEAMS: [&str; 3] = ["red", "blue", "green"];
const ENVS: [&str; 2] = ["prod", "dev"];
const TENANTS: [&str; 3] = ["t0", "t1", "t2"];

/// One change to the cluster; the numbers pick from small pools, so that changes collide often.
#[derive(Debug, Clone)]
enum Op {
    AddEndpoint {
        ns: u8,
        pod: u8,
        node: u8,
        app: u8,
        tier: u8,
        kind: u8,
        ports: u8,
    },
    RemoveEndpoint(u8),
    Relabel {
        ep: u8,
        app: u8,
        tier: u8,
    },
    Move {
        ep: u8,
        node: u8,
    },
    Ports {
        ep: u8,
        ports: u8,
    },
    Readdress {
        ep: u8,
        ip: u8,
    },
    Kind {
        ep: u8,
        kind: u8,
    },
    NamespaceLabels {
        ns: u8,
        team: u8,
        env: u8,
    },
    NamespaceTenant {
        ns: u8,
        tenant: u8,
    },
    NamespaceToggle(u8),
    Tenant {
        t: u8,
        mode: u8,
        global: bool,
        remove: bool,
    },
    PutPolicy {
        at: u8,
        recipe: [u8; 5],
    },
    RemovePolicy(u8),
    SwapPolicies(u8, u8),
    /// The agent lost its watch and listed everything again: nothing changed, but the view cannot say what.
    Relist,
}

fn op() -> impl Strategy<Value = Op> {
    let b = any::<u8>;
    prop_oneof![
        6 => (b(), b(), b(), b(), b(), b(), b()).prop_map(|(ns, pod, node, app, tier, kind, ports)| Op::AddEndpoint {
            ns, pod, node, app, tier, kind, ports
        }),
        2 => b().prop_map(Op::RemoveEndpoint),
        3 => (b(), b(), b()).prop_map(|(ep, app, tier)| Op::Relabel { ep, app, tier }),
        2 => (b(), b()).prop_map(|(ep, node)| Op::Move { ep, node }),
        1 => (b(), b()).prop_map(|(ep, ports)| Op::Ports { ep, ports }),
        1 => (b(), b()).prop_map(|(ep, ip)| Op::Readdress { ep, ip }),
        1 => (b(), b()).prop_map(|(ep, kind)| Op::Kind { ep, kind }),
        2 => (b(), b(), b()).prop_map(|(ns, team, env)| Op::NamespaceLabels { ns, team, env }),
        1 => (b(), b()).prop_map(|(ns, tenant)| Op::NamespaceTenant { ns, tenant }),
        1 => b().prop_map(Op::NamespaceToggle),
        1 => (b(), b(), any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(t, mode, global, remove)| Op::Tenant { t, mode, global, remove }),
        6 => (b(), any::<[u8; 5]>()).prop_map(|(at, recipe)| Op::PutPolicy { at, recipe }),
        2 => b().prop_map(Op::RemovePolicy),
        1 => (b(), b()).prop_map(|(a, c)| Op::SwapPolicies(a, c)),
        1 => Just(Op::Relist),
    ]
}

fn pick<'a>(items: &[&'a str], i: u8) -> &'a str {
    items[usize::from(i) % items.len()]
}

/// What the agent's view holds. Documents are kept by a name that keeps their order (the agent's view keeps them
/// by store name, ordered the same way), so two documents of one key, reordered ones and broken ones all reach the
/// compilers by name.
#[derive(Debug, Default, Clone)]
struct View {
    tenants: BTreeMap<String, seam_model::Tenant>,
    namespaces: BTreeMap<String, seam_model::Namespace>,
    endpoints: BTreeMap<String, seam_model::Endpoint>,
    docs: BTreeMap<String, PolicyObject>,
    next_ip: u32,
    next_doc: u32,
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ports(p: u8) -> Vec<seam_model::ContainerPort> {
    let port = |name: &str, port: u16, protocol| seam_model::ContainerPort {
        name: name.into(),
        port,
        protocol,
    };
    match p % 5 {
        0 | 1 => Vec::new(),
        2 => vec![port("http", 80, seam_model::PortProtocol::Tcp)],
        3 => vec![
            port("http", 8080, seam_model::PortProtocol::Tcp),
            port("dns", 53, seam_model::PortProtocol::Udp),
        ],
        _ => vec![port("dns", 5353, seam_model::PortProtocol::Udp)],
    }
}

fn kind(k: u8) -> seam_model::EndpointKind {
    match k % 8 {
        0..=4 => seam_model::EndpointKind::Pod,
        5 => seam_model::EndpointKind::Vm,
        6 => seam_model::EndpointKind::Host,
        _ => seam_model::EndpointKind::External,
    }
}

impl View {
    fn nth_endpoint(&mut self, i: u8) -> Option<&mut seam_model::Endpoint> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        self.endpoints.values_mut().nth(usize::from(i) % n)
    }

    fn nth_doc(&self, i: u8) -> Option<String> {
        let n = self.docs.len();
        if n == 0 {
            return None;
        }
        self.docs.keys().nth(usize::from(i) % n).cloned()
    }

    /// Applies `op` and returns what the agent's view would record of it: the name of every object an event
    /// put or removed (changed or not), or "everything" after a re-list.
    fn apply(&mut self, op: &Op) -> ViewChanges {
        let mut hints = ViewChanges::default();
        self.apply_noting(op, &mut hints);
        hints
    }

    fn apply_noting(&mut self, op: &Op, hints: &mut ViewChanges) {
        match *op {
            Op::AddEndpoint {
                ns,
                pod,
                node,
                app,
                tier,
                kind: k,
                ports: p,
            } => {
                let ns = pick(&NAMESPACES, ns);
                // Now and then a secondary interface (`pod/net1`, inventory name `pod:net1`).
                let name = if pod % 7 == 6 {
                    format!("{ns}/p{}/net1", pod % 5)
                } else {
                    format!("{ns}/p{}", pod % 12)
                };
                self.next_ip += 1;
                let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + self.next_ip);
                let ep = seam_model::Endpoint {
                    name: name.clone(),
                    kind: kind(k),
                    namespace: ns.into(),
                    segment: ns.into(),
                    node: pick(&NODES, node).into(),
                    ip,
                    mac: seam_model::endpoint_mac(ip),
                    labels: labels(&[
                        ("app", pick(&APPS, app)),
                        ("tier", pick(&TIERS, tier)),
                        (seam_policy::DEPLOYMENT_LABEL, pick(&TIERS, tier)),
                    ]),
                    container_id: None,
                    ifname: None,
                    ports: ports(p),
                    conditions: None,
                };
                hints.endpoints.insert(name.clone());
                self.endpoints.insert(name, ep);
            }
            Op::RemoveEndpoint(i) => {
                let n = self.endpoints.len();
                if n > 0 {
                    let key = self.endpoints.keys().nth(usize::from(i) % n).cloned();
                    if let Some(k) = key {
                        self.endpoints.remove(&k);
                        hints.endpoints.insert(k);
                    }
                }
            }
            Op::Relabel { ep, app, tier } => {
                if let Some(e) = self.nth_endpoint(ep) {
                    hints.endpoints.insert(e.name.clone());
                    if app % 5 == 4 {
                        e.labels.remove("app");
                    } else {
                        e.labels.insert("app".into(), pick(&APPS, app).into());
                    }
                    e.labels.insert("tier".into(), pick(&TIERS, tier).into());
                    // Deployment membership follows the tier label, so relabelling moves
                    // endpoints in and out of implicit `deployment/<ns>/<name>` groups.
                    e.labels.insert(
                        seam_policy::DEPLOYMENT_LABEL.into(),
                        pick(&TIERS, tier).into(),
                    );
                }
            }
            Op::Move { ep, node } => {
                if let Some(e) = self.nth_endpoint(ep) {
                    hints.endpoints.insert(e.name.clone());
                    e.node = pick(&NODES, node).into();
                }
            }
            Op::Ports { ep, ports: p } => {
                if let Some(e) = self.nth_endpoint(ep) {
                    hints.endpoints.insert(e.name.clone());
                    e.ports = ports(p);
                }
            }
            Op::Readdress { ep, ip } => {
                // From a small pool: two endpoints sometimes share an address.
                if let Some(e) = self.nth_endpoint(ep) {
                    hints.endpoints.insert(e.name.clone());
                    e.ip = Ipv4Addr::new(10, 245, 0, ip % 16);
                }
            }
            Op::Kind { ep, kind: k } => {
                if let Some(e) = self.nth_endpoint(ep) {
                    hints.endpoints.insert(e.name.clone());
                    e.kind = kind(k);
                }
            }
            Op::NamespaceLabels { ns, team, env } => {
                let name = pick(&NAMESPACES, ns);
                hints.namespaces.insert(name.to_string());
                let n = self
                    .namespaces
                    .entry(name.to_string())
                    .or_insert_with(|| seam_model::Namespace::named(name));
                if team % 4 == 3 {
                    n.labels.remove("team");
                } else {
                    n.labels.insert("team".into(), pick(&TEAMS, team).into());
                }
                n.labels.insert("env".into(), pick(&ENVS, env).into());
            }
            Op::NamespaceTenant { ns, tenant } => {
                let name = pick(&NAMESPACES, ns);
                hints.namespaces.insert(name.to_string());
                let n = self
                    .namespaces
                    .entry(name.to_string())
                    .or_insert_with(|| seam_model::Namespace::named(name));
                n.tenant = match tenant % 5 {
                    0 => None,
                    1 => Some("default".into()),
                    t => Some(TENANTS[usize::from(t - 2)].into()),
                };
            }
            Op::NamespaceToggle(ns) => {
                let name = pick(&NAMESPACES, ns);
                hints.namespaces.insert(name.to_string());
                if self.namespaces.remove(name).is_none() {
                    let mut n = seam_model::Namespace::named(name);
                    n.labels.insert("team".into(), pick(&TEAMS, ns / 5).into());
                    self.namespaces.insert(name.into(), n);
                }
            }
            Op::Tenant {
                t,
                mode,
                global,
                remove,
            } => {
                let name = if t % 4 == 3 {
                    "default"
                } else {
                    pick(&TENANTS, t)
                };
                hints.tenants.insert(name.to_string());
                if remove {
                    self.tenants.remove(name);
                } else {
                    self.tenants.insert(
                        name.into(),
                        seam_model::Tenant {
                            name: name.into(),
                            isolation: match mode % 3 {
                                0 => seam_model::IsolationMode::Multitenant,
                                1 => seam_model::IsolationMode::Flat,
                                _ => seam_model::IsolationMode::Policy,
                            },
                            global,
                        },
                    );
                }
            }
            Op::PutPolicy { at, recipe } => {
                let doc = policy(recipe);
                // Mostly replace in place (an edit when the key matches), sometimes append (maybe a duplicate key).
                let name = match self.nth_doc(at) {
                    Some(name) if at % 3 != 0 => name,
                    _ => {
                        self.next_doc += 1;
                        format!("doc/{:06}", self.next_doc)
                    }
                };
                hints.documents.insert(name.clone());
                self.docs.insert(name, typed(doc));
            }
            Op::RemovePolicy(i) => {
                if let Some(name) = self.nth_doc(i) {
                    self.docs.remove(&name);
                    hints.documents.insert(name);
                }
            }
            Op::SwapPolicies(a, c) => {
                if let (Some(x), Some(y)) = (self.nth_doc(a), self.nth_doc(c)) {
                    if x == y {
                        return;
                    }
                    if let (Some(dx), Some(dy)) = (self.docs.remove(&x), self.docs.remove(&y)) {
                        self.docs.insert(x.clone(), dy);
                        self.docs.insert(y.clone(), dx);
                    }
                    hints.documents.insert(x);
                    hints.documents.insert(y);
                }
            }
            Op::Relist => hints.everything = true,
        }
    }
}

fn sel(k: &str, v: &str) -> Value {
    json!({"matchLabels": {k: v}})
}

/// A policy document of any kind from five small numbers.
fn policy(r: [u8; 5]) -> Value {
    let [kind, a, b, c, d] = r;
    let ns = pick(&NAMESPACES, a);
    let app = pick(&APPS, b);
    let other = pick(&APPS, c);
    let team = pick(&TEAMS, c);
    let env = pick(&ENVS, d);
    let tier = pick(&TIERS, d);
    match kind % 16 {
        0..=4 => {
            let spec = match c % 9 {
                0 => json!({"podSelector": sel("app", app),
                            "ingress": [{"from": [{"podSelector": sel("app", other)}], "ports": [{"port": 80}]}]}),
                1 => json!({"podSelector": sel("app", app),
                            "ingress": [{"from": [{"namespaceSelector": sel("team", team)}]}]}),
                2 => json!({"podSelector": {},
                            "ingress": [{"from": [{"namespaceSelector": sel("env", env), "podSelector": sel("tier", tier)}],
                                         "ports": [{"port": "http"}, {"protocol": "UDP", "port": "dns"}]}]}),
                3 => json!({"podSelector": sel("tier", tier), "policyTypes": ["Egress"],
                            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.245.0.0/16"]}}]},
                                       {"to": [{"podSelector": {}}], "ports": [{"protocol": "UDP", "port": 53}]}]}),
                4 => json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
                5 => {
                    json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": [app]}]},
                            "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": [tier, "data"]}]}}],
                                         "ports": [{"protocol": "UDP", "port": 5000, "endPort": 5100}]}]})
                }
                6 => json!({"podSelector": sel("app", app),
                            "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP", "port": "dns"}, {"port": "http"}]}]}),
                7 => json!({"podSelector": sel("app", app), "ingress": [{}],
                            "egress": [{"to": [{"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]}}]}]}),
                _ => {
                    json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]},
                            "ingress": [{"from": [{"namespaceSelector": sel("kubernetes.io/metadata.name", pick(&NAMESPACES, d))}],
                                         "ports": [{"protocol": "SCTP"}]}]})
                }
            };
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"namespace": ns, "name": format!("np-{}", b % 4)}, "spec": spec})
        }
        5 | 6 => {
            let subject = if d % 2 == 0 {
                json!({"namespaces": sel("team", team)})
            } else {
                json!({"pods": {"namespaceSelector": sel("env", env), "podSelector": sel("app", app)}})
            };
            let action = ["Allow", "Deny", "Pass"][usize::from(d % 3)];
            let ports = match b % 4 {
                0 => json!([{"portNumber": {"port": 80}}]),
                1 => json!([{"namedPort": "http"}]),
                2 => {
                    json!([{"portRange": {"protocol": "UDP", "start": 50, "end": 60}}, {"namedPort": "dns"}])
                }
                _ => Value::Null,
            };
            let mut ingress = json!({"action": action, "from": [{"pods": {"namespaceSelector": {}, "podSelector": sel("app", other)}}]});
            if !ports.is_null() {
                ingress["ports"] = ports;
            }
            json!({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
                   "metadata": {"name": format!("anp-{}", a % 3)},
                   "spec": {"priority": i64::from(c % 4) * 10, "subject": subject,
                            "ingress": [ingress],
                            "egress": [{"action": "Deny", "to": [{"networks": ["10.245.0.0/28"]}]},
                                       {"action": "Allow", "to": [{"namespaces": sel("env", env)}]}]}})
        }
        7 => {
            json!({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "BaselineAdminNetworkPolicy",
                    "metadata": {"name": "default"},
                    "spec": {"subject": {"namespaces": if b % 2 == 0 { json!({}) } else { sel("team", team) }},
                             "ingress": [{"action": "Deny", "from": [{"namespaces": sel("env", env)}]}],
                             "egress": [{"action": "Allow", "to": [{"pods": {"namespaceSelector": {}, "podSelector": sel("tier", tier)}}],
                                         "ports": [{"namedPort": "http"}]}]}})
        }
        8 | 9 => {
            let admin = d % 2 == 0;
            let action = if admin {
                ["Accept", "Deny", "Pass"][usize::from(c % 3)]
            } else {
                ["Accept", "Deny"][usize::from(c % 2)]
            };
            json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
                   "metadata": {"name": format!("cnp-{}", a % 3)},
                   "spec": {"tier": if admin { "Admin" } else { "Baseline" }, "priority": i64::from(b % 3),
                            "subject": {"pods": {"namespaceSelector": sel("team", team), "podSelector": {}}},
                            "ingress": [{"action": action, "from": [{"namespaces": sel("env", env)}],
                                         "protocols": [{"destinationNamedPort": "http"}, {"tcp": {"destinationPort": {"number": 443}}}]}],
                            "egress": [{"action": "Deny", "to": [{"pods": {"namespaceSelector": {}, "podSelector": sel("app", app)}}],
                                        "protocols": [{"udp": {"destinationPort": {"range": {"start": 1000, "end": 2000}}}}]}]}})
        }
        10 | 11 => {
            let selector = match c % 6 {
                0 => json!({"namespaces": [ns, pick(&NAMESPACES, d)], "labels": sel("app", app)}),
                1 => json!({"namespaceSelector": sel("team", team), "labels": sel("tier", tier)}),
                2 => json!({"kinds": ["host", "vm"]}),
                3 => json!({"cidrs": ["10.245.0.0/29", "192.168.0.0/24"]}),
                4 => json!({"labels": sel("app", app), "cidrs": ["10.244.0.0/28"]}),
                _ => json!({"namespaceSelector": sel("env", env)}),
            };
            json!({"apiVersion": "seam.dev/v1alpha1", "kind": "EndpointGroup",
                   "metadata": {"name": format!("g-{}", a % 4)},
                   "spec": {"selectors": [selector]}})
        }
        12..=14 => {
            let group = |x: u8| match x % 8 {
                0..=3 => format!("g-{}", x % 4),
                4 => "cluster".to_string(),
                5 => format!("namespace/{}", pick(&NAMESPACES, x / 7)),
                6 => format!(
                    "deployment/{}/{}",
                    pick(&NAMESPACES, x / 8),
                    pick(&TIERS, x / 3)
                ),
                // Nobody defines it: a warning, no members.
                _ => "g-9".to_string(),
            };
            let admin = d % 3 == 0;
            let mut spec = json!({
                "consumers": [group(b)],
                "providers": [group(c), group(d / 3)],
                "subjects": [{"filters": [{"protocol": "TCP", "ports": [80, 443]}]},
                             {"filters": [{"protocol": "ICMP", "icmpType": 8}, {"protocol": "UDP"}]}],
                "action": if d % 4 == 1 { "deny" } else { "allow" },
                "tier": if admin { "admin" } else { "namespace" },
                "scope": if c % 3 == 0 { "tenant" } else { "global" },
                "log": b % 5 == 0,
            });
            if admin || d % 2 == 0 {
                spec["priority"] = json!(i64::from(a % 3) * 5);
            }
            json!({"apiVersion": "seam.dev/v1alpha1", "kind": "Contract",
                   "metadata": {"name": format!("c-{}", a % 4)}, "spec": spec})
        }
        // Invalid: ignored with a warning.
        _ => json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"namespace": ns, "name": format!("np-{}", b % 4)},
                    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Ingress"]}}),
    }
}

/// A recipe as the agent's view holds it: typed. The invalid recipe is typed without the validation the agent's
/// decode runs, so that the compilers still meet an object they must keep out of force.
fn typed(doc: Value) -> PolicyObject {
    match PolicyObject::from_value(doc.clone()) {
        Ok(object) => return object,
        Err(seam_policy::ParseError::Invalid { .. }) => {}
        Err(e) => panic!("a recipe that does not decode: {e}"),
    }
    let mut body = doc;
    if let Some(m) = body.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    PolicyObject::NetworkPolicy(serde_json::from_value(body).unwrap())
}

fn full(view: &View, node: &str) -> (NodeRuleset, Vec<String>) {
    node_ruleset(
        view.tenants.values(),
        view.namespaces.values(),
        view.endpoints.values(),
        view.docs.values(),
        node,
    )
    .unwrap()
}

impl View {
    fn keyed(&self) -> KeyedView<'_> {
        KeyedView {
            tenants: &self.tenants,
            namespaces: &self.namespaces,
            endpoints: &self.endpoints,
            documents: &self.docs,
        }
    }
}

/// Compilers of the path by name: one per node reading every step, and one on `n1` reading every third step;
/// each with the names seen since it last read.
struct Hinted {
    every: Vec<(IncrementalCompiler, ViewChanges)>,
    lagging: (IncrementalCompiler, ViewChanges),
    /// One per node, fed what the node's compiler returns, as the agent's renderer is; with the
    /// fresh render of the last step.
    renderers: Vec<(
        seam_firewall::render::table::Renderer,
        seam_nft::table::TableModel,
    )>,
}

impl Hinted {
    fn new() -> Self {
        Hinted {
            every: NODES
                .iter()
                .map(|n| (IncrementalCompiler::new(*n), ViewChanges::everything()))
                .collect(),
            lagging: (
                IncrementalCompiler::new(NODES[0]),
                ViewChanges::everything(),
            ),
            renderers: NODES.iter().map(|_| Default::default()).collect(),
        }
    }

    fn note(&mut self, hints: &ViewChanges) {
        for (_, pending) in self.every.iter_mut().chain([&mut self.lagging]) {
            pending.merge(hints.clone());
        }
    }

    fn check(&mut self, view: &View, wants: &[(NodeRuleset, Vec<String>)], step: usize) {
        let run = |inc: &mut IncrementalCompiler,
                   pending: &mut ViewChanges,
                   node: &str,
                   want: &(NodeRuleset, Vec<String>),
                   what: &str| {
            let hints = std::mem::take(pending);
            let (got, warnings) = inc.sync_changes(view.keyed(), &hints).unwrap();
            assert_eq!(
                warnings, want.1,
                "warnings of {what} on {node} after step {step}"
            );
            if *got != want.0 {
                let diff = describe_diff(got, &want.0);
                panic!("ruleset of {what} on {node} after step {step} (changes {hints:?}) differs from a full compile:\n{diff}");
            }
        };
        for (((node, (inc, pending)), want), renderer) in NODES
            .iter()
            .zip(&mut self.every)
            .zip(wants)
            .zip(&mut self.renderers)
        {
            run(inc, pending, node, want, "sync_changes");
            // The renderer changes what it rendered for earlier steps; the kernel objects must be
            // those rendered from scratch, and the change it returns (every other step, so that
            // a change also follows a build that returned none) the delta from the fresh render
            // of the step before.
            let (renderer, last) = renderer;
            let fresh = seam_firewall::render::table::model(&want.0);
            if step.is_multiple_of(2) {
                assert!(
                    renderer.model(&want.0) == fresh,
                    "the kernel objects rendered for {node} after step {step} differ from a fresh render"
                );
            } else {
                let (got, delta) = renderer.model_and_delta(&want.0);
                assert!(
                    *got == fresh,
                    "the kernel objects rendered for {node} after step {step} differ from a fresh render"
                );
                assert_eq!(
                    delta,
                    seam_nft::table::delta(last, &fresh),
                    "the renderer's change for {node} at step {step} is not the delta between the fresh renders"
                );
            }
            *last = fresh;
        }
        if step.is_multiple_of(3) {
            let (inc, pending) = &mut self.lagging;
            run(
                inc,
                pending,
                NODES[0],
                &wants[0],
                "sync_changes every third step",
            );
        }
    }
}

fn check(
    view: &View,
    compilers: &mut [IncrementalCompiler],
    hinted: &mut Hinted,
    step: usize,
    last: bool,
) {
    let wants: Vec<(NodeRuleset, Vec<String>)> = NODES.iter().map(|n| full(view, n)).collect();
    for ((node, inc), want) in NODES.iter().zip(compilers.iter_mut()).zip(&wants) {
        let (got, warnings) = inc
            .sync(
                view.tenants.values(),
                view.namespaces.values(),
                view.endpoints.values(),
                view.docs.values(),
            )
            .unwrap();
        assert_eq!(warnings, want.1, "warnings on {node} after step {step}");
        if *got != want.0 {
            let diff = describe_diff(got, &want.0);
            panic!("ruleset of {node} after step {step} differs from a full compile:\n{diff}");
        }
    }
    hinted.check(view, &wants, step);
    // The full compile against the engine: every pair of endpoints at the last step, a rotating sample before.
    let bad = engine_mismatches(view, &wants, (!last).then_some(step));
    assert!(
        bad.is_empty(),
        "the compiled rulesets disagree with seam_policy::evaluate after step {step} ({} mismatches):\n{}",
        bad.len(),
        bad.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Between full sweeps, about this many ordered pairs of endpoints are checked against the engine per step (a
/// different share every step).
const PAIRS_PER_STEP: usize = 30;

/// Ports (for ICMP: types) the engine and the rulesets are asked about: those the recipes name (in and out of
/// their ranges and named ports), and one nobody names.
const PROBES: [(u16, Protocol); 11] = [
    (80, Protocol::Tcp),
    (443, Protocol::Tcp),
    (8080, Protocol::Tcp),
    (22, Protocol::Tcp),
    (53, Protocol::Udp),
    (55, Protocol::Udp),
    (1500, Protocol::Udp),
    (5353, Protocol::Udp),
    (80, Protocol::Sctp),
    (8, Protocol::Icmp),
    (0, Protocol::Icmp),
];

/// Where the rulesets compiled for the nodes (`rulesets[i]` for `NODES[i]`) decide a flow between two endpoints of
/// the view otherwise than `seam_policy::evaluate`, as [`compare`] holds them to it. Every ordered pair is checked, or with `sample = Some(step)` about [`PAIRS_PER_STEP`] of them, a different
/// share for every step. Endpoints sharing an address with another are left out: a packet cannot tell them apart.
fn engine_mismatches(
    view: &View,
    rulesets: &[(NodeRuleset, Vec<String>)],
    sample: Option<usize>,
) -> Vec<String> {
    let inv = tenant_inventory(
        view.tenants.values(),
        view.namespaces.values(),
        view.endpoints.values(),
    );
    let (set, _) = policy_set(view.docs.values());
    let mut holders: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    for e in view.endpoints.values() {
        *holders.entry(e.ip).or_default() += 1;
    }
    // Every endpoint the check can tell apart.
    let ends: Vec<End> = view
        .endpoints
        .values()
        .filter(|e| holders[&e.ip] == 1)
        .map(|e| {
            let reference = format!(
                "{}/{}",
                e.namespace,
                seam_firewall::cluster::inventory_name(e)
            );
            let node = NODES.iter().position(|n| *n == e.node).unwrap();
            End {
                reference,
                address: e.ip,
                node,
            }
        })
        .collect();
    let pairs = match sample {
        Some(step) => Pairs::Sample {
            step,
            per_step: PAIRS_PER_STEP,
        },
        None => Pairs::All,
    };
    let rulesets: Vec<&NodeRuleset> = rulesets.iter().map(|(rs, _)| rs).collect();
    compare(&set, &inv, &rulesets, &ends, pairs, &PROBES)
}

fn describe_diff(got: &NodeRuleset, want: &NodeRuleset) -> String {
    let mut out = String::new();
    for (name, s) in &want.sets {
        match got.sets.get(name) {
            None => out.push_str(&format!("missing set {name} = {s}\n")),
            Some(g) if g != s => out.push_str(&format!("set {name}: got {g}, want {s}\n")),
            _ => {}
        }
    }
    for name in got.sets.keys() {
        if !want.sets.contains_key(name) {
            out.push_str(&format!("extra set {name}\n"));
        }
    }
    if got.local != want.local {
        out.push_str(&format!(
            "local: got {:?}, want {:?}\n",
            got.local, want.local
        ));
    }
    for (what, g, w) in [
        ("egress", &got.egress, &want.egress),
        ("ingress", &got.ingress, &want.ingress),
    ] {
        for (gc, wc) in g.iter().zip(w) {
            if gc != wc {
                let gi: Vec<_> = gc.rules.iter().map(|r| r.id.as_str()).collect();
                let wi: Vec<_> = wc.rules.iter().map(|r| r.id.as_str()).collect();
                out.push_str(&format!(
                    "{what} {:?}: got {gi:?}\n  want {wi:?}\n",
                    gc.tier
                ));
                if gi == wi {
                    for (a, b) in gc.rules.iter().zip(&wc.rules) {
                        if a != b {
                            out.push_str(&format!("  got {a:?}\n  want {b:?}\n"));
                        }
                    }
                }
            }
        }
        if g.len() != w.len() {
            out.push_str(&format!("{what}: {} chains, want {}\n", g.len(), w.len()));
        }
    }
    out
}

fn run(ops: &[Op]) {
    let mut view = View::default();
    let mut compilers: Vec<IncrementalCompiler> =
        NODES.iter().map(|n| IncrementalCompiler::new(*n)).collect();
    let mut hinted = Hinted::new();
    check(&view, &mut compilers, &mut hinted, 0, false);
    for (i, op) in ops.iter().enumerate() {
        let hints = view.apply(op);
        hinted.note(&hints);
        check(&view, &mut compilers, &mut hinted, i + 1, false);
    }
    // Nothing changed: still equal.
    check(&view, &mut compilers, &mut hinted, ops.len() + 1, true);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(96),
        ..ProptestConfig::default()
    })]

    #[test]
    fn incremental_equals_full_after_every_change(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops);
    }
}

/// A long sequence from a start with many objects: more fragments at once than the proptest's shrinkable
/// sequences reach.
fn long_sequence() -> Vec<Op> {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut byte = || any::<u8>().new_tree(&mut runner).unwrap().current();
    let mut ops = Vec::new();
    for _ in 0..40 {
        ops.push(Op::AddEndpoint {
            ns: byte(),
            pod: byte(),
            node: byte(),
            app: byte(),
            tier: byte(),
            kind: byte() % 5,
            ports: byte(),
        });
    }
    for _ in 0..30 {
        let recipe = [byte(), byte(), byte(), byte(), byte()];
        ops.push(Op::PutPolicy { at: 0, recipe });
    }
    for ns in 0..5 {
        ops.push(Op::NamespaceLabels {
            ns,
            team: byte(),
            env: byte(),
        });
    }
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..300 {
        ops.push(op().new_tree(&mut runner).unwrap().current());
    }
    ops
}

#[test]
fn long_sequences_stay_equal() {
    run(&long_sequence());
}

/// The check against the engine can fail: rulesets compiled without the policies disagree with it.
#[test]
fn the_engine_check_detects_a_wrong_compiler() {
    let mut view = View::default();
    for op in &long_sequence() {
        view.apply(op);
    }
    let set = policy_set(view.docs.values()).0;
    assert!(set.objects().count() > 5, "the view holds policies");
    let unpoliced = View {
        docs: BTreeMap::new(),
        ..view.clone()
    };
    let wrong: Vec<(NodeRuleset, Vec<String>)> =
        NODES.iter().map(|n| full(&unpoliced, n)).collect();
    assert!(engine_mismatches(&view, &wrong, None).len() > 100);
    let right: Vec<(NodeRuleset, Vec<String>)> = NODES.iter().map(|n| full(&view, n)).collect();
    assert_eq!(engine_mismatches(&view, &right, None), Vec::<String>::new());
}

#[test]
fn every_recipe_kind_parses_except_the_invalid_one() {
    for kind in 0..16u8 {
        for x in 0..24u8 {
            let doc = policy([kind, x, x / 2, x / 3, x]);
            let parsed = seam_policy::PolicyObject::from_value(doc.clone());
            assert_eq!(parsed.is_ok(), kind != 15, "{doc}: {parsed:?}");
        }
    }
}
