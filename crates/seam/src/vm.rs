//! `seam vm attach|detach|move|delete|list`: VMs on hypervisor hosts, through the controller.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::Context;
use clap::Subcommand;
use seam_model::{MacAddr, VmAttach};

use crate::cli::{block_on, client};
use crate::Target;

#[derive(Subcommand, Debug)]
pub enum VmCmd {
    /// Attach VM NAME on hypervisor HOST to segment S: leases an address and a MAC (kept across
    /// detach/attach and moves, released by delete) and prints the host interface the
    /// hypervisor must create (a tap, e.g. QEMU `-netdev tap,ifname=PORT,script=no`); the
    /// host's agent plugs it into the segment.
    Attach {
        /// The VM's name (a DNS label).
        name: String,
        /// The segment.
        #[arg(long)]
        segment: String,
        /// The hypervisor host (a node whose seamd runs with --role hypervisor).
        #[arg(long)]
        host: String,
        /// A fixed MAC (default: derived from the address, 0a:58:<IPv4>).
        #[arg(long)]
        mac: Option<MacAddr>,
        /// A fixed address (default: a free one outside the nodes' pod blocks).
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        /// Labels: k=v,k2=v2.
        #[arg(long)]
        labels: Option<String>,
        /// Namespace of the VM's endpoint (default: the segment's, else `default`).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Stop VM NAME: its endpoint and port go; its address and MAC stay leased.
    Detach {
        /// The VM.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Move VM NAME to hypervisor HOST, keeping address and MAC.
    Move {
        /// The VM.
        name: String,
        /// The new hypervisor host.
        #[arg(long)]
        host: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete VM NAME and release its address and MAC.
    Delete {
        /// The VM.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// List VMs.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

/// Parses `k=v,k2=v2` (empty: no labels).
pub fn parse_labels(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .with_context(|| format!("label {pair:?} is not key=value"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn print_vm(vm: &seam_model::Vm, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(vm)?);
    } else {
        println!(
            "vm {} {}: {} {} on segment {} at host {} port {} ({})",
            vm.namespace,
            vm.name,
            vm.ip,
            vm.mac,
            vm.segment,
            vm.host,
            vm.port,
            if vm.attached { "attached" } else { "detached" }
        );
    }
    Ok(())
}

/// Runs one `seam vm` command.
pub fn run(command: VmCmd) -> anyhow::Result<()> {
    match command {
        VmCmd::Attach {
            name,
            segment,
            host,
            mac,
            ip,
            labels,
            namespace,
            json,
            target,
        } => {
            let request = VmAttach {
                name: name.clone(),
                segment,
                host,
                namespace,
                ip,
                mac,
                labels: labels.as_deref().map(parse_labels).transpose()?,
                ports: None,
            };
            let client = client(&target)?;
            let vm = block_on(async { Ok(client.attach_vm(&request).await?) })
                .with_context(|| format!("attach vm {name}"))?;
            print_vm(&vm, json)
        }
        VmCmd::Detach { name, target } => {
            let client = client(&target)?;
            let vm = block_on(async { Ok(client.detach_vm(&name).await?) })
                .with_context(|| format!("detach vm {name}"))?;
            print_vm(&vm, false)
        }
        VmCmd::Move { name, host, target } => {
            let client = client(&target)?;
            let vm = block_on(async { Ok(client.move_vm(&name, &host).await?) })
                .with_context(|| format!("move vm {name}"))?;
            print_vm(&vm, false)
        }
        VmCmd::Delete { name, target } => {
            let client = client(&target)?;
            block_on(async { Ok(client.delete_vm(&name).await?) })
                .with_context(|| format!("delete vm {name}"))?;
            println!("vm {name} deleted");
            Ok(())
        }
        VmCmd::List { json, target } => {
            let client = client(&target)?;
            let vms = block_on(async { Ok(client.list_vms().await?) })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&vms)?);
            } else {
                println!(
                    "{:<20} {:<12} {:<16} {:<18} {:<12} {:<10} STATE",
                    "NAME", "NAMESPACE", "IP", "MAC", "SEGMENT", "HOST"
                );
                for vm in &vms {
                    println!(
                        "{:<20} {:<12} {:<16} {:<18} {:<12} {:<10} {}",
                        vm.name,
                        vm.namespace,
                        vm.ip.to_string(),
                        vm.mac.to_string(),
                        vm.segment,
                        vm.host,
                        if vm.attached { "attached" } else { "detached" }
                    );
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse() {
        let l = parse_labels("app=web, tier=front").unwrap_or_default();
        assert_eq!(l.len(), 2);
        assert_eq!(l["tier"], "front");
        assert!(parse_labels("oops").is_err());
        assert!(parse_labels("").is_ok_and(|l| l.is_empty()));
    }
}
