//! Pure allocation of what a Service is given: its ClusterIP, its node ports and its
//! LoadBalancer address, as Kubernetes' API server (and MetalLB, for the address) would.
//!
//! Every allocation is an index key under [`ALLOCATIONS`] whose value is the owning Service's
//! key (`namespace/name`): the caller writes new ones with an `Absent` compare in the same store
//! transaction as the Service, so two writers (two replicas, or one apply holding two Services)
//! can never hand out one address or port twice. [`plan`] reads what is taken ([`Taken`]),
//! returns the Service as it will be stored and the index keys to create, keep and free, and
//! updates [`Taken`] so that the next plan of the same transaction sees them.
//!
//! Order: a requested value is honoured or refused (outside its range: 400 `Invalid` with the
//! field path; held by another Service: 409 `Conflict` naming it); what a Service already holds
//! is kept (an update that leaves `clusterIP` or a `nodePort` out keeps it, as Kubernetes does;
//! a changed ClusterIP is refused: it is immutable; a change to ClusterIP drops the node ports
//! carried over from the old version and frees them, as Kubernetes does); the rest is the first free value from a
//! start derived from the Service's key (FNV-1a), so allocations do not cluster at the range's
//! start. LoadBalancer addresses come lowest first from the named pool, or from the auto-assign
//! pools in name order; none free (or no such pool) leaves the Service without one and with an
//! `AddressAllocated=False` condition instead of a refusal, as Kubernetes leaves it `<pending>`.
//!
//! Architecture invariant: no I/O; what is stored comes in, what to write goes out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use seam_model::{
    AddressPool, ClusterIp, Condition, FieldError, LoadBalancerIngress, PortProtocol, Service,
    ServiceStatus, ServiceType, ValidationError, ADDRESS_POOL_ANNOTATION,
};

use crate::config::ControllerConfig;
use crate::error::{Error, Result};

/// The prefix of every allocation index key.
pub(crate) const ALLOCATIONS: &str = "/seam/v1/allocations/";

/// The condition type a LoadBalancer Service reports its address with.
pub const ADDRESS_ALLOCATED: &str = "AddressAllocated";
/// Reason: the pool the Service names does not exist, or no pool may auto-assign.
pub const POOL_NOT_FOUND: &str = "PoolNotFound";
/// Reason: every address of the candidate pools is taken.
pub const POOL_EXHAUSTED: &str = "PoolExhausted";
/// Reason: `loadBalancerIP` is in none of the candidate pools.
pub const ADDRESS_NOT_IN_POOL: &str = "AddressNotInPool";

/// The index key of ClusterIP `ip`.
pub(crate) fn cluster_ip_key(ip: Ipv4Addr) -> String {
    format!("{ALLOCATIONS}clusterips/{ip}")
}

/// The index key of node port `port` of `protocol`.
pub(crate) fn node_port_key(protocol: PortProtocol, port: u16) -> String {
    format!("{ALLOCATIONS}nodeports/{}/{port}", protocol.as_str())
}

/// The folder of LoadBalancer address index keys, below [`ALLOCATIONS`].
const LB_ADDRESSES: &str = "lbaddresses/";

/// The index key of LoadBalancer address `ip`.
pub(crate) fn lb_address_key(ip: Ipv4Addr) -> String {
    format!("{ALLOCATIONS}{LB_ADDRESSES}{ip}")
}

/// One index key as stored or as planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    /// The owning Service's key.
    pub(crate) owner: String,
    /// Its `mod_revision` in the store; `None` when an earlier plan of this transaction made it.
    pub(crate) revision: Option<u64>,
}

/// Every allocation index key, as read (and as earlier plans of the same txn changed it).
#[derive(Debug, Clone, Default)]
pub(crate) struct Taken {
    pub(crate) keys: BTreeMap<String, Held>,
}

impl Taken {
    /// The keys `owner` holds in the store.
    fn owned_by(&self, owner: &str) -> Vec<(String, Option<u64>)> {
        self.keys
            .iter()
            .filter(|(_, h)| h.owner == owner)
            .map(|(k, h)| (k.clone(), h.revision))
            .collect()
    }
}

/// Addresses no Service address may take: pods', VMs', nodes' and endpoints' (so the
/// dataplane never translates traffic meant for one of them).
#[derive(Debug, Clone, Default)]
pub(crate) struct Reserved {
    /// Segment names and subnets.
    pub(crate) segments: Vec<(String, Ipv4Net)>,
    /// The controller's pool segments are carved from.
    pub(crate) pool: Option<Ipv4Net>,
    /// Node names and underlay addresses.
    pub(crate) nodes: Vec<(String, Ipv4Addr)>,
    /// Endpoint names and addresses.
    pub(crate) endpoints: Vec<(String, Ipv4Addr)>,
}

impl Reserved {
    /// Why `ip` may not be a Service address, `None` when it may.
    pub(crate) fn collision(&self, ip: Ipv4Addr) -> Option<String> {
        if let Some((name, subnet)) = self.segments.iter().find(|(_, s)| s.contains(&ip)) {
            return Some(format!(
                "{ip} is inside segment {name:?} subnet {subnet} (pod and VM addresses)"
            ));
        }
        if let Some(pool) = self.pool.filter(|p| p.contains(&ip)) {
            return Some(format!(
                "{ip} is inside the controller's pool {pool}, from which segments are carved"
            ));
        }
        if let Some((name, _)) = self.nodes.iter().find(|(_, a)| *a == ip) {
            return Some(format!("{ip} is the underlay address of node {name:?}"));
        }
        if let Some((name, _)) = self.endpoints.iter().find(|(_, a)| *a == ip) {
            return Some(format!("{ip} is the address of endpoint {name:?}"));
        }
        None
    }

    /// Why `net` may not hold Service addresses (a pool prefix), `None` when it may.
    pub(crate) fn net_collision(&self, net: Ipv4Net) -> Option<String> {
        let overlaps = |a: &Ipv4Net| seam_model::overlaps(*a, net);
        if let Some((name, subnet)) = self.segments.iter().find(|(_, s)| overlaps(s)) {
            return Some(format!(
                "{net} overlaps segment {name:?} subnet {subnet} (pod and VM addresses)"
            ));
        }
        if let Some(pool) = self.pool.filter(overlaps) {
            return Some(format!(
                "{net} overlaps the controller's pool {pool}, from which segments are carved"
            ));
        }
        // An address a pool holds would be translated by every node's Service table.
        if let Some((name, ip)) = self.nodes.iter().find(|(_, a)| net.contains(a)) {
            return Some(format!(
                "{net} holds {ip}, the underlay address of node {name:?}"
            ));
        }
        if let Some((name, ip)) = self.endpoints.iter().find(|(_, a)| net.contains(a)) {
            return Some(format!(
                "{net} holds {ip}, the address of endpoint {name:?}"
            ));
        }
        None
    }
}

/// One index key change of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// Create the key (compare: absent).
    Take(String),
    /// Keep the key (compare: unchanged since read).
    Keep(String, u64),
    /// Delete the key (compare: unchanged since read).
    Free(String, u64),
}

/// What [`plan`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The Service as it is stored: allocations filled in, status written.
    pub(crate) service: Service,
    /// The index keys to write with it.
    pub(crate) changes: Vec<Change>,
}

/// The first value of `first..=last` from a start derived from `seed` (wrapping around) that
/// `free` accepts.
fn first_free_from(seed: &str, first: u32, last: u32, free: impl Fn(u32) -> bool) -> Option<u32> {
    let size = u64::from(last.checked_sub(first)?) + 1;
    // FNV-1a: a start that stays the same across versions and machines.
    let start = seam_model::fnv::fnv1a(seed) % size;
    (0..size)
        .map(|i| first as u64 + (start + i) % size)
        .filter_map(|v| u32::try_from(v).ok())
        .find(|v| free(*v))
}

/// What a plan works on.
pub(crate) struct Inputs<'a> {
    pub(crate) config: &'a ControllerConfig,
    pub(crate) pools: &'a [AddressPool],
    pub(crate) reserved: &'a Reserved,
}

/// Builds one Service's plan.
struct Planner<'a, 'b> {
    inputs: &'b Inputs<'a>,
    taken: &'b mut Taken,
    owner: String,
    /// Keys this plan claims (a second claim of one key is the Service's own mistake).
    claimed: BTreeSet<String>,
    changes: Vec<Change>,
    problems: Vec<FieldError>,
}

impl Planner<'_, '_> {
    fn problem(&mut self, path: impl Into<String>, message: String) {
        self.problems.push(FieldError {
            path: path.into(),
            message,
        });
    }

    /// Claims `key` for the Service; `what` names the value in a conflict.
    fn claim(&mut self, key: String, what: String, path: &str) -> Result<()> {
        if !self.claimed.insert(key.clone()) {
            self.problem(path, format!("{what} is given twice in this Service"));
            return Ok(());
        }
        match self.taken.keys.get(&key) {
            Some(h) if h.owner != self.owner => {
                return Err(Error::ServiceAllocationTaken {
                    service: self.owner.clone(),
                    what,
                    owner: h.owner.clone(),
                })
            }
            Some(Held {
                revision: Some(rev),
                ..
            }) => self.changes.push(Change::Keep(key, *rev)),
            // Made by an earlier plan of this txn for the same owner: cannot happen (one
            // Service per apply), nothing more to write.
            Some(_) => {}
            None => {
                self.taken.keys.insert(
                    key.clone(),
                    Held {
                        owner: self.owner.clone(),
                        revision: None,
                    },
                );
                self.changes.push(Change::Take(key));
            }
        }
        Ok(())
    }

    fn is_free(&self, key: &str) -> bool {
        !self.taken.keys.contains_key(key) && !self.claimed.contains(key)
    }

    fn cluster_ip(&mut self, current: Option<&Service>, wanted: &mut Service) -> Result<()> {
        let config = self.inputs.config;
        let cidr = config.service_cidr;
        let old = current.map(|c| c.spec.cluster_ip);
        let path = "spec.clusterIP";
        let ip = match (old, wanted.spec.cluster_ip) {
            (Some(ClusterIp::Address(old)), ClusterIp::Auto) => Some(old),
            (Some(old), new) if old != new => {
                self.problem(
                    path,
                    format!(
                        "is immutable: the Service has {}; delete it and create it again to change it",
                        describe(old)
                    ),
                );
                return Ok(());
            }
            (_, ClusterIp::Headless) => None,
            (_, ClusterIp::Address(ip)) => {
                if !cidr.contains(&ip) {
                    self.problem(
                        path,
                        format!("{ip} is outside the service range {cidr} (--service-cidr)"),
                    );
                    return Ok(());
                }
                if ip == cidr.network() || ip == cidr.broadcast() {
                    self.problem(
                        path,
                        format!("{ip} is not a host address of the service range {cidr}"),
                    );
                    return Ok(());
                }
                if let Some(why) = self.inputs.reserved.collision(ip) {
                    self.problem(path, why);
                    return Ok(());
                }
                Some(ip)
            }
            (_, ClusterIp::Auto) => {
                let first = u32::from(cidr.network()) + 1;
                let last = u32::from(cidr.broadcast()) - 1;
                let found = first_free_from(&self.owner, first, last, |v| {
                    let ip = Ipv4Addr::from(v);
                    self.is_free(&cluster_ip_key(ip))
                        && self.inputs.reserved.collision(ip).is_none()
                });
                match found {
                    Some(v) => Some(Ipv4Addr::from(v)),
                    None => {
                        return Err(Error::ServiceRangeExhausted {
                            service: self.owner.clone(),
                            what: "ClusterIP",
                            range: cidr.to_string(),
                        })
                    }
                }
            }
        };
        match ip {
            Some(ip) => {
                self.claim(cluster_ip_key(ip), format!("ClusterIP {ip}"), path)?;
                wanted.spec.cluster_ip = ClusterIp::Address(ip);
            }
            None => wanted.spec.cluster_ip = ClusterIp::Headless,
        }
        Ok(())
    }

    fn node_ports(&mut self, current: Option<&Service>, wanted: &mut Service) -> Result<()> {
        let range = self.inputs.config.node_port_range;
        let service_type = wanted.spec.service_type;
        let needed = match service_type {
            ServiceType::ClusterIP => false,
            ServiceType::NodePort => true,
            ServiceType::LoadBalancer => {
                wanted.spec.allocate_load_balancer_node_ports != Some(false)
            }
        };
        let old_ports = current
            .filter(|c| c.spec.service_type != ServiceType::ClusterIP)
            .map(|c| c.spec.ports.clone())
            .unwrap_or_default();
        // A change to ClusterIP that carries the old node ports over (every one given was the
        // Service's) drops them, as Kubernetes' API server does (`kubectl apply` of the
        // fetched object with only `type` changed); their keys are freed with the plan. A
        // node port the Service did not have is still refused.
        if service_type == ServiceType::ClusterIP
            && wanted.spec.ports.iter().all(|p| {
                p.node_port
                    .is_none_or(|n| old_ports.iter().any(|o| o.node_port == Some(n)))
            })
        {
            for port in &mut wanted.spec.ports {
                port.node_port = None;
            }
        }
        for i in 0..wanted.spec.ports.len() {
            let port = wanted.spec.ports[i].clone();
            let path = format!("spec.ports[{i}].nodePort");
            if service_type == ServiceType::ClusterIP {
                if port.node_port.is_some() {
                    self.problem(
                        &path,
                        "may only be set for NodePort and LoadBalancer Services".to_string(),
                    );
                }
                continue;
            }
            let kept = old_ports
                .iter()
                .find(|o| o.port == port.port && o.protocol == port.protocol)
                .and_then(|o| o.node_port);
            let chosen = match (port.node_port, kept) {
                (Some(n), _) => {
                    if !range.contains(n) && Some(n) != kept {
                        self.problem(
                            &path,
                            format!(
                                "{n} is outside the node port range {range} (--node-port-range)"
                            ),
                        );
                        continue;
                    }
                    Some(n)
                }
                (None, Some(n)) if needed => Some(n),
                (None, _) if needed => {
                    let found = first_free_from(
                        &format!("{}:{}/{}", self.owner, port.port, port.protocol.as_str()),
                        u32::from(range.first),
                        u32::from(range.last),
                        |v| {
                            u16::try_from(v)
                                .is_ok_and(|p| self.is_free(&node_port_key(port.protocol, p)))
                        },
                    );
                    match found.and_then(|v| u16::try_from(v).ok()) {
                        Some(n) => Some(n),
                        None => {
                            return Err(Error::ServiceRangeExhausted {
                                service: self.owner.clone(),
                                what: "node port",
                                range: format!("{range}/{}", port.protocol.as_str()),
                            })
                        }
                    }
                }
                (None, _) => None,
            };
            if let Some(n) = chosen {
                self.claim(
                    node_port_key(port.protocol, n),
                    format!("nodePort {n}/{}", port.protocol.as_str()),
                    &path,
                )?;
            }
            wanted.spec.ports[i].node_port = chosen;
        }
        Ok(())
    }

    /// The pools a Service may take its address from, or the condition saying why none.
    fn candidate_pools(&self, service: &Service) -> Result<Vec<&AddressPool>, Condition> {
        let pools = self.inputs.pools;
        match service.annotations.get(ADDRESS_POOL_ANNOTATION) {
            Some(name) => match pools.iter().find(|p| &p.name == name) {
                Some(pool) => Ok(vec![pool]),
                None => Err(pending(
                    POOL_NOT_FOUND,
                    format!("address pool {name:?} (annotation {ADDRESS_POOL_ANNOTATION}) does not exist"),
                )),
            },
            None => {
                let mut auto: Vec<&AddressPool> = pools.iter().filter(|p| p.auto_assign).collect();
                auto.sort_by(|a, b| a.name.cmp(&b.name));
                if auto.is_empty() {
                    Err(pending(
                        POOL_NOT_FOUND,
                        format!("no address pool assigns addresses automatically; create one or name one with annotation {ADDRESS_POOL_ANNOTATION}"),
                    ))
                } else {
                    Ok(auto)
                }
            }
        }
    }

    fn load_balancer(&mut self, current: Option<&Service>, wanted: &mut Service) -> Result<()> {
        wanted.status = ServiceStatus::default();
        if wanted.spec.service_type != ServiceType::LoadBalancer {
            return Ok(());
        }
        let path = "spec.loadBalancerIP";
        if let Some(ip) = wanted.spec.load_balancer_ip {
            if let Some(why) = self.inputs.reserved.collision(ip) {
                self.problem(path, why);
                return Ok(());
            }
        }
        let pools = match self.candidate_pools(wanted) {
            Ok(pools) => pools,
            Err(condition) => {
                wanted.status.conditions.push(condition);
                return Ok(());
            }
        };
        let in_pools = |ip: Ipv4Addr| {
            pools
                .iter()
                .any(|p| p.addresses.iter().any(|n| n.contains(&ip)))
        };
        let held = current
            .filter(|c| c.spec.service_type == ServiceType::LoadBalancer)
            .into_iter()
            .flat_map(|c| c.status.load_balancer.ingress.iter().map(|i| i.ip))
            .find(|ip| {
                self.taken
                    .keys
                    .get(&lb_address_key(*ip))
                    .is_some_and(|h| h.owner == self.owner)
                    && in_pools(*ip)
            });
        let chosen = match (wanted.spec.load_balancer_ip, held) {
            (Some(ip), _) if !in_pools(ip) => {
                let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
                wanted.status.conditions.push(pending(
                    ADDRESS_NOT_IN_POOL,
                    format!("loadBalancerIP {ip} is in none of the address pools {names:?}"),
                ));
                return Ok(());
            }
            (Some(ip), _) => ip,
            (None, Some(ip)) => ip,
            (None, None) => {
                let free = pools
                    .iter()
                    .flat_map(|p| p.addresses.iter())
                    .find_map(|net| {
                        // Every address of the prefix, lowest first (no host sits on a pool's
                        // network or broadcast address).
                        (u32::from(net.network())..=u32::from(net.broadcast()))
                            .map(Ipv4Addr::from)
                            .find(|ip| {
                                self.is_free(&lb_address_key(*ip))
                                    && self.inputs.reserved.collision(*ip).is_none()
                            })
                    });
                match free {
                    Some(ip) => ip,
                    None => {
                        let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
                        wanted.status.conditions.push(pending(
                            POOL_EXHAUSTED,
                            format!("every address of the address pools {names:?} is taken"),
                        ));
                        return Ok(());
                    }
                }
            }
        };
        self.claim(
            lb_address_key(chosen),
            format!("LoadBalancer address {chosen}"),
            path,
        )?;
        wanted.status.load_balancer.ingress = vec![LoadBalancerIngress {
            ip: chosen,
            ip_mode: Some("VIP".to_string()),
        }];
        Ok(())
    }
}

fn describe(ip: ClusterIp) -> String {
    match ip {
        ClusterIp::Auto => "no ClusterIP yet".to_string(),
        ClusterIp::Headless => "clusterIP None (headless)".to_string(),
        ClusterIp::Address(ip) => format!("ClusterIP {ip}"),
    }
}

/// The condition of a LoadBalancer Service left without an address.
fn pending(reason: &str, message: String) -> Condition {
    Condition {
        condition_type: ADDRESS_ALLOCATED.to_string(),
        status: "False".to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: None,
    }
}

/// Plans `wanted` (replacing `current`, if any): its allocations filled in and its status
/// written; `taken` is updated as if the plan were committed.
pub(crate) fn plan(
    inputs: &Inputs<'_>,
    taken: &mut Taken,
    current: Option<&Service>,
    mut wanted: Service,
) -> Result<Plan> {
    let owner = wanted.key();
    let mut planner = Planner {
        inputs,
        taken,
        owner: owner.clone(),
        claimed: BTreeSet::new(),
        changes: Vec::new(),
        problems: Vec::new(),
    };
    for (i, ip) in wanted.spec.external_ips.iter().enumerate() {
        if let Some(why) = inputs.reserved.collision(*ip) {
            planner.problem(format!("spec.externalIPs[{i}]"), why);
        }
    }
    planner.cluster_ip(current, &mut wanted)?;
    planner.node_ports(current, &mut wanted)?;
    planner.load_balancer(current, &mut wanted)?;
    if !planner.problems.is_empty() {
        return Err(Error::Invalid(ValidationError {
            kind: "Service",
            name: owner,
            errors: planner.problems,
        }));
    }
    // What the Service held and no longer does is freed.
    for (key, revision) in planner.taken.owned_by(&owner) {
        if planner.claimed.contains(&key) {
            continue;
        }
        planner.taken.keys.remove(&key);
        if let Some(revision) = revision {
            planner.changes.push(Change::Free(key, revision));
        }
    }
    let changes = planner.changes;
    Ok(Plan {
        service: wanted,
        changes,
    })
}

/// Whether `changes` free a LoadBalancer address (a pending Service may take it).
pub(crate) fn frees_lb_address(changes: &[Change]) -> bool {
    changes.iter().any(|c| {
        matches!(c, Change::Free(key, _)
            if key.strip_prefix(ALLOCATIONS).is_some_and(|k| k.starts_with(LB_ADDRESSES)))
    })
}

/// The changes that free everything `owner` holds (its Service is deleted).
pub(crate) fn release(taken: &mut Taken, owner: &str) -> Vec<Change> {
    taken
        .owned_by(owner)
        .into_iter()
        .filter_map(|(key, revision)| {
            taken.keys.remove(&key);
            revision.map(|r| Change::Free(key, r))
        })
        .collect()
}

#[cfg(test)]
#[path = "allocate_tests.rs"]
mod tests;
