//! The level-triggered loop that keeps the node's dataplane equal to the desired state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use seam_dataplane::{
    host_ifname, plan, DesiredNode, Firewall, LinkOp, NodeKernel, RemoteEntry, SegmentSpec,
};
use seam_model::{gateway_mac, vm_port_name, EndpointKind};
use seam_nft::services::DesiredServices;
use seam_nft::table::{self, TableModel};

use crate::metrics::ApplyMode;
use crate::Agent;

/// Even without events, look again this often (catches drift made by hand).
const RESYNC: Duration = Duration::from_secs(30);

/// While a local VM's port is missing (the hypervisor has not made its tap yet), look again
/// this often, so a VM's first packet does not wait for [`RESYNC`].
const VM_PORT_POLL: Duration = Duration::from_millis(100);

/// Runs forever. Waits for the first full controller view: before it, "not desired" would
/// mean "not known yet", and removing it would cut traffic.
pub async fn run<K: NodeKernel + Firewall + 'static>(agent: Arc<Agent<K>>) {
    loop {
        let wait = if agent
            .vm_ports_missing
            .load(std::sync::atomic::Ordering::Acquire)
        {
            VM_PORT_POLL
        } else {
            RESYNC
        };
        let _ = tokio::time::timeout(wait, agent.reconcile_now.notified()).await;
        if !agent.is_ready() {
            continue;
        }
        // Coalesce a burst of watch events into one pass.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let started = std::time::Instant::now();
        let result = reconcile_once(&agent).await;
        agent
            .metrics
            .observe_reconcile(result.is_ok(), started.elapsed());
        if let Err(e) = result {
            tracing::warn!(error = %e, "reconcile failed; will retry");
            tokio::time::sleep(Duration::from_millis(500)).await;
            agent.reconcile_now.notify_one();
        }
    }
}

/// The node's desired dataplane, from the view and the leases.
pub async fn desired<K: NodeKernel + Firewall + 'static>(agent: &Agent<K>) -> DesiredNode {
    let view = agent.view.read().await;
    let spec = |s: &seam_model::Segment| SegmentSpec {
        vni: s.vni,
        gateway: Ipv4Net::new(s.gateway, s.subnet.prefix_len()).unwrap_or(s.subnet),
        gateway_mac: gateway_mac(s.vni),
        mtu: agent.config.mtu,
    };
    let mut segments: BTreeMap<u32, SegmentSpec> =
        view.segments.values().map(|s| (s.vni, spec(s))).collect();
    // One read: the devices' local address and the routed decisions from the same address.
    let underlay = agent.underlay().underlay;
    let local = crate::transit::local_node(agent, &underlay);
    // Decided once per peer node, not per endpoint.
    let routed_peers: BTreeSet<&str> = view
        .nodes
        .values()
        .filter(|n| seam_dataplane::routed::routes_segments(&local, n))
        .map(|n| n.name.as_str())
        .collect();
    let mut remote = BTreeSet::new();
    for ep in view.endpoints.values() {
        if ep.node == agent.config.node {
            continue;
        }
        let (Some(seg), Some(node)) = (view.segments.get(&ep.segment), view.nodes.get(&ep.node))
        else {
            continue;
        };
        remote.insert(RemoteEntry {
            vni: seg.vni,
            ip: ep.ip,
            mac: ep.mac,
            node_ip: node.underlay_ip,
            routed: seam_dataplane::routed::endpoint_routed(
                seg.forwarding,
                routed_peers.contains(node.name.as_str()),
            ),
        });
    }
    // VMs running here: their ports (made by the hypervisor) go into their segment's bridge.
    let vm_ports = view
        .endpoints
        .values()
        .filter(|e| e.kind == EndpointKind::Vm && e.node == agent.config.node)
        .filter_map(|e| {
            let vni = view.segments.get(&e.segment)?.vni;
            let name = e.name.split_once('/').map_or(e.name.as_str(), |(_, n)| n);
            Some((vm_port_name(name), vni))
        })
        .collect();
    let book = agent.leases.lock().await;
    // A live pod keeps its port and its segment's devices even when the segment vanished from
    // the controller (deleted under it, or a record lost): removing them would cut a running
    // pod off; the segment as cached when the pod was attached still describes them.
    let mut orphaned = BTreeSet::new();
    let local_ports = book
        .leases()
        .filter_map(|l| {
            let segment = match view.segments.get(&l.segment) {
                Some(segment) => segment,
                None => {
                    let cached = book.cached_segment(&l.segment)?;
                    orphaned.insert(cached.name.clone());
                    segments.entry(cached.vni).or_insert_with(|| spec(cached));
                    cached
                }
            };
            Some((
                host_ifname(&l.key.network, &l.key.container_id, &l.key.ifname),
                segment.vni,
            ))
        })
        .collect();
    report_orphaned(agent, orphaned);
    DesiredNode {
        underlay,
        segments,
        remote,
        local_ports,
        vm_ports,
    }
}

/// Says once per segment that live pods use a segment the controller no longer has (and once
/// when it is back or no longer used).
fn report_orphaned<K>(agent: &Agent<K>, now: BTreeSet<String>) {
    let mut reported = agent
        .orphaned_segments
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for name in now.difference(&reported) {
        tracing::error!(segment = %name, "live pods on this node use a segment the controller no longer has; keeping their ports and the segment's devices (their endpoints are published again and refused until the segment is back)");
    }
    for name in reported.difference(&now) {
        tracing::info!(segment = %name, "no live pod of this node uses a missing segment any more");
    }
    *reported = now;
}

/// The change the renderer made to the policy part of its table in one pass: the delta from the
/// table of its build `from` to that of its build `to` ([`Renderer::stamp`]).
///
/// [`Renderer::stamp`]: seam_firewall::render::table::Renderer::stamp
#[derive(Debug)]
pub struct PolicyChange {
    /// The build the delta starts from (0: the empty table).
    pub from: u64,
    /// The build it ends in.
    pub to: u64,
    /// The policy part's delta (the Services part left as it was).
    pub delta: seam_nft::FirewallDelta,
}

/// Compiles this node's firewall from the view (policies, tenants, namespaces, endpoints; only the
/// node's own endpoints get rules) into the kernel objects that realize it, with what the node
/// translates for Services ([`crate::services`]) in the same table; returns the table, the change
/// the renderer made to its policy part, and the Services it holds.
pub async fn firewall_ruleset<K: NodeKernel + Firewall + 'static>(
    agent: &Agent<K>,
) -> Result<(TableModel, PolicyChange, Arc<DesiredServices>), String> {
    // What changed is taken and compiled under one hold of the view (write, then read): no event can
    // land between the two and be missed. The compiler compares only the named objects, or everything
    // after a re-list and on its first pass.
    let mut view = agent.view.write().await;
    let changes = view.take_firewall_changes();
    let service_changes = view.take_service_changes();
    let view = view.downgrade();
    // What this pass enforces once its table is in the kernel: the same view, the same changes.
    agent.realization().observe(&view, &changes);
    // Services first, from what changed for them only: their result is kept (and written with the
    // next policy that compiles) even when policy fails to compile below.
    let (desired_services, mut services) = {
        let mut cache = agent.services.lock().await;
        let (desired, _) = cache.sync(&view, &service_changes);
        // A node with nothing to translate has no Services part at all: no nat hooks on its
        // packets, and its table is the policy table alone (as before Services existed). The
        // first frontend brings the part back whole (`delta` from a disabled part).
        let services = if desired.frontends.is_empty() && desired.lb_addresses.is_empty() {
            seam_nft::services::ServiceModel::default()
        } else {
            cache.model().clone()
        };
        (desired, services)
    };
    let mut guard = agent.firewall_compiler.lock().await;
    let (compiler, renderer) = &mut *guard;
    let keyed = seam_firewall::KeyedView {
        tenants: &view.tenants,
        namespaces: &view.namespaces,
        endpoints: &view.endpoints,
        documents: &view.policies,
    };
    let (ruleset, warnings) = compiler
        .sync_changes(keyed, &changes)
        .map_err(|e| e.to_string())?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let from = renderer.stamp();
    let (table, delta) = renderer.model_and_delta(ruleset);
    // The agent keeps the table as what the kernel holds (its recovery path diffs against it).
    let mut model = table.clone();
    let change = PolicyChange {
        from,
        to: renderer.stamp(),
        delta,
    };
    if let (Some(sampling), true) = (renderer.sampling(), services.enabled) {
        // Refusals of frontends without backends are verdicts too.
        services.refusal_sampling = Some(seam_nft::services::RefusalSampling::of(&sampling));
    }
    if renderer.sampling().is_some() {
        // What each sample prefix of this table stands for, for the flow recorder.
        let rules = seam_firewall::flows::sampled_rules(ruleset);
        agent
            .flow_rules
            .send_replace(Arc::new(crate::flows::decode::rule_map(&rules)));
    }
    // One table, one write: policy and Services together.
    model.services = services;
    Ok((model, change, desired_services))
}

/// Observes once, plans, applies every operation (continuing past failures), and reports how
/// many operations it ran.
pub async fn reconcile_once<K: NodeKernel + Firewall + 'static>(
    agent: &Agent<K>,
) -> Result<usize, seam_dataplane::Error> {
    let _guard = agent.segment_lock.lock().await;
    // Observe before reading the leases: an ADD reserves its lease before it creates its port,
    // so every port seen here that is still wanted has its lease in `want`. The other order
    // deletes the port of an ADD that ran between the two reads (its lease too new for `want`,
    // its port old enough for `observed`).
    let observed = agent.kernel.observe().await?;
    let want = desired(agent).await;
    let ops = plan(&want, &observed);
    let vm_ports_missing = want
        .vm_ports
        .keys()
        .any(|p| !observed.vm_ports.contains_key(p));
    agent
        .vm_ports_missing
        .store(vm_ports_missing, std::sync::atomic::Ordering::Release);
    let mut first_error = None;
    for op in &ops {
        let result = match op {
            // The plan was made from a snapshot; by now an ADD may have leased this very
            // attachment again (a re-ADD after DEL reuses the derived port name). Decide and
            // delete under the lease lock, so no ADD can lease it in between.
            LinkOp::DeletePort { host_ifname: port } => {
                let book = agent.leases.lock().await;
                let leased = book.leases().any(|l| {
                    host_ifname(&l.key.network, &l.key.container_id, &l.key.ifname) == *port
                });
                if leased {
                    continue;
                }
                agent.kernel.apply(op).await
            }
            _ => agent.kernel.apply(op).await,
        };
        if let Err(e) = result {
            tracing::warn!(?op, error = %e, "dataplane operation failed");
            first_error.get_or_insert(e);
        }
    }
    if !ops.is_empty() {
        tracing::info!(operations = ops.len(), "dataplane reconciled");
    }
    if ops
        .iter()
        .any(|op| matches!(op, LinkOp::NeighAdd { .. } | LinkOp::NeighDel { .. }))
    {
        agent
            .transit_now
            .store(true, std::sync::atomic::Ordering::Release);
    }
    // The firewall follows the same level-triggered pass: compile from the view, then change the
    // kernel's table in place by what differs (see `seam_nft::table`).
    let realized = match firewall_ruleset(agent).await {
        Ok((model, change, services)) => match apply_firewall(agent, model, change).await {
            Ok(()) => {
                publish_applied_services(agent, services);
                agent.realization().enforced()
            }
            Err(e) => {
                let changed = agent
                    .realization()
                    .failed(&format!("applying the firewall failed: {e}"));
                first_error.get_or_insert(e);
                changed
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "compiling the firewall failed; the previous one stays");
            agent
                .realization()
                .failed(&format!("compiling the firewall failed: {e}"))
        }
    };
    if realized {
        agent.realization_changed.notify_one();
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(ops.len()),
    }
}

/// Says which Services the kernel translates now that the table holding them is applied (what
/// follows them, the conntrack cleanup of removed backends, runs after the kernel changed).
fn publish_applied_services<K>(agent: &Agent<K>, services: Arc<DesiredServices>) {
    // The same result as last time is the same `Arc` (see `ServiceCache::sync`): nothing to say.
    agent.applied_services.send_if_modified(|applied| {
        if Arc::ptr_eq(applied, &services) {
            return false;
        }
        *applied = services;
        true
    });
}

/// Brings the kernel's table to `model`: in place from what the kernel holds (known from the last
/// pass, or read back after a start), or written whole when the kernel's table is missing or not
/// one this agent can read. An agent that restarts adopts the table: chains whose names (hashes of
/// their contents) it still wants stay as they are, with their counters, and traffic never sees a
/// table without policy. A failed change is followed by a whole, atomic rewrite.
async fn apply_firewall<K: NodeKernel + Firewall + 'static>(
    agent: &Agent<K>,
    model: TableModel,
    change: PolicyChange,
) -> Result<(), seam_dataplane::Error> {
    use std::sync::atomic::Ordering;
    let mut applied = agent.applied_firewall.lock().await;
    // Which build's table `applied` holds (0: none of the renderer's), and the table it will hold.
    let mut base = agent.applied_firewall_stamp.swap(0, Ordering::AcqRel);
    if applied.is_none() {
        match agent.kernel.list_table().await {
            Ok(Some(listed)) => {
                *applied = Some(listed);
                base = 0;
                tracing::info!("adopted the kernel's firewall table");
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "reading the kernel's firewall table failed"),
        }
    }
    // How refusals are sampled is part of the Services base chains, which change only by a
    // whole write (flow recording switched, or the Services part coming or going with it on).
    if applied
        .as_ref()
        .is_some_and(|old| old.services.refusal_sampling != model.services.refusal_sampling)
    {
        *applied = None;
    }
    let applied_now = |applied: &mut Option<TableModel>, model: TableModel| {
        *applied = Some(model);
        agent
            .applied_firewall_stamp
            .store(change.to, Ordering::Release);
    };
    if let Some(old) = applied.as_ref() {
        // The kernel holds the renderer's last table: its change is the renderer's, made from the
        // objects it touched; otherwise (a table read back, a renderer replaced) both whole
        // tables are compared.
        let delta = if base != 0 && base == change.from {
            let delta = table::with_services(change.delta, &old.services, &model.services);
            // The agent's tests hold it to the whole tables' delta (a wrong one would only show
            // as a failed change written whole).
            debug_assert_eq!(delta, table::delta(old, &model));
            delta
        } else {
            table::delta(old, &model)
        };
        if delta.is_empty() {
            table_written(agent, &model);
            applied_now(&mut applied, model);
            return Ok(());
        }
        let started = std::time::Instant::now();
        let result = agent.kernel.apply_delta(&delta).await;
        agent
            .metrics
            .observe_firewall_apply(ApplyMode::delta, result.is_ok(), started.elapsed());
        match result {
            Ok(()) => {
                tracing::info!(
                    operations = delta.switch.len() + delta.cleanup.len(),
                    micros = started.elapsed().as_micros() as u64,
                    "firewall changed in place"
                );
                table_written(agent, &model);
                applied_now(&mut applied, model);
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "changing the firewall in place failed; writing it whole");
            }
        }
    }
    *applied = None;
    let started = std::time::Instant::now();
    let result = agent.kernel.apply_ruleset(&model).await;
    agent
        .metrics
        .observe_firewall_apply(ApplyMode::whole, result.is_ok(), started.elapsed());
    match result {
        Ok(()) => {
            tracing::info!(
                sets = model.sets.len(),
                chains = model.chains.len(),
                "firewall written whole"
            );
            table_written(agent, &model);
            applied_now(&mut applied, model);
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, "applying the firewall failed");
            Err(e)
        }
    }
}

/// The kernel holds `model` now: the metrics take note of it and the agent may say it is ready.
fn table_written<K>(agent: &Agent<K>, model: &TableModel) {
    agent.metrics.table_written(model);
    agent
        .table_written
        .store(true, std::sync::atomic::Ordering::Release);
}

/// How long retired ports wait, so that the DELs of a burst share one kernel deletion.
const REAP_BATCH: Duration = Duration::from_millis(200);

/// Deletes retired host ports in batches: at start (a crash may have left some) and shortly
/// after any DEL retired one.
pub async fn reaper<K: NodeKernel + Firewall + 'static>(agent: Arc<Agent<K>>) {
    loop {
        if let Err(e) = agent.kernel.reap().await {
            tracing::warn!(error = %e, "deleting retired host ports failed; will retry");
        }
        agent.reap_now.notified().await;
        tokio::time::sleep(REAP_BATCH).await;
    }
}
