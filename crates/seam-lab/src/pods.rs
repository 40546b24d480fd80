//! Pods: network namespaces attached by exec'ing the real `seam-cni` with CNI env vars and stdin
//! JSON, from inside the node's namespace, as a container runtime does.

use std::collections::BTreeMap;

use crate::cni::CniCall;
use crate::error::{LabError, Result};
use crate::state::{io_err, Lab, NodeInfo, PodInfo};
use crate::workloads::Workloads;

impl Lab {
    /// The plug-in config for one call, as a runtime derives it from the node's conflist
    /// (the conflist's `name` and `cniVersion` injected into the plug-in's entry).
    pub fn plugin_config(&self, node: &NodeInfo) -> Result<serde_json::Value> {
        let text = std::fs::read_to_string(&node.cni_config).map_err(io_err(&node.cni_config))?;
        let list: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| LabError::State {
                path: node.cni_config.clone(),
                source,
            })?;
        let mut plugin = list["plugins"][0].clone();
        plugin["name"] = list["name"].clone();
        plugin["cniVersion"] = list["cniVersion"].clone();
        Ok(plugin)
    }

    /// A CNI call for `pod` on `node` with the node's config.
    pub fn cni_call(
        &self,
        node: &NodeInfo,
        command: &str,
        container_id: &str,
        netns: &str,
        args: &str,
    ) -> Result<CniCall> {
        Ok(CniCall {
            plugin: self.cni_plugin.clone(),
            command: command.to_string(),
            container_id: container_id.to_string(),
            netns: netns.to_string(),
            ifname: "eth0".to_string(),
            args: args.to_string(),
            cni_path: self.cni_path.clone(),
            config: self.plugin_config(node)?,
        })
    }
}

impl Workloads<'_> {
    /// Creates pod `namespace/name` on `node`: a new network namespace, attached by `seam-cni ADD`.
    pub fn add_pod(&mut self, node: &str, namespace: &str, name: &str) -> Result<PodInfo> {
        self.add_pod_with_labels(node, namespace, name, &BTreeMap::new())
    }

    /// Like [`Workloads::add_pod`], with pod labels (passed in the plug-in config's `labels`, which
    /// seam-cni publishes with the endpoint) for policy selectors.
    pub fn add_pod_with_labels(
        &mut self,
        node: &str,
        namespace: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<PodInfo> {
        self.add_pod_with(node, namespace, name, labels, &[])
    }

    /// Like [`Workloads::add_pod_with_labels`], with named container ports (the plug-in config's
    /// `ports`, published with the endpoint) for NetworkPolicies that name a port.
    pub fn add_pod_with(
        &mut self,
        node: &str,
        namespace: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
        ports: &[seam_model::ContainerPort],
    ) -> Result<PodInfo> {
        if self
            .lab
            .pods
            .iter()
            .any(|p| p.namespace == namespace && p.name == name)
        {
            return Err(LabError::Invalid(format!(
                "pod {namespace}/{name} already exists in lab {}",
                self.lab.name
            )));
        }
        let node = self.lab.node(node)?.clone();
        let netns = format!("{}-p-{namespace}-{name}", self.lab.name);
        let netns_path = seam_linux::netns::create(&netns)?;
        let container_id = format!("{}-{namespace}-{name}", self.lab.name);
        let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}");
        let mut call = self.lab.cni_call(
            &node,
            "ADD",
            &container_id,
            &netns_path.display().to_string(),
            &args,
        )?;
        if !labels.is_empty() {
            call.config["labels"] = serde_json::json!(labels);
        }
        if !ports.is_empty() {
            call.config["ports"] = serde_json::json!(ports);
        }
        let result = call
            .run_in(&node.netns_path)
            .and_then(|out| out.json("ADD"));
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = seam_linux::netns::delete(&netns);
                return Err(e);
            }
        };
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| LabError::Cni {
                command: "ADD".into(),
                status: 0,
                stdout: result.to_string(),
            })?;
        let pod = PodInfo {
            name: name.into(),
            namespace: namespace.into(),
            node: node.name.clone(),
            netns_path,
            container_id,
            ip,
            labels: labels.clone(),
        };
        self.lab.pods.push(pod.clone());
        self.lab.save()?;
        Ok(pod)
    }

    /// Deletes pod `namespace/name`: `seam-cni DEL`, then its namespace.
    pub fn del_pod(&mut self, namespace: &str, name: &str) -> Result<()> {
        let Some(index) = self
            .lab
            .pods
            .iter()
            .position(|p| p.namespace == namespace && p.name == name)
        else {
            return Err(LabError::Invalid(format!(
                "no pod {namespace}/{name} in lab {}",
                self.lab.name
            )));
        };
        let pod = self.lab.pods[index].clone();
        let node = self.lab.node(&pod.node)?.clone();
        let call = self.lab.cni_call(
            &node,
            "DEL",
            &pod.container_id,
            &pod.netns_path.display().to_string(),
            "",
        )?;
        call.run_in(&node.netns_path)?.json("DEL")?;
        if let Some(ns) = pod.netns_path.file_name().and_then(|n| n.to_str()) {
            seam_linux::netns::delete(ns)?;
        }
        self.lab.pods.remove(index);
        self.lab.save()
    }
}

/// Reads a named container port as `seam lab pod-add --port` takes it: `NAME=PORT[/PROTOCOL]`
/// (protocol `tcp`, `udp` or `sctp`, any case; TCP when left out), as a pod spec's
/// `ports: [{name, containerPort, protocol}]` gives it (what a Service's named `targetPort`
/// and a NetworkPolicy's named port resolve against).
pub fn parse_container_port(text: &str) -> Result<seam_model::ContainerPort> {
    let invalid = |why: &str| {
        LabError::Invalid(format!(
            "container port {text:?}: {why} (expected NAME=PORT[/tcp|udp|sctp])"
        ))
    };
    let (name, rest) = text.split_once('=').ok_or_else(|| invalid("no '='"))?;
    let (port, protocol) = rest.split_once('/').unwrap_or((rest, "tcp"));
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid("the port must be 1-65535"))?;
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "tcp" => seam_model::PortProtocol::Tcp,
        "udp" => seam_model::PortProtocol::Udp,
        "sctp" => seam_model::PortProtocol::Sctp,
        _ => return Err(invalid("unknown protocol")),
    };
    if !seam_model::is_valid_port_name(name) {
        return Err(invalid("the name must be an IANA service name"));
    }
    Ok(seam_model::ContainerPort {
        name: name.to_string(),
        port,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_port_is_name_port_and_protocol() {
        let p = parse_container_port("http=8080").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (p.name.as_str(), p.port, p.protocol),
            ("http", 8080, seam_model::PortProtocol::Tcp)
        );
        let p = parse_container_port("dns=53/UDP").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.port, p.protocol), (53, seam_model::PortProtocol::Udp));
        for bad in [
            "http",
            "http=0",
            "http=70000",
            "http=80/icmp",
            "Bad_Name=80",
            "=80",
        ] {
            assert!(parse_container_port(bad).is_err(), "{bad}");
        }
    }
}
