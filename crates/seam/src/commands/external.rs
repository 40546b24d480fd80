//! `seam external add|del|list`: external endpoints through the API.

use anyhow::Context;
use seam_model::{parse_labels, EndpointKind, External, LabelSpaces};

use crate::cli::ExternalCmd;
use crate::controller::{block_on, client};

pub(crate) fn run(command: ExternalCmd) -> anyhow::Result<()> {
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
                // clap split the list at commas; each pair is taken as typed, as this verb always did.
                labels: parse_labels(&labels.join(","), LabelSpaces::Kept)?,
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
