//! Samples → records, pure: the rule behind a sample's prefix, both ends resolved against the
//! agent's view, the Service from the connection's original destination, the per-node limit
//! on drop samples, and the counts of what the limits suppressed put into the next record of
//! each rule. Time comes in as `now_ms`.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use seam_firewall::flows::SampledRule;
use seam_model::flow::{
    FlowDirection, FlowPeer, FlowReason, FlowRecord, FlowService, FlowVerdict, PeerKind,
};
use seam_model::{EndpointKind, PortProtocol};
use seam_nft::names::SampleKind;
use seam_nft::nflog::{PacketHeaders, Sample};
use seam_nft::services::{DesiredServices, FrontendKey};

use super::service::Candidate;
use crate::ClusterView;

/// What an address is, as a record names it (names shared between records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its kind.
    pub kind: PeerKind,
    /// Its namespace.
    pub namespace: Option<Arc<str>>,
    /// Its name.
    pub name: Option<Arc<str>>,
}

/// The agent's view, indexed for resolving addresses: endpoints (pods, VMs, externals) and
/// nodes by address, Service frontends by address, protocol and port, and by backend.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    peers: HashMap<Ipv4Addr, PeerInfo>,
    frontends: HashMap<(Ipv4Addr, u8, u16), Arc<str>>,
    node_ports: HashMap<(u8, u16), Arc<str>>,
    /// The frontends of each backend (address, protocol, port).
    backends: HashMap<(Ipv4Addr, u8, u16), Arc<[Candidate]>>,
    /// This node's own (underlay) address: where its NodePorts are reached.
    local: Option<Ipv4Addr>,
}

/// `namespace/name:port` (a frontend's label) → `namespace/name`.
fn service_of(label: &str) -> &str {
    label.rsplit_once(':').map_or(label, |(s, _)| s)
}

impl Resolver {
    /// Indexes the view and the node's Services.
    pub fn new(view: &ClusterView, services: &DesiredServices) -> Resolver {
        let mut peers = HashMap::new();
        for node in view.nodes.values() {
            peers.insert(
                node.underlay_ip,
                PeerInfo {
                    kind: PeerKind::Node,
                    namespace: None,
                    name: Some(Arc::from(node.name.as_str())),
                },
            );
        }
        for ep in view.endpoints.values() {
            let kind = match ep.kind {
                EndpointKind::Pod => PeerKind::Pod,
                EndpointKind::Vm => PeerKind::Vm,
                EndpointKind::External => PeerKind::External,
                EndpointKind::Host => PeerKind::Node,
            };
            // A pod's endpoint is named `<namespace>/<pod>`: the record names the pod.
            let name = ep
                .name
                .strip_prefix(&format!("{}/", ep.namespace))
                .unwrap_or(&ep.name);
            peers.insert(
                ep.ip,
                PeerInfo {
                    kind,
                    namespace: (!ep.namespace.is_empty()).then(|| Arc::from(ep.namespace.as_str())),
                    name: Some(Arc::from(name)),
                },
            );
        }
        let mut frontends = HashMap::new();
        let mut node_ports = HashMap::new();
        let mut backends: HashMap<(Ipv4Addr, u8, u16), Vec<Candidate>> = HashMap::new();
        for f in &services.frontends {
            let service: Arc<str> = Arc::from(service_of(&f.service));
            let protocol = protocol_number(f.key.protocol());
            for (addr, port) in &f.backends {
                backends
                    .entry((*addr, protocol, *port))
                    .or_default()
                    .push(Candidate {
                        key: f.key,
                        service: service.clone(),
                    });
            }
            match f.key {
                FrontendKey::Address {
                    addr,
                    protocol,
                    port,
                } => {
                    frontends.insert((addr, protocol_number(protocol), port), service);
                }
                FrontendKey::NodePort { protocol, port } => {
                    node_ports.insert((protocol_number(protocol), port), service);
                }
            }
        }
        Resolver {
            peers,
            frontends,
            node_ports,
            backends: backends
                .into_iter()
                .map(|(k, v)| (k, Arc::from(v)))
                .collect(),
            local: None,
        }
    }

    /// The same, knowing that this node's own address is `local` (its NodePorts' address).
    pub fn with_local(mut self, local: Option<Ipv4Addr>) -> Resolver {
        self.local = local;
        self
    }

    /// This node's own address, when known.
    pub fn local(&self) -> Option<Ipv4Addr> {
        self.local
    }

    /// The frontends that send connections to the backend at (`ip`, `port`) over `protocol`.
    pub fn frontends_of(
        &self,
        protocol: u8,
        (ip, port): (Ipv4Addr, u16),
    ) -> Option<Arc<[Candidate]>> {
        self.backends.get(&(ip, protocol, port)).cloned()
    }

    /// What `ip` is (the world when the view does not know it).
    pub fn peer(&self, ip: Ipv4Addr) -> PeerInfo {
        self.peers.get(&ip).cloned().unwrap_or(PeerInfo {
            kind: PeerKind::World,
            namespace: None,
            name: None,
        })
    }

    /// The Service a connection was sent to, from its original destination (before
    /// translation): a frontend at that address, or a NodePort on one of the nodes' addresses.
    pub fn service(&self, protocol: u8, ip: Ipv4Addr, port: u16) -> Option<Arc<str>> {
        if let Some(s) = self.frontends.get(&(ip, protocol, port)) {
            return Some(s.clone());
        }
        let node = self
            .peers
            .get(&ip)
            .is_some_and(|p| p.kind == PeerKind::Node);
        node.then(|| self.node_ports.get(&(protocol, port)).cloned())
            .flatten()
    }
}

fn protocol_number(p: PortProtocol) -> u8 {
    seam_nft::services::protocol_number(p)
}

/// A rule behind a prefix, with the names its records share.
#[derive(Debug, Clone)]
pub struct RuleMeta {
    /// The rule id (`None`: a Service's refusal, no policy rule).
    pub rule: Option<Arc<str>>,
    /// Its kernel comment (the key of its suppressed counts).
    pub comment: Arc<str>,
    /// The direction whose chains hold it.
    pub direction: FlowDirection,
    /// `admin`, `namespace`, `baseline` (`None`: a Service's refusal).
    pub tier: Option<&'static str>,
    /// Allow, deny or Pass.
    pub kind: SampleKind,
    /// The policy, as `seam explain` names it.
    pub policy: Option<Arc<str>>,
    /// The reason its records give.
    pub reason: FlowReason,
}

/// Every prefix of the node's table and its rule.
pub type RuleMap = HashMap<String, RuleMeta>;

/// [`RuleMap`] from what `seam_firewall::flows::sampled_rules` made of the compiled ruleset,
/// and the refusals of Services without endpoints (see `seam_nft::services::RefusalSampling`).
pub fn rule_map(sampled: &HashMap<String, SampledRule>) -> RuleMap {
    let mut policies: HashMap<&str, Arc<str>> = HashMap::new();
    let comment: Arc<str> = Arc::from(seam_nft::names::SVC_REFUSAL_COMMENT);
    let refusals = [
        (true, FlowDirection::Egress),
        (false, FlowDirection::Ingress),
    ]
    .map(|(egress, direction)| {
        (
            seam_nft::services::RefusalSampling::prefix(egress),
            RuleMeta {
                rule: None,
                comment: comment.clone(),
                direction,
                tier: None,
                kind: SampleKind::Deny,
                policy: None,
                reason: FlowReason::NoEndpoints,
            },
        )
    });
    sampled
        .iter()
        .map(|(prefix, r)| {
            let policy = r
                .policy
                .as_deref()
                .map(|p| policies.entry(p).or_insert_with(|| Arc::from(p)).clone());
            let meta = RuleMeta {
                rule: Some(Arc::from(r.rule.as_str())),
                comment: Arc::from(r.comment.as_str()),
                direction: r.direction,
                tier: Some(r.tier.as_str()),
                kind: r.kind,
                policy,
                reason: r.reason,
            };
            (prefix.clone(), meta)
        })
        .chain(refusals)
        .collect()
}

/// One end of a [`Flow`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Address.
    pub ip: Ipv4Addr,
    /// Port (TCP, UDP, SCTP).
    pub port: Option<u16>,
    /// What it is.
    pub info: PeerInfo,
}

impl Peer {
    fn record(&self) -> FlowPeer {
        FlowPeer {
            ip: self.ip,
            port: self.port,
            kind: self.info.kind,
            namespace: self.info.namespace.as_deref().map(str::to_string),
            name: self.info.name.as_deref().map(str::to_string),
        }
    }
}

/// A flow record as the agent keeps it: names shared with the view and the rule map (a
/// [`FlowRecord`] owns its strings; 65,536 of these take a third of the memory, see
/// `flows::ring`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// When the sample was read, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Which enforcement point.
    pub direction: FlowDirection,
    /// The IP protocol number.
    pub protocol: u8,
    /// The sender.
    pub src: Peer,
    /// The receiver.
    pub dst: Peer,
    /// Allowed or denied.
    pub verdict: FlowVerdict,
    /// Why.
    pub reason: FlowReason,
    /// The deciding tier.
    pub tier: Option<&'static str>,
    /// The deciding policy.
    pub policy: Option<Arc<str>>,
    /// The deciding rule.
    pub rule: Option<Arc<str>>,
    /// The Service and the address and port the client used.
    pub service: Option<(Arc<str>, Ipv4Addr, u16)>,
    /// Samples of the rule the limits suppressed since its previous record.
    pub suppressed: u64,
}

/// A protocol number as a record names it.
pub fn protocol_name(p: u8) -> String {
    match p {
        1 => "ICMP".to_string(),
        6 => "TCP".to_string(),
        17 => "UDP".to_string(),
        132 => "SCTP".to_string(),
        other => other.to_string(),
    }
}

impl Flow {
    /// The record of this node.
    pub fn record(&self, node: &str) -> FlowRecord {
        FlowRecord {
            time_ms: self.time_ms,
            node: node.to_string(),
            direction: self.direction,
            protocol: protocol_name(self.protocol),
            src: self.src.record(),
            dst: self.dst.record(),
            verdict: self.verdict,
            reason: self.reason,
            tier: self.tier.map(str::to_string),
            policy: self.policy.as_deref().map(str::to_string),
            rule: self.rule.as_deref().map(str::to_string),
            service: self.service.as_ref().map(|(s, ip, port)| FlowService {
                service: s.to_string(),
                ip: *ip,
                port: *port,
            }),
            suppressed: self.suppressed,
        }
    }
}

/// A token bucket: `rate` tokens a second, at most `rate` held.
#[derive(Debug, Clone)]
struct Bucket {
    rate: u64,
    /// Tokens, in thousandths.
    milli: u64,
    at_ms: u64,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        Bucket {
            rate: u64::from(rate),
            milli: u64::from(rate).saturating_mul(1000),
            at_ms: 0,
        }
    }

    fn take(&mut self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        self.at_ms = self.at_ms.max(now_ms);
        // Saturating: the first call comes a whole epoch after `at_ms` 0, and a rate may be huge.
        self.milli = self
            .milli
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(self.rate.saturating_mul(1000));
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// How long a Pass sample waits for the baseline's sample of the same packet.
const PASS_WAIT_MS: u64 = 2_000;
/// The most Pass samples kept waiting.
const PASS_KEPT: usize = 4_096;

type FiveTuple = (u8, Ipv4Addr, Ipv4Addr, Option<u16>, Option<u16>);

/// What became of one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A record.
    Record(Box<Flow>),
    /// Suppressed by the per-node limit (counted into the rule's next record).
    Suppressed,
    /// A Pass, kept for the baseline's sample of the same packet.
    Pass,
    /// Not a sample of this node's table (another prefix, or a rule gone), or not IPv4.
    Unknown,
}

/// Turns samples into flows: the rule map of the table the kernel holds (and the one before,
/// while a change lands), the per-node limit, the counts of suppressed samples per rule.
#[derive(Debug)]
pub struct Decoder {
    rules: Arc<RuleMap>,
    previous: Arc<RuleMap>,
    node_limit: Bucket,
    /// Suppressed samples per rule comment not yet in a record.
    pending: HashMap<Arc<str>, u64>,
    /// The kernel's suppressed counts as last read, per comment.
    kernel: BTreeMap<String, u64>,
    passes: HashMap<(FiveTuple, FlowDirection), u64>,
}

impl Decoder {
    /// A decoder whose drop and Pass samples are limited to `node_rate` a second on this node.
    pub fn new(node_rate: u32) -> Decoder {
        Decoder {
            rules: Arc::default(),
            previous: Arc::default(),
            node_limit: Bucket::new(node_rate),
            pending: HashMap::new(),
            kernel: BTreeMap::new(),
            passes: HashMap::new(),
        }
    }

    /// The rules of the table the kernel now holds (the previous ones still resolve samples
    /// sent before the change).
    pub fn set_rules(&mut self, rules: Arc<RuleMap>) {
        if !Arc::ptr_eq(&rules, &self.rules) {
            self.previous = std::mem::replace(&mut self.rules, rules);
        }
    }

    fn rule(&self, prefix: &str) -> Option<&RuleMeta> {
        self.rules.get(prefix).or_else(|| self.previous.get(prefix))
    }

    /// Takes the kernel's suppressed counts as they are when recording starts: what the limits
    /// suppressed before is no record's.
    pub fn kernel_baseline(&mut self, totals: BTreeMap<String, u64>) {
        self.kernel = totals;
    }

    /// Takes the kernel's suppressed counts (totals per rule comment, read from the table's
    /// listing); returns how many were suppressed since the last reading. A count lower than
    /// before is a rule written anew (its counter starts at 0).
    pub fn kernel_suppressed(&mut self, totals: BTreeMap<String, u64>) -> u64 {
        let mut new = 0;
        for (comment, total) in &totals {
            let before = self.kernel.get(comment).copied().unwrap_or(0);
            let delta = if *total >= before {
                total - before
            } else {
                *total
            };
            if delta > 0 {
                new += delta;
                *self.pending.entry(Arc::from(comment.as_str())).or_default() += delta;
            }
        }
        self.kernel = totals;
        new
    }

    /// Decodes one sample read at `now_ms`.
    pub fn decode(&mut self, sample: &Sample, now_ms: u64, view: &Resolver) -> Decoded {
        let (Some(meta), Some(packet)) = (self.rule(&sample.prefix).cloned(), sample.packet) else {
            return Decoded::Unknown;
        };
        let key = (five_tuple(&packet), meta.direction);
        if meta.kind != SampleKind::Allow && !self.node_limit.take(now_ms) {
            *self.pending.entry(meta.comment.clone()).or_default() += 1;
            return Decoded::Suppressed;
        }
        if meta.kind == SampleKind::Pass {
            if self.passes.len() >= PASS_KEPT {
                self.passes
                    .retain(|_, at| now_ms.saturating_sub(*at) < PASS_WAIT_MS);
            }
            if self.passes.len() < PASS_KEPT {
                self.passes.insert(key, now_ms);
            }
            return Decoded::Pass;
        }
        // Passed by the admin tier: the baseline decided.
        let passed = self
            .passes
            .remove(&key)
            .is_some_and(|at| now_ms.saturating_sub(at) < PASS_WAIT_MS)
            && meta.tier == Some("baseline");
        // A refusal comes before any translation: the packet's destination is the frontend.
        let refused = (meta.reason == FlowReason::NoEndpoints)
            .then(|| {
                let port = packet.dst_port?;
                let s = view.service(packet.protocol, packet.dst, port)?;
                Some((s, packet.dst, port))
            })
            .flatten();
        let service = refused.or_else(|| {
            sample.original.and_then(|o| {
                let translated = o.dst.0 != packet.dst || Some(o.dst.1) != packet.dst_port;
                translated
                    .then(|| view.service(o.protocol, o.dst.0, o.dst.1))
                    .flatten()
                    .map(|s| (s, o.dst.0, o.dst.1))
            })
        });
        let suppressed = self.pending.remove(&meta.comment).unwrap_or(0);
        Decoded::Record(Box::new(Flow {
            time_ms: now_ms,
            direction: meta.direction,
            protocol: packet.protocol,
            src: Peer {
                ip: packet.src,
                port: packet.src_port,
                info: view.peer(packet.src),
            },
            dst: Peer {
                ip: packet.dst,
                port: packet.dst_port,
                info: view.peer(packet.dst),
            },
            verdict: match meta.kind {
                SampleKind::Allow => FlowVerdict::Allowed,
                SampleKind::Deny | SampleKind::Pass => FlowVerdict::Denied,
            },
            reason: if passed {
                FlowReason::Pass
            } else {
                meta.reason
            },
            tier: meta.tier,
            policy: meta.policy.clone(),
            rule: meta.rule.clone(),
            service,
            suppressed,
        }))
    }
}

fn five_tuple(p: &PacketHeaders) -> FiveTuple {
    (p.protocol, p.src, p.dst, p.src_port, p.dst_port)
}
