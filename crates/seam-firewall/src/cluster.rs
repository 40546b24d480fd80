//! From the controller's objects (seam-model) to the engine's inputs (seam-policy): the one
//! place that maps namespaces, endpoints and stored policy documents, shared by the agent (which
//! compiles its node's ruleset) and the CLI (`seam explain`).

use seam_policy::{
    ContainerPort, Endpoint, EndpointKind, Inventory, IsolationMode, Namespace, PolicyObject,
    PolicySet, Protocol, Tenant,
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
pub fn node_ruleset<'a>(
    tenants: impl IntoIterator<Item = &'a seam_model::Tenant>,
    namespaces: impl IntoIterator<Item = &'a seam_model::Namespace>,
    endpoints: impl IntoIterator<Item = &'a seam_model::Endpoint>,
    documents: impl IntoIterator<Item = &'a PolicyObject>,
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
/// `seam_model::tolerant::policy`). Objects the engine refuses (which the controller should
/// never have stored) are left out and returned as warnings, as are contracts naming groups
/// nobody defines; of two objects with one key, the later valid one is in force.
pub fn policy_set<'a>(
    documents: impl IntoIterator<Item = &'a PolicyObject>,
) -> (PolicySet, Vec<String>) {
    let mut set = PolicySet::new();
    let mut warnings = Vec::new();
    for object in documents {
        if let Err(e) = set.insert(object.clone()) {
            warnings.push(ignored(e));
        }
    }
    warnings.extend(dangling_warnings(&set));
    (set, warnings)
}

/// Whether a policy object may be in force, or the warning that reports it ignored (the same
/// check and warning [`policy_set`] gives it).
pub(crate) fn check_document(object: &PolicyObject) -> Result<(), String> {
    object.validate().map_err(ignored)
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
        let (ruleset, warnings) = node_ruleset([], [], [&ep], [], "n1").unwrap();
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
