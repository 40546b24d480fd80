//! A generated, realistic cluster for `seam-bench policy`: namespaces with team/env labels,
//! pods with app/tier/team/version labels spread over nodes, a mix of NetworkPolicies, and
//! EndpointGroups joined by Contracts. Deterministic for a seed: the namespaces and policies
//! come from one random stream and the endpoints from another, so clusters with different
//! endpoint counts share exactly the same policies.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::Context;
use seam_policy::PolicyObject;
use serde_json::{json, Value};

/// SplitMix64: small, fast, and stable across crate versions (the mix must not change when a
/// dependency does).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// One element (`items` must not be empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// An index drawn with the given weights.
    pub fn weighted(&mut self, weights: &[usize]) -> usize {
        let total: usize = weights.iter().sum();
        let mut x = self.below(total);
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len().saturating_sub(1)
    }
}

const APPS: [&str; 18] = [
    "web",
    "api",
    "db",
    "cache",
    "worker",
    "frontend",
    "auth",
    "search",
    "queue",
    "metrics",
    "payments",
    "orders",
    "catalog",
    "cart",
    "inventory",
    "notify",
    "gateway",
    "reports",
];

fn tier_of(app: &str) -> &'static str {
    match app {
        "web" | "frontend" | "gateway" => "frontend",
        "db" | "cache" | "queue" | "search" => "data",
        _ => "backend",
    }
}

const TIERS: [&str; 3] = ["frontend", "backend", "data"];
const ENVS: [&str; 3] = ["prod", "staging", "dev"];
const VERSIONS: [&str; 3] = ["v1", "v2", "v3"];
const TEAMS: usize = 25;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct GenSpec {
    /// Seed of both streams.
    pub seed: u64,
    /// Pods.
    pub endpoints: usize,
    /// Nodes the pods are spread over.
    pub nodes: usize,
    /// Kubernetes namespaces.
    pub namespaces: usize,
    /// NetworkPolicies.
    pub netpols: usize,
    /// Contracts.
    pub contracts: usize,
    /// EndpointGroups the contracts use.
    pub groups: usize,
}

/// One generated namespace, with the apps that run in it.
#[derive(Debug, Clone)]
pub struct GenNamespace {
    /// The namespace object as the controller stores it.
    pub ns: seam_model::Namespace,
    /// Its team label.
    pub team: String,
    /// Apps deployed there.
    pub apps: Vec<&'static str>,
    /// Relative size (how many pods it gets).
    pub weight: usize,
}

/// A generated cluster: what the agent's view holds.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// Node names, `node-<i>`.
    pub nodes: Vec<String>,
    /// Namespaces.
    pub namespaces: Vec<GenNamespace>,
    /// Pods.
    pub endpoints: Vec<seam_model::Endpoint>,
    /// NetworkPolicies.
    pub netpols: Vec<PolicyObject>,
    /// EndpointGroups.
    pub groups: Vec<PolicyObject>,
    /// Contracts.
    pub contracts: Vec<PolicyObject>,
    /// Next free host index per node (for pods added later).
    pub next_host: Vec<u32>,
}

/// Addresses in a node's pod CIDR (a /18).
pub const NODE_HOSTS: u32 = 1 << 14;

/// Node `i`'s pod CIDR is the `i`-th /18 from 10.244.0.0; host `h` of it is this address.
pub fn node_addr(node: usize, host: u32) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(10, 244, 0, 0)) + (node as u32) * NODE_HOSTS;
    Ipv4Addr::from(base + host)
}

/// The pod CIDR of node `i`.
pub fn node_cidr(node: usize) -> String {
    format!("{}/18", node_addr(node, 0))
}

/// One pod as the controller stores it (built from its wire form, so fields the model gains
/// later, with defaults, need no change here).
pub fn endpoint(
    ns: &str,
    pod: &str,
    node: &str,
    ip: Ipv4Addr,
    labels: BTreeMap<String, String>,
) -> anyhow::Result<seam_model::Endpoint> {
    let value = json!({
        "name": format!("{ns}/{pod}"),
        "kind": "pod",
        "namespace": ns,
        "segment": ns,
        "node": node,
        "ip": ip.to_string(),
        "mac": seam_model::endpoint_mac(ip).to_string(),
        "labels": labels,
        "containerId": format!("{:08x}{:024x}", u32::from(ip), pod.len()),
        "ifname": "eth0",
    });
    serde_json::from_value(value).context("build a seam-model endpoint")
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Cluster {
    /// Generates the cluster for `spec`.
    pub fn generate(spec: &GenSpec) -> anyhow::Result<Cluster> {
        let mut prng = Rng::new(spec.seed);
        let mut erng = Rng::new(spec.seed ^ 0x5EA3_0000_E1D0_0000);
        let mut c = Cluster {
            nodes: (0..spec.nodes).map(|i| format!("node-{i}")).collect(),
            next_host: vec![10; spec.nodes],
            ..Cluster::default()
        };
        for i in 0..spec.namespaces {
            let name = format!("ns-{i:03}");
            let mut ns = seam_model::Namespace::named(&name);
            let team = format!("team-{}", prng.below(TEAMS));
            let env = ENVS[prng.weighted(&[5, 3, 2])];
            ns.labels.insert("team".into(), team.clone());
            ns.labels.insert("env".into(), env.into());
            let mut apps: Vec<&'static str> = Vec::new();
            let n_apps = prng.range(3, 8);
            while apps.len() < n_apps {
                let a = *prng.pick(&APPS);
                if !apps.contains(&a) {
                    apps.push(a);
                }
            }
            // A few big namespaces, many small ones.
            let weight = if prng.chance(0.1) {
                prng.range(10, 20)
            } else {
                prng.range(1, 6)
            };
            c.namespaces.push(GenNamespace {
                ns,
                team,
                apps,
                weight,
            });
        }
        for _ in 0..spec.endpoints {
            c.add_pod(&mut erng)?;
        }
        for i in 0..spec.groups {
            c.groups.push(gen_group(&mut prng, &c.namespaces, i)?);
        }
        for i in 0..spec.contracts {
            c.contracts
                .push(gen_contract(&mut prng, spec.groups, &c.namespaces, i)?);
        }
        gen_netpols(&mut prng, &mut c, spec.netpols)?;
        Ok(c)
    }

    /// Adds one pod to a random namespace on a random node and returns its index.
    pub fn add_pod(&mut self, rng: &mut Rng) -> anyhow::Result<usize> {
        let weights: Vec<usize> = self.namespaces.iter().map(|n| n.weight).collect();
        let ns = &self.namespaces[rng.weighted(&weights)];
        let node = rng.below(self.nodes.len());
        self.add_pod_on(rng, ns.ns.name.clone(), node)
    }

    /// Adds one pod of namespace `ns` on node `node`; returns its index in `endpoints`.
    pub fn add_pod_on(&mut self, rng: &mut Rng, ns: String, node: usize) -> anyhow::Result<usize> {
        let gen = self
            .namespaces
            .iter()
            .find(|n| n.ns.name == ns)
            .context("add a pod to an unknown namespace")?;
        let app = *rng.pick(&gen.apps);
        let version = VERSIONS[rng.weighted(&[6, 3, 1])];
        let host = self.next_host[node];
        // The top of the block is kept for the benchmark's probe pods.
        if host >= NODE_HOSTS - 256 {
            anyhow::bail!("node-{node}'s pod CIDR is full");
        }
        self.next_host[node] += 1;
        let pod = format!("{app}-{:05x}", rng.below(1 << 20));
        let pod = format!("{pod}-{host}");
        let l = labels(&[
            ("app", app),
            ("tier", tier_of(app)),
            ("team", &gen.team),
            ("version", version),
        ]);
        self.endpoints.push(endpoint(
            &ns,
            &pod,
            &self.nodes[node],
            node_addr(node, host),
            l,
        )?);
        Ok(self.endpoints.len() - 1)
    }

    /// The namespace objects.
    pub fn namespace_objects(&self) -> Vec<seam_model::Namespace> {
        self.namespaces.iter().map(|n| n.ns.clone()).collect()
    }

    /// Every policy object (NetworkPolicies, then groups, then contracts).
    pub fn policies(&self) -> impl Iterator<Item = &PolicyObject> {
        self.netpols
            .iter()
            .chain(&self.groups)
            .chain(&self.contracts)
    }
}

fn object(value: Value) -> anyhow::Result<PolicyObject> {
    let text = value.to_string();
    PolicyObject::from_value(value).with_context(|| format!("generated object rejected: {text}"))
}

fn gen_group(rng: &mut Rng, nss: &[GenNamespace], i: usize) -> anyhow::Result<PolicyObject> {
    let n_sel = rng.range(1, 2);
    let mut selectors = Vec::new();
    for _ in 0..n_sel {
        let sel = match rng.weighted(&[4, 3, 3]) {
            0 => {
                // An app in a few named namespaces.
                let ns = rng.pick(nss);
                let mut names = vec![ns.ns.name.clone()];
                for _ in 0..rng.below(3) {
                    names.push(rng.pick(nss).ns.name.clone());
                }
                names.sort();
                names.dedup();
                json!({"namespaces": names, "labels": {"matchLabels": {"app": rng.pick(&ns.apps)}}})
            }
            1 => json!({
                "namespaceSelector": {"matchLabels": {"team": format!("team-{}", rng.below(TEAMS))}},
                "labels": {"matchLabels": {"tier": rng.pick(&TIERS)}}
            }),
            _ => {
                let a = rng.pick(&APPS);
                let b = rng.pick(&APPS);
                json!({
                    "namespaceSelector": {"matchLabels": {"env": rng.pick(&ENVS)}},
                    "labels": {"matchExpressions": [{"key": "app", "operator": "In", "values": [a, b]}]}
                })
            }
        };
        selectors.push(sel);
    }
    object(json!({
        "apiVersion": "seam.dev/v1alpha1",
        "kind": "EndpointGroup",
        "metadata": {"name": format!("epg-{i:03}")},
        "spec": {"selectors": selectors}
    }))
}

fn gen_filter(rng: &mut Rng) -> Value {
    match rng.weighted(&[5, 2, 2, 1]) {
        0 => {
            json!({"protocol": "TCP", "ports": [*rng.pick(&[80, 443, 8080, 8443, 5432, 6379, 9090])]})
        }
        1 => {
            json!({"protocol": "TCP", "portRanges": [{"from": 9000, "to": 9000 + rng.range(1, 99)}]})
        }
        2 => json!({"protocol": "UDP", "ports": [53, *rng.pick(&[123, 514, 8125])]}),
        _ => json!({"protocol": "ICMP", "icmpType": 8}),
    }
}

fn gen_contract(
    rng: &mut Rng,
    groups: usize,
    nss: &[GenNamespace],
    i: usize,
) -> anyhow::Result<PolicyObject> {
    let group = |rng: &mut Rng| {
        if groups == 0 || rng.chance(0.2) {
            format!("namespace/{}", rng.pick(nss).ns.name)
        } else {
            format!("epg-{:03}", rng.below(groups))
        }
    };
    let consumers: Vec<String> = (0..rng.range(1, 2)).map(|_| group(rng)).collect();
    let providers = vec![group(rng)];
    let subjects: Vec<Value> = (0..rng.range(1, 2))
        .map(|s| {
            let filters: Vec<Value> = (0..rng.range(1, 2)).map(|_| gen_filter(rng)).collect();
            json!({"name": format!("s{s}"), "filters": filters})
        })
        .collect();
    let admin = rng.chance(0.1);
    let mut spec = json!({
        "consumers": consumers,
        "providers": providers,
        "subjects": subjects,
        "action": if rng.chance(0.1) { "deny" } else { "allow" },
        "log": rng.chance(0.05),
        "tier": if admin { "admin" } else { "namespace" },
    });
    if admin || rng.chance(0.3) {
        spec["priority"] = json!(rng.range(1, 999));
    }
    object(json!({
        "apiVersion": "seam.dev/v1alpha1",
        "kind": "Contract",
        "metadata": {"name": format!("contract-{i:03}")},
        "spec": spec
    }))
}

fn netpol(ns: &str, name: &str, spec: Value) -> anyhow::Result<PolicyObject> {
    object(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec
    }))
}

fn ports(rng: &mut Rng) -> Value {
    match rng.weighted(&[4, 2, 1]) {
        0 => json!([{"protocol": "TCP", "port": *rng.pick(&[80, 8080, 8443, 9090, 3000])}]),
        1 => json!([{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": 443}]),
        _ => json!([{"port": *rng.pick(&[5432, 6379, 27017])}]),
    }
}

/// A namespace-selector peer: by team, by env, or by name.
fn ns_peer(rng: &mut Rng, nss: &[GenNamespace]) -> Value {
    match rng.weighted(&[4, 2, 2]) {
        0 => {
            json!({"namespaceSelector": {"matchLabels": {"team": format!("team-{}", rng.below(TEAMS))}}})
        }
        1 => json!({"namespaceSelector": {"matchLabels": {"env": rng.pick(&ENVS)}},
                    "podSelector": {"matchLabels": {"tier": rng.pick(&TIERS)}}}),
        _ => json!({"namespaceSelector": {"matchLabels": {
                        seam_model::NAMESPACE_NAME_LABEL: rng.pick(nss).ns.name.clone()}}}),
    }
}

/// One rule of the mix, as `(kind, ingress rules, egress rules, policyTypes)`.
fn gen_netpol_spec(
    rng: &mut Rng,
    ns: &GenNamespace,
    nss: &[GenNamespace],
) -> (&'static str, Value) {
    let app = *rng.pick(&ns.apps);
    let other = *rng.pick(&ns.apps);
    let pod_sel = if rng.chance(0.15) {
        json!({"matchLabels": {"app": app},
               "matchExpressions": [{"key": "version", "operator": "In", "values": ["v1", "v2"]}]})
    } else {
        json!({"matchLabels": {"app": app}})
    };
    match rng.weighted(&[30, 20, 15, 15, 10, 10]) {
        0 => (
            "allow-pods",
            json!({"podSelector": pod_sel,
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": other}}}], "ports": ports(rng)}]}),
        ),
        1 => {
            let mut rule = json!({"from": [ns_peer(rng, nss)]});
            if rng.chance(0.6) {
                rule["ports"] = ports(rng);
            }
            (
                "allow-ns",
                json!({"podSelector": pod_sel, "ingress": [rule]}),
            )
        }
        2 => {
            if rng.chance(0.5) {
                (
                    "ipblock-in",
                    json!({"podSelector": pod_sel,
                           "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                "except": [format!("10.{}.0.0/16", rng.range(1, 200)), node_cidr(rng.below(10))]}}],
                                "ports": [{"protocol": "TCP", "port": 443}]}]}),
                )
            } else {
                (
                    "ipblock-out",
                    json!({"podSelector": pod_sel, "policyTypes": ["Egress"],
                           "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0",
                                "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}}]},
                                      {"to": [{"ipBlock": {"cidr": "10.96.0.10/32"}}],
                                       "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}),
                )
            }
        }
        3 => {
            let start = *rng.pick(&[30000, 8000, 9100, 5000]);
            let proto = if rng.chance(0.7) { "TCP" } else { "UDP" };
            (
                "range",
                json!({"podSelector": pod_sel,
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": rng.pick(&TIERS)}}}],
                                    "ports": [{"protocol": proto, "port": start, "endPort": start + rng.range(10, 700)}]}]}),
            )
        }
        4 => {
            let peer = rng.pick(nss);
            (
                "egress-db",
                json!({"podSelector": pod_sel, "policyTypes": ["Ingress", "Egress"],
                       "ingress": [{"from": [{"podSelector": {}}]}],
                       "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": peer.team.clone()}},
                                           "podSelector": {"matchLabels": {"tier": "data"}}}],
                                   "ports": [{"protocol": "TCP", "port": 5432}, {"protocol": "TCP", "port": 6379}]}]}),
            )
        }
        _ => (
            "multi",
            json!({"podSelector": pod_sel,
                   "ingress": [
                       {"from": [{"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["frontend", "backend"]}]}}],
                        "ports": ports(rng)},
                       {"from": [ns_peer(rng, nss), {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}]},
                       {"ports": [{"protocol": "TCP", "port": 9100, "endPort": 9110}]}]}),
        ),
    }
}

fn gen_netpols(rng: &mut Rng, c: &mut Cluster, n: usize) -> anyhow::Result<()> {
    let nss = c.namespaces.clone();
    // Default-deny in most namespaces (some for egress too, with DNS allowed), then the mix.
    for ns in &nss {
        if c.netpols.len() >= n {
            return Ok(());
        }
        if rng.chance(0.6) {
            c.netpols.push(netpol(
                &ns.ns.name,
                "default-deny",
                json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
            )?);
        }
        if c.netpols.len() < n && rng.chance(0.1) {
            c.netpols.push(netpol(
                &ns.ns.name,
                "default-deny-egress",
                json!({"podSelector": {}, "policyTypes": ["Egress"],
                       "egress": [{"to": [{"ipBlock": {"cidr": "10.96.0.10/32"}}],
                                   "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}),
            )?);
        }
    }
    let mut i = 0;
    while c.netpols.len() < n {
        let ns = rng.pick(&nss);
        let (kind, spec) = gen_netpol_spec(rng, ns, &nss);
        c.netpols
            .push(netpol(&ns.ns.name, &format!("{kind}-{i:04}"), spec)?);
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(endpoints: usize) -> GenSpec {
        GenSpec {
            seed: 7,
            endpoints,
            nodes: 10,
            namespaces: 40,
            netpols: 200,
            contracts: 30,
            groups: 20,
        }
    }

    #[test]
    fn deterministic_and_policies_independent_of_endpoints() {
        let a = Cluster::generate(&spec(500)).unwrap();
        let b = Cluster::generate(&spec(500)).unwrap();
        let c = Cluster::generate(&spec(2000)).unwrap();
        assert_eq!(a.endpoints, b.endpoints);
        assert_eq!(a.netpols, c.netpols);
        assert_eq!(a.contracts, c.contracts);
        assert_eq!(a.netpols.len(), 200);
        assert_eq!(c.endpoints.len(), 2000);
        let addrs: std::collections::BTreeSet<_> = c.endpoints.iter().map(|e| e.ip).collect();
        assert_eq!(addrs.len(), 2000);
    }
}
