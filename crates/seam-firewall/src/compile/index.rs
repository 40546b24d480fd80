//! The inventory as the compiler reads it.

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeMap;

use seam_policy::{Endpoint, IsolationMode, Labels, Namespace, Tenant, DEFAULT_TENANT};

use super::NO_LABELS;

/// Endpoints by namespace and holders of each named port.
type Grouped<'a> = (
    BTreeMap<&'a str, Vec<&'a Endpoint>>,
    BTreeMap<&'a str, Vec<&'a Endpoint>>,
);

/// The inventory as the compiler reads it: endpoints grouped by namespace (most selectors look at one namespace,
/// or first pick namespaces by their labels), and by the names of their named ports. The grouping is made on
/// first use: an incremental pass whose fragments find their peers and groups kept never walks the endpoints.
pub(crate) struct Index<'a> {
    namespaces: &'a BTreeMap<String, Namespace>,
    tenants: &'a BTreeMap<String, Tenant>,
    default_isolation: IsolationMode,
    endpoints: RefCell<Option<Box<dyn Iterator<Item = &'a Endpoint> + 'a>>>,
    grouped: OnceCell<Grouped<'a>>,
}

fn group<'a>(endpoints: impl Iterator<Item = &'a Endpoint>) -> Grouped<'a> {
    let mut by_ns: BTreeMap<&'a str, Vec<&'a Endpoint>> = BTreeMap::new();
    let mut named_ports: BTreeMap<&'a str, Vec<&'a Endpoint>> = BTreeMap::new();
    // Endpoints sorted by name come in runs of one namespace: one map lookup per run.
    let mut run: Vec<&'a Endpoint> = Vec::new();
    for e in endpoints {
        if run.last().is_some_and(|r| r.namespace != e.namespace) {
            let ns = run[0].namespace.as_str();
            by_ns.entry(ns).or_default().append(&mut run);
        }
        run.push(e);
        for cp in &e.ports {
            if let Some(name) = cp.name.as_deref() {
                let holders = named_ports.entry(name).or_default();
                if !holders.last().is_some_and(|h| std::ptr::eq(*h, e)) {
                    holders.push(e);
                }
            }
        }
    }
    if let Some(first) = run.first() {
        let ns = first.namespace.as_str();
        by_ns.entry(ns).or_default().append(&mut run);
    }
    (by_ns, named_ports)
}

impl<'a> Index<'a> {
    pub(crate) fn new<I>(
        namespaces: &'a BTreeMap<String, Namespace>,
        tenants: &'a BTreeMap<String, Tenant>,
        default_isolation: IsolationMode,
        endpoints: I,
    ) -> Self
    where
        I: IntoIterator<Item = &'a Endpoint>,
        I::IntoIter: 'a,
    {
        Index {
            namespaces,
            tenants,
            default_isolation,
            endpoints: RefCell::new(Some(Box::new(endpoints.into_iter()))),
            grouped: OnceCell::new(),
        }
    }

    fn grouped(&self) -> &Grouped<'a> {
        self.grouped.get_or_init(|| {
            let endpoints = self.endpoints.borrow_mut().take();
            group(endpoints.into_iter().flatten())
        })
    }

    /// Endpoints by namespace.
    pub(super) fn by_ns(&self) -> &BTreeMap<&'a str, Vec<&'a Endpoint>> {
        &self.grouped().0
    }

    /// Holders of each named port.
    pub(super) fn named_ports(&self) -> &BTreeMap<&'a str, Vec<&'a Endpoint>> {
        &self.grouped().1
    }

    pub(crate) fn ns_labels(&self, ns: &str) -> &'a Labels {
        self.namespaces.get(ns).map_or(&NO_LABELS, |n| &n.labels)
    }

    pub(crate) fn tenant_name(&self, ns: &str) -> &'a str {
        self.namespaces
            .get(ns)
            .and_then(|n| n.tenant.as_deref())
            .unwrap_or(DEFAULT_TENANT)
    }

    pub(crate) fn tenant(&self, name: &str) -> Tenant {
        self.tenants.get(name).copied().unwrap_or(Tenant {
            isolation: self.default_isolation,
            global: false,
        })
    }

    pub(super) fn all(&self) -> impl Iterator<Item = &'a Endpoint> + '_ {
        self.by_ns().values().flatten().copied()
    }

    pub(super) fn in_ns(&self, ns: &str) -> impl Iterator<Item = &'a Endpoint> + '_ {
        self.by_ns().get(ns).into_iter().flatten().copied()
    }

    /// Endpoints of the namespaces whose labels pass `keep`.
    pub(super) fn in_namespaces<'s>(
        &'s self,
        keep: impl Fn(&Labels) -> bool + 's,
    ) -> impl Iterator<Item = &'a Endpoint> + 's {
        self.by_ns()
            .iter()
            .filter(move |(ns, _)| keep(self.ns_labels(ns)))
            .flat_map(|(_, eps)| eps.iter().copied())
    }
}
