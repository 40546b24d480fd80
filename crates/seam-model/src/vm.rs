//! Virtual machines: the controller's record of a VM (its address lease on a segment, its MAC,
//! its hypervisor host) and the requests of `seam vm attach|move`.
//!
//! A [`Vm`] lives as long as the VM is defined: its address and MAC stay the same across stop
//! and start ([`Vm::attached`] false/true) and across moves between hypervisor hosts; deleting
//! the VM releases them. While attached, the controller also holds the VM's [`Endpoint`] (kind
//! [`EndpointKind::Vm`], node = the host), which every agent follows like a pod's.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::bounds::check_record_size;
use crate::error::{Problems, ValidationError};
use crate::mac::MacAddr;
use crate::objects::{
    check_labels, check_name, check_ports, check_segment_name, ContainerPort, Endpoint,
    EndpointKind,
};

/// Prefix of the host-side interface of a VM (its tap, or the host end of a lab VM's veth).
pub const VM_PORT_PREFIX: &str = "tv";

/// The host-side interface name of VM `name` on its hypervisor host: `tv` + 12 hex digits of
/// FNV-1a of the name. The hypervisor creates the tap (QEMU `-netdev tap,ifname=…`) or veth
/// with this name, and the host's agent plugs it into the segment's bridge; the name is derived
/// from the VM's identity so that a restarted agent recognizes its VMs' ports, and a VM that
/// moves has the same port name on its new host.
pub fn vm_port_name(name: &str) -> String {
    let hash = crate::fnv::fnv1a(name);
    format!("{VM_PORT_PREFIX}{:012x}", hash & 0xffff_ffff_ffff)
}

/// True for a VM port name ([`vm_port_name`]).
pub fn is_vm_port(name: &str) -> bool {
    name.strip_prefix(VM_PORT_PREFIX)
        .is_some_and(|rest| rest.len() == 12 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A VM as the controller records it (`GET /v1/vms/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Vm {
    /// Unique name (a DNS label).
    pub name: String,
    /// Kubernetes-style namespace its endpoint belongs to (for namespace selectors).
    pub namespace: String,
    /// The segment it is attached to.
    pub segment: String,
    /// Its leased address on the segment.
    pub ip: Ipv4Addr,
    /// Its interface MAC (given, or derived from the address as for pods).
    pub mac: MacAddr,
    /// Labels for group selectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Declared service ports, for policies that name a port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// The hypervisor host it runs on (or last ran on).
    pub host: String,
    /// True while it runs (its endpoint exists); false after `seam vm detach` (address and MAC
    /// stay leased).
    pub attached: bool,
    /// The host-side interface name ([`vm_port_name`]).
    pub port: String,
}

impl Vm {
    /// The name of its endpoint: `<namespace>/<name>`, as for pods.
    pub fn endpoint_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Its endpoint on its host.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            name: self.endpoint_name(),
            kind: EndpointKind::Vm,
            namespace: self.namespace.clone(),
            segment: self.segment.clone(),
            node: self.host.clone(),
            ip: self.ip,
            mac: self.mac,
            labels: self.labels.clone(),
            container_id: None,
            ifname: None,
            ports: self.ports.clone(),
            conditions: None,
        }
    }

    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        check_name(&mut p, "name", &self.name);
        check_name(&mut p, "namespace", &self.namespace);
        check_segment_name(&mut p, "segment", &self.segment);
        check_name(&mut p, "host", &self.host);
        if !self.mac.is_unicast() {
            p.add("mac", format!("{} is not a unicast MAC", self.mac));
        }
        check_labels(&mut p, "labels", &self.labels);
        check_ports(&mut p, "ports", &self.ports);
        if self.port != vm_port_name(&self.name) {
            p.add(
                "port",
                format!(
                    "must be {:?} (derived from the name)",
                    vm_port_name(&self.name)
                ),
            );
        }
        check_record_size(&mut p, "VM", self);
        p.finish("Vm", &self.name)
    }
}

/// `POST /v1/vms/{name}/attach`: defines the VM if it is new (leasing an address and MAC) and
/// attaches it on `host`; for a VM that exists (stopped, or running) it starts it again with
/// the same address and MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmAttach {
    /// The VM's name.
    pub name: String,
    /// The segment.
    pub segment: String,
    /// The hypervisor host.
    pub host: String,
    /// The namespace; default: the segment's namespace, else `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A fixed address; default: the controller picks a free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// A fixed MAC; default: derived from the address (`0a:58:` + the IPv4 octets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// Labels; `None` keeps an existing VM's labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Declared service ports; `None` keeps an existing VM's ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ContainerPort>>,
}

impl VmAttach {
    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        check_name(&mut p, "name", &self.name);
        check_segment_name(&mut p, "segment", &self.segment);
        check_name(&mut p, "host", &self.host);
        if let Some(ns) = &self.namespace {
            check_name(&mut p, "namespace", ns);
        }
        if let Some(mac) = self.mac {
            if !mac.is_unicast() {
                p.add("mac", format!("{mac} is not a unicast MAC"));
            }
            if mac.0 == [0; 6] {
                p.add("mac", "00:00:00:00:00:00 is not a usable MAC");
            }
        }
        if let Some(labels) = &self.labels {
            check_labels(&mut p, "labels", labels);
        }
        if let Some(ports) = &self.ports {
            check_ports(&mut p, "ports", ports);
        }
        check_record_size(&mut p, "VM", self);
        p.finish("VmAttach", &self.name)
    }
}

/// `POST /v1/vms/{name}/move`: the VM now runs on `host` (same address, same MAC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmMove {
    /// The new hypervisor host.
    pub host: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_fit_linux_and_are_recognized() {
        let p = vm_port_name("web-vm-1");
        assert!(p.len() <= 15 && is_vm_port(&p), "{p}");
        // Pinned: the hypervisor and a restarted agent name the port alike.
        assert_eq!(p, "tv1d85dc522ebf");
        assert_ne!(p, vm_port_name("web-vm-2"));
        assert!(!is_vm_port("sv0123456789ab"));
        assert!(!is_vm_port("tvxyz"));
    }

    #[test]
    fn attach_requests_are_checked() {
        let bad: VmAttach = serde_json::from_str(
            r#"{"name":"Bad_Name","segment":"s","host":"h","mac":"01:00:5e:00:00:01","labels":{"a b":"c"}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let err = bad
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        for field in ["name", "mac", "labels.a b"] {
            assert!(err.contains(field), "{err}");
        }
        assert!(
            serde_json::from_str::<VmAttach>(r#"{"name":"a","segment":"s","host":"h","x":1}"#)
                .is_err()
        );
    }
}
