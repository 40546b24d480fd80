use std::collections::BTreeSet;

use seam_model::MacAddr;

use crate::types::{DesiredNode, LinkOp, Observed, RemoteEntry};

/// The operations that turn `observed` into `desired`, in a safe order: segments first (so
/// entries have a device to live on), then additions, then removals (so traffic that is being
/// moved never meets a window without an entry), stale segments last.
///
/// Adoption: whatever already matches is left alone, so a restarted agent changes nothing on a
/// node that is already right.
///
/// A routed endpoint ([`crate::RemoteEntry::routed`]) gets the segment's gateway MAC as its
/// neighbour entry only while its route over the underlay is observed (the transit adds it
/// first); without the route, or not routed, the endpoint's own MAC. The transit keeps such a
/// route until the entry is back to the endpoint's MAC
/// ([`crate::ObservedTransit::routed_neighbours`]), so a pod that cached either MAC always has
/// a path.
pub fn plan(desired: &DesiredNode, observed: &Observed) -> Vec<LinkOp> {
    let mut ops = Vec::new();
    // VXLAN devices bound to an old underlay address are made anew, and their entries with them.
    let rebuilt: BTreeSet<u32> = observed
        .segments
        .iter()
        .filter(|(_, s)| s.vxlan_local.is_some_and(|ip| ip != desired.underlay.ip))
        .map(|(vni, _)| *vni)
        .filter(|vni| desired.segments.contains_key(vni))
        .collect();
    let kept;
    let observed = if rebuilt.is_empty() {
        observed
    } else {
        let mut o = observed.clone();
        o.fdb.retain(|e| !rebuilt.contains(&e.0));
        o.neighbours.retain(|e| !rebuilt.contains(&e.0));
        kept = o;
        &kept
    };
    for (vni, spec) in &desired.segments {
        let ok = observed
            .segments
            .get(vni)
            .is_some_and(|s| s.bridge_ok && s.vxlan_ok && s.gateway_ok && !rebuilt.contains(vni));
        if !ok {
            ops.push(LinkOp::EnsureSegment {
                spec: spec.clone(),
                underlay: desired.underlay.clone(),
            });
        }
    }
    let wanted_remote = desired
        .remote
        .iter()
        .filter(|r| desired.segments.contains_key(&r.vni));
    for r in wanted_remote.clone() {
        if !observed.fdb.contains(&(r.vni, r.mac, r.node_ip)) {
            ops.push(LinkOp::FdbAdd(*r));
        }
        let mac = neighbour_mac(desired, observed, r);
        if !observed.neighbours.contains(&(r.vni, r.ip, mac)) {
            ops.push(LinkOp::NeighAdd {
                vni: r.vni,
                ip: r.ip,
                mac,
            });
            // Now reached routed, after the entry moved: pods that resolved it before keep its
            // own MAC until told.
            let was_vxlan = observed.neighbours.contains(&(r.vni, r.ip, r.mac));
            let ports = segment_ports(desired, observed, r.vni);
            if mac != r.mac && was_vxlan && !ports.is_empty() {
                ops.push(LinkOp::AnnounceRouted {
                    ip: r.ip,
                    mac,
                    ports,
                });
            }
        }
    }
    for &(vni, mac, dst) in &observed.fdb {
        let keep = desired.segments.contains_key(&vni)
            && wanted_remote
                .clone()
                .any(|r| r.vni == vni && r.mac == mac && r.node_ip == dst);
        // An endpoint that moved (a VM) gets its entry replaced by `FdbAdd` above; deleting the
        // old one afterwards would also remove the bridge's entry the add just made.
        let moved = wanted_remote
            .clone()
            .any(|r| r.vni == vni && r.mac == mac && r.node_ip != dst);
        if !keep && !moved && desired.segments.contains_key(&vni) {
            ops.push(LinkOp::FdbDel { vni, mac, dst });
        }
    }
    for &(vni, ip, mac) in &observed.neighbours {
        let keep = wanted_remote.clone().any(|r| r.vni == vni && r.ip == ip);
        let replaced = wanted_remote
            .clone()
            .any(|r| r.vni == vni && r.ip == ip && r.mac != mac);
        if !keep && !replaced && desired.segments.contains_key(&vni) {
            ops.push(LinkOp::NeighDel { vni, ip });
        }
    }
    for name in observed.host_ports.keys() {
        if !desired.local_ports.contains_key(name) {
            ops.push(LinkOp::DeletePort {
                host_ifname: name.clone(),
            });
        }
    }
    for (name, &vni) in &desired.vm_ports {
        let Some(found) = observed.vm_ports.get(name) else {
            // Not made by the hypervisor yet: plugged once it appears.
            continue;
        };
        let spec_mtu = desired.segments.get(&vni).map(|s| s.mtu);
        let ok = found.vni == Some(vni) && found.up && spec_mtu.is_none_or(|m| m == found.mtu);
        if !ok && desired.segments.contains_key(&vni) {
            ops.push(LinkOp::PlugVmPort {
                ifname: name.clone(),
                vni,
                mtu: spec_mtu.unwrap_or(found.mtu),
            });
        }
    }
    for name in &observed.unhairpinned {
        // A VM port being plugged above gets hairpin mode with it.
        let replugged = ops
            .iter()
            .any(|op| matches!(op, LinkOp::PlugVmPort { ifname, .. } if ifname == name));
        let wanted = desired.local_ports.contains_key(name) || desired.vm_ports.contains_key(name);
        if wanted && !replugged {
            ops.push(LinkOp::SetHairpin {
                ifname: name.clone(),
            });
        }
    }
    for (name, found) in &observed.vm_ports {
        if !desired.vm_ports.contains_key(name) && (found.vni.is_some() || found.up) {
            ops.push(LinkOp::UnplugVmPort {
                ifname: name.clone(),
            });
        }
    }
    for vni in observed.segments.keys() {
        let in_use = desired.local_ports.values().any(|v| v == vni)
            || desired.vm_ports.values().any(|v| v == vni);
        if !desired.segments.contains_key(vni) && !in_use {
            ops.push(LinkOp::DeleteSegment { vni: *vni });
        }
    }
    ops
}

/// The host ports of local pods and VMs plugged into segment `vni`.
fn segment_ports(desired: &DesiredNode, observed: &Observed, vni: u32) -> Vec<String> {
    let pods = observed
        .host_ports
        .iter()
        .filter(|(name, v)| **v == Some(vni) && desired.local_ports.contains_key(*name))
        .map(|(name, _)| name.clone());
    let vms = observed
        .vm_ports
        .iter()
        .filter(|(name, p)| p.vni == Some(vni) && desired.vm_ports.contains_key(*name))
        .map(|(name, _)| name.clone());
    pods.chain(vms).collect()
}

/// The MAC a remote endpoint's neighbour entry should answer ARP with (see [`plan`]).
fn neighbour_mac(desired: &DesiredNode, observed: &Observed, r: &RemoteEntry) -> MacAddr {
    let gateway = desired.segments.get(&r.vni).map(|s| s.gateway_mac);
    match gateway {
        Some(gateway) if r.routed && observed.routes.contains(&(r.ip, r.node_ip)) => gateway,
        _ => r.mac,
    }
}

#[cfg(test)]
mod tests;
