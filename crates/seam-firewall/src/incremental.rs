//! The incremental compiler: [`cluster::node_ruleset`](crate::cluster::node_ruleset) for an agent that compiles on
//! every reconcile pass, recomputing only what changed since the last pass.
//!
//! [`IncrementalCompiler::sync`] is level-triggered: it takes the whole view every time, diffs it against what it
//! saw last (per object by name, cheap equality; only changed policy objects are validated again), finds the
//! fragments of the ruleset (see `compile/fragment.rs`: one per policy object, plus the isolation, tenant and
//! default rules) that the changes can touch (`deps.rs`), recomputes those, and splices their rules and sets into
//! the ruleset it keeps. [`IncrementalCompiler::sync_changes`] runs the same diff (`World::update`) on a view by
//! name, restricted to the names that changed. The result is always exactly what `node_ruleset` returns for the same inputs (`tests/it/incremental.rs`
//! checks it after every step of random change sequences).
//!
//! What it keeps: the view in the engine's terms (one copy of the inventory and of the policy documents), the
//! ruleset, group memberships, and per fragment its slot, set names and isolation contribution — never a copy of
//! the inventory per fragment. Inputs the dependency reasoning does not cover (two endpoints with one address or
//! one inventory reference, two endpoints with one name) are compiled in full, the way `node_ruleset` does.

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;

use seam_model::{AsStoredPolicy, StoredPolicy, UnreadablePolicy};
use seam_policy::{
    Endpoint, IsolationMode, Labels, Namespace, ObjectKey, PolicyKind, PolicyObject, PolicySet,
    Tenant,
};

use crate::addr::AddrSet;
use crate::cluster;
use crate::compile::{
    addrs, default_fragment, forget_peer_members, isolation_fragment, local_endpoints, slot_of,
    tier_chains, union_all, update_peers, Ctx, FragOut, Index, Peers, Slot,
};
use crate::deps::{self, Moved, Version};
use crate::error::CompileError;
use crate::ir::{NodeRuleset, Rule, SetName, LOCAL_SET};

static NO_LABELS: Labels = Labels::new();

/// Above this many changed endpoints in one pass, everything is recompiled: testing every fragment against every
/// change would cost more.
const FULL_ABOVE: usize = 1000;

/// One node's ruleset, kept up to date from the agent's view of the cluster.
#[derive(Debug)]
pub struct IncrementalCompiler {
    node: String,
    world: World,
    built: Built,
}

/// The inputs as last seen, in the engine's terms, with the counts that tell whether the incremental reasoning
/// applies.
#[derive(Debug, Default)]
struct World {
    tenant_objects: BTreeMap<String, seam_model::Tenant>,
    namespace_objects: BTreeMap<String, seam_model::Namespace>,
    /// By controller name.
    endpoints: BTreeMap<String, EpState>,
    /// Endpoints per namespace (a namespace without an object exists while it has endpoints).
    ns_endpoints: BTreeMap<String, usize>,
    /// The inventory's namespaces and tenants, as `cluster::tenant_inventory` builds them.
    namespaces: BTreeMap<String, Namespace>,
    tenants: BTreeMap<String, Tenant>,
    /// Endpoints per address and per inventory reference (hashed), and how many of either are shared.
    addr_count: HashMap<Ipv4Addr, u32>,
    shared_addrs: usize,
    ref_count: HashMap<u64, u32>,
    shared_refs: usize,
    docs: Vec<Doc>,
    /// The store names of `docs` (sorted, as a map by name gives them), when the last inputs came by name with
    /// every tenant, namespace and endpoint under its own name: only then can a pass take changes by name.
    doc_names: Option<Vec<String>>,
    policies: PolicySet,
    warnings: Vec<String>,
}

#[derive(Debug, Clone)]
struct EpState {
    ep: Endpoint,
    local: bool,
}

impl EpState {
    /// With its namespace's labels (`ns_labels` of its namespace).
    fn version<'e>(&'e self, ns_labels: &'e Labels) -> Version<'e> {
        Version {
            ep: &self.ep,
            local: self.local,
            ns_labels,
        }
    }
}

/// A policy object of the view (or one its reader could not read), and why it is not in force when it does not
/// validate (or was not read).
#[derive(Debug)]
struct Doc {
    object: StoredPolicy,
    invalid: Option<String>,
}

impl Doc {
    /// Checked once, when it is new or changed.
    fn new(object: &impl AsStoredPolicy) -> Self {
        let object = object.as_stored();
        Doc {
            invalid: cluster::check_document(&object).err(),
            object: match object {
                Ok(o) => StoredPolicy::Readable(o.clone()),
                Err(u) => StoredPolicy::Unreadable(u.clone()),
            },
        }
    }

    /// The object, when it may be in force.
    fn in_force(&self) -> Option<&PolicyObject> {
        match &self.object {
            StoredPolicy::Readable(o) => self.invalid.is_none().then_some(o),
            StoredPolicy::Unreadable(_) => None,
        }
    }

    /// Whether this is the document `other` is.
    fn is(&self, other: &impl AsStoredPolicy) -> bool {
        self.object.as_stored() == other.as_stored()
    }
}

/// What one pass changed in the world.
#[derive(Debug, Default)]
struct Changes {
    /// Endpoints by controller name, with their previous state (the new one is in the world).
    endpoints: Vec<(String, Option<EpState>)>,
    /// Inventory namespaces whose labels or tenant changed: name, before, after.
    namespaces: Vec<(String, Option<Namespace>, Option<Namespace>)>,
    /// The inventory's tenants changed.
    tenants: bool,
    /// Policy objects in force that changed (added, edited, removed).
    policies: BTreeSet<ObjectKey>,
    /// Inputs the incremental reasoning does not cover (see the module docs).
    anomaly: bool,
}

/// Which fragment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum FragKey {
    Object(ObjectKey),
    Isolation,
    Tenancy,
    Default,
}

/// What is kept of a compiled fragment (its rules live in the ruleset's chains, its sets in the ruleset's sets).
#[derive(Debug)]
struct Frag {
    id: u64,
    slot: Slot,
    sets: Vec<SetName>,
    iso: [AddrSet; 2],
    /// The keys of the peers it read.
    peers: Vec<String>,
}

/// The compiled state.
#[derive(Debug, Default)]
struct Built {
    /// False until the first pass, and after a pass compiled in full without the incremental state.
    valid: bool,
    out: NodeRuleset,
    frags: HashMap<FragKey, Frag>,
    /// Every fragment by slot: the chain order.
    order: BTreeMap<Slot, u64>,
    /// Per direction and tier, the runs of the chain: (fragment id, number of rules).
    segs: [[Vec<(u64, usize)>; 3]; 2],
    /// How many fragments hold each set (named-port sets are shared).
    set_refs: HashMap<SetName, u32>,
    /// Members of the groups contracts name.
    groups: RefCell<BTreeMap<String, AddrSet>>,
    /// Members of the peers the fragments read, followed through endpoint changes like the groups: a pod added
    /// recompiles the fragments whose peers it joins, and those would otherwise scan every namespace they select.
    peers: RefCell<Peers>,
    next_id: u64,
}

/// The splice found the chains out of step with the fragments (a bug): the caller compiles in full.
#[derive(Debug)]
struct Inconsistent;

/// An agent's view of the cluster by name (tenants, namespaces and endpoints under their own names, policy
/// documents under their store names), for [`IncrementalCompiler::sync_changes`].
#[derive(Debug, Clone, Copy)]
pub struct KeyedView<'a, D = PolicyObject> {
    /// Tenants by name.
    pub tenants: &'a BTreeMap<String, seam_model::Tenant>,
    /// Namespaces by name.
    pub namespaces: &'a BTreeMap<String, seam_model::Namespace>,
    /// Endpoints by name.
    pub endpoints: &'a BTreeMap<String, seam_model::Endpoint>,
    /// Policy documents by store name (typed; or, as the agent's view holds them, typed or kept as unreadable:
    /// [`StoredPolicy`]).
    pub documents: &'a BTreeMap<String, D>,
}

/// The names whose objects may have changed (added, edited or removed) in a [`KeyedView`] since the compiler
/// last read it. A name may be listed without a change; an object that changed must be listed, else the
/// compiler keeps what it had of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewChanges {
    /// Anything may have changed (a re-list, or nobody kept count): the next pass compares the whole view.
    pub everything: bool,
    /// Tenants by name.
    pub tenants: BTreeSet<String>,
    /// Namespaces by name.
    pub namespaces: BTreeSet<String>,
    /// Endpoints by name.
    pub endpoints: BTreeSet<String>,
    /// Policy documents by store name.
    pub documents: BTreeSet<String>,
}

impl ViewChanges {
    /// "Anything may have changed".
    pub fn everything() -> Self {
        ViewChanges {
            everything: true,
            ..ViewChanges::default()
        }
    }

    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.everything
            && self.tenants.is_empty()
            && self.namespaces.is_empty()
            && self.endpoints.is_empty()
            && self.documents.is_empty()
    }

    /// Adds `other`'s names (for a reader that skipped a pass).
    pub fn merge(&mut self, other: ViewChanges) {
        if self.everything || other.everything {
            // The names no longer matter.
            *self = ViewChanges::everything();
            return;
        }
        self.tenants.extend(other.tenants);
        self.namespaces.extend(other.namespaces);
        self.endpoints.extend(other.endpoints);
        self.documents.extend(other.documents);
    }
}

fn hash_of(v: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// Whether the kept state of an endpoint is what the controller's endpoint maps to.
fn same_endpoint(s: &EpState, m: &seam_model::Endpoint, node: &str) -> bool {
    s.local == (m.node == node)
        && s.ep.namespace == m.namespace
        && s.ep.kind == cluster::kind(m.kind)
        && s.ep.addresses.len() == 1
        && s.ep.addresses[0] == m.ip
        && s.ep.labels == m.labels
        && s.ep.ports.len() == m.ports.len()
        && s.ep
            .ports
            .iter()
            .zip(&m.ports)
            .all(|(a, b)| *a == cluster::container_port(b))
}

/// The kind (which fixes `apiVersion`), `metadata.namespace` and `metadata.name` of a document, hashed: finds the
/// document again when the others moved.
fn doc_ident(d: Result<&PolicyObject, &UnreadablePolicy>) -> u64 {
    match d {
        Ok(o) => {
            let meta = o.metadata();
            hash_of(&(o.kind(), meta.namespace.as_deref(), meta.name.as_str()))
        }
        // Never in force: found again by what is known of it.
        Err(u) => hash_of(&(&u.kind, &u.name)),
    }
}

fn key_of(o: &PolicyObject, key: &ObjectKey) -> bool {
    o.kind() == key.kind && o.metadata().name == key.name && o.metadata().namespace == key.namespace
}

/// One kind of object of a pass's inputs, by name.
enum Objects<'v, T> {
    /// A view by name whose keys are the objects' own names.
    Map(&'v BTreeMap<String, T>),
    /// Sorted by the objects' own names, one object per name.
    Sorted(Vec<(&'v str, &'v T)>),
}

impl<'v, T> Objects<'v, T> {
    /// `objects` under their own names (`name_of`); of two with one name the later is kept. Also whether two
    /// had one name.
    fn sorted(objects: impl IntoIterator<Item = &'v T>, name_of: fn(&T) -> &str) -> (Self, bool) {
        let mut all: Vec<(&'v str, &'v T)> = objects.into_iter().map(|o| (name_of(o), o)).collect();
        // The agent's view comes sorted by name already; a stable sort keeps the later of two last.
        if !all.is_sorted_by(|a, b| a.0 <= b.0) {
            all.sort_by(|a, b| a.0.cmp(b.0));
        }
        let mut shared = false;
        all.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                shared = true;
                *kept = *later;
            }
            same
        });
        (Objects::Sorted(all), shared)
    }

    /// A view by name as it is when every key is its object's own name, else rebuilt under the own names.
    fn by_name(map: &'v BTreeMap<String, T>, name_of: fn(&T) -> &str) -> (Self, bool) {
        if map.iter().all(|(k, o)| k == name_of(o)) {
            (Objects::Map(map), false)
        } else {
            Self::sorted(map.values(), name_of)
        }
    }

    /// Whether the objects are under the keys they came with.
    fn is_map(&self) -> bool {
        matches!(self, Objects::Map(_))
    }

    fn get(&self, name: &str) -> Option<&'v T> {
        match self {
            Objects::Map(m) => m.get(name),
            Objects::Sorted(v) => v
                .binary_search_by(|(n, _)| (*n).cmp(name))
                .ok()
                .map(|i| v[i].1),
        }
    }

    /// Every object in name order.
    fn iter(&self) -> impl Iterator<Item = (&'v str, &'v T)> + '_ {
        let (map, sorted) = match self {
            Objects::Map(m) => (Some(m.iter().map(|(k, o)| (k.as_str(), o))), None),
            Objects::Sorted(v) => (None, Some(v.iter().copied())),
        };
        map.into_iter()
            .flatten()
            .chain(sorted.into_iter().flatten())
    }
}

/// The policy documents of a pass's inputs.
enum Documents<'v, D> {
    /// By store name.
    Named(&'v BTreeMap<String, D>),
    /// In order, without names.
    Listed(&'v [&'v D]),
}

/// The inputs of one pass, by name, and what is compared of them.
struct Input<'v, D> {
    tenants: Objects<'v, seam_model::Tenant>,
    namespaces: Objects<'v, seam_model::Namespace>,
    endpoints: Objects<'v, seam_model::Endpoint>,
    documents: Documents<'v, D>,
    /// Two endpoints came with one name: the inventory holds both, which only a full compile reproduces.
    shared_endpoint_name: bool,
    /// Every tenant, namespace and endpoint came under its own name, and the documents by name: the next pass
    /// may take changes by name.
    by_name: bool,
    /// Compare only the objects these name (`None`: every object).
    only: Option<&'v ViewChanges>,
}

impl<'v, D> Input<'v, D> {
    /// Objects without names (their own names are used; a later object of one name wins, as in
    /// `cluster::tenant_inventory`); everything is compared.
    fn listed(
        tenants: &'v [&'v seam_model::Tenant],
        namespaces: &'v [&'v seam_model::Namespace],
        endpoints: &'v [&'v seam_model::Endpoint],
        documents: &'v [&'v D],
    ) -> Self {
        let (endpoints, shared_endpoint_name) =
            Objects::sorted(endpoints.iter().copied(), |e| &e.name);
        Input {
            tenants: Objects::sorted(tenants.iter().copied(), |t| &t.name).0,
            namespaces: Objects::sorted(namespaces.iter().copied(), |n| &n.name).0,
            endpoints,
            documents: Documents::Listed(documents),
            shared_endpoint_name,
            by_name: false,
            only: None,
        }
    }

    /// A view by name; with `changes`, only the objects they name are compared, unless `world` did not come by
    /// name last time or a named object is not under its own name (a later change by name would not find it):
    /// then everything is.
    fn keyed(view: &KeyedView<'v, D>, changes: &'v ViewChanges, world: &World) -> Self {
        let own_names = !changes.everything
            && world.doc_names.is_some()
            && changes
                .tenants
                .iter()
                .all(|k| view.tenants.get(k).is_none_or(|t| t.name == *k))
            && changes
                .namespaces
                .iter()
                .all(|k| view.namespaces.get(k).is_none_or(|n| n.name == *k))
            && changes
                .endpoints
                .iter()
                .all(|k| view.endpoints.get(k).is_none_or(|e| e.name == *k));
        if own_names {
            // The other objects were under their own names when last compared, and have not changed since.
            return Input {
                tenants: Objects::Map(view.tenants),
                namespaces: Objects::Map(view.namespaces),
                endpoints: Objects::Map(view.endpoints),
                documents: Documents::Named(view.documents),
                shared_endpoint_name: false,
                by_name: true,
                only: Some(changes),
            };
        }
        // Of two objects under one own name, the later (in key order) is kept, as `sync` keeps them.
        let (tenants, _) = Objects::by_name(view.tenants, |t| &t.name);
        let (namespaces, _) = Objects::by_name(view.namespaces, |n| &n.name);
        let (endpoints, shared_endpoint_name) = Objects::by_name(view.endpoints, |e| &e.name);
        let by_name = [tenants.is_map(), namespaces.is_map(), endpoints.is_map()] == [true; 3];
        Input {
            tenants,
            namespaces,
            endpoints,
            documents: Documents::Named(view.documents),
            shared_endpoint_name,
            by_name,
            only: None,
        }
    }
}

/// One object that differs between the world and the inputs.
enum Diff<'v, T> {
    /// New or changed: its name and the object.
    Put(&'v str, &'v T),
    /// Gone.
    Gone(String),
}

/// The objects that differ between `kept` and `new` (`same`: whether a kept object is the new one): among the
/// names `only` lists, or every name of either side, in name order.
fn differing<'v, K, T>(
    kept: &BTreeMap<String, K>,
    new: &Objects<'v, T>,
    only: Option<&'v BTreeSet<String>>,
    same: impl Fn(&K, &T) -> bool,
) -> Vec<Diff<'v, T>> {
    let mut out = Vec::new();
    let mut one = |name: &str, k: Option<&K>, n: Option<(&'v str, &'v T)>| match (k, n) {
        (Some(k), Some((_, o))) if same(k, o) => {}
        (_, Some((name, o))) => out.push(Diff::Put(name, o)),
        (Some(_), None) => out.push(Diff::Gone(name.to_string())),
        (None, None) => {}
    };
    match only {
        Some(names) => {
            for name in names {
                let n = new.get(name).map(|o| (name.as_str(), o));
                one(name, kept.get(name), n);
            }
        }
        None => {
            // Merge-joined by name: both sides are sorted.
            let mut kept = kept.iter().peekable();
            let mut new = new.iter().peekable();
            loop {
                let order = match (kept.peek(), new.peek()) {
                    (Some((k, _)), Some((n, _))) => k.as_str().cmp(n),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => break,
                };
                match order {
                    std::cmp::Ordering::Less => {
                        if let Some((k, o)) = kept.next() {
                            one(k, Some(o), None);
                        }
                    }
                    std::cmp::Ordering::Greater => {
                        if let Some((n, o)) = new.next() {
                            one(n, None, Some((n, o)));
                        }
                    }
                    std::cmp::Ordering::Equal => {
                        if let (Some((k, ko)), Some(n)) = (kept.next(), new.next()) {
                            one(k, Some(ko), Some(n));
                        }
                    }
                }
            }
        }
    }
    out
}

impl World {
    /// Brings the world to `input` and reports what changed: the objects `input.only` names, or every object.
    fn update<D: AsStoredPolicy>(&mut self, node: &str, input: &Input<'_, D>) -> Changes {
        let only = input.only;
        let mut ch = Changes {
            anomaly: input.shared_endpoint_name,
            ..Changes::default()
        };

        // Tenants and namespaces: few, compared whole.
        let tenants = differing(
            &self.tenant_objects,
            &input.tenants,
            only.map(|o| &o.tenants),
            |a, b| a == b,
        );
        let tenants_changed = !tenants.is_empty();
        for d in tenants {
            match d {
                Diff::Put(name, t) => self.tenant_objects.insert(name.to_string(), t.clone()),
                Diff::Gone(name) => self.tenant_objects.remove(&name),
            };
        }
        let mut touched_ns: BTreeSet<String> = BTreeSet::new();
        for d in differing(
            &self.namespace_objects,
            &input.namespaces,
            only.map(|o| &o.namespaces),
            |a, b| a == b,
        ) {
            match d {
                Diff::Put(name, n) => {
                    self.namespace_objects.insert(name.to_string(), n.clone());
                    touched_ns.insert(name.to_string());
                }
                Diff::Gone(name) => {
                    self.namespace_objects.remove(&name);
                    touched_ns.insert(name);
                }
            }
        }
        let ns_objects_changed = !touched_ns.is_empty();

        // Endpoints: compared field by field with what the kept state was made of.
        for d in differing(
            &self.endpoints,
            &input.endpoints,
            only.map(|o| &o.endpoints),
            |s, m| same_endpoint(s, m, node),
        ) {
            match d {
                Diff::Put(_, m) => self.upsert_endpoint(node, m, &mut touched_ns, &mut ch),
                Diff::Gone(name) => self.remove_endpoint(name, &mut touched_ns, &mut ch),
            }
        }
        self.settle(touched_ns, tenants_changed, ns_objects_changed, &mut ch);
        self.update_docs(input, &mut ch);
        ch
    }

    fn remove_endpoint(
        &mut self,
        name: String,
        touched_ns: &mut BTreeSet<String>,
        ch: &mut Changes,
    ) {
        if let Some(old) = self.endpoints.remove(&name) {
            self.forget(&old, touched_ns);
            ch.endpoints.push((name, Some(old)));
        }
    }

    fn upsert_endpoint(
        &mut self,
        node: &str,
        m: &seam_model::Endpoint,
        touched_ns: &mut BTreeSet<String>,
        ch: &mut Changes,
    ) {
        let state = EpState {
            ep: cluster::endpoint(m),
            local: m.node == node,
        };
        self.count(&state, touched_ns);
        let old = self.endpoints.insert(m.name.clone(), state);
        if let Some(old) = &old {
            self.forget(old, touched_ns);
        }
        ch.endpoints.push((m.name.clone(), old));
    }

    /// After the objects changed: the inventory's namespaces (those in `touched_ns`) and tenants, and whether
    /// the incremental reasoning still applies.
    fn settle(
        &mut self,
        touched_ns: BTreeSet<String>,
        tenants_changed: bool,
        ns_objects_changed: bool,
        ch: &mut Changes,
    ) {
        // The inventory's namespaces: an object's labels and tenant, or the implicit namespace of endpoints.
        for name in touched_ns {
            let want = match self.namespace_objects.get(&name) {
                Some(o) => Some(Namespace {
                    labels: o.labels.clone(),
                    tenant: o.tenant.clone(),
                }),
                None if self.ns_endpoints.contains_key(&name) => {
                    Some(cluster::implicit_namespace(&name))
                }
                None => None,
            };
            let have = self.namespaces.get(&name);
            if have == want.as_ref() {
                continue;
            }
            let old = match &want {
                Some(w) => self.namespaces.insert(name.clone(), w.clone()),
                None => self.namespaces.remove(&name),
            };
            ch.namespaces.push((name, old, want));
        }
        if tenants_changed || ns_objects_changed {
            let mut t: BTreeMap<String, Tenant> = self
                .tenant_objects
                .values()
                .map(|t| {
                    (
                        t.name.clone(),
                        Tenant {
                            isolation: cluster::isolation_mode(t.isolation),
                            global: t.global,
                        },
                    )
                })
                .collect();
            for n in self.namespace_objects.values() {
                if let Some(name) = &n.tenant {
                    t.entry(name.clone()).or_default();
                }
            }
            if t != self.tenants {
                self.tenants = t;
                ch.tenants = true;
            }
        }
        ch.anomaly |= self.shared_addrs > 0 || self.shared_refs > 0;
    }

    fn count(&mut self, s: &EpState, touched_ns: &mut BTreeSet<String>) {
        let n = self.ns_endpoints.entry(s.ep.namespace.clone()).or_default();
        *n += 1;
        if *n == 1 {
            touched_ns.insert(s.ep.namespace.clone());
        }
        for a in &s.ep.addresses {
            let c = self.addr_count.entry(*a).or_default();
            *c += 1;
            if *c == 2 {
                self.shared_addrs += 1;
            }
        }
        let c = self
            .ref_count
            .entry(hash_of(&(&s.ep.namespace, &s.ep.name)))
            .or_default();
        *c += 1;
        if *c == 2 {
            self.shared_refs += 1;
        }
    }

    fn forget(&mut self, s: &EpState, touched_ns: &mut BTreeSet<String>) {
        if let Some(n) = self.ns_endpoints.get_mut(&s.ep.namespace) {
            *n -= 1;
            if *n == 0 {
                self.ns_endpoints.remove(&s.ep.namespace);
                touched_ns.insert(s.ep.namespace.clone());
            }
        }
        for a in &s.ep.addresses {
            if let Some(c) = self.addr_count.get_mut(a) {
                *c -= 1;
                if *c == 1 {
                    self.shared_addrs -= 1;
                }
                if *c == 0 {
                    self.addr_count.remove(a);
                }
            }
        }
        let h = hash_of(&(&s.ep.namespace, &s.ep.name));
        if let Some(c) = self.ref_count.get_mut(&h) {
            *c -= 1;
            if *c == 1 {
                self.shared_refs -= 1;
            }
            if *c == 0 {
                self.ref_count.remove(&h);
            }
        }
    }

    /// Policy documents, then the objects in force and the warnings. By name when the inputs name the changed
    /// documents (only those compared and validated); otherwise every document, in order, matched with the kept ones
    /// by value ([`World::docs_in_order`]: documents without names, or kept without names, can only be found
    /// again by what they are).
    fn update_docs<D: AsStoredPolicy>(&mut self, input: &Input<'_, D>, ch: &mut Changes) {
        let (changed_keys, docs_changed) = match (&input.documents, input.only) {
            (Documents::Named(documents), Some(only)) => {
                self.docs_by_name(documents, &only.documents)
            }
            (Documents::Named(documents), None) => {
                let changed = self.docs_in_order(documents.values());
                self.doc_names = input.by_name.then(|| documents.keys().cloned().collect());
                changed
            }
            (Documents::Listed(documents), _) => {
                self.doc_names = None;
                self.docs_in_order(documents.iter().copied())
            }
        };
        self.settle_policies(changed_keys, docs_changed, ch);
    }

    /// The documents `names_changed` names, compared with the kept ones by store name (the kept documents came by
    /// name); returns the keys of the objects they held or hold, and whether any document changed.
    fn docs_by_name<D: AsStoredPolicy>(
        &mut self,
        documents: &BTreeMap<String, D>,
        names_changed: &BTreeSet<String>,
    ) -> (BTreeSet<ObjectKey>, bool) {
        // Documents: kept in store-name order, as the map gives them (the order decides between two documents
        // of one key); only the named ones compared and validated.
        let mut changed_keys: BTreeSet<ObjectKey> = BTreeSet::new();
        let mut docs_changed = false;
        let mut names = self.doc_names.take().unwrap_or_default();
        for k in names_changed {
            let new = documents.get(k);
            match (names.binary_search(k), new) {
                (Err(_), None) => {}
                (Ok(i), Some(v)) if self.docs.get(i).is_some_and(|d| d.is(v)) => {}
                (Ok(i), new) => {
                    docs_changed = true;
                    let old = match new {
                        Some(v) => {
                            let doc = Doc::new(v);
                            if let Some(o) = doc.in_force() {
                                changed_keys.insert(o.key());
                            }
                            self.docs.get_mut(i).map(|d| std::mem::replace(d, doc))
                        }
                        None => {
                            names.remove(i);
                            (i < self.docs.len()).then(|| self.docs.remove(i))
                        }
                    };
                    if let Some(o) = old.as_ref().and_then(Doc::in_force) {
                        changed_keys.insert(o.key());
                    }
                }
                (Err(i), Some(v)) => {
                    docs_changed = true;
                    let doc = Doc::new(v);
                    if let Some(o) = doc.in_force() {
                        changed_keys.insert(o.key());
                    }
                    names.insert(i, k.clone());
                    self.docs.insert(i.min(self.docs.len()), doc);
                }
            }
        }
        self.doc_names = Some(names);
        (changed_keys, docs_changed)
    }

    /// Every document in order, matched with the kept ones (by position, else by identity), validated only when new
    /// or changed; returns the keys of the objects that may have changed (every key when documents were
    /// reordered: the last valid document of a key is the one in force), and whether any document changed.
    fn docs_in_order<'d, D: AsStoredPolicy + 'd>(
        &mut self,
        docs: impl ExactSizeIterator<Item = &'d D>,
    ) -> (BTreeSet<ObjectKey>, bool) {
        let mut old: Vec<Option<Doc>> = std::mem::take(&mut self.docs)
            .into_iter()
            .map(Some)
            .collect();
        let mut by_ident: Option<HashMap<u64, Vec<usize>>> = None;
        let mut cursor = 0;
        let mut last_reused: Option<usize> = None;
        let mut reordered = false;
        let mut changed_keys: BTreeSet<ObjectKey> = BTreeSet::new();
        // Whether the warnings (every document's, in order) may differ.
        let mut docs_changed = false;
        let mut new_docs: Vec<Doc> = Vec::with_capacity(docs.len());
        for v in docs {
            let positional = old
                .get(cursor)
                .and_then(Option::as_ref)
                .is_some_and(|d| d.is(v));
            let found = if positional {
                Some(cursor)
            } else {
                let map = by_ident.get_or_insert_with(|| {
                    let mut m: HashMap<u64, Vec<usize>> = HashMap::new();
                    for (i, d) in old.iter().enumerate() {
                        if let Some(d) = d {
                            m.entry(doc_ident(d.object.as_stored()))
                                .or_default()
                                .push(i);
                        }
                    }
                    m
                });
                map.get(&doc_ident(v.as_stored())).and_then(|c| {
                    c.iter()
                        .copied()
                        .find(|i| old[*i].as_ref().is_some_and(|d| d.is(v)))
                })
            };
            match found.and_then(|i| old[i].take().map(|d| (i, d))) {
                Some((i, d)) => {
                    // Only the relative order of documents matters (for two with one key).
                    if last_reused.is_some_and(|l| i < l) {
                        reordered = true;
                        docs_changed = true;
                    }
                    last_reused = Some(i);
                    cursor = i + 1;
                    new_docs.push(d);
                }
                None => {
                    docs_changed = true;
                    let doc = Doc::new(v);
                    if let Some(o) = doc.in_force() {
                        changed_keys.insert(o.key());
                    }
                    new_docs.push(doc);
                }
            }
        }
        for d in old.into_iter().flatten() {
            docs_changed = true;
            if let Some(o) = d.in_force() {
                changed_keys.insert(o.key());
            }
        }
        self.docs = new_docs;
        if reordered {
            changed_keys.extend(self.policies.objects().map(PolicyObject::key));
            changed_keys.extend(
                self.docs
                    .iter()
                    .filter_map(Doc::in_force)
                    .map(PolicyObject::key),
            );
        }
        (changed_keys, docs_changed)
    }

    /// After the documents changed: the objects in force for the keys that changed, and the warnings.
    fn settle_policies(
        &mut self,
        changed_keys: BTreeSet<ObjectKey>,
        docs_changed: bool,
        ch: &mut Changes,
    ) {
        for key in changed_keys {
            let want = self
                .docs
                .iter()
                .rev()
                .find_map(|d| d.in_force().filter(|o| key_of(o, &key)));
            let have = self.policies.remove(&key);
            if have.as_ref() != want {
                ch.policies.insert(key);
            }
            if let Some(o) = want {
                // Cannot fail: `Doc::new` ran the same validation.
                if self.policies.insert(o.clone()).is_err() {
                    ch.anomaly = true;
                }
            }
        }
        if docs_changed {
            self.warnings = self.docs.iter().filter_map(|d| d.invalid.clone()).collect();
            self.warnings
                .extend(cluster::dangling_warnings(&self.policies));
        }
    }
}

/// Orders a policy object against a key as `ObjectKey` orders keys, without building its key.
fn cmp_key(o: &PolicyObject, k: &ObjectKey) -> std::cmp::Ordering {
    (
        o.kind(),
        o.metadata().namespace.as_deref(),
        o.metadata().name.as_str(),
    )
        .cmp(&(k.kind, k.namespace.as_deref(), k.name.as_str()))
}

fn labels_of(n: &Option<Namespace>) -> &Labels {
    n.as_ref().map_or(&NO_LABELS, |n| &n.labels)
}

fn addresses(s: Option<&EpState>) -> Option<&[Ipv4Addr]> {
    s.map(|s| s.ep.addresses.as_slice())
}

impl IncrementalCompiler {
    /// A compiler for the endpoints on `node` (the controller's `Endpoint::node`).
    pub fn new(node: impl Into<String>) -> Self {
        IncrementalCompiler {
            node: node.into(),
            world: World::default(),
            built: Built::default(),
        }
    }

    /// Same inputs and the same result as [`cluster::node_ruleset`] (the ruleset and the policy warnings), but
    /// only the parts the changes since the last call touch are recomputed.
    pub fn sync<'a, D: AsStoredPolicy + 'a>(
        &mut self,
        tenants: impl IntoIterator<Item = &'a seam_model::Tenant>,
        namespaces: impl IntoIterator<Item = &'a seam_model::Namespace>,
        endpoints: impl IntoIterator<Item = &'a seam_model::Endpoint>,
        documents: impl IntoIterator<Item = &'a D>,
    ) -> Result<(&NodeRuleset, Vec<String>), CompileError> {
        let tenants: Vec<&seam_model::Tenant> = tenants.into_iter().collect();
        let namespaces: Vec<&seam_model::Namespace> = namespaces.into_iter().collect();
        let endpoints: Vec<&seam_model::Endpoint> = endpoints.into_iter().collect();
        let documents: Vec<&D> = documents.into_iter().collect();
        let input = Input::listed(&tenants, &namespaces, &endpoints, &documents);
        let changes = self.world.update(&self.node, &input);
        self.finish(&changes, |node| {
            cluster::node_ruleset(
                tenants.iter().copied(),
                namespaces.iter().copied(),
                endpoints.iter().copied(),
                documents.iter().copied(),
                node,
            )
        })
    }

    /// Same result as [`IncrementalCompiler::sync`] on the view's objects in name order, comparing only the
    /// objects `changes` names with what the compiler saw last: a single change costs what it touches, not the
    /// size of the view. `changes` must name every object that changed since the last call (see
    /// [`ViewChanges`]); everything is compared when it says so, on the first call, after a call of `sync`, and
    /// while some object of the view is not under its own name.
    pub fn sync_changes<D: AsStoredPolicy>(
        &mut self,
        view: KeyedView<'_, D>,
        changes: &ViewChanges,
    ) -> Result<(&NodeRuleset, Vec<String>), CompileError> {
        let input = Input::keyed(&view, changes, &self.world);
        let ch = self.world.update(&self.node, &input);
        self.finish(&ch, |node| {
            cluster::node_ruleset(
                view.tenants.values(),
                view.namespaces.values(),
                view.endpoints.values(),
                view.documents.values(),
                node,
            )
        })
    }

    /// Recompiles what the world's `changes` touch, or everything as `node_ruleset` does (`full_compile`) when
    /// the incremental reasoning does not apply.
    fn finish(
        &mut self,
        changes: &Changes,
        full_compile: impl FnOnce(&str) -> Result<(NodeRuleset, Vec<String>), CompileError>,
    ) -> Result<(&NodeRuleset, Vec<String>), CompileError> {
        let unchanged = changes.endpoints.is_empty()
            && changes.namespaces.is_empty()
            && !changes.tenants
            && changes.policies.is_empty()
            && !changes.anomaly;
        if self.built.valid && unchanged {
            // The ruleset is the world's already; a pass would still index every endpoint to find nothing.
            return Ok((&self.built.out, self.world.warnings.clone()));
        }
        let full = !self.built.valid || changes.endpoints.len() > FULL_ABOVE;
        let done = !changes.anomaly
            && (self.built.pass(&self.world, changes, full).is_ok()
                || self
                    .built
                    .pass(&self.world, &Changes::default(), true)
                    .is_ok());
        if !done {
            // The world has moved on already: should the full compile fail, the next pass must not splice into
            // the ruleset of an older world.
            self.built.valid = false;
            // What the dependency reasoning does not cover is compiled as `node_ruleset` does; the next pass
            // starts over from the world.
            let (out, warnings) = full_compile(&self.node)?;
            self.built = Built {
                out,
                ..Built::default()
            };
            return Ok((&self.built.out, warnings));
        }
        Ok((&self.built.out, self.world.warnings.clone()))
    }
}

/// What a pass recompiles, found from the world's changes.
#[derive(Debug, Default)]
struct Dirty {
    /// Policy objects whose fragments are recompiled (a key without an object in force: its fragment goes).
    objects: BTreeSet<ObjectKey>,
    /// NetworkPolicies of which only the members of peer sets may have changed.
    peer_sets: BTreeSet<ObjectKey>,
    /// Groups whose members may have changed.
    groups: BTreeSet<String>,
    /// Groups whose members may have changed only by the changed endpoints' own addresses.
    groups_by_endpoints: BTreeSet<String>,
    /// The tenants' rules.
    tenancy: bool,
    /// A namespace moved to another tenant: every tenant-scoped contract.
    tenant_scoped: bool,
    /// The node's own endpoints.
    locals: bool,
    /// Addresses that came, went, or moved (to another namespace, kind or node).
    moved_addrs: Vec<Ipv4Addr>,
}

/// A pass's work on the chains: the recompiled fragments' rules by fragment id (waiting for the splice), the
/// tiers whose chains are rebuilt, and whether the addresses the namespace tier isolates may have changed.
#[derive(Debug, Default)]
struct Splice {
    fresh: HashMap<u64, [Vec<Rule>; 2]>,
    touched: [bool; 3],
    iso_changed: bool,
}

impl Built {
    /// Recompiles what `ch` touches (everything when `full`) and splices it into the ruleset, in four steps: what
    /// the changes touch, the groups' members, the fragments, the splice.
    fn pass(&mut self, world: &World, ch: &Changes, full: bool) -> Result<(), Inconsistent> {
        self.valid = false;
        let idx = Index::new(
            &world.namespaces,
            &world.tenants,
            IsolationMode::default(),
            world.endpoints.values().map(|s| &s.ep),
        );
        let locals: Vec<&Endpoint> = world
            .endpoints
            .values()
            .filter(|s| s.local && s.ep.kind.is_enforced())
            .map(|s| &s.ep)
            .collect();
        let local_addrs = addrs(locals.iter().copied());

        let mut dirty = if full {
            self.reset(world)
        } else {
            self.touched_by(world, ch, &idx)
        };
        let endpoint_changes: Vec<(Option<&Endpoint>, Option<&Endpoint>)> = ch
            .endpoints
            .iter()
            .map(|(name, old)| {
                (
                    old.as_ref().map(|s| &s.ep),
                    world.endpoints.get(name).map(|s| &s.ep),
                )
            })
            .collect();
        if !full {
            let peers = self.peers.get_mut();
            if ch
                .namespaces
                .iter()
                .any(|(_, old, new)| labels_of(old) != labels_of(new))
            {
                forget_peer_members(peers);
            }
            update_peers(peers, &idx, &endpoint_changes);
        }
        let ctx = Ctx::new(
            &world.policies,
            &idx,
            &locals,
            &local_addrs,
            &self.groups,
            &self.peers,
        );
        // Groups first: contracts are dirty when a group they name changed members.
        let changed_groups = refresh_groups(&self.groups, &ctx, &dirty, &endpoint_changes);
        if !full {
            dirty.add_contracts(world, &changed_groups, &self.groups.borrow());
        }

        let mut st = State {
            out: &mut self.out,
            frags: &mut self.frags,
            order: &mut self.order,
            segs: &mut self.segs,
            set_refs: &mut self.set_refs,
            peers: &self.peers,
            next_id: &mut self.next_id,
        };
        let mut splice = Splice {
            touched: [full; 3],
            iso_changed: full,
            ..Splice::default()
        };
        st.refresh_peer_sets(world, &ctx, &mut dirty);
        st.recompile_objects(world, &ctx, std::mem::take(&mut dirty.objects), &mut splice);
        st.recompile_derived(&ctx, &dirty, full, &mut splice);
        if dirty.locals {
            st.out.local = local_endpoints(&locals);
            st.out
                .sets
                .insert(LOCAL_SET.to_string(), local_addrs.clone());
        }
        st.assemble(&mut splice)?;
        drop(ctx);

        // Only a pass that recompiled every contract, or one whose policies changed, can have kept the members
        // of a group no contract names any more (the others read only groups their contracts name).
        if full || !ch.policies.is_empty() {
            self.keep_named_groups(world);
        }
        self.valid = true;
        Ok(())
    }

    /// Starts over for a full pass (fragment ids keep counting): every object is dirty.
    fn reset(&mut self, world: &World) -> Dirty {
        let next_id = self.next_id.max(3);
        *self = Built {
            next_id,
            ..Built::default()
        };
        self.out.egress = tier_chains(Default::default());
        self.out.ingress = tier_chains(Default::default());
        Dirty {
            objects: world.policies.objects().map(PolicyObject::key).collect(),
            tenancy: true,
            locals: true,
            ..Dirty::default()
        }
    }

    /// What the world's changes touch: the objects and groups that read a changed endpoint or namespace, the
    /// changed objects themselves, and the tenants' rules and the node's endpoints when they may differ.
    fn touched_by(&self, world: &World, ch: &Changes, idx: &Index<'_>) -> Dirty {
        let mut dirty = Dirty {
            tenancy: ch.tenants,
            ..Dirty::default()
        };
        for k in &ch.policies {
            if k.kind == PolicyKind::EndpointGroup {
                dirty.groups.insert(k.name.clone());
            } else {
                dirty.objects.insert(k.clone());
            }
        }
        for (name, old) in &ch.endpoints {
            let old = old.as_ref();
            let new = world.endpoints.get(name);
            let moved = Moved {
                addresses: addresses(old) != addresses(new),
                ports: old.map(|s| &s.ep.ports) != new.map(|s| &s.ep.ports),
            };
            let place = |s: &EpState| (s.ep.namespace.clone(), s.ep.kind, s.local);
            if moved.addresses || old.map(place) != new.map(place) {
                // Tenants' members, the node's addresses or both.
                dirty.tenancy = true;
                dirty
                    .moved_addrs
                    .extend(addresses(old).into_iter().flatten());
                dirty
                    .moved_addrs
                    .extend(addresses(new).into_iter().flatten());
            }
            dirty.locals |= old.is_some_and(|s| s.local) || new.is_some_and(|s| s.local);
            let old = old.map(|s| s.version(idx.ns_labels(&s.ep.namespace)));
            let new = new.map(|s| s.version(idx.ns_labels(&s.ep.namespace)));
            for o in world.policies.objects() {
                match deps::object_touch(o, old, new, moved) {
                    deps::Touch::All => {
                        dirty.objects.insert(o.key());
                    }
                    deps::Touch::PeerSets => {
                        dirty.peer_sets.insert(o.key());
                    }
                    deps::Touch::None => {}
                }
            }
            for g in self.groups.borrow().keys() {
                if deps::group_touched(g, &world.policies, old, new, moved) {
                    dirty.groups_by_endpoints.insert(g.clone());
                }
            }
        }
        for (_, old, new) in &ch.namespaces {
            let (ol, nl) = (labels_of(old), labels_of(new));
            if ol != nl {
                for o in world.policies.objects() {
                    if deps::object_reads_labels(o, ol, nl) {
                        dirty.objects.insert(o.key());
                    }
                }
                for g in self.groups.borrow().keys() {
                    if deps::group_reads_labels(g, &world.policies, ol, nl) {
                        dirty.groups.insert(g.clone());
                    }
                }
            }
            let tenant = |n: &Option<Namespace>| {
                n.as_ref()
                    .and_then(|n| n.tenant.clone())
                    .unwrap_or_else(|| seam_policy::DEFAULT_TENANT.to_string())
            };
            if tenant(old) != tenant(new) {
                dirty.tenancy = true;
                dirty.tenant_scoped = true;
            }
        }
        dirty
    }

    /// Keeps only the members of groups some contract names.
    fn keep_named_groups(&mut self, world: &World) {
        let named: HashSet<&str> = world
            .policies
            .contracts()
            .flat_map(|c| c.spec.consumers.iter().chain(&c.spec.providers))
            .map(String::as_str)
            .collect();
        self.groups
            .get_mut()
            .retain(|g, _| named.contains(g.as_str()));
    }
}

/// Recomputes the members of the dirty groups that are kept; returns those whose members changed.
/// A group only the changed endpoints may have joined or left follows them (see
/// [`Ctx::group_set_after`]) rather than being computed again from every endpoint.
fn refresh_groups(
    groups: &RefCell<BTreeMap<String, AddrSet>>,
    ctx: &Ctx<'_, '_>,
    dirty: &Dirty,
    endpoint_changes: &[(Option<&Endpoint>, Option<&Endpoint>)],
) -> BTreeSet<String> {
    let mut changed: BTreeSet<String> = BTreeSet::new();
    let by_endpoints = dirty
        .groups_by_endpoints
        .iter()
        .filter(|g| !dirty.groups.contains(*g))
        .map(|g| (g, true));
    for (g, followed) in dirty.groups.iter().map(|g| (g, false)).chain(by_endpoints) {
        let Some(before) = groups.borrow().get(g).cloned() else {
            continue;
        };
        let members = followed
            .then(|| ctx.group_set_after(g, &before, endpoint_changes))
            .flatten()
            .unwrap_or_else(|| ctx.group_set_uncached(g));
        if members != before {
            groups.borrow_mut().insert(g.clone(), members);
            changed.insert(g.clone());
        }
    }
    changed
}

impl Dirty {
    /// Contracts that name a group whose members changed, that name a group holding a moved address (or one not
    /// kept), and, when a namespace changed tenant, the tenant-scoped ones.
    fn add_contracts(
        &mut self,
        world: &World,
        changed_groups: &BTreeSet<String>,
        groups: &BTreeMap<String, AddrSet>,
    ) {
        for c in world.policies.contracts() {
            let mut names = c.spec.consumers.iter().chain(&c.spec.providers);
            let hit = names.clone().any(|g| changed_groups.contains(g))
                || (self.tenant_scoped && c.spec.scope == seam_policy::ContractScope::Tenant)
                || (!self.moved_addrs.is_empty()
                    && names.any(|g| {
                        groups
                            .get(g)
                            .is_none_or(|set| self.moved_addrs.iter().any(|a| set.contains(*a)))
                    }));
            if hit {
                self.objects.insert(ObjectKey {
                    kind: PolicyKind::Contract,
                    namespace: None,
                    name: c.metadata.name.clone(),
                });
            }
        }
    }
}

/// The parts of [`Built`] a pass changes while the groups are borrowed by the fragment compiler.
struct State<'b> {
    out: &'b mut NodeRuleset,
    frags: &'b mut HashMap<FragKey, Frag>,
    order: &'b mut BTreeMap<Slot, u64>,
    segs: &'b mut [[Vec<(u64, usize)>; 3]; 2],
    set_refs: &'b mut HashMap<SetName, u32>,
    peers: &'b RefCell<Peers>,
    next_id: &'b mut u64,
}

impl State<'_> {
    /// Puts the new members of the NetworkPolicies' peer sets that only those can have changed in (the rules
    /// and the other sets stay); a policy whose sets are not all where its fragment put them is recompiled.
    fn refresh_peer_sets(&mut self, world: &World, ctx: &Ctx<'_, '_>, dirty: &mut Dirty) {
        if dirty.peer_sets.is_empty() {
            return;
        }
        for o in world.policies.objects() {
            let PolicyObject::NetworkPolicy(np) = o else {
                continue;
            };
            let key = o.key();
            if !dirty.peer_sets.contains(&key) || dirty.objects.contains(&key) {
                continue;
            }
            let fresh = ctx.np_peer_sets(np);
            let kept = self
                .frags
                .get(&FragKey::Object(key.clone()))
                .is_some_and(|f| {
                    f.sets.iter().filter(|n| n.ends_with("/peer")).count() == fresh.len()
                        && fresh.iter().all(|(name, _)| {
                            f.sets.contains(name) && self.out.sets.contains_key(name)
                        })
                });
            if !kept {
                dirty.objects.insert(key);
                continue;
            }
            for (name, set) in fresh {
                if let Some(s) = self.out.sets.get_mut(&name) {
                    *s = set;
                }
            }
        }
    }

    /// Recompiles the fragments of the `dirty` objects, in key order merged with the objects in force: a dirty
    /// key without an object was removed, and so is its fragment.
    fn recompile_objects(
        &mut self,
        world: &World,
        ctx: &Ctx<'_, '_>,
        dirty: BTreeSet<ObjectKey>,
        splice: &mut Splice,
    ) {
        let mut keys = dirty.into_iter().peekable();
        for o in world.policies.objects() {
            while let Some(k) = keys.peek() {
                match cmp_key(o, k) {
                    std::cmp::Ordering::Greater => {
                        self.apply(FragKey::Object(k.clone()), None, splice);
                        keys.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if let Some(slot) = slot_of(o) {
                            self.apply(
                                FragKey::Object(o.key()),
                                Some((slot, ctx.fragment(o))),
                                splice,
                            );
                        }
                        keys.next();
                        break;
                    }
                    std::cmp::Ordering::Less => break,
                }
            }
        }
        for k in keys {
            self.apply(FragKey::Object(k), None, splice);
        }
    }

    /// Recompiles the fragments that belong to no object: the namespace tier's isolation rule when what the
    /// fragments isolate changed, the tenants' rules when `dirty` says so, the default rules on a full pass.
    fn recompile_derived(
        &mut self,
        ctx: &Ctx<'_, '_>,
        dirty: &Dirty,
        full: bool,
        splice: &mut Splice,
    ) {
        if splice.iso_changed {
            let mut iso: [Vec<AddrSet>; 2] = Default::default();
            for f in self.frags.values() {
                for (d, s) in f.iso.iter().enumerate() {
                    if !s.is_empty() {
                        iso[d].push(s.clone());
                    }
                }
            }
            let isolated = [union_all(&iso[0]), union_all(&iso[1])];
            let frag = isolation_fragment(&isolated);
            self.apply(FragKey::Isolation, Some((Slot::Isolation, frag)), splice);
        }
        if dirty.tenancy {
            let frag = ctx.tenancy_fragment();
            self.apply(FragKey::Tenancy, Some((Slot::Tenancy, frag)), splice);
        }
        if full {
            self.apply(
                FragKey::Default,
                Some((Slot::Default, default_fragment())),
                splice,
            );
        }
    }

    /// Replaces a fragment by its recompiled output (`None`: removes it): its sets go into the ruleset now, its
    /// rules wait in the splice for [`State::assemble`].
    fn apply(&mut self, key: FragKey, new: Option<(Slot, FragOut)>, splice: &mut Splice) {
        // Readers counted before the old fragment's go, so that a peer both read is kept.
        if let Some((_, f)) = &new {
            let mut peers = self.peers.borrow_mut();
            for k in &f.peers {
                if let Some(p) = peers.get_mut(k) {
                    p.refs += 1;
                }
            }
        }
        let old = self.frags.remove(&key);
        let id = match &old {
            Some(f) => {
                for name in &f.sets {
                    if let Some(n) = self.set_refs.get_mut(name) {
                        *n -= 1;
                        if *n == 0 {
                            self.set_refs.remove(name);
                            self.out.sets.remove(name);
                        }
                    }
                }
                let mut peers = self.peers.borrow_mut();
                for k in &f.peers {
                    if let Some(p) = peers.get_mut(k) {
                        p.refs = p.refs.saturating_sub(1);
                        if p.refs == 0 {
                            peers.remove(k);
                        }
                    }
                }
                self.order.remove(&f.slot);
                splice.touched[f.slot.tier()] = true;
                f.id
            }
            None => {
                let id = *self.next_id;
                *self.next_id += 1;
                id
            }
        };
        let no_iso = [AddrSet::new(), AddrSet::new()];
        let old_iso = old.as_ref().map_or(&no_iso, |f| &f.iso);
        let Some((slot, frag)) = new else {
            splice.iso_changed |= *old_iso != no_iso;
            return;
        };
        let FragOut {
            rules,
            sets,
            iso,
            peers,
        } = frag;
        splice.iso_changed |= *old_iso != iso;
        let mut names = Vec::with_capacity(sets.len());
        for (name, set) in sets {
            *self.set_refs.entry(name.clone()).or_default() += 1;
            self.out.sets.insert(name.clone(), set);
            names.push(name);
        }
        self.order.insert(slot.clone(), id);
        splice.touched[slot.tier()] = true;
        splice.fresh.insert(id, rules);
        self.frags.insert(
            key,
            Frag {
                id,
                slot,
                sets: names,
                iso,
                peers,
            },
        );
    }

    /// Rebuilds the chains of the touched tiers in slot order: the rules of recompiled fragments from the splice,
    /// the others moved over from the old chain (their relative order cannot have changed).
    fn assemble(&mut self, splice: &mut Splice) -> Result<(), Inconsistent> {
        let Splice { fresh, touched, .. } = splice;
        for (tier, touched) in touched.iter().copied().enumerate() {
            if !touched {
                continue;
            }
            for d in 0..2 {
                let chains = if d == 0 {
                    &mut self.out.egress
                } else {
                    &mut self.out.ingress
                };
                let chain = chains.get_mut(tier).ok_or(Inconsistent)?;
                let old_segs = std::mem::take(&mut self.segs[d][tier]);
                let mut old_rules = std::mem::take(&mut chain.rules).into_iter();
                let mut old_segs = old_segs.into_iter();
                let mut rules = Vec::with_capacity(old_rules.len());
                let mut segs = Vec::new();
                for (_, id) in self.order.iter().filter(|(s, _)| s.tier() == tier) {
                    if let Some(f) = fresh.get_mut(id) {
                        let r = std::mem::take(&mut f[d]);
                        segs.push((*id, r.len()));
                        rules.extend(r);
                        continue;
                    }
                    loop {
                        let (oid, n) = old_segs.next().ok_or(Inconsistent)?;
                        if oid == *id {
                            rules.extend(old_rules.by_ref().take(n));
                            segs.push((oid, n));
                            break;
                        }
                        old_rules.by_ref().take(n).for_each(drop);
                    }
                }
                chain.rules = rules;
                self.segs[d][tier] = segs;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(name: &str, app: &str, last: u8, node: &str) -> seam_model::Endpoint {
        let ip = Ipv4Addr::new(10, 240, 0, last);
        seam_model::Endpoint {
            name: name.into(),
            kind: seam_model::EndpointKind::Pod,
            namespace: "x".into(),
            segment: "x".into(),
            node: node.into(),
            ip,
            mac: seam_model::endpoint_mac(ip),
            labels: [("app".to_string(), app.to_string())].into(),
            container_id: None,
            ifname: None,
            ports: Vec::new(),
            conditions: None,
        }
    }

    /// Ingress to the node's `app: db` from `app: <from>`.
    fn netpol(name: &str, from: &str) -> PolicyObject {
        PolicyObject::from_value(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"namespace": "x", "name": name},
            "spec": {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": from}}}]}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_peer_is_kept_while_a_fragment_reads_it() {
        let eps = [
            endpoint("x/db", "db", 2, "n1"),
            endpoint("x/web", "web", 3, "n2"),
        ];
        let (a, b, c) = (netpol("a", "web"), netpol("b", "web"), netpol("c", "api"));
        let mut compiler = IncrementalCompiler::new("n1");
        let peers = |compiler: &IncrementalCompiler| {
            let mut refs: Vec<u32> = compiler
                .built
                .peers
                .borrow()
                .values()
                .map(|p| p.refs)
                .collect();
            refs.sort();
            refs
        };
        compiler.sync([], [], &eps, [&a, &b, &c]).unwrap();
        assert_eq!(
            peers(&compiler),
            [1, 2],
            "`app: api` read once, `app: web` twice"
        );
        compiler.sync([], [], &eps, [&a]).unwrap();
        assert_eq!(peers(&compiler), [1]);
        compiler
            .sync([], [], &eps, [] as [&PolicyObject; 0])
            .unwrap();
        assert_eq!(peers(&compiler), Vec::<u32>::new());
    }
}
