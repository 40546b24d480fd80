//! CNI result objects, and the ADD result built from the agent's [`AttachResult`].
//!
//! The same types read `prevResult` (written by another plug-in, so unknown attributes are
//! kept in `other` and written back unchanged) and write seam-cni's own result.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use seam_model::agent_rpc::AttachResult;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::version::CniVersion;

/// `0.0.0.0/0`, checked at compile time.
const DEFAULT_ROUTE: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 0);

/// A CNI result (`interfaces`, `ips`, `routes`, `dns`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// The result's version; may be absent in a `prevResult`.
    #[serde(default)]
    pub cni_version: String,
    /// Interfaces created, host side and sandbox side.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes installed in the sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings for the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// Attributes of other plug-ins' results, kept so chaining does not drop them.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// One entry of `interfaces`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// MTU (written from 1.1.0 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Network namespace path for sandbox interfaces; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Other attributes (`socketPath`, `pciID`, ...), kept as given.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// One entry of `ips`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfig {
    /// Address with prefix length.
    pub address: IpNet,
    /// Default gateway of the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// `"4"` or `"6"`; present before 1.0.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Other attributes, kept as given.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// One entry of `routes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; absent means the interface's default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// Other attributes (`mtu`, `priority`, `table`, ...), kept as given.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// DNS settings, as in the network config's `dns` and the result's `dns`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dns {
    /// Name server addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// Builds the ADD result in `version`.
///
/// With `prev` (a chained `prevResult`), seam-cni's interfaces, address and route are appended
/// to it, and the new address's `interface` index points past the interfaces already there.
/// The config's `dns` replaces `prev`'s when it sets anything.
pub fn add_result(
    version: CniVersion,
    attached: &AttachResult,
    dns: Option<&Dns>,
    prev: Option<&CniResult>,
) -> CniResult {
    let mut result = prev.cloned().unwrap_or_default();
    let base = result.interfaces.len();
    result.interfaces.push(Interface {
        name: attached.host_ifname.clone(),
        mac: Some(attached.host_mac.to_string()),
        ..Interface::default()
    });
    result.interfaces.push(Interface {
        name: attached.container_ifname.clone(),
        mac: Some(attached.container_mac.to_string()),
        // Interface `mtu` entered the result in 1.1.0; older readers do not expect it.
        mtu: (version >= CniVersion::V1_1_0).then_some(attached.mtu),
        sandbox: Some(attached.sandbox.clone()),
        other: BTreeMap::new(),
    });
    result.ips.push(IpConfig {
        address: IpNet::V4(attached.address),
        gateway: Some(IpAddr::V4(attached.gateway)),
        interface: Some(base + 1),
        version: None,
        other: BTreeMap::new(),
    });
    result.routes.push(Route {
        dst: IpNet::V4(DEFAULT_ROUTE),
        gw: Some(IpAddr::V4(attached.gateway)),
        other: BTreeMap::new(),
    });
    if let Some(dns) = dns.filter(|d| !d.is_empty()) {
        result.dns = Some(dns.clone());
    }
    set_version(&mut result, version);
    result
}

/// Stamps `version` on a result and adds or removes the per-address `version` field, which
/// results before 1.0.0 require and 1.0.0 removed.
pub fn set_version(result: &mut CniResult, version: CniVersion) {
    result.cni_version = version.as_str().to_string();
    for ip in &mut result.ips {
        ip.version = (version < CniVersion::V1_0_0).then(|| {
            match ip.address {
                IpNet::V4(_) => "4",
                IpNet::V6(_) => "6",
            }
            .to_string()
        });
    }
}

impl CniResult {
    /// Reads a result from a JSON value (as found in `prevResult`).
    pub fn deserialize_value(v: &Value) -> serde_json::Result<CniResult> {
        serde::Deserialize::deserialize(v)
    }
}

#[cfg(test)]
mod tests;
