//! The kernel objects of `table inet seam` as a value ([`TableModel`]), built from a [`NodeRuleset`], written
//! out in full ([`full_text`]), diffed into an in-place change ([`delta`]) and read back from the kernel's
//! listing ([`from_nft_json`]).
//!
//! Layout (why: a new connection should pass only the rules of the policies that select its endpoints, so the
//! cost of a SYN does not grow with the number of policies on the node):
//! - two base chains on the forward hook, `egress` (priority filter) and `ingress` (filter + 10). Each accepts
//!   established flows, drops invalid ones and dispatches on the local endpoint's address through a verdict map
//!   (`egress_dispatch` by source, `ingress_dispatch` by destination) to that endpoint's *class chain*. An
//!   `accept` ends only the base chain it is in, so a flow allowed by egress still meets ingress.
//! - a class chain (`c_<hash>`) per set of local endpoints that the same policies select: `jump` to each
//!   admin-tier policy that selects the class (`a_<hash>`), then to each namespace-tier one (`b_<hash>`), in
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;

use seam_nft::{FirewallDelta, NftRule, TableOp};
use seam_policy::Direction;
use serde_json::Value;

use super::{fnv1a, fnv_feed, nft_rule, nft_set_name, FNV_OFFSET, TABLE};
use crate::addr::AddrSet;
use crate::ir::{AddrMatch, NodeRuleset, Rule, Tier};

/// The verdict map of a direction.
pub fn dispatch_map(direction: Direction) -> &'static str {
    match direction {
        Direction::Egress => "egress_dispatch",
        Direction::Ingress => "ingress_dispatch",
    }
}

const BASE_CHAINS: [&str; 2] = ["egress", "ingress"];
const CHAIN_PREFIXES: [&str; 4] = ["a_", "b_", "c_", "z_"];

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

fn is_interval(ranges: &[(Ipv4Addr, Ipv4Addr)]) -> bool {
    ranges.iter().any(|r| range_len(r) > HASH_SET_MAX_RANGE)
        || ranges.iter().map(range_len).sum::<u64>() > HASH_SET_MAX_ADDRS
}

/// The kernel's name of an IR set of this kind.
fn kernel_set_name(ir_name: &str, interval: bool) -> String {
    if interval {
        nft_set_name(ir_name)
    } else {
        format!("h/{}", nft_set_name(ir_name))
    }
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
}

impl TableModel {
    fn dispatch(&self, direction: Direction) -> &BTreeMap<Ipv4Addr, Arc<str>> {
        match direction {
            Direction::Egress => &self.egress,
            Direction::Ingress => &self.ingress,
        }
    }

    fn dispatch_mut(&mut self, direction: Direction) -> &mut BTreeMap<Ipv4Addr, Arc<str>> {
        match direction {
            Direction::Egress => &mut self.egress,
            Direction::Ingress => &mut self.ingress,
        }
    }
}

/// The policy a rule id belongs to: the id up to its direction (`np/x/web/ingress/0` → `np/x/web`).
fn block_key(rule: &Rule) -> &str {
    let id = rule.id.as_str();
    for marker in ["/egress", "/ingress"] {
        if let Some(i) = id.find(marker) {
            let rest = &id[i + marker.len()..];
            if rest.is_empty() || rest.starts_with('/') {
                return &id[..i];
            }
        }
    }
    id
}

/// The set every rule of a block tests the local end against, when there is one.
fn block_subject<'r>(direction: Direction, rules: &[&'r Rule]) -> Option<&'r str> {
    let local = |r: &'r Rule| -> &'r [AddrMatch] {
        match direction {
            Direction::Egress => &r.src,
            Direction::Ingress => &r.dst,
        }
    };
    let first = rules.first()?;
    local(first).iter().find_map(|m| match m {
        AddrMatch::In(name)
            if rules
                .iter()
                .all(|r| local(r).contains(&AddrMatch::In(name.clone()))) =>
        {
            Some(name.as_str())
        }
        _ => None,
    })
}

/// A rendered rule: the kernel's rule and a hash of its text (chain names are made of these).
#[derive(Debug, Clone)]
struct Rendered {
    rule: Arc<NftRule>,
    hash: u64,
    /// Which of the rule's sets (in order) were interval sets: their kernel names depend on it.
    kinds: u64,
    /// The last build that used it.
    used: u64,
}

/// An address set as the kernel holds it, with the members it was rendered from.
#[derive(Debug)]
struct RenderedSet {
    members: AddrSet,
    name: String,
    set: KernelSet,
}

/// What the last build rendered, kept so that the next build renders only what changed: a pod added
/// or a policy edited changes a few of thousands of rules and sets, and rendering them all again
/// took most of a change's time. [`model`] builds without it.
#[derive(Debug, Default)]
pub struct Renderer {
    rules: RuleCache,
    /// Counts builds; rules the last build did not use are dropped.
    build: u64,
    /// By IR name, sorted.
    sets: Vec<(String, RenderedSet)>,
}

type RuleCache = HashMap<Rule, Rendered, foldhash::fast::RandomState>;

/// Whether each IR set is an interval set in the kernel, by IR name.
type Kinds<'a> = HashMap<&'a str, bool, foldhash::fast::RandomState>;

fn rule_kinds(rule: &Rule, kinds: &Kinds<'_>) -> u64 {
    rule.src
        .iter()
        .chain(&rule.dst)
        .enumerate()
        .fold(0, |acc, (i, m)| {
            let (AddrMatch::In(name) | AddrMatch::NotIn(name)) = m;
            if kinds.get(name.as_str()).copied().unwrap_or(true) && i < 64 {
                acc | (1 << i)
            } else {
                acc
            }
        })
}

/// Renders the rules of one build from the cache, marking what this build used.
struct RuleRender<'a, 'k> {
    cache: &'a mut RuleCache,
    build: u64,
    kinds: &'a Kinds<'k>,
}

impl RuleRender<'_, '_> {
    /// A rule as rendered before (when its sets are of the same kinds), or rendered now. One hash
    /// lookup per rule: most of a build's rules were in the last one.
    fn rule(&mut self, rule: &Rule) -> Rendered {
        let want = rule_kinds(rule, self.kinds);
        if let Some(r) = self.cache.get_mut(rule) {
            if r.kinds != want {
                *r = render_rule(rule, self.kinds, want);
            }
            r.used = self.build;
            return r.clone();
        }
        let mut r = render_rule(rule, self.kinds, want);
        r.used = self.build;
        self.cache.insert(rule.clone(), r.clone());
        r
    }
}

fn render_rule(rule: &Rule, kinds: &Kinds<'_>, want: u64) -> Rendered {
    let name = |ir: &str| kernel_set_name(ir, kinds.get(ir).copied().unwrap_or(true));
    let nft = nft_rule(rule, &name);
    let hash = fnv1a(&nft.to_string());
    Rendered {
        rule: Arc::new(nft),
        hash,
        kinds: want,
        used: 0,
    }
}

/// A chain's name: its prefix and a hash of what it holds (labels, then its rules' hashes).
fn chain_name(prefix: &str, labels: &[&str], rules: impl IntoIterator<Item = u64>) -> String {
    let mut h = FNV_OFFSET;
    for l in labels {
        h = fnv_feed(h, l.as_bytes());
        h = fnv_feed(h, b"\n");
    }
    for r in rules {
        h = fnv_feed(h, &r.to_le_bytes());
    }
    format!("{prefix}{h:016x}")
}

/// The rules of one tier cut into blocks (one per policy: consecutive rules of one policy id), and for
/// each local address (in the order given) the blocks that select it.
struct Blocks {
    bodies: Vec<Vec<Arc<NftRule>>>,
    /// The hashes of each block's rules.
    hashes: Vec<Vec<u64>>,
    /// Whether the block has a Pass rule.
    passes: Vec<bool>,
    selected: Vec<Vec<usize>>,
}

impl Blocks {
    fn split(
        render: &mut RuleRender<'_, '_>,
        ruleset: &NodeRuleset,
        dir: Direction,
        rules: &[&Rule],
        index: &HashMap<Ipv4Addr, usize, foldhash::fast::RandomState>,
        locals: &[Ipv4Addr],
    ) -> Blocks {
        let mut out = Blocks {
            bodies: Vec::new(),
            hashes: Vec::new(),
            passes: Vec::new(),
            selected: vec![Vec::new(); locals.len()],
        };
        let mut start = 0;
        while start < rules.len() {
            let key = block_key(rules[start]);
            let len = rules[start..]
                .iter()
                .take_while(|r| block_key(r) == key)
                .count();
            let block = &rules[start..start + len];
            start += len;
            let b = out.bodies.len();
            let rendered: Vec<Rendered> = block.iter().map(|r| render.rule(r)).collect();
            out.hashes.push(rendered.iter().map(|r| r.hash).collect());
            out.bodies
                .push(rendered.into_iter().map(|r| r.rule).collect());
            out.passes
                .push(block.iter().any(|r| r.action == crate::ir::Action::Pass));
            let subject = block_subject(dir, block).and_then(|s| ruleset.sets.get(s));
            let Some(set) = subject else {
                out.selected.iter_mut().for_each(|v| v.push(b));
                continue;
            };
            // Subject sets hold local endpoints, so walking their addresses is cheap; a wide range is
            // checked against the local addresses instead.
            for (s, e) in set.ranges() {
                let (s, e) = (u32::from(s), u32::from(e));
                if e - s < 4096 {
                    for a in s..=e {
                        if let Some(i) = index.get(&Ipv4Addr::from(a)) {
                            out.selected[*i].push(b);
                        }
                    }
                } else {
                    for (i, a) in locals.iter().enumerate() {
                        if (s..=e).contains(&u32::from(*a)) {
                            out.selected[i].push(b);
                        }
                    }
                }
            }
        }
        out
    }
}

/// The kernel objects that realize `ruleset`, rendered from scratch.
pub fn model(ruleset: &NodeRuleset) -> TableModel {
    Renderer::default().model(ruleset)
}

impl Renderer {
    /// The kernel objects that realize `ruleset`, rendering only the rules and sets the last build did
    /// not have.
    pub fn model(&mut self, ruleset: &NodeRuleset) -> TableModel {
        let mut out = TableModel::default();
        // Both sorted by name: one walk pairs each set with what the last build made of it.
        let mut last_sets = std::mem::take(&mut self.sets).into_iter().peekable();
        let mut sets = Vec::with_capacity(ruleset.sets.len());
        for (name, members) in &ruleset.sets {
            while last_sets.next_if(|(n, _)| n < name).is_some() {}
            let set = match last_sets.next_if(|(n, _)| n == name) {
                Some((n, set)) if set.members == *members => (n, set),
                _ => {
                    let ranges: Vec<(Ipv4Addr, Ipv4Addr)> = members.ranges().collect();
                    let interval = is_interval(&ranges);
                    (
                        name.clone(),
                        RenderedSet {
                            members: members.clone(),
                            name: kernel_set_name(name, interval),
                            set: KernelSet {
                                interval,
                                ranges: ranges.into(),
                            },
                        },
                    )
                }
            };
            sets.push(set);
        }
        out.sets = sets
            .iter()
            .map(|(_, s)| (s.name.clone(), s.set.clone()))
            .collect();
        let kinds: Kinds<'_> = sets
            .iter()
            .map(|(n, s)| (n.as_str(), s.set.interval))
            .collect();
        self.build += 1;
        let build = self.build;
        let mut render = RuleRender {
            cache: &mut self.rules,
            build,
            kinds: &kinds,
        };
        let locals: Vec<Ipv4Addr> = ruleset
            .local
            .iter()
            .flat_map(|e| e.addresses.iter().copied())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let index: HashMap<Ipv4Addr, usize, foldhash::fast::RandomState> =
            locals.iter().enumerate().map(|(i, a)| (*a, i)).collect();
        for dir in [Direction::Egress, Direction::Ingress] {
            let d = crate::compile::direction_str(dir);
            let tier = |t: Tier| -> Vec<&Rule> {
                ruleset
                    .chains(dir)
                    .iter()
                    .filter(|c| c.tier == t)
                    .flat_map(|c| c.rules.iter())
                    .collect()
            };
            let baseline = {
                let rendered: Vec<Rendered> = tier(Tier::Baseline)
                    .into_iter()
                    .map(|r| render.rule(r))
                    .collect();
                let name = chain_name("z_", &[d, "baseline"], rendered.iter().map(|r| r.hash));
                out.chains.insert(
                    name.clone(),
                    ChainBody::Rules(rendered.into_iter().map(|r| r.rule).collect()),
                );
                name
            };
            let admin = Blocks::split(
                &mut render,
                ruleset,
                dir,
                &tier(Tier::Admin),
                &index,
                &locals,
            );
            let namespace = Blocks::split(
                &mut render,
                ruleset,
                dir,
                &tier(Tier::Namespace),
                &index,
                &locals,
            );
            // Namespace-tier blocks are chains of their own, shared by every class that jumps to them.
            let namespace_chains: Vec<String> = namespace
                .bodies
                .iter()
                .zip(&namespace.hashes)
                .map(|(rules, hashes)| {
                    let name = chain_name("b_", &[d, "namespace"], hashes.iter().copied());
                    out.chains
                        .insert(name.clone(), ChainBody::Rules(rules.clone()));
                    name
                })
                .collect();
            // Admin blocks before a class's first Pass are shared chains too, named once here rather
            // than once per class that jumps to them.
            let admin_chains: Vec<String> = admin
                .hashes
                .iter()
                .map(|hashes| chain_name("a_", &[d, "admin-block"], hashes.iter().copied()))
                .collect();
            let mut classes: HashMap<(&[usize], &[usize]), Arc<str>, foldhash::fast::RandomState> =
                HashMap::default();
            for (i, addr) in locals.iter().enumerate() {
                let key = (
                    admin.selected[i].as_slice(),
                    namespace.selected[i].as_slice(),
                );
                let class = classes.entry(key).or_insert_with(|| {
                    let mut jumps = Vec::new();
                    // Admin blocks without a Pass are chains of their own, shared like namespace
                    // blocks (so a new endpoint rarely needs a new rule chain). From the first block
                    // with a Pass on, the class's remaining admin blocks are inlined in one chain: a
                    // Pass must leave the whole admin tier, which a `return` from that one chain does.
                    let first_pass = key
                        .0
                        .iter()
                        .position(|b| admin.passes.get(*b).copied().unwrap_or(true))
                        .unwrap_or(key.0.len());
                    for b in &key.0[..first_pass] {
                        let (Some(rules), Some(name)) =
                            (admin.bodies.get(*b), admin_chains.get(*b))
                        else {
                            continue;
                        };
                        if !out.chains.contains_key(name) {
                            out.chains
                                .insert(name.clone(), ChainBody::Rules(rules.clone()));
                        }
                        jumps.push(name.clone());
                    }
                    if first_pass < key.0.len() {
                        let inlined = &key.0[first_pass..];
                        let rules: Vec<Arc<NftRule>> = inlined
                            .iter()
                            .filter_map(|b| admin.bodies.get(*b))
                            .flatten()
                            .cloned()
                            .collect();
                        let name = chain_name(
                            "a_",
                            &[d, "admin"],
                            inlined
                                .iter()
                                .filter_map(|b| admin.hashes.get(*b))
                                .flatten()
                                .copied(),
                        );
                        out.chains.insert(name.clone(), ChainBody::Rules(rules));
                        jumps.push(name);
                    }
                    jumps.extend(
                        key.1
                            .iter()
                            .filter_map(|b| namespace_chains.get(*b).cloned()),
                    );
                    let mut labels = vec![d, "class", baseline.as_str()];
                    labels.extend(jumps.iter().map(String::as_str));
                    let name = chain_name("c_", &labels, []);
                    out.chains.insert(
                        name.clone(),
                        ChainBody::Dispatch {
                            jumps,
                            goto: baseline.clone(),
                        },
                    );
                    Arc::from(name)
                });
                out.dispatch_mut(dir).insert(*addr, class.clone());
            }
        }
        drop(kinds);
        self.rules.retain(|_, r| r.used == build);
        self.sets = sets;
        out
    }
}

/// What is in `old` and not in `new`, and what is in `new` and not in `old` (both sorted).
fn sorted_difference<T: Ord + Copy>(old: &[T], new: &[T]) -> (Vec<T>, Vec<T>) {
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
                let _ = writeln!(out, "\t\t{r}");
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

/// One `nft -f` transaction that replaces Seam's tables with `model` atomically (the kernel applies a batch
/// all or nothing, so packets see the old tables or the new ones, never neither).
pub fn full_text(model: &TableModel) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "table {TABLE} {{}}");
    let _ = writeln!(out, "delete table {TABLE}");
    out.push_str("table bridge seam {}\ndelete table bridge seam\n");
    let _ = writeln!(out, "table {TABLE} {{");
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
    for dir in [Direction::Egress, Direction::Ingress] {
        let _ = writeln!(out, "\tmap {} {{", dispatch_map(dir));
        out.push_str("\t\ttype ipv4_addr : verdict\n");
        let entries = model.dispatch(dir);
        if !entries.is_empty() {
            let items: Vec<String> = entries
                .iter()
                .map(|(a, c)| format!("{a} : goto {c}"))
                .collect();
            let _ = writeln!(out, "\t\telements = {{ {} }}", items.join(", "));
        }
        out.push_str("\t}\n");
    }
    for (name, body) in &model.chains {
        let _ = writeln!(out, "\tchain {name} {{");
        chain_lines(&mut out, body);
        out.push_str("\t}\n");
    }
    for (dir, field, priority) in [
        (Direction::Egress, "saddr", "filter"),
        (Direction::Ingress, "daddr", "filter + 10"),
    ] {
        let _ = writeln!(
            out,
            "\tchain {} {{\n\t\ttype filter hook forward priority {priority}; policy accept;\n\t\tct state established,related accept\n\t\tct state invalid drop\n\t\tip {field} vmap @{}\n\t}}",
            crate::compile::direction_str(dir),
            dispatch_map(dir)
        );
    }
    out.push_str("}\n");
    out.push_str(
        "table bridge seam {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tiifname \"sv*\" ether type ip6 counter drop comment \"ipv6-on-segments\"\n\t\tiifname \"seam-v*\" ether type ip6 counter drop comment \"ipv6-on-segments\"\n\t\tiifname \"tv*\" ether type ip6 counter drop comment \"ipv6-on-segments\"\n\t}\n}\n",
    );
    out
}

/// The keys of two sorted maps in one walk, each with its value in `old` and in `new`.
fn paired<'a, K: Ord, V>(
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
    for dir in [Direction::Egress, Direction::Ingress] {
        let (mut stale, mut fresh) = (Vec::new(), Vec::new());
        for (addr, before, now) in paired(old.dispatch(dir), new.dispatch(dir)) {
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
        let map = dispatch_map(dir).to_string();
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
    gone_chains.sort_by_key(|n| (!n.starts_with("c_"), n.as_str()));
    let mut chain_cleanup: Vec<TableOp> = gone_chains
        .into_iter()
        .map(|name| TableOp::DeleteChain { name: name.clone() })
        .collect();
    chain_cleanup.append(&mut cleanup);
    FirewallDelta {
        switch,
        cleanup: chain_cleanup,
    }
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

fn parse_range(v: &Value) -> Option<(Ipv4Addr, Ipv4Addr)> {
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

/// The model of the table the kernel holds, from `nft -j list table inet seam`; `None` when it is not a table
/// this renderer made (another layout or version, or anything it cannot read), which the caller replaces whole.
pub fn from_nft_json(text: &str) -> Option<TableModel> {
    let value: Value = serde_json::from_str(text).ok()?;
    let mut out = TableModel::default();
    let mut base = BTreeSet::new();
    let mut maps = BTreeSet::new();
    for item in value.get("nftables")?.as_array()? {
        if let Some(chain) = item.get("chain") {
            let name = chain.get("name")?.as_str()?;
            if BASE_CHAINS.contains(&name) {
                base.insert(name.to_string());
            } else if CHAIN_PREFIXES.iter().any(|p| name.starts_with(p)) {
                out.chains.insert(name.to_string(), ChainBody::Adopted);
            } else {
                return None;
            }
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
            let dir = [Direction::Egress, Direction::Ingress]
                .into_iter()
                .find(|d| dispatch_map(*d) == name)?;
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
                out.dispatch_mut(dir).insert(key, Arc::from(target));
            }
        }
    }
    (base.len() == BASE_CHAINS.len() && maps.len() == 2).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn rule(verdict: seam_nft::NftVerdict) -> NftRule {
        NftRule {
            matches: Vec::new(),
            log_prefix: None,
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
            ChainBody::Rules(vec![rule(seam_nft::NftVerdict::Accept).into()]),
        );
        m.chains.insert(
            "z_1".into(),
            ChainBody::Rules(vec![rule(seam_nft::NftVerdict::Accept).into()]),
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
        let drop = rule(seam_nft::NftVerdict::Drop);
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
}
