//! The incremental compiler: [`cluster::node_ruleset`](crate::cluster::node_ruleset) for an agent that compiles on
//! every reconcile pass, recomputing only what changed since the last pass.
//!
//! [`IncrementalCompiler::sync`] is level-triggered: it takes the whole view every time, diffs it against what it
//! saw last (per object by name, cheap equality; only changed policy objects are validated again), finds the
//! fragments of the ruleset (see `compile.rs`: one per policy object, plus the isolation, tenant and default rules)
//! that the changes can touch (`deps.rs`), recomputes those, and splices their rules and sets into the ruleset it
//! keeps. The result is always exactly what `node_ruleset` returns for the same inputs (`tests/it/incremental.rs`
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

use crate::addr::AddrSet;
use crate::cluster;
use crate::compile::{
    addrs, default_fragment, isolation_fragment, local_endpoints, slot_of, tier_chains, union_all,
    Ctx, FragOut, Index, Slot,
};
use crate::deps::{self, Moved, Version};
use crate::error::CompileError;
use crate::ir::{NodeRuleset, Rule, SetName, LOCAL_SET};
use seam_policy::{
    Endpoint, IsolationMode, Labels, Namespace, ObjectKey, PolicyKind, PolicyObject, PolicySet,
    Tenant,
};

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
    fn version(&self) -> Version<'_> {
        Version {
            ep: &self.ep,
            local: self.local,
        }
    }
}

/// A policy object of the view, and why it is not in force when it does not validate.
#[derive(Debug)]
struct Doc {
    object: PolicyObject,
    invalid: Option<String>,
}

impl Doc {
    /// Checked once, when it is new or changed.
    fn new(object: &PolicyObject) -> Self {
        Doc {
            invalid: cluster::check_document(object).err(),
            object: object.clone(),
        }
    }

    /// The object, when it may be in force.
    fn in_force(&self) -> Option<&PolicyObject> {
        self.invalid.is_none().then_some(&self.object)
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
    next_id: u64,
}

/// The splice found the chains out of step with the fragments (a bug): the caller compiles in full.
#[derive(Debug)]
struct Inconsistent;

/// An agent's view of the cluster by name (tenants, namespaces and endpoints under their own names, policy
/// documents under their store names), for [`IncrementalCompiler::sync_changes`].
#[derive(Debug, Clone, Copy)]
pub struct KeyedView<'a> {
    /// Tenants by name.
    pub tenants: &'a BTreeMap<String, seam_model::Tenant>,
    /// Namespaces by name.
    pub namespaces: &'a BTreeMap<String, seam_model::Namespace>,
    /// Endpoints by name.
    pub endpoints: &'a BTreeMap<String, seam_model::Endpoint>,
    /// Policy objects by store name.
    pub documents: &'a BTreeMap<String, PolicyObject>,
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
fn doc_ident(o: &PolicyObject) -> u64 {
    let meta = o.metadata();
    hash_of(&(o.kind(), meta.namespace.as_deref(), meta.name.as_str()))
}

fn key_of(o: &PolicyObject, key: &ObjectKey) -> bool {
    o.kind() == key.kind && o.metadata().name == key.name && o.metadata().namespace == key.namespace
}

impl World {
    /// Brings the world to the new inputs and reports what changed.
    fn update(
        &mut self,
        node: &str,
        tenants: &[&seam_model::Tenant],
        namespaces: &[&seam_model::Namespace],
        endpoints: &[&seam_model::Endpoint],
        docs: &[&PolicyObject],
    ) -> Changes {
        let mut ch = Changes::default();

        // Tenants and namespaces: few, compared whole. A later object with the same name wins, as in
        // `cluster::tenant_inventory`.
        let mut tenant_objects: BTreeMap<&str, &seam_model::Tenant> = BTreeMap::new();
        for t in tenants {
            tenant_objects.insert(&t.name, t);
        }
        let tenants_changed = tenant_objects.len() != self.tenant_objects.len()
            || tenant_objects
                .iter()
                .zip(&self.tenant_objects)
                .any(|((a, x), (b, y))| a != b || *x != y);
        if tenants_changed {
            self.tenant_objects = tenant_objects
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
        }
        let mut ns_objects: BTreeMap<&str, &seam_model::Namespace> = BTreeMap::new();
        for n in namespaces {
            ns_objects.insert(&n.name, n);
        }
        let mut touched_ns: BTreeSet<String> = BTreeSet::new();
        for (name, n) in &ns_objects {
            if self.namespace_objects.get(*name) != Some(*n) {
                touched_ns.insert(name.to_string());
                self.namespace_objects
                    .insert(name.to_string(), (*n).clone());
            }
        }
        let gone: Vec<String> = self
            .namespace_objects
            .keys()
            .filter(|k| !ns_objects.contains_key(k.as_str()))
            .cloned()
            .collect();
        for name in gone {
            self.namespace_objects.remove(&name);
            touched_ns.insert(name);
        }
        let ns_objects_changed = !touched_ns.is_empty();

        // Endpoints: merge-joined by name with the kept ones (the agent's view is sorted by name already).
        let mut sorted: Vec<&seam_model::Endpoint> = endpoints.to_vec();
        if !sorted.is_sorted_by(|a, b| a.name <= b.name) {
            sorted.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let mut input: Vec<&seam_model::Endpoint> = Vec::with_capacity(sorted.len());
        for e in sorted {
            match input.last_mut() {
                // Two endpoints with one name: the inventory would hold both; compiled in full.
                Some(last) if last.name == e.name => {
                    ch.anomaly = true;
                    *last = e;
                }
                _ => input.push(e),
            }
        }
        let mut upserts: Vec<&seam_model::Endpoint> = Vec::new();
        let mut removals: Vec<String> = Vec::new();
        {
            let mut kept = self.endpoints.iter().peekable();
            let mut new = input.iter().peekable();
            loop {
                match (kept.peek(), new.peek()) {
                    (Some((k, s)), Some(m)) => match k.as_str().cmp(m.name.as_str()) {
                        std::cmp::Ordering::Less => {
                            removals.push((*k).clone());
                            kept.next();
                        }
                        std::cmp::Ordering::Greater => {
                            upserts.push(m);
                            new.next();
                        }
                        std::cmp::Ordering::Equal => {
                            if !same_endpoint(s, m, node) {
                                upserts.push(m);
                            }
                            kept.next();
                            new.next();
                        }
                    },
                    (Some((k, _)), None) => {
                        removals.push((*k).clone());
                        kept.next();
                    }
                    (None, Some(m)) => {
                        upserts.push(m);
                        new.next();
                    }
                    (None, None) => break,
                }
            }
        }
        for name in removals {
            self.remove_endpoint(name, &mut touched_ns, &mut ch);
        }
        for m in upserts {
            self.upsert_endpoint(node, m, &mut touched_ns, &mut ch);
        }
        self.settle(touched_ns, tenants_changed, ns_objects_changed, &mut ch);
        self.update_docs(docs, &mut ch);
        ch
    }

    /// Brings the world to `view` comparing only the objects `hints` names. `None` (nothing done) when the
    /// world did not come from a view by name, or a named object is not under its own name: the caller then
    /// compares everything ([`World::update_keyed`]).
    fn update_hinted(
        &mut self,
        node: &str,
        view: &KeyedView<'_>,
        hints: &ViewChanges,
    ) -> Option<Changes> {
        if hints.everything || self.doc_names.is_none() {
            return None;
        }
        // A name that is not the object's own would be kept under the object's (as `update` does): later
        // changes by name would not find it.
        let misnamed = hints
            .tenants
            .iter()
            .any(|k| view.tenants.get(k).is_some_and(|t| t.name != *k))
            || hints
                .namespaces
                .iter()
                .any(|k| view.namespaces.get(k).is_some_and(|n| n.name != *k))
            || hints
                .endpoints
                .iter()
                .any(|k| view.endpoints.get(k).is_some_and(|e| e.name != *k));
        if misnamed {
            return None;
        }
        let mut ch = Changes::default();
        let mut tenants_changed = false;
        for k in &hints.tenants {
            let new = view.tenants.get(k);
            if self.tenant_objects.get(k) == new {
                continue;
            }
            tenants_changed = true;
            match new {
                Some(t) => self.tenant_objects.insert(k.clone(), t.clone()),
                None => self.tenant_objects.remove(k),
            };
        }
        let mut touched_ns: BTreeSet<String> = BTreeSet::new();
        for k in &hints.namespaces {
            let new = view.namespaces.get(k);
            if self.namespace_objects.get(k) == new {
                continue;
            }
            touched_ns.insert(k.clone());
            match new {
                Some(n) => self.namespace_objects.insert(k.clone(), n.clone()),
                None => self.namespace_objects.remove(k),
            };
        }
        let ns_objects_changed = !touched_ns.is_empty();
        for k in &hints.endpoints {
            match (self.endpoints.get(k), view.endpoints.get(k)) {
                (None, None) => {}
                (Some(_), None) => self.remove_endpoint(k.clone(), &mut touched_ns, &mut ch),
                (Some(s), Some(m)) if same_endpoint(s, m, node) => {}
                (_, Some(m)) => self.upsert_endpoint(node, m, &mut touched_ns, &mut ch),
            }
        }
        self.settle(touched_ns, tenants_changed, ns_objects_changed, &mut ch);

        // Documents: kept in store-name order, as the map gives them (the order decides between two documents
        // of one key); only the named ones compared and parsed.
        let mut changed_keys: BTreeSet<ObjectKey> = BTreeSet::new();
        let mut docs_changed = false;
        let mut names = self.doc_names.take().unwrap_or_default();
        for k in &hints.documents {
            let new = view.documents.get(k);
            match (names.binary_search(k), new) {
                (Err(_), None) => {}
                (Ok(i), Some(v)) if self.docs.get(i).is_some_and(|d| d.object == *v) => {}
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
        self.settle_policies(changed_keys, docs_changed, &mut ch);
        Some(ch)
    }

    /// [`World::update`] from a view by name, remembering the documents' names for the passes by name that
    /// follow.
    fn update_keyed(&mut self, node: &str, view: &KeyedView<'_>) -> Changes {
        let tenants: Vec<&seam_model::Tenant> = view.tenants.values().collect();
        let namespaces: Vec<&seam_model::Namespace> = view.namespaces.values().collect();
        let endpoints: Vec<&seam_model::Endpoint> = view.endpoints.values().collect();
        let docs: Vec<&PolicyObject> = view.documents.values().collect();
        let ch = self.update(node, &tenants, &namespaces, &endpoints, &docs);
        let own_names = view.tenants.iter().all(|(k, t)| *k == t.name)
            && view.namespaces.iter().all(|(k, n)| *k == n.name)
            && view.endpoints.iter().all(|(k, e)| *k == e.name);
        self.doc_names = own_names.then(|| view.documents.keys().cloned().collect());
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

    /// Policy documents: matched with the kept ones (by position, else by identity), validated only when new or
    /// changed; the objects in force (the last valid document of each key, as `cluster::policy_set` keeps them)
    /// updated for the keys that changed.
    fn update_docs(&mut self, docs: &[&PolicyObject], ch: &mut Changes) {
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
                .is_some_and(|d| d.object == **v);
            let found = if positional {
                Some(cursor)
            } else {
                let map = by_ident.get_or_insert_with(|| {
                    let mut m: HashMap<u64, Vec<usize>> = HashMap::new();
                    for (i, d) in old.iter().enumerate() {
                        if let Some(d) = d {
                            m.entry(doc_ident(&d.object)).or_default().push(i);
                        }
                    }
                    m
                });
                map.get(&doc_ident(v)).and_then(|c| {
                    c.iter()
                        .copied()
                        .find(|i| old[*i].as_ref().is_some_and(|d| d.object == **v))
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
        self.settle_policies(changed_keys, docs_changed, ch);
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
    pub fn sync<'a>(
        &mut self,
        tenants: impl IntoIterator<Item = &'a seam_model::Tenant>,
        namespaces: impl IntoIterator<Item = &'a seam_model::Namespace>,
        endpoints: impl IntoIterator<Item = &'a seam_model::Endpoint>,
        documents: impl IntoIterator<Item = &'a PolicyObject>,
    ) -> Result<(&NodeRuleset, Vec<String>), CompileError> {
        let tenants: Vec<&seam_model::Tenant> = tenants.into_iter().collect();
        let namespaces: Vec<&seam_model::Namespace> = namespaces.into_iter().collect();
        let endpoints: Vec<&seam_model::Endpoint> = endpoints.into_iter().collect();
        let documents: Vec<&PolicyObject> = documents.into_iter().collect();
        let changes = self
            .world
            .update(&self.node, &tenants, &namespaces, &endpoints, &documents);
        // The documents came without names: a pass by name has to compare them all first.
        self.world.doc_names = None;
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
    pub fn sync_changes(
        &mut self,
        view: KeyedView<'_>,
        changes: &ViewChanges,
    ) -> Result<(&NodeRuleset, Vec<String>), CompileError> {
        let ch = match self.world.update_hinted(&self.node, &view, changes) {
            Some(ch) => ch,
            None => self.world.update_keyed(&self.node, &view),
        };
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

impl Built {
    /// Recompiles what `ch` touches (everything when `full`) and splices it into the ruleset.
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

        let mut dirty: BTreeSet<ObjectKey> = BTreeSet::new();
        let mut dirty_groups: BTreeSet<String> = BTreeSet::new();
        let mut tenancy = full;
        let mut tenant_scoped = false;
        let mut locals_changed = full;
        let mut moved_addrs: Vec<Ipv4Addr> = Vec::new();
        if full {
            let next_id = self.next_id.max(3);
            *self = Built {
                next_id,
                ..Built::default()
            };
            self.out.egress = tier_chains(Default::default());
            self.out.ingress = tier_chains(Default::default());
            dirty.extend(world.policies.objects().map(PolicyObject::key));
        } else {
            for k in &ch.policies {
                if k.kind == PolicyKind::EndpointGroup {
                    dirty_groups.insert(k.name.clone());
                } else {
                    dirty.insert(k.clone());
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
                    tenancy = true;
                    moved_addrs.extend(addresses(old).into_iter().flatten());
                    moved_addrs.extend(addresses(new).into_iter().flatten());
                }
                locals_changed |= old.is_some_and(|s| s.local) || new.is_some_and(|s| s.local);
                let (old, new) = (old.map(EpState::version), new.map(EpState::version));
                for o in world.policies.objects() {
                    if deps::object_touched(o, old, new, moved, &idx) {
                        dirty.insert(o.key());
                    }
                }
                for g in self.groups.borrow().keys() {
                    if deps::group_touched(g, &world.policies, old, new, moved, &idx) {
                        dirty_groups.insert(g.clone());
                    }
                }
            }
            for (_, old, new) in &ch.namespaces {
                let (ol, nl) = (labels_of(old), labels_of(new));
                if ol != nl {
                    for o in world.policies.objects() {
                        if deps::object_reads_labels(o, ol, nl) {
                            dirty.insert(o.key());
                        }
                    }
                    for g in self.groups.borrow().keys() {
                        if deps::group_reads_labels(g, &world.policies, ol, nl) {
                            dirty_groups.insert(g.clone());
                        }
                    }
                }
                let tenant = |n: &Option<Namespace>| {
                    n.as_ref()
                        .and_then(|n| n.tenant.clone())
                        .unwrap_or_else(|| seam_policy::DEFAULT_TENANT.to_string())
                };
                if tenant(old) != tenant(new) {
                    tenancy = true;
                    tenant_scoped = true;
                }
            }
            tenancy |= ch.tenants;
        }

        let ctx = Ctx::new(&world.policies, &idx, &locals, &local_addrs, &self.groups);
        // Groups first: contracts are dirty when a group they name changed members.
        let mut changed_groups: BTreeSet<String> = BTreeSet::new();
        for g in dirty_groups {
            if !self.groups.borrow().contains_key(&g) {
                continue;
            }
            let members = ctx.group_set_uncached(&g);
            let old = self.groups.borrow_mut().insert(g.clone(), members.clone());
            if old.as_ref() != Some(&members) {
                changed_groups.insert(g);
            }
        }
        if !full {
            let groups = self.groups.borrow();
            for c in world.policies.contracts() {
                let mut names = c.spec.consumers.iter().chain(&c.spec.providers);
                let hit = names.clone().any(|g| changed_groups.contains(g))
                    || (tenant_scoped && c.spec.scope == seam_policy::ContractScope::Tenant)
                    || (!moved_addrs.is_empty()
                        && names.any(|g| {
                            groups
                                .get(g)
                                .is_none_or(|set| moved_addrs.iter().any(|a| set.contains(*a)))
                        }));
                if hit {
                    dirty.insert(ObjectKey {
                        kind: PolicyKind::Contract,
                        namespace: None,
                        name: c.metadata.name.clone(),
                    });
                }
            }
        }

        // Recompute the dirty fragments (in key order, merged with the objects in force: a dirty key without an
        // object was removed).
        let mut st = State {
            out: &mut self.out,
            frags: &mut self.frags,
            order: &mut self.order,
            segs: &mut self.segs,
            set_refs: &mut self.set_refs,
            next_id: &mut self.next_id,
        };
        let mut fresh: HashMap<u64, [Vec<Rule>; 2]> = HashMap::new();
        let mut touched = [full; 3];
        let mut iso_changed = full;
        let mut keys = dirty.into_iter().peekable();
        for o in world.policies.objects() {
            while let Some(k) = keys.peek() {
                match cmp_key(o, k) {
                    std::cmp::Ordering::Greater => {
                        st.apply(
                            FragKey::Object(k.clone()),
                            None,
                            &mut fresh,
                            &mut touched,
                            &mut iso_changed,
                        );
                        keys.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if let Some(slot) = slot_of(o) {
                            st.apply(
                                FragKey::Object(o.key()),
                                Some((slot, ctx.fragment(o))),
                                &mut fresh,
                                &mut touched,
                                &mut iso_changed,
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
            st.apply(
                FragKey::Object(k),
                None,
                &mut fresh,
                &mut touched,
                &mut iso_changed,
            );
        }
        if iso_changed {
            let mut iso: [Vec<AddrSet>; 2] = Default::default();
            for f in st.frags.values() {
                for (d, s) in f.iso.iter().enumerate() {
                    if !s.is_empty() {
                        iso[d].push(s.clone());
                    }
                }
            }
            let isolated = [union_all(&iso[0]), union_all(&iso[1])];
            let frag = isolation_fragment(&isolated);
            st.apply(
                FragKey::Isolation,
                Some((Slot::Isolation, frag)),
                &mut fresh,
                &mut touched,
                &mut iso_changed,
            );
        }
        if tenancy {
            st.apply(
                FragKey::Tenancy,
                Some((Slot::Tenancy, ctx.tenancy_fragment())),
                &mut fresh,
                &mut touched,
                &mut iso_changed,
            );
        }
        if full {
            st.apply(
                FragKey::Default,
                Some((Slot::Default, default_fragment())),
                &mut fresh,
                &mut touched,
                &mut iso_changed,
            );
        }
        if locals_changed {
            st.out.local = local_endpoints(&locals);
            st.out
                .sets
                .insert(LOCAL_SET.to_string(), local_addrs.clone());
        }
        st.assemble(&mut fresh, touched)?;

        // Keep only the groups some contract names.
        let named: HashSet<&str> = world
            .policies
            .contracts()
            .flat_map(|c| c.spec.consumers.iter().chain(&c.spec.providers))
            .map(String::as_str)
            .collect();
        drop(ctx);
        self.groups
            .borrow_mut()
            .retain(|g, _| named.contains(g.as_str()));
        self.valid = true;
        Ok(())
    }
}

/// The parts of [`Built`] a pass changes while the groups are borrowed by the fragment compiler.
struct State<'b> {
    out: &'b mut NodeRuleset,
    frags: &'b mut HashMap<FragKey, Frag>,
    order: &'b mut BTreeMap<Slot, u64>,
    segs: &'b mut [[Vec<(u64, usize)>; 3]; 2],
    set_refs: &'b mut HashMap<SetName, u32>,
    next_id: &'b mut u64,
}

impl State<'_> {
    /// Replaces a fragment by its recompiled output (`None`: removes it): its sets go into the ruleset now, its
    /// rules wait in `fresh` for [`State::assemble`].
    fn apply(
        &mut self,
        key: FragKey,
        new: Option<(Slot, FragOut)>,
        fresh: &mut HashMap<u64, [Vec<Rule>; 2]>,
        touched: &mut [bool; 3],
        iso_changed: &mut bool,
    ) {
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
                self.order.remove(&f.slot);
                touched[f.slot.tier()] = true;
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
            *iso_changed |= *old_iso != no_iso;
            return;
        };
        let FragOut { rules, sets, iso } = frag;
        *iso_changed |= *old_iso != iso;
        let mut names = Vec::with_capacity(sets.len());
        for (name, set) in sets {
            *self.set_refs.entry(name.clone()).or_default() += 1;
            self.out.sets.insert(name.clone(), set);
            names.push(name);
        }
        self.order.insert(slot.clone(), id);
        touched[slot.tier()] = true;
        fresh.insert(id, rules);
        self.frags.insert(
            key,
            Frag {
                id,
                slot,
                sets: names,
                iso,
            },
        );
    }

    /// Rebuilds the chains of the touched tiers in slot order: the rules of recompiled fragments from `fresh`,
    /// the others moved over from the old chain (their relative order cannot have changed).
    fn assemble(
        &mut self,
        fresh: &mut HashMap<u64, [Vec<Rule>; 2]>,
        touched: [bool; 3],
    ) -> Result<(), Inconsistent> {
        for (tier, touched) in touched.into_iter().enumerate() {
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
