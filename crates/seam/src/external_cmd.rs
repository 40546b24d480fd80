//! `seam external add|del|list` (external endpoints through the API) and the lab's gateway
//! commands (`seam lab gateway-add`, `seam lab server-add`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::Context;
use clap::Subcommand;
use seam_client::ControllerClient;
use seam_lab::Lab;
use seam_model::{EndpointKind, External, EXTERNAL_NAMESPACE};

use crate::Target;

#[derive(Subcommand, Debug)]
pub enum ExternalCmd {
    /// Register (or replace) an external endpoint: a server outside the overlay, known by its
    /// addresses, reached through a gateway node without NAT. It joins groups and contracts like
    /// any endpoint (select it by its labels, its namespace, or `kinds: [external]`).
    Add {
        /// Its name.
        name: String,
        /// Its addresses (comma-separated), outside every segment and the pod pool.
        #[arg(long = "address", value_delimiter = ',', required = true)]
        addresses: Vec<Ipv4Addr>,
        /// The gateway node (seamd --role gateway) it is reached through.
        #[arg(long)]
        gateway: String,
        /// Its namespace (for group selectors).
        #[arg(short = 'n', long, default_value = EXTERNAL_NAMESPACE)]
        namespace: String,
        /// Labels: k=v[,k=v…].
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Remove an external endpoint (all its addresses).
    Del {
        /// Its name.
        name: String,
        /// Its namespace.
        #[arg(short = 'n', long, default_value = EXTERNAL_NAMESPACE)]
        namespace: String,
        #[command(flatten)]
        target: Target,
    },
    /// List external endpoints.
    List {
        #[command(flatten)]
        target: Target,
    },
}

pub(crate) fn client(target: &Target) -> anyhow::Result<ControllerClient> {
    let endpoint = match &target.controller {
        Some(c) => c.clone(),
        None => {
            Lab::load(&target.lab)
                .with_context(|| {
                    format!(
                        "find the controller of lab {:?} (or pass --controller)",
                        target.lab
                    )
                })?
                .controller
        }
    };
    Ok(ControllerClient::new(&endpoint)?)
}

pub(crate) fn block_on<T>(
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?
        .block_on(fut)
}

/// Parses `k=v` labels.
pub fn parse_labels(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    labels
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .with_context(|| format!("label {l:?} is not k=v"))?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

pub fn run(command: ExternalCmd) -> anyhow::Result<()> {
    match command {
        ExternalCmd::Add {
            name,
            addresses,
            gateway,
            namespace,
            labels,
            target,
        } => {
            let external = External {
                name,
                namespace,
                gateway,
                addresses,
                labels: parse_labels(&labels)?,
            };
            let client = client(&target)?;
            let records = block_on(async { Ok(client.put_external(&external).await?) })
                .with_context(|| {
                    format!(
                        "external {}/{}: nothing changed",
                        external.namespace, external.name
                    )
                })?;
            for r in records {
                println!("external {} {} via gateway {}", r.name, r.ip, r.node);
            }
            Ok(())
        }
        ExternalCmd::Del {
            name,
            namespace,
            target,
        } => {
            let client = client(&target)?;
            block_on(async { Ok(client.delete_external(&namespace, &name).await?) })?;
            println!("external {namespace}/{name} deleted");
            Ok(())
        }
        ExternalCmd::List { target } => {
            let client = client(&target)?;
            let endpoints = block_on(async { Ok(client.list_endpoints().await?) })?;
            println!("{:<32} {:<16} {:<12} LABELS", "NAME", "ADDRESS", "GATEWAY");
            for e in endpoints
                .iter()
                .filter(|e| e.kind == EndpointKind::External)
            {
                let labels: Vec<String> =
                    e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "{:<32} {:<16} {:<12} {}",
                    e.name,
                    e.ip,
                    e.node,
                    labels.join(",")
                );
            }
            Ok(())
        }
    }
}

/// `seam lab gateway-add`.
pub fn lab_gateway_add(lab: &str, node: &str, transit_encap: &str) -> anyhow::Result<()> {
    let mut lab = Lab::load(lab)?;
    let gw = lab.add_gateway(node)?;
    if transit_encap != "cross-subnet" {
        lab.set_transit_encap(node, transit_encap)?;
    }
    println!("{}", serde_json::to_string_pretty(&gw)?);
    Ok(())
}

/// `seam lab server-add`.
pub fn lab_server_add(
    lab: &str,
    server: &str,
    address: Ipv4Addr,
    gateway: &str,
    routes: &[String],
) -> anyhow::Result<()> {
    let mut lab = Lab::load(lab)?;
    let routes: Vec<&str> = routes.iter().map(String::as_str).collect();
    let s = lab.add_server(server, address, gateway, &routes)?;
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}
