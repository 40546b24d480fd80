//! An in-memory kernel that behaves like the real one, for tests that must not need root: a
//! [`NodeKernel`] (idempotent creates and deletes, all-or-nothing attach), a [`Firewall`] (Seam's
//! tables as the kernel lists them, batches applied all or nothing) and a [`TransitKernel`]. The
//! contract suites of [`crate::contract`] hold it and `seam-linux` to the same behaviour.

use std::collections::BTreeMap;
use std::sync::Mutex;

use seam_model::MacAddr;
use seam_nft::nat::{NatOp, ObservedNat};
use seam_nft::table::TableModel;

use crate::error::{Error, Result};
use crate::transit::{DesiredTransit, ObservedTransit, TransitKernel, TransitOp};
use crate::types::{AttachedPort, LinkOp, Observed, ObservedSegment, PodAttach, UnderlayInterface};
use crate::{Firewall, NodeKernel};

/// The fake kernel's state, open for assertions.
#[derive(Debug, Default, Clone)]
pub struct FakeState {
    /// What `observe` reports.
    pub observed: Observed,
    /// Attachments by host port name.
    pub attachments: BTreeMap<String, PodAttach>,
    /// `table inet seam` as a listing reads it back ([`TableModel::listed`]); `None`: absent.
    pub table: Option<TableModel>,
    /// How many whole tables were applied.
    pub ruleset_applies: usize,
    /// The in-place changes applied, in order.
    pub deltas: Vec<seam_nft::FirewallDelta>,
    /// `table ip seam-nat` as a listing reads it back; `None`: absent.
    pub nat: Option<ObservedNat>,
    /// The transit as `observe_transit` reports it (`device_ok` is worked out from
    /// `transit_device` and the desired state).
    pub transit: ObservedTransit,
    /// The transit device's VNI and MAC, when it exists.
    pub transit_device: Option<(u32, MacAddr)>,
    /// Ports retired and not yet reaped.
    pub retired: Vec<String>,
    /// When set, the next `attach` fails with this message (and leaves nothing behind).
    pub fail_next_attach: Option<String>,
    /// When set, the next `apply_delta` fails with this message (and changes nothing).
    pub fail_next_delta: Option<String>,
    /// While set, every `apply_ruleset` and `apply_delta` fails with this message (and changes
    /// nothing): a kernel that refuses the table.
    pub fail_firewall: Option<String>,
    /// LoadBalancer addresses Seam added, by interface (what `observe_lb` reports).
    pub lb_addresses: BTreeMap<String, std::collections::BTreeSet<std::net::Ipv4Addr>>,
    /// Gratuitous ARP announcements sent, in order (interface, address), one per frame.
    pub announcements: Vec<(String, std::net::Ipv4Addr)>,
    /// The conntrack entries deletions were asked for, in order.
    pub conntrack_deleted: Vec<seam_nft::conntrack::StaleFlow>,
    /// Packets and bytes the rules with these comments have counted, as `rule_counters`
    /// reports them while the table exists.
    pub counters: BTreeMap<String, seam_nft::listing::RuleCounter>,
    /// Interfaces by name, as `underlay_interface` reports them (set by a test: the node's
    /// underlay, whose address it may change).
    pub interfaces: BTreeMap<String, UnderlayInterface>,
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
        let s = self.lock()?;
        let mut observed = s.observed.clone();
        // One routing table: the transit's direct routes are what the segments see.
        observed.routes = s.transit.direct_routes.clone();
        Ok(observed)
    }

    async fn apply(&self, op: &LinkOp) -> Result<()> {
        let mut s = self.lock()?;
        let o = &mut s.observed;
        match op {
            LinkOp::EnsureSegment { spec, underlay } => {
                let rebuilt = o
                    .segments
                    .get(&spec.vni)
                    .is_some_and(|s| s.vxlan_local.is_some_and(|ip| ip != underlay.ip));
                if rebuilt {
                    // A new device: the old one's entries went with it.
                    o.fdb.retain(|e| e.0 != spec.vni);
                    o.neighbours.retain(|e| e.0 != spec.vni);
                }
                o.segments.insert(
                    spec.vni,
                    ObservedSegment {
                        bridge_ok: true,
                        vxlan_ok: true,
                        gateway_ok: true,
                        vxlan_local: Some(underlay.ip),
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
                o.unhairpinned.remove(host_ifname);
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
                o.unhairpinned.remove(ifname);
            }
            LinkOp::SetHairpin { ifname } => {
                o.unhairpinned.remove(ifname);
            }
            // Frames to endpoints: nothing the fake's state holds.
            LinkOp::AnnounceRouted { .. } => {}
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
        s.observed.unhairpinned.remove(&spec.host_ifname);
        s.attachments.insert(spec.host_ifname.clone(), spec.clone());
        Ok(AttachedPort {
            host_mac: host_mac(&spec.host_ifname),
        })
    }

    async fn detach(&self, host_ifname: &str) -> Result<()> {
        let mut s = self.lock()?;
        s.retired.retain(|r| r != host_ifname);
        s.observed.host_ports.remove(host_ifname);
        s.observed.unhairpinned.remove(host_ifname);
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

    async fn underlay_interface(&self, ifname: &str) -> Result<UnderlayInterface> {
        self.lock()?
            .interfaces
            .get(ifname)
            .cloned()
            .ok_or_else(|| Error::Kernel {
                operation: "get link",
                object: ifname.to_string(),
                errno: Some(19),
                message: "no such device".into(),
            })
    }
}

fn firewall_error(object: &str, errno: Option<i32>, message: impl ToString) -> Error {
    Error::Kernel {
        operation: "apply firewall",
        object: object.to_string(),
        errno,
        message: message.to_string(),
    }
}

impl Firewall for FakeKernel {
    async fn apply_ruleset(&self, table: &TableModel) -> Result<()> {
        let mut s = self.lock()?;
        if let Some(message) = s.fail_firewall.clone() {
            let object = format!("table {}", seam_nft::names::TABLE);
            return Err(firewall_error(&object, None, message));
        }
        s.table = Some(table.listed());
        s.ruleset_applies += 1;
        Ok(())
    }

    async fn apply_delta(&self, delta: &seam_nft::FirewallDelta) -> Result<()> {
        let mut s = self.lock()?;
        let object = format!("table {}", seam_nft::names::TABLE);
        if let Some(message) = s.fail_next_delta.take().or_else(|| s.fail_firewall.clone()) {
            return Err(firewall_error(&object, None, message));
        }
        let Some(table) = s.table.as_mut() else {
            return Err(firewall_error(&object, Some(2), "no such table"));
        };
        // Two batches, each all or nothing, as the kernel applies them.
        for batch in [&delta.switch, &delta.cleanup] {
            table
                .apply_batch(batch)
                .map_err(|e| firewall_error(&object, Some(2), e))?;
        }
        s.deltas.push(delta.clone());
        Ok(())
    }

    async fn list_table(&self) -> Result<Option<TableModel>> {
        Ok(self.lock()?.table.clone())
    }

    async fn apply_nat(&self, op: &NatOp) -> Result<()> {
        let mut s = self.lock()?;
        s.nat = match op {
            NatOp::Replace(desired) => Some(desired.observed()),
            NatOp::Delete => None,
        };
        Ok(())
    }

    async fn list_nat(&self) -> Result<Option<ObservedNat>> {
        Ok(self.lock()?.nat.clone())
    }
}

impl crate::RuleCounters for FakeKernel {
    async fn rule_counters(&self) -> Result<BTreeMap<String, seam_nft::listing::RuleCounter>> {
        let s = self.lock()?;
        // Like the kernel: no table, no counters. (The fake keeps the table as a listing reads
        // it back, chains without their rules, so it reports the counters a test set.)
        if s.table.is_none() {
            return Ok(BTreeMap::new());
        }
        Ok(s.counters.clone())
    }
}

impl crate::lb::LbKernel for FakeKernel {
    async fn observe_lb(
        &self,
        ifname: &str,
    ) -> Result<std::collections::BTreeSet<std::net::Ipv4Addr>> {
        Ok(self
            .lock()?
            .lb_addresses
            .get(ifname)
            .cloned()
            .unwrap_or_default())
    }

    async fn apply_lb(&self, ifname: &str, op: &crate::lb::LbOp) -> Result<()> {
        use crate::lb::{LbOp, ANNOUNCEMENTS};
        let mut s = self.lock()?;
        let held = s.lb_addresses.entry(ifname.to_string()).or_default();
        let announce = match *op {
            LbOp::Add { addr, .. } => {
                held.insert(addr);
                Some(addr)
            }
            LbOp::Remove(addr) => {
                held.remove(&addr);
                None
            }
            LbOp::Refresh { addr, announce, .. } => {
                held.insert(addr);
                announce.then_some(addr)
            }
        };
        if let Some(addr) = announce {
            for _ in 0..ANNOUNCEMENTS {
                s.announcements.push((ifname.to_string(), addr));
            }
        }
        Ok(())
    }
}

impl crate::lb::ConntrackKernel for FakeKernel {
    async fn delete_conntrack(&self, flows: &[seam_nft::conntrack::StaleFlow]) -> Result<usize> {
        let mut s = self.lock()?;
        s.conntrack_deleted.extend_from_slice(flows);
        Ok(flows.len())
    }
}

fn no_transit_device() -> Error {
    Error::Kernel {
        operation: "transit",
        object: crate::TRANSIT_DEVICE.to_string(),
        errno: Some(19),
        message: "no such device".into(),
    }
}

impl TransitKernel for FakeKernel {
    async fn observe_transit(&self, desired: &DesiredTransit) -> Result<ObservedTransit> {
        let s = self.lock()?;
        let mut observed = s.transit.clone();
        observed.routed_neighbours = s
            .observed
            .neighbours
            .iter()
            .filter(|&&(vni, _, mac)| mac == seam_model::gateway_mac(vni))
            .map(|&(_, ip, _)| ip)
            .collect();
        observed.exists = s.transit_device.is_some();
        observed.device_ok = s.transit_device == Some((desired.vni, desired.mac));
        Ok(observed)
    }

    async fn apply_transit(&self, op: &TransitOp) -> Result<()> {
        let mut guard = self.lock()?;
        let s = &mut *guard;
        let device = s.transit_device.is_some();
        let t = &mut s.transit;
        match op {
            TransitOp::EnsureDevice { vni, mac, .. } => {
                s.transit_device = Some((*vni, *mac));
            }
            TransitOp::DeleteDevice => {
                // Everything on the device goes with it.
                s.transit_device = None;
                t.routes.clear();
                t.neighbours.clear();
                t.fdb.clear();
                t.egress_routes.clear();
                t.reply_routes.retain(|(_, _, direct)| *direct);
                t.gateway_routes.retain(|(_, _, direct)| *direct);
            }
            TransitOp::LooseUnderlay { .. } => t.underlay_loose = true,
            TransitOp::NextHopAdd { ip, mac } => {
                if !device {
                    return Err(no_transit_device());
                }
                t.neighbours.retain(|(i, _)| i != ip);
                t.neighbours.insert((*ip, *mac));
                t.fdb.retain(|(m, _)| m != mac);
                t.fdb.insert((*mac, *ip));
            }
            TransitOp::NextHopDel { ip, mac } => {
                t.neighbours.remove(&(*ip, *mac));
                t.fdb.remove(&(*mac, *ip));
            }
            TransitOp::RouteAdd { dst, via, direct } => {
                if !direct && !device {
                    return Err(no_transit_device());
                }
                // `ip route replace`: one route per destination, of either kind.
                t.routes.retain(|(d, _)| d != dst);
                t.direct_routes.retain(|(d, _)| d != dst);
                if *direct {
                    t.direct_routes.insert((*dst, *via));
                } else {
                    t.routes.insert((*dst, *via));
                }
            }
            TransitOp::RouteDel { dst, via, direct } => {
                if *direct {
                    t.direct_routes.remove(&(*dst, *via));
                } else {
                    t.routes.remove(&(*dst, *via));
                }
            }
            TransitOp::EgressRouteAdd { via } => {
                if !device {
                    return Err(no_transit_device());
                }
                t.egress_routes.clear();
                t.egress_routes.insert(*via);
            }
            TransitOp::EgressRouteDel { via } => {
                t.egress_routes.remove(via);
            }
            TransitOp::EgressRuleAdd { rule, source } => {
                t.egress_rules.insert((*rule, *source));
            }
            TransitOp::EgressRuleDel { rule, source } => {
                t.egress_rules.remove(&(*rule, *source));
            }
            TransitOp::ReplyRouteAdd { slot, via, direct } => {
                if !direct && !device {
                    return Err(no_transit_device());
                }
                // `ip route replace default … table T`: one default route per table.
                t.reply_routes.retain(|(s, _, _)| s != slot);
                t.reply_routes.insert((*slot, *via, *direct));
            }
            TransitOp::ReplyRouteDel { slot, via, direct } => {
                t.reply_routes.remove(&(*slot, *via, *direct));
            }
            TransitOp::ReplyRuleAdd { slot } => {
                t.reply_rules.insert(*slot);
            }
            TransitOp::ReplyRuleDel { slot } => {
                t.reply_rules.remove(slot);
            }
            TransitOp::GatewayRouteAdd { dst, via, direct } => {
                if !direct && !device {
                    return Err(no_transit_device());
                }
                t.gateway_routes.retain(|(d, _, _)| d != dst);
                t.gateway_routes.insert((*dst, *via, *direct));
            }
            TransitOp::GatewayRouteDel { dst, via, direct } => {
                t.gateway_routes.remove(&(*dst, *via, *direct));
            }
            TransitOp::GatewayRuleAdd => t.gateway_rule = true,
            TransitOp::GatewayRuleDel => t.gateway_rule = false,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The contract suites of [`crate::contract`] against the fake.

    use futures::executor::block_on;

    use super::FakeKernel;
    use crate::contract;

    #[test]
    fn absent_tables_list_as_none() {
        block_on(contract::absent_tables_list_as_none(&FakeKernel::default()));
    }

    #[test]
    fn a_table_written_whole_lists_as_written() {
        block_on(contract::a_table_written_whole_lists_as_written(
            &FakeKernel::default(),
        ));
    }

    #[test]
    fn a_table_without_endpoints_lists_empty_maps() {
        block_on(contract::a_table_without_endpoints_lists_empty_maps(
            &FakeKernel::default(),
        ));
    }

    #[test]
    fn a_delta_changes_what_the_table_lists() {
        block_on(contract::a_delta_changes_what_the_table_lists(
            &FakeKernel::default(),
        ));
    }

    #[test]
    fn the_nat_table_round_trips() {
        block_on(contract::the_nat_table_round_trips(&FakeKernel::default()));
    }

    #[test]
    fn a_node_converges_and_attaches() {
        let underlay = crate::Underlay {
            ifname: "eth0".into(),
            ip: std::net::Ipv4Addr::new(198, 18, 0, 11),
            prefix_len: 24,
        };
        block_on(contract::a_node_converges_and_attaches(
            &FakeKernel::default(),
            contract::sample_node(underlay),
            "/run/netns/sandbox",
        ));
    }

    #[test]
    fn the_transit_is_observed_as_applied() {
        let underlay = crate::Underlay {
            ifname: "eth0".into(),
            ip: std::net::Ipv4Addr::new(198, 18, 0, 11),
            prefix_len: 24,
        };
        block_on(contract::the_transit_is_observed_as_applied(
            &FakeKernel::default(),
            contract::sample_transit(underlay),
            contract::sample_nat(0),
        ));
    }

    #[test]
    fn the_underlay_interface_reads_back() {
        let want = crate::UnderlayInterface {
            addresses: vec![
                "198.18.0.11/24".parse().unwrap(),
                "192.0.2.5/28".parse().unwrap(),
            ],
            mac: Some(seam_model::MacAddr([2, 0, 0, 0, 0, 0x11])),
            mtu: 1400,
        };
        let kernel = FakeKernel::default();
        kernel.with_state(|s| {
            s.interfaces.insert("eth0".into(), want.clone());
        });
        block_on(contract::the_underlay_interface_reads_back(
            &kernel, "eth0", &want,
        ));
    }

    #[test]
    fn a_new_underlay_address_rebinds_the_vxlan_devices() {
        let underlay = |last| crate::Underlay {
            ifname: "eth0".into(),
            ip: std::net::Ipv4Addr::new(198, 18, 0, last),
            prefix_len: 24,
        };
        block_on(contract::a_new_underlay_address_rebinds_the_vxlan_devices(
            &FakeKernel::default(),
            underlay(11),
            underlay(12),
        ));
    }
}
