//! The network config on stdin, decoded field by field.
//!
//! Decoding is by hand over a `serde_json::Value` rather than `#[derive(Deserialize)]`: every
//! problem is reported at once with its field path and the expected type, and unknown fields
//! are rejected by name (a misspelt `segmnet` would otherwise be silently ignored).

use std::collections::BTreeMap;
use std::path::PathBuf;

use seam_model::agent_rpc::AttachmentKey;
use seam_model::{is_valid_port_name, ContainerPort, PortProtocol};
use serde_json::{Map, Value};

use crate::env::{check_container_id, check_ifname};
use crate::error::{Error, FieldError, FieldProblem, Result};
use crate::result::{CniResult, Dns};
use crate::version::CniVersion;

/// Where the agent listens unless the config says otherwise.
pub const DEFAULT_AGENT_SOCKET: &str = "/run/seam/seamd.sock";
/// The config's `type` must be this.
pub const PLUGIN_TYPE: &str = "seam-cni";
/// Namespace used when `CNI_ARGS` has no `K8S_POD_NAMESPACE` and the config sets none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The GC config key listing attachments the runtime still uses.
pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";

/// A validated seam-cni network config.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion`: the version results and errors are written in.
    pub cni_version: CniVersion,
    /// `name`: the network name, sent to the agent with every call.
    pub name: String,
    /// `agentSocket`: the agent's Unix socket.
    pub agent_socket: PathBuf,
    /// `segment`: pins every attachment of this network to one segment.
    pub segment: Option<String>,
    /// `defaultNamespace`: namespace when the runtime passes no `K8S_POD_NAMESPACE`.
    pub default_namespace: String,
    /// `dns`: copied into the ADD result.
    pub dns: Option<Dns>,
    /// `labels`: published with every endpoint of this network.
    pub labels: BTreeMap<String, String>,
    /// `ports`: named container ports published with every endpoint of this network.
    pub ports: Vec<ContainerPort>,
    /// `capabilities`: accepted; seam-cni implements none, so `runtimeConfig` is ignored.
    pub capabilities: BTreeMap<String, bool>,
    /// `prevResult`: the result of the previous plug-in in a chain (and ADD's, on CHECK/DEL).
    pub prev_result: Option<CniResult>,
    /// `cni.dev/valid-attachments`: GC's list of attachments to keep.
    pub valid_attachments: Option<Vec<AttachmentKey>>,
    /// `disableCheck`: CHECK succeeds without asking the agent.
    pub disable_check: bool,
    /// `disableGC`: GC succeeds without asking the agent.
    pub disable_gc: bool,
}

/// Decodes stdin as JSON (code 6 on failure).
pub fn decode(bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(Error::Decode)
}

/// The config's `cniVersion` when it is one this plug-in speaks; errors are written in it.
pub fn requested_version(config: &Value) -> Option<CniVersion> {
    config
        .get("cniVersion")
        .and_then(Value::as_str)
        .and_then(CniVersion::parse)
}

impl NetConf {
    /// Decodes and validates a config from stdin bytes.
    pub fn parse(bytes: &[u8]) -> Result<NetConf> {
        NetConf::from_value(&decode(bytes)?)
    }

    /// Validates a decoded config, reporting every field problem at once (code 7), or an
    /// unsupported `cniVersion` alone (code 1).
    pub fn from_value(config: &Value) -> Result<NetConf> {
        let Some(obj) = config.as_object() else {
            return Err(Error::InvalidConfig(vec![FieldError::new(
                "",
                FieldProblem::WrongType {
                    expected: "a JSON object",
                    found: type_name(config),
                },
            )]));
        };
        let mut p = Problems::default();

        // The version decides how everything else is answered, so an unsupported one is
        // reported alone with the list the runtime can pick from.
        let cni_version = match obj.get("cniVersion") {
            Some(Value::String(s)) => match CniVersion::parse(s) {
                Some(v) => Some(v),
                None => {
                    return Err(Error::IncompatibleVersion {
                        requested: s.clone(),
                    })
                }
            },
            Some(other) => {
                p.wrong_type("cniVersion", "a string", other);
                None
            }
            None => {
                p.push("cniVersion", FieldProblem::Missing);
                None
            }
        };

        let mut conf = NetConf {
            cni_version: cni_version.unwrap_or(CniVersion::LATEST),
            name: String::new(),
            agent_socket: PathBuf::from(DEFAULT_AGENT_SOCKET),
            segment: None,
            default_namespace: DEFAULT_NAMESPACE.to_string(),
            dns: None,
            labels: BTreeMap::new(),
            ports: Vec::new(),
            capabilities: BTreeMap::new(),
            prev_result: None,
            valid_attachments: None,
            disable_check: false,
            disable_gc: false,
        };

        match obj.get("name") {
            None => p.push("name", FieldProblem::Missing),
            Some(v) => {
                if let Some(name) = p.string("name", v) {
                    if valid_network_name(&name) {
                        conf.name = name;
                    } else {
                        p.push("name", FieldProblem::BadNetworkName { value: name });
                    }
                }
            }
        }
        match obj.get("type") {
            None => p.push("type", FieldProblem::Missing),
            Some(v) => {
                if let Some(t) = p.string("type", v) {
                    if t != PLUGIN_TYPE {
                        p.push("type", FieldProblem::WrongPluginType { found: t });
                    }
                }
            }
        }

        for (key, value) in obj {
            match key.as_str() {
                "cniVersion" | "name" | "type" => {}
                "ipam" => p.push("ipam", FieldProblem::Ipam),
                "agentSocket" => {
                    if let Some(path) = p.non_empty_string(key, value) {
                        if path.starts_with('/') {
                            conf.agent_socket = PathBuf::from(path);
                        } else {
                            p.push(key, FieldProblem::NotAbsolute { value: path });
                        }
                    }
                }
                "segment" => conf.segment = p.non_empty_string(key, value),
                "defaultNamespace" => {
                    if let Some(ns) = p.non_empty_string(key, value) {
                        conf.default_namespace = ns;
                    }
                }
                "dns" => conf.dns = p.dns(value),
                "labels" => conf.labels = p.string_map(key, value),
                "ports" => conf.ports = p.ports(value),
                "capabilities" => conf.capabilities = p.bool_map(key, value),
                // Accepted and ignored: the runtime fills runtimeConfig only for declared
                // capabilities, and seam-cni declares none. `args` carries runtime hints
                // seam-cni does not use either.
                "runtimeConfig" | "args" => {
                    p.object(key, value);
                }
                "prevResult" => conf.prev_result = p.prev_result(value),
                VALID_ATTACHMENTS => conf.valid_attachments = p.valid_attachments(value),
                "disableCheck" => conf.disable_check = p.bool(key, value).unwrap_or(false),
                "disableGC" => conf.disable_gc = p.bool(key, value).unwrap_or(false),
                _ => p.push(key.clone(), FieldProblem::Unknown),
            }
        }

        if p.0.is_empty() {
            Ok(conf)
        } else {
            Err(Error::InvalidConfig(p.0))
        }
    }
}

/// The spec's network name rule: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The JSON type of a value, as error messages name it.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Collects field problems while decoding.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, problem: FieldProblem) {
        self.0.push(FieldError::new(path, problem));
    }

    fn wrong_type(&mut self, path: impl Into<String>, expected: &'static str, found: &Value) {
        self.push(
            path,
            FieldProblem::WrongType {
                expected,
                found: type_name(found),
            },
        );
    }

    fn string(&mut self, path: &str, v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                self.wrong_type(path, "a string", other);
                None
            }
        }
    }

    fn non_empty_string(&mut self, path: &str, v: &Value) -> Option<String> {
        let s = self.string(path, v)?;
        if s.is_empty() {
            self.push(path, FieldProblem::Empty);
            return None;
        }
        Some(s)
    }

    fn bool(&mut self, path: &str, v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                self.wrong_type(path, "a boolean", other);
                None
            }
        }
    }

    fn object<'v>(&mut self, path: &str, v: &'v Value) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            other => {
                self.wrong_type(path, "an object", other);
                None
            }
        }
    }

    fn string_list(&mut self, path: &str, v: &Value) -> Vec<String> {
        let Value::Array(items) = v else {
            self.wrong_type(path, "an array of strings", v);
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.string(&format!("{path}[{i}]"), item))
            .collect()
    }

    fn string_map(&mut self, path: &str, v: &Value) -> BTreeMap<String, String> {
        let Some(m) = self.object(path, v) else {
            return BTreeMap::new();
        };
        m.iter()
            .filter_map(|(k, item)| Some((k.clone(), self.string(&format!("{path}.{k}"), item)?)))
            .collect()
    }

    fn bool_map(&mut self, path: &str, v: &Value) -> BTreeMap<String, bool> {
        let Some(m) = self.object(path, v) else {
            return BTreeMap::new();
        };
        m.iter()
            .filter_map(|(k, item)| Some((k.clone(), self.bool(&format!("{path}.{k}"), item)?)))
            .collect()
    }

    fn dns(&mut self, v: &Value) -> Option<Dns> {
        let m = self.object("dns", v)?;
        let mut dns = Dns::default();
        for (key, item) in m {
            let path = format!("dns.{key}");
            match key.as_str() {
                "nameservers" => dns.nameservers = self.string_list(&path, item),
                "domain" => dns.domain = self.string(&path, item),
                "search" => dns.search = self.string_list(&path, item),
                "options" => dns.options = self.string_list(&path, item),
                _ => self.push(path, FieldProblem::Unknown),
            }
        }
        Some(dns)
    }

    fn prev_result(&mut self, v: &Value) -> Option<CniResult> {
        self.object("prevResult", v)?;
        // Another plug-in wrote this, so it is read with serde's tolerance for unknown
        // attributes; only the shape seam-cni relies on is checked.
        match CniResult::deserialize_value(v) {
            Ok(r) => Some(r),
            Err(e) => {
                self.push(
                    "prevResult",
                    FieldProblem::BadPrevResult {
                        reason: e.to_string(),
                    },
                );
                None
            }
        }
    }

    /// `ports`: `[{name, port, protocol}]`, names unique IANA service names, ports 1..=65535,
    /// protocol `TCP`, `UDP` or `SCTP`.
    fn ports(&mut self, v: &Value) -> Vec<ContainerPort> {
        let Value::Array(items) = v else {
            self.wrong_type("ports", "an array of objects", v);
            return Vec::new();
        };
        let mut ports: Vec<ContainerPort> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let base = format!("ports[{i}]");
            let Some(m) = self.object(&base, item) else {
                continue;
            };
            let (mut name, mut port, mut protocol) = (None, None, None);
            for (key, field) in m {
                let path = format!("{base}.{key}");
                match key.as_str() {
                    "name" => {
                        name = self.string(&path, field).and_then(|value| {
                            if !is_valid_port_name(&value) {
                                self.push(path, FieldProblem::BadPortName { value });
                                None
                            } else if ports.iter().any(|p| p.name == value) {
                                self.push(path, FieldProblem::DuplicatePortName { value });
                                None
                            } else {
                                Some(value)
                            }
                        })
                    }
                    "port" => {
                        port = match field.as_u64() {
                            Some(n) => match u16::try_from(n) {
                                Ok(n) if n > 0 => Some(n),
                                _ => {
                                    self.push(
                                        path,
                                        FieldProblem::BadPort {
                                            value: field.to_string(),
                                        },
                                    );
                                    None
                                }
                            },
                            None if field.is_number() => {
                                self.push(
                                    path,
                                    FieldProblem::BadPort {
                                        value: field.to_string(),
                                    },
                                );
                                None
                            }
                            None => {
                                self.wrong_type(&path, "a number", field);
                                None
                            }
                        }
                    }
                    "protocol" => {
                        protocol = self.string(&path, field).and_then(|value| {
                            PortProtocol::parse(&value).or_else(|| {
                                self.push(path, FieldProblem::BadProtocol { value });
                                None
                            })
                        })
                    }
                    _ => self.push(path, FieldProblem::Unknown),
                }
            }
            for required in ["name", "port", "protocol"] {
                if !m.contains_key(required) {
                    self.push(format!("{base}.{required}"), FieldProblem::Missing);
                }
            }
            if let (Some(name), Some(port), Some(protocol)) = (name, port, protocol) {
                ports.push(ContainerPort {
                    name,
                    port,
                    protocol,
                });
            }
        }
        ports
    }

    fn valid_attachments(&mut self, v: &Value) -> Option<Vec<AttachmentKey>> {
        let Value::Array(items) = v else {
            self.wrong_type(VALID_ATTACHMENTS, "an array of objects", v);
            return None;
        };
        let before = self.0.len();
        let mut keys = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let base = format!("{VALID_ATTACHMENTS}[{i}]");
            let Some(m) = self.object(&base, item) else {
                continue;
            };
            let mut container_id = None;
            let mut ifname = None;
            for (key, field) in m {
                let path = format!("{base}.{key}");
                match key.as_str() {
                    "containerID" => {
                        container_id = self.string(&path, field).and_then(|value| {
                            if check_container_id(&value).is_ok() {
                                Some(value)
                            } else {
                                self.push(path, FieldProblem::BadContainerId { value });
                                None
                            }
                        })
                    }
                    "ifname" => {
                        ifname = self.string(&path, field).and_then(|value| {
                            if check_ifname(&value).is_ok() {
                                Some(value)
                            } else {
                                self.push(path, FieldProblem::BadIfname { value });
                                None
                            }
                        })
                    }
                    _ => self.push(path, FieldProblem::Unknown),
                }
            }
            if !m.contains_key("containerID") {
                self.push(format!("{base}.containerID"), FieldProblem::Missing);
            }
            if !m.contains_key("ifname") {
                self.push(format!("{base}.ifname"), FieldProblem::Missing);
            }
            if let (Some(container_id), Some(ifname)) = (container_id, ifname) {
                keys.push(AttachmentKey {
                    container_id,
                    ifname,
                });
            }
        }
        (self.0.len() == before).then_some(keys)
    }
}

#[cfg(test)]
mod tests;
