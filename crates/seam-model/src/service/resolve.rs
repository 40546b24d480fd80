//! A Service's backends, as Kubernetes' EndpointSlice controller and kube-proxy find them, and
//! which of them take new connections. Pure: the controller, the CLI and every agent compute the
//! same answer from the same objects.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::{
    Backend, BackendState, EndpointConditions, EndpointSlice, ResolvedPort, Service, ServicePort,
    TargetPort,
};
use crate::objects::{Endpoint, EndpointKind};

/// Every backend of every port of `service`, each port's sorted by (address, port) with
/// duplicates merged (the best conditions win: ready, then serving, then not terminating; as
/// kube-proxy prefers the ready copy of an endpoint listed twice).
///
/// - With a selector: the `endpoints` of the Service's namespace whose labels hold every pair of
///   the selector, pods, VMs and external endpoints alike (never a node's own `Host` endpoint),
///   with the endpoint's own conditions ([`Endpoint::state`]: the Kubernetes adapter sets a
///   pod's from its `Ready` condition and deletion, as the EndpointSlice controller would;
///   without them an endpoint is ready, serving and not terminating).
/// - Without: the `slices` of the Service (same namespace, `service` its name), each slice
///   endpoint's first address (Kubernetes defines no meaning for the others and kube-proxy reads
///   only the first), conditions resolved as Kubernetes says: `ready` unknown is ready, `serving`
///   unknown is `ready`'s value, `terminating` unknown is not terminating.
///
/// The port on a backend: `targetPort` as a number (default: the Service port), or as a name
/// looked up in the endpoint's named ports with the Service port's protocol (an endpoint without
/// it is no backend of that port, as Kubernetes' EndpointSlice controller leaves it out). For
/// slices, the slice port named as the Service port (or both unnamed) with its protocol; a slice
/// without one gives that port nothing.
pub fn resolve(
    service: &Service,
    endpoints: &[Endpoint],
    slices: &[EndpointSlice],
) -> Vec<ResolvedPort> {
    service
        .spec
        .ports
        .iter()
        .map(|port| {
            let found = match &service.spec.selector {
                Some(selector) => endpoints
                    .iter()
                    .filter(|e| {
                        e.namespace == service.namespace
                            && e.kind != EndpointKind::Host
                            && selector.iter().all(|(k, v)| e.labels.get(k) == Some(v))
                    })
                    .filter_map(|e| endpoint_backend(port, e))
                    .collect(),
                None => slices
                    .iter()
                    .filter(|s| s.namespace == service.namespace && s.service == service.name)
                    .flat_map(|s| slice_backends(port, s))
                    .collect(),
            };
            ResolvedPort {
                port: port.clone(),
                backends: merged(found),
            }
        })
        .collect()
}

/// The backends that take new connections, as kube-proxy chooses them: with `local_node` (traffic
/// policy `Local`) only those on that node, never others; of those, the ready ones (every one when
/// the Service has `publishNotReadyAddresses`); when none is ready, the ones that are serving and
/// terminating (still finishing their work: better than refusing the connection). Empty: the
/// frontend refuses.
pub fn usable<'a>(
    backends: &'a [Backend],
    publish_not_ready: bool,
    local_node: Option<&str>,
) -> Vec<&'a Backend> {
    let candidates: Vec<&Backend> = backends
        .iter()
        .filter(|b| local_node.is_none_or(|n| b.node.as_deref() == Some(n)))
        .collect();
    let ready: Vec<&Backend> = candidates
        .iter()
        .copied()
        .filter(|b| publish_not_ready || b.state.ready)
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    candidates
        .into_iter()
        .filter(|b| b.state.serving && b.state.terminating)
        .collect()
}

impl EndpointConditions {
    /// The conditions with unknowns resolved as Kubernetes says (`ready` unknown: ready;
    /// `serving` unknown: as `ready`; `terminating` unknown: not terminating).
    pub fn resolved(&self) -> BackendState {
        let ready = self.ready.unwrap_or(true);
        BackendState {
            ready,
            serving: self.serving.unwrap_or(ready),
            terminating: self.terminating.unwrap_or(false),
        }
    }
}

fn endpoint_backend(port: &ServicePort, e: &Endpoint) -> Option<Backend> {
    let target = match &port.target_port {
        None => port.port,
        Some(TargetPort::Number(n)) => *n,
        Some(TargetPort::Name(name)) => {
            e.ports
                .iter()
                .find(|p| p.name == *name && p.protocol == port.protocol)?
                .port
        }
    };
    Some(Backend {
        ip: e.ip,
        port: target,
        node: Some(e.node.clone()),
        endpoint: Some(e.name.clone()),
        state: e.state(),
    })
}

fn slice_backends(port: &ServicePort, slice: &EndpointSlice) -> Vec<Backend> {
    let name = port.name.as_deref().unwrap_or("");
    let Some(target) = slice
        .ports
        .iter()
        .find(|p| p.name.as_deref().unwrap_or("") == name && p.protocol == port.protocol)
    else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        .filter_map(|e| {
            let ip = *e.addresses.first()?;
            Some(Backend {
                ip,
                port: target.port,
                node: e.node_name.clone(),
                endpoint: target_endpoint(slice, e.target_ref.as_ref()),
                state: e.conditions.resolved(),
            })
        })
        .collect()
}

/// The Seam endpoint a slice endpoint's `targetRef` names: a Pod's `namespace/name` (Seam names
/// a pod's endpoint so).
fn target_endpoint(slice: &EndpointSlice, target: Option<&serde_json::Value>) -> Option<String> {
    let target = target?;
    let text = |field: &str| target.get(field).and_then(serde_json::Value::as_str);
    if text("kind")? != "Pod" {
        return None;
    }
    let namespace = text("namespace").unwrap_or(&slice.namespace);
    Some(format!("{namespace}/{}", text("name")?))
}

fn merged(found: Vec<Backend>) -> Vec<Backend> {
    let rank = |s: &BackendState| (s.ready, s.serving, !s.terminating);
    let mut by_address: BTreeMap<(Ipv4Addr, u16), Backend> = BTreeMap::new();
    for b in found {
        match by_address.get(&(b.ip, b.port)) {
            Some(kept) if rank(&kept.state) >= rank(&b.state) => {}
            _ => {
                by_address.insert((b.ip, b.port), b);
            }
        }
    }
    by_address.into_values().collect()
}

#[cfg(test)]
mod tests;
