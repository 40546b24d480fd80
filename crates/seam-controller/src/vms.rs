//! VMs on hypervisor hosts: `POST /v1/vms/{name}/attach|detach|move`, `GET|DELETE
//! /v1/vms/{name}`, `GET /v1/vms`.
//!
//! The controller is the VM's address authority: a [`Vm`] record (`/seam/v1/vms/<name>`, outside
//! the kinds agents watch) holds its lease (address and MAC on a segment) from the first attach
//! until delete, across stop/start and moves. While the VM runs, the controller also holds its
//! [`seam_model::Endpoint`] (kind `vm`, node = the host), written in the same store txn, which
//! every agent follows exactly like a pod's: the host plugs the VM's port into the segment's
//! bridge and enforces its policy; the other nodes get FDB and neighbour entries for it.
//!
//! Addresses: a VM's address lies outside every node's pod block (a given address inside one
//! is refused, since that node hands out its addresses on its own), and [`crate::Controller::
//! claim_block`] skips blocks that would contain a VM's address. Without `ip`, the controller
//! takes the highest free address of the segment (blocks are carved from the bottom).
//!
//! Every operation validates first and changes nothing on bad input.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use seam_model::{
    endpoint_mac, vm_port_name, Block, Endpoint, EndpointKind, Node, NodeRole, ObjectKind, Segment,
    Vm, VmAttach, VmMove, DEFAULT_TENANT,
};
use seam_store::{Compare, Txn};

use crate::controller::{
    encode, field_error, invalid_if_any, not_found, same_as_read, Controller, Stored,
};
use crate::error::{Error, Result};
use crate::keys::{object_key, ROOT};

/// Store prefix of VM records (not an [`ObjectKind`]: agents never see them, only the endpoints).
const VMS: &str = "vms/";

fn vm_key(name: &str) -> String {
    format!("{ROOT}{VMS}{name}")
}

/// The VM routes, merged into [`crate::router`].
pub(crate) fn routes() -> Router<Controller> {
    Router::new()
        .route("/v1/vms", get(list_vms))
        .route("/v1/vms/{name}", get(get_vm).delete(delete_vm))
        .route("/v1/vms/{name}/attach", post(attach_vm))
        .route("/v1/vms/{name}/detach", post(detach_vm))
        .route("/v1/vms/{name}/move", post(move_vm))
}

async fn list_vms(State(c): State<Controller>) -> Result<Response> {
    Ok(Json(c.list_vms().await?).into_response())
}

async fn get_vm(State(c): State<Controller>, Path(name): Path<String>) -> Result<Response> {
    Ok(Json(c.get_vm(&name).await?).into_response())
}

async fn delete_vm(State(c): State<Controller>, Path(name): Path<String>) -> Result<StatusCode> {
    c.delete_vm(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn attach_vm(
    State(c): State<Controller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let request: VmAttach = crate::http::decode_body("VmAttach", &body)?;
    crate::http::check_name("VmAttach", &name, &request.name)?;
    Ok(Json(c.attach_vm(request).await?).into_response())
}

async fn detach_vm(State(c): State<Controller>, Path(name): Path<String>) -> Result<Response> {
    Ok(Json(c.detach_vm(&name).await?).into_response())
}

async fn move_vm(
    State(c): State<Controller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let request: VmMove = crate::http::decode_body("VmMove", &body)?;
    Ok(Json(c.move_vm(&name, &request.host).await?).into_response())
}

fn vm_not_found(name: &str) -> Error {
    Error::VmNotFound {
        name: name.to_string(),
    }
}

impl Controller {
    /// Every VM record, in name order.
    pub async fn list_vms(&self) -> Result<Vec<Vm>> {
        Ok(self
            .read_vms()
            .await?
            .into_iter()
            .map(|s| s.object)
            .collect())
    }

    /// One VM record.
    pub async fn get_vm(&self, name: &str) -> Result<Vm> {
        self.read_vm(name)
            .await?
            .map(|s| s.object)
            .ok_or_else(|| vm_not_found(name))
    }

    /// Defines VM `request.name` if it is new (leasing an address and a MAC on the segment) and
    /// attaches it on `request.host`; a VM that exists keeps its address and MAC (a stopped VM
    /// starts again; `ip`/`mac`/`segment` given must then match its lease).
    pub async fn attach_vm(&self, request: VmAttach) -> Result<Vm> {
        request.validate()?;
        let _guard = self.write_lock().await?;
        let segment = self
            .read::<Segment>(ObjectKind::Segment, &request.segment)
            .await?
            .ok_or_else(|| not_found(ObjectKind::Segment, &request.segment))?;
        let host = self.hypervisor(&request.name, &request.host).await?;
        let current = self.read_vm(&request.name).await?;
        let vms = self.read_vms().await?;
        let endpoints = self.read_all::<Endpoint>(ObjectKind::Endpoint).await?;
        let vm = match &current {
            Some(existing) => {
                let old = &existing.object;
                let mut problems = Vec::new();
                if old.segment != request.segment {
                    problems.push(field_error(
                        "segment",
                        format!(
                            "VM {:?} is leased on segment {:?}; delete it first to change segments",
                            old.name, old.segment
                        ),
                    ));
                }
                if request.ip.is_some_and(|ip| ip != old.ip) {
                    problems.push(field_error(
                        "ip",
                        format!(
                            "VM {:?} holds address {}; it keeps it until deleted",
                            old.name, old.ip
                        ),
                    ));
                }
                if request.mac.is_some_and(|mac| mac != old.mac) {
                    problems.push(field_error(
                        "mac",
                        format!(
                            "VM {:?} holds MAC {}; it keeps it until deleted",
                            old.name, old.mac
                        ),
                    ));
                }
                if request
                    .namespace
                    .as_ref()
                    .is_some_and(|ns| *ns != old.namespace)
                {
                    problems.push(field_error(
                        "namespace",
                        format!("VM {:?} is in namespace {:?}", old.name, old.namespace),
                    ));
                }
                invalid_if_any("VmAttach", &request.name, problems)?;
                Vm {
                    host: request.host.clone(),
                    attached: true,
                    labels: request.labels.clone().unwrap_or_else(|| old.labels.clone()),
                    ports: request.ports.clone().unwrap_or_else(|| old.ports.clone()),
                    ..old.clone()
                }
            }
            None => {
                let blocks = self
                    .list_prefix::<Block>(&crate::keys::segment_blocks_prefix(&segment.object.name))
                    .await?;
                let blocks: Vec<Block> = blocks.into_iter().map(|b| b.object).collect();
                let others = held(&vms, &endpoints, &request.name);
                let ip = match request.ip {
                    Some(ip) => {
                        check_vm_address(&request.name, ip, &segment.object, &blocks)?;
                        ip
                    }
                    None => free_address(&segment.object, &blocks, &others).ok_or_else(|| {
                        Error::VmAddressesExhausted {
                            segment: segment.object.name.clone(),
                        }
                    })?,
                };
                let mac = request.mac.unwrap_or_else(|| endpoint_mac(ip));
                let namespace = request
                    .namespace
                    .clone()
                    .or_else(|| segment.object.namespace.clone())
                    .unwrap_or_else(|| DEFAULT_TENANT.to_string());
                Vm {
                    name: request.name.clone(),
                    namespace,
                    segment: request.segment.clone(),
                    ip,
                    mac,
                    labels: request.labels.clone().unwrap_or_default(),
                    ports: request.ports.clone().unwrap_or_default(),
                    host: request.host.clone(),
                    attached: true,
                    port: vm_port_name(&request.name),
                }
            }
        };
        vm.validate()?;
        // The VM's endpoint is held to the rule a pod's is: its namespace is its segment's.
        if let Some(ns) = segment
            .object
            .namespace
            .as_ref()
            .filter(|ns| **ns != vm.namespace)
        {
            return Err(Error::EndpointNamespaceMismatch {
                endpoint: vm.endpoint_name(),
                namespace: vm.namespace.clone(),
                segment: vm.segment.clone(),
                segment_namespace: ns.clone(),
            });
        }
        self.check_vm_unique(&vm, &vms, &endpoints)?;
        self.commit_vm(&vm, current.as_ref(), &endpoints, Some((&segment, &host)))
            .await?;
        // Namespace selectors need the namespace object (as for pods, created on first use).
        self.ensure_namespace(&vm.namespace).await?;
        tracing::info!(vm = %vm.name, ip = %vm.ip, mac = %vm.mac, host = %vm.host, "attached vm");
        Ok(vm)
    }

    /// Stops VM `name`: its endpoint goes (the host unplugs its port, the other nodes drop
    /// their entries); its address and MAC stay leased for the next attach.
    pub async fn detach_vm(&self, name: &str) -> Result<Vm> {
        let _guard = self.write_lock().await?;
        let current = self
            .read_vm(name)
            .await?
            .ok_or_else(|| vm_not_found(name))?;
        let endpoints = self.read_all::<Endpoint>(ObjectKind::Endpoint).await?;
        let vm = Vm {
            attached: false,
            ..current.object.clone()
        };
        self.commit_vm(&vm, Some(&current), &endpoints, None)
            .await?;
        tracing::info!(vm = %name, "detached vm");
        Ok(vm)
    }

    /// Moves VM `name` to hypervisor `host`, keeping its address and MAC; its endpoint (and so
    /// every node's entries and its policy) follows in the same txn.
    pub async fn move_vm(&self, name: &str, host: &str) -> Result<Vm> {
        let mut problems = Vec::new();
        if !seam_model::is_valid_name(host) {
            problems.push(field_error("host", format!("{host:?} is not a valid name")));
        }
        invalid_if_any("VmMove", name, problems)?;
        let _guard = self.write_lock().await?;
        let current = self
            .read_vm(name)
            .await?
            .ok_or_else(|| vm_not_found(name))?;
        let node = self.hypervisor(name, host).await?;
        let segment = self
            .read::<Segment>(ObjectKind::Segment, &current.object.segment)
            .await?
            .ok_or_else(|| not_found(ObjectKind::Segment, &current.object.segment))?;
        let endpoints = self.read_all::<Endpoint>(ObjectKind::Endpoint).await?;
        let vm = Vm {
            host: host.to_string(),
            ..current.object.clone()
        };
        let refs = vm.attached.then_some((&segment, &node));
        self.commit_vm(&vm, Some(&current), &endpoints, refs)
            .await?;
        tracing::info!(vm = %name, from = %current.object.host, to = %host, "moved vm");
        Ok(vm)
    }

    /// Deletes VM `name`: its endpoint goes and its address and MAC are released.
    pub async fn delete_vm(&self, name: &str) -> Result<()> {
        let _guard = self.write_lock().await?;
        let current = self
            .read_vm(name)
            .await?
            .ok_or_else(|| vm_not_found(name))?;
        let ep_name = current.object.endpoint_name();
        let ep_key = object_key(ObjectKind::Endpoint, &ep_name);
        let endpoint = self
            .read::<Endpoint>(ObjectKind::Endpoint, &ep_name)
            .await?;
        let key = vm_key(name);
        let mut txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), current.mod_revision))
            .delete(&key);
        if let Some(ep) = endpoint.filter(|e| e.object.kind == EndpointKind::Vm) {
            txn = txn
                .when(Compare::ModRevision(ep_key.clone(), ep.mod_revision))
                .delete(&ep_key);
        }
        self.commit_once(txn, ObjectKind::Endpoint, &ep_name)
            .await?;
        tracing::info!(vm = %name, ip = %current.object.ip, "deleted vm, released its address");
        Ok(())
    }

    /// The node `host`, which must exist and have the hypervisor role.
    async fn hypervisor(&self, vm: &str, host: &str) -> Result<Stored<Node>> {
        let node = self
            .read::<Node>(ObjectKind::Node, host)
            .await?
            .ok_or_else(|| not_found(ObjectKind::Node, host))?;
        if node.object.role != NodeRole::Hypervisor {
            let role = serde_json::to_value(node.object.role)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            invalid_if_any(
                "VmAttach",
                vm,
                vec![field_error(
                    "host",
                    format!(
                        "node {host:?} has role {role}, not hypervisor (start its seamd with --role hypervisor)"
                    ),
                )],
            )?;
        }
        Ok(node)
    }

    /// No other endpoint or VM holds the VM's address (in its segment) or its MAC (anywhere),
    /// and no pod's endpoint has the VM's endpoint name.
    fn check_vm_unique(
        &self,
        vm: &Vm,
        vms: &[Stored<Vm>],
        endpoints: &[Stored<Endpoint>],
    ) -> Result<()> {
        let ep_name = vm.endpoint_name();
        for other in vms.iter().map(|v| &v.object).filter(|o| o.name != vm.name) {
            if other.segment == vm.segment && other.ip == vm.ip {
                return Err(Error::AddressTaken {
                    endpoint: ep_name,
                    ip: vm.ip,
                    segment: vm.segment.clone(),
                    other: format!("vm {}", other.name),
                });
            }
            if other.mac == vm.mac {
                return Err(Error::MacTaken {
                    endpoint: ep_name,
                    mac: vm.mac,
                    segment: other.segment.clone(),
                    other: format!("vm {}", other.name),
                });
            }
        }
        for other in endpoints.iter().map(|e| &e.object) {
            let own = other.name == ep_name && other.kind == EndpointKind::Vm;
            if own {
                continue;
            }
            if other.name == ep_name {
                return Err(Error::Invalid(seam_model::ValidationError {
                    kind: "VmAttach",
                    name: vm.name.clone(),
                    errors: vec![field_error(
                        "name",
                        format!("endpoint {ep_name:?} already exists (a {:?})", other.kind),
                    )],
                }));
            }
            if other.segment == vm.segment && other.ip == vm.ip {
                return Err(Error::AddressTaken {
                    endpoint: ep_name,
                    ip: vm.ip,
                    segment: vm.segment.clone(),
                    other: other.name.clone(),
                });
            }
            if other.mac == vm.mac {
                return Err(Error::MacTaken {
                    endpoint: ep_name,
                    mac: vm.mac,
                    segment: other.segment.clone(),
                    other: other.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Writes the VM record and makes its endpoint match (present with the host as node while
    /// attached, absent otherwise) in one txn. `refs` are the segment and host read for it,
    /// compared so that neither changed meanwhile.
    async fn commit_vm(
        &self,
        vm: &Vm,
        current: Option<&Stored<Vm>>,
        endpoints: &[Stored<Endpoint>],
        refs: Option<(&Stored<Segment>, &Stored<Node>)>,
    ) -> Result<()> {
        let key = vm_key(&vm.name);
        let ep_name = vm.endpoint_name();
        let ep_key = object_key(ObjectKind::Endpoint, &ep_name);
        let ep_current = endpoints
            .iter()
            .find(|e| e.object.name == ep_name && e.object.kind == EndpointKind::Vm);
        let value = serde_json::to_vec(vm).map_err(|source| Error::Encode {
            kind: ObjectKind::Endpoint,
            name: ep_name.clone(),
            source,
        })?;
        let mut txn = Txn::new()
            .when(same_as_read(&key, current.map(|c| c.mod_revision)))
            .when(same_as_read(&ep_key, ep_current.map(|e| e.mod_revision)))
            .put(&key, value);
        if let Some((segment, node)) = refs {
            txn = txn
                .when(Compare::ModRevision(
                    object_key(ObjectKind::Segment, &segment.object.name),
                    segment.mod_revision,
                ))
                .when(Compare::ModRevision(
                    object_key(ObjectKind::Node, &node.object.name),
                    node.mod_revision,
                ));
        }
        if vm.attached {
            let endpoint = vm.endpoint();
            endpoint.validate()?;
            txn = txn.put(&ep_key, encode(ObjectKind::Endpoint, &ep_name, &endpoint)?);
        } else if ep_current.is_some() {
            txn = txn.delete(&ep_key);
        }
        self.commit_once(txn, ObjectKind::Endpoint, &ep_name).await
    }

    async fn read_vm(&self, name: &str) -> Result<Option<Stored<Vm>>> {
        if !seam_model::is_valid_name(name) {
            return Ok(None);
        }
        let key = vm_key(name);
        let kv = self.get_kv(&key).await?;
        kv.map(|kv| {
            Ok(Stored {
                object: crate::controller::decode(&kv.key, &kv.value)?,
                mod_revision: kv.mod_revision,
            })
        })
        .transpose()
    }

    pub(crate) async fn read_vms(&self) -> Result<Vec<Stored<Vm>>> {
        self.list_prefix(&format!("{ROOT}{VMS}")).await
    }

    /// Addresses VMs hold in `segment` (for [`Controller::claim_block`]).
    pub(crate) async fn vm_addresses(&self, segment: &str) -> Result<Vec<Ipv4Addr>> {
        Ok(self
            .read_vms()
            .await?
            .into_iter()
            .filter(|v| v.object.segment == segment)
            .map(|v| v.object.ip)
            .collect())
    }
}

/// Every (segment, address) held by another VM or endpoint.
fn held(
    vms: &[Stored<Vm>],
    endpoints: &[Stored<Endpoint>],
    except: &str,
) -> BTreeSet<(String, Ipv4Addr)> {
    vms.iter()
        .map(|v| &v.object)
        .filter(|v| v.name != except)
        .map(|v| (v.segment.clone(), v.ip))
        .chain(
            endpoints
                .iter()
                .map(|e| (e.object.segment.clone(), e.object.ip)),
        )
        .collect()
}

/// A given VM address: a host address of the segment, not its gateway, outside every node's
/// pod block.
fn check_vm_address(vm: &str, ip: Ipv4Addr, segment: &Segment, blocks: &[Block]) -> Result<()> {
    let subnet = segment.subnet;
    let problem = if !subnet.contains(&ip) {
        Some(format!(
            "{ip} is outside segment {:?} subnet {subnet}",
            segment.name
        ))
    } else if ip == segment.gateway {
        Some(format!("{ip} is the gateway of segment {:?}", segment.name))
    } else if ip == subnet.network() || ip == subnet.broadcast() {
        Some(format!("{ip} is not a host address of {subnet}"))
    } else {
        blocks.iter().find(|b| b.cidr.contains(&ip)).map(|b| {
            format!(
                "{ip} lies in block {} that node {:?} hands out to pods",
                b.cidr, b.node
            )
        })
    };
    invalid_if_any(
        "VmAttach",
        vm,
        problem.map(|m| field_error("ip", m)).into_iter().collect(),
    )
}

/// The highest host address of the segment that is not the gateway, in no block and not held.
fn free_address(
    segment: &Segment,
    blocks: &[Block],
    held: &BTreeSet<(String, Ipv4Addr)>,
) -> Option<Ipv4Addr> {
    let first = u32::from(segment.subnet.network()).checked_add(1)?;
    let last = u32::from(segment.subnet.broadcast()).checked_sub(1)?;
    (first..=last).rev().map(Ipv4Addr::from).find(|ip| {
        *ip != segment.gateway
            && !blocks.iter().any(|b| b.cidr.contains(ip))
            && !held.contains(&(segment.name.clone(), *ip))
    })
}
