//! Services on this node: what the node translates ([`seam_dataplane::services`]), kept from the
//! view pass after pass at the cost of what changed.
//!
//! The view records what a pass must look at again ([`ServiceChanges`]): the Services written,
//! the Services of EndpointSlices written, the endpoints written (with the namespace and labels
//! they had, so that a Service an endpoint leaves is found as well as one it joins), and whether
//! anything else the result reads changed (segments, nodes, node leases, pools). A pass
//! ([`ServiceCache::sync`]) resolves again only the Services those touch, keeps every other
//! Service's frontends as they were, and assembles the node's [`DesiredServices`] when anything
//! changed at all; with nothing changed it hands back the last one. Policy is not read here, and
//! nothing here makes the firewall compiler recompile it.
//!
//! The result is the Services part of the one table [`crate::reconcile`] writes: policy and
//! Services change in one transaction. Translation happens in the nat hooks (prerouting and
//! output, priority dstnat) and policy in the forward hook, after it: policy sees a connection to
//! a Service with its backend as the destination, as Kubernetes expects. A backend on the
//! client's own bridge answers the client's MAC directly; that bridged reply passes conntrack
//! (and gets the Service's address back) only through br_netfilter, which `seamd` turns on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use seam_dataplane::services::{
    assemble, backends_among, service_frontends, DesiredServices, Frontend,
};
use seam_model::{Endpoint, EndpointKind, EndpointSlice, NodeRole, ResolvedPort, Service};
use seam_nft::services::{FrontendKey, ServiceModel};

use crate::ClusterView;

/// Above this many endpoints changed in one pass, every Service is resolved again (with the
/// index) instead of each endpoint being matched against every Service.
const EVERYTHING_ABOVE: usize = 256;

/// What an endpoint was before a write: its namespace and labels (`None`: it did not exist).
pub type EndpointBefore = Option<(String, BTreeMap<String, String>)>;

/// What Services may need again since the last pass, recorded by [`ClusterView`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceChanges {
    /// Anything may have changed (a re-list, or the first pass).
    pub everything: bool,
    /// Services to resolve again, by `namespace/name`: written, or one of their EndpointSlices.
    pub services: BTreeSet<String>,
    /// EndpointSlices written, by `namespace/name`.
    pub slices: BTreeSet<String>,
    /// Endpoints written, by name, with the namespace and labels each had before the first of
    /// these writes (`None`: it did not exist).
    pub endpoints: BTreeMap<String, EndpointBefore>,
    /// Something else the node's result reads changed: segments, nodes, node leases, pools.
    pub context: bool,
}

impl ServiceChanges {
    /// "Anything may have changed".
    pub fn everything() -> Self {
        ServiceChanges {
            everything: true,
            ..ServiceChanges::default()
        }
    }

    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.everything
            && self.services.is_empty()
            && self.slices.is_empty()
            && self.endpoints.is_empty()
            && !self.context
    }

    /// Records that endpoint `name`, now `old` (before the write), is written.
    pub(crate) fn endpoint(&mut self, name: &str, old: Option<&Endpoint>) {
        if self.everything || self.endpoints.contains_key(name) {
            return;
        }
        let old = old.map(|e| (e.namespace.clone(), e.labels.clone()));
        self.endpoints.insert(name.to_string(), old);
    }

    /// Records that the Service of EndpointSlice `slice` (before or after a write) is to be
    /// resolved again.
    pub(crate) fn slice(&mut self, slice: Option<&EndpointSlice>) {
        if let Some(s) = slice {
            if !self.everything {
                self.services
                    .insert(format!("{}/{}", s.namespace, s.service));
            }
        }
    }
}

/// Every Service's frontends on this node, as of the last pass.
#[derive(Debug)]
pub struct ServiceCache {
    node: String,
    role: NodeRole,
    /// Frontends of each Service by `namespace/name` (Services that have none are left out).
    frontends: BTreeMap<String, Vec<Frontend>>,
    /// The Services with a frontend at each key: the first one's is the result's (as
    /// [`assemble`] picks, Services in name order).
    owners: BTreeMap<FrontendKey, BTreeSet<String>>,
    /// How many backends of the result's frontends have each address (hairpin: the local ones).
    backend_addrs: BTreeMap<Ipv4Addr, usize>,
    /// This node's endpoints: name → address.
    local: BTreeMap<String, Ipv4Addr>,
    /// The view's endpoints, EndpointSlices and Services indexed, as of the last pass.
    index: Index,
    /// The external endpoints (kind `External`): name → address.
    external: BTreeMap<String, Ipv4Addr>,
    /// The last result; `None` before the first pass.
    desired: Option<Arc<DesiredServices>>,
    /// The table's Services part for it (changed with it, frontend by frontend).
    model: ServiceModel,
}

impl ServiceCache {
    /// Nothing known yet, for node `node` of role `role`.
    pub fn new(node: String, role: NodeRole) -> Self {
        ServiceCache {
            node,
            role,
            frontends: BTreeMap::new(),
            owners: BTreeMap::new(),
            backend_addrs: BTreeMap::new(),
            local: BTreeMap::new(),
            index: Index::default(),
            external: BTreeMap::new(),
            desired: None,
            model: ServiceModel::default(),
        }
    }

    /// The table's Services part for the last result (the default, not enabled, before the
    /// first pass).
    pub fn model(&self) -> &ServiceModel {
        &self.model
    }

    /// The last result, if a pass was made.
    pub fn desired(&self) -> Option<Arc<DesiredServices>> {
        self.desired.clone()
    }

    /// Brings the result up to `view`, which `changes` says what changed in since the last pass,
    /// and returns it with whether it differs from the last one.
    pub fn sync(
        &mut self,
        view: &ClusterView,
        changes: &ServiceChanges,
    ) -> (Arc<DesiredServices>, bool) {
        if let Some(last) = &self.desired {
            if changes.is_empty() {
                return (last.clone(), false);
            }
        }
        let everything = self.desired.is_none()
            || changes.everything
            || changes.endpoints.len() > EVERYTHING_ABOVE;
        let keys: BTreeSet<String> = if everything {
            self.index = Index::new(view);
            // Services gone since the last pass are dropped below: none is in the view.
            self.frontends
                .keys()
                .chain(view.services.keys())
                .cloned()
                .collect()
        } else {
            self.index.follow(view, changes);
            affected(view, &self.index, changes)
        };
        // The frontend keys whose Services' frontends changed: only they can change the result.
        let mut touched: BTreeSet<FrontendKey> = BTreeSet::new();
        for key in keys {
            let now = view
                .services
                .get(&key)
                .map(|service| {
                    let ports = resolve_in(view, &self.index, service);
                    service_frontends(&self.node, service, &ports)
                })
                .filter(|f| !f.is_empty());
            if self.frontends.get(&key) == now.as_ref() {
                continue;
            }
            let before = match now {
                Some(f) => self.frontends.insert(key.clone(), f),
                None => self.frontends.remove(&key),
            };
            for f in before.iter().flatten() {
                touched.insert(f.key);
                if let Some(owners) = self.owners.get_mut(&f.key) {
                    owners.remove(&key);
                    if owners.is_empty() {
                        self.owners.remove(&f.key);
                    }
                }
            }
            for f in self.frontends.get(&key).into_iter().flatten() {
                touched.insert(f.key);
                self.owners.entry(f.key).or_default().insert(key.clone());
            }
        }
        // This node's endpoints (for hairpin): looked for among those that changed only.
        // And the external ones (for `snat_backends`), the same way.
        let external = |e: &&Endpoint| e.kind == EndpointKind::External;
        if everything {
            self.local = view
                .endpoints
                .values()
                .filter(|e| e.node == self.node)
                .map(|e| (e.name.clone(), e.ip))
                .collect();
            self.external = view
                .endpoints
                .values()
                .filter(external)
                .map(|e| (e.name.clone(), e.ip))
                .collect();
        } else {
            for name in changes.endpoints.keys() {
                match view.endpoints.get(name).filter(|e| e.node == self.node) {
                    Some(e) => self.local.insert(name.clone(), e.ip),
                    None => self.local.remove(name),
                };
                match view.endpoints.get(name).filter(external) {
                    Some(e) => self.external.insert(name.clone(), e.ip),
                    None => self.external.remove(name),
                };
            }
        }
        let local: BTreeSet<Ipv4Addr> = self.local.values().copied().collect();
        let external: BTreeSet<Ipv4Addr> = self.external.values().copied().collect();
        let node_address = view.nodes.get(&self.node).map(|n| n.underlay_ip);
        let subnets: BTreeSet<Ipv4Net> = view.segments.values().map(|s| s.subnet).collect();
        let lb_addresses = crate::gateway::served_lb_addresses(view, &self.node, self.role);
        let last = match self.desired.clone() {
            Some(last) if !everything => last,
            _ => return self.assemble_all(&local, &external, subnets, &lb_addresses, node_address),
        };
        // The frontends of the result that are not what their keys' first Services have now.
        let mut edits: Vec<(FrontendKey, Option<Frontend>)> = Vec::new();
        for key in touched {
            let winner = self
                .owners
                .get(&key)
                .and_then(|owners| owners.first())
                .and_then(|service| self.frontends.get(service))
                .and_then(|list| list.iter().find(|f| f.key == key));
            let current = last
                .frontends
                .binary_search_by_key(&key, |f| f.key)
                .ok()
                .and_then(|i| last.frontends.get(i));
            if winner != current {
                if let Some(f) = current {
                    forget_backends(&mut self.backend_addrs, f);
                }
                if let Some(f) = winner {
                    count_backends(&mut self.backend_addrs, f);
                }
                edits.push((key, winner.cloned()));
            }
        }
        let backends = |addrs: BTreeSet<Ipv4Addr>| -> BTreeSet<Ipv4Addr> {
            addrs
                .into_iter()
                .filter(|ip| self.backend_addrs.contains_key(ip))
                .collect()
        };
        let rest = DesiredServices {
            frontends: Vec::new(),
            hairpin: backends(local),
            segment_subnets: subnets,
            lb_addresses,
            node_address,
            snat_backends: backends(external),
        };
        // No Service's frontends moved, nor anything else the result holds: it stands (an
        // endpoint no Service selects costs only the look for the Services it might be in).
        if edits.is_empty()
            && rest.hairpin == last.hairpin
            && rest.segment_subnets == last.segment_subnets
            && rest.lb_addresses == last.lb_addresses
            && rest.node_address == last.node_address
            && rest.snat_backends == last.snat_backends
        {
            return (last, false);
        }
        self.model
            .update(edits.iter().map(|(key, f)| (*key, f.as_ref())), &rest);
        // Shared with what was applied last, most often: copied once, then changed in place.
        let mut next = last;
        drop(self.desired.take());
        let desired = Arc::make_mut(&mut next);
        for (key, f) in edits {
            match (desired.frontends.binary_search_by_key(&key, |f| f.key), f) {
                (Ok(i), Some(f)) => desired.frontends[i] = f,
                (Ok(i), None) => {
                    desired.frontends.remove(i);
                }
                (Err(i), Some(f)) => desired.frontends.insert(i, f),
                (Err(_), None) => {}
            }
        }
        let frontends = std::mem::take(&mut desired.frontends);
        *desired = DesiredServices { frontends, ..rest };
        self.desired = Some(next.clone());
        (next, true)
    }

    /// The result assembled from every Service's frontends (the first pass, or after a
    /// re-list), with its model made from scratch.
    fn assemble_all(
        &mut self,
        local: &BTreeSet<Ipv4Addr>,
        external: &BTreeSet<Ipv4Addr>,
        subnets: BTreeSet<Ipv4Net>,
        lb_addresses: &BTreeSet<Ipv4Addr>,
        node_address: Option<Ipv4Addr>,
    ) -> (Arc<DesiredServices>, bool) {
        let mut desired = assemble(
            self.frontends.values().flatten(),
            subnets,
            local,
            lb_addresses,
        );
        desired.snat_backends = backends_among(&desired, external);
        desired.node_address = node_address;
        self.backend_addrs.clear();
        for f in &desired.frontends {
            count_backends(&mut self.backend_addrs, f);
        }
        let changed = self.desired.as_deref() != Some(&desired);
        if changed {
            self.model = ServiceModel::from_desired(&desired);
            self.desired = Some(Arc::new(desired));
        }
        let desired = self.desired.clone().unwrap_or_default();
        (desired, changed)
    }
}

/// Counts the addresses of `f`'s backends in `addrs`.
fn count_backends(addrs: &mut BTreeMap<Ipv4Addr, usize>, f: &Frontend) {
    for (ip, _) in &f.backends {
        *addrs.entry(*ip).or_insert(0) += 1;
    }
}

/// Takes the addresses of `f`'s backends out of `addrs`.
fn forget_backends(addrs: &mut BTreeMap<Ipv4Addr, usize>, f: &Frontend) {
    for (ip, _) in &f.backends {
        if let Some(n) = addrs.get_mut(ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                addrs.remove(ip);
            }
        }
    }
}

/// The Services `changes` touch: those named, and those whose selector matches a changed
/// endpoint as it was or as it is (found through `index`, which follows the view already).
fn affected(view: &ClusterView, index: &Index, changes: &ServiceChanges) -> BTreeSet<String> {
    // Those gone from the view are among them: their frontends are dropped.
    let mut keys = changes.services.clone();
    let mut sides: Vec<(&str, &BTreeMap<String, String>)> = Vec::new();
    for (name, old) in &changes.endpoints {
        if let Some((ns, labels)) = old {
            sides.push((ns, labels));
        }
        if let Some(now) = view.endpoints.get(name) {
            sides.push((&now.namespace, &now.labels));
        }
    }
    for (ns, labels) in sides {
        // A Service selects an endpoint only if the endpoint has its selector's first label.
        let firsts = labels
            .iter()
            .map(|(k, v)| (ns.to_string(), Some((k.clone(), v.clone()))))
            .chain([(ns.to_string(), None)]);
        for first in firsts {
            for key in index.selecting.get(&first).into_iter().flatten() {
                let selected = view
                    .services
                    .get(key)
                    .and_then(|s| s.spec.selector.as_ref())
                    .is_some_and(|selector| selects(selector, labels));
                if selected {
                    keys.insert(key.clone());
                }
            }
        }
    }
    keys
}

/// Whether `labels` has every label of `selector` (a Service's selector, equality only).
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A Service's selector as indexed: its namespace and first label (`None`: an empty selector,
/// which selects every endpoint of the namespace).
type SelectorKey = (String, Option<(String, String)>);

/// The view indexed for resolving Services at the cost of what changed: endpoints by label and
/// by namespace, EndpointSlices by Service, Services by selector. Made from the view on a pass
/// over everything and brought along by each pass's changes after that.
#[derive(Debug, Default)]
struct Index {
    /// Endpoint names by (namespace, label key, label value).
    by_label: HashMap<(String, String, String), BTreeSet<String>>,
    /// Endpoint names by namespace.
    by_namespace: HashMap<String, BTreeSet<String>>,
    /// EndpointSlice keys by (namespace, Service name).
    slices: HashMap<(String, String), BTreeSet<String>>,
    /// Each EndpointSlice's entry in `slices`.
    slice_of: HashMap<String, (String, String)>,
    /// Services with a selector, by its key.
    selecting: HashMap<SelectorKey, BTreeSet<String>>,
    /// Each Service's entry in `selecting`.
    selector_of: HashMap<String, SelectorKey>,
}

/// Takes `item` out of the set at `key` of `map`, and the set when it is left empty.
fn unindex<K: std::hash::Hash + Eq>(map: &mut HashMap<K, BTreeSet<String>>, key: &K, item: &str) {
    if let Some(set) = map.get_mut(key) {
        set.remove(item);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

impl Index {
    fn new(view: &ClusterView) -> Self {
        let mut index = Index::default();
        for (name, e) in &view.endpoints {
            index.add_endpoint(name, &e.namespace, &e.labels);
        }
        for (key, s) in &view.endpoint_slices {
            index.slice(key, Some(s));
        }
        for (key, s) in &view.services {
            index.service(key, Some(s));
        }
        index
    }

    /// Brings the index from the view of the last pass to `view`, which `changes` says what
    /// changed in.
    fn follow(&mut self, view: &ClusterView, changes: &ServiceChanges) {
        for (name, before) in &changes.endpoints {
            if let Some((ns, labels)) = before {
                unindex(&mut self.by_namespace, &ns.clone(), name);
                for (k, v) in labels {
                    unindex(
                        &mut self.by_label,
                        &(ns.clone(), k.clone(), v.clone()),
                        name,
                    );
                }
            }
            if let Some(e) = view.endpoints.get(name) {
                self.add_endpoint(name, &e.namespace, &e.labels);
            }
        }
        for key in &changes.slices {
            self.slice(key, view.endpoint_slices.get(key));
        }
        for key in &changes.services {
            self.service(key, view.services.get(key));
        }
    }

    fn add_endpoint(&mut self, name: &str, ns: &str, labels: &BTreeMap<String, String>) {
        self.by_namespace
            .entry(ns.to_string())
            .or_default()
            .insert(name.to_string());
        for (k, v) in labels {
            self.by_label
                .entry((ns.to_string(), k.clone(), v.clone()))
                .or_default()
                .insert(name.to_string());
        }
    }

    /// EndpointSlice `key` is `now`.
    fn slice(&mut self, key: &str, now: Option<&EndpointSlice>) {
        if let Some(entry) = self.slice_of.remove(key) {
            unindex(&mut self.slices, &entry, key);
        }
        if let Some(s) = now {
            let entry = (s.namespace.clone(), s.service.clone());
            self.slices
                .entry(entry.clone())
                .or_default()
                .insert(key.to_string());
            self.slice_of.insert(key.to_string(), entry);
        }
    }

    /// Service `key` is `now`.
    fn service(&mut self, key: &str, now: Option<&Service>) {
        if let Some(entry) = self.selector_of.remove(key) {
            unindex(&mut self.selecting, &entry, key);
        }
        if let Some(s) = now {
            if let Some(selector) = &s.spec.selector {
                let first = selector.iter().next().map(|(k, v)| (k.clone(), v.clone()));
                let entry = (s.namespace.clone(), first);
                self.selecting
                    .entry(entry.clone())
                    .or_default()
                    .insert(key.to_string());
                self.selector_of.insert(key.to_string(), entry);
            }
        }
    }
}

/// `service`'s ports with their backends, from the endpoints and EndpointSlices of the view
/// that can be its backends (found through `index`).
fn resolve_in(view: &ClusterView, index: &Index, service: &Service) -> Vec<ResolvedPort> {
    let ns = service.namespace.as_str();
    let (endpoints, slices): (Vec<Endpoint>, Vec<EndpointSlice>) = match &service.spec.selector {
        Some(selector) => {
            // The shortest list of one of the selector's labels holds every match.
            let shortest = selector
                .iter()
                .map(|(k, v)| index.by_label.get(&(ns.to_string(), k.clone(), v.clone())))
                .min_by_key(|l| l.map_or(0, BTreeSet::len));
            let candidates = match shortest {
                Some(list) => list,
                None => index.by_namespace.get(ns),
            };
            let endpoints = candidates
                .into_iter()
                .flatten()
                .filter_map(|name| view.endpoints.get(name))
                .filter(|e| e.namespace == ns && selects(selector, &e.labels))
                .cloned()
                .collect();
            (endpoints, Vec::new())
        }
        None => {
            let slices = index
                .slices
                .get(&(ns.to_string(), service.name.clone()))
                .into_iter()
                .flatten()
                .filter_map(|key| view.endpoint_slices.get(key))
                .cloned()
                .collect();
            (Vec::new(), slices)
        }
    };
    seam_model::resolve(service, &endpoints, &slices)
}

#[cfg(test)]
mod tests;
