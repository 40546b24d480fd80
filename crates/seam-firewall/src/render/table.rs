//! The compiler's back end: a node's [`NodeRuleset`] → the kernel objects of `table inet seam`
//! ([`TableModel`], whose layout and why it is so are described in [`seam_nft::table`]). Rules go
//! to class chains, policy chains and baseline chains named by hashes of what they hold; what
//! the last build rendered is kept ([`Renderer`]) so that the next one renders only what changed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use seam_nft::names::{
    chain_name, fnv1a, kernel_set_name, ADMIN_CHAIN_PREFIX, BASELINE_CHAIN_PREFIX,
    CLASS_CHAIN_PREFIX, NAMESPACE_CHAIN_PREFIX,
};
use seam_nft::table::{is_interval, ChainBody, KernelSet, TableModel};
use seam_nft::{FirewallDelta, FlowSampling, NftRule};
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
    /// The local addresses of the last build, sorted.
    locals: Vec<Ipv4Addr>,
    /// The last build's table, which the next build changes in place.
    table: Table,
    /// The last build's [`Renderer::stamp`].
    stamp: u64,
    /// How many directions whose rules changed kept the classes of the blocks that stayed.
    #[cfg(test)]
    adopted: usize,
}

/// The last stamp given to a build, by any renderer of the process.
static STAMPS: AtomicU64 = AtomicU64::new(0);

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
    /// Each block's [`block_id`].
    ids: Vec<u64>,
}

/// What names a block in class keys: a hash of its rules' hashes (as its chain's name is) and
/// whether it passes. Unlike its index it stays while blocks before it come and go, so the
/// classes of the blocks that stayed stay too.
fn block_id(hashes: &[u64], passes: bool) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in hashes.iter().copied().chain([u64::from(passes)]) {
        h = (h ^ x).wrapping_mul(0x0000_0100_0000_01b3);
    }
    // The separator of a class key's tiers.
    h.min(SEPARATOR - 1)
}

impl Blocks {
    fn render(render: &mut RuleRender<'_, '_>, dir: Direction, rules: &[&Rule]) -> Blocks {
        let mut out = Blocks {
            bodies: Vec::new(),
            hashes: Vec::new(),
            passes: Vec::new(),
            subjects: Vec::new(),
            ids: Vec::new(),
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
            let hashes: Vec<u64> = rendered.iter().map(|r| r.hash).collect();
            let passes = block.iter().any(|r| r.action == crate::ir::Action::Pass);
            out.ids.push(block_id(&hashes, passes));
            out.hashes.push(hashes);
            out.bodies
                .push(rendered.into_iter().map(|r| r.rule).collect());
            out.passes.push(passes);
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
    /// How many local addresses go to it.
    refs: usize,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The blocks a local address can meet in one direction, which name its class: the admin
/// blocks' ids ([`block_id`]), [`SEPARATOR`], the namespace blocks' ids.
type Key = Vec<u64>;

/// Ends the admin blocks of a [`Key`].
const SEPARATOR: u64 = u64::MAX;

/// Above this many local addresses whose blocks may have changed, they are all found again in one
/// walk of the blocks' sets ([`Blocks::select`]) rather than one address at a time.
const FEW_LOCALS: usize = 64;

/// One direction as the last build rendered it. While the ruleset's rules of the direction and the
/// kinds of the sets stay the same (a pod added or a label changed mostly changes set members and
/// the dispatch), the next build reuses it whole: only the local addresses that came, or that
/// came into or left one of the blocks' subject sets, have their class found again.
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
    /// The blocks' subject sets (by IR name) with their members as of the last build.
    subjects: Vec<(String, AddrSet)>,
    /// Where each subject set is in `subjects`.
    subject_index: FastMap<String, usize>,
    /// Each admin block's subject sets (indices into `subjects`); `None`: the block may match
    /// any local endpoint (as [`Blocks::select`] decides).
    admin_subjects: Vec<Option<Vec<usize>>>,
    /// The same for each namespace block.
    namespace_subjects: Vec<Option<Vec<usize>>>,
    /// Where each admin block is by its id.
    admin_at: FastMap<u64, usize>,
    /// Where each namespace block is by its id.
    namespace_at: FastMap<u64, usize>,
    /// Each local address's class key.
    keys: FastMap<Ipv4Addr, Key>,
    /// Class chains by their key.
    classes: FastMap<Key, Class>,
    /// How many classes bring each of the chains classes bring (admin chains, class chains): a
    /// chain is in the table while one does.
    chain_refs: FastMap<String, usize>,
}

/// The kernel objects that realize `ruleset`, rendered from scratch.
pub fn model(ruleset: &NodeRuleset) -> TableModel {
    Renderer::default().model(ruleset)
}

/// The subject sets of `blocks` resolved to indices into `subjects` (added as met), or `None` for
/// a block [`Blocks::select`] sends every local address to (no subject set, or one the ruleset
/// lacks).
fn resolve_subjects(
    blocks: &Blocks,
    ruleset: &NodeRuleset,
    subjects: &mut Vec<(String, AddrSet)>,
    index: &mut FastMap<String, usize>,
) -> Vec<Option<Vec<usize>>> {
    blocks
        .subjects
        .iter()
        .map(|names| {
            let names = names.as_ref()?;
            names
                .iter()
                .map(|n| {
                    let members = ruleset.sets.get(n)?;
                    Some(*index.entry(n.clone()).or_insert_with(|| {
                        subjects.push((n.clone(), members.clone()));
                        subjects.len() - 1
                    }))
                })
                .collect()
        })
        .collect()
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
        let mut subjects = Vec::new();
        let mut subject_index = FastMap::default();
        let admin_subjects = resolve_subjects(&admin, ruleset, &mut subjects, &mut subject_index);
        let namespace_subjects =
            resolve_subjects(&namespace, ruleset, &mut subjects, &mut subject_index);
        let at = |blocks: &Blocks| -> FastMap<u64, usize> {
            blocks
                .ids
                .iter()
                .enumerate()
                .map(|(b, id)| (*id, b))
                .collect()
        };
        DirectionCache {
            admin_at: at(&admin),
            namespace_at: at(&namespace),
            rules: ruleset.chains(dir).to_vec(),
            sets,
            baseline,
            admin,
            namespace,
            namespace_chains,
            admin_chains,
            subjects,
            subject_index,
            admin_subjects,
            namespace_subjects,
            keys: FastMap::default(),
            classes: FastMap::default(),
            chain_refs: FastMap::default(),
        }
    }

    /// The class key of `addr`: the blocks one of whose subject sets holds it, or that have none.
    fn key_of(&self, addr: Ipv4Addr) -> Key {
        let selects = |subjects: &Option<Vec<usize>>| {
            subjects.as_ref().is_none_or(|ix| {
                ix.iter()
                    .any(|i| self.subjects.get(*i).is_some_and(|(_, s)| s.contains(addr)))
            })
        };
        let blocks = |tier: &[Option<Vec<usize>>], ids: &[u64]| {
            tier.iter()
                .zip(ids)
                .filter(|(s, _)| selects(s))
                .map(|(_, id)| *id)
                .collect::<Vec<_>>()
        };
        let mut key = blocks(&self.admin_subjects, &self.admin.ids);
        key.push(SEPARATOR);
        key.extend(blocks(&self.namespace_subjects, &self.namespace.ids));
        key
    }

    /// The class key of the blocks at these indices ([`Blocks::select`]'s).
    fn key_at(&self, admin: &[usize], namespace: &[usize]) -> Key {
        let ids = |blocks: &Blocks, at: &[usize]| -> Vec<u64> {
            at.iter()
                .filter_map(|b| blocks.ids.get(*b).copied())
                .collect()
        };
        let mut key = ids(&self.admin, admin);
        key.push(SEPARATOR);
        key.extend(ids(&self.namespace, namespace));
        key
    }

    /// The class chain of the local endpoints that select these admin and namespace blocks (by
    /// id).
    fn class(&self, dir: Direction, admin: &[u64], namespace: &[u64]) -> Class {
        let admin: Vec<usize> = admin
            .iter()
            .filter_map(|id| self.admin_at.get(id).copied())
            .collect();
        let namespace: Vec<usize> = namespace
            .iter()
            .filter_map(|id| self.namespace_at.get(id).copied())
            .collect();
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
            refs: 0,
        }
    }

    /// One more local address goes to the class of `key`: the class (and the chains it brings)
    /// enters the table with its first one.
    fn acquire(&mut self, dir: Direction, key: &[u64], table: &mut Table) -> Arc<str> {
        if let Some(class) = self.classes.get_mut(key) {
            class.refs += 1;
            return class.name.clone();
        }
        let split = key
            .iter()
            .position(|b| *b == SEPARATOR)
            .unwrap_or(key.len());
        let mut class = self.class(dir, &key[..split], key.get(split + 1..).unwrap_or_default());
        for (name, body) in &class.chains {
            let refs = self.chain_refs.entry(name.clone()).or_insert(0);
            *refs += 1;
            if *refs == 1 {
                table.put_chain(name, body);
            }
        }
        class.refs = 1;
        let name = class.name.clone();
        self.classes.insert(key.to_vec(), class);
        name
    }

    /// One local address less goes to the class of `key`: the class (and the chains only it
    /// brings) leaves the table with its last one.
    fn release(&mut self, key: &[u64], table: &mut Table) {
        let Some(class) = self.classes.get_mut(key) else {
            return;
        };
        class.refs = class.refs.saturating_sub(1);
        if class.refs > 0 {
            return;
        }
        let Some(class) = self.classes.remove(key) else {
            return;
        };
        for (name, _) in &class.chains {
            if let Some(refs) = self.chain_refs.get_mut(name) {
                *refs = refs.saturating_sub(1);
                if *refs == 0 {
                    self.chain_refs.remove(name);
                    table.remove_chain(name);
                }
            }
        }
    }

    /// Sends `addr` to the class of `key` in the dispatch map of direction `i`.
    fn assign(&mut self, dir: Direction, i: usize, addr: Ipv4Addr, key: Key, table: &mut Table) {
        if self.keys.get(&addr) == Some(&key) {
            return;
        }
        // The new class first: chains both classes bring stay in the table.
        let name = self.acquire(dir, &key, table);
        if let Some(old) = self.keys.insert(addr, key) {
            self.release(&old, table);
        }
        table.put_goto(i, addr, name);
    }

    /// `addr` is no longer a local address.
    fn unassign(&mut self, i: usize, addr: Ipv4Addr, table: &mut Table) {
        if let Some(old) = self.keys.remove(&addr) {
            self.release(&old, table);
        }
        table.remove_goto(i, addr);
    }

    /// The names of the chains this direction has in the table.
    fn chain_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.baseline.0.as_str())
            .chain(self.namespace_chains.iter().map(|(n, _)| n.as_str()))
            .chain(self.chain_refs.keys().map(String::as_str))
    }

    /// Takes what this direction put in the table and `next` (the direction rendered again) did
    /// not out of it.
    fn remove_except(&self, next: &DirectionCache, i: usize, table: &mut Table) {
        let keep: HashSet<&str, foldhash::fast::RandomState> = next.chain_names().collect();
        for name in self.chain_names() {
            if !keep.contains(name) {
                table.remove_chain(name);
            }
        }
        for addr in self.keys.keys() {
            if !next.keys.contains_key(addr) {
                table.remove_goto(i, *addr);
            }
        }
    }

    /// Takes over the classes of `old`, this direction as the last build rendered it, when the
    /// two differ in some blocks only (a policy's rules came, went or changed; the baseline
    /// chain and the order of the blocks both have are the same): the blocks both have are the
    /// same chains and name the same classes, so only the local addresses a block that came or
    /// went can match need their class found again. Whether the two differ so.
    fn can_adopt(&self, old: &DirectionCache) -> bool {
        // Ids must name one block each, and the blocks both have must come in the same order, for
        // a key to name the same class chain in both.
        let same_order = |old: &Blocks, new: &Blocks, new_at: &FastMap<u64, usize>| {
            let mut last = None;
            new_at.len() == new.ids.len()
                && old.ids.iter().all(|id| {
                    let Some(b) = new_at.get(id) else {
                        return true;
                    };
                    let ordered = last.is_none_or(|l| l < *b);
                    last = Some(*b);
                    ordered
                })
        };
        old.baseline.0 == self.baseline.0
            && old.admin_at.len() == old.admin.ids.len()
            && old.namespace_at.len() == old.namespace.ids.len()
            && same_order(&old.admin, &self.admin, &self.admin_at)
            && same_order(&old.namespace, &self.namespace, &self.namespace_at)
    }

    /// Takes over the classes of `old`, which [`DirectionCache::can_adopt`]. Returns the local
    /// addresses whose class must be found again (`None`: maybe all of them).
    fn adopt(
        &mut self,
        old: DirectionCache,
        locals: &[Ipv4Addr],
        table: &mut Table,
    ) -> Option<Vec<Ipv4Addr>> {
        let mut moved = Vec::new();
        let mut all = false;
        let mut touch = |subjects: &Option<Vec<usize>>, sets: &[(String, AddrSet)]| {
            let Some(subjects) = subjects else {
                all = true;
                return;
            };
            for (_, members) in subjects.iter().filter_map(|s| sets.get(*s)) {
                let ranges: Vec<(Ipv4Addr, Ipv4Addr)> = members.ranges().collect();
                locals_in(&ranges, locals, &mut moved);
            }
        };
        // The blocks that came, with the subject sets' members of this build, and those that
        // went, with the members the classes were found from.
        for (tier, ids, at, sets) in [
            (
                &self.admin_subjects,
                &self.admin.ids,
                &old.admin_at,
                &self.subjects,
            ),
            (
                &self.namespace_subjects,
                &self.namespace.ids,
                &old.namespace_at,
                &self.subjects,
            ),
            (
                &old.admin_subjects,
                &old.admin.ids,
                &self.admin_at,
                &old.subjects,
            ),
            (
                &old.namespace_subjects,
                &old.namespace.ids,
                &self.namespace_at,
                &old.subjects,
            ),
        ] {
            for (subjects, id) in tier.iter().zip(ids) {
                if !at.contains_key(id) {
                    touch(subjects, sets);
                }
            }
        }
        for (id, (name, body)) in self.namespace.ids.iter().zip(&self.namespace_chains) {
            if !old.namespace_at.contains_key(id) {
                table.put_chain(name, body);
            }
        }
        for (id, (name, _)) in old.namespace.ids.iter().zip(&old.namespace_chains) {
            if !self.namespace_at.contains_key(id) {
                table.remove_chain(name);
            }
        }
        self.keys = old.keys;
        self.classes = old.classes;
        self.chain_refs = old.chain_refs;
        (!all).then_some(moved)
    }

    /// Puts the chains every class may jump to in the table.
    fn add_to(&self, table: &mut Table) {
        table.put_chain(&self.baseline.0, &self.baseline.1);
        for (name, body) in &self.namespace_chains {
            table.put_chain(name, body);
        }
    }
}

/// What a build changed in the table: each object it touched, as it was before the first change
/// since the last delta (`None`: absent).
#[derive(Debug, Default)]
struct Before {
    sets: BTreeMap<String, Option<KernelSet>>,
    chains: BTreeMap<String, Option<ChainBody>>,
    /// By direction (egress, ingress).
    dispatch: [BTreeMap<Ipv4Addr, Option<Arc<str>>>; 2],
}

/// The table the renderer holds, changed in place from build to build, with what changed.
#[derive(Debug, Default)]
struct Table {
    model: TableModel,
    before: Before,
}

fn dispatch_of(model: &TableModel, i: usize) -> &BTreeMap<Ipv4Addr, Arc<str>> {
    if i == 0 {
        &model.egress
    } else {
        &model.ingress
    }
}

impl Table {
    fn put_set(&mut self, name: &str, set: KernelSet) {
        let old = self.model.sets.insert(name.to_string(), set);
        self.before.sets.entry(name.to_string()).or_insert(old);
    }

    fn remove_set(&mut self, name: &str) {
        if let Some(old) = self.model.sets.remove(name) {
            self.before
                .sets
                .entry(name.to_string())
                .or_insert(Some(old));
        }
    }

    fn put_chain(&mut self, name: &str, body: &ChainBody) {
        // A direction rendered again puts back mostly what it had (names are hashes of bodies).
        if self.model.chains.get(name) == Some(body) {
            return;
        }
        let old = self.model.chains.insert(name.to_string(), body.clone());
        self.before.chains.entry(name.to_string()).or_insert(old);
    }

    fn remove_chain(&mut self, name: &str) {
        if let Some(old) = self.model.chains.remove(name) {
            self.before
                .chains
                .entry(name.to_string())
                .or_insert(Some(old));
        }
    }

    fn put_goto(&mut self, i: usize, addr: Ipv4Addr, class: Arc<str>) {
        let direction = if i == 0 {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let map = dispatch_mut(&mut self.model, direction);
        if map.get(&addr) == Some(&class) {
            return;
        }
        let old = map.insert(addr, class);
        self.before.dispatch[i].entry(addr).or_insert(old);
    }

    fn remove_goto(&mut self, i: usize, addr: Ipv4Addr) {
        let direction = if i == 0 {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        if let Some(old) = dispatch_mut(&mut self.model, direction).remove(&addr) {
            self.before.dispatch[i].entry(addr).or_insert(Some(old));
        }
    }

    /// The change from the table of the last delta to this one: [`delta`](seam_nft::table::delta)
    /// between the two tables cut down to the objects that were touched in between, which is the
    /// delta between the whole tables (untouched objects are equal in both, and give no
    /// operation).
    fn delta(&mut self) -> FirewallDelta {
        let before = std::mem::take(&mut self.before);
        let (mut old, mut new) = (TableModel::default(), TableModel::default());
        for (name, was) in before.sets {
            if let Some(now) = self.model.sets.get(&name) {
                new.sets.insert(name.clone(), now.clone());
            }
            if let Some(was) = was {
                old.sets.insert(name, was);
            }
        }
        for (name, was) in before.chains {
            if let Some(now) = self.model.chains.get(&name) {
                new.chains.insert(name.clone(), now.clone());
            }
            if let Some(was) = was {
                old.chains.insert(name, was);
            }
        }
        for (i, touched) in before.dispatch.into_iter().enumerate() {
            let direction = if i == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            for (addr, was) in touched {
                if let Some(now) = dispatch_of(&self.model, i).get(&addr) {
                    dispatch_mut(&mut new, direction).insert(addr, now.clone());
                }
                if let Some(was) = was {
                    dispatch_mut(&mut old, direction).insert(addr, was);
                }
            }
        }
        seam_nft::table::delta(&old, &new)
    }
}

/// The local addresses within `ranges` (sorted), found in the sorted `locals`.
fn locals_in(ranges: &[(Ipv4Addr, Ipv4Addr)], locals: &[Ipv4Addr], out: &mut Vec<Ipv4Addr>) {
    for &(s, e) in ranges {
        let from = locals.partition_point(|a| *a < s);
        out.extend(locals[from..].iter().take_while(|a| **a <= e));
    }
}

/// The ranges of one set and not the other (both sorted): the addresses that came into or left a
/// set are within them.
fn ranges_changed(
    old: &[(Ipv4Addr, Ipv4Addr)],
    new: &[(Ipv4Addr, Ipv4Addr)],
) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let (mut out, added) = seam_nft::table::sorted_difference(old, new);
    out.extend(added);
    out.sort_unstable();
    out
}

/// A set whose members changed in a build (by IR name): its members before and after.
struct SetChange {
    name: String,
    old: Option<AddrSet>,
    new: Option<AddrSet>,
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
        self.update(ruleset);
        self.table.before = Before::default();
        self.table.model.clone()
    }

    /// The kernel objects that realize `ruleset`, and the change to them from the table of this
    /// renderer's last build ([`Renderer::model`] or this; the empty table before the first):
    /// what [`delta`](seam_nft::table::delta) between the two returns, made from the objects
    /// that changed only. The last build's table is changed in place, so its cost follows the
    /// change, not the table.
    pub fn model_and_delta(&mut self, ruleset: &NodeRuleset) -> (&TableModel, FirewallDelta) {
        self.update(ruleset);
        let delta = self.table.delta();
        (&self.table.model, delta)
    }

    /// Which build made this renderer's table: unique among the builds of every renderer of the
    /// process, 0 before the first. Who keeps a build's table (the agent, as what the kernel
    /// holds) knows by it whether the next [`Renderer::model_and_delta`] starts from that table.
    pub fn stamp(&self) -> u64 {
        self.stamp
    }

    /// Brings the table to `ruleset`, noting what changed in it.
    fn update(&mut self, ruleset: &NodeRuleset) {
        self.stamp = STAMPS.fetch_add(1, Ordering::Relaxed) + 1;
        // Both sorted by name: one walk pairs each set with what the last build made of it.
        let mut last_sets = std::mem::take(&mut self.sets).into_iter().peekable();
        let mut sets = Vec::with_capacity(ruleset.sets.len());
        // The sets that came, went or changed kind: rules name sets by kind, so a direction whose
        // rules test one of them is rendered again (through the rule cache), not reused.
        let mut changed_kinds: Vec<String> = Vec::new();
        let mut changed: Vec<SetChange> = Vec::new();
        let gone = |(name, set): (String, RenderedSet),
                    table: &mut Table,
                    changed_kinds: &mut Vec<String>,
                    changed: &mut Vec<SetChange>| {
            table.remove_set(&set.name);
            changed_kinds.push(name.clone());
            changed.push(SetChange {
                name,
                old: Some(set.members),
                new: None,
            });
        };
        for (name, members) in &ruleset.sets {
            while let Some(set) = last_sets.next_if(|(n, _)| n < name) {
                gone(set, &mut self.table, &mut changed_kinds, &mut changed);
            }
            let set = match last_sets.next_if(|(n, _)| n == name) {
                Some((n, set)) if set.members == *members => (n, set),
                last => {
                    let ranges: Vec<(Ipv4Addr, Ipv4Addr)> = members.ranges().collect();
                    let interval = is_interval(&ranges);
                    let kernel = kernel_set_name(name, interval);
                    if let Some((_, l)) = &last {
                        if l.name != kernel {
                            self.table.remove_set(&l.name);
                        }
                    }
                    if last
                        .as_ref()
                        .is_none_or(|(_, l)| l.set.interval != interval)
                    {
                        changed_kinds.push(name.clone());
                    }
                    let set = KernelSet {
                        interval,
                        ranges: ranges.into(),
                    };
                    self.table.put_set(&kernel, set.clone());
                    changed.push(SetChange {
                        name: name.clone(),
                        old: last.map(|(_, l)| l.members),
                        new: Some(members.clone()),
                    });
                    (
                        name.clone(),
                        RenderedSet {
                            members: members.clone(),
                            name: kernel,
                            set,
                        },
                    )
                }
            };
            sets.push(set);
        }
        for set in last_sets {
            gone(set, &mut self.table, &mut changed_kinds, &mut changed);
        }
        self.build += 1;
        let build = self.build;
        let mut locals: Vec<Ipv4Addr> = ruleset
            .local
            .iter()
            .flat_map(|e| e.addresses.iter().copied())
            .collect();
        locals.sort_unstable();
        locals.dedup();
        let (left, came) = {
            let mut left = Vec::new();
            let mut came = Vec::new();
            let (mut i, mut j) = (0, 0);
            let old = &self.locals;
            while i < old.len() || j < locals.len() {
                match (old.get(i), locals.get(j)) {
                    (Some(o), Some(n)) if o == n => {
                        i += 1;
                        j += 1;
                    }
                    (Some(o), Some(n)) if o < n => {
                        left.push(*o);
                        i += 1;
                    }
                    (Some(o), None) => {
                        left.push(*o);
                        i += 1;
                    }
                    (_, Some(n)) => {
                        came.push(*n);
                        j += 1;
                    }
                    (None, None) => break,
                }
            }
            (left, came)
        };
        // Whether each set is an interval set, for the rules of a direction rendered again.
        let mut kinds: Option<Kinds<'_>> = None;
        for (i, dir) in [Direction::Egress, Direction::Ingress]
            .into_iter()
            .enumerate()
        {
            let reuse = self.dirs[i].as_ref().is_some_and(|c| {
                c.rules == ruleset.chains(dir) && !changed_kinds.iter().any(|n| c.sets.contains(n))
            });
            let mut all = !reuse;
            let mut moved = came.clone();
            // The direction as it was, when rendered again: what the new one does not put back
            // leaves the table after it is in.
            let mut replaced = None;
            if reuse {
                let Some(cache) = self.dirs[i].as_mut() else {
                    continue;
                };
                for addr in &left {
                    cache.unassign(i, *addr, &mut self.table);
                }
                for change in &changed {
                    let Some(at) = cache.subject_index.get(&change.name).copied() else {
                        continue;
                    };
                    let ranges = |s: &Option<AddrSet>| -> Vec<(Ipv4Addr, Ipv4Addr)> {
                        s.as_ref().map(|s| s.ranges().collect()).unwrap_or_default()
                    };
                    let differ = ranges_changed(&ranges(&change.old), &ranges(&change.new));
                    locals_in(&differ, &locals, &mut moved);
                    if let (Some(new), Some(subject)) = (&change.new, cache.subjects.get_mut(at)) {
                        subject.1 = new.clone();
                    }
                }
                moved.sort_unstable();
                moved.dedup();
                all = moved.len() > FEW_LOCALS;
            } else {
                replaced = self.dirs[i].take();
                let kinds = kinds.get_or_insert_with(|| {
                    sets.iter()
                        .map(|(n, s): &(String, RenderedSet)| (n.as_str(), s.set.interval))
                        .collect()
                });
                let mut render = RuleRender {
                    cache: &mut self.rules[i],
                    build,
                    kinds,
                    sampling: self.sampling.as_ref().map(|s| (s, dir)),
                };
                let mut cache = DirectionCache::render(&mut render, ruleset, dir);
                let adopt = replaced.take_if(|old| cache.can_adopt(old));
                if let Some(old) = adopt {
                    let touched = cache.adopt(old, &locals, &mut self.table);
                    #[cfg(test)]
                    {
                        self.adopted += 1;
                    }
                    for addr in &left {
                        cache.unassign(i, *addr, &mut self.table);
                    }
                    // The subject sets' members are this build's: the local addresses that
                    // came into or left one of them are found again.
                    for change in &changed {
                        if cache.subject_index.contains_key(&change.name) {
                            let ranges = |s: &Option<AddrSet>| -> Vec<(Ipv4Addr, Ipv4Addr)> {
                                s.as_ref().map(|s| s.ranges().collect()).unwrap_or_default()
                            };
                            let differ = ranges_changed(&ranges(&change.old), &ranges(&change.new));
                            locals_in(&differ, &locals, &mut moved);
                        }
                    }
                    match touched {
                        Some(touched) => {
                            moved.extend(touched);
                            moved.sort_unstable();
                            moved.dedup();
                            all = moved.len() > FEW_LOCALS;
                        }
                        None => all = true,
                    }
                } else {
                    cache.add_to(&mut self.table);
                }
                self.dirs[i] = Some(cache);
                // The rules this build did not use go; a reused direction keeps its rules as they were.
                self.rules[i].retain(|_, r| r.used == build);
            }
            let Some(cache) = self.dirs[i].as_mut() else {
                continue;
            };
            if all {
                let index: FastMap<Ipv4Addr, usize> =
                    locals.iter().enumerate().map(|(i, a)| (*a, i)).collect();
                let admin = cache.admin.select(ruleset, &index, &locals);
                let namespace = cache.namespace.select(ruleset, &index, &locals);
                for ((addr, admin), namespace) in locals.iter().zip(admin).zip(namespace) {
                    let key = cache.key_at(&admin, &namespace);
                    cache.assign(dir, i, *addr, key, &mut self.table);
                }
            } else {
                for addr in moved {
                    let key = cache.key_of(addr);
                    cache.assign(dir, i, addr, key, &mut self.table);
                }
            }
            if let Some(old) = replaced {
                old.remove_except(cache, i, &mut self.table);
            }
        }
        drop(kinds);
        self.sets = sets;
        self.locals = locals;
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

    /// Renders `rs` with both renderers: the one that returns its model must give a fresh
    /// render's, the one that returns its change must give the delta from `last` (the fresh render
    /// of the step before) to the fresh render, and what that change makes of the kernel's table
    /// must read back as the fresh render does.
    fn step(models: &mut Renderer, deltas: &mut Renderer, last: &mut TableModel, rs: &NodeRuleset) {
        let fresh = model(rs);
        assert_eq!(models.model(rs), fresh);
        let (got, d) = deltas.model_and_delta(rs);
        assert_eq!(*got, fresh);
        assert_eq!(d, seam_nft::table::delta(last, &fresh));
        let mut kernel = last.listed();
        kernel.apply_batch(&d.switch).unwrap();
        kernel.apply_batch(&d.cleanup).unwrap();
        assert_eq!(kernel, fresh.listed());
        *last = fresh;
    }

    #[test]
    fn a_reused_direction_renders_what_a_fresh_renderer_does() {
        let (mut models, mut deltas) = (Renderer::default(), Renderer::default());
        let mut last = TableModel::default();
        let mut rs = ruleset();
        step(&mut models, &mut deltas, &mut last, &rs);
        // A member joins `sb` (rules unchanged: the direction is reused), then `sb` turns into
        // an interval set (its rules name it anew), then a rule changes.
        rs.sets.insert(
            "sb".into(),
            AddrSet::from_addrs([a("10.0.0.2"), a("10.0.0.3")]),
        );
        step(&mut models, &mut deltas, &mut last, &rs);
        // An endpoint comes (in `sa`) and another goes: their classes are found again.
        rs.local.push(LocalEndpoint {
            name: "x/d".into(),
            addresses: vec![a("10.0.0.4")],
        });
        rs.local.remove(1);
        rs.sets.insert(
            "sa".into(),
            AddrSet::from_addrs([a("10.0.0.1"), a("10.0.0.4")]),
        );
        step(&mut models, &mut deltas, &mut last, &rs);
        // `10.0.0.1` leaves `sa`: the class it was alone in goes.
        rs.sets
            .insert("sa".into(), AddrSet::from_addrs([a("10.0.0.4")]));
        step(&mut models, &mut deltas, &mut last, &rs);
        let mut wide = AddrSet::new();
        wide.insert_range(u32::from(a("10.0.0.2")), u32::from(a("10.0.255.255")));
        rs.sets.insert("sb".into(), wide);
        step(&mut models, &mut deltas, &mut last, &rs);
        rs.ingress[1].rules[0].action = Action::Deny;
        step(&mut models, &mut deltas, &mut last, &rs);
        // Nothing changed: nothing to do.
        assert!(deltas.model_and_delta(&rs).1.is_empty());
    }

    #[test]
    fn policies_coming_and_going_keep_the_other_classes_and_render_what_a_fresh_renderer_does() {
        let (mut models, mut deltas) = (Renderer::default(), Renderer::default());
        let mut last = TableModel::default();
        let mut rs = ruleset();
        let into = |s: &str| AddrMatch::In(s.into());
        rs.sets
            .insert("sc".into(), AddrSet::from_addrs([a("10.0.0.3")]));
        step(&mut models, &mut deltas, &mut last, &rs);
        fn namespace(rs: &mut NodeRuleset) -> &mut Vec<Rule> {
            let Some(chain) = rs.ingress.iter_mut().find(|c| c.tier == Tier::Namespace) else {
                panic!("no namespace tier");
            };
            &mut chain.rules
        }
        // A policy for `sc` comes between `p` and `q`: only 10.0.0.3 is found a class again.
        namespace(&mut rs).insert(2, rule("np/x/r/ingress/0", vec![into("sc")], Action::Allow));
        step(&mut models, &mut deltas, &mut last, &rs);
        // `p` goes, while 10.0.0.1 joins `sc` and an endpoint comes.
        namespace(&mut rs).drain(0..2);
        rs.sets.insert(
            "sc".into(),
            AddrSet::from_addrs([a("10.0.0.1"), a("10.0.0.3")]),
        );
        rs.local.push(LocalEndpoint {
            name: "x/d".into(),
            addresses: vec![a("10.0.0.4")],
        });
        step(&mut models, &mut deltas, &mut last, &rs);
        // An admin policy that passes comes, then `q` changes (it may match every endpoint).
        if let Some(chain) = rs.ingress.iter_mut().find(|c| c.tier == Tier::Admin) {
            chain.rules = vec![rule("anp/a/ingress/0", vec![into("sb")], Action::Pass)];
        }
        step(&mut models, &mut deltas, &mut last, &rs);
        namespace(&mut rs)[1].action = Action::Deny;
        step(&mut models, &mut deltas, &mut last, &rs);
        // The baseline changes: the direction is rendered again whole.
        rs.ingress[2].rules[0].action = Action::Allow;
        step(&mut models, &mut deltas, &mut last, &rs);
        assert_eq!((models.adopted, deltas.adopted), (4, 4));
    }

    #[test]
    fn many_endpoints_changing_class_at_once_render_what_a_fresh_renderer_does() {
        let (mut models, mut deltas) = (Renderer::default(), Renderer::default());
        let mut last = TableModel::default();
        let mut rs = ruleset();
        let many: Vec<Ipv4Addr> = (0..3 * FEW_LOCALS as u32)
            .map(|i| Ipv4Addr::from(u32::from(a("10.1.0.0")) + i))
            .collect();
        rs.local.extend(many.iter().map(|addr| LocalEndpoint {
            name: format!("x/{addr}"),
            addresses: vec![*addr],
        }));
        step(&mut models, &mut deltas, &mut last, &rs);
        // More endpoints than are found one by one join `sa`, then half of them go to `sb`.
        rs.sets
            .insert("sa".into(), AddrSet::from_addrs(many.clone()));
        step(&mut models, &mut deltas, &mut last, &rs);
        let (half, rest) = many.split_at(many.len() / 2);
        rs.sets
            .insert("sa".into(), AddrSet::from_addrs(half.iter().copied()));
        rs.sets
            .insert("sb".into(), AddrSet::from_addrs(rest.iter().copied()));
        step(&mut models, &mut deltas, &mut last, &rs);
        rs.local.truncate(10);
        step(&mut models, &mut deltas, &mut last, &rs);
    }
}
