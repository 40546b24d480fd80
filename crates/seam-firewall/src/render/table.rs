//! The compiler's back end: a node's [`NodeRuleset`] → the kernel objects of `table inet seam`
//! ([`TableModel`], whose layout and why it is so are described in [`seam_nft::table`]). Rules go
//! to class chains, policy chains and baseline chains named by hashes of what they hold; what
//! the last build rendered is kept ([`Renderer`]) so that the next one renders only what changed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
use crate::ir::{AddrMatch, NodeRuleset, Rule, Tier, TierChain};

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

/// The sets a block can match a local endpoint through: every rule of the block tests the local
/// end against one of them (`In`), so a local address in none of them matches no rule of the
/// block, which its class then need not jump to. A set every rule tests comes alone; otherwise
/// each rule's first one. `None` when some rule tests the local end against no set it must be in:
/// the block may match any local endpoint.
fn block_subjects<'r>(direction: Direction, rules: &[&'r Rule]) -> Option<Vec<&'r str>> {
    let local = |r: &'r Rule| -> &'r [AddrMatch] {
        match direction {
            Direction::Egress => &r.src,
            Direction::Ingress => &r.dst,
        }
    };
    let first_in = |r: &'r Rule| {
        local(r).iter().find_map(|m| match m {
            AddrMatch::In(name) => Some(name.as_str()),
            AddrMatch::NotIn(_) => None,
        })
    };
    let first = rules.first()?;
    let common = local(first).iter().find_map(|m| match m {
        AddrMatch::In(name)
            if rules
                .iter()
                .all(|r| local(r).contains(&AddrMatch::In(name.clone()))) =>
        {
            Some(name.as_str())
        }
        _ => None,
    });
    if let Some(common) = common {
        return Some(vec![common]);
    }
    let mut out: Vec<&str> = Vec::new();
    for r in rules {
        let name = first_in(r)?;
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Some(out)
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
    /// By direction (egress, ingress): what the last build made of its rules.
    dirs: [Option<DirectionCache>; 2],
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

/// The rules of one tier cut into blocks (one per policy: consecutive rules of one policy id), with
/// the sets that say which local endpoints each block can match.
#[derive(Debug)]
struct Blocks {
    bodies: Vec<Vec<Arc<NftRule>>>,
    /// The hashes of each block's rules.
    hashes: Vec<Vec<u64>>,
    /// Whether the block has a Pass rule.
    passes: Vec<bool>,
    /// The IR sets of [`block_subjects`]; `None`: the block may match any local endpoint.
    subjects: Vec<Option<Vec<String>>>,
}

impl Blocks {
    fn render(render: &mut RuleRender<'_, '_>, dir: Direction, rules: &[&Rule]) -> Blocks {
        let mut out = Blocks {
            bodies: Vec::new(),
            hashes: Vec::new(),
            passes: Vec::new(),
            subjects: Vec::new(),
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
            let rendered: Vec<Rendered> = block.iter().map(|r| render.rule(r)).collect();
            out.hashes.push(rendered.iter().map(|r| r.hash).collect());
            out.bodies
                .push(rendered.into_iter().map(|r| r.rule).collect());
            out.passes
                .push(block.iter().any(|r| r.action == crate::ir::Action::Pass));
            out.subjects.push(
                block_subjects(dir, block)
                    .map(|names| names.into_iter().map(str::to_string).collect()),
            );
        }
        out
    }

    /// For each local address (in the order given), the blocks that can match it.
    fn select(
        &self,
        ruleset: &NodeRuleset,
        index: &HashMap<Ipv4Addr, usize, foldhash::fast::RandomState>,
        locals: &[Ipv4Addr],
    ) -> Vec<Vec<usize>> {
        let mut selected = vec![Vec::new(); locals.len()];
        for (b, subjects) in self.subjects.iter().enumerate() {
            let sets = subjects.as_ref().and_then(|names| {
                names
                    .iter()
                    .map(|n| ruleset.sets.get(n))
                    .collect::<Option<Vec<_>>>()
            });
            let Some(sets) = sets else {
                selected.iter_mut().for_each(|v| v.push(b));
                continue;
            };
            let mut select = |i: usize| {
                // A block is selected once per address, whichever of its sets holds it.
                if selected[i].last() != Some(&b) {
                    selected[i].push(b);
                }
            };
            for set in sets {
                // Subject sets mostly hold local endpoints, so walking their addresses is cheap; a
                // wide range, or a set with more ranges than the node has endpoints, is checked
                // against the local addresses instead.
                if set.range_count() > locals.len() {
                    for (i, a) in locals.iter().enumerate() {
                        if set.contains(*a) {
                            select(i);
                        }
                    }
                    continue;
                }
                for (s, e) in set.ranges() {
                    let (s, e) = (u32::from(s), u32::from(e));
                    if e - s < 4096 {
                        for a in s..=e {
                            if let Some(i) = index.get(&Ipv4Addr::from(a)) {
                                select(*i);
                            }
                        }
                    } else {
                        for (i, a) in locals.iter().enumerate() {
                            if (s..=e).contains(&u32::from(*a)) {
                                select(i);
                            }
                        }
                    }
                }
            }
        }
        selected
    }
}

/// A class chain and the chains only it brings into the table (admin blocks, an inlined admin
/// chain), by name.
#[derive(Debug)]
struct Class {
    name: Arc<str>,
    chains: Vec<(String, ChainBody)>,
    /// The last build that used it.
    used: u64,
}

/// One direction as the last build rendered it. While the ruleset's rules of the direction and the
/// kinds of the sets stay the same (a pod added or a label changed mostly changes set members and
/// the dispatch), the next build reuses it whole: only the blocks each local endpoint selects are
/// found again.
#[derive(Debug)]
struct DirectionCache {
    /// The rules it was rendered from.
    rules: Vec<TierChain>,
    /// The baseline chain.
    baseline: (String, ChainBody),
    admin: Blocks,
    namespace: Blocks,
    /// Each namespace block's chain (name, body): every one is in the table.
    namespace_chains: Vec<(String, ChainBody)>,
    /// Each admin block's name as a chain of its own.
    admin_chains: Vec<String>,
    /// The IR sets its rules test.
    sets: HashSet<String, foldhash::fast::RandomState>,
    /// Class chains by their key: the admin blocks, `usize::MAX`, the namespace blocks.
    classes: HashMap<Vec<usize>, Class, foldhash::fast::RandomState>,
}

/// The kernel objects that realize `ruleset`, rendered from scratch.
pub fn model(ruleset: &NodeRuleset) -> TableModel {
    Renderer::default().model(ruleset)
}

impl DirectionCache {
    fn render(
        render: &mut RuleRender<'_, '_>,
        ruleset: &NodeRuleset,
        dir: Direction,
    ) -> DirectionCache {
        let d = crate::compile::direction_str(dir);
        let tier = |t: Tier| -> Vec<&Rule> {
            ruleset
                .chains(dir)
                .iter()
                .filter(|c| c.tier == t)
                .flat_map(|c| c.rules.iter())
                .collect()
        };
        let rendered: Vec<Rendered> = tier(Tier::Baseline)
            .into_iter()
            .map(|r| render.rule(r))
            .collect();
        let baseline = (
            chain_name(
                BASELINE_CHAIN_PREFIX,
                &[d, "baseline"],
                rendered.iter().map(|r| r.hash),
            ),
            ChainBody::Rules(rendered.into_iter().map(|r| r.rule).collect()),
        );
        let admin = Blocks::render(render, dir, &tier(Tier::Admin));
        let namespace = Blocks::render(render, dir, &tier(Tier::Namespace));
        // Namespace-tier blocks are chains of their own, shared by every class that jumps to them.
        let namespace_chains = namespace
            .bodies
            .iter()
            .zip(&namespace.hashes)
            .map(|(rules, hashes)| {
                let name = chain_name(
                    NAMESPACE_CHAIN_PREFIX,
                    &[d, "namespace"],
                    hashes.iter().copied(),
                );
                (name, ChainBody::Rules(rules.clone()))
            })
            .collect();
        // Admin blocks before a class's first Pass are shared chains too, named once here rather
        // than once per class that jumps to them.
        let admin_chains = admin
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
        let sets = ruleset
            .chains(dir)
            .iter()
            .flat_map(|c| &c.rules)
            .flat_map(|r| r.src.iter().chain(&r.dst))
            .map(|m| match m {
                AddrMatch::In(n) | AddrMatch::NotIn(n) => n.clone(),
            })
            .collect();
        DirectionCache {
            rules: ruleset.chains(dir).to_vec(),
            sets,
            baseline,
            admin,
            namespace,
            namespace_chains,
            admin_chains,
            classes: HashMap::default(),
        }
    }

    /// The class chain of the local endpoints that select these admin and namespace blocks.
    fn class(&self, dir: Direction, admin: &[usize], namespace: &[usize], used: u64) -> Class {
        let d = crate::compile::direction_str(dir);
        let mut chains = Vec::new();
        let mut jumps = Vec::new();
        // Admin blocks without a Pass are chains of their own, shared like namespace blocks (so a
        // new endpoint rarely needs a new rule chain). From the first block with a Pass on, the
        // class's remaining admin blocks are inlined in one chain: a Pass must leave the whole
        // admin tier, which a `return` from that one chain does.
        let first_pass = admin
            .iter()
            .position(|b| self.admin.passes.get(*b).copied().unwrap_or(true))
            .unwrap_or(admin.len());
        for b in &admin[..first_pass] {
            let (Some(rules), Some(name)) = (self.admin.bodies.get(*b), self.admin_chains.get(*b))
            else {
                continue;
            };
            chains.push((name.clone(), ChainBody::Rules(rules.clone())));
            jumps.push(name.clone());
        }
        if first_pass < admin.len() {
            let inlined = &admin[first_pass..];
            let rules: Vec<Arc<NftRule>> = inlined
                .iter()
                .filter_map(|b| self.admin.bodies.get(*b))
                .flatten()
                .cloned()
                .collect();
            let name = chain_name(
                ADMIN_CHAIN_PREFIX,
                &[d, "admin"],
                inlined
                    .iter()
                    .filter_map(|b| self.admin.hashes.get(*b))
                    .flatten()
                    .copied(),
            );
            chains.push((name.clone(), ChainBody::Rules(rules)));
            jumps.push(name);
        }
        jumps.extend(
            namespace
                .iter()
                .filter_map(|b| self.namespace_chains.get(*b).map(|(n, _)| n.clone())),
        );
        let baseline = &self.baseline.0;
        let mut labels = vec![d, "class", baseline.as_str()];
        labels.extend(jumps.iter().map(String::as_str));
        let name = chain_name(CLASS_CHAIN_PREFIX, &labels, []);
        chains.push((
            name.clone(),
            ChainBody::Dispatch {
                jumps,
                goto: baseline.clone(),
            },
        ));
        Class {
            name: Arc::from(name),
            chains,
            used,
        }
    }
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
        // The sets that came, went or changed kind: rules name sets by kind, so a direction whose
        // rules test one of them is rendered again (through the rule cache), not reused.
        let mut changed_kinds: Vec<String> = Vec::new();
        for (name, members) in &ruleset.sets {
            while let Some((gone, _)) = last_sets.next_if(|(n, _)| n < name) {
                changed_kinds.push(gone);
            }
            let set = match last_sets.next_if(|(n, _)| n == name) {
                Some((n, set)) if set.members == *members => (n, set),
                last => {
                    let ranges: Vec<(Ipv4Addr, Ipv4Addr)> = members.ranges().collect();
                    let interval = is_interval(&ranges);
                    if last.is_none_or(|(_, l)| l.set.interval != interval) {
                        changed_kinds.push(name.clone());
                    }
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
        changed_kinds.extend(last_sets.map(|(n, _)| n));
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
        for (i, dir) in [Direction::Egress, Direction::Ingress]
            .into_iter()
            .enumerate()
        {
            let reuse = self.dirs[i].as_ref().is_some_and(|c| {
                c.rules == ruleset.chains(dir) && !changed_kinds.iter().any(|n| c.sets.contains(n))
            });
            if !reuse {
                let mut render = RuleRender {
                    cache: &mut self.rules[i],
                    build,
                    kinds: &kinds,
                    sampling: self.sampling.as_ref().map(|s| (s, dir)),
                };
                self.dirs[i] = Some(DirectionCache::render(&mut render, ruleset, dir));
                // The rules this build did not use go; a reused direction keeps its rules as they were.
                self.rules[i].retain(|_, r| r.used == build);
            }
            let Some(cache) = self.dirs[i].as_mut() else {
                continue;
            };
            out.chains
                .insert(cache.baseline.0.clone(), cache.baseline.1.clone());
            for (name, body) in &cache.namespace_chains {
                out.chains.insert(name.clone(), body.clone());
            }
            let admin = cache.admin.select(ruleset, &index, &locals);
            let namespace = cache.namespace.select(ruleset, &index, &locals);
            let mut key = Vec::new();
            for (l, addr) in locals.iter().enumerate() {
                key.clear();
                key.extend_from_slice(&admin[l]);
                key.push(usize::MAX);
                key.extend_from_slice(&namespace[l]);
                let class = match cache.classes.get_mut(key.as_slice()) {
                    Some(class) => class,
                    None => {
                        let class = cache.class(dir, &admin[l], &namespace[l], 0);
                        cache.classes.entry(key.clone()).or_insert(class)
                    }
                };
                if class.used != build {
                    class.used = build;
                    for (name, body) in &class.chains {
                        if !out.chains.contains_key(name) {
                            out.chains.insert(name.clone(), body.clone());
                        }
                    }
                }
                dispatch_mut(&mut out, dir).insert(*addr, class.name.clone());
            }
            cache.classes.retain(|_, c| c.used == build);
        }
        drop(kinds);
        self.sets = sets;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Action, L4Match, LocalEndpoint, RuleId};
    use crate::render::nft_comment;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn rule(id: &str, dst: Vec<AddrMatch>, action: Action) -> Rule {
        Rule {
            id: RuleId(id.into()),
            src: Vec::new(),
            dst,
            l4: L4Match::Any,
            action,
            log: false,
        }
    }

    /// Three local endpoints; the namespace tier's policy `p` has one rule for each of two sets
    /// and none for the third endpoint, `q` one rule that tests no set the local end must be in.
    fn ruleset() -> NodeRuleset {
        let mut rs = NodeRuleset::default();
        for (name, addrs) in [
            ("sa", vec![a("10.0.0.1")]),
            ("sb", vec![a("10.0.0.2")]),
            ("other", vec![a("10.9.0.0")]),
        ] {
            rs.sets.insert(name.into(), AddrSet::from_addrs(addrs));
        }
        rs.local = ["a", "b", "c"]
            .iter()
            .zip(["10.0.0.1", "10.0.0.2", "10.0.0.3"])
            .map(|(n, ip)| LocalEndpoint {
                name: format!("x/{n}"),
                addresses: vec![a(ip)],
            })
            .collect();
        let into = |s: &str| AddrMatch::In(s.into());
        rs.ingress = crate::compile::tier_chains(Default::default());
        for chain in &mut rs.ingress {
            match chain.tier {
                Tier::Namespace => {
                    chain.rules = vec![
                        rule("np/x/p/ingress/0", vec![into("sa")], Action::Allow),
                        rule("np/x/p/ingress/1", vec![into("sb")], Action::Deny),
                        rule(
                            "np/x/q/ingress/0",
                            vec![AddrMatch::NotIn("other".into())],
                            Action::Allow,
                        ),
                    ]
                }
                Tier::Baseline => {
                    chain.rules = vec![rule("baseline/ingress", Vec::new(), Action::Deny)]
                }
                Tier::Admin => {}
            }
        }
        rs
    }

    /// The rule chains the class of `addr` jumps to, by the ids of their rules.
    fn jumps(model: &TableModel, addr: &str) -> Vec<Vec<String>> {
        let Some(ChainBody::Dispatch { jumps, .. }) = model.chains.get(&*model.ingress[&a(addr)])
        else {
            panic!("no class chain for {addr}");
        };
        jumps
            .iter()
            .map(|j| match &model.chains[j] {
                ChainBody::Rules(rules) => rules.iter().map(|r| r.comment.clone()).collect(),
                other => panic!("{j} is {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_class_jumps_only_to_the_blocks_that_can_match_its_endpoints() {
        let model = model(&ruleset());
        let p = vec![
            nft_comment(&RuleId("np/x/p/ingress/0".into())),
            nft_comment(&RuleId("np/x/p/ingress/1".into())),
        ];
        let q = vec![nft_comment(&RuleId("np/x/q/ingress/0".into()))];
        // `p` tests sa or sb in every rule: only their endpoints meet it; `q` everyone does.
        assert_eq!(jumps(&model, "10.0.0.1"), [p.clone(), q.clone()]);
        assert_eq!(jumps(&model, "10.0.0.2"), [p, q.clone()]);
        assert_eq!(jumps(&model, "10.0.0.3"), [q]);
    }

    #[test]
    fn a_reused_direction_renders_what_a_fresh_renderer_does() {
        let mut renderer = Renderer::default();
        let mut rs = ruleset();
        assert_eq!(renderer.model(&rs), model(&rs));
        // A member joins `sb` (rules unchanged: the direction is reused), then `sb` turns into
        // an interval set (its rules name it anew), then a rule changes.
        rs.sets.insert(
            "sb".into(),
            AddrSet::from_addrs([a("10.0.0.2"), a("10.0.0.3")]),
        );
        assert_eq!(renderer.model(&rs), model(&rs));
        let mut wide = AddrSet::new();
        wide.insert_range(u32::from(a("10.0.0.2")), u32::from(a("10.0.255.255")));
        rs.sets.insert("sb".into(), wide);
        assert_eq!(renderer.model(&rs), model(&rs));
        rs.ingress[1].rules[0].action = Action::Deny;
        assert_eq!(renderer.model(&rs), model(&rs));
    }
}
