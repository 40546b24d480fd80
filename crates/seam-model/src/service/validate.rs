//! `validate()` of the Service objects: every problem with its field path, in Kubernetes'
//! spelling (`spec.ports[1].targetPort`), following Kubernetes' own checks (`ValidateService`,
//! `ValidateEndpointSlice`) where Seam keeps the field, stricter where Seam refuses what it does
//! not implement.
//!
//! What is left to the controller: ranges that are its flags (the service CIDR, the NodePort
//! range), collisions with other objects (segments, nodes, endpoints, other Services and pools).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::{
    AddressPool, ClusterIp, EndpointSlice, Service, ServiceType, SessionAffinity, TargetPort,
    TrafficPolicy, ADDRESS_POOL_ANNOTATION, MAX_AFFINITY_TIMEOUT_SECONDS, SERVICE_NAME_LABEL,
};
use crate::bounds::{
    check_encoded_size, check_record_size, shown, MAX_EXTERNAL_IPS, MAX_POOL_PREFIXES,
    MAX_SERVICE_PORTS, MAX_SLICE_ADDRESSES, MAX_SLICE_BYTES, MAX_SLICE_ENDPOINTS,
};
use crate::error::{Problems, ValidationError};
use crate::objects::{
    check_labels, check_name, is_valid_label_key, is_valid_label_value, is_valid_port_name,
};
use crate::prefix::overlaps;

/// True when `name` is a DNS-1123 label (`IsDNS1123Label`): 1-63 of `a-z 0-9 -`, alphanumeric
/// at both ends. Kubernetes names Service ports, EndpointSlice ports and hostnames so.
pub fn is_dns_label(name: &str) -> bool {
    !name.contains('.') && crate::names::is_dns_name(name, 63)
}

/// True when `name` may name a Service: a DNS-1035 label (`IsDNS1035Label`), a DNS label that
/// starts with a letter (the Service's name becomes a DNS name and environment variables).
pub fn is_valid_service_name(name: &str) -> bool {
    is_dns_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase())
}

/// Why `ip` cannot be a Service, external or pool address, if it cannot (Kubernetes'
/// `ValidateNonSpecialIP`, plus the reserved and broadcast block no host can use).
pub fn special_address(ip: Ipv4Addr) -> Option<&'static str> {
    SPECIAL
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, why)| *why)
}

/// Why `net` cannot be a pool prefix, if it overlaps a special block.
fn special_prefix(net: Ipv4Net) -> Option<&'static str> {
    SPECIAL
        .iter()
        .find(|(special, _)| overlaps(*special, net))
        .map(|(_, why)| *why)
}

const SPECIAL: [(Ipv4Net, &str); 5] = [
    (net(0, 0, 0, 0, 8), "in 0.0.0.0/8 (this network)"),
    (net(127, 0, 0, 0, 8), "a loopback address (127.0.0.0/8)"),
    (
        net(169, 254, 0, 0, 16),
        "a link-local address (169.254.0.0/16)",
    ),
    (net(224, 0, 0, 0, 4), "a multicast address (224.0.0.0/4)"),
    (
        net(240, 0, 0, 0, 4),
        "a reserved or broadcast address (240.0.0.0/4)",
    ),
];

const fn net(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    // Evaluated at compile time: the table's lengths are all at most 32.
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

fn check_address(p: &mut Problems, path: &str, ip: Ipv4Addr) {
    if let Some(why) = special_address(ip) {
        p.add(path, format!("{ip} is {why}"));
    }
}

fn check_port_number(p: &mut Problems, path: &str, port: u16) {
    if port == 0 {
        p.add(path, "must be 1..=65535");
    }
}

fn check_dns_label(p: &mut Problems, path: &str, name: &str) {
    if !is_dns_label(name) {
        p.add(
            path,
            format!(
                "{} is not a valid DNS label (1-63 of a-z, 0-9, '-', alphanumeric at both ends)",
                shown(name)
            ),
        );
    }
}

fn check_service_name(p: &mut Problems, path: &str, name: &str) {
    if !is_valid_service_name(name) {
        p.add(
            path,
            format!(
                "{} is not a valid Service name (1-63 of a-z, 0-9, '-', starting with a letter, alphanumeric at the end)",
                shown(name)
            ),
        );
    }
}

/// `appProtocol` (Kubernetes: label key syntax, an IANA name or a prefixed one such as
/// `kubernetes.io/h2c`).
fn check_app_protocol(p: &mut Problems, path: &str, app_protocol: Option<&str>) {
    if let Some(a) = app_protocol {
        if !is_valid_label_key(a) {
            p.add(
                path,
                format!(
                    "{} is not a valid application protocol (an IANA service name or a prefixed name such as kubernetes.io/h2c)",
                    shown(a)
                ),
            );
        }
    }
}

fn type_name(t: ServiceType) -> &'static str {
    match t {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    }
}

impl Service {
    /// Whether the Service is headless (`clusterIP: None`): nothing to translate.
    pub fn is_headless(&self) -> bool {
        self.spec.cluster_ip == ClusterIp::Headless
    }

    /// The pool named by [`ADDRESS_POOL_ANNOTATION`], if any.
    pub fn address_pool(&self) -> Option<&str> {
        self.annotations
            .get(ADDRESS_POOL_ANNOTATION)
            .map(String::as_str)
    }

    /// Checks every field and reports all problems at once. Paths are Kubernetes' (`name` and
    /// `namespace` for `metadata.name` and `metadata.namespace`, `spec.ports[0].port`, …).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        check_service_name(&mut p, "name", &self.name);
        check_name(&mut p, "namespace", &self.namespace);
        check_labels(&mut p, "labels", &self.labels);
        for (k, v) in &self.annotations {
            if k == ADDRESS_POOL_ANNOTATION {
                check_name(&mut p, &format!("annotations.{k}"), v);
            } else {
                p.add(
                    &format!("annotations.{}", shown(k)),
                    format!("Seam keeps only the annotation {ADDRESS_POOL_ANNOTATION}"),
                );
            }
        }
        self.check_spec(&mut p);
        check_record_size(&mut p, "Service", self);
        p.finish("Service", &self.name)
    }

    fn check_spec(&self, p: &mut Problems) {
        let spec = &self.spec;
        let kind = spec.service_type;
        let has_node_ports = kind != ServiceType::ClusterIP;

        match &spec.selector {
            Some(s) if s.is_empty() => p.add(
                "spec.selector",
                "an empty selector selects nothing here: leave the field out for a Service whose endpoints are given by EndpointSlices",
            ),
            Some(s) => check_labels(p, "spec.selector", s),
            None => {}
        }

        match spec.cluster_ip {
            ClusterIp::Headless if has_node_ports => p.add(
                "spec.clusterIP",
                format!(
                    "may not be \"None\" (headless) for a {} Service",
                    type_name(kind)
                ),
            ),
            ClusterIp::Address(ip) => check_address(p, "spec.clusterIP", ip),
            _ => {}
        }

        self.check_ports(p);

        if spec.external_ips.len() > MAX_EXTERNAL_IPS {
            p.add(
                "spec.externalIPs",
                format!(
                    "{} addresses, over the bound of {MAX_EXTERNAL_IPS} (MAX_EXTERNAL_IPS)",
                    spec.external_ips.len()
                ),
            );
        } else {
            for (i, ip) in spec.external_ips.iter().enumerate() {
                let at = format!("spec.externalIPs[{i}]");
                check_address(p, &at, *ip);
                if spec.external_ips[..i].contains(ip) {
                    p.add(&at, format!("{ip} is listed twice"));
                }
            }
        }

        if let SessionAffinity::ClientIp { timeout_seconds } = spec.session_affinity {
            if !(1..=MAX_AFFINITY_TIMEOUT_SECONDS).contains(&timeout_seconds) {
                p.add(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    format!("{timeout_seconds} is not in 1..={MAX_AFFINITY_TIMEOUT_SECONDS}"),
                );
            }
        }

        // Kubernetes: only a Service reachable from outside has an external policy (a NodePort,
        // a LoadBalancer, or any Service with external IPs).
        if spec.external_traffic_policy == TrafficPolicy::Local
            && !has_node_ports
            && spec.external_ips.is_empty()
        {
            p.add(
                "spec.externalTrafficPolicy",
                "Local applies only to NodePort and LoadBalancer Services or to Services with externalIPs",
            );
        }

        if kind != ServiceType::LoadBalancer {
            if spec.load_balancer_ip.is_some() {
                p.add(
                    "spec.loadBalancerIP",
                    "may only be used when type is LoadBalancer",
                );
            }
            if spec.allocate_load_balancer_node_ports.is_some() {
                p.add(
                    "spec.allocateLoadBalancerNodePorts",
                    "may only be used when type is LoadBalancer",
                );
            }
        }
        if let Some(ip) = spec.load_balancer_ip {
            check_address(p, "spec.loadBalancerIP", ip);
        }
    }

    fn check_ports(&self, p: &mut Problems) {
        let spec = &self.spec;
        let ports = &spec.ports;
        if ports.is_empty() && spec.cluster_ip != ClusterIp::Headless {
            p.add("spec.ports", "at least one port is required");
        }
        if ports.len() > MAX_SERVICE_PORTS {
            p.add(
                "spec.ports",
                format!(
                    "{} ports, over the bound of {MAX_SERVICE_PORTS} (MAX_SERVICE_PORTS)",
                    ports.len()
                ),
            );
            return;
        }
        let several = ports.len() > 1;
        for (i, port) in ports.iter().enumerate() {
            let at = |field: &str| format!("spec.ports[{i}].{field}");
            match &port.name {
                Some(name) => {
                    check_dns_label(p, &at("name"), name);
                    if ports[..i].iter().any(|q| q.name.as_ref() == Some(name)) {
                        p.add(&at("name"), format!("{} is named twice", shown(name)));
                    }
                }
                None if several => p.add(
                    &at("name"),
                    "required when the Service has more than one port",
                ),
                None => {}
            }
            check_port_number(p, &at("port"), port.port);
            if port.port != 0
                && ports[..i]
                    .iter()
                    .any(|q| q.port == port.port && q.protocol == port.protocol)
            {
                p.add(
                    &at("port"),
                    format!("{}/{} is listed twice", port.port, port.protocol.as_str()),
                );
            }
            match &port.target_port {
                Some(TargetPort::Number(n)) => check_port_number(p, &at("targetPort"), *n),
                Some(TargetPort::Name(name)) if !is_valid_port_name(name) => p.add(
                    &at("targetPort"),
                    format!("{} is neither a port number nor a valid port name (1-15 of a-z, 0-9, '-', at least one letter, no '-' at the ends, no '--')", shown(name)),
                ),
                _ => {}
            }
            check_app_protocol(p, &at("appProtocol"), port.app_protocol.as_deref());
            if let Some(node_port) = port.node_port {
                if spec.service_type == ServiceType::ClusterIP {
                    p.add(&at("nodePort"), "may not be used when type is ClusterIP");
                } else {
                    // The range is the controller's flag (`--node-port-range`); it checks it.
                    check_port_number(p, &at("nodePort"), node_port);
                    if node_port != 0
                        && ports[..i]
                            .iter()
                            .any(|q| q.node_port == Some(node_port) && q.protocol == port.protocol)
                    {
                        p.add(
                            &at("nodePort"),
                            format!("{node_port}/{} is listed twice", port.protocol.as_str()),
                        );
                    }
                }
            }
        }
    }
}

impl EndpointSlice {
    /// Checks every field and reports all problems at once. Paths: `name`, `namespace`,
    /// `service` (the `kubernetes.io/service-name` label), `endpoints[0].addresses[0]`, …
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        if !crate::names::is_dns_name(&self.name, 253) {
            p.add(
                "name",
                format!(
                    "{} is not a valid name (1-253 of a-z, 0-9, '-', '.', alphanumeric at both ends)",
                    shown(&self.name)
                ),
            );
        }
        check_name(&mut p, "namespace", &self.namespace);
        check_service_name(&mut p, "service", &self.service);
        check_labels(&mut p, "labels", &self.labels);
        if let Some(label) = self.labels.get(SERVICE_NAME_LABEL) {
            if *label != self.service {
                p.add(
                    &format!("labels.{SERVICE_NAME_LABEL}"),
                    format!(
                        "{} names another Service than `service` ({})",
                        shown(label),
                        shown(&self.service)
                    ),
                );
            }
        }
        self.check_endpoints(&mut p);
        self.check_ports(&mut p);
        check_encoded_size(
            &mut p,
            "EndpointSlice",
            self,
            MAX_SLICE_BYTES,
            "MAX_SLICE_BYTES",
        );
        p.finish("EndpointSlice", &self.name)
    }

    fn check_endpoints(&self, p: &mut Problems) {
        if self.endpoints.len() > MAX_SLICE_ENDPOINTS {
            p.add(
                "endpoints",
                format!(
                    "{} endpoints, over the bound of {MAX_SLICE_ENDPOINTS} (MAX_SLICE_ENDPOINTS, as Kubernetes)",
                    self.endpoints.len()
                ),
            );
            return;
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let at = |field: &str| format!("endpoints[{i}].{field}");
            if e.addresses.is_empty() {
                p.add(&at("addresses"), "at least one address is required");
            } else if e.addresses.len() > MAX_SLICE_ADDRESSES {
                p.add(
                    &at("addresses"),
                    format!(
                        "{} addresses, over the bound of {MAX_SLICE_ADDRESSES} (MAX_SLICE_ADDRESSES, as Kubernetes)",
                        e.addresses.len()
                    ),
                );
            } else {
                for (j, ip) in e.addresses.iter().enumerate() {
                    check_address(p, &at(&format!("addresses[{j}]")), *ip);
                }
            }
            if let Some(node) = &e.node_name {
                check_name(p, &at("nodeName"), node);
            }
            if let Some(h) = &e.hostname {
                check_dns_label(p, &at("hostname"), h);
            }
            if let Some(z) = &e.zone {
                if !is_valid_label_value(z) {
                    p.add(
                        &at("zone"),
                        format!("{} is not a valid label value (0-63 of a-z A-Z 0-9 - _ ., alphanumeric at both ends)", shown(z)),
                    );
                }
            }
        }
    }

    fn check_ports(&self, p: &mut Problems) {
        if self.ports.len() > MAX_SERVICE_PORTS {
            p.add(
                "ports",
                format!(
                    "{} ports, over the bound of {MAX_SERVICE_PORTS} (MAX_SERVICE_PORTS)",
                    self.ports.len()
                ),
            );
            return;
        }
        for (i, port) in self.ports.iter().enumerate() {
            let at = |field: &str| format!("ports[{i}].{field}");
            if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                check_dns_label(p, &at("name"), name);
            }
            // Kubernetes: a name may appear once per slice (unnamed counts as a name).
            let name = port.name.as_deref().unwrap_or("");
            if self.ports[..i]
                .iter()
                .any(|q| q.name.as_deref().unwrap_or("") == name)
            {
                p.add(&at("name"), format!("{} is named twice", shown(name)));
            }
            check_port_number(p, &at("port"), port.port);
            check_app_protocol(p, &at("appProtocol"), port.app_protocol.as_deref());
        }
    }
}

impl AddressPool {
    /// Checks every field and reports all problems at once. Paths: `name`, `addresses[0]`.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        check_name(&mut p, "name", &self.name);
        if self.addresses.is_empty() {
            p.add("addresses", "at least one prefix is required");
        }
        if self.addresses.len() > MAX_POOL_PREFIXES {
            p.add(
                "addresses",
                format!(
                    "{} prefixes, over the bound of {MAX_POOL_PREFIXES} (MAX_POOL_PREFIXES)",
                    self.addresses.len()
                ),
            );
            return p.finish("AddressPool", &self.name);
        }
        for (i, prefix) in self.addresses.iter().enumerate() {
            let at = format!("addresses[{i}]");
            if prefix.trunc() != *prefix {
                p.add(
                    &at,
                    format!(
                        "{prefix} has host bits set (the prefix is {})",
                        prefix.trunc()
                    ),
                );
            }
            if let Some(why) = special_prefix(*prefix) {
                p.add(&at, format!("{prefix} holds addresses that are {why}"));
            }
            if let Some(j) = self.addresses[..i]
                .iter()
                .position(|q| overlaps(*q, *prefix))
            {
                p.add(
                    &at,
                    format!("{prefix} overlaps addresses[{j}] ({})", self.addresses[j]),
                );
            }
        }
        p.finish("AddressPool", &self.name)
    }

    /// Whether `ip` is one of the pool's addresses.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.addresses.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests;
