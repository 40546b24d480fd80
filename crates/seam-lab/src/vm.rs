//! Hypervisor hosts and VMs in the lab.
//!
//! A hypervisor host is a lab node whose `seamd` runs with `--role hypervisor`
//! ([`Topology::make_hypervisor`]: its role is kept in the file `role` next to its agent socket and
//! the agent is restarted with it). A lab VM is a network namespace `<lab>-v-<name>` behind a
//! veth: the host end, named as Seam names a VM's port ([`seam_model::vm_port_name`], `tv…`),
//! lives in the host's namespace, where a hypervisor would create the VM's tap; the VM end is the
//! VM's `eth0` with the address and MAC the controller leased, its MTU and a default route to the
//! segment's gateway (what a guest would configure). VMs are attached, detached, moved and
//! deleted through the lab's controller client, with the calls `seam vm` makes (and its error
//! text); nodes and segments are read the same way. State is kept in `<state dir>/vms.json`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use seam_client::{ClientError, ControllerClient};
use seam_model::{MacAddr, NodeRole, VmAttach};
use serde::{Deserialize, Serialize};

use crate::controller::block_on;
use crate::error::{LabError, Result};
use crate::process::wait_for;
use crate::state::{io_err, read_json_or_default, state_dir, write_json_atomic};
use crate::topology::{ip, Topology};
use crate::workloads::Workloads;

/// The MTU of a lab VM's interface: the lab underlay's 1500 minus VXLAN's 50.
pub const VM_MTU: u32 = 1450;

/// A VM of the lab.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VmInfo {
    /// VM name.
    pub name: String,
    /// Namespace of its endpoint.
    pub namespace: String,
    /// The hypervisor host it runs on.
    pub host: String,
    /// Its network namespace path.
    pub netns_path: PathBuf,
    /// Its segment.
    pub segment: String,
    /// Its leased address.
    pub ip: Ipv4Addr,
    /// Its prefix length on the segment.
    pub prefix_len: u8,
    /// The segment's gateway.
    pub gateway: Ipv4Addr,
    /// Its MAC.
    pub mac: String,
    /// The host-side port name (`tv…`).
    pub port: String,
    /// False while stopped (its lease stays).
    pub running: bool,
}

impl VmInfo {
    /// The namespace name.
    pub fn netns(&self) -> String {
        self.netns_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string()
    }
}

/// Optional settings of [`Workloads::add_vm`].
#[derive(Debug, Clone, Default)]
pub struct VmOptions {
    /// A fixed address.
    pub ip: Option<Ipv4Addr>,
    /// A fixed MAC.
    pub mac: Option<MacAddr>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The namespace of its endpoint.
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VmState {
    vms: Vec<VmInfo>,
}

fn vm_netns(lab: &str, vm: &str) -> String {
    format!("{lab}-v-{vm}")
}

impl Topology<'_> {
    /// Makes `node` a hypervisor host: its agent restarts with `--role hypervisor` (and keeps
    /// that role across later restarts) and registers the role with the controller.
    pub fn make_hypervisor(&mut self, node: &str) -> Result<()> {
        let info = self.lab.node(node)?.clone();
        let dir = info
            .agent_socket
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| self.lab.dir.join(node));
        let role = dir.join("role");
        std::fs::write(&role, "hypervisor\n").map_err(io_err(&role))?;
        let mut processes = self.lab.processes();
        processes.kill_agent(node, "TERM")?;
        processes.start_agent(node)?;
        wait_for(
            &format!("node {node} registered as hypervisor"),
            Duration::from_secs(20),
            || {
                self.lab
                    .client()
                    .and_then(|client| block_on(client.list_nodes()))
                    .map(|nodes| {
                        nodes
                            .iter()
                            .any(|n| n.name == node && n.role == NodeRole::Hypervisor)
                    })
                    .unwrap_or(false)
            },
        )
    }
}

impl Workloads<'_> {
    fn vm_state(&self) -> Result<VmState> {
        read_json_or_default(&self.lab.name, "vms.json")
    }

    fn save_vm_state(&self, state: &VmState) -> Result<()> {
        write_json_atomic(&state_dir(&self.lab.name).join("vms.json"), state)
    }

    /// The lab's VMs.
    pub fn vms(&self) -> Result<Vec<VmInfo>> {
        Ok(self.vm_state()?.vms)
    }

    /// VM `name`.
    pub fn vm(&self, name: &str) -> Result<VmInfo> {
        self.vms()?
            .into_iter()
            .find(|v| v.name == name)
            .ok_or_else(|| LabError::Invalid(format!("lab {} has no vm {name:?}", self.lab.name)))
    }

    /// The prefix length and gateway of `segment`, as the VM's guest configures itself.
    fn segment_of(&self, segment: &str) -> Result<(u8, Ipv4Addr)> {
        let client = self.lab.client()?;
        let segments = block_on(client.list_segments())?;
        let seg = segments
            .iter()
            .find(|s| s.name == segment)
            .ok_or_else(|| LabError::Invalid(format!("no segment {segment:?}")))?;
        Ok((seg.subnet.prefix_len(), seg.gateway))
    }

    /// Creates VM `name` on hypervisor `host` on `segment` with `seam vm attach`, then its
    /// namespace and interface (as a hypervisor starts a VM with its tap). Returns once the
    /// interface exists; the host's agent plugs it in within a reconcile pass.
    pub fn add_vm(
        &mut self,
        name: &str,
        host: &str,
        segment: &str,
        options: &VmOptions,
    ) -> Result<VmInfo> {
        let mut state = self.vm_state()?;
        if state.vms.iter().any(|v| v.name == name) {
            return Err(LabError::Invalid(format!(
                "lab {} already has a vm {name:?}",
                self.lab.name
            )));
        }
        self.lab.node(host)?;
        let labels = options
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let ip = options.ip.map(|i| i.to_string());
        let mac = options.mac.map(|m| m.to_string());
        // The `seam vm attach` command line this call stands for, named when it fails.
        let mut args = vec![
            "vm",
            "attach",
            name,
            "--segment",
            segment,
            "--host",
            host,
            "--json",
        ];
        if let Some(ip) = &ip {
            args.extend(["--ip", ip.as_str()]);
        }
        if let Some(mac) = &mac {
            args.extend(["--mac", mac.as_str()]);
        }
        if !labels.is_empty() {
            args.extend(["--labels", labels.as_str()]);
        }
        if let Some(ns) = &options.namespace {
            args.extend(["--namespace", ns.as_str()]);
        }
        let request = VmAttach {
            name: name.to_string(),
            segment: segment.to_string(),
            host: host.to_string(),
            namespace: options.namespace.clone(),
            ip: options.ip,
            mac: options.mac,
            // No labels keeps an existing VM's labels, as `seam vm attach` without `--labels`.
            labels: (!options.labels.is_empty()).then(|| options.labels.clone()),
            ports: None,
        };
        let vm = self.vm_call(&args, &format!("attach vm {name}"), async |c| {
            c.attach_vm(&request).await
        })?;
        let (prefix_len, gateway) = self.segment_of(segment)?;
        let netns = vm_netns(&self.lab.name, name);
        let netns_path = seam_linux::netns::create(&netns)?;
        let info = VmInfo {
            name: name.to_string(),
            namespace: vm.namespace,
            host: host.to_string(),
            netns_path,
            segment: segment.to_string(),
            ip: vm.ip,
            prefix_len,
            gateway,
            mac: vm.mac.to_string(),
            port: vm.port,
            running: true,
        };
        if let Err(e) = self.plug_vm(&info, host) {
            let _ = seam_linux::netns::delete(&netns);
            return Err(e);
        }
        state.vms.push(info.clone());
        self.save_vm_state(&state)?;
        Ok(info)
    }

    /// Runs one VM call against the lab's controller. A failure reads as it did when the lab ran
    /// the `seam vm` command line `cli` for it (`seam vm attach … failed: seam: attach vm NAME:
    /// <cause>`, `what` being that command's context), since scripts driving `seam lab vm-add`
    /// match that text.
    fn vm_call<T>(
        &self,
        cli: &[&str],
        what: &str,
        call: impl AsyncFnOnce(ControllerClient) -> std::result::Result<T, ClientError>,
    ) -> Result<T> {
        let failed = |detail: String| LabError::Command {
            what: format!("seam {}", cli.join(" ")),
            detail,
        };
        let client = self
            .lab
            .client()
            .map_err(|e| failed(format!("seam: {}", error_chain(&e))))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(LabError::Runtime)?;
        rt.block_on(call(client))
            .map_err(|e| failed(format!("seam: {what}: {}", error_chain(&e))))
    }

    /// The VM's interface: a veth from `host`'s namespace (port `tv…`) to the VM's `eth0`,
    /// configured as the guest would configure itself.
    fn plug_vm(&self, vm: &VmInfo, host: &str) -> Result<()> {
        let host_ns = self.lab.node(host)?.netns.clone();
        let netns = vm.netns();
        ip(
            &host_ns,
            &[
                "link", "add", &vm.port, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
        )?;
        let mtu = VM_MTU.to_string();
        ip(&netns, &["link", "set", "lo", "up"])?;
        ip(
            &netns,
            &["link", "set", "eth0", "address", &vm.mac, "mtu", &mtu, "up"],
        )?;
        ip(
            &netns,
            &[
                "addr",
                "add",
                &format!("{}/{}", vm.ip, vm.prefix_len),
                "dev",
                "eth0",
            ],
        )?;
        ip(
            &netns,
            &["route", "add", "default", "via", &vm.gateway.to_string()],
        )
    }

    fn unplug_vm(&self, vm: &VmInfo) -> Result<()> {
        let host_ns = self.lab.node(&vm.host)?.netns.clone();
        ip(&host_ns, &["link", "del", &vm.port])
    }

    fn update_vm(&self, vm: VmInfo) -> Result<()> {
        let mut state = self.vm_state()?;
        if let Some(slot) = state.vms.iter_mut().find(|v| v.name == vm.name) {
            *slot = vm;
        }
        self.save_vm_state(&state)
    }

    /// Stops VM `name` (`seam vm detach`, its interface goes); its address and MAC stay leased.
    pub fn stop_vm(&mut self, name: &str) -> Result<()> {
        let mut vm = self.vm(name)?;
        self.vm_call(
            &["vm", "detach", name],
            &format!("detach vm {name}"),
            async |c| c.detach_vm(name).await,
        )?;
        self.unplug_vm(&vm)?;
        vm.running = false;
        self.update_vm(vm)
    }

    /// Starts stopped VM `name` again on `host` (`seam vm attach`): same address and MAC.
    pub fn start_vm(&mut self, name: &str, host: &str) -> Result<VmInfo> {
        let mut vm = self.vm(name)?;
        let request = VmAttach {
            name: name.to_string(),
            segment: vm.segment.clone(),
            host: host.to_string(),
            namespace: None,
            ip: None,
            mac: None,
            labels: None,
            ports: None,
        };
        let leased = self.vm_call(
            &[
                "vm",
                "attach",
                name,
                "--segment",
                &vm.segment,
                "--host",
                host,
                "--json",
            ],
            &format!("attach vm {name}"),
            async |c| c.attach_vm(&request).await,
        )?;
        vm.ip = leased.ip;
        vm.mac = leased.mac.to_string();
        vm.host = host.to_string();
        self.plug_vm(&vm, host)?;
        vm.running = true;
        self.update_vm(vm.clone())?;
        Ok(vm)
    }

    /// Moves running VM `name` to hypervisor `host` as a live migration does: the VM's interface
    /// leaves the old host and appears on the new one (same MAC, same address), then `seam vm
    /// move` tells the controller, whose change every node follows.
    pub fn move_vm(&mut self, name: &str, host: &str) -> Result<VmInfo> {
        let mut vm = self.vm(name)?;
        self.lab.node(host)?;
        // A live-migrated guest keeps its memory, its ARP cache included; the lab re-creates the
        // VM's interface, so it carries the neighbour entries over (as `stale`: used at once,
        // confirmed later), as the guest would still hold them.
        let neighbours = vm_neighbours(&vm.netns());
        self.unplug_vm(&vm)?;
        self.plug_vm(&vm, host)?;
        let netns = vm.netns();
        for (addr, mac) in &neighbours {
            ip(
                &netns,
                &[
                    "neigh", "replace", addr, "lladdr", mac, "dev", "eth0", "nud", "stale",
                ],
            )?;
        }
        self.vm_call(
            &["vm", "move", name, "--host", host],
            &format!("move vm {name}"),
            async |c| c.move_vm(name, host).await,
        )?;
        vm.host = host.to_string();
        self.update_vm(vm.clone())?;
        Ok(vm)
    }

    /// Deletes VM `name` (`seam vm delete`: its address and MAC are released) and its namespace.
    pub fn del_vm(&mut self, name: &str) -> Result<()> {
        let vm = self.vm(name)?;
        self.vm_call(
            &["vm", "delete", name],
            &format!("delete vm {name}"),
            async |c| c.delete_vm(name).await,
        )?;
        seam_linux::netns::delete(&vm.netns())?;
        let mut state = self.vm_state()?;
        state.vms.retain(|v| v.name != name);
        self.save_vm_state(&state)
    }
}

/// The VM's resolved neighbours on `eth0` (address, MAC).
fn vm_neighbours(netns: &str) -> Vec<(String, String)> {
    let out = Command::new("ip")
        .args(["-j", "-n", netns, "neigh", "show", "dev", "eth0"])
        .output();
    let Ok(out) = out else {
        return Vec::new();
    };
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| {
                    Some((
                        n["dst"].as_str()?.to_string(),
                        n["lladdr"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An error and its causes, `: `-separated, as the `seam` CLI prints them.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
