//! The compiler's back end: a node's [`NodeRuleset`] → the kernel objects of `table inet seam`
//! ([`TableModel`], whose layout and why it is so are described in [`seam_nft::table`]). Rules go
//! to class chains, policy chains and baseline chains named by hashes of what they hold; what
//! the last build rendered is kept ([`Renderer`]) so that the next one renders only what changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use seam_nft::names::{
    chain_name, fnv1a, kernel_set_name, ADMIN_CHAIN_PREFIX, BASELINE_CHAIN_PREFIX,
    CLASS_CHAIN_PREFIX, NAMESPACE_CHAIN_PREFIX,
};
use seam_nft::table::{is_interval, ChainBody, KernelSet, TableModel};
use seam_nft::{FlowSampling, NftRule};
use seam_policy::Direction;

use super::nft_rule;
use crate::addr::AddrSet;
use crate::ir::{AddrMatch, NodeRuleset, Rule, Tier};

/// The verdict map of a direction in `model`.
fn dispatch_mut(model: &mut TableModel, direction: Direction) -> &mut BTreeMap<Ipv4Addr, Arc<str>> {
    match direction {
        Direction::Egress => &mut model.egress,
        Direction::Ingress => &mut model.ingress,
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
    /// By direction (egress, ingress): a rule's samples name the direction it is rendered in.
    rules: [RuleCache; 2],
    /// Flow samples in every policy rule, when set.
    sampling: Option<FlowSampling>,
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
    sampling: Option<(&'a FlowSampling, Direction)>,
}

impl RuleRender<'_, '_> {
    /// A rule as rendered before (when its sets are of the same kinds), or rendered now. One hash
    /// lookup per rule: most of a build's rules were in the last one.
    fn rule(&mut self, rule: &Rule) -> Rendered {
        let want = rule_kinds(rule, self.kinds);
        if let Some(r) = self.cache.get_mut(rule) {
            if r.kinds != want {
                *r = render_rule(rule, self.kinds, want, self.sampling);
            }
            r.used = self.build;
            return r.clone();
        }
        let mut r = render_rule(rule, self.kinds, want, self.sampling);
        r.used = self.build;
        self.cache.insert(rule.clone(), r.clone());
        r
    }
}

fn render_rule(
    rule: &Rule,
    kinds: &Kinds<'_>,
    want: u64,
    sampling: Option<(&FlowSampling, Direction)>,
) -> Rendered {
    let name = |ir: &str| kernel_set_name(ir, kinds.get(ir).copied().unwrap_or(true));
    let nft = nft_rule(rule, &name, sampling);
    let hash = fnv1a(&nft.to_string());
    Rendered {
        rule: Arc::new(nft),
        hash,
        kinds: want,
        used: 0,
    }
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
    /// A renderer whose rules send flow samples as `sampling` says (`None`: no samples, no log
    /// statements at all but Contracts' own).
    pub fn with_sampling(sampling: Option<FlowSampling>) -> Renderer {
        Renderer {
            sampling,
            ..Renderer::default()
        }
    }

    /// The flow sampling this renderer writes.
    pub fn sampling(&self) -> Option<FlowSampling> {
        self.sampling
    }

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
        let locals: Vec<Ipv4Addr> = ruleset
            .local
            .iter()
            .flat_map(|e| e.addresses.iter().copied())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let index: HashMap<Ipv4Addr, usize, foldhash::fast::RandomState> =
            locals.iter().enumerate().map(|(i, a)| (*a, i)).collect();
        let [egress_cache, ingress_cache] = &mut self.rules;
        for (dir, cache) in [
            (Direction::Egress, egress_cache),
            (Direction::Ingress, ingress_cache),
        ] {
            let d = crate::compile::direction_str(dir);
            let mut render = RuleRender {
                cache,
                build,
                kinds: &kinds,
                sampling: self.sampling.as_ref().map(|s| (s, dir)),
            };
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
                let name = chain_name(
                    BASELINE_CHAIN_PREFIX,
                    &[d, "baseline"],
                    rendered.iter().map(|r| r.hash),
                );
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
                    let name = chain_name(
                        NAMESPACE_CHAIN_PREFIX,
                        &[d, "namespace"],
                        hashes.iter().copied(),
                    );
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
                .map(|hashes| {
                    chain_name(
                        ADMIN_CHAIN_PREFIX,
                        &[d, "admin-block"],
                        hashes.iter().copied(),
                    )
                })
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
                            ADMIN_CHAIN_PREFIX,
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
                    let name = chain_name(CLASS_CHAIN_PREFIX, &labels, []);
                    out.chains.insert(
                        name.clone(),
                        ChainBody::Dispatch {
                            jumps,
                            goto: baseline.clone(),
                        },
                    );
                    Arc::from(name)
                });
                dispatch_mut(&mut out, dir).insert(*addr, class.clone());
            }
        }
        drop(kinds);
        for cache in &mut self.rules {
            cache.retain(|_, r| r.used == build);
        }
        self.sets = sets;
        out
    }
}
