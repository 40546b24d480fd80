//! An in-memory [`NodeKernel`] that behaves like the real one (idempotent creates and deletes,
//! all-or-nothing attach), for tests that must not need root.

use std::collections::BTreeMap;
use std::sync::Mutex;

use seam_model::MacAddr;

use crate::error::{Error, Result};
use crate::types::{AttachedPort, LinkOp, Observed, ObservedSegment, PodAttach};
use crate::{Firewall, NodeKernel};

/// The fake kernel's state, open for assertions.
#[derive(Debug, Default, Clone)]
pub struct FakeState {
    /// What `observe` reports.
    pub observed: Observed,
    /// Attachments by host port name.
    pub attachments: BTreeMap<String, PodAttach>,
    /// The last ruleset applied, and how many were applied.
    pub ruleset: Option<String>,
    /// How many rulesets were applied.
    pub ruleset_applies: usize,
    /// The in-place changes applied, in order.
    pub deltas: Vec<seam_nft::FirewallDelta>,
    /// Ports retired and not yet reaped.
    pub retired: Vec<String>,
    /// When set, the next `attach` fails with this message (and leaves nothing behind).
    pub fail_next_attach: Option<String>,
}

/// In-memory kernel.
#[derive(Debug, Default)]
pub struct FakeKernel {
    state: Mutex<FakeState>,
}

impl FakeKernel {
    /// A copy of the current state.
    pub fn state(&self) -> FakeState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Changes the state, e.g. to simulate drift or to arm a failure.
    pub fn with_state(&self, f: impl FnOnce(&mut FakeState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, FakeState>> {
        self.state
            .lock()
            .map_err(|_| Error::Unsupported("fake kernel state poisoned".into()))
    }
}

fn host_mac(name: &str) -> MacAddr {
    let b = name.as_bytes();
    let at = |i: usize| b.get(b.len().saturating_sub(i)).copied().unwrap_or(0);
    MacAddr([0x02, 0, at(4), at(3), at(2), at(1)])
}

impl NodeKernel for FakeKernel {
    async fn observe(&self) -> Result<Observed> {
        Ok(self.lock()?.observed.clone())
    }

    async fn apply(&self, op: &LinkOp) -> Result<()> {
        let mut s = self.lock()?;
        let o = &mut s.observed;
        match op {
            LinkOp::EnsureSegment { spec, .. } => {
                o.segments.insert(
                    spec.vni,
                    ObservedSegment {
                        bridge_ok: true,
                        vxlan_ok: true,
                        gateway_ok: true,
                    },
                );
            }
            LinkOp::DeleteSegment { vni } => {
                o.segments.remove(vni);
                o.fdb.retain(|e| e.0 != *vni);
                o.neighbours.retain(|e| e.0 != *vni);
            }
            LinkOp::FdbAdd(r) => {
                if !o.segments.contains_key(&r.vni) {
                    return Err(Error::Kernel {
                        operation: "fdb add",
                        object: crate::vxlan_name(r.vni),
                        errno: Some(19),
                        message: "no such device".into(),
                    });
                }
                o.fdb.retain(|e| !(e.0 == r.vni && e.1 == r.mac));
                o.fdb.insert((r.vni, r.mac, r.node_ip));
            }
            LinkOp::FdbDel { vni, mac, dst } => {
                o.fdb.remove(&(*vni, *mac, *dst));
            }
            LinkOp::NeighAdd { vni, ip, mac } => {
                o.neighbours.retain(|e| !(e.0 == *vni && e.1 == *ip));
                o.neighbours.insert((*vni, *ip, *mac));
            }
            LinkOp::NeighDel { vni, ip } => o.neighbours.retain(|e| !(e.0 == *vni && e.1 == *ip)),
            LinkOp::DeletePort { host_ifname } => {
                o.host_ports.remove(host_ifname);
                s.attachments.remove(host_ifname);
            }
            LinkOp::PlugVmPort { ifname, vni, mtu } => {
                let Some(port) = o.vm_ports.get_mut(ifname) else {
                    return Err(Error::Kernel {
                        operation: "plug vm port",
                        object: ifname.clone(),
                        errno: Some(19),
                        message: "no such device".into(),
                    });
                };
                port.vni = Some(*vni);
                port.mtu = *mtu;
                port.up = true;
            }
            LinkOp::UnplugVmPort { ifname } => {
                if let Some(port) = o.vm_ports.get_mut(ifname) {
                    port.vni = None;
                    port.up = false;
                }
            }
        }
        Ok(())
    }

    async fn attach(&self, spec: &PodAttach) -> Result<AttachedPort> {
        let mut s = self.lock()?;
        if let Some(message) = s.fail_next_attach.take() {
            return Err(Error::Kernel {
                operation: "attach",
                object: spec.host_ifname.clone(),
                errno: None,
                message,
            });
        }
        if !s.observed.segments.contains_key(&spec.vni) {
            return Err(Error::Kernel {
                operation: "attach",
                object: crate::bridge_name(spec.vni),
                errno: Some(19),
                message: "no such device".into(),
            });
        }
        s.observed
            .host_ports
            .insert(spec.host_ifname.clone(), Some(spec.vni));
        s.attachments.insert(spec.host_ifname.clone(), spec.clone());
        Ok(AttachedPort {
            host_mac: host_mac(&spec.host_ifname),
        })
    }

    async fn detach(&self, host_ifname: &str) -> Result<()> {
        let mut s = self.lock()?;
        s.retired.retain(|r| r != host_ifname);
        s.observed.host_ports.remove(host_ifname);
        s.attachments.remove(host_ifname);
        Ok(())
    }

    async fn retire(&self, host_ifname: &str, _sandbox: Option<(&str, &str)>) -> Result<()> {
        let mut s = self.lock()?;
        if s.observed.host_ports.remove(host_ifname).is_some() {
            s.attachments.remove(host_ifname);
            s.retired.push(host_ifname.to_string());
        }
        Ok(())
    }

    async fn reap(&self) -> Result<bool> {
        let mut s = self.lock()?;
        let any = !s.retired.is_empty();
        s.retired.clear();
        Ok(any)
    }

    async fn check(&self, spec: &PodAttach) -> Result<AttachedPort> {
        let s = self.lock()?;
        match s.attachments.get(&spec.host_ifname) {
            Some(found) if found == spec => Ok(AttachedPort {
                host_mac: host_mac(&spec.host_ifname),
            }),
            Some(found) => Err(Error::Drift {
                what: spec.ifname.clone(),
                detail: format!("found {found:?}"),
            }),
            None => Err(Error::Drift {
                what: spec.host_ifname.clone(),
                detail: "host port is missing".into(),
            }),
        }
    }
}

impl Firewall for FakeKernel {
    async fn apply_ruleset(&self, ruleset: &str) -> Result<()> {
        let mut s = self.lock()?;
        s.ruleset = Some(ruleset.to_string());
        s.ruleset_applies += 1;
        Ok(())
    }

    async fn apply_delta(&self, delta: &seam_nft::FirewallDelta) -> Result<()> {
        let mut s = self.lock()?;
        s.deltas.push(delta.clone());
        Ok(())
    }

    async fn list_table(&self) -> Result<Option<String>> {
        Ok(None)
    }
}
