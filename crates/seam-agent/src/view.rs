use std::collections::BTreeMap;

use seam_firewall::ViewChanges;
use seam_model::{Block, Endpoint, Node, ObjectKind, Segment, Snapshot, WatchEvent};

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
    /// Policy documents by store name (`<Kind>/<namespace or _>/<name>`).
    pub policies: BTreeMap<String, serde_json::Value>,
    /// Which segment the controller said serves a namespace (flat mode has one for all).
    pub namespace_segment: BTreeMap<String, String>,
    /// What the firewall reads (tenants, namespaces, endpoints, policies) that may have changed since the
    /// firewall compiler last took it: lets a pass compare only those objects. Kept by [`ClusterView::reset`]
    /// and [`ClusterView::apply`]; whoever changes those maps another way must record it here too.
    firewall_changes: ViewChanges,
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
            namespace_segment: BTreeMap::new(),
            // Nobody has counted yet.
            firewall_changes: ViewChanges::everything(),
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

    /// Replaces everything with a snapshot.
    pub fn reset(&mut self, snap: Snapshot) {
        // A re-list says what is, not what changed.
        self.firewall_changes = ViewChanges::everything();
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
        self.policies = snap
            .policies
            .into_iter()
            .filter_map(|p| Some((policy_name(&p)?, p)))
            .inspect(|(name, doc)| note_unknown_policy_fields(name, doc))
            .collect();
        self.endpoints = snap
            .endpoints
            .into_iter()
            .map(|o| (o.name.clone(), o))
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
                ObjectKind::Node | ObjectKind::Segment | ObjectKind::Block => None,
            };
            if let Some(names) = names {
                names.insert(event.name.clone());
            }
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
            ObjectKind::Policy => match event.object {
                Some(doc) => {
                    note_unknown_policy_fields(&event.name, &doc);
                    self.policies.insert(event.name, doc);
                }
                None => {
                    self.policies.remove(&event.name);
                }
            },
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

/// Says once per kind and field that a stored policy has fields this agent does not know; the
/// firewall compiler drops them and enforces the rest ([`seam_firewall::cluster::tolerant_policy`]).
fn note_unknown_policy_fields(name: &str, doc: &serde_json::Value) {
    let Ok((_, dropped)) = seam_firewall::cluster::tolerant_policy(doc) else {
        // Invalid documents are reported by the compiler at every pass.
        return;
    };
    let kind = name.split('/').next().unwrap_or("policy");
    for field in dropped {
        if seam_model::tolerant::first_sighting(kind, &field) {
            tracing::warn!(policy = %name, kind, field, "ignoring a field of a stored policy this agent does not know (a newer Seam?)");
        }
    }
}

/// The store name of a policy document in a snapshot (`<Kind>/<namespace or _>/<name>`), the
/// same name its watch events carry.
fn policy_name(doc: &serde_json::Value) -> Option<String> {
    let kind = doc.get("kind")?.as_str()?;
    let meta = doc.get("metadata")?;
    let name = meta.get("name")?.as_str()?;
    let ns = meta.get("namespace").and_then(|n| n.as_str());
    Some(seam_model::policy_name(kind, ns, name))
}
