//! External endpoints (bare-metal servers and existing services reached through a gateway node)
//! and the transit that carries traffic from every node to its gateway.
//!
//! An external endpoint is stored as ordinary [`Endpoint`] records of kind
//! [`EndpointKind::External`], one per address, so groups, contracts and `seam explain` see it
//! like any other endpoint: the first address is `<namespace>/<name>`, further addresses are
//! `<namespace>/<name>/a2`, `…/a3` (the convention of secondary interfaces). Their `segment` is
//! [`EXTERNAL_SEGMENT`] (they are on no segment), their `node` is the gateway node they are
//! reached through, their MAC is unused (derived from the address).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::bounds::{check_record_size, MAX_EXTERNAL_ADDRESSES};
use crate::error::{Problems, ValidationError};
use crate::mac::{endpoint_mac, MacAddr};
use crate::objects::{check_labels, is_valid_name, Endpoint, EndpointKind, MAX_VNI};

/// The `segment` of every external endpoint record: external endpoints are on no segment. The
/// controller refuses a real segment of this name.
pub const EXTERNAL_SEGMENT: &str = "external";

/// The namespace external endpoints are put in when none is given.
pub const EXTERNAL_NAMESPACE: &str = "external";

/// The VNI of the transit VXLAN device (`seam-xt`) that carries traffic for external endpoints
/// from every node to their gateway node. Reserved: the controller refuses a segment with it.
pub const TRANSIT_VNI: u32 = MAX_VNI;

/// The MAC of a node's transit device, derived from its underlay address (unique per node).
pub fn transit_mac(underlay_ip: Ipv4Addr) -> MacAddr {
    endpoint_mac(underlay_ip)
}

/// `POST /v1/externals`: register (or replace) an external endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct External {
    /// Name, unique in its namespace.
    pub name: String,
    /// Kubernetes-style namespace (for group selectors); [`EXTERNAL_NAMESPACE`] by default.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The gateway node (role `gateway`) it is reached through.
    pub gateway: String,
    /// Its addresses (at least one), outside every segment and the controller's pool.
    pub addresses: Vec<Ipv4Addr>,
    /// Labels for group selectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    EXTERNAL_NAMESPACE.to_string()
}

impl External {
    /// The store name of the record holding address number `i` (0-based).
    pub fn record_name(&self, i: usize) -> String {
        if i == 0 {
            format!("{}/{}", self.namespace, self.name)
        } else {
            format!("{}/{}/a{}", self.namespace, self.name, i + 1)
        }
    }

    /// True when `endpoint_name` is one of this external's records (`ns/name` or `ns/name/aN`).
    pub fn owns_record(namespace: &str, name: &str, endpoint_name: &str) -> bool {
        let base = format!("{namespace}/{name}");
        endpoint_name == base
            || endpoint_name
                .strip_prefix(&base)
                .and_then(|rest| rest.strip_prefix("/a"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }

    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p = Problems::default();
        for (path, value) in [
            ("name", &self.name),
            ("namespace", &self.namespace),
            ("gateway", &self.gateway),
        ] {
            if !is_valid_name(value) {
                p.add(
                    path,
                    format!("{value:?} is not a valid name (1-63 of a-z, 0-9, '-', '.', alphanumeric at both ends)"),
                );
            }
        }
        if self.addresses.is_empty() {
            p.add("addresses", "at least one address is required");
        }
        if self.addresses.len() > MAX_EXTERNAL_ADDRESSES {
            p.add(
                "addresses",
                format!(
                    "{} addresses, over the bound of {MAX_EXTERNAL_ADDRESSES} (MAX_EXTERNAL_ADDRESSES: each is a record every node holds)",
                    self.addresses.len()
                ),
            );
        }
        // Over the bound, the quadratic duplicate check below is not worth running.
        let checked = if self.addresses.len() > MAX_EXTERNAL_ADDRESSES {
            &[][..]
        } else {
            &self.addresses[..]
        };
        for (i, ip) in checked.iter().enumerate() {
            if ip.is_unspecified()
                || ip.is_loopback()
                || ip.is_multicast()
                || ip.is_broadcast()
                || ip.is_link_local()
            {
                p.add(
                    &format!("addresses[{i}]"),
                    format!("{ip} cannot be an endpoint address"),
                );
            }
            if self.addresses[..i].contains(ip) {
                p.add(&format!("addresses[{i}]"), format!("{ip} is listed twice"));
            }
        }
        check_labels(&mut p, "labels", &self.labels);
        check_record_size(&mut p, "external endpoint", self);
        p.finish("External", &self.name)
    }

    /// The endpoint records that represent it, one per address.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.addresses
            .iter()
            .enumerate()
            .map(|(i, ip)| Endpoint {
                name: self.record_name(i),
                kind: EndpointKind::External,
                namespace: self.namespace.clone(),
                segment: EXTERNAL_SEGMENT.to_string(),
                node: self.gateway.clone(),
                ip: *ip,
                mac: endpoint_mac(*ip),
                labels: self.labels.clone(),
                container_id: None,
                ifname: None,
                ports: Vec::new(),
                conditions: None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext() -> External {
        External {
            name: "bm1".into(),
            namespace: EXTERNAL_NAMESPACE.into(),
            gateway: "gw1".into(),
            addresses: vec![
                Ipv4Addr::new(203, 0, 113, 10),
                Ipv4Addr::new(203, 0, 113, 11),
            ],
            labels: [("role".to_string(), "client".to_string())].into(),
        }
    }

    #[test]
    fn one_record_per_address_on_the_gateway() {
        let eps = ext().endpoints();
        let names: Vec<_> = eps.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["external/bm1", "external/bm1/a2"]);
        assert!(eps.iter().all(|e| e.kind == EndpointKind::External
            && e.node == "gw1"
            && e.segment == EXTERNAL_SEGMENT
            && e.validate().is_ok()));
        assert!(External::owns_record("external", "bm1", "external/bm1/a2"));
        assert!(!External::owns_record("external", "bm1", "external/bm10"));
    }

    #[test]
    fn bad_input_is_reported_with_paths() {
        let mut e = ext();
        e.addresses = vec![Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 1)];
        e.gateway = "GW".into();
        e.labels.insert("bad key!".into(), "x".into());
        let err = e.validate().unwrap_err().to_string();
        for want in [
            "gateway",
            "addresses[0]",
            "addresses[1]: 127.0.0.1 is listed twice",
            "labels.bad key!",
        ] {
            assert!(err.contains(want), "{err} lacks {want}");
        }
        let mut e = ext();
        e.addresses.clear();
        assert!(e
            .validate()
            .unwrap_err()
            .to_string()
            .contains("at least one address"));
    }

    #[test]
    fn namespace_defaults_when_absent() {
        let e: External =
            serde_json::from_str(r#"{"name":"bm1","gateway":"gw1","addresses":["203.0.113.10"]}"#)
                .unwrap();
        assert_eq!(e.namespace, EXTERNAL_NAMESPACE);
        assert!(serde_json::from_str::<External>(
            r#"{"name":"x","gateway":"g","addresses":[],"typo":1}"#
        )
        .is_err());
    }
}
