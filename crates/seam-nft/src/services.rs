//! Services in `table inet seam`: what a node translates (the input, [`DesiredServices`], made by
//! `seam_dataplane::services` from the Services and their backends), and how the table holds it
//! ([`ServiceModel`], built by [`ServiceModel::from_desired`]).
//!
//! Layout (why: the cost of a new connection must not grow with the number of Services, and a
//! Service added or an endpoint changed must touch only that Service's map elements):
//! - `svc_dispatch` (`ipv4_addr . inet_proto . inet_service : verdict`) maps a frontend at an
//!   address (ClusterIP, external IP, LB address) to `goto m_<N>`, N its number of backends;
//!   `svc_nodeports` (`inet_proto . inet_service : verdict`) maps a NodePort to `goto n_<N>`.
//! - `m_<N>`, one chain per backend count shared by every frontend with that count:
//!   `dnat ip to ip daddr . meta l4proto . th dport . numgen random mod N map @svc_backends`;
//!   `svc_backends` maps frontend and slot `0..N` to the backend's address and port. `n_<N>`
//!   does the same for NodePorts through `svc_np_backends` (no address in the key: a NodePort is
//!   served on every local address). A chain exists while some frontend has that count.
//! - ClientIP affinity: `sa_<hash>` per frontend: `ip saddr @aff_<h> goto se_<h>` per backend,
//!   then `numgen random mod N vmap { i : goto se_<h> }`; `se_<h>` per (Service port, backend):
//!   `update @aff_<h> { ip saddr }`, then `dnat` to the backend. `aff_<h>` is a timed set
//!   (`flags dynamic,timeout; timeout T`): a client returns to its backend while it opens new
//!   connections within T of each other, as kube-proxy does. The `se_`/`aff_` pair belongs to
//!   the Service port ([`Frontend::service`]), not to one frontend: its ClusterIP, external IPs,
//!   LoadBalancer addresses and NodePort send a client to the same backend, as kube-proxy's
//!   per-endpoint chains of a Service port do. Names are hashes of what they hold: a backend
//!   added to an affinity Service is a new `sa_` chain, while the other backends' `se_`/`aff_`
//!   objects (and the clients they remember) stay.
//! - A frontend with no usable backend is in `svc_reject` / `svc_np_reject`. Frontends at an
//!   address are refused in `svc_reject_prerouting` (priority dstnat - 10: before routing, as a
//!   node may have no route to a ClusterIP at all, and then the forward hook never sees the
//!   packet) and `svc_reject_output` (the node's own connections); NodePorts in
//!   `svc_reject_input` (priority filter - 10, before policy). TCP gets a reset, the rest ICMP
//!   port unreachable, as kube-proxy does.
//! - Source NAT: a frontend in `svc_masq` / `svc_np_masq` marks the first packet of a connection
//!   from outside `svc_inside` (Seam's segments) with [`SVC_MASQUERADE_MARK`] in the nat chains;
//!   `svc_postrouting` translates marked packets to the node's underlay address (`svc_snat_to`,
//!   so that a backend on another node replies to this node: `masquerade` would pick the
//!   segment's gateway address, the same on every node), or masquerades them when the address
//!   is not known. It masquerades hairpin pairs (`svc_hairpin`, `B . B`: after DNAT the source
//!   is the destination), and connections from outside `svc_inside` to a backend outside Seam's
//!   segments (`svc_snat_backends`, external endpoints), which would otherwise answer the
//!   client directly.
//! - `svc_lb_addresses`: on a gateway, traffic to an LB address that no Service port translated
//!   is dropped on input (ICMP aside), so it never reaches the gateway's own sockets.
//! - NodePorts match `fib daddr type local` and not 127.0.0.0/8 (as kube-proxy's nftables mode).
//!
//! The nat chains see only a connection's first packet; policy (the forward hook) sees the
//! translated destination.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use seam_model::PortProtocol;

use crate::table::{missing, BatchError};

use crate::names::{
    chain_name, AFFINITY_CHAIN_PREFIX, AFFINITY_SET_PREFIX, NODEPORT_SPREAD_CHAIN_PREFIX,
    SPREAD_CHAIN_PREFIX, STICKY_CHAIN_PREFIX, SVC_BACKENDS, SVC_DISPATCH, SVC_HAIRPIN, SVC_INSIDE,
    SVC_LB_ADDRESSES, SVC_MASQUERADE, SVC_MASQUERADE_MARK, SVC_NODEPORTS, SVC_NODEPORT_BACKENDS,
    SVC_NODEPORT_MASQUERADE, SVC_NODEPORT_REJECT, SVC_OUTPUT, SVC_POSTROUTING, SVC_PREROUTING,
    SVC_REJECT, SVC_REJECT_INPUT, SVC_REJECT_OUTPUT, SVC_REJECT_PREROUTING, SVC_SNAT_BACKENDS,
    SVC_SNAT_TO,
};

/// Where a Service is reached on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrontendKey {
    /// A ClusterIP, an external IP or a LoadBalancer address, with a Service port.
    Address {
        /// The address.
        addr: Ipv4Addr,
        /// The protocol.
        protocol: PortProtocol,
        /// The Service port.
        port: u16,
    },
    /// A NodePort: any local address of the node.
    NodePort {
        /// The protocol.
        protocol: PortProtocol,
        /// The node port.
        port: u16,
    },
}

/// One frontend and the backends this node sends its new connections to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frontend {
    /// Where the Service is reached.
    pub key: FrontendKey,
    /// `namespace/name:port` (the port's name, or its number): the Service port, for comments
    /// and `seam explain`; its frontends share their ClientIP affinity.
    pub service: String,
    /// The usable backends on this node (address, port), sorted; empty: connections are refused
    /// at once.
    pub backends: Vec<(Ipv4Addr, u16)>,
    /// ClientIP session affinity, with its timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// Connections from outside [`DesiredServices::segment_subnets`] are masqueraded (so that a
    /// backend on another node replies through this one).
    pub masquerade_outside: bool,
}

/// Everything a node translates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredServices {
    /// The frontends, sorted by key.
    pub frontends: Vec<Frontend>,
    /// Addresses of local endpoints that are backends: a connection of one to itself through a
    /// Service (hairpin) is masqueraded, or it would see its own address as the source.
    pub hairpin: BTreeSet<Ipv4Addr>,
    /// Seam's segments: sources inside them are never masqueraded.
    pub segment_subnets: BTreeSet<Ipv4Net>,
    /// LoadBalancer addresses this node serves (gateways): anything sent to them that is not a
    /// Service port is dropped before it reaches the node's own sockets.
    pub lb_addresses: BTreeSet<Ipv4Addr>,
    /// The node's underlay address: connections of [`Frontend::masquerade_outside`] frontends
    /// are translated to it (`None`: masqueraded).
    pub node_address: Option<Ipv4Addr>,
    /// Addresses of backends outside Seam's segments (external endpoints): a translated
    /// connection to one from outside the segments is masqueraded.
    pub snat_backends: BTreeSet<Ipv4Addr>,
}

/// The protocol's nftables name (`tcp`, `udp`, `sctp`).
pub fn protocol_name(protocol: PortProtocol) -> &'static str {
    match protocol {
        PortProtocol::Tcp => "tcp",
        PortProtocol::Udp => "udp",
        PortProtocol::Sctp => "sctp",
    }
}

/// The protocol's IP protocol number (what `meta l4proto` loads).
pub fn protocol_number(protocol: PortProtocol) -> u8 {
    match protocol {
        PortProtocol::Tcp => 6,
        PortProtocol::Udp => 17,
        PortProtocol::Sctp => 132,
    }
}

/// The protocol of an nftables name or number, as a listing prints it.
pub fn parse_protocol(text: &str) -> Option<PortProtocol> {
    match text {
        "tcp" | "6" => Some(PortProtocol::Tcp),
        "udp" | "17" => Some(PortProtocol::Udp),
        "sctp" | "132" => Some(PortProtocol::Sctp),
        _ => None,
    }
}

impl FrontendKey {
    /// Whether it is a NodePort (held in the NodePort maps and sets).
    pub fn is_node_port(&self) -> bool {
        matches!(self, FrontendKey::NodePort { .. })
    }

    /// The protocol.
    pub fn protocol(&self) -> PortProtocol {
        match self {
            FrontendKey::Address { protocol, .. } | FrontendKey::NodePort { protocol, .. } => {
                *protocol
            }
        }
    }
}

impl fmt::Display for FrontendKey {
    /// The key as nft writes an element of its map or set: `10.96.0.1 . tcp . 80`, `tcp . 30080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrontendKey::Address {
                addr,
                protocol,
                port,
            } => write!(f, "{addr} . {} . {port}", protocol_name(*protocol)),
            FrontendKey::NodePort { protocol, port } => {
                write!(f, "{} . {port}", protocol_name(*protocol))
            }
        }
    }
}

/// A regular chain of the Services part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SvcChain {
    /// `m_<N>`: frontends at an address with N backends, through `svc_backends`.
    Spread {
        /// N.
        count: u32,
    },
    /// `n_<N>`: NodePorts with N backends, through `svc_np_backends`.
    NodeSpread {
        /// N.
        count: u32,
    },
    /// `sa_<hash>`: a frontend with ClientIP affinity: each backend's `se_` chain (in slot
    /// order), tried by its `aff_` set, then one picked at random.
    Affinity {
        /// The `se_<h>` chains, one per backend; each one's set is `aff_<h>`.
        sticky: Vec<String>,
    },
    /// `se_<hash>`: records the client in its `aff_<hash>` set, then translates to the backend.
    Sticky {
        /// The frontend's protocol.
        protocol: PortProtocol,
        /// The backend.
        backend: (Ipv4Addr, u16),
    },
    /// Read back from the kernel: the name says what it holds.
    Adopted,
}

/// One element of a Services set or map (which one follows from its kind and key), as the
/// in-place changes add and delete them ([`crate::TableOp::AddSvcElements`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SvcElement {
    /// `svc_dispatch` / `svc_nodeports`: frontend → `goto` chain.
    Frontend {
        /// The frontend.
        key: FrontendKey,
        /// The chain it goes to.
        chain: String,
    },
    /// `svc_backends` / `svc_np_backends`: frontend and slot → backend.
    Backend {
        /// The frontend.
        key: FrontendKey,
        /// The slot, `0..N`.
        slot: u32,
        /// The backend's address and port.
        backend: (Ipv4Addr, u16),
    },
    /// `svc_reject` / `svc_np_reject`.
    Reject(FrontendKey),
    /// `svc_masq` / `svc_np_masq`.
    Masquerade(FrontendKey),
    /// `svc_inside`: an inclusive range.
    Inside(Ipv4Addr, Ipv4Addr),
    /// `svc_hairpin`: `B . B`.
    Hairpin(Ipv4Addr),
    /// `svc_lb_addresses`.
    LbAddress(Ipv4Addr),
    /// `svc_snat_to`: the mark → the node's underlay address.
    SnatTo(Ipv4Addr),
    /// `svc_snat_backends`.
    SnatBackend(Ipv4Addr),
}

impl SvcElement {
    /// The set or map that holds it.
    pub fn set(&self) -> &'static str {
        let node = |k: &FrontendKey| k.is_node_port();
        match self {
            SvcElement::Frontend { key, .. } if node(key) => SVC_NODEPORTS,
            SvcElement::Frontend { .. } => SVC_DISPATCH,
            SvcElement::Backend { key, .. } if node(key) => SVC_NODEPORT_BACKENDS,
            SvcElement::Backend { .. } => SVC_BACKENDS,
            SvcElement::Reject(key) if node(key) => SVC_NODEPORT_REJECT,
            SvcElement::Reject(_) => SVC_REJECT,
            SvcElement::Masquerade(key) if node(key) => SVC_NODEPORT_MASQUERADE,
            SvcElement::Masquerade(_) => SVC_MASQUERADE,
            SvcElement::Inside(..) => SVC_INSIDE,
            SvcElement::Hairpin(_) => SVC_HAIRPIN,
            SvcElement::LbAddress(_) => SVC_LB_ADDRESSES,
            SvcElement::SnatTo(_) => SVC_SNAT_TO,
            SvcElement::SnatBackend(_) => SVC_SNAT_BACKENDS,
        }
    }
}

impl fmt::Display for SvcElement {
    /// The element as nft writes it in its set or map.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SvcElement::Frontend { key, chain } => write!(f, "{key} : goto {chain}"),
            SvcElement::Backend {
                key,
                slot,
                backend: (addr, port),
            } => write!(f, "{key} . {slot} : {addr} . {port}"),
            SvcElement::Reject(key) | SvcElement::Masquerade(key) => write!(f, "{key}"),
            SvcElement::Inside(s, e) if s == e => write!(f, "{s}"),
            SvcElement::Inside(s, e) => write!(f, "{s}-{e}"),
            SvcElement::Hairpin(a) => write!(f, "{a} . {a}"),
            SvcElement::LbAddress(a) | SvcElement::SnatBackend(a) => write!(f, "{a}"),
            SvcElement::SnatTo(a) => write!(f, "0x{SVC_MASQUERADE_MARK:08x} : {a}"),
        }
    }
}

/// The Services part of `table inet seam`: the elements of its maps and sets, its regular chains
/// and its affinity sets (the base chains and the sets themselves are fixed, see the module
/// docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceModel {
    /// The Services part exists in the table (its sets, maps and base chains). `false` (the
    /// default) leaves it out: a table of policy only, as before Services.
    pub enabled: bool,
    /// `svc_dispatch` and `svc_nodeports`: frontend → the chain it goes to.
    pub frontends: BTreeMap<FrontendKey, Arc<str>>,
    /// `svc_backends` and `svc_np_backends`: each frontend's backends, slot `i` the `i`th (held
    /// per frontend, not per slot, so that building and diffing a table of 10,000 Services costs
    /// 10,000 steps, not 100,000).
    pub backends: BTreeMap<FrontendKey, Arc<[(Ipv4Addr, u16)]>>,
    /// `svc_reject` and `svc_np_reject`.
    pub reject: BTreeSet<FrontendKey>,
    /// `svc_masq` and `svc_np_masq`.
    pub masquerade: BTreeSet<FrontendKey>,
    /// `svc_inside`: inclusive ranges, sorted, disjoint and not adjacent.
    pub inside: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// `svc_hairpin` (each address `a` is the element `a . a`).
    pub hairpin: BTreeSet<Ipv4Addr>,
    /// `svc_lb_addresses`.
    pub lb_addresses: BTreeSet<Ipv4Addr>,
    /// `svc_snat_to`'s one element: the node's underlay address.
    pub node_address: Option<Ipv4Addr>,
    /// `svc_snat_backends`.
    pub snat_backends: BTreeSet<Ipv4Addr>,
    /// `m_<N>`, `n_<N>`, `sa_<hash>` and `se_<hash>` chains by name.
    pub chains: BTreeMap<String, SvcChain>,
    /// `aff_<hash>` sets by name, with their timeout in seconds.
    pub affinity_sets: BTreeMap<String, u32>,
    /// How many frontends go to each `m_<N>`/`n_<N>` chain and how many `sa_` chains to each
    /// `se_` chain, for [`ServiceModel::update`].
    pub(crate) spread_users: SpreadUsers,
    /// With flow recording on: refusals are sampled (see [`RefusalSampling`]).
    pub refusal_sampling: Option<RefusalSampling>,
}

/// How refusals of frontends without backends are sampled for flow records: before it is
/// refused, a packet jumps to [`crate::names::SVC_REFUSED_EGRESS`] (frontends at an address) or
/// [`crate::names::SVC_REFUSED_INGRESS`] (NodePorts), whose first rule takes what is over the
/// limit (`limit rate over … counter return`, comment
/// [`crate::names::SVC_REFUSAL_COMMENT`]: the suppressed count) and whose second sends the
/// sample (prefix [`crate::names::sample_prefix`] of a deny with that comment). Part of the base
/// chains: changing it is a whole write (the agent's, which only does at a restart with other
/// settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RefusalSampling {
    /// The NFLOG group.
    pub group: u16,
    /// Samples per second of each of the two chains, at most.
    pub rate: u32,
    /// Bytes of each packet copied.
    pub snaplen: u32,
}

impl RefusalSampling {
    /// The refusal sampling of a table that samples as `sampling` says.
    pub fn of(sampling: &crate::FlowSampling) -> RefusalSampling {
        RefusalSampling {
            group: sampling.group,
            rate: sampling.drop_rate,
            snaplen: sampling.snaplen,
        }
    }

    /// The sample prefix of a refusal on the client's side (`egress`) or of a NodePort.
    pub fn prefix(egress: bool) -> String {
        crate::names::sample_prefix(
            crate::names::SampleKind::Deny,
            egress,
            crate::names::SVC_REFUSAL_COMMENT,
        )
    }

    fn chains_text(&self, out: &mut String) {
        use crate::names::{SVC_REFUSAL_COMMENT, SVC_REFUSED_EGRESS, SVC_REFUSED_INGRESS};
        for (chain, egress) in [(SVC_REFUSED_EGRESS, true), (SVC_REFUSED_INGRESS, false)] {
            let rate = self.rate;
            let _ = write!(
                out,
                "\tchain {chain} {{\n\t\tlimit rate over {rate}/second burst {rate} packets counter return comment \"{SVC_REFUSAL_COMMENT}\"\n\
                 \t\tlog prefix \"{}\" group {} snaplen {} comment \"{SVC_REFUSAL_COMMENT}\"\n\t}}\n",
                RefusalSampling::prefix(egress),
                self.group,
                self.snaplen,
            );
        }
    }

    /// Reads the sampling back from a rule of a listing of one of its chains (the sample
    /// rule); `None` for other rules.
    pub(crate) fn from_rule(rule: &serde_json::Value) -> Option<RefusalSampling> {
        let exprs = rule.get("expr")?.as_array()?;
        let log = exprs.iter().find_map(|e| e.get("log"))?;
        Some(RefusalSampling {
            group: u16::try_from(log.get("group")?.as_u64()?).ok()?,
            rate: 0,
            snaplen: u32::try_from(log.get("snaplen")?.as_u64()?).ok()?,
        })
    }

    /// Reads the limit back from the over-limit rule of one of its chains.
    pub(crate) fn rate_of(rule: &serde_json::Value) -> Option<u32> {
        let exprs = rule.get("expr")?.as_array()?;
        let limit = exprs.iter().find_map(|e| e.get("limit"))?;
        u32::try_from(limit.get("rate")?.as_u64()?).ok()
    }
}

/// The number of frontends of each shared chain, kept by [`ServiceModel::update`] (and counted
/// when first needed in a model made otherwise, such as one read back). Not part of what the
/// model says: models equal in everything else are equal.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpreadUsers {
    /// The counts match the model's frontends.
    known: bool,
    /// Chain name → frontends that go to it (chains no frontend goes to are left out).
    users: BTreeMap<Arc<str>, usize>,
    /// `se_` chain name → the `sa_` chains that go to it (the frontends of its Service port).
    sticky: BTreeMap<String, usize>,
}

impl PartialEq for SpreadUsers {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SpreadUsers {}

/// The name of the shared chain of frontends of this kind with `count` backends.
pub fn spread_chain(node_port: bool, count: usize) -> String {
    let prefix = if node_port {
        NODEPORT_SPREAD_CHAIN_PREFIX
    } else {
        SPREAD_CHAIN_PREFIX
    };
    format!("{prefix}{count}")
}

/// The `aff_<hash>` set of a `se_<hash>` chain.
pub fn affinity_set_of(sticky_chain: &str) -> String {
    let hash = sticky_chain
        .strip_prefix(STICKY_CHAIN_PREFIX)
        .unwrap_or(sticky_chain);
    format!("{AFFINITY_SET_PREFIX}{hash}")
}

fn backend_text((addr, port): &(Ipv4Addr, u16)) -> String {
    format!("{addr}:{port}")
}

/// Sorted, merged inclusive ranges of prefixes.
fn prefix_ranges<'a>(nets: impl IntoIterator<Item = &'a Ipv4Net>) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let mut ranges: Vec<(u32, u32)> = nets
        .into_iter()
        .map(|n| (u32::from(n.network()), u32::from(n.broadcast())))
        .collect();
    ranges.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some((_, last)) if u64::from(s) <= u64::from(*last) + 1 => *last = (*last).max(e),
            _ => out.push((s, e)),
        }
    }
    out.into_iter()
        .map(|(s, e)| (Ipv4Addr::from(s), Ipv4Addr::from(e)))
        .collect()
}

impl ServiceModel {
    /// The table's Services part for `desired` (enabled, even with no frontend: the sets and
    /// base chains are there for the first Service to come as elements only).
    pub fn from_desired(desired: &DesiredServices) -> ServiceModel {
        let mut out = ServiceModel {
            enabled: true,
            inside: prefix_ranges(&desired.segment_subnets),
            hairpin: desired.hairpin.clone(),
            lb_addresses: desired.lb_addresses.clone(),
            node_address: desired.node_address,
            snat_backends: desired.snat_backends.clone(),
            ..ServiceModel::default()
        };
        let mut spread_names: BTreeMap<(bool, usize), Arc<str>> = BTreeMap::new();
        for f in &desired.frontends {
            if f.backends.is_empty() {
                out.reject.insert(f.key);
                continue;
            }
            if f.masquerade_outside {
                out.masquerade.insert(f.key);
            }
            let chain = match f.affinity_timeout {
                Some(timeout) => Arc::from(out.affinity(f, timeout)),
                None => {
                    let node_port = f.key.is_node_port();
                    let count = f.backends.len();
                    // Frontends with the same count share their chain's name.
                    let name = spread_names.entry((node_port, count)).or_insert_with(|| {
                        let name = spread_chain(node_port, count);
                        let count = u32::try_from(count).unwrap_or(u32::MAX);
                        out.chains.insert(
                            name.clone(),
                            if node_port {
                                SvcChain::NodeSpread { count }
                            } else {
                                SvcChain::Spread { count }
                            },
                        );
                        Arc::from(name)
                    });
                    out.backends.insert(f.key, Arc::from(f.backends.as_slice()));
                    *out.spread_users.users.entry(name.clone()).or_insert(0) += 1;
                    name.clone()
                }
            };
            out.frontends.insert(f.key, chain);
        }
        out.spread_users.known = true;
        out
    }

    /// Brings the model to what [`ServiceModel::from_desired`] makes of a result that differs
    /// from this model's in the frontends of `changes` only (each key with its frontend now,
    /// `None`: gone) and in the rest (the fields of `rest` other than its frontends, which are
    /// not read): at the cost of those frontends, not of every Service. The shared `m_<N>`/`n_<N>`
    /// chains come and go with their first and last frontend, the `sa_` chains with their
    /// frontend, the `se_` chains and `aff_` sets with the first and last frontend of their
    /// Service port.
    pub fn update<'a>(
        &mut self,
        changes: impl IntoIterator<Item = (FrontendKey, Option<&'a Frontend>)>,
        rest: &DesiredServices,
    ) {
        let DesiredServices {
            frontends: _,
            hairpin,
            segment_subnets,
            lb_addresses,
            node_address,
            snat_backends,
        } = rest;
        self.enabled = true;
        self.count_spread_users();
        for (key, now) in changes {
            self.remove_frontend(&key);
            if let Some(f) = now {
                debug_assert_eq!(f.key, key);
                self.add_frontend(f);
            }
        }
        let inside = prefix_ranges(segment_subnets);
        if self.inside != inside {
            self.inside = inside;
        }
        if &self.hairpin != hairpin {
            self.hairpin = hairpin.clone();
        }
        if &self.lb_addresses != lb_addresses {
            self.lb_addresses = lb_addresses.clone();
        }
        self.node_address = *node_address;
        if &self.snat_backends != snat_backends {
            self.snat_backends = snat_backends.clone();
        }
    }

    /// Counts the frontends of each shared chain, unless they are counted already.
    fn count_spread_users(&mut self) {
        if self.spread_users.known {
            return;
        }
        let mut users: BTreeMap<Arc<str>, usize> = BTreeMap::new();
        let mut sticky: BTreeMap<String, usize> = BTreeMap::new();
        for chain in self.frontends.values() {
            match self.chains.get(&**chain) {
                Some(SvcChain::Spread { .. } | SvcChain::NodeSpread { .. }) => {
                    *users.entry(chain.clone()).or_insert(0) += 1;
                }
                Some(SvcChain::Affinity { sticky: se }) => {
                    for se in se {
                        *sticky.entry(se.clone()).or_insert(0) += 1;
                    }
                }
                _ => {}
            }
        }
        self.spread_users = SpreadUsers {
            known: true,
            users,
            sticky,
        };
    }

    /// Takes frontend `key` out, with its chains no other frontend goes to.
    fn remove_frontend(&mut self, key: &FrontendKey) {
        self.reject.remove(key);
        self.masquerade.remove(key);
        self.backends.remove(key);
        let Some(chain) = self.frontends.remove(key) else {
            return;
        };
        match self.chains.get(&*chain) {
            Some(SvcChain::Spread { .. } | SvcChain::NodeSpread { .. }) => {
                if let Some(n) = self.spread_users.users.get_mut(&chain) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.spread_users.users.remove(&chain);
                        self.chains.remove(&*chain);
                    }
                }
            }
            Some(SvcChain::Affinity { .. }) => {
                // Its `sa_` chain is named after the frontend: no other one has it. Its `se_`
                // chains and `aff_` sets go with the last frontend of their Service port.
                if let Some(SvcChain::Affinity { sticky }) = self.chains.remove(&*chain) {
                    for se in sticky {
                        let left = match self.spread_users.sticky.get_mut(&se) {
                            Some(n) => {
                                *n = n.saturating_sub(1);
                                *n
                            }
                            None => 0,
                        };
                        if left == 0 {
                            self.spread_users.sticky.remove(&se);
                            self.chains.remove(&se);
                            self.affinity_sets.remove(&affinity_set_of(&se));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Puts frontend `f` in (its key not in the model), as [`ServiceModel::from_desired`] does.
    fn add_frontend(&mut self, f: &Frontend) {
        if f.backends.is_empty() {
            self.reject.insert(f.key);
            return;
        }
        if f.masquerade_outside {
            self.masquerade.insert(f.key);
        }
        let chain: Arc<str> = match f.affinity_timeout {
            Some(timeout) => Arc::from(self.affinity(f, timeout)),
            None => {
                let node_port = f.key.is_node_port();
                let count = f.backends.len();
                let name = spread_chain(node_port, count);
                // The chain's name as the other frontends of the chain hold it, if any.
                let shared = self
                    .spread_users
                    .users
                    .get_key_value(name.as_str())
                    .map(|(n, _)| n.clone());
                let name = match shared {
                    Some(shared) => shared,
                    None => {
                        let count = u32::try_from(count).unwrap_or(u32::MAX);
                        self.chains.insert(
                            name.clone(),
                            if node_port {
                                SvcChain::NodeSpread { count }
                            } else {
                                SvcChain::Spread { count }
                            },
                        );
                        Arc::from(name)
                    }
                };
                *self.spread_users.users.entry(name.clone()).or_insert(0) += 1;
                self.backends
                    .insert(f.key, Arc::from(f.backends.as_slice()));
                name
            }
        };
        self.frontends.insert(f.key, chain);
    }

    /// Adds the affinity chains and sets of `f`; returns its `sa_` chain. The `se_` chains (and
    /// their `aff_` sets) are named after the Service port, shared with its other frontends.
    fn affinity(&mut self, f: &Frontend, timeout: u32) -> String {
        let key = f.key.to_string();
        let timeout_text = timeout.to_string();
        let protocol = protocol_name(f.key.protocol());
        let mut sticky = Vec::with_capacity(f.backends.len());
        for backend in &f.backends {
            let b = backend_text(backend);
            let name = chain_name(
                STICKY_CHAIN_PREFIX,
                &[&f.service, protocol, &timeout_text, &b],
                [],
            );
            *self.spread_users.sticky.entry(name.clone()).or_insert(0) += 1;
            self.affinity_sets.insert(affinity_set_of(&name), timeout);
            self.chains.insert(
                name.clone(),
                SvcChain::Sticky {
                    protocol: f.key.protocol(),
                    backend: *backend,
                },
            );
            sticky.push(name);
        }
        let mut labels: Vec<String> = vec![key, timeout_text];
        labels.extend(f.backends.iter().map(backend_text));
        let label_refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        let name = chain_name(AFFINITY_CHAIN_PREFIX, &label_refs, []);
        self.chains
            .insert(name.clone(), SvcChain::Affinity { sticky });
        name
    }

    /// The model as a listing reads it back ([`crate::table::from_nft_json`]): every chain by its
    /// name only.
    pub fn listed(&self) -> ServiceModel {
        let mut out = self.clone();
        for body in out.chains.values_mut() {
            *body = SvcChain::Adopted;
        }
        out
    }

    /// Every element, grouped by the set or map that holds it (in [`crate::names::SVC_SETS`]
    /// order within each kind).
    pub fn elements(&self) -> impl Iterator<Item = SvcElement> + '_ {
        let frontends = self
            .frontends
            .iter()
            .map(|(key, chain)| SvcElement::Frontend {
                key: *key,
                chain: chain.to_string(),
            });
        let backends = self.backends.iter().flat_map(|(key, list)| {
            (0u32..)
                .zip(list.iter())
                .map(|(slot, backend)| SvcElement::Backend {
                    key: *key,
                    slot,
                    backend: *backend,
                })
        });
        frontends
            .chain(backends)
            .chain(self.reject.iter().map(|k| SvcElement::Reject(*k)))
            .chain(self.masquerade.iter().map(|k| SvcElement::Masquerade(*k)))
            .chain(self.inside.iter().map(|(s, e)| SvcElement::Inside(*s, *e)))
            .chain(self.hairpin.iter().map(|a| SvcElement::Hairpin(*a)))
            .chain(self.lb_addresses.iter().map(|a| SvcElement::LbAddress(*a)))
            .chain(self.node_address.map(SvcElement::SnatTo))
            .chain(
                self.snat_backends
                    .iter()
                    .map(|a| SvcElement::SnatBackend(*a)),
            )
    }
}

/// The lines of a Services chain's rules, as `nft -f` reads them (and `nft list` prints them).
pub fn chain_rules(name: &str, body: &SvcChain) -> Vec<String> {
    match body {
        SvcChain::Spread { count } => vec![format!(
            "dnat ip to ip daddr . meta l4proto . th dport . numgen random mod {count} map @{SVC_BACKENDS}"
        )],
        SvcChain::NodeSpread { count } => vec![format!(
            "dnat ip to meta l4proto . th dport . numgen random mod {count} map @{SVC_NODEPORT_BACKENDS}"
        )],
        SvcChain::Affinity { sticky } => {
            let mut out: Vec<String> = sticky
                .iter()
                .map(|se| format!("ip saddr @{} goto {se}", affinity_set_of(se)))
                .collect();
            let picks: Vec<String> = sticky
                .iter()
                .enumerate()
                .map(|(i, se)| format!("{i} : goto {se}"))
                .collect();
            out.push(format!(
                "numgen random mod {} vmap {{ {} }}",
                sticky.len(),
                picks.join(", ")
            ));
            out
        }
        SvcChain::Sticky {
            protocol,
            backend: (addr, port),
        } => vec![
            format!("update @{} {{ ip saddr }}", affinity_set_of(name)),
            format!(
                "meta l4proto {} dnat ip to {addr}:{port}",
                protocol_name(*protocol)
            ),
        ],
        SvcChain::Adopted => Vec::new(),
    }
}

/// The type line of each Services set or map, as `nft -f` declares it.
pub fn set_declaration(set: &str) -> &'static str {
    match set {
        SVC_DISPATCH => "type ipv4_addr . inet_proto . inet_service : verdict",
        SVC_NODEPORTS => "type inet_proto . inet_service : verdict",
        SVC_BACKENDS => {
            "typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport"
        }
        SVC_NODEPORT_BACKENDS => {
            "typeof meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport"
        }
        SVC_REJECT | SVC_MASQUERADE => "type ipv4_addr . inet_proto . inet_service",
        SVC_NODEPORT_REJECT | SVC_NODEPORT_MASQUERADE => "type inet_proto . inet_service",
        SVC_INSIDE => "type ipv4_addr\n\t\tflags interval",
        SVC_HAIRPIN => "type ipv4_addr . ipv4_addr",
        SVC_SNAT_TO => "type mark : ipv4_addr",
        _ => "type ipv4_addr",
    }
}

/// The NodePort test of a rule: a local destination other than loopback.
const LOCAL_DESTINATION: &str = "ip daddr != 127.0.0.0/8 fib daddr type local";

/// The base chains of the Services part, as `nft -f` text (each `\tchain … {…}`), with the
/// refusal sample chains when refusals are sampled.
pub fn base_chains_text(sampling: Option<&RefusalSampling>) -> String {
    let mut out = String::new();
    if let Some(s) = sampling {
        s.chains_text(&mut out);
    }
    let mark = format!("meta mark set meta mark | 0x{SVC_MASQUERADE_MARK:08x}");
    for (chain, hook, priority) in [
        (SVC_PREROUTING, "prerouting", "dstnat"),
        (SVC_OUTPUT, "output", "-100"),
    ] {
        let _ = write!(
            out,
            "\tchain {chain} {{\n\t\ttype nat hook {hook} priority {priority}; policy accept;\n\
             \t\tip daddr . meta l4proto . th dport @{SVC_MASQUERADE} ip saddr != @{SVC_INSIDE} {mark}\n\
             \t\t{LOCAL_DESTINATION} meta l4proto . th dport @{SVC_NODEPORT_MASQUERADE} {mark}\n\
             \t\tip daddr . meta l4proto . th dport vmap @{SVC_DISPATCH}\n\
             \t\t{LOCAL_DESTINATION} meta l4proto . th dport vmap @{SVC_NODEPORTS}\n\t}}\n"
        );
    }
    let marked = format!("meta mark & 0x{SVC_MASQUERADE_MARK:08x} == 0x{SVC_MASQUERADE_MARK:08x}");
    // The node's address from `svc_snat_to` when it holds one (no element: the lookup fails
    // and the next rule masquerades).
    let _ = write!(
        out,
        "\tchain {SVC_POSTROUTING} {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\t{marked} snat ip to meta mark & 0x{SVC_MASQUERADE_MARK:08x} map @{SVC_SNAT_TO}\n\
         \t\t{marked} masquerade\n\
         \t\tct status dnat ip saddr . ip daddr @{SVC_HAIRPIN} masquerade\n\
         \t\tct status dnat ip saddr != @{SVC_INSIDE} ip daddr @{SVC_SNAT_BACKENDS} masquerade\n\t}}\n"
    );
    let reject = |out: &mut String, test: &str, sample_chain: &str| {
        if sampling.is_some() {
            let _ = writeln!(out, "\t\t{test} jump {sample_chain}");
        }
        let _ = write!(
            out,
            "\t\t{test} meta l4proto tcp reject with tcp reset\n\t\t{test} reject\n"
        );
    };
    // Frontends at an address: on prerouting (what arrives, routed or not) and output; NodePorts
    // (local destinations only) on input.
    for (chain, hook, priority) in [
        (SVC_REJECT_PREROUTING, "prerouting", "dstnat - 10"),
        (SVC_REJECT_INPUT, "input", "filter - 10"),
        (SVC_REJECT_OUTPUT, "output", "filter - 10"),
    ] {
        let _ = writeln!(
            out,
            "\tchain {chain} {{\n\t\ttype filter hook {hook} priority {priority}; policy accept;"
        );
        if chain != SVC_REJECT_INPUT {
            reject(
                &mut out,
                &format!("ip daddr . meta l4proto . th dport @{SVC_REJECT}"),
                crate::names::SVC_REFUSED_EGRESS,
            );
        } else {
            reject(
                &mut out,
                &format!("{LOCAL_DESTINATION} meta l4proto . th dport @{SVC_NODEPORT_REJECT}"),
                crate::names::SVC_REFUSED_INGRESS,
            );
            let _ = writeln!(
                out,
                "\t\tip daddr @{SVC_LB_ADDRESSES} meta l4proto != icmp drop"
            );
        }
        out.push_str("\t}\n");
    }
    out
}

/// The `nft -f` text of [`crate::TableOp::AddServiceBase`]: the Services part's sets and maps,
/// empty, and its base chains, added to the existing `table inet seam` (nothing else of the table
/// changes). Why text: the base chains' rules (`fib`, `reject`, `masquerade`, mark arithmetic)
/// have no netlink encoding here; the part is added once per table, and empty it translates
/// nothing, so it may go in its own transaction before the batch that fills it.
pub fn base_text() -> String {
    let mut out = format!("table {} {{\n", crate::names::TABLE);
    render(
        &ServiceModel {
            enabled: true,
            ..ServiceModel::default()
        },
        &mut out,
    );
    out.push_str("}\n");
    out
}

/// The Services part of a whole-table write (inside `table inet seam { … }`): nothing when it is
/// not enabled.
pub fn render(model: &ServiceModel, out: &mut String) {
    if !model.enabled {
        return;
    }
    let mut by_set: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for e in model.elements() {
        by_set.entry(e.set()).or_default().push(e.to_string());
    }
    for set in crate::names::SVC_SETS {
        let kind = if set_declaration(set).contains(':') {
            "map"
        } else {
            "set"
        };
        let _ = writeln!(out, "\t{kind} {set} {{\n\t\t{}", set_declaration(set));
        if let Some(items) = by_set.get(set) {
            let _ = writeln!(out, "\t\telements = {{ {} }}", items.join(", "));
        }
        out.push_str("\t}\n");
    }
    for (name, timeout) in &model.affinity_sets {
        let _ = writeln!(
            out,
            "\tset {name} {{\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout {timeout}s\n\t}}"
        );
    }
    // `se_` chains before the `sa_` chains that go to them (nft resolves names in one pass
    // either way; the order is for the reader).
    let mut chains: Vec<(&String, &SvcChain)> = model.chains.iter().collect();
    chains.sort_by_key(|(n, _)| (n.starts_with(AFFINITY_CHAIN_PREFIX), n.as_str()));
    for (name, body) in chains {
        let _ = writeln!(out, "\tchain {name} {{");
        for rule in chain_rules(name, body) {
            let _ = writeln!(out, "\t\t{rule}");
        }
        out.push_str("\t}\n");
    }
    out.push_str(&base_chains_text(model.refusal_sampling.as_ref()));
}

/// Appends `elements` of `set_a` minus `set_b` of a sorted walk: what `old` has that `new` has
/// not (`gone`) and the reverse (`added`), for two sorted sets.
fn set_difference<T: Ord + Copy>(
    old: &BTreeSet<T>,
    new: &BTreeSet<T>,
    wrap: impl Fn(T) -> SvcElement,
    gone: &mut Vec<SvcElement>,
    added: &mut Vec<SvcElement>,
) {
    if old == new {
        return;
    }
    gone.extend(old.difference(new).map(|k| wrap(*k)));
    added.extend(new.difference(old).map(|k| wrap(*k)));
}

/// The same for the frontends' chains: a key whose chain changed is deleted and added again (the
/// kernel refuses to add an existing key with other data). One walk; the frontends of a model
/// updated from the other share their chains' names, so most compare by pointer.
fn map_difference<K: Ord + Copy>(
    old: &BTreeMap<K, Arc<str>>,
    new: &BTreeMap<K, Arc<str>>,
    wrap: impl Fn(K, &Arc<str>) -> SvcElement,
    gone: &mut Vec<SvcElement>,
    added: &mut Vec<SvcElement>,
) {
    for (k, before, now) in crate::table::paired(old, new) {
        let same = match (before, now) {
            (Some(b), Some(n)) => Arc::ptr_eq(b, n) || b == n,
            _ => false,
        };
        if same {
            continue;
        }
        if let Some(v) = before {
            gone.push(wrap(*k, v));
        }
        if let Some(v) = now {
            added.push(wrap(*k, v));
        }
    }
}

/// The backends' elements that differ, slot by slot, of the frontends whose backends changed.
fn backend_difference(
    old: &BTreeMap<FrontendKey, Arc<[(Ipv4Addr, u16)]>>,
    new: &BTreeMap<FrontendKey, Arc<[(Ipv4Addr, u16)]>>,
    gone: &mut Vec<SvcElement>,
    added: &mut Vec<SvcElement>,
) {
    let none: &[(Ipv4Addr, u16)] = &[];
    for (key, before, now) in crate::table::paired(old, new) {
        let (before, now) = (before.map_or(none, |b| &**b), now.map_or(none, |n| &**n));
        if std::ptr::eq(before, now) || before == now {
            continue;
        }
        for slot in 0..before.len().max(now.len()) {
            let (b, n) = (before.get(slot), now.get(slot));
            if b == n {
                continue;
            }
            let slot = u32::try_from(slot).unwrap_or(u32::MAX);
            if let Some(backend) = b {
                gone.push(SvcElement::Backend {
                    key: *key,
                    slot,
                    backend: *backend,
                });
            }
            if let Some(backend) = n {
                added.push(SvcElement::Backend {
                    key: *key,
                    slot,
                    backend: *backend,
                });
            }
        }
    }
}

/// A slot deleted in the middle of a batch (a changed backend: deleted, then added again).
const NO_BACKEND: (Ipv4Addr, u16) = (Ipv4Addr::UNSPECIFIED, 0);

/// The order Services chains are created in (what is gone to first) and deleted in (the
/// reverse): `se_`, then `sa_` and the shared chains.
fn creation_rank(name: &str) -> u8 {
    u8::from(!name.starts_with(STICKY_CHAIN_PREFIX))
}

/// The in-place change of the Services part from `old` (what the kernel holds) to `new`:
/// appended to the switch batch (new affinity sets and chains, then element deletions, then
/// element additions) and to the cleanup batch (chains and sets nothing refers to any more).
pub(crate) fn delta(
    old: &ServiceModel,
    new: &ServiceModel,
    switch: &mut Vec<crate::TableOp>,
    cleanup: &mut Vec<crate::TableOp>,
) {
    use crate::TableOp;
    if !old.enabled && new.enabled {
        switch.push(TableOp::AddServiceBase);
    }
    for (name, timeout) in &new.affinity_sets {
        if !old.affinity_sets.contains_key(name) {
            switch.push(TableOp::AddAffinitySet {
                name: name.clone(),
                timeout: *timeout,
            });
        }
    }
    let mut fresh: Vec<(&String, &SvcChain)> = new
        .chains
        .iter()
        .filter(|(name, _)| !old.chains.contains_key(*name))
        .collect();
    fresh.sort_by_key(|(name, _)| creation_rank(name));
    switch.extend(fresh.into_iter().map(|(name, chain)| TableOp::AddSvcChain {
        name: name.clone(),
        chain: chain.clone(),
    }));
    if new.enabled {
        // A part that did not exist holds nothing: `old`'s elements are not in the kernel.
        let empty = ServiceModel::default();
        let old = if old.enabled { old } else { &empty };
        let (mut gone, mut added) = (Vec::new(), Vec::new());
        map_difference(
            &old.frontends,
            &new.frontends,
            |key, chain| SvcElement::Frontend {
                key,
                chain: chain.to_string(),
            },
            &mut gone,
            &mut added,
        );
        backend_difference(&old.backends, &new.backends, &mut gone, &mut added);
        set_difference(
            &old.reject,
            &new.reject,
            SvcElement::Reject,
            &mut gone,
            &mut added,
        );
        set_difference(
            &old.masquerade,
            &new.masquerade,
            SvcElement::Masquerade,
            &mut gone,
            &mut added,
        );
        if old.inside != new.inside {
            let (before, now): (BTreeSet<_>, BTreeSet<_>) = (
                old.inside.iter().copied().collect(),
                new.inside.iter().copied().collect(),
            );
            set_difference(
                &before,
                &now,
                |(s, e)| SvcElement::Inside(s, e),
                &mut gone,
                &mut added,
            );
        }
        set_difference(
            &old.hairpin,
            &new.hairpin,
            SvcElement::Hairpin,
            &mut gone,
            &mut added,
        );
        set_difference(
            &old.lb_addresses,
            &new.lb_addresses,
            SvcElement::LbAddress,
            &mut gone,
            &mut added,
        );
        if old.node_address != new.node_address {
            gone.extend(old.node_address.map(SvcElement::SnatTo));
            added.extend(new.node_address.map(SvcElement::SnatTo));
        }
        set_difference(
            &old.snat_backends,
            &new.snat_backends,
            SvcElement::SnatBackend,
            &mut gone,
            &mut added,
        );
        if !gone.is_empty() {
            switch.push(TableOp::DeleteSvcElements { elements: gone });
        }
        if !added.is_empty() {
            switch.push(TableOp::AddSvcElements { elements: added });
        }
    }
    if old.enabled && !new.enabled {
        cleanup.push(TableOp::DeleteServiceBase);
    }
    let mut stale: Vec<&String> = old
        .chains
        .keys()
        .filter(|name| !new.chains.contains_key(*name))
        .collect();
    stale.sort_by_key(|name| std::cmp::Reverse(creation_rank(name)));
    cleanup.extend(
        stale
            .into_iter()
            .map(|name| TableOp::DeleteChain { name: name.clone() }),
    );
    cleanup.extend(
        old.affinity_sets
            .keys()
            .filter(|name| !new.affinity_sets.contains_key(*name))
            .map(|name| TableOp::DeleteSet { name: name.clone() }),
    );
}

impl ServiceModel {
    /// Applies one operation of a batch to the Services part as a listing shows it; `Ok(false)`
    /// when the operation is not about the Services part (a policy one).
    pub(crate) fn apply_op(&mut self, op: &crate::TableOp) -> Result<bool, BatchError> {
        use crate::TableOp;
        // The shared chains' users are counted again by the next `update`.
        self.spread_users.known = false;
        match op {
            TableOp::AddServiceBase => self.enabled = true,
            TableOp::DeleteServiceBase => {
                if !self.enabled {
                    return Err(missing("chain", SVC_PREROUTING));
                }
                *self = ServiceModel {
                    chains: std::mem::take(&mut self.chains),
                    affinity_sets: std::mem::take(&mut self.affinity_sets),
                    ..ServiceModel::default()
                };
            }
            TableOp::AddSvcElements { elements } => {
                for e in elements {
                    self.add_element(e)?;
                }
            }
            TableOp::DeleteSvcElements { elements } => {
                for e in elements {
                    self.delete_element(e)?;
                }
            }
            TableOp::AddAffinitySet { name, timeout } => {
                self.affinity_sets.entry(name.clone()).or_insert(*timeout);
            }
            TableOp::AddSvcChain { name, chain } => {
                match chain {
                    SvcChain::Affinity { sticky } => {
                        for se in sticky {
                            self.has_chain(se)?;
                            if !self.affinity_sets.contains_key(&affinity_set_of(se)) {
                                return Err(missing("set", affinity_set_of(se)));
                            }
                        }
                    }
                    SvcChain::Sticky { .. } => {
                        if !self.affinity_sets.contains_key(&affinity_set_of(name)) {
                            return Err(missing("set", affinity_set_of(name)));
                        }
                    }
                    SvcChain::Spread { .. } | SvcChain::NodeSpread { .. } | SvcChain::Adopted => {}
                }
                self.chains.entry(name.clone()).or_insert(SvcChain::Adopted);
            }
            TableOp::DeleteChain { name } if self.chains.contains_key(name) => {
                self.chains.remove(name);
            }
            TableOp::DeleteSet { name } if self.affinity_sets.contains_key(name) => {
                self.affinity_sets.remove(name);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn has_chain(&self, name: &str) -> Result<(), BatchError> {
        if self.chains.contains_key(name) {
            Ok(())
        } else {
            Err(missing("chain", name))
        }
    }

    fn add_element(&mut self, e: &SvcElement) -> Result<(), BatchError> {
        if !self.enabled {
            return Err(missing("set", e.set()));
        }
        let busy = || BatchError::Busy {
            name: format!("{} {e}", e.set()),
        };
        match e {
            SvcElement::Frontend { key, chain } => {
                self.has_chain(chain)?;
                match self.frontends.get(key) {
                    Some(c) if **c != **chain => return Err(busy()),
                    _ => {
                        self.frontends.insert(*key, Arc::from(chain.as_str()));
                    }
                }
            }
            SvcElement::Backend { key, slot, backend } => {
                let list = self.backends.entry(*key).or_insert_with(|| Arc::from([]));
                let mut v = list.to_vec();
                let slot = usize::try_from(*slot).unwrap_or(usize::MAX);
                let len = v.len();
                match v.get_mut(slot) {
                    Some(b) if *b == NO_BACKEND => *b = *backend,
                    Some(b) if b != backend => return Err(busy()),
                    Some(_) => {}
                    None if slot == len => v.push(*backend),
                    // A slot past the end: the kernel would take it; the model holds slots
                    // `0..N` only, as Seam writes them.
                    None => return Err(busy()),
                }
                *list = v.into();
            }
            SvcElement::Reject(key) => {
                self.reject.insert(*key);
            }
            SvcElement::Masquerade(key) => {
                self.masquerade.insert(*key);
            }
            SvcElement::Inside(s, e) => {
                if self.inside.iter().any(|(a, b)| a <= e && s <= b) {
                    if !self.inside.contains(&(*s, *e)) {
                        return Err(busy());
                    }
                } else {
                    self.inside.push((*s, *e));
                    self.inside.sort_unstable();
                }
            }
            SvcElement::Hairpin(a) => {
                self.hairpin.insert(*a);
            }
            SvcElement::LbAddress(a) => {
                self.lb_addresses.insert(*a);
            }
            SvcElement::SnatTo(a) => match self.node_address {
                Some(b) if b != *a => return Err(busy()),
                _ => self.node_address = Some(*a),
            },
            SvcElement::SnatBackend(a) => {
                self.snat_backends.insert(*a);
            }
        }
        Ok(())
    }

    fn delete_element(&mut self, e: &SvcElement) -> Result<(), BatchError> {
        if !self.enabled {
            return Err(missing("set", e.set()));
        }
        let found = match e {
            SvcElement::Frontend { key, .. } => self.frontends.remove(key).is_some(),
            SvcElement::Backend { key, slot, .. } => {
                let slot = usize::try_from(*slot).unwrap_or(usize::MAX);
                match self.backends.get_mut(key) {
                    Some(list) if slot < list.len() && list[slot] != NO_BACKEND => {
                        let mut v = list.to_vec();
                        v[slot] = NO_BACKEND;
                        while v.last() == Some(&NO_BACKEND) {
                            v.pop();
                        }
                        if v.is_empty() {
                            self.backends.remove(key);
                        } else {
                            *list = v.into();
                        }
                        true
                    }
                    _ => false,
                }
            }
            SvcElement::Reject(key) => self.reject.remove(key),
            SvcElement::Masquerade(key) => self.masquerade.remove(key),
            SvcElement::Inside(s, e) => {
                let before = self.inside.len();
                self.inside.retain(|r| *r != (*s, *e));
                self.inside.len() != before
            }
            SvcElement::Hairpin(a) => self.hairpin.remove(a),
            SvcElement::LbAddress(a) => self.lb_addresses.remove(a),
            SvcElement::SnatTo(a) => {
                let found = self.node_address == Some(*a);
                if found {
                    self.node_address = None;
                }
                found
            }
            SvcElement::SnatBackend(a) => self.snat_backends.remove(a),
        };
        if found {
            Ok(())
        } else {
            Err(missing("element", format!("{} {e}", e.set())))
        }
    }
}

/// What a listing holds of the Services part, as [`crate::table::from_nft_json`] collects it.
#[derive(Debug, Default)]
pub(crate) struct Listed {
    model: ServiceModel,
    /// The backends' elements by frontend and slot, until [`Listed::finish`] makes the lists.
    slots: BTreeMap<(FrontendKey, u32), (Ipv4Addr, u16)>,
    sets: BTreeSet<String>,
    base: BTreeSet<String>,
    /// Refusal sample chains listed, and what their rules say.
    refusal_chains: usize,
    refusal: Option<RefusalSampling>,
    refusal_rate: Option<u32>,
}

fn json_str(v: &serde_json::Value) -> Option<&str> {
    v.as_str()
}

fn json_addr(v: &serde_json::Value) -> Option<Ipv4Addr> {
    v.as_str()?.parse().ok()
}

fn json_port(v: &serde_json::Value) -> Option<u16> {
    u16::try_from(v.as_u64()?).ok()
}

fn json_protocol(v: &serde_json::Value) -> Option<PortProtocol> {
    match v {
        serde_json::Value::Number(n) => parse_protocol(&n.to_string()),
        _ => parse_protocol(v.as_str()?),
    }
}

/// The items of a `{"concat": [...]}`.
fn concat(v: &serde_json::Value) -> Option<&[serde_json::Value]> {
    Some(v.get("concat")?.as_array()?.as_slice())
}

/// A frontend key from the items of a concatenation (address, protocol, port; or protocol,
/// port); returns it with what follows.
fn json_key(
    items: &[serde_json::Value],
    node_port: bool,
) -> Option<(FrontendKey, &[serde_json::Value])> {
    if node_port {
        let [protocol, port, rest @ ..] = items else {
            return None;
        };
        Some((
            FrontendKey::NodePort {
                protocol: json_protocol(protocol)?,
                port: json_port(port)?,
            },
            rest,
        ))
    } else {
        let [addr, protocol, port, rest @ ..] = items else {
            return None;
        };
        Some((
            FrontendKey::Address {
                addr: json_addr(addr)?,
                protocol: json_protocol(protocol)?,
                port: json_port(port)?,
            },
            rest,
        ))
    }
}

fn elements(set: &serde_json::Value) -> &[serde_json::Value] {
    set.get("elem")
        .and_then(serde_json::Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The element itself, without the `{"elem": {"val": …, "timeout": …}}` wrapper nft puts
/// around an element that carries more than its value.
fn bare(v: &serde_json::Value) -> &serde_json::Value {
    v.get("elem").and_then(|e| e.get("val")).unwrap_or(v)
}

impl Listed {
    /// Reads a chain of the listing; `None` when the name is not one of the Services part.
    pub(crate) fn chain(&mut self, name: &str) -> Option<()> {
        if crate::names::SVC_BASE_CHAINS.contains(&name) {
            self.base.insert(name.to_string());
        } else if crate::names::SVC_REFUSED_CHAINS.contains(&name) {
            self.refusal_chains += 1;
        } else if crate::names::SVC_CHAIN_PREFIXES
            .iter()
            .any(|p| name.starts_with(p))
        {
            self.model
                .chains
                .insert(name.to_string(), SvcChain::Adopted);
        } else {
            return None;
        }
        Some(())
    }

    /// Reads a rule of the listing: the refusal sample chains' say how refusals are sampled.
    pub(crate) fn rule(&mut self, rule: &serde_json::Value) {
        let chain = rule.get("chain").and_then(serde_json::Value::as_str);
        if chain != Some(crate::names::SVC_REFUSED_EGRESS) {
            return;
        }
        if let Some(s) = RefusalSampling::from_rule(rule) {
            self.refusal = Some(s);
        } else if let Some(rate) = RefusalSampling::rate_of(rule) {
            self.refusal_rate = Some(rate);
        }
    }

    /// Whether a set or map of this name belongs to the Services part.
    pub(crate) fn owns_set(name: &str) -> bool {
        crate::names::SVC_SETS.contains(&name) || name.starts_with(AFFINITY_SET_PREFIX)
    }

    /// Reads a set or map of the Services part (see [`Listed::owns_set`]); `None` when it cannot.
    pub(crate) fn set(&mut self, name: &str, set: &serde_json::Value) -> Option<()> {
        if name.starts_with(AFFINITY_SET_PREFIX) {
            let timeout = u32::try_from(set.get("timeout")?.as_u64()?).ok()?;
            self.model.affinity_sets.insert(name.to_string(), timeout);
            return Some(());
        }
        let m = &mut self.model;
        let node_port = matches!(
            name,
            SVC_NODEPORTS | SVC_NODEPORT_BACKENDS | SVC_NODEPORT_REJECT | SVC_NODEPORT_MASQUERADE
        );
        for e in elements(set) {
            match name {
                SVC_DISPATCH | SVC_NODEPORTS => {
                    let [key, target] = e.as_array()?.as_slice() else {
                        return None;
                    };
                    let (key, []) = json_key(concat(bare(key))?, node_port)? else {
                        return None;
                    };
                    let chain = json_str(target.get("goto")?.get("target")?)?;
                    m.frontends.insert(key, Arc::from(chain));
                }
                SVC_BACKENDS | SVC_NODEPORT_BACKENDS => {
                    let [key, data] = e.as_array()?.as_slice() else {
                        return None;
                    };
                    let (key, [slot]) = json_key(concat(bare(key))?, node_port)? else {
                        return None;
                    };
                    let slot = u32::try_from(slot.as_u64()?).ok()?;
                    let [addr, port] = concat(data)? else {
                        return None;
                    };
                    self.slots
                        .insert((key, slot), (json_addr(addr)?, json_port(port)?));
                }
                SVC_REJECT | SVC_NODEPORT_REJECT | SVC_MASQUERADE | SVC_NODEPORT_MASQUERADE => {
                    let (key, []) = json_key(concat(bare(e))?, node_port)? else {
                        return None;
                    };
                    if matches!(name, SVC_REJECT | SVC_NODEPORT_REJECT) {
                        m.reject.insert(key);
                    } else {
                        m.masquerade.insert(key);
                    }
                }
                SVC_INSIDE => m.inside.push(crate::table::parse_range(bare(e))?),
                SVC_HAIRPIN => {
                    let [s, d] = concat(bare(e))? else {
                        return None;
                    };
                    let (s, d) = (json_addr(s)?, json_addr(d)?);
                    if s != d {
                        return None;
                    }
                    m.hairpin.insert(s);
                }
                SVC_LB_ADDRESSES => {
                    m.lb_addresses.insert(json_addr(bare(e))?);
                }
                SVC_SNAT_BACKENDS => {
                    m.snat_backends.insert(json_addr(bare(e))?);
                }
                SVC_SNAT_TO => {
                    let [mark, addr] = e.as_array()?.as_slice() else {
                        return None;
                    };
                    if bare(mark).as_u64()? != u64::from(SVC_MASQUERADE_MARK)
                        || m.node_address.is_some()
                    {
                        return None;
                    }
                    m.node_address = Some(json_addr(addr)?);
                }
                _ => return None,
            }
        }
        if name == SVC_INSIDE {
            m.inside.sort_unstable();
        }
        self.sets.insert(name.to_string());
        Some(())
    }

    /// The Services part read: disabled when none of its sets and base chains are there,
    /// `None` when only some are (not a table this renderer made).
    pub(crate) fn finish(self) -> Option<ServiceModel> {
        let (sets, base) = (self.sets.len(), self.base.len());
        let mut model = self.model;
        // Slots `0..N` of each frontend, in order; a gap is no table Seam wrote.
        let mut lists: BTreeMap<FrontendKey, Vec<(Ipv4Addr, u16)>> = BTreeMap::new();
        for ((key, slot), backend) in self.slots {
            let list = lists.entry(key).or_default();
            if usize::try_from(slot).ok()? != list.len() {
                return None;
            }
            list.push(backend);
        }
        model.backends = lists.into_iter().map(|(k, v)| (k, v.into())).collect();
        if sets == 0 && base == 0 {
            return (model.chains.is_empty() && model.affinity_sets.is_empty())
                .then(ServiceModel::default);
        }
        if sets != crate::names::SVC_SETS.len() || base != crate::names::SVC_BASE_CHAINS.len() {
            return None;
        }
        model.enabled = true;
        // Both sample chains with both their rules, or neither (else: another layout, written
        // whole).
        model.refusal_sampling = match (self.refusal_chains, self.refusal, self.refusal_rate) {
            (0, None, None) => None,
            (2, Some(s), Some(rate)) => Some(RefusalSampling { rate, ..s }),
            _ => return None,
        };
        Some(model)
    }
}

#[cfg(test)]
mod update_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn addr(ip: &str, port: u16) -> FrontendKey {
        FrontendKey::Address {
            addr: a(ip),
            protocol: PortProtocol::Tcp,
            port,
        }
    }

    pub(crate) fn sample() -> DesiredServices {
        let web = vec![
            (a("10.1.0.5"), 8080),
            (a("10.1.0.6"), 8080),
            (a("10.1.1.7"), 8080),
        ];
        DesiredServices {
            frontends: vec![
                Frontend {
                    key: addr("10.96.0.10", 80),
                    service: "default/web:http".into(),
                    backends: web.clone(),
                    affinity_timeout: None,
                    masquerade_outside: false,
                },
                Frontend {
                    key: addr("10.96.0.11", 80),
                    service: "default/sticky:http".into(),
                    backends: web[..2].to_vec(),
                    affinity_timeout: Some(10),
                    masquerade_outside: false,
                },
                Frontend {
                    key: FrontendKey::Address {
                        addr: a("10.96.0.12"),
                        protocol: PortProtocol::Udp,
                        port: 53,
                    },
                    service: "default/empty:dns".into(),
                    backends: Vec::new(),
                    affinity_timeout: None,
                    masquerade_outside: false,
                },
                Frontend {
                    key: FrontendKey::NodePort {
                        protocol: PortProtocol::Tcp,
                        port: 30080,
                    },
                    service: "default/web:http".into(),
                    backends: web,
                    affinity_timeout: None,
                    masquerade_outside: true,
                },
            ],
            hairpin: [a("10.1.0.5")].into(),
            segment_subnets: [
                "10.1.0.0/24".parse().unwrap(),
                "10.1.1.0/24".parse().unwrap(),
            ]
            .into(),
            lb_addresses: [a("192.0.2.10")].into(),
            node_address: Some(a("192.168.0.1")),
            snat_backends: [a("203.0.113.5")].into(),
        }
    }

    #[test]
    fn frontends_become_elements_and_shared_chains() {
        let m = ServiceModel::from_desired(&sample());
        assert!(m.enabled);
        assert_eq!(&*m.frontends[&addr("10.96.0.10", 80)], "m_3");
        assert_eq!(
            m.backends[&addr("10.96.0.10", 80)][2],
            (a("10.1.1.7"), 8080)
        );
        let np = FrontendKey::NodePort {
            protocol: PortProtocol::Tcp,
            port: 30080,
        };
        assert_eq!(&*m.frontends[&np], "n_3");
        assert!(m.masquerade.contains(&np));
        assert_eq!(m.inside, vec![(a("10.1.0.0"), a("10.1.1.255"))]);
        assert_eq!(m.reject.len(), 1);
        // Affinity: one sa_ chain, a se_ chain and an aff_ set per backend.
        let sa = &m.frontends[&addr("10.96.0.11", 80)];
        assert!(sa.starts_with("sa_"));
        let SvcChain::Affinity { sticky } = &m.chains[&**sa] else {
            panic!("not an affinity chain")
        };
        assert_eq!(sticky.len(), 2);
        assert_eq!(m.affinity_sets[&affinity_set_of(&sticky[0])], 10);
        assert_eq!(
            chain_rules(&sticky[1], &m.chains[&sticky[1]]),
            [
                format!("update @{} {{ ip saddr }}", affinity_set_of(&sticky[1])),
                "meta l4proto tcp dnat ip to 10.1.0.6:8080".to_string()
            ]
        );
        // Affinity frontends have no slots in svc_backends.
        assert!(!m.backends.contains_key(&addr("10.96.0.11", 80)));
    }

    fn table(desired: &DesiredServices) -> crate::table::TableModel {
        crate::table::TableModel {
            services: ServiceModel::from_desired(desired),
            ..Default::default()
        }
    }

    /// Applies `delta(old, new)` to `old` as listed and checks it lists as `new`.
    fn check_delta(
        old: &crate::table::TableModel,
        new: &crate::table::TableModel,
    ) -> crate::FirewallDelta {
        let d = crate::table::delta(old, new);
        let mut t = old.listed();
        t.apply_batch(&d.switch).unwrap();
        t.apply_batch(&d.cleanup).unwrap();
        assert_eq!(t, new.listed());
        d
    }

    #[test]
    fn the_first_services_add_the_base_then_their_elements() {
        let old = crate::table::TableModel::default();
        let new = table(&sample());
        let d = check_delta(&old, &new);
        assert_eq!(d.switch[0], crate::TableOp::AddServiceBase);
        // And back: the base goes, then the chains and sets nothing refers to.
        let d = check_delta(&new, &old);
        assert_eq!(d.cleanup[0], crate::TableOp::DeleteServiceBase);
        assert!(d.switch.is_empty());
    }

    #[test]
    fn an_endpoint_change_touches_only_that_services_elements() {
        let mut desired = sample();
        let old = table(&desired);
        desired.frontends[0].backends[1] = (a("10.1.0.9"), 8080);
        let new = table(&desired);
        let d = check_delta(&old, &new);
        assert!(d.cleanup.is_empty());
        let key = addr("10.96.0.10", 80);
        assert_eq!(
            d.switch,
            [
                crate::TableOp::DeleteSvcElements {
                    elements: vec![SvcElement::Backend {
                        key,
                        slot: 1,
                        backend: (a("10.1.0.6"), 8080)
                    }]
                },
                crate::TableOp::AddSvcElements {
                    elements: vec![SvcElement::Backend {
                        key,
                        slot: 1,
                        backend: (a("10.1.0.9"), 8080)
                    }]
                },
            ]
        );
    }

    #[test]
    fn a_new_backend_count_moves_the_frontend_to_its_chain() {
        let mut desired = sample();
        let old = table(&desired);
        desired.frontends[0].backends.push((a("10.1.1.8"), 8080));
        let new = table(&desired);
        let d = check_delta(&old, &new);
        // m_4 is made; m_3 goes, as no other frontend at an address has 3 backends (the
        // NodePort's chain is n_3).
        assert_eq!(
            d.switch[0],
            crate::TableOp::AddSvcChain {
                name: "m_4".into(),
                chain: SvcChain::Spread { count: 4 }
            }
        );
        assert_eq!(
            d.cleanup,
            [crate::TableOp::DeleteChain { name: "m_3".into() }]
        );
    }

    #[test]
    fn the_frontends_of_one_service_port_share_its_affinity() {
        // The sticky Service's port also at an external IP and a NodePort (eTP Local: one
        // backend of the two), and another Service with the same backends.
        let mut desired = sample();
        let sticky = desired.frontends[1].clone();
        let also = |key, backends: &[(Ipv4Addr, u16)], service: &str| Frontend {
            key,
            service: service.into(),
            backends: backends.to_vec(),
            ..sticky.clone()
        };
        let node_port = FrontendKey::NodePort {
            protocol: PortProtocol::Tcp,
            port: 30011,
        };
        desired.frontends.extend([
            also(
                addr("192.0.2.11", 80),
                &sticky.backends,
                "default/sticky:http",
            ),
            also(node_port, &sticky.backends[..1], "default/sticky:http"),
            also(
                addr("10.96.0.13", 80),
                &sticky.backends,
                "default/other:http",
            ),
        ]);
        desired.frontends.sort_by_key(|f| f.key);
        let m = ServiceModel::from_desired(&desired);
        let se = |key: &FrontendKey| match &m.chains[&*m.frontends[key]] {
            SvcChain::Affinity { sticky } => sticky.clone(),
            other => panic!("{other:?}"),
        };
        // One client set per backend of the Service port, whichever frontend it came through.
        let cluster_ip = se(&addr("10.96.0.11", 80));
        assert_eq!(se(&addr("192.0.2.11", 80)), cluster_ip);
        assert_eq!(se(&node_port), cluster_ip[..1]);
        // Each frontend keeps its own `sa_` chain (its own backends).
        assert_ne!(
            m.frontends[&addr("10.96.0.11", 80)],
            m.frontends[&node_port]
        );
        // Another Service's clients are its own.
        let other = se(&addr("10.96.0.13", 80));
        assert!(other.iter().all(|s| !cluster_ip.contains(s)));
        assert_eq!(m.affinity_sets.len(), 4);

        // The external IP goes: the port's sets stay for the others; the NodePort goes too:
        // the first backend's set stays for the ClusterIP.
        let mut model = m.clone();
        model.update([(addr("192.0.2.11", 80), None)], &desired);
        assert_eq!(model.affinity_sets.len(), 4);
        model.update([(node_port, None)], &desired);
        assert!(model
            .affinity_sets
            .contains_key(&affinity_set_of(&cluster_ip[0])));
        // The ClusterIP goes last: its sets and chains go with it.
        model.update([(addr("10.96.0.11", 80), None)], &desired);
        assert_eq!(model.affinity_sets.len(), 2);
        assert!(!model.chains.contains_key(&cluster_ip[0]));
    }

    #[test]
    fn an_affinity_backend_added_keeps_the_others_clients() {
        let mut desired = sample();
        let old = table(&desired);
        desired.frontends[1].backends.push((a("10.1.1.7"), 8080));
        let new = table(&desired);
        let d = check_delta(&old, &new);
        // One new aff_ set and se_ chain, a new sa_ chain; the old sa_ goes, the old se_ stay.
        let sets = d
            .switch
            .iter()
            .filter(|op| matches!(op, crate::TableOp::AddAffinitySet { .. }))
            .count();
        assert_eq!(sets, 1);
        assert_eq!(d.cleanup.len(), 1);
        assert!(
            matches!(&d.cleanup[0], crate::TableOp::DeleteChain { name } if name.starts_with("sa_"))
        );
    }

    #[test]
    fn a_batch_naming_a_missing_chain_changes_nothing() {
        let mut t = table(&sample()).listed();
        let before = t.clone();
        let bad = [
            crate::TableOp::AddSvcElements {
                elements: vec![SvcElement::LbAddress(a("192.0.2.11"))],
            },
            crate::TableOp::AddSvcElements {
                elements: vec![SvcElement::Frontend {
                    key: addr("10.96.0.30", 80),
                    chain: "m_9".into(),
                }],
            },
        ];
        assert!(t.apply_batch(&bad).is_err());
        assert_eq!(t, before);
    }

    #[test]
    fn a_listing_is_read_back() {
        let json = r#"{"nftables": [
          {"map": {"family": "inet", "name": "egress_dispatch", "table": "seam", "type": "ipv4_addr", "map": "verdict"}},
          {"map": {"family": "inet", "name": "ingress_dispatch", "table": "seam", "type": "ipv4_addr", "map": "verdict"}},
          {"chain": {"family": "inet", "table": "seam", "name": "egress"}},
          {"chain": {"family": "inet", "table": "seam", "name": "ingress"}},
          {"map": {"family": "inet", "name": "svc_dispatch", "table": "seam", "type": ["ipv4_addr", "inet_proto", "inet_service"], "map": "verdict", "elem": [[{"concat": ["10.96.0.10", "tcp", 80]}, {"goto": {"target": "m_1"}}]]}},
          {"map": {"family": "inet", "name": "svc_nodeports", "table": "seam", "type": ["inet_proto", "inet_service"], "map": "verdict", "elem": [[{"concat": ["sctp", 30080]}, {"goto": {"target": "n_1"}}]]}},
          {"map": {"family": "inet", "name": "svc_backends", "table": "seam", "type": ["ipv4_addr", "inet_proto", "inet_service", "integer"], "map": "ipv4_addr . inet_service", "elem": [[{"concat": ["10.96.0.10", "tcp", 80, 0]}, {"concat": ["10.1.0.5", 8080]}]]}},
          {"map": {"family": "inet", "name": "svc_np_backends", "table": "seam", "type": ["inet_proto", "inet_service", "integer"], "map": "ipv4_addr . inet_service", "elem": [[{"concat": ["sctp", 30080, 0]}, {"concat": ["10.1.0.5", 8080]}]]}},
          {"set": {"family": "inet", "name": "svc_reject", "table": "seam", "type": ["ipv4_addr", "inet_proto", "inet_service"], "elem": [{"concat": ["10.96.0.12", "udp", 53]}]}},
          {"set": {"family": "inet", "name": "svc_np_reject", "table": "seam", "type": ["inet_proto", "inet_service"]}},
          {"set": {"family": "inet", "name": "svc_masq", "table": "seam", "type": ["ipv4_addr", "inet_proto", "inet_service"]}},
          {"set": {"family": "inet", "name": "svc_np_masq", "table": "seam", "type": ["inet_proto", "inet_service"], "elem": [{"concat": ["sctp", 30080]}]}},
          {"set": {"family": "inet", "name": "svc_inside", "table": "seam", "type": "ipv4_addr", "flags": ["interval"], "elem": [{"prefix": {"addr": "10.1.0.0", "len": 23}}]}},
          {"set": {"family": "inet", "name": "svc_hairpin", "table": "seam", "type": ["ipv4_addr", "ipv4_addr"], "elem": [{"concat": ["10.1.0.5", "10.1.0.5"]}]}},
          {"set": {"family": "inet", "name": "svc_lb_addresses", "table": "seam", "type": "ipv4_addr", "elem": ["192.0.2.10"]}},
          {"map": {"family": "inet", "name": "svc_snat_to", "table": "seam", "type": "mark", "map": "ipv4_addr", "elem": [[1048576, "192.168.0.1"]]}},
          {"set": {"family": "inet", "name": "svc_snat_backends", "table": "seam", "type": "ipv4_addr", "elem": ["203.0.113.5"]}},
          {"set": {"family": "inet", "name": "aff_1", "table": "seam", "type": "ipv4_addr", "size": 65535, "flags": ["timeout"], "timeout": 10,
            "elem": [{"elem": {"val": "10.9.0.2", "timeout": 10, "expires": 9}}]}},
          {"chain": {"family": "inet", "table": "seam", "name": "m_1"}},
          {"chain": {"family": "inet", "table": "seam", "name": "n_1"}},
          {"chain": {"family": "inet", "table": "seam", "name": "se_1"}},
          {"chain": {"family": "inet", "table": "seam", "name": "svc_prerouting"}},
          {"chain": {"family": "inet", "table": "seam", "name": "svc_output"}},
          {"chain": {"family": "inet", "table": "seam", "name": "svc_postrouting"}},
          {"chain": {"family": "inet", "table": "seam", "name": "svc_reject_input"}},
          {"chain": {"family": "inet", "table": "seam", "name": "svc_reject_prerouting"}},
          {"chain": {"family": "inet", "table": "seam", "name": "svc_reject_output"}}]}"#;
        let m = crate::table::from_nft_json(json).unwrap().services;
        assert!(m.enabled);
        let np = FrontendKey::NodePort {
            protocol: PortProtocol::Sctp,
            port: 30080,
        };
        assert_eq!(&*m.frontends[&np], "n_1");
        assert_eq!(m.backends[&np][0], (a("10.1.0.5"), 8080));
        assert_eq!(
            m.backends[&addr("10.96.0.10", 80)][0],
            (a("10.1.0.5"), 8080)
        );
        assert_eq!(m.inside, [(a("10.1.0.0"), a("10.1.1.255"))]);
        assert_eq!(m.affinity_sets["aff_1"], 10);
        assert_eq!(m.chains["se_1"], SvcChain::Adopted);
        assert!(m.hairpin.contains(&a("10.1.0.5")) && m.masquerade.contains(&np));
        assert_eq!(m.node_address, Some(a("192.168.0.1")));
        assert_eq!(m.snat_backends, [a("203.0.113.5")].into());
        // Half a Services part is not a table this renderer made.
        let half = json.replace(r#""name": "svc_output""#, r#""name": "c_x""#);
        assert!(crate::table::from_nft_json(&half).is_none());
    }

    #[test]
    fn refusals_are_on_prerouting_and_marked_connections_go_to_the_node_address() {
        let base = base_chains_text(None);
        // Frontends at an address are refused before routing (a node without a route to the
        // address never forwards the packet), and on output; NodePorts on input only.
        let prerouting = base
            .split("\tchain ")
            .find(|c| c.starts_with("svc_reject_prerouting "))
            .unwrap();
        assert!(prerouting.contains("type filter hook prerouting priority dstnat - 10;"));
        assert!(prerouting.contains(
            "ip daddr . meta l4proto . th dport @svc_reject meta l4proto tcp reject with tcp reset"
        ));
        assert!(!base.contains("hook forward"));
        let input = base
            .split("\tchain ")
            .find(|c| c.starts_with("svc_reject_input "))
            .unwrap();
        assert!(input.contains("@svc_np_reject") && !input.contains("@svc_reject "));
        let postrouting = base
            .split("\tchain ")
            .find(|c| c.starts_with("svc_postrouting "))
            .unwrap();
        let rules: Vec<&str> = postrouting.lines().skip(2).map(str::trim).collect();
        assert_eq!(
            rules,
            [
                "meta mark & 0x00100000 == 0x00100000 snat ip to meta mark & 0x00100000 map @svc_snat_to",
                "meta mark & 0x00100000 == 0x00100000 masquerade",
                "ct status dnat ip saddr . ip daddr @svc_hairpin masquerade",
                "ct status dnat ip saddr != @svc_inside ip daddr @svc_snat_backends masquerade",
                "}",
            ]
        );
        let mut out = String::new();
        render(&ServiceModel::from_desired(&sample()), &mut out);
        assert!(out.contains("map svc_snat_to {\n\t\ttype mark : ipv4_addr\n\t\telements = { 0x00100000 : 192.168.0.1 }"));
        assert!(out.contains(
            "set svc_snat_backends {\n\t\ttype ipv4_addr\n\t\telements = { 203.0.113.5 }"
        ));
    }

    #[test]
    fn a_new_node_address_and_external_backend_are_element_changes() {
        let mut desired = sample();
        let old = table(&desired);
        desired.node_address = Some(a("192.168.0.2"));
        desired.snat_backends = [a("203.0.113.6")].into();
        let new = table(&desired);
        let d = check_delta(&old, &new);
        assert!(d.cleanup.is_empty());
        assert_eq!(
            d.switch,
            [
                crate::TableOp::DeleteSvcElements {
                    elements: vec![
                        SvcElement::SnatTo(a("192.168.0.1")),
                        SvcElement::SnatBackend(a("203.0.113.5"))
                    ]
                },
                crate::TableOp::AddSvcElements {
                    elements: vec![
                        SvcElement::SnatTo(a("192.168.0.2")),
                        SvcElement::SnatBackend(a("203.0.113.6"))
                    ]
                },
            ]
        );
        desired.node_address = None;
        check_delta(&new, &table(&desired));
    }

    #[test]
    fn a_disabled_model_renders_nothing() {
        let mut out = String::new();
        render(&ServiceModel::default(), &mut out);
        assert!(out.is_empty());
        render(&ServiceModel::from_desired(&sample()), &mut out);
        assert!(out.contains(
            "elements = { 10.96.0.10 . tcp . 80 . 0 : 10.1.0.5 . 8080, 10.96.0.10 . tcp . 80 . 1 : 10.1.0.6 . 8080"
        ));
        assert!(out.contains("chain m_3 {\n\t\tdnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @svc_backends\n"));
    }
}
