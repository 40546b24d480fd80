//! From the controller's objects (seam-model) to the engine's inputs (seam-policy): the one
//! place that maps namespaces, endpoints and stored policy documents, shared by the agent (which
//! compiles its node's ruleset) and the CLI (`seam explain`).

use seam_model::AsStoredPolicy;
use seam_policy::{
    ContainerPort, Endpoint, EndpointKind, Inventory, IsolationMode, Namespace, PolicySet,
    Protocol, Tenant,
};

use crate::{CompileError, NodeRuleset};

/// The inventory name of a controller endpoint: its name without the `namespace/` prefix, with
/// any further `/` (secondary interfaces: `pod/net1`) turned into `:`.
pub fn inventory_name(endpoint: &seam_model::Endpoint) -> String {
    let prefix = format!("{}/", endpoint.namespace);
    endpoint
        .name
        .strip_prefix(&prefix)
        .unwrap_or(&endpoint.name)
        .replace('/', ":")
}

pub(crate) fn kind(k: seam_model::EndpointKind) -> EndpointKind {
    match k {
        seam_model::EndpointKind::Pod => EndpointKind::Pod,
        seam_model::EndpointKind::Vm => EndpointKind::Vm,
        seam_model::EndpointKind::Host => EndpointKind::Host,
        seam_model::EndpointKind::External => EndpointKind::External,
    }
}

/// The engine's isolation mode for the controller's.
pub fn isolation_mode(mode: seam_model::IsolationMode) -> IsolationMode {
    match mode {
        seam_model::IsolationMode::Flat => IsolationMode::Flat,
        seam_model::IsolationMode::Multitenant => IsolationMode::Multitenant,
        seam_model::IsolationMode::Policy => IsolationMode::Policy,
    }
}

/// [`tenant_inventory`] without `Tenant` objects: every tenant has the default mode (`policy`).
pub fn inventory<'a>(
    namespaces: impl IntoIterator<Item = &'a seam_model::Namespace>,
    endpoints: impl IntoIterator<Item = &'a seam_model::Endpoint>,
) -> Inventory {
    tenant_inventory([], namespaces, endpoints)
}

/// The engine's inventory: the tenants (isolation mode, global flag), the namespaces (plus, for
/// endpoints in a namespace the controller has no object for, one with just the name label) and
/// the endpoints with labels and addresses. A tenant a namespace names without a `Tenant` object
/// is listed with the default mode (`policy`), not global; a `Tenant` object named `default`
/// sets the mode of namespaces that name no tenant. Named container ports come from the
/// endpoint's `ports` (the CNI config's `ports`, published by the agent).
pub fn tenant_inventory<'a>(
    tenants: impl IntoIterator<Item = &'a seam_model::Tenant>,
    namespaces: impl IntoIterator<Item = &'a seam_model::Namespace>,
    endpoints: impl IntoIterator<Item = &'a seam_model::Endpoint>,
) -> Inventory {
    let mut inv = Inventory::default();
    for t in tenants {
        inv.tenants.insert(
            t.name.clone(),
            Tenant {
                isolation: isolation_mode(t.isolation),
                global: t.global,
            },
        );
    }
    for ns in namespaces {
        inv.namespaces.insert(
            ns.name.clone(),
            Namespace {
                labels: ns.labels.clone(),
                tenant: ns.tenant.clone(),
            },
        );
        if let Some(t) = &ns.tenant {
            inv.tenants.entry(t.clone()).or_default();
        }
    }
    for e in endpoints {
        inv.namespaces
            .entry(e.namespace.clone())
            .or_insert_with(|| implicit_namespace(&e.namespace));
        inv.endpoints.push(endpoint(e));
    }
    inv
}

/// The inventory's namespace for endpoints of a namespace the controller has no object for.
pub(crate) fn implicit_namespace(name: &str) -> Namespace {
    Namespace {
        labels: seam_model::Namespace::named(name).labels,
        tenant: None,
    }
}

/// The inventory's endpoint for a controller endpoint.
pub(crate) fn endpoint(e: &seam_model::Endpoint) -> Endpoint {
    Endpoint {
        name: inventory_name(e),
        namespace: e.namespace.clone(),
        kind: kind(e.kind),
        labels: e.labels.clone(),
        addresses: vec![e.ip],
        ports: e.ports.iter().map(container_port).collect(),
    }
}

pub(crate) fn container_port(p: &seam_model::ContainerPort) -> ContainerPort {
    ContainerPort {
        name: Some(p.name.clone()),
        port: p.port,
        protocol: match p.protocol {
            seam_model::PortProtocol::Tcp => Protocol::Tcp,
            seam_model::PortProtocol::Udp => Protocol::Udp,
            seam_model::PortProtocol::Sctp => Protocol::Sctp,
        },
    }
}

/// One node's compiled ruleset from the controller's objects, exactly as that node's agent
/// builds it: every tenant, namespace and endpoint in the inventory (in name order, as the agent's view
/// holds them), rules only for the endpoints on `node`. Returns the ruleset and the
/// [`policy_set`] warnings. The agent and `seam conformance netpol --dataplane` (which checks
/// that every node applied what it should) both call this, so they cannot drift apart.
pub fn node_ruleset<'a, D: AsStoredPolicy + 'a>(
    tenants: impl IntoIterator<Item = &'a seam_model::Tenant>,
    namespaces: impl IntoIterator<Item = &'a seam_model::Namespace>,
    endpoints: impl IntoIterator<Item = &'a seam_model::Endpoint>,
    documents: impl IntoIterator<Item = &'a D>,
    node: &str,
) -> Result<(NodeRuleset, Vec<String>), CompileError> {
    let mut namespaces: Vec<_> = namespaces.into_iter().collect();
    namespaces.sort_by(|a, b| a.name.cmp(&b.name));
    let mut endpoints: Vec<_> = endpoints.into_iter().collect();
    endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    let inv = tenant_inventory(tenants, namespaces, endpoints.iter().copied());
    let (policies, warnings) = policy_set(documents);
    let local: Vec<String> = endpoints
        .iter()
        .filter(|e| e.node == node)
        .map(|e| format!("{}/{}", e.namespace, inventory_name(e)))
        .collect();
    Ok((crate::compile(&policies, &inv, &local)?, warnings))
}

/// The policies in force from the controller's policy objects (typed once, where they arrived:
/// `seam_model::tolerant::policy`). Objects their reader could not read
/// ([`seam_model::UnreadablePolicy`]) and objects the engine refuses (which the controller should
/// never have stored) are left out and returned as warnings ("stored policy object ignored: …",
/// in document order), as are contracts naming groups nobody defines; of two objects with one
/// key, the later valid one is in force.
pub fn policy_set<'a, D: AsStoredPolicy + 'a>(
    documents: impl IntoIterator<Item = &'a D>,
) -> (PolicySet, Vec<String>) {
    let mut set = PolicySet::new();
    let mut warnings = Vec::new();
    for document in documents {
        match document.as_stored() {
            Ok(object) => {
                if let Err(e) = set.insert(object.clone()) {
                    warnings.push(ignored(e));
                }
            }
            Err(unreadable) => warnings.push(ignored(&unreadable.error)),
        }
    }
    warnings.extend(dangling_warnings(&set));
    (set, warnings)
}

/// [`policy_set`] of every policy object of a snapshot, the ones its reader could not read
/// included (reported), in store-name order ([`seam_model::Snapshot::stored_policies`]).
pub fn snapshot_policy_set(snapshot: &seam_model::Snapshot) -> (PolicySet, Vec<String>) {
    policy_set(&snapshot.stored_policies())
}

/// Whether a policy object may be in force, or the warning that reports it ignored (the same
/// check and warning [`policy_set`] gives it).
pub(crate) fn check_document(document: &impl AsStoredPolicy) -> Result<(), String> {
    match document.as_stored() {
        Ok(object) => object.validate().map_err(ignored),
        Err(unreadable) => Err(ignored(&unreadable.error)),
    }
}

fn ignored(e: impl std::fmt::Display) -> String {
    format!("stored policy object ignored: {e}")
}

/// The warnings about contracts naming groups nobody defines.
pub(crate) fn dangling_warnings(set: &PolicySet) -> Vec<String> {
    set.dangling_group_references()
        .into_iter()
        .map(|(contract, group)| format!("Contract {contract} names group {group:?}, which no EndpointGroup defines (no members)"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use seam_model::{Snapshot, StoredPolicy, UnreadablePolicy};
    use seam_policy::PolicyObject;

    #[test]
    fn a_stored_policy_this_version_cannot_read_is_left_out_with_its_warning() {
        // Dropping `newSourceField` would leave a rule with no `from`: every source admitted.
        let doc = serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "db", "namespace": "web"},
            "spec": {
                "podSelector": {}, "policyTypes": ["Ingress"],
                "ingress": [{"newSourceField": [{"x": 1}], "ports": [{"port": 5432}]}]
            }
        });
        let error = seam_model::tolerant::policy(doc.clone()).unwrap_err();
        let unreadable = UnreadablePolicy::new(&doc, &error);
        let ok = PolicyObject::from_value(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "web", "namespace": "web"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
        }))
        .unwrap();
        let want = vec![format!("stored policy object ignored: {error}")];
        assert!(want[0].contains("newSourceField"), "{want:?}");

        // As the agent's view holds them ...
        let view = [
            StoredPolicy::Unreadable(unreadable.clone()),
            StoredPolicy::Readable(ok.clone()),
        ];
        let (set, warnings) = policy_set(&view);
        assert_eq!(set.objects().count(), 1, "left out, the other in force");
        assert_eq!(warnings, want);
        assert_eq!(check_document(&view[0]), Err(want[0].clone()));
        // ... as `seam explain` reads a snapshot ...
        let snapshot = Snapshot {
            policies: vec![ok],
            unreadable_policies: vec![unreadable],
            ..Snapshot::default()
        };
        let (set, warnings) = snapshot_policy_set(&snapshot);
        assert_eq!((set.objects().count(), warnings), (1, want.clone()));
        // ... and compiled incrementally, as the full compile does.
        let names: std::collections::BTreeMap<String, StoredPolicy> = view
            .iter()
            .map(|p| match p {
                StoredPolicy::Readable(o) => (seam_model::policy_object_name(o), p.clone()),
                StoredPolicy::Unreadable(u) => (u.name.clone().unwrap(), p.clone()),
            })
            .collect();
        let empty = Default::default();
        let keyed = crate::KeyedView {
            tenants: &empty,
            namespaces: &Default::default(),
            endpoints: &Default::default(),
            documents: &names,
        };
        let mut compiler = crate::IncrementalCompiler::new("n1");
        let (_, warnings) = compiler
            .sync_changes(keyed, &crate::ViewChanges::everything())
            .unwrap();
        assert_eq!(warnings, want);
        let (full, full_warnings) = node_ruleset([], [], [], names.values(), "n1").unwrap();
        assert_eq!(full_warnings, want);
        let (incremental, _) = compiler.sync([], [], [], names.values()).unwrap();
        assert_eq!(*incremental, full);
    }

    #[test]
    fn named_ports_reach_the_inventory() {
        let ip = std::net::Ipv4Addr::new(10, 240, 0, 2);
        let ep = seam_model::Endpoint {
            name: "x/a".into(),
            kind: seam_model::EndpointKind::Pod,
            namespace: "x".into(),
            segment: "x".into(),
            node: "n1".into(),
            ip,
            mac: seam_model::endpoint_mac(ip),
            labels: Default::default(),
            container_id: None,
            ifname: None,
            ports: vec![seam_model::ContainerPort {
                name: "serve-81-udp".into(),
                port: 81,
                protocol: seam_model::PortProtocol::Udp,
            }],
            conditions: None,
        };
        let inv = inventory([], [&ep]);
        assert_eq!(
            inv.endpoints[0].ports,
            vec![ContainerPort {
                name: Some("serve-81-udp".into()),
                port: 81,
                protocol: Protocol::Udp,
            }]
        );
        let (ruleset, warnings) =
            node_ruleset([], [], [&ep], [] as [&PolicyObject; 0], "n1").unwrap();
        assert!(warnings.is_empty());
        assert_eq!(ruleset.local.len(), 1);
    }

    #[test]
    fn tenant_objects_set_modes_and_unlisted_tenants_get_the_default() {
        let t = seam_model::Tenant {
            name: "tb".into(),
            isolation: seam_model::IsolationMode::Multitenant,
            global: true,
        };
        let mut blue = seam_model::Namespace::named("blue");
        blue.tenant = Some("tb".into());
        let mut green = seam_model::Namespace::named("green");
        green.tenant = Some("tg".into());
        let inv = tenant_inventory([&t], [&blue, &green], []);
        assert_eq!(
            inv.tenant("tb"),
            Tenant {
                isolation: IsolationMode::Multitenant,
                global: true
            }
        );
        assert_eq!(inv.tenant("tg"), Tenant::default());
        assert_eq!(inv.tenant_name("green"), "tg");
        assert!(inv.validate().is_ok());
        assert_eq!(inventory([&blue], []).tenant("tb"), Tenant::default());
    }
}
