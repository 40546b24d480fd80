//! Reading the nodes' rule counters: from each node's agent API (`GET /v1/counters` on
//! `https://<underlay address>:<--agent-port>`, the server checked to be the node by name, the
//! CLI presenting its own reader or admin certificate), all nodes at once, each with a short
//! timeout; a node that does not answer is named, never fatal. A lab whose agents have no API
//! (one-process mode: no certificates) is read in its nodes' namespaces instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use seam_client::{ClientTls, ControllerClient};
use seam_lab::{Lab, LabUser};
use seam_model::counters::{Counted, NodeCounters};
use seam_model::Node;

use crate::cli::Target;

/// How long one node's answer is waited for.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Where the counters come from.
pub(crate) enum Counters {
    /// The agents' API over TLS.
    Api {
        /// The CA that verifies the agents, and the CLI's certificate and key.
        ca: PathBuf,
        cert: (PathBuf, PathBuf),
        port: u16,
    },
    /// A lab's nodes' namespaces (its agents serve no API).
    Lab(Box<Lab>),
}

/// What reading every node gave: each node's counters, and the nodes that could not be read
/// with why.
#[derive(Debug, Default)]
pub(crate) struct Read {
    pub(crate) nodes: BTreeMap<String, BTreeMap<String, Counted>>,
    pub(crate) unreadable: Vec<(String, String)>,
}

impl Read {
    /// The line that names the nodes whose counters are missing, if any.
    pub(crate) fn warning(&self) -> Option<String> {
        if self.unreadable.is_empty() {
            return None;
        }
        let list: Vec<String> = self
            .unreadable
            .iter()
            .map(|(node, why)| format!("{node} ({why})"))
            .collect();
        Some(format!(
            "counters not read from {} node(s), hits leave them out: {}",
            list.len(),
            list.join("; ")
        ))
    }
}

impl Counters {
    /// The source for `target`: with `--controller`, the agents' API with `--ca` and the
    /// `--cert`/`--key` the CLI presents (a reader's or an admin's); else the lab's: its agents'
    /// API with the lab's admin certificate, or its namespaces when it has no API. The CLI is
    /// inside the lab's underlay already when it reads a lab's controller over TLS
    /// ([`crate::controller::client`]), where the nodes' addresses are reachable.
    /// `None` with a `--controller` and none of `--ca`, `--cert`: the CLI has nothing to show
    /// the agents (a local `unix:` controller, for one).
    pub(crate) fn for_target(target: &Target) -> anyhow::Result<Option<Counters>> {
        let port = target.agent_port;
        if target.controller.is_some() {
            if target.ca.is_none() && target.cert.is_none() {
                return Ok(None);
            }
            let ca = target.ca.clone().context(
                "reading the nodes' counters needs --ca (the CA that signed the nodes' certificates)",
            )?;
            let cert = target.cert.clone().zip(target.key.clone()).context(
                "reading the nodes' counters needs --cert and --key of a reader or an admin",
            )?;
            return Ok(Some(Counters::Api { ca, cert, port }));
        }
        let lab = Lab::load(&target.lab)
            .with_context(|| format!("find lab {:?} (or pass --controller)", target.lab))?;
        match lab.pki.as_ref().filter(|_| !lab.api.is_empty()) {
            Some(pki) => {
                let ca = target.ca.clone().unwrap_or_else(|| pki.ca_cert.clone());
                let cert = match target.cert.clone().zip(target.key.clone()) {
                    Some(cert) => cert,
                    None => pki.user(LabUser::Admin),
                };
                Ok(Some(Counters::Api { ca, cert, port }))
            }
            None => Ok(Some(Counters::Lab(Box::new(lab)))),
        }
    }

    /// Every node's counters, read at once.
    pub(crate) async fn read_all(&self, nodes: &[Node]) -> Read {
        let reads = nodes.iter().map(|n| async move { (n, self.read(n).await) });
        let mut out = Read::default();
        for (node, result) in futures::future::join_all(reads).await {
            match result {
                Ok(counters) => {
                    out.nodes.insert(node.name.clone(), counters);
                }
                Err(e) => out.unreadable.push((node.name.clone(), format!("{e:#}"))),
            }
        }
        out
    }

    /// One node's counters, by rule comment.
    pub(crate) async fn read(&self, node: &Node) -> anyhow::Result<BTreeMap<String, Counted>> {
        match self {
            Counters::Api { ca, cert, port } => {
                let client = agent_client(ca, (&cert.0, &cert.1), node, *port)?;
                let response = client
                    .request_raw("GET", "/v1/counters", Vec::new())
                    .await?;
                let body = String::from_utf8_lossy(&response.body);
                anyhow::ensure!(
                    response.status == 200,
                    "agent answered {}: {}",
                    response.status,
                    body.trim()
                );
                let counters: NodeCounters = serde_json::from_str(&body)
                    .context("read the agent's counters (not the JSON expected)")?;
                Ok(counters.rules)
            }
            Counters::Lab(lab) => {
                let name = node.name.clone();
                let read = lab.rule_counters(&name)?;
                Ok(read
                    .into_iter()
                    .map(|(k, (packets, bytes))| (k, Counted { packets, bytes }))
                    .collect())
            }
        }
    }
}

/// A client of `node`'s agent API: its underlay address and `port`, its certificate checked to
/// name the node.
fn agent_client(
    ca: &Path,
    cert: (&Path, &Path),
    node: &Node,
    port: u16,
) -> anyhow::Result<ControllerClient> {
    let tls = ClientTls::from_files(ca, Some(cert))?.with_server_name(&node.name)?;
    Ok(
        ControllerClient::new(&format!("https://{}:{port}", node.underlay_ip))?
            .with_tls(tls)
            .with_timeout(TIMEOUT),
    )
}

/// Packets counted by the rules of the policy object `item` (as listed by the controller), over
/// every node read.
pub(crate) fn policy_hits(item: &serde_json::Value, read: &Read) -> Option<u64> {
    let kind = seam_model::manifest::policy_kind_by_name(item["kind"].as_str()?)?;
    let prefix = seam_firewall::policy_rule_prefix(
        kind,
        item["metadata"]["namespace"].as_str(),
        item["metadata"]["name"].as_str()?,
    );
    Some(
        read.nodes
            .values()
            .flat_map(|rules| {
                rules
                    .range(prefix.clone()..)
                    .take_while(|(comment, _)| comment.starts_with(&prefix))
            })
            .map(|(_, c)| c.packets)
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_sum_the_policys_rules_over_nodes_and_nothing_else() {
        let counted = |packets| Counted { packets, bytes: 0 };
        let mut read = Read::default();
        read.nodes.insert(
            "n1".into(),
            BTreeMap::from([
                ("contract/web/ingress/0".to_string(), counted(3)),
                ("contract/web/egress/1".to_string(), counted(4)),
                ("contract/web2/ingress/0".to_string(), counted(100)),
                ("np/x/web/ingress/0".to_string(), counted(50)),
            ]),
        );
        read.nodes.insert(
            "n2".into(),
            BTreeMap::from([("contract/web/ingress/0".to_string(), counted(10))]),
        );
        let contract = serde_json::json!({"kind": "Contract", "metadata": {"name": "web"}});
        assert_eq!(policy_hits(&contract, &read), Some(17));
        let np = serde_json::json!({"kind": "NetworkPolicy", "metadata": {"namespace": "x", "name": "web"}});
        assert_eq!(policy_hits(&np, &read), Some(50));
        let other = serde_json::json!({"kind": "NetworkPolicy", "metadata": {"namespace": "y", "name": "web"}});
        assert_eq!(policy_hits(&other, &read), Some(0));
        read.unreadable.push(("n3".into(), "timed out".into()));
        assert_eq!(
            read.warning().as_deref(),
            Some("counters not read from 1 node(s), hits leave them out: n3 (timed out)")
        );
    }
}
