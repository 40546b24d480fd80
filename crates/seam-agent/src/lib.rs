//! The node agent as a library.
//!
//! [`Agent`] serves `seam-cni` on a Unix socket ([`server`]), keeps durable address leases
//! ([`leases`]), follows the controller ([`sync`]), reconciles the node's dataplane
//! ([`reconcile`]) and gives idle address blocks back ([`blocks`]). It is generic over
//! [`seam_dataplane::NodeKernel`]: `seamd` plugs in the rtnetlink kernel, tests plug in the
//! in-memory fake.
//!
//! Architecture invariant: a lease is written to the local store before any interface is
//! configured, and a restart rolls back every lease that never completed; the dataplane is never
//! flushed — the reconcile loop adopts what matches and removes only what is stale, and it does
//! not run at all before the first full view of the controller has arrived.
//! Start reading at [`Agent::start`].

#![warn(missing_docs)]

pub mod api;
mod attach;
pub mod blocks;
mod config;
mod error;
pub mod flows;
pub mod gateway;
pub mod identity;
pub mod leases;
pub mod metrics;
pub mod realization;
pub mod reconcile;
pub mod server;
pub mod services;
pub mod sync;
pub mod transit;
pub mod underlay;
mod view;

pub use config::{AgentConfig, DEFAULT_REASSERT_INTERVAL};
pub use error::{AgentError, NodeCertError, Result};
pub use view::ClusterView;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use seam_dataplane::{Firewall, NodeKernel};
use seam_store::AnyStore;
use tokio::sync::{mpsc, Mutex, Notify, RwLock};

/// Everything the agent's tasks share.
pub struct Agent<K> {
    /// Static configuration.
    pub config: AgentConfig,
    /// The kernel.
    pub kernel: Arc<K>,
    /// The controller.
    pub client: seam_client::ControllerClient,
    /// Durable leases and their in-memory index.
    pub leases: Mutex<leases::LeaseBook>,
    /// What the agent knows of the cluster.
    pub view: RwLock<ClusterView>,
    /// Serializes creation of segment devices on the ADD path.
    segment_lock: Mutex<()>,
    /// VNIs whose bridge and VXLAN device the ADD path has seen or made.
    ready_segments: Mutex<std::collections::BTreeSet<u32>>,
    /// The firewall table the kernel holds, as far as the agent knows; `None` until it has read the
    /// kernel's table back or written it whole (at start, and after a failed change).
    pub applied_firewall: Mutex<Option<seam_nft::table::TableModel>>,
    /// The renderer's build ([`seam_firewall::render::table::Renderer::stamp`]) whose table
    /// `applied_firewall` holds, 0 when it holds another (read back from the kernel) or none: the
    /// renderer's delta starts from its last build's table, so it is the kernel's change only
    /// when that is what the kernel holds.
    pub applied_firewall_stamp: std::sync::atomic::AtomicU64,
    /// Compiles the node's firewall from the view on every pass, recomputing only what changed, and
    /// renders it into kernel objects, rendering only the rules and sets that changed.
    pub firewall_compiler: Mutex<(
        seam_firewall::IncrementalCompiler,
        seam_firewall::render::table::Renderer,
    )>,
    /// With flow recording on: the rule behind every sample prefix of the table, as of the last
    /// compile (see [`flows`]).
    pub flow_rules: tokio::sync::watch::Sender<Arc<flows::RuleMap>>,
    /// This node's Services as of the last pass (each Service's frontends, the node's result),
    /// brought up to the view by what changed.
    pub services: Mutex<services::ServiceCache>,
    /// Wakes the reaper of retired host ports.
    pub reap_now: Notify,
    /// Wakes the reconcile loop.
    pub reconcile_now: Notify,
    /// Where this node is on the underlay now (starts as the configuration's; see [`underlay`]).
    underlay: tokio::sync::watch::Sender<underlay::NodeUnderlay>,
    /// Wakes the follower of the underlay interface ([`underlay::run`]): `seamd` calls it on
    /// every change of the interface's addresses or link.
    pub underlay_now: Notify,
    /// Set once the first full view of the controller has been applied.
    pub synced: AtomicBool,
    /// Set while the agent follows the controller's watch (cleared when it is lost).
    pub controller_connected: AtomicBool,
    /// Set by a reconcile pass that found a local VM's port not made yet by the hypervisor: the
    /// loop then looks again soon instead of waiting for the next event.
    pub vm_ports_missing: AtomicBool,
    /// Set by a reconcile pass that changed neighbour entries of routed segments: the transit
    /// loop plans at its next poll, since a route it held for a gateway-MAC entry may now go
    /// (`seam_dataplane::routed`).
    pub transit_now: AtomicBool,
    /// Segments that vanished from the controller while live leases use them (reported once).
    orphaned_segments: std::sync::Mutex<std::collections::BTreeSet<String>>,
    publish_tx: mpsc::UnboundedSender<sync::Publish>,
    /// The Services the kernel translates now, as last applied (published by the Service
    /// reconcile after the table that holds them is in the kernel): [`gateway::run`] compares
    /// each new value with the one before and deletes the conntrack entries of removed
    /// backends.
    pub applied_services: tokio::sync::watch::Sender<Arc<seam_nft::services::DesiredServices>>,
    /// When this gateway's node lease was last renewed (`None`: not yet, or not a gateway): its
    /// LoadBalancer addresses live as long as the lease does.
    pub lease_renewed_at: std::sync::Mutex<Option<std::time::Instant>>,
    /// Endpoints of this node the controller refuses for now, by name, with its answer: the
    /// publisher keeps retrying them, and CHECK of their attachment reports the refusal.
    refused: Mutex<std::collections::BTreeMap<String, String>>,
    /// What this node enforces, reported to the controller ([`realization`]).
    realization: std::sync::Mutex<realization::Realization>,
    /// Wakes the realization reporter.
    pub realization_changed: Notify,
    /// What the agent counts (served by [`api`] on `/metrics`).
    pub metrics: metrics::AgentMetrics,
    /// Set once the agent has written (or adopted and brought up to date) the node's firewall
    /// table: with [`Agent::synced`], what readiness waits for.
    pub table_written: AtomicBool,
}

/// Handles of a running agent's background tasks.
pub struct Running<K> {
    /// The shared agent.
    pub agent: Arc<Agent<K>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl<K> Running<K> {
    /// Stops every background task (the dataplane stays as it is).
    pub fn abort(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

impl<K: NodeKernel + Firewall + 'static> Agent<K> {
    /// Opens the lease store, rolls back leases a crash left half-done, then starts the CNI
    /// server, the controller sync and the reconcile loop.
    pub async fn start(config: AgentConfig, kernel: K, store: AnyStore) -> Result<Running<K>> {
        Self::start_with_tls(config, None, kernel, store).await
    }

    /// Like [`Agent::start`], with TLS settings for `https://` controller endpoints (the node's
    /// certificate, see [`identity::NodePki::client_tls`]).
    pub async fn start_with_tls(
        config: AgentConfig,
        tls: Option<seam_client::ClientTls>,
        kernel: K,
        store: AnyStore,
    ) -> Result<Running<K>> {
        let client = seam_client::ControllerClient::new(&config.controller).map_err(|source| {
            AgentError::Controller {
                step: "parse endpoint",
                source,
            }
        })?;
        let client = match tls {
            Some(tls) => client.with_tls(tls),
            None => client,
        };
        let kernel = Arc::new(kernel);
        let mut book = leases::LeaseBook::open(store, config.quarantine_ms).await?;
        let rolled_back = book.roll_back_pending(kernel.as_ref()).await?;
        if rolled_back > 0 {
            tracing::warn!(
                count = rolled_back,
                "rolled back attachments a crash left half-done"
            );
        }
        let cached = book.cached_segments().await?;
        let (publish_tx, publish_rx) = mpsc::unbounded_channel();
        let firewall_compiler = Mutex::new((
            seam_firewall::IncrementalCompiler::new(config.node.clone()),
            seam_firewall::render::table::Renderer::default(),
        ));
        let services = Mutex::new(services::ServiceCache::new(
            config.node.clone(),
            config.role,
        ));
        let config_node = config.node.clone();
        let started_on = underlay::NodeUnderlay {
            underlay: config.underlay.clone(),
            mac: config.underlay_mac,
        };
        let agent = Arc::new(Agent {
            config,
            kernel,
            client,
            leases: Mutex::new(book),
            view: RwLock::new(ClusterView::with_segments(cached)),
            segment_lock: Mutex::new(()),
            reap_now: Notify::new(),
            applied_firewall: Mutex::new(None),
            applied_firewall_stamp: std::sync::atomic::AtomicU64::new(0),
            firewall_compiler,
            services,
            ready_segments: Mutex::new(std::collections::BTreeSet::new()),
            reconcile_now: Notify::new(),
            underlay: tokio::sync::watch::Sender::new(started_on),
            underlay_now: Notify::new(),
            synced: AtomicBool::new(false),
            controller_connected: AtomicBool::new(false),
            vm_ports_missing: AtomicBool::new(false),
            transit_now: AtomicBool::new(false),
            orphaned_segments: std::sync::Mutex::new(std::collections::BTreeSet::new()),
            publish_tx,
            refused: Mutex::new(std::collections::BTreeMap::new()),
            applied_services: tokio::sync::watch::Sender::new(Arc::default()),
            lease_renewed_at: std::sync::Mutex::new(None),
            flow_rules: tokio::sync::watch::Sender::new(Arc::default()),
            realization: std::sync::Mutex::new(realization::Realization::new(&config_node)),
            realization_changed: Notify::new(),
            metrics: metrics::AgentMetrics::default(),
            table_written: AtomicBool::new(false),
        });
        let listener = server::bind(&agent.config.socket)?;
        let mut tasks = vec![
            tokio::spawn(server::serve(agent.clone(), listener)),
            tokio::spawn(sync::run(agent.clone())),
            tokio::spawn(sync::publisher(agent.clone(), publish_rx)),
            tokio::spawn(reconcile::run(agent.clone())),
            tokio::spawn(reconcile::reaper(agent.clone())),
            tokio::spawn(blocks::run(agent.clone())),
            tokio::spawn(realization::run(agent.clone())),
            tokio::spawn(underlay::run(agent.clone())),
        ];
        // A gateway's lease says it is alive: LoadBalancer addresses are served by the gateways
        // that hold one. A gateway without an external interface would be given addresses it
        // never puts anywhere, so it holds none.
        if agent.config.role == seam_model::NodeRole::Gateway && agent.config.serves_lb_addresses {
            tasks.push(tokio::spawn(gateway::renew_lease(agent.clone())));
        }
        Ok(Running { agent, tasks })
    }

    /// True once the agent can serve ADD (it has had a full view of the controller).
    pub fn is_ready(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// What this node enforces ([`realization`]).
    pub fn realization(&self) -> std::sync::MutexGuard<'_, realization::Realization> {
        // Its state stays consistent whatever panicked while holding it: each change is one
        // assignment.
        self.realization
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The endpoints of this node the controller refuses for now (the publisher keeps
    /// retrying them), by name, with the controller's answer.
    pub async fn refused_endpoints(&self) -> std::collections::BTreeMap<String, String> {
        self.refused.lock().await.clone()
    }
}

impl<K> Agent<K> {
    /// Where this node is on the underlay now: its address and prefix length (which its
    /// devices are bound to and its `Node` publishes) and its MAC. Starts as
    /// [`AgentConfig::underlay`] and follows the interface ([`underlay`]).
    pub fn underlay(&self) -> underlay::NodeUnderlay {
        self.underlay.borrow().clone()
    }

    /// Whether the agent is ready for traffic (`GET /readyz`): after its first full view of
    /// the controller and its first write of the node's firewall table; `Err` says what it
    /// still waits for.
    pub fn readiness(&self) -> std::result::Result<(), &'static str> {
        if !self.synced.load(Ordering::Acquire) {
            return Err("waiting for the first full view of the controller");
        }
        if !self.table_written.load(Ordering::Acquire) {
            return Err("waiting for the first write of the node's firewall table");
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch (lease and quarantine times).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
