//! The facts policies are evaluated against: tenants and their isolation modes, namespaces, endpoints.
//!
//! An inventory is plain data, built by the caller (the controller from its store, tests by hand).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::error::{Problems, TenantError, ValidationError};
use crate::meta::Protocol;
use crate::selector::Labels;

/// The tenant of a namespace that names none.
pub const DEFAULT_TENANT: &str = "default";

/// What the baseline tier does when no policy decided (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IsolationMode {
    /// Allow (OpenShift "subnet"): one flat network. Policies still apply.
    Flat,
    /// Allow within the tenant and to/from global tenants, deny across tenants.
    Multitenant,
    /// Allow; isolation comes only from policies (Kubernetes default).
    #[default]
    Policy,
}

/// A tenant: an isolation domain namespaces belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tenant {
    /// The mode that decides when no policy does, at endpoints of this tenant.
    #[serde(default)]
    pub isolation: IsolationMode,
    /// A global tenant reaches and is reached by every tenant (OpenShift's make-global).
    #[serde(default)]
    pub global: bool,
}

/// A namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespace {
    /// Its labels (what namespace selectors read).
    #[serde(default)]
    pub labels: Labels,
    /// Its tenant; absent = [`DEFAULT_TENANT`]. Joining namespaces (OpenShift's join) = giving them one tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// What an endpoint is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    /// A Pod.
    #[default]
    Pod,
    /// A VM attached on a hypervisor host (treated like a Pod by Kubernetes-style policies, as KubeVirt does).
    Vm,
    /// A node itself.
    Host,
    /// A server outside the overlay, known by its addresses; nothing is enforced on it.
    External,
}

impl EndpointKind {
    /// Whether Kubernetes-style policies (NetworkPolicy, ANP, BANP) select it as a pod: pods and VMs.
    pub fn is_podlike(self) -> bool {
        matches!(self, EndpointKind::Pod | EndpointKind::Vm)
    }

    /// Whether Seam enforces policy at this endpoint (everything but `external`).
    pub fn is_enforced(self) -> bool {
        !matches!(self, EndpointKind::External)
    }
}

/// A named container port (or a VM's declared service port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPort {
    /// The name policies can use; absent for unnamed ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The port number.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
}

/// Anything with an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// Name, unique in its namespace.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Kind.
    #[serde(default)]
    pub kind: EndpointKind,
    /// Labels.
    #[serde(default)]
    pub labels: Labels,
    /// IPv4 addresses; the first one is the endpoint's address when a flow names it.
    #[serde(default)]
    pub addresses: Vec<Ipv4Addr>,
    /// Named ports.
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

impl Endpoint {
    /// `namespace/name`, how flows name it.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Everything the evaluator reads about the world.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inventory {
    /// Isolation mode of tenants not listed in `tenants` (including [`DEFAULT_TENANT`] unless listed).
    #[serde(default)]
    pub default_isolation: IsolationMode,
    /// Tenants by name.
    #[serde(default)]
    pub tenants: BTreeMap<String, Tenant>,
    /// Namespaces by name. An endpoint whose namespace is missing here has no namespace labels and the default
    /// tenant.
    #[serde(default)]
    pub namespaces: BTreeMap<String, Namespace>,
    /// Endpoints.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

impl Inventory {
    /// The endpoint called `namespace/name`.
    pub fn endpoint(&self, reference: &str) -> Option<&Endpoint> {
        let (ns, name) = reference.split_once('/')?;
        self.endpoints
            .iter()
            .find(|e| e.namespace == ns && e.name == name)
    }

    /// The endpoint that holds `addr`.
    pub fn endpoint_by_address(&self, addr: Ipv4Addr) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.addresses.contains(&addr))
    }

    /// Labels of namespace `ns` (empty if unknown).
    pub fn namespace_labels(&self, ns: &str) -> Option<&Labels> {
        self.namespaces.get(ns).map(|n| &n.labels)
    }

    /// The tenant name of namespace `ns`.
    pub fn tenant_name<'a>(&'a self, ns: &str) -> &'a str {
        self.namespaces
            .get(ns)
            .and_then(|n| n.tenant.as_deref())
            .unwrap_or(DEFAULT_TENANT)
    }

    /// The tenant called `name` (the default mode, not global, when not listed).
    pub fn tenant(&self, name: &str) -> Tenant {
        self.tenants.get(name).copied().unwrap_or(Tenant {
            isolation: self.default_isolation,
            global: false,
        })
    }

    // ---- tenant operations (OpenShift SDN's `oc adm pod-network join-projects / isolate-projects /
    // make-projects-global`) -------------------------------------------------------------------------------------

    /// Puts namespace `ns_b` in the tenant of `ns_a` (OpenShift `join-projects --to=ns_a ns_b`): from now on they
    /// are one isolation domain. `ns_a` keeps its tenant; if that tenant is global, `ns_b` becomes global with it.
    /// The tenant `ns_b` leaves stays listed (other namespaces may still use it).
    pub fn join(&mut self, ns_a: &str, ns_b: &str) -> Result<(), TenantError> {
        let tenant = self
            .namespaces
            .get(ns_a)
            .ok_or_else(|| TenantError::UnknownNamespace(ns_a.to_string()))?
            .tenant
            .clone();
        let b = self
            .namespaces
            .get_mut(ns_b)
            .ok_or_else(|| TenantError::UnknownNamespace(ns_b.to_string()))?;
        b.tenant = tenant;
        Ok(())
    }

    /// Gives namespace `ns` a tenant of its own, not global, with the isolation mode of the tenant it leaves
    /// (OpenShift `isolate-projects`): it is cut off from the namespaces it was joined with and, if it was global,
    /// it no longer is. Returns the new tenant's name: the namespace's name, or `<ns>-2`, `<ns>-3`, … when another
    /// namespace already uses that tenant name.
    pub fn isolate(&mut self, ns: &str) -> Result<String, TenantError> {
        self.own_tenant(ns, false)
    }

    /// Makes namespace `ns` global (OpenShift `make-projects-global`): it moves to a tenant of its own, marked
    /// global, with the isolation mode of the tenant it leaves, so it reaches and is reached by every tenant. Only
    /// this namespace changes, not the namespaces it was joined with. Returns the tenant's name (as
    /// [`Inventory::isolate`] chooses it).
    pub fn make_global(&mut self, ns: &str) -> Result<String, TenantError> {
        self.own_tenant(ns, true)
    }

    fn own_tenant(&mut self, ns: &str, global: bool) -> Result<String, TenantError> {
        if !self.namespaces.contains_key(ns) {
            return Err(TenantError::UnknownNamespace(ns.to_string()));
        }
        let old = self.tenant(self.tenant_name(ns));
        let used_by_others = |name: &str| {
            self.namespaces
                .keys()
                .any(|other| other != ns && self.tenant_name(other) == name)
        };
        let mut name = ns.to_string();
        let mut n = 2u32;
        while used_by_others(&name) {
            name = format!("{ns}-{n}");
            n += 1;
        }
        self.tenants.insert(
            name.clone(),
            Tenant {
                isolation: old.isolation,
                global,
            },
        );
        if let Some(entry) = self.namespaces.get_mut(ns) {
            entry.tenant = Some(name.clone());
        }
        Ok(name)
    }

    /// Checks that endpoint references and addresses are unique.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut addrs: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            if e.name.is_empty() || e.name.contains('/') {
                p.add(
                    format!("endpoints[{i}].name"),
                    format!("{:?} is not a valid endpoint name", e.name),
                );
            }
            if let Some(j) = seen.insert(e.reference(), i) {
                p.add(
                    format!("endpoints[{i}]"),
                    format!("{} is also endpoints[{j}]", e.reference()),
                );
            }
            for (k, a) in e.addresses.iter().enumerate() {
                if let Some(j) = addrs.insert(*a, i) {
                    if j != i {
                        p.add(
                            format!("endpoints[{i}].addresses[{k}]"),
                            format!("{a} also belongs to endpoints[{j}]"),
                        );
                    }
                }
            }
        }
        for (name, ns) in &self.namespaces {
            if let Some(t) = &ns.tenant {
                if !self.tenants.contains_key(t) && t != DEFAULT_TENANT {
                    p.add(
                        format!("namespaces.{name}.tenant"),
                        format!("unknown tenant {t:?}"),
                    );
                }
            }
        }
        p.finish("Inventory", String::new())
    }
}
