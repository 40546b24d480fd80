use std::collections::BTreeMap;

use seam_firewall::ViewChanges;

use crate::services::ServiceChanges;
use seam_model::{
    Block, Endpoint, Node, ObjectKind, Segment, Snapshot, StoredPolicy, UnreadablePolicy,
    WatchEvent,
};

/// The agent's copy of the controller's objects.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// Last revision applied.
    pub revision: u64,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Segments by name.
    pub segments: BTreeMap<String, Segment>,
    /// Blocks by key.
    pub blocks: BTreeMap<String, Block>,
    /// Endpoints by name.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Namespaces by name (labels and tenant, for policy selectors).
    pub namespaces: BTreeMap<String, seam_model::Namespace>,
    /// Tenants by name (isolation mode and global flag).
    pub tenants: BTreeMap<String, seam_model::Tenant>,
    /// Policy objects by store name (`<Kind>/<namespace or _>/<name>`), typed when they arrived; one
    /// this agent cannot read (a newer Seam's) is kept by name as unreadable: never in force, but
    /// known and reported by the firewall compiler ("stored policy object ignored: …").
    pub policies: BTreeMap<String, StoredPolicy>,
    /// The generation (store revision of the last write) of every policy object, by store name,
    /// and of every tenant, by [`seam_model::tenant_realization_name`]: what this node reports
    /// it enforces once a table holding them is written ([`crate::realization`]).
    pub generations: BTreeMap<String, u64>,
    /// Which segment the controller said serves a namespace (flat mode has one for all).
    pub namespace_segment: BTreeMap<String, String>,
    /// Address pools by name.
    pub address_pools: BTreeMap<String, seam_model::AddressPool>,
    /// Services by `namespace/name`.
    pub services: BTreeMap<String, seam_model::Service>,
    /// EndpointSlices by `namespace/name`.
    pub endpoint_slices: BTreeMap<String, seam_model::EndpointSlice>,
    /// Node leases held now, by node.
    pub node_leases: BTreeMap<String, seam_model::NodeLease>,
    /// What the firewall reads (tenants, namespaces, endpoints, policies) that may have changed since the
    /// firewall compiler last took it: lets a pass compare only those objects. Kept by [`ClusterView::reset`]
    /// and [`ClusterView::apply`]; whoever changes those maps another way must record it here too.
    firewall_changes: ViewChanges,
    /// What Services on this node may need again since the last pass took it (see
    /// [`crate::services`]). Kept like `firewall_changes`.
    service_changes: ServiceChanges,
}

impl Default for ClusterView {
    fn default() -> Self {
        Self {
            revision: 0,
            nodes: BTreeMap::new(),
            segments: BTreeMap::new(),
            blocks: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            tenants: BTreeMap::new(),
            policies: BTreeMap::new(),
            generations: BTreeMap::new(),
            namespace_segment: BTreeMap::new(),
            address_pools: BTreeMap::new(),
            services: BTreeMap::new(),
            endpoint_slices: BTreeMap::new(),
            node_leases: BTreeMap::new(),
            // Nobody has counted yet.
            firewall_changes: ViewChanges::everything(),
            service_changes: ServiceChanges::everything(),
        }
    }
}

impl ClusterView {
    /// A view that knows only the segments cached locally (before the controller answers).
    pub fn with_segments(segments: Vec<Segment>) -> Self {
        Self {
            segments: segments.into_iter().map(|s| (s.name.clone(), s)).collect(),
            ..Self::default()
        }
    }

    /// What the firewall reads that may have changed since the last call (everything at first and after a
    /// [`ClusterView::reset`]); the next call starts counting afresh.
    pub fn take_firewall_changes(&mut self) -> ViewChanges {
        std::mem::take(&mut self.firewall_changes)
    }

    /// What Services read that may have changed since the last call (everything at first and after
    /// a [`ClusterView::reset`]); the next call starts counting afresh.
    pub fn take_service_changes(&mut self) -> ServiceChanges {
        std::mem::take(&mut self.service_changes)
    }

    /// Replaces everything with a snapshot.
    pub fn reset(&mut self, snap: Snapshot) {
        // A re-list says what is, not what changed.
        self.firewall_changes = ViewChanges::everything();
        self.service_changes = ServiceChanges::everything();
        self.revision = snap.revision;
        self.nodes = snap
            .nodes
            .into_iter()
            .map(|o| (o.name.clone(), o))
            .collect();
        self.segments = snap
            .segments
            .into_iter()
            .map(|o| (o.name.clone(), o))
            .collect();
        self.blocks = snap.blocks.into_iter().map(|o| (o.key(), o)).collect();
        self.namespaces = snap
            .namespaces
            .into_iter()
            .map(|o| (o.name.clone(), o))
            .collect();
        self.tenants = snap
            .tenants
            .into_iter()
            .map(|o| (o.name.clone(), o))
            .collect();
        // Typed by the snapshot's reader (seam-client), which kept apart those it could not read; of
        // these, one that does not say its name cannot be kept by name (nor changed by an event).
        self.policies = snap
            .policies
            .into_iter()
            .map(|p| {
                (
                    seam_model::policy_object_name(&p),
                    StoredPolicy::Readable(p),
                )
            })
            .chain(
                snap.unreadable_policies
                    .into_iter()
                    .filter_map(|u| Some((u.name.clone()?, StoredPolicy::Unreadable(u)))),
            )
            .collect();
        // An older controller's snapshot has no generations: no object's exceeds the snapshot's
        // revision, which is then as good a generation to report as any.
        let names = self.policies.keys().cloned().chain(
            self.tenants
                .keys()
                .map(|t| seam_model::tenant_realization_name(t)),
        );
        self.generations = names
            .map(|name| {
                let generation = snap
                    .generations
                    .get(&name)
                    .copied()
                    .unwrap_or(snap.revision);
                (name, generation)
            })
            .collect();
        self.endpoints = snap
            .endpoints
            .into_iter()
            .map(|o| (o.name.clone(), o))
            .collect();
        self.address_pools = snap
            .address_pools
            .into_iter()
            .map(|o| (o.name.clone(), o))
            .collect();
        self.services = snap.services.into_iter().map(|o| (o.key(), o)).collect();
        self.endpoint_slices = snap
            .endpoint_slices
            .into_iter()
            .map(|o| (o.key(), o))
            .collect();
        self.node_leases = snap
            .node_leases
            .into_iter()
            .map(|o| (o.node.clone(), o))
            .collect();
    }

    /// Applies one watch event. A malformed object is logged with its key and skipped, so one
    /// bad record never stops the agent.
    pub fn apply(&mut self, event: WatchEvent) {
        self.revision = self.revision.max(event.revision);
        fn put<T: serde::de::DeserializeOwned>(
            map: &mut BTreeMap<String, T>,
            name: String,
            object: Option<serde_json::Value>,
            kind: ObjectKind,
        ) {
            match object {
                None => {
                    map.remove(&name);
                }
                // A newer controller may send fields this agent does not know (a rolling upgrade
                // is mixed-version for a while): drop them, say so once, keep following.
                Some(value) => match seam_model::tolerant::from_value::<T>(value) {
                    Ok(obj) => {
                        for field in obj.first_sightings(kind.plural()) {
                            tracing::warn!(kind = kind.plural(), field, "ignoring a field from the controller this agent does not know (a newer Seam?)");
                        }
                        map.insert(name, obj.value);
                    }
                    Err(e) => {
                        tracing::warn!(%name, error = %e, "skipping malformed object from the controller")
                    }
                },
            }
        }
        let changes = &mut self.firewall_changes;
        if !changes.everything {
            let names = match event.kind {
                ObjectKind::Endpoint => Some(&mut changes.endpoints),
                ObjectKind::Namespace => Some(&mut changes.namespaces),
                ObjectKind::Tenant => Some(&mut changes.tenants),
                ObjectKind::Policy => Some(&mut changes.documents),
                ObjectKind::Node
                | ObjectKind::Segment
                | ObjectKind::Block
                | ObjectKind::AddressPool
                | ObjectKind::Service
                | ObjectKind::EndpointSlice
                | ObjectKind::NodeLease => None,
            };
            if let Some(names) = names {
                names.insert(event.name.clone());
            }
        }
        let services = &mut self.service_changes;
        match event.kind {
            ObjectKind::Service => {
                if !services.everything {
                    services.services.insert(event.name.clone());
                }
            }
            ObjectKind::EndpointSlice => {
                services.slice(self.endpoint_slices.get(&event.name));
                if !services.everything {
                    services.slices.insert(event.name.clone());
                }
            }
            ObjectKind::Endpoint => services.endpoint(&event.name, self.endpoints.get(&event.name)),
            ObjectKind::Node
            | ObjectKind::Segment
            | ObjectKind::AddressPool
            | ObjectKind::NodeLease => services.context = true,
            ObjectKind::Block | ObjectKind::Namespace | ObjectKind::Tenant | ObjectKind::Policy => {
            }
        }
        let slice_name = (event.kind == ObjectKind::EndpointSlice).then(|| event.name.clone());
        // A watch event's revision is the store revision of that write: the object's generation.
        let generation_name = match event.kind {
            ObjectKind::Policy => Some(event.name.clone()),
            ObjectKind::Tenant => Some(seam_model::tenant_realization_name(&event.name)),
            _ => None,
        };
        if let Some(name) = generation_name {
            match event.object {
                Some(_) => self.generations.insert(name, event.revision),
                None => self.generations.remove(&name),
            };
        }
        match event.kind {
            ObjectKind::Node => put(&mut self.nodes, event.name, event.object, event.kind),
            ObjectKind::Segment => put(&mut self.segments, event.name, event.object, event.kind),
            ObjectKind::Block => put(&mut self.blocks, event.name, event.object, event.kind),
            ObjectKind::Endpoint => put(&mut self.endpoints, event.name, event.object, event.kind),
            ObjectKind::Namespace => {
                put(&mut self.namespaces, event.name, event.object, event.kind)
            }
            ObjectKind::Tenant => put(&mut self.tenants, event.name, event.object, event.kind),
            ObjectKind::AddressPool => put(
                &mut self.address_pools,
                event.name,
                event.object,
                event.kind,
            ),
            ObjectKind::Service => put(&mut self.services, event.name, event.object, event.kind),
            ObjectKind::EndpointSlice => put(
                &mut self.endpoint_slices,
                event.name,
                event.object,
                event.kind,
            ),
            ObjectKind::NodeLease => {
                put(&mut self.node_leases, event.name, event.object, event.kind)
            }
            ObjectKind::Policy => match event.object {
                Some(value) => {
                    let object = decode_policy(&event.name, value);
                    self.policies.insert(event.name, object);
                }
                None => {
                    self.policies.remove(&event.name);
                }
            },
        }
        // A slice may have moved to another Service: that one is resolved again too.
        if let Some(name) = slice_name {
            self.service_changes.slice(self.endpoint_slices.get(&name));
        }
    }

    /// The segment serving `namespace`, if known.
    pub fn segment_for_namespace(&self, namespace: &str) -> Option<&Segment> {
        if let Some(seg) = self
            .namespace_segment
            .get(namespace)
            .and_then(|n| self.segments.get(n))
        {
            return Some(seg);
        }
        self.segments
            .values()
            .find(|s| s.namespace.as_deref() == Some(namespace))
    }
}

/// The policy object of a watch event for `name`, decoded once into its wire type: fields this
/// agent does not know outside `spec` are dropped and said once per kind and field
/// ([`seam_model::tolerant::policy`]). One it cannot read replaces the earlier version under its
/// name as unreadable: that version is no longer what the cluster says, so nothing is enforced for
/// it, and the compiler reports it.
fn decode_policy(name: &str, value: serde_json::Value) -> StoredPolicy {
    // What the object says of itself, read before the decode consumes it; the event names it.
    let known = UnreadablePolicy::new(&value, "");
    match seam_model::tolerant::policy(value) {
        Ok(decoded) => {
            let kind = decoded.value.kind().as_str();
            for field in decoded.first_sightings(kind) {
                tracing::warn!(
                    kind,
                    field,
                    "ignoring a field of a stored policy this agent does not know (a newer Seam?)"
                );
            }
            StoredPolicy::Readable(decoded.value)
        }
        Err(e) => {
            tracing::warn!(policy = %name, error = %e, "a policy object from the controller this agent cannot read is not enforced (a newer Seam?)");
            StoredPolicy::Unreadable(UnreadablePolicy {
                name: Some(name.to_string()),
                kind: known
                    .kind
                    .or_else(|| name.split('/').next().map(str::to_string)),
                error: e.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(revision: u64, name: &str, object: Option<serde_json::Value>) -> WatchEvent {
        WatchEvent {
            revision,
            kind: ObjectKind::Policy,
            name: name.to_string(),
            object,
        }
    }

    fn netpol(spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "db", "namespace": "web"}, "spec": spec})
    }

    fn readable(view: &ClusterView, name: &str) -> Option<String> {
        match view.policies.get(name)? {
            StoredPolicy::Readable(o) => Some(o.metadata().name.clone()),
            StoredPolicy::Unreadable(_) => None,
        }
    }

    fn unreadable(view: &ClusterView, name: &str) -> Option<UnreadablePolicy> {
        match view.policies.get(name)? {
            StoredPolicy::Unreadable(u) => Some(u.clone()),
            StoredPolicy::Readable(_) => None,
        }
    }

    #[test]
    fn a_policy_event_is_typed_once_and_one_this_agent_cannot_read_is_kept_as_unreadable() {
        let name = "NetworkPolicy/web/db";
        let mut view = ClusterView::default();
        let mut newer = netpol(json!({"podSelector": {}}));
        newer["metadata"]["generation"] = json!(2);
        view.apply(event(1, name, Some(newer)));
        assert_eq!(readable(&view, name).as_deref(), Some("db"));

        // A version of the object this agent cannot read replaces the one it could: the earlier
        // version is no longer what the cluster says, so nothing is enforced for it; the view
        // still knows it, by name, with why.
        let mut future = netpol(json!({"podSelector": {}}));
        future["apiVersion"] = json!("networking.k8s.io/v2");
        view.apply(event(2, name, Some(future)));
        let u = unreadable(&view, name).unwrap();
        assert_eq!(u.name.as_deref(), Some(name));
        assert_eq!(u.kind.as_deref(), Some("NetworkPolicy"));
        assert!(u.error.contains("unsupported object kind"), "{u:?}");
        view.apply(event(
            3,
            name,
            Some(netpol(json!({"podSelector": {}, "futureMode": "strict"}))),
        ));
        assert!(unreadable(&view, name)
            .unwrap()
            .error
            .contains("futureMode"));
        assert_eq!(view.policies.len(), 1);
        assert_eq!(view.revision, 3);

        view.apply(event(4, name, Some(netpol(json!({"podSelector": {}})))));
        assert_eq!(readable(&view, name).as_deref(), Some("db"));
        view.apply(event(5, name, None));
        assert!(view.policies.is_empty());
        // The firewall is told about every name that changed, readable or not.
        assert!(view.take_firewall_changes().everything);
    }

    #[test]
    fn a_snapshot_keys_its_policies_by_store_name_readable_or_not() {
        let object = seam_policy::PolicyObject::from_value(netpol(json!({"podSelector": {}})))
            .unwrap_or_else(|e| panic!("{e}"));
        let future = UnreadablePolicy {
            name: Some("NetworkPolicy/web/future".into()),
            kind: Some("NetworkPolicy".into()),
            error: "unsupported object kind".into(),
        };
        let mut view = ClusterView::default();
        view.reset(Snapshot {
            revision: 9,
            policies: vec![object.clone()],
            unreadable_policies: vec![
                future.clone(),
                // Without a name it cannot be kept by name.
                UnreadablePolicy::default(),
            ],
            ..Snapshot::default()
        });
        assert_eq!(
            view.policies.get("NetworkPolicy/web/db"),
            Some(&StoredPolicy::Readable(object))
        );
        assert_eq!(
            view.policies.get("NetworkPolicy/web/future"),
            Some(&StoredPolicy::Unreadable(future))
        );
        assert_eq!(view.policies.len(), 2);
    }
}
