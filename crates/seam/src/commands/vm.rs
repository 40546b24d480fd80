//! `seam vm attach|detach|move|delete|list`: VMs on hypervisor hosts, through the controller.

use anyhow::Context;
use seam_model::{parse_labels, LabelSpaces, VmAttach};

use crate::cli::VmCmd;
use crate::controller::{block_on, client};

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
pub(crate) fn run(command: VmCmd) -> anyhow::Result<()> {
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
                labels: labels
                    .as_deref()
                    .map(|text| {
                        // `seam vm attach` has always said "key=value" here; scripts may match it.
                        parse_labels(text, LabelSpaces::Trimmed)
                            .map_err(|e| anyhow::anyhow!("label {:?} is not key=value", e.pair))
                    })
                    .transpose()?,
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
