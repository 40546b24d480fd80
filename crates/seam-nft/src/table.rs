//! `table inet seam` (and `table bridge seam`) as a value: [`TableModel`], written out in full for the
//! first write ([`full_text`]), diffed into an in-place change ([`delta`]) and read back from the
//! kernel's listing ([`from_nft_json`]). `seam_firewall::render::table` builds the model from a
//! node's compiled ruleset.
//!
//! Layout (why: a new connection should pass only the rules of the policies that select its endpoints, so the
//! cost of a SYN does not grow with the number of policies on the node):
//! - two base chains on the forward hook, `egress` (priority filter) and `ingress` (filter + 10). Each accepts
//!   established flows, drops invalid ones and dispatches on the local endpoint's address through a verdict map
//!   (`egress_dispatch` by source, `ingress_dispatch` by destination) to that endpoint's *class chain*. An
//!   `accept` ends only the base chain it is in, so a flow allowed by egress still meets ingress.
//! - a class chain (`c_<hash>`) per set of local endpoints that the same policies can match: `jump` to each
//!   admin-tier policy that can match the class (`a_<hash>`), then to each namespace-tier one (`b_<hash>`), in
//!   tier order, then `goto` the direction's baseline chain (`z_<hash>`). Policy chains are shared by every
//!   class that selects them; only from the first admin policy with a Pass rule on are the class's admin
//!   rules inlined in one chain, because a Pass must skip the rest of the admin tier at once.
//! - Allow is `accept`, Deny `drop` (never reject: probes must time out), Pass `return` (back to the class
//!   chain, which goes on with the namespace tier). A block's rules still test their subject set, so the
//!   dispatch only saves work and never changes a verdict.
//! - chain names are hashes of their contents: a changed policy is a new chain, an unchanged one keeps its
//!   name, rules and counters. That is also what lets an agent that restarts adopt the kernel's table: the
//!   names it reads back say what the chains hold.
//! - `table bridge seam` drops IPv6 frames that enter Seam's bridges from endpoint ports (`sv…` pods, `tv…`
//!   VMs) or the overlay (`seam-v…`): segments are IPv4 only, and IPv6 between
//!   endpoints would otherwise pass unfiltered.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;

use seam_model::{HOST_PORT_PREFIX, VM_PORT_PREFIX, VXLAN_PREFIX};
use serde_json::Value;

use crate::names::{
    BASE_CHAINS, BRIDGE_CHAIN, BRIDGE_TABLE, CHAIN_PREFIXES, CLASS_CHAIN_PREFIX, EGRESS_CHAIN,
    EGRESS_DISPATCH, INGRESS_CHAIN, INGRESS_DISPATCH, IPV6_RULE_COMMENT, TABLE,
};
use crate::services::ServiceModel;
use crate::{FirewallDelta, NftRule, TableOp};

/// What a regular chain holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBody {
    /// Policy rules.
    Rules(Vec<Arc<NftRule>>),
    /// `jump` to each chain, then `goto` the last one.
    Dispatch {
        /// Chains jumped to, in order.
        jumps: Vec<String>,
        /// The chain the class ends in.
        goto: String,
    },
    /// Read back from the kernel: the name says what it holds.
    Adopted,
}

/// An address set as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSet {
    /// An interval set (`flags interval`, elements are ranges); otherwise a hash set of single
    /// addresses.
    pub interval: bool,
    /// The addresses, as inclusive ranges, sorted, disjoint and not adjacent.
    pub ranges: Arc<[(Ipv4Addr, Ipv4Addr)]>,
}

/// The widest range and the most addresses a set may hold to be a hash set. Why hash sets: adding
/// one element to an interval set costs the kernel (6.x rbtree, overlap checks) time in proportion
/// to the set's size, about 0.2 ms at 2,000 elements, and a pod added joins dozens of sets; a hash
/// set's insert costs the same at any size. Sets of endpoints, and narrow address blocks, are hash
/// sets; sets with wide blocks (an `ipBlock` of /19 or wider) stay interval sets. A set that crosses
/// the line gets another name (hash sets' names start with `h/`), so the rules that test it are
/// new rules and the change is made like any other.
const HASH_SET_MAX_RANGE: u64 = 4096;
const HASH_SET_MAX_ADDRS: u64 = 65536;

fn range_len(&(s, e): &(Ipv4Addr, Ipv4Addr)) -> u64 {
    u64::from(u32::from(e)) - u64::from(u32::from(s)) + 1
}

/// Whether the table holds a set of these addresses (inclusive ranges) as an interval set; else
/// as a hash set of single addresses (see above for where the line is and why).
pub fn is_interval(ranges: &[(Ipv4Addr, Ipv4Addr)]) -> bool {
    ranges.iter().any(|r| range_len(r) > HASH_SET_MAX_RANGE)
        || ranges.iter().map(range_len).sum::<u64>() > HASH_SET_MAX_ADDRS
}

fn addrs_of(ranges: &[(Ipv4Addr, Ipv4Addr)]) -> Vec<Ipv4Addr> {
    ranges
        .iter()
        .flat_map(|(s, e)| (u32::from(*s)..=u32::from(*e)).map(Ipv4Addr::from))
        .collect()
}

/// The objects of `table inet seam` that change with policy (the base chains and maps are fixed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableModel {
    /// Address sets by nftables name.
    pub sets: BTreeMap<String, KernelSet>,
    /// Regular chains by name.
    pub chains: BTreeMap<String, ChainBody>,
    /// `egress_dispatch`: local source address → class chain.
    pub egress: BTreeMap<Ipv4Addr, Arc<str>>,
    /// `ingress_dispatch`: local destination address → class chain.
    pub ingress: BTreeMap<Ipv4Addr, Arc<str>>,
    /// The Services part ([`crate::services`]): left out of the table while not enabled.
    pub services: ServiceModel,
}

impl TableModel {
    /// Each verdict map with its entries: egress, then ingress.
    fn maps(&self) -> [(&'static str, &BTreeMap<Ipv4Addr, Arc<str>>); 2] {
        [
            (EGRESS_DISPATCH, &self.egress),
            (INGRESS_DISPATCH, &self.ingress),
        ]
    }
}

/// What is in `old` and not in `new`, and what is in `new` and not in `old` (both sorted).
pub fn sorted_difference<T: Ord + Copy>(old: &[T], new: &[T]) -> (Vec<T>, Vec<T>) {
    let (mut gone, mut added) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() && j < new.len() {
        match old[i].cmp(&new[j]) {
            std::cmp::Ordering::Less => {
                gone.push(old[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                added.push(new[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    gone.extend_from_slice(&old[i..]);
    added.extend_from_slice(&new[j..]);
    (gone, added)
}

fn range_text(&(s, e): &(Ipv4Addr, Ipv4Addr)) -> String {
    if s == e {
        s.to_string()
    } else {
        format!("{s}-{e}")
    }
}

fn chain_lines(out: &mut String, body: &ChainBody) {
    match body {
        ChainBody::Rules(rules) => {
            for r in rules {
                // A rule may be two kernel rules, one line each (see `NftSample::limit`).
                for line in r.to_string().lines() {
                    let _ = writeln!(out, "\t\t{line}");
                }
            }
        }
        ChainBody::Dispatch { jumps, goto } => {
            for j in jumps {
                let _ = writeln!(out, "\t\tjump {j}");
            }
            let _ = writeln!(out, "\t\tgoto {goto}");
        }
        ChainBody::Adopted => {}
    }
}

/// The `nft -f` text that removes Seam's tables (`inet seam` and `bridge seam`), absent or not:
/// each is declared empty first, so its deletion never fails for want of it.
pub fn removal_text() -> String {
    format!(
        "table {TABLE} {{}}\ndelete table {TABLE}\ntable {BRIDGE_TABLE} {{}}\ndelete table {BRIDGE_TABLE}\n"
    )
}

/// One `nft -f` transaction that replaces Seam's tables with `model` atomically (the kernel applies a batch
/// all or nothing, so packets see the old tables or the new ones, never neither).
pub fn full_text(model: &TableModel) -> String {
    let mut out = removal_text();
    let _ = writeln!(out, "table {TABLE} {{");
    // The dispatch maps first: the kernel finds a set or map by name by walking the table's sets in
    // the order they were made, and a pod added changes both maps (at the end of ~1,900 sets, the
    // two lookups cost more than the elements).
    for (map, entries) in model.maps() {
        let _ = writeln!(out, "\tmap {map} {{");
        out.push_str("\t\ttype ipv4_addr : verdict\n");
        if !entries.is_empty() {
            let items: Vec<String> = entries
                .iter()
                .map(|(a, c)| format!("{a} : goto {c}"))
                .collect();
            let _ = writeln!(out, "\t\telements = {{ {} }}", items.join(", "));
        }
        out.push_str("\t}\n");
    }
    for (name, set) in &model.sets {
        let _ = writeln!(out, "\tset {name} {{");
        out.push_str("\t\ttype ipv4_addr\n");
        if set.interval {
            out.push_str("\t\tflags interval\n");
        }
        if !set.ranges.is_empty() {
            let items: Vec<String> = if set.interval {
                set.ranges.iter().map(range_text).collect()
            } else {
                addrs_of(&set.ranges)
                    .iter()
                    .map(Ipv4Addr::to_string)
                    .collect()
            };
            let _ = writeln!(out, "\t\telements = {{ {} }}", items.join(", "));
        }
        out.push_str("\t}\n");
    }
    for (name, body) in &model.chains {
        let _ = writeln!(out, "\tchain {name} {{");
        chain_lines(&mut out, body);
        out.push_str("\t}\n");
    }
    for (chain, field, priority, map) in [
        (EGRESS_CHAIN, "saddr", "filter", EGRESS_DISPATCH),
        (INGRESS_CHAIN, "daddr", "filter + 10", INGRESS_DISPATCH),
    ] {
        let _ = writeln!(
            out,
            "\tchain {chain} {{\n\t\ttype filter hook forward priority {priority}; policy accept;\n\t\tct state established,related accept\n\t\tct state invalid drop\n\t\tip {field} vmap @{map}\n\t}}",
        );
    }
    crate::services::render(&model.services, &mut out);
    out.push_str("}\n");
    // The ports of pods (`sv…`), of the overlay (`seam-v…`) and of VMs (`tv…`).
    let _ = writeln!(
        out,
        "table {BRIDGE_TABLE} {{\n\tchain {BRIDGE_CHAIN} {{\n\t\ttype filter hook forward priority filter; policy accept;"
    );
    for port in [HOST_PORT_PREFIX, VXLAN_PREFIX, VM_PORT_PREFIX] {
        let _ = writeln!(
            out,
            "\t\tiifname \"{port}*\" ether type ip6 counter drop comment \"{IPV6_RULE_COMMENT}\""
        );
    }
    out.push_str("\t}\n}\n");
    out
}

/// Above this many Services elements, a whole-table write goes in two steps ([`split_write`]).
pub const SPLIT_WRITE_ELEMENTS: usize = 5_000;

/// A whole-table write of `model` in two steps when its Services part is large: the table
/// without the Services elements (`nft -f` of [`full_text`], atomic), then the elements as an
/// in-place change (netlink, one batch). Why: `nft` 1.0.6 takes seconds to parse and check
/// 100,000 map elements (10,000 Services × 10 backends), netlink a fraction of that. The cost:
/// between the two steps (a fraction of a second, on a whole write only) the Services translate
/// nothing. `None`: small enough for one `nft -f` transaction.
pub fn split_write(model: &TableModel) -> Option<(TableModel, FirewallDelta)> {
    let services = &model.services;
    let elements = services.frontends.len()
        + services.backends.values().map(|b| b.len()).sum::<usize>()
        + services.reject.len();
    if !services.enabled || elements <= SPLIT_WRITE_ELEMENTS {
        return None;
    }
    let mut first = model.clone();
    first.services = crate::services::ServiceModel {
        enabled: true,
        chains: services.chains.clone(),
        affinity_sets: services.affinity_sets.clone(),
        ..Default::default()
    };
    let fill = delta(&first, model);
    Some((first, fill))
}

/// The keys of two sorted maps in one walk, each with its value in `old` and in `new`.
pub(crate) fn paired<'a, K: Ord, V>(
    old: &'a BTreeMap<K, V>,
    new: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = (&'a K, Option<&'a V>, Option<&'a V>)> {
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    std::iter::from_fn(move || match (o.peek(), n.peek()) {
        (Some((ko, _)), Some((kn, _))) => match ko.cmp(kn) {
            std::cmp::Ordering::Less => o.next().map(|(k, v)| (k, Some(v), None)),
            std::cmp::Ordering::Greater => n.next().map(|(k, v)| (k, None, Some(v))),
            std::cmp::Ordering::Equal => {
                let (k, vo) = o.next()?;
                let (_, vn) = n.next()?;
                Some((k, Some(vo), Some(vn)))
            }
        },
        (Some(_), None) => o.next().map(|(k, v)| (k, Some(v), None)),
        (None, Some(_)) => n.next().map(|(k, v)| (k, None, Some(v))),
        (None, None) => None,
    })
}

/// The in-place change from the table the kernel holds (`old`) to `new`; see [`FirewallDelta`] for the steps.
pub fn delta(old: &TableModel, new: &TableModel) -> FirewallDelta {
    let mut switch = Vec::new();
    let mut cleanup = Vec::new();
    let mut elements = Vec::new();
    // What is referred to comes before what refers to it: sets, then rule chains, then the class
    // chains that jump to them, then the map entries that go to those.
    for (name, before, now) in paired(&old.sets, &new.sets) {
        match (before, now) {
            (None, Some(set)) => switch.push(TableOp::AddSet {
                name: name.clone(),
                interval: set.interval,
            }),
            (Some(_), None) => cleanup.push(TableOp::DeleteSet { name: name.clone() }),
            _ => {}
        }
        // A set deleted goes with its elements.
        let Some(now) = now else {
            continue;
        };
        let before: &[(Ipv4Addr, Ipv4Addr)] = before.map_or(&[], |s| &s.ranges);
        if std::ptr::eq(before, &*now.ranges) || before == &now.ranges[..] {
            continue;
        }
        if now.interval {
            let (gone, added) = sorted_difference(before, &now.ranges);
            if !gone.is_empty() {
                elements.push(TableOp::DeleteRanges {
                    set: name.clone(),
                    ranges: gone,
                });
            }
            if !added.is_empty() {
                elements.push(TableOp::AddRanges {
                    set: name.clone(),
                    ranges: added,
                });
            }
        } else {
            let (gone, added) = sorted_difference(&addrs_of(before), &addrs_of(&now.ranges));
            if !gone.is_empty() {
                elements.push(TableOp::DeleteAddrs {
                    set: name.clone(),
                    addrs: gone,
                });
            }
            if !added.is_empty() {
                elements.push(TableOp::AddAddrs {
                    set: name.clone(),
                    addrs: added,
                });
            }
        }
    }
    let mut dispatch_chains = Vec::new();
    let mut gone_chains: Vec<&String> = Vec::new();
    for (name, before, now) in paired(&old.chains, &new.chains) {
        match (before, now) {
            (None, Some(ChainBody::Rules(rules))) => {
                switch.push(TableOp::AddChain { name: name.clone() });
                switch.extend(rules.iter().map(|rule| TableOp::AddRule {
                    chain: name.clone(),
                    rule: NftRule::clone(rule),
                }));
            }
            (None, Some(ChainBody::Dispatch { jumps, goto })) => {
                dispatch_chains.push(TableOp::AddChain { name: name.clone() });
                for j in jumps {
                    dispatch_chains.push(TableOp::AddJump {
                        chain: name.clone(),
                        target: j.clone(),
                        goto: false,
                    });
                }
                dispatch_chains.push(TableOp::AddJump {
                    chain: name.clone(),
                    target: goto.clone(),
                    goto: true,
                });
            }
            (Some(_), None) => gone_chains.push(name),
            _ => {}
        }
    }
    switch.append(&mut dispatch_chains);
    switch.append(&mut elements);
    for ((map, old_map), (_, new_map)) in old.maps().into_iter().zip(new.maps()) {
        let (mut stale, mut fresh) = (Vec::new(), Vec::new());
        for (addr, before, now) in paired(old_map, new_map) {
            if before == now {
                continue;
            }
            if before.is_some() {
                stale.push(*addr);
            }
            if let Some(class) = now {
                fresh.push((*addr, class.to_string()));
            }
        }
        let map = map.to_string();
        if !stale.is_empty() {
            switch.push(TableOp::DeleteKeys {
                map: map.clone(),
                keys: stale,
            });
        }
        if !fresh.is_empty() {
            switch.push(TableOp::AddGotos {
                map,
                entries: fresh,
            });
        }
    }
    // Class chains refer to the others, so they go first.
    gone_chains.sort_by_key(|n| (!n.starts_with(CLASS_CHAIN_PREFIX), n.as_str()));
    let mut chain_cleanup: Vec<TableOp> = gone_chains
        .into_iter()
        .map(|name| TableOp::DeleteChain { name: name.clone() })
        .collect();
    chain_cleanup.append(&mut cleanup);
    crate::services::delta(
        &old.services,
        &new.services,
        &mut switch,
        &mut chain_cleanup,
    );
    FirewallDelta {
        switch,
        cleanup: chain_cleanup,
    }
}

/// `policy`, the change between two tables with the same Services part (`seam_firewall`'s renderer
/// makes it from the objects it touched), followed by the change of the Services part from `old`
/// to `new`: what [`delta`] returns between the first table with `old` and the second with `new`.
pub fn with_services(
    mut policy: FirewallDelta,
    old: &ServiceModel,
    new: &ServiceModel,
) -> FirewallDelta {
    crate::services::delta(old, new, &mut policy.switch, &mut policy.cleanup);
    policy
}

/// Sorted ranges with the adjacent and overlapping ones joined.
fn merge_adjacent(sorted: &[(Ipv4Addr, Ipv4Addr)]) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let mut out: Vec<(Ipv4Addr, Ipv4Addr)> = Vec::with_capacity(sorted.len());
    for &(s, e) in sorted {
        match out.last_mut() {
            Some((_, last)) if u64::from(u32::from(s)) <= u64::from(u32::from(*last)) + 1 => {
                if e > *last {
                    *last = e;
                }
            }
            _ => out.push((s, e)),
        }
    }
    out
}

fn parse_addr(v: &Value) -> Option<Ipv4Addr> {
    v.as_str()?.parse().ok()
}

pub(crate) fn parse_range(v: &Value) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if let Some(a) = parse_addr(v) {
        return Some((a, a));
    }
    if let Some(p) = v.get("prefix") {
        let addr = u32::from(parse_addr(p.get("addr")?)?);
        let len = u32::try_from(p.get("len")?.as_u64()?).ok()?;
        let size = 1u64.checked_shl(32u32.checked_sub(len)?)?;
        let end = u64::from(addr) + size - 1;
        return Some((
            Ipv4Addr::from(addr),
            Ipv4Addr::from(u32::try_from(end).ok()?),
        ));
    }
    let r = v.get("range")?.as_array()?;
    Some((parse_addr(r.first()?)?, parse_addr(r.get(1)?)?))
}

/// A batch of [`TableOp`]s that the table refuses, as the kernel refuses it: the whole batch is
/// left unapplied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// An operation names a set, map, chain or element that does not exist.
    #[error("no such {kind} {name}")]
    Missing {
        /// `set`, `map`, `chain` or `element`.
        kind: &'static str,
        /// Its name (for an element, the set or map and the element).
        name: String,
    },
    /// An element is added with a key the set or map already holds with other data (or a range
    /// that overlaps another), which the kernel refuses (`EBUSY`/`EEXIST`).
    #[error("{name} exists with other data")]
    Busy {
        /// The set or map and the element.
        name: String,
    },
    /// An element is added to a set of the other kind (an address to an interval set, a range
    /// to a hash set).
    #[error("set {name} is of another kind")]
    WrongKind {
        /// The set's name.
        name: String,
    },
}

pub(crate) fn missing(kind: &'static str, name: impl Into<String>) -> BatchError {
    BatchError::Missing {
        kind,
        name: name.into(),
    }
}

impl TableModel {
    /// The table as a listing of it reads back ([`from_nft_json`]): the same sets and maps, and
    /// each chain by its name only ([`ChainBody::Adopted`]).
    pub fn listed(&self) -> TableModel {
        TableModel {
            chains: self
                .chains
                .keys()
                .map(|name| (name.clone(), ChainBody::Adopted))
                .collect(),
            services: self.services.listed(),
            ..self.clone()
        }
    }

    /// Applies one batch to the table as a listing shows it ([`TableModel::listed`]): all of it,
    /// or, when one operation names something that does not exist, none of it (as the kernel
    /// applies a batch). A model of the kernel's table for tests that run without one; rules and
    /// jumps are checked against the chains and sets they name, not kept.
    pub fn apply_batch(&mut self, ops: &[TableOp]) -> Result<(), BatchError> {
        let mut next = self.clone();
        for op in ops {
            next.apply_op(op)?;
        }
        *self = next;
        Ok(())
    }

    fn set_mut(&mut self, name: &str, interval: bool) -> Result<&mut KernelSet, BatchError> {
        let set = self
            .sets
            .get_mut(name)
            .ok_or_else(|| missing("set", name))?;
        if set.interval != interval {
            return Err(BatchError::WrongKind {
                name: name.to_string(),
            });
        }
        Ok(set)
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut BTreeMap<Ipv4Addr, Arc<str>>, BatchError> {
        match name {
            EGRESS_DISPATCH => Ok(&mut self.egress),
            INGRESS_DISPATCH => Ok(&mut self.ingress),
            _ => Err(missing("map", name)),
        }
    }

    fn chain(&self, name: &str) -> Result<(), BatchError> {
        if self.chains.contains_key(name) {
            Ok(())
        } else {
            Err(missing("chain", name))
        }
    }

    fn apply_op(&mut self, op: &TableOp) -> Result<(), BatchError> {
        if self.services.apply_op(op)? {
            return Ok(());
        }
        match op {
            TableOp::AddSet { name, interval } => {
                self.sets.entry(name.clone()).or_insert(KernelSet {
                    interval: *interval,
                    ranges: Arc::from([]),
                });
            }
            TableOp::DeleteSet { name } => {
                self.sets.remove(name).ok_or_else(|| missing("set", name))?;
            }
            TableOp::AddAddrs { set, addrs } => {
                let s = self.set_mut(set, false)?;
                let mut all = addrs_of(&s.ranges);
                all.extend(addrs.iter().copied());
                s.ranges = runs(all).into();
            }
            TableOp::DeleteAddrs { set, addrs } => {
                let s = self.set_mut(set, false)?;
                let mut all = addrs_of(&s.ranges);
                for a in addrs {
                    let at = all
                        .iter()
                        .position(|x| x == a)
                        .ok_or_else(|| missing("element", format!("{set} {a}")))?;
                    all.remove(at);
                }
                s.ranges = runs(all).into();
            }
            TableOp::AddRanges { set, ranges } => {
                let s = self.set_mut(set, true)?;
                let mut all = s.ranges.to_vec();
                all.extend(ranges.iter().copied());
                all.sort_unstable();
                all.dedup();
                s.ranges = all.into();
            }
            TableOp::DeleteRanges { set, ranges } => {
                let s = self.set_mut(set, true)?;
                let mut all = s.ranges.to_vec();
                for r in ranges {
                    let at = all
                        .iter()
                        .position(|x| x == r)
                        .ok_or_else(|| missing("element", format!("{set} {}", range_text(r))))?;
                    all.remove(at);
                }
                s.ranges = all.into();
            }
            TableOp::AddGotos { map, entries } => {
                for (_, target) in entries {
                    self.chain(target)?;
                }
                let m = self.map_mut(map)?;
                for (key, target) in entries {
                    m.insert(*key, Arc::from(target.as_str()));
                }
            }
            TableOp::DeleteKeys { map, keys } => {
                let m = self.map_mut(map)?;
                for k in keys {
                    m.remove(k)
                        .ok_or_else(|| missing("element", format!("{map} {k}")))?;
                }
            }
            TableOp::AddChain { name } => {
                self.chains
                    .entry(name.clone())
                    .or_insert(ChainBody::Adopted);
            }
            TableOp::DeleteChain { name } => {
                self.chains
                    .remove(name)
                    .ok_or_else(|| missing("chain", name))?;
            }
            TableOp::AddJump { chain, target, .. } => {
                self.chain(chain)?;
                self.chain(target)?;
            }
            // Applied by `ServiceModel::apply_op` above, which takes every one of them.
            TableOp::AddServiceBase
            | TableOp::DeleteServiceBase
            | TableOp::AddSvcElements { .. }
            | TableOp::DeleteSvcElements { .. }
            | TableOp::AddAffinitySet { .. }
            | TableOp::AddSvcChain { .. } => {}
            TableOp::AddRule { chain, rule } => {
                self.chain(chain)?;
                for m in &rule.matches {
                    if let crate::NftMatch::AddrInSet { set, .. } = m {
                        if !self.sets.contains_key(set) {
                            return Err(missing("set", set.clone()));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Single addresses as sorted runs of consecutive ones (how a hash set reads back).
fn runs(mut addrs: Vec<Ipv4Addr>) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    addrs.sort_unstable();
    addrs.dedup();
    merge_adjacent(&addrs.into_iter().map(|a| (a, a)).collect::<Vec<_>>())
}

/// The model of the table the kernel holds, from `nft -j list table inet seam`; `None` when it is not a table
/// this renderer made (another layout or version, or anything it cannot read), which the caller replaces whole.
pub fn from_nft_json(text: &str) -> Option<TableModel> {
    let value: Value = serde_json::from_str(text).ok()?;
    let mut out = TableModel::default();
    let mut base = BTreeSet::new();
    let mut maps = BTreeSet::new();
    let mut services = crate::services::Listed::default();
    for item in value.get("nftables")?.as_array()? {
        if let Some(rule) = item.get("rule") {
            services.rule(rule);
        } else if let Some(chain) = item.get("chain") {
            let name = chain.get("name")?.as_str()?;
            if services.chain(name).is_some() {
                continue;
            }
            if BASE_CHAINS.contains(&name) {
                base.insert(name.to_string());
            } else if CHAIN_PREFIXES.iter().any(|p| name.starts_with(p)) {
                out.chains.insert(name.to_string(), ChainBody::Adopted);
            } else {
                return None;
            }
        } else if let Some(set) = item.get("set").or_else(|| item.get("map")).filter(|s| {
            s.get("name")
                .and_then(Value::as_str)
                .is_some_and(crate::services::Listed::owns_set)
        }) {
            services.set(set.get("name")?.as_str()?, set)?;
        } else if let Some(set) = item.get("set") {
            let name = set.get("name")?.as_str()?;
            if set.get("type")?.as_str()? != "ipv4_addr" {
                return None;
            }
            let interval = set
                .get("flags")
                .and_then(Value::as_array)
                .is_some_and(|f| f.iter().any(|f| f == "interval"));
            let mut ranges = Vec::new();
            for e in set
                .get("elem")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                ranges.push(parse_range(e)?);
            }
            ranges.sort_unstable();
            if !interval {
                // A hash set's elements are single addresses; the model holds them as runs.
                ranges = merge_adjacent(&ranges);
            }
            out.sets.insert(
                name.to_string(),
                KernelSet {
                    interval,
                    ranges: ranges.into(),
                },
            );
        } else if let Some(map) = item.get("map") {
            let name = map.get("name")?.as_str()?;
            let entries = match name {
                EGRESS_DISPATCH => &mut out.egress,
                INGRESS_DISPATCH => &mut out.ingress,
                _ => return None,
            };
            maps.insert(name.to_string());
            for e in map
                .get("elem")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let pair = e.as_array()?;
                let key = parse_addr(pair.first()?)?;
                let target = pair.get(1)?.get("goto")?.get("target")?.as_str()?;
                entries.insert(key, Arc::from(target));
            }
        }
    }
    out.services = services.finish()?;
    (base.len() == BASE_CHAINS.len() && maps.len() == 2).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn rule(verdict: crate::NftVerdict) -> NftRule {
        NftRule {
            matches: Vec::new(),
            log_prefix: None,
            sample: None,
            verdict,
            comment: "r".into(),
        }
    }

    fn sample() -> TableModel {
        let mut m = TableModel::default();
        m.sets.insert(
            "h/np/x/a/subject".into(),
            KernelSet {
                interval: false,
                ranges: vec![(a("10.0.0.1"), a("10.0.0.1"))].into(),
            },
        );
        m.chains.insert(
            "b_1".into(),
            ChainBody::Rules(vec![rule(crate::NftVerdict::Accept).into()]),
        );
        m.chains.insert(
            "z_1".into(),
            ChainBody::Rules(vec![rule(crate::NftVerdict::Accept).into()]),
        );
        m.chains.insert(
            "c_1".into(),
            ChainBody::Dispatch {
                jumps: vec!["b_1".into()],
                goto: "z_1".into(),
            },
        );
        m.ingress.insert(a("10.0.0.1"), "c_1".into());
        m
    }

    #[test]
    fn a_large_services_part_is_written_in_two_steps() {
        use crate::services::{DesiredServices, Frontend, FrontendKey, ServiceModel};
        let frontends = (0..1000u32)
            .map(|i| Frontend {
                key: FrontendKey::Address {
                    addr: Ipv4Addr::from(0x0a60_0000 + i),
                    protocol: seam_model::PortProtocol::Tcp,
                    port: 80,
                },
                service: format!("ns/s{i}:http"),
                backends: (0..5u32)
                    .map(|b| (Ipv4Addr::from(0x0a01_0000 + b), 80))
                    .collect(),
                affinity_timeout: None,
                masquerade_outside: false,
            })
            .collect();
        let model = TableModel {
            services: ServiceModel::from_desired(&DesiredServices {
                frontends,
                ..Default::default()
            }),
            ..sample()
        };
        let (first, fill) = split_write(&model).unwrap();
        assert!(first.services.frontends.is_empty() && first.services.chains.contains_key("m_5"));
        assert!(fill.cleanup.is_empty());
        let mut t = first.listed();
        t.apply_batch(&fill.switch).unwrap();
        assert_eq!(t, model.listed());
        assert!(split_write(&sample()).is_none());
    }

    #[test]
    fn no_change_is_an_empty_delta() {
        assert!(delta(&sample(), &sample()).is_empty());
    }

    #[test]
    fn a_new_member_is_one_element_change_and_nothing_else() {
        let old = sample();
        let mut new = old.clone();
        new.sets.insert(
            "h/np/x/a/subject".into(),
            KernelSet {
                interval: false,
                ranges: vec![(a("10.0.0.1"), a("10.0.0.2"))].into(),
            },
        );
        new.ingress.insert(a("10.0.0.2"), "c_1".into());
        let d = delta(&old, &new);
        assert!(d.cleanup.is_empty());
        assert_eq!(
            d.switch,
            vec![
                TableOp::AddAddrs {
                    set: "h/np/x/a/subject".into(),
                    addrs: vec![a("10.0.0.2")]
                },
                TableOp::AddGotos {
                    map: "ingress_dispatch".into(),
                    entries: vec![(a("10.0.0.2"), "c_1".into())]
                },
            ]
        );
    }

    #[test]
    fn replaced_chains_are_made_before_and_deleted_after_the_switch() {
        let old = sample();
        let mut new = old.clone();
        new.chains.remove("b_1");
        new.chains.remove("c_1");
        let drop = rule(crate::NftVerdict::Drop);
        new.chains
            .insert("b_2".into(), ChainBody::Rules(vec![drop.clone().into()]));
        new.chains.insert(
            "c_2".into(),
            ChainBody::Dispatch {
                jumps: vec!["b_2".into()],
                goto: "z_1".into(),
            },
        );
        new.ingress.insert(a("10.0.0.1"), "c_2".into());
        let d = delta(&old, &new);
        // The new rule chain, then the class chain that jumps to it, then the map entry.
        assert_eq!(
            d.switch[..4],
            [
                TableOp::AddChain { name: "b_2".into() },
                TableOp::AddRule {
                    chain: "b_2".into(),
                    rule: drop
                },
                TableOp::AddChain { name: "c_2".into() },
                TableOp::AddJump {
                    chain: "c_2".into(),
                    target: "b_2".into(),
                    goto: false
                },
            ]
        );
        assert!(d.switch.contains(&TableOp::DeleteKeys {
            map: "ingress_dispatch".into(),
            keys: vec![a("10.0.0.1")]
        }));
        assert_eq!(
            d.cleanup,
            vec![
                TableOp::DeleteChain { name: "c_1".into() },
                TableOp::DeleteChain { name: "b_1".into() }
            ]
        );
    }

    #[test]
    fn sets_of_endpoints_are_hash_sets_and_wide_blocks_interval_sets() {
        let pods = [
            (a("10.0.0.1"), a("10.0.0.40")),
            (a("10.0.1.7"), a("10.0.1.7")),
        ];
        assert!(!is_interval(&pods));
        assert!(is_interval(&[(a("10.0.0.0"), a("10.0.255.255"))]));
        // A hash set lists single addresses; read back, they are runs again.
        let json = r#"{"nftables": [
          {"set": {"family": "inet", "name": "h/s", "table": "seam", "type": "ipv4_addr",
            "elem": ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9"]}},
          {"map": {"family": "inet", "name": "egress_dispatch", "table": "seam", "type": "ipv4_addr", "map": "verdict"}},
          {"map": {"family": "inet", "name": "ingress_dispatch", "table": "seam", "type": "ipv4_addr", "map": "verdict"}},
          {"chain": {"family": "inet", "table": "seam", "name": "egress"}},
          {"chain": {"family": "inet", "table": "seam", "name": "ingress"}}]}"#;
        let m = from_nft_json(json).unwrap();
        assert!(!m.sets["h/s"].interval);
        assert_eq!(
            m.sets["h/s"].ranges[..],
            [
                (a("10.0.0.1"), a("10.0.0.3")),
                (a("10.0.0.9"), a("10.0.0.9"))
            ]
        );
        assert_eq!(
            addrs_of(&m.sets["h/s"].ranges),
            ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9"].map(a)
        );
    }

    #[test]
    fn listings_are_read_back() {
        let json = r#"{"nftables": [{"metainfo": {}}, {"table": {"family": "inet", "name": "seam"}},
          {"set": {"family": "inet", "name": "s", "table": "seam", "type": "ipv4_addr", "flags": ["interval"],
            "elem": ["10.0.0.4", {"prefix": {"addr": "10.0.1.0", "len": 30}}, {"range": ["10.0.2.1", "10.0.2.9"]}]}},
          {"map": {"family": "inet", "name": "egress_dispatch", "table": "seam", "type": "ipv4_addr", "map": "verdict",
            "elem": [["10.0.0.4", {"goto": {"target": "c_ab"}}]]}},
          {"map": {"family": "inet", "name": "ingress_dispatch", "table": "seam", "type": "ipv4_addr", "map": "verdict"}},
          {"chain": {"family": "inet", "table": "seam", "name": "c_ab"}},
          {"chain": {"family": "inet", "table": "seam", "name": "egress"}},
          {"chain": {"family": "inet", "table": "seam", "name": "ingress"}}]}"#;
        let m = from_nft_json(json).unwrap();
        assert_eq!(
            m.sets["s"].ranges[..],
            [
                (a("10.0.0.4"), a("10.0.0.4")),
                (a("10.0.1.0"), a("10.0.1.3")),
                (a("10.0.2.1"), a("10.0.2.9"))
            ]
        );
        assert!(m.sets["s"].interval);
        assert_eq!(&*m.egress[&a("10.0.0.4")], "c_ab");
        assert_eq!(m.chains["c_ab"], ChainBody::Adopted);
        // A table of another layout (the old single `forward` chain) is not adopted.
        let old = json.replace("\"name\": \"ingress\"", "\"name\": \"forward\"");
        assert_eq!(from_nft_json(&old), None);
    }

    #[test]
    fn a_delta_applied_to_the_listed_table_gives_the_new_table_listed() {
        let old = sample();
        let mut new = old.clone();
        new.sets.insert(
            "h/np/x/a/subject".into(),
            KernelSet {
                interval: false,
                ranges: vec![(a("10.0.0.1"), a("10.0.0.2"))].into(),
            },
        );
        new.chains.remove("b_1");
        new.chains.insert(
            "b_2".into(),
            ChainBody::Rules(vec![rule(crate::NftVerdict::Drop).into()]),
        );
        new.chains.insert(
            "c_1".into(),
            ChainBody::Dispatch {
                jumps: vec!["b_2".into()],
                goto: "z_1".into(),
            },
        );
        new.ingress.insert(a("10.0.0.2"), "c_1".into());
        let d = delta(&old, &new);
        let mut table = old.listed();
        table.apply_batch(&d.switch).unwrap();
        table.apply_batch(&d.cleanup).unwrap();
        assert_eq!(table, new.listed());
        // A batch that names a chain that does not exist changes nothing.
        let before = table.clone();
        let bad = [
            TableOp::AddChain { name: "a_9".into() },
            TableOp::DeleteChain {
                name: "nope".into(),
            },
        ];
        assert_eq!(
            table.apply_batch(&bad),
            Err(BatchError::Missing {
                kind: "chain",
                name: "nope".into()
            })
        );
        assert_eq!(table, before);
    }
}
