//! What a fragment of the ruleset reads of the inventory, for the incremental compiler: whether a changed
//! endpoint, or a namespace whose labels changed, can change a fragment's output.
//!
//! A fragment's sets are unions of the addresses of the endpoints that pass its membership tests (a subject, a
//! peer, the holders of a named port, a group's selector). An endpoint change (its version before and after, either
//! absent) can change them only when a test's outcome differs between the two versions, or when the endpoint passes
//! a test in either version and its addresses (or, for named ports, its ports) changed. Both versions are tested
//! against today's namespace labels: a namespace whose labels changed is handled on its own
//! ([`object_reads_labels`]), which covers what the old labels would have decided. This reasoning needs every
//! address to belong to one endpoint; the incremental compiler recompiles everything when it does not.

use std::net::IpAddr;

use seam_policy::{
    AdminEgressRule, AdminIngressRule, AdminSubject, Endpoint, EndpointKind, EndpointSelector,
    LabelSelector, Labels, NamespacedPods, NetworkPolicyPeer, NetworkPolicyPort, PolicyObject,
    PolicySet, PortRef, CLUSTER_GROUP, NAMESPACE_GROUP_PREFIX,
};

/// One version of an endpoint: before or after a change.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Version<'e> {
    /// The endpoint.
    pub(crate) ep: &'e Endpoint,
    /// Whether it is on this node.
    pub(crate) local: bool,
    /// Its namespace's labels (today's, see the module docs), looked up once for every test.
    pub(crate) ns_labels: &'e Labels,
}

/// What changed of an endpoint besides what its membership tests see.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Moved {
    /// Its addresses (or its existence).
    pub(crate) addresses: bool,
    /// Its named ports.
    pub(crate) ports: bool,
}

/// One membership test of a fragment or a group.
enum Item<'p> {
    /// A NetworkPolicy's subject: local pod-like endpoints of its namespace its pod selector matches.
    NpSubject {
        ns: &'p str,
        selector: &'p LabelSelector,
    },
    /// A NetworkPolicy peer (not an `ipBlock`) of a policy in namespace `ns`.
    NpPeer {
        ns: &'p str,
        peer: &'p NetworkPolicyPeer,
    },
    /// An ANP/CNP/BANP subject: local pod-like endpoints it selects.
    AdminSubject(&'p AdminSubject),
    /// An ANP/CNP/BANP peer's `namespaces` or `pods`.
    AdminPeer {
        namespaces: Option<&'p LabelSelector>,
        pods: Option<&'p NamespacedPods>,
    },
    /// Holders of a named port.
    NamedPort(&'p str),
    /// One selector of an EndpointGroup.
    GroupSelector(&'p EndpointSelector),
    /// The implicit group `cluster`.
    Cluster,
    /// The implicit group `namespace/<ns>`.
    Namespace(&'p str),
    /// The implicit group `deployment/<ns>/<name>`.
    Deployment((&'p str, &'p str)),
}

fn pods_match(pods: &NamespacedPods, e: &Endpoint, ns_labels: &Labels) -> bool {
    pods.namespace_selector.matches(ns_labels) && pods.pod_selector.matches(&e.labels)
}

impl Item<'_> {
    fn matches(&self, v: Option<Version<'_>>) -> bool {
        let Some(v) = v else {
            return false;
        };
        let e = v.ep;
        let ns_labels = v.ns_labels;
        match self {
            Item::NpSubject { ns, selector } => {
                v.local && e.kind.is_podlike() && e.namespace == *ns && selector.matches(&e.labels)
            }
            Item::NpPeer { ns, peer } => {
                peer.ip_block.is_none()
                    && e.kind.is_podlike()
                    && match &peer.namespace_selector {
                        Some(s) => s.matches(ns_labels),
                        None => e.namespace == *ns,
                    }
                    && peer
                        .pod_selector
                        .as_ref()
                        .is_none_or(|s| s.matches(&e.labels))
            }
            Item::AdminSubject(subject) => {
                v.local
                    && e.kind.is_podlike()
                    && match (&subject.namespaces, &subject.pods) {
                        (Some(ns), _) => ns.matches(ns_labels),
                        (None, Some(pods)) => pods_match(pods, e, ns_labels),
                        (None, None) => false,
                    }
            }
            Item::AdminPeer { namespaces, pods } => {
                e.kind.is_podlike()
                    && (namespaces.is_some_and(|s| s.matches(ns_labels))
                        || pods.is_some_and(|p| pods_match(p, e, ns_labels)))
            }
            Item::NamedPort(name) => e.ports.iter().any(|p| p.name.as_deref() == Some(*name)),
            Item::GroupSelector(s) => {
                !s.is_cidr_only()
                    && (s.kinds.is_empty() || s.kinds.contains(&e.kind))
                    && (s.namespaces.is_empty() || s.namespaces.contains(&e.namespace))
                    && s.namespace_selector
                        .as_ref()
                        .is_none_or(|sel| sel.matches(ns_labels))
                    && s.labels.as_ref().is_none_or(|sel| sel.matches(&e.labels))
                    && (s.cidrs.is_empty()
                        || e.addresses
                            .iter()
                            .any(|a| s.cidrs.iter().any(|n| n.contains(&IpAddr::V4(*a)))))
            }
            Item::Cluster => e.kind != EndpointKind::External,
            Item::Namespace(ns) => e.namespace == *ns,
            Item::Deployment(d) => seam_policy::in_deployment(*d, &e.namespace, &e.labels),
        }
    }

    /// The selectors of namespace labels the test reads.
    fn namespace_selectors(&self) -> [Option<&LabelSelector>; 2] {
        match self {
            Item::NpPeer { peer, .. } => [peer.namespace_selector.as_ref(), None],
            Item::AdminSubject(s) => [
                s.namespaces.as_ref(),
                s.pods.as_ref().map(|p| &p.namespace_selector),
            ],
            Item::AdminPeer { namespaces, pods } => {
                [*namespaces, pods.map(|p| &p.namespace_selector)]
            }
            Item::GroupSelector(s) => [s.namespace_selector.as_ref(), None],
            Item::NpSubject { .. }
            | Item::NamedPort(_)
            | Item::Cluster
            | Item::Namespace(_)
            | Item::Deployment(_) => [None, None],
        }
    }

    fn changed(&self, old: Option<Version<'_>>, new: Option<Version<'_>>, moved: Moved) -> bool {
        let (a, b) = (self.matches(old), self.matches(new));
        a != b
            || ((a || b)
                && (moved.addresses || (moved.ports && matches!(self, Item::NamedPort(_)))))
    }
}

fn np_ports<'p>(ports: &'p [NetworkPolicyPort], f: &mut dyn FnMut(Item<'p>) -> bool) -> bool {
    ports.iter().any(|p| match &p.port {
        Some(PortRef::Name(n)) => f(Item::NamedPort(n)),
        _ => false,
    })
}

fn admin_rules<'p, A>(
    subject: &'p AdminSubject,
    ingress: &'p [AdminIngressRule<A>],
    egress: &'p [AdminEgressRule<A>],
    f: &mut dyn FnMut(Item<'p>) -> bool,
) -> bool {
    let named = |ports: &'p Option<Vec<seam_policy::AdminPort>>,
                 f: &mut dyn FnMut(Item<'p>) -> bool| {
        ports
            .iter()
            .flatten()
            .filter_map(|p| p.named_port.as_deref())
            .any(|n| f(Item::NamedPort(n)))
    };
    f(Item::AdminSubject(subject))
        || ingress.iter().any(|r| {
            r.from.iter().any(|p| {
                f(Item::AdminPeer {
                    namespaces: p.namespaces.as_ref(),
                    pods: p.pods.as_ref(),
                })
            }) || named(&r.ports, f)
        })
        || egress.iter().any(|r| {
            r.to.iter().any(|p| {
                f(Item::AdminPeer {
                    namespaces: p.namespaces.as_ref(),
                    pods: p.pods.as_ref(),
                })
            }) || named(&r.ports, f)
        })
}

/// Calls `f` on every membership test of a policy object's fragment until it returns true. Contracts and
/// EndpointGroups have none: contracts read groups, which are tested with [`visit_group`].
fn visit_object<'p>(o: &'p PolicyObject, f: &mut dyn FnMut(Item<'p>) -> bool) -> bool {
    match o {
        PolicyObject::NetworkPolicy(np) => {
            let ns = np.namespace();
            let peers = |peers: &'p [NetworkPolicyPeer], f: &mut dyn FnMut(Item<'p>) -> bool| {
                peers.iter().any(|peer| f(Item::NpPeer { ns, peer }))
            };
            f(Item::NpSubject {
                ns,
                selector: &np.spec.pod_selector,
            }) || np
                .spec
                .ingress
                .iter()
                .any(|r| peers(&r.from, f) || np_ports(&r.ports, f))
                || np
                    .spec
                    .egress
                    .iter()
                    .any(|r| peers(&r.to, f) || np_ports(&r.ports, f))
        }
        PolicyObject::AdminNetworkPolicy(anp) => {
            admin_rules(&anp.spec.subject, &anp.spec.ingress, &anp.spec.egress, f)
        }
        PolicyObject::BaselineAdminNetworkPolicy(banp) => {
            admin_rules(&banp.spec.subject, &banp.spec.ingress, &banp.spec.egress, f)
        }
        PolicyObject::ClusterNetworkPolicy(cnp) => {
            // The raw v1alpha2 shape: its lowering keeps the peers and turns `destinationNamedPort` into a named
            // port, so the tests are the same.
            let named = |protocols: &'p Option<Vec<seam_policy::CnpProtocol>>,
                         f: &mut dyn FnMut(Item<'p>) -> bool| {
                protocols
                    .iter()
                    .flatten()
                    .filter_map(|p| p.destination_named_port.as_deref())
                    .any(|n| f(Item::NamedPort(n)))
            };
            f(Item::AdminSubject(&cnp.spec.subject))
                || cnp.spec.ingress.iter().any(|r| {
                    r.from.iter().any(|p| {
                        f(Item::AdminPeer {
                            namespaces: p.namespaces.as_ref(),
                            pods: p.pods.as_ref(),
                        })
                    }) || named(&r.protocols, f)
                })
                || cnp.spec.egress.iter().any(|r| {
                    r.to.iter().any(|p| {
                        f(Item::AdminPeer {
                            namespaces: p.namespaces.as_ref(),
                            pods: p.pods.as_ref(),
                        })
                    }) || named(&r.protocols, f)
                })
        }
        _ => false,
    }
}

/// Calls `f` on every membership test of a group until it returns true (none for an undefined group, or one of
/// only `cidrs` selectors, which no endpoint changes).
fn visit_group<'p>(name: &'p str, set: &'p PolicySet, f: &mut dyn FnMut(Item<'p>) -> bool) -> bool {
    if name == CLUSTER_GROUP {
        return f(Item::Cluster);
    }
    if let Some(ns) = name.strip_prefix(NAMESPACE_GROUP_PREFIX) {
        return f(Item::Namespace(ns));
    }
    if let Some(d) = seam_policy::deployment_group(name) {
        return f(Item::Deployment(d));
    }
    set.endpoint_group(name)
        .is_some_and(|g| g.spec.selectors.iter().any(|s| f(Item::GroupSelector(s))))
}

/// What an endpoint change can change of a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Touch {
    /// Nothing.
    None,
    /// Only the members of a NetworkPolicy's peer sets: its rules and other sets stay.
    PeerSets,
    /// Anything.
    All,
}

/// What an endpoint change can change of the fragment of `o` (never anything of Contracts and EndpointGroups).
pub(crate) fn object_touch(
    o: &PolicyObject,
    old: Option<Version<'_>>,
    new: Option<Version<'_>>,
    moved: Moved,
) -> Touch {
    let mut peers = false;
    let all = visit_object(o, &mut |item| {
        if !item.changed(old, new, moved) {
            return false;
        }
        // A NetworkPolicy peer's members are only the contents of the rule's peer set.
        let peer = matches!(item, Item::NpPeer { .. });
        peers |= peer;
        !peer
    });
    match (all, peers) {
        (true, _) => Touch::All,
        (false, true) => Touch::PeerSets,
        (false, false) => Touch::None,
    }
}

/// Whether a change of one namespace's labels from `old` to `new` can change the fragment of `o`.
pub(crate) fn object_reads_labels(o: &PolicyObject, old: &Labels, new: &Labels) -> bool {
    visit_object(o, &mut |item| reads(&item, old, new))
}

/// Whether an endpoint change can change the members of group `name`.
pub(crate) fn group_touched(
    name: &str,
    set: &PolicySet,
    old: Option<Version<'_>>,
    new: Option<Version<'_>>,
    moved: Moved,
) -> bool {
    visit_group(name, set, &mut |item| item.changed(old, new, moved))
}

/// Whether a change of one namespace's labels can change the members of group `name`.
pub(crate) fn group_reads_labels(name: &str, set: &PolicySet, old: &Labels, new: &Labels) -> bool {
    visit_group(name, set, &mut |item| reads(&item, old, new))
}

fn reads(item: &Item<'_>, old: &Labels, new: &Labels) -> bool {
    item.namespace_selectors()
        .into_iter()
        .flatten()
        .any(|s| s.matches(old) || s.matches(new))
}
