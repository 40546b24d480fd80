//! [`Controller`]: the desired-state operations behind the HTTP API, on top of the store.
//!
//! Every mutating operation validates first (nothing is written for bad input), then reads what
//! it checks against and writes with one store txn whose compares cover the keys it read
//! (`Absent` for creates, `ModRevision` for replaces and for the segment and node a block or
//! endpoint refers to). Within one process, mutating operations also take a write lock, so
//! checks that span many keys (overlapping subnets, duplicate addresses) cannot race each
//! other; across processes, only the leader writes, and every txn of a replicated leader also
//! compares the leader key's revision (its fence, see [`crate::election`]), so a deposed leader
//! commits nothing.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use seam_model::{
    is_valid_name, is_valid_segment_name, namespace_segment_name, Block, Endpoint, EndpointKind,
    FieldError, Node, ObjectKind, Segment, ValidationError, MAX_VNI,
};
use seam_store::{AnyStore, Compare, Datastore, Txn, TxnOutcome};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{watch, Mutex};

use crate::allocate::{lowest_free_subnet, lowest_free_vni};
use crate::config::{ControllerConfig, SegmentMode, FLAT_SEGMENT};
use crate::election::{ReplicaConfig, LEADER_KEY};
use crate::error::{ConfigError, Error, Result};
use crate::keys::{kind_prefix, object_key, parse_key, segment_blocks_prefix, ROOT};
use crate::metrics::{timed, StoreOp};
use crate::ownership::{
    check_block_claim, check_endpoint_namespace, check_node_underlay, check_segment_ranges,
};

/// How many times a create is retried when its compare fails (another writer got there first).
const ATTEMPTS: u32 = 8;

/// The controller: configuration, store and write lock. Cheap to clone; no global state, so
/// several may live in one process (tests, controller + agent on one machine).
#[derive(Clone)]
pub struct Controller {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: ControllerConfig,
    store: AnyStore,
    pub(crate) writes: Mutex<()>,
    stop: watch::Sender<bool>,
    /// `Some` for a replica that elects a leader with its peers.
    replica: Option<ReplicaConfig>,
    role: watch::Sender<Role>,
    /// The audit log's bookkeeping ([`crate::audit`]).
    pub(crate) audit: crate::audit::AuditLog,
    /// Per-client rate and watch limits ([`crate::limits`]).
    limiter: crate::limits::Limiter,
    /// Node identities: the registry that follows the store.
    pub(crate) identities: crate::identities::Identities,
    /// The CA that signs nodes' certificates, set once by [`Controller::with_signing`].
    signing: std::sync::OnceLock<crate::config::Signing>,
    /// The store lease of each node lease this replica renews ([`crate::node_leases`]).
    pub(crate) node_leases: crate::node_leases::NodeLeases,
    /// Flow records posted by agents, in memory ([`crate::flows`]).
    pub(crate) flows: crate::flows::Flows,
    /// What the controller counts ([`crate::metrics`]).
    metrics: crate::metrics::ControllerMetrics,
}

/// Whether this controller may write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// The only controller of its store (no election): always writes.
    Single,
    /// The elected leader: writes, each txn fenced on the leader key's `mod_revision`.
    Leader {
        /// `mod_revision` of the leader key this replica wrote.
        fence: u64,
    },
    /// A standby replica: serves reads and watches, refuses writes.
    Standby {
        /// The leader's advertised address, when known.
        leader: Option<String>,
    },
}

/// Every object at one store revision, as `GET /v1/snapshot` serves it: the wire form of
/// [`seam_model::Snapshot`] (same fields, in the same order), with the policy objects as they are stored.
/// They were typed and validated at the door; their reader types them again against its own
/// version (seam-client's snapshot decode), so one a reader cannot read (written by a newer Seam)
/// still reaches it, to be counted, named and reported rather than lost on the way.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredSnapshot {
    /// The store revision the snapshot was read at.
    pub revision: u64,
    /// All nodes.
    pub nodes: Vec<Node>,
    /// All segments.
    pub segments: Vec<Segment>,
    /// All blocks.
    pub blocks: Vec<Block>,
    /// All endpoints.
    pub endpoints: Vec<Endpoint>,
    /// All namespaces.
    pub namespaces: Vec<seam_model::Namespace>,
    /// All tenants.
    pub tenants: Vec<seam_model::Tenant>,
    /// All policy objects as stored, in store-name order.
    pub policies: Vec<serde_json::Value>,
    /// All address pools.
    pub address_pools: Vec<seam_model::AddressPool>,
    /// All Services.
    pub services: Vec<seam_model::Service>,
    /// All EndpointSlices.
    pub endpoint_slices: Vec<seam_model::EndpointSlice>,
    /// The node leases held now.
    pub node_leases: Vec<seam_model::NodeLease>,
    /// The generation of every policy object and tenant (see [`seam_model::realization`]).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub generations: std::collections::BTreeMap<String, u64>,
}

/// An object as read from the store, with its `mod_revision` for compare-and-swap.
pub(crate) struct Stored<T> {
    pub(crate) object: T,
    pub(crate) mod_revision: u64,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// A controller over `store`, after checking `config`.
    pub fn new(config: ControllerConfig, store: AnyStore) -> Result<Self, ConfigError> {
        Self::build(config, store, None)
    }

    /// A replica over a store shared with other replicas: it starts as a standby and writes
    /// only while [`Controller::run_election`] (spawned by [`crate::serve_controller`]) has
    /// made it the leader.
    pub fn replicated(
        config: ControllerConfig,
        store: AnyStore,
        replica: ReplicaConfig,
    ) -> Result<Self, ConfigError> {
        Self::build(config, store, Some(replica))
    }

    fn build(
        config: ControllerConfig,
        store: AnyStore,
        replica: Option<ReplicaConfig>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let (stop, _) = watch::channel(false);
        let role = if replica.is_some() {
            Role::Standby { leader: None }
        } else {
            Role::Single
        };
        Ok(Controller {
            inner: Arc::new(Inner {
                config,
                store,
                writes: Mutex::new(()),
                stop,
                replica,
                role: watch::Sender::new(role),
                audit: crate::audit::AuditLog::default(),
                limiter: crate::limits::Limiter::default(),
                identities: crate::identities::Identities::default(),
                signing: std::sync::OnceLock::new(),
                node_leases: crate::node_leases::NodeLeases::default(),
                flows: crate::flows::Flows::default(),
                metrics: crate::metrics::ControllerMetrics::default(),
            }),
        })
    }

    /// Campaigns for leadership and leads or stands by until [`Controller::stop_watches`].
    /// A controller that is not a replica leads from the start: it retries the pending
    /// LoadBalancer Services (a previous run may have stopped between freeing an address and
    /// retrying them) and returns.
    pub async fn run_election(&self) {
        match self.inner.replica.clone() {
            Some(replica) => crate::election::run(self.clone(), replica, self.stopped()).await,
            None => self.retry_pending_logged().await,
        }
    }

    /// The same controller, signing nodes' certificates with `signing` (join, renew). Set once:
    /// a second call (also on a clone) is ignored.
    pub fn with_signing(self, signing: crate::config::Signing) -> Self {
        if self.inner.signing.set(signing).is_err() {
            tracing::warn!("certificate signing already configured; keeping the first");
        }
        self
    }

    /// What signs nodes' certificates, `None` when no CA key was given.
    pub fn signing(&self) -> Option<&crate::config::Signing> {
        self.inner.signing.get()
    }

    /// This controller's current role.
    pub fn role(&self) -> Role {
        self.inner.role.borrow().clone()
    }

    /// Follows role changes (tests, the benchmark).
    pub fn role_changes(&self) -> watch::Receiver<Role> {
        self.inner.role.subscribe()
    }

    /// The replica settings, `None` for a single controller.
    pub fn replica(&self) -> Option<&ReplicaConfig> {
        self.inner.replica.as_ref()
    }

    pub(crate) fn set_role(&self, role: Role) {
        self.inner.role.send_if_modified(|current| {
            if *current == role {
                return false;
            }
            tracing::info!(?role, "controller role changed");
            *current = role;
            true
        });
    }

    /// The write lock, refused right away on a standby.
    pub(crate) async fn write_lock(&self) -> Result<tokio::sync::MutexGuard<'_, ()>> {
        if let Role::Standby { leader } = self.role() {
            return Err(Error::NotLeader { leader });
        }
        Ok(self.inner.writes.lock().await)
    }

    /// The configuration.
    pub fn config(&self) -> &ControllerConfig {
        &self.inner.config
    }

    /// The same controller with other per-client limits (default: [`crate::Limits::default`]).
    pub fn with_limits(self, limits: crate::Limits) -> Self {
        self.inner.limiter.set(limits);
        self
    }

    /// The per-client limits in force.
    pub fn limits_config(&self) -> crate::Limits {
        self.inner.limiter.get()
    }

    pub(crate) fn limits(&self) -> &crate::limits::Limiter {
        &self.inner.limiter
    }

    /// Ends every open watch stream (used on shutdown, so connections can close).
    pub fn stop_watches(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Resolves once [`Controller::stop_watches`] was called.
    pub(crate) fn stopped(&self) -> watch::Receiver<bool> {
        self.inner.stop.subscribe()
    }

    pub(crate) fn store(&self) -> &AnyStore {
        &self.inner.store
    }

    /// What the controller counts (served on `GET /metrics`).
    pub fn metrics(&self) -> &crate::metrics::ControllerMetrics {
        &self.inner.metrics
    }

    /// Every object, read at one store revision: what `GET /v1/snapshot` serves ([`StoredSnapshot`]).
    pub async fn snapshot(&self) -> Result<StoredSnapshot> {
        let (revision, kvs) = timed(self, StoreOp::list, self.store().list(ROOT))
            .await
            .map_err(|source| Error::Store {
                op: "list",
                key: ROOT.to_string(),
                source,
            })?;
        let mut snapshot = StoredSnapshot {
            revision,
            ..StoredSnapshot::default()
        };
        for kv in kvs {
            let Some((kind, name)) = parse_key(&kv.key) else {
                continue;
            };
            match kind {
                ObjectKind::Policy => {
                    snapshot
                        .generations
                        .insert(name.to_string(), kv.mod_revision);
                }
                ObjectKind::Tenant => {
                    snapshot
                        .generations
                        .insert(seam_model::tenant_realization_name(name), kv.mod_revision);
                }
                _ => {}
            }
            // A malformed stored object (written by hand, or by another version) is logged with
            // its key and left out, as the watch does: one bad record must not stop every agent
            // from syncing. Writes that read it still fail closed.
            let skip = |e: Error| tracing::error!(key = %kv.key, error = %e, "skipping corrupt stored object in snapshot");
            match kind {
                ObjectKind::Node => decode(&kv.key, &kv.value).map(|o| snapshot.nodes.push(o)),
                ObjectKind::Segment => {
                    decode(&kv.key, &kv.value).map(|o| snapshot.segments.push(o))
                }
                ObjectKind::Block => decode(&kv.key, &kv.value).map(|o| snapshot.blocks.push(o)),
                ObjectKind::Endpoint => {
                    decode(&kv.key, &kv.value).map(|o| snapshot.endpoints.push(o))
                }
                ObjectKind::Namespace => {
                    decode(&kv.key, &kv.value).map(|o| snapshot.namespaces.push(o))
                }
                ObjectKind::Tenant => decode(&kv.key, &kv.value).map(|o| snapshot.tenants.push(o)),
                // As stored: their reader types them (seam-client), and keeps by name one it cannot read.
                ObjectKind::Policy => decode(&kv.key, &kv.value).map(|o| snapshot.policies.push(o)),
                ObjectKind::AddressPool => {
                    decode(&kv.key, &kv.value).map(|o| snapshot.address_pools.push(o))
                }
                ObjectKind::Service => {
                    decode(&kv.key, &kv.value).map(|o| snapshot.services.push(o))
                }
                ObjectKind::EndpointSlice => {
                    decode(&kv.key, &kv.value).map(|o| snapshot.endpoint_slices.push(o))
                }
                ObjectKind::NodeLease => {
                    decode(&kv.key, &kv.value).map(|o| snapshot.node_leases.push(o))
                }
            }
            .unwrap_or_else(skip);
        }
        Ok(snapshot)
    }

    /// Every object of `kind`, as JSON, in name order.
    pub async fn list_json(&self, kind: ObjectKind) -> Result<Vec<serde_json::Value>> {
        Ok(self
            .read_all::<serde_json::Value>(kind)
            .await?
            .into_iter()
            .map(|s| s.object)
            .collect())
    }

    /// One object of `kind`, as JSON.
    pub async fn get_json(&self, kind: ObjectKind, name: &str) -> Result<serde_json::Value> {
        Ok(self.get_json_versioned(kind, name).await?.0)
    }

    /// One object of `kind`, as JSON, with its store revision (what `If-Match` names).
    pub async fn get_json_versioned(
        &self,
        kind: ObjectKind,
        name: &str,
    ) -> Result<(serde_json::Value, u64)> {
        self.read::<serde_json::Value>(kind, name)
            .await?
            .map(|s| (s.object, s.mod_revision))
            .ok_or_else(|| not_found(kind, name))
    }

    /// Creates or replaces a node. Underlay addresses are unique, routable unicast and outside
    /// every pod range ([`crate::ownership::check_node_underlay`]) and the Services' addresses
    /// (the service range, the pools and what Services hold).
    pub async fn put_node(&self, node: Node) -> Result<Node> {
        node.validate()?;
        let _guard = self.write_lock().await?;
        let segments = self.read_all::<Segment>(ObjectKind::Segment).await?;
        check_node_underlay(
            &node,
            segments.iter().map(|s| &s.object),
            self.config().pool,
        )?;
        if let Some((range, owner)) = self.service_space_holder(node.underlay_ip).await? {
            return Err(Error::UnderlayInPodRange {
                node: node.name.clone(),
                ip: node.underlay_ip,
                range,
                owner,
            });
        }
        let nodes = self.read_all::<Node>(ObjectKind::Node).await?;
        if let Some(other) = nodes
            .iter()
            .find(|n| n.object.name != node.name && n.object.underlay_ip == node.underlay_ip)
        {
            return Err(Error::UnderlayIpTaken {
                node: node.name.clone(),
                ip: node.underlay_ip,
                other: other.object.name.clone(),
            });
        }
        let current = nodes.iter().find(|n| n.object.name == node.name);
        let key = object_key(ObjectKind::Node, &node.name);
        let txn = Txn::new()
            .when(same_as_read(&key, current.map(|c| c.mod_revision)))
            .put(&key, encode(ObjectKind::Node, &node.name, &node)?);
        self.commit_once(txn, ObjectKind::Node, &node.name).await?;
        Ok(node)
    }

    /// Deletes a node; refused while blocks or endpoints refer to it.
    pub async fn delete_node(&self, name: &str) -> Result<()> {
        let _guard = self.write_lock().await?;
        let current = self
            .read::<Node>(ObjectKind::Node, name)
            .await?
            .ok_or_else(|| not_found(ObjectKind::Node, name))?;
        let blocks = self.read_all::<Block>(ObjectKind::Block).await?;
        if let Some(b) = blocks.iter().find(|b| b.object.node == name) {
            return Err(in_use(
                ObjectKind::Node,
                name,
                ObjectKind::Block,
                b.object.key(),
            ));
        }
        let endpoints = self.read_all::<Endpoint>(ObjectKind::Endpoint).await?;
        if let Some(e) = endpoints.iter().find(|e| e.object.node == name) {
            return Err(in_use(
                ObjectKind::Node,
                name,
                ObjectKind::Endpoint,
                e.object.name.clone(),
            ));
        }
        let key = object_key(ObjectKind::Node, name);
        // Its realization report goes with it: a deleted node no longer counts among the nodes
        // that must enforce policy, and a node of the same name starts with no report.
        let txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), current.mod_revision))
            .delete(&key)
            .delete(crate::keys::realization_key(name));
        self.commit_once(txn, ObjectKind::Node, name).await
    }

    /// Creates or replaces an explicit segment. Its subnet may not overlap another segment's,
    /// its VNI must be unused, and while blocks or endpoints use it its subnet and block size
    /// cannot change.
    pub async fn put_segment(&self, segment: Segment) -> Result<Segment> {
        segment.validate()?;
        let _guard = self.write_lock().await?;
        let segments = self.read_all::<Segment>(ObjectKind::Segment).await?;
        check_segment_fits(&segment, segments.iter().map(|s| &s.object))?;
        let nodes = self.read_all::<Node>(ObjectKind::Node).await?;
        check_segment_ranges(&segment, nodes.iter().map(|n| &n.object))?;
        self.check_segment_against_externals(&segment).await?;
        self.check_segment_against_services(&segment).await?;
        let current = segments.iter().find(|s| s.object.name == segment.name);
        if let Some(current) = current {
            let old = &current.object;
            if old.subnet != segment.subnet || old.block_prefix != segment.block_prefix {
                self.check_segment_unused(&segment.name).await?;
            }
        }
        let key = object_key(ObjectKind::Segment, &segment.name);
        let txn = Txn::new()
            .when(same_as_read(&key, current.map(|c| c.mod_revision)))
            .put(&key, encode(ObjectKind::Segment, &segment.name, &segment)?);
        self.commit_once(txn, ObjectKind::Segment, &segment.name)
            .await?;
        Ok(segment)
    }

    /// Deletes a segment; refused while blocks or endpoints use it.
    pub async fn delete_segment(&self, name: &str) -> Result<()> {
        let _guard = self.write_lock().await?;
        let current = self
            .read::<Segment>(ObjectKind::Segment, name)
            .await?
            .ok_or_else(|| not_found(ObjectKind::Segment, name))?;
        self.check_segment_unused(name).await?;
        let key = object_key(ObjectKind::Segment, name);
        let txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), current.mod_revision))
            .delete(&key);
        self.commit_once(txn, ObjectKind::Segment, name).await
    }

    /// The segment serving `namespace`, created on first use: `ns-<namespace>` with the lowest
    /// free subnet of the pool in per-namespace mode, or the one `cluster` segment in flat mode.
    /// Concurrent calls for one namespace all get the same segment. The [`seam_model::Namespace`]
    /// object is created too when absent (labels: just its name label), so policies can select
    /// the namespace by name.
    pub async fn ensure_segment(&self, namespace: &str) -> Result<Segment> {
        let segment = self.segment_for_namespace(namespace).await?;
        self.ensure_namespace(namespace).await?;
        Ok(segment)
    }

    async fn segment_for_namespace(&self, namespace: &str) -> Result<Segment> {
        let config = self.config();
        let name = match config.segment_mode {
            SegmentMode::PerNamespace => namespace_segment_name(namespace),
            SegmentMode::Flat => FLAT_SEGMENT.to_string(),
        };
        let mut problems = Vec::new();
        if !is_valid_name(namespace) {
            problems.push(field_error(
                "namespace",
                format!("{namespace:?} is not a valid namespace name"),
            ));
        } else if !is_valid_segment_name(&name) {
            problems.push(field_error(
                "namespace",
                format!("{namespace:?} gives the invalid segment name {name:?}"),
            ));
        }
        invalid_if_any("EnsureSegment", namespace, problems)?;

        // Fast path without the write lock: the segment usually exists.
        if let Some(found) = self.read::<Segment>(ObjectKind::Segment, &name).await? {
            return self.serving(found.object, namespace);
        }
        let _guard = self.write_lock().await?;
        let key = object_key(ObjectKind::Segment, &name);
        for _ in 0..ATTEMPTS {
            let segments = self.read_all::<Segment>(ObjectKind::Segment).await?;
            if let Some(found) = segments.iter().find(|s| s.object.name == name) {
                return self.serving(found.object.clone(), namespace);
            }
            let nodes = self.read_all::<Node>(ObjectKind::Node).await?;
            let underlay: Vec<Ipv4Addr> = nodes.iter().map(|n| n.object.underlay_ip).collect();
            let segment = self.new_segment(
                &name,
                namespace,
                segments.iter().map(|s| &s.object),
                &underlay,
            )?;
            // Flat mode takes the whole pool, which may hold a node's address.
            check_segment_ranges(&segment, nodes.iter().map(|n| &n.object))?;
            let txn = Txn::new()
                .when(Compare::Absent(key.clone()))
                .put(&key, encode(ObjectKind::Segment, &name, &segment)?);
            if self.commit(txn, &key).await? {
                tracing::info!(segment = %name, subnet = %segment.subnet, vni = segment.vni, "created segment");
                return Ok(segment);
            }
        }
        Err(Error::Contended {
            kind: ObjectKind::Segment,
            name,
            attempts: ATTEMPTS,
        })
    }

    /// Hands `node` the lowest free block of `segment`. A block is never handed out twice:
    /// the write requires the block key to be absent.
    pub async fn claim_block(&self, segment: &str, node: &str) -> Result<Block> {
        let mut problems = Vec::new();
        if !is_valid_segment_name(segment) {
            problems.push(field_error(
                "segment",
                format!("{segment:?} is not a valid name"),
            ));
        }
        if !is_valid_name(node) {
            problems.push(field_error("node", format!("{node:?} is not a valid name")));
        }
        invalid_if_any("ClaimBlock", segment, problems)?;

        let _guard = self.write_lock().await?;
        for _ in 0..ATTEMPTS {
            let seg = self
                .read::<Segment>(ObjectKind::Segment, segment)
                .await?
                .ok_or_else(|| not_found(ObjectKind::Segment, segment))?;
            let owner = self
                .read::<Node>(ObjectKind::Node, node)
                .await?
                .ok_or_else(|| not_found(ObjectKind::Node, node))?;
            let prefix = segment_blocks_prefix(segment);
            let blocks = self.list_prefix::<Block>(&prefix).await?;
            let endpoints = self.read_all::<Endpoint>(ObjectKind::Endpoint).await?;
            check_block_claim(
                &seg.object,
                node,
                blocks.iter().map(|b| &b.object),
                endpoints.iter().map(|e| &e.object),
            )?;
            let mut taken: Vec<Ipv4Net> = blocks.into_iter().map(|b| b.object.cidr).collect();
            // A block never holds a VM's address: the node would hand it out to a pod.
            taken.extend(
                self.vm_addresses(segment)
                    .await?
                    .into_iter()
                    .map(Ipv4Net::from),
            );
            // Nor an address an endpoint still holds (its block record deleted by hand, say):
            // the new holder would hand it out a second time.
            taken.extend(
                endpoints
                    .into_iter()
                    .filter(|e| e.object.segment == segment)
                    .map(|e| Ipv4Net::from(e.object.ip)),
            );
            let subnet = seg.object.subnet;
            let cidr = lowest_free_subnet(subnet, seg.object.block_prefix, &taken).ok_or(
                Error::BlocksExhausted {
                    segment: segment.to_string(),
                    subnet,
                    block_prefix: seg.object.block_prefix,
                },
            )?;
            let block = Block {
                segment: segment.to_string(),
                node: node.to_string(),
                cidr,
            };
            let key = object_key(ObjectKind::Block, &block.key());
            let txn = Txn::new()
                .when(Compare::Absent(key.clone()))
                .when(Compare::ModRevision(
                    object_key(ObjectKind::Segment, segment),
                    seg.mod_revision,
                ))
                .when(Compare::ModRevision(
                    object_key(ObjectKind::Node, node),
                    owner.mod_revision,
                ))
                .put(&key, encode(ObjectKind::Block, &block.key(), &block)?);
            if self.commit(txn, &key).await? {
                tracing::info!(block = %block.key(), node, "claimed block");
                return Ok(block);
            }
        }
        Err(Error::Contended {
            kind: ObjectKind::Block,
            name: segment.to_string(),
            attempts: ATTEMPTS,
        })
    }

    /// Releases a block ([`Block::key`]) as an administrator; refused while endpoints hold
    /// addresses in it. Agents give blocks back with [`Controller::release_block_held_by`].
    pub async fn release_block(&self, key: &str) -> Result<()> {
        self.release(key, None).await
    }

    /// Releases a block on behalf of `node`: refused unless `node` holds it, and while
    /// endpoints hold addresses in it. So an agent that acts on an old view of the blocks never
    /// gives back a block another node got since.
    pub async fn release_block_held_by(&self, key: &str, node: &str) -> Result<()> {
        self.release(key, Some(node)).await
    }

    async fn release(&self, key: &str, node: Option<&str>) -> Result<()> {
        let _guard = self.write_lock().await?;
        let current = self
            .read::<Block>(ObjectKind::Block, key)
            .await?
            .ok_or_else(|| not_found(ObjectKind::Block, key))?;
        let block = &current.object;
        if let Some(node) = node.filter(|n| *n != block.node) {
            return Err(Error::BlockNotHeld {
                block: key.to_string(),
                holder: block.node.clone(),
                node: node.to_string(),
            });
        }
        let endpoints = self.read_all::<Endpoint>(ObjectKind::Endpoint).await?;
        if let Some(e) = endpoints
            .iter()
            .find(|e| e.object.segment == block.segment && block.cidr.contains(&e.object.ip))
        {
            return Err(in_use(
                ObjectKind::Block,
                key,
                ObjectKind::Endpoint,
                e.object.name.clone(),
            ));
        }
        let store_key = object_key(ObjectKind::Block, key);
        let txn = Txn::new()
            .when(Compare::ModRevision(
                store_key.clone(),
                current.mod_revision,
            ))
            .delete(&store_key);
        self.commit_once(txn, ObjectKind::Block, key).await
    }

    /// Creates or replaces an endpoint. Its segment and node must exist, its address must be a
    /// host address of the segment other than the gateway (for a pod, inside a block its node
    /// holds), and no other endpoint of the segment may hold the same address or MAC.
    pub async fn put_endpoint(&self, endpoint: Endpoint) -> Result<Endpoint> {
        endpoint.validate()?;
        Self::refuse_external_record(&endpoint)?;
        // A node writes only endpoints on itself.
        crate::authz::check_own(&endpoint.node, || {
            format!(
                "write endpoint {:?} of node {}",
                endpoint.name, endpoint.node
            )
        })?;
        refuse_vm_record(&endpoint)?;
        let _guard = self.write_lock().await?;
        let seg = self
            .read::<Segment>(ObjectKind::Segment, &endpoint.segment)
            .await?
            .ok_or_else(|| not_found(ObjectKind::Segment, &endpoint.segment))?;
        let node = self
            .read::<Node>(ObjectKind::Node, &endpoint.node)
            .await?
            .ok_or_else(|| not_found(ObjectKind::Node, &endpoint.node))?;
        check_endpoint_address(&endpoint, &seg.object)?;
        check_endpoint_namespace(&endpoint, &seg.object)?;
        let block = self.node_block_of(&endpoint).await?;
        let endpoints = self.read_all::<Endpoint>(ObjectKind::Endpoint).await?;
        for other in endpoints.iter().map(|e| &e.object) {
            if other.name == endpoint.name || other.segment != endpoint.segment {
                continue;
            }
            if other.ip == endpoint.ip {
                return Err(Error::AddressTaken {
                    endpoint: endpoint.name.clone(),
                    ip: endpoint.ip,
                    segment: endpoint.segment.clone(),
                    other: other.name.clone(),
                });
            }
            if other.mac == endpoint.mac {
                return Err(Error::MacTaken {
                    endpoint: endpoint.name.clone(),
                    mac: endpoint.mac,
                    segment: endpoint.segment.clone(),
                    other: other.name.clone(),
                });
            }
        }
        let current = endpoints.iter().find(|e| e.object.name == endpoint.name);
        // The adapter only relabels what an agent published.
        crate::authz::check_relabel(current.map(|c| &c.object), &endpoint)?;
        // Nor may it replace another node's.
        if let Some(owner) = current.map(|c| &c.object.node) {
            crate::authz::check_own(owner, || {
                format!("write endpoint {:?} of node {owner}", endpoint.name)
            })?;
        }
        let key = object_key(ObjectKind::Endpoint, &endpoint.name);
        let txn = Txn::new()
            .when(same_as_read(&key, current.map(|c| c.mod_revision)))
            .when(Compare::ModRevision(
                object_key(ObjectKind::Segment, &endpoint.segment),
                seg.mod_revision,
            ))
            .when(Compare::ModRevision(
                object_key(ObjectKind::Node, &endpoint.node),
                node.mod_revision,
            ));
        // The block must still be the node's when the endpoint lands.
        let txn = match block {
            Some((block_key, revision)) => txn.when(Compare::ModRevision(block_key, revision)),
            None => txn,
        }
        .put(
            &key,
            encode(ObjectKind::Endpoint, &endpoint.name, &endpoint)?,
        );
        self.commit_once(txn, ObjectKind::Endpoint, &endpoint.name)
            .await?;
        Ok(endpoint)
    }

    /// For a pod (or host) endpoint, the store key and revision of the block of its node that
    /// holds its address; refused when its node holds no such block (the address is another
    /// node's to hand out, or nobody's). VM and external endpoints are written by the
    /// controller with the addresses it leased, never through here: `None`.
    async fn node_block_of(&self, endpoint: &Endpoint) -> Result<Option<(String, u64)>> {
        if !matches!(endpoint.kind, EndpointKind::Pod | EndpointKind::Host) {
            return Ok(None);
        }
        let blocks = self
            .list_prefix::<Block>(&segment_blocks_prefix(&endpoint.segment))
            .await?;
        blocks
            .into_iter()
            .find(|b| b.object.node == endpoint.node && b.object.cidr.contains(&endpoint.ip))
            .map(|b| {
                Some((
                    object_key(ObjectKind::Block, &b.object.key()),
                    b.mod_revision,
                ))
            })
            .ok_or_else(|| Error::AddressNotInNodeBlock {
                endpoint: endpoint.name.clone(),
                ip: endpoint.ip,
                node: endpoint.node.clone(),
            })
    }

    /// Deletes an endpoint; succeeds also when it does not exist. Returns whether it existed.
    pub async fn delete_endpoint(&self, name: &str) -> Result<bool> {
        let _guard = self.write_lock().await?;
        let key = object_key(ObjectKind::Endpoint, name);
        let Some(current) = self
            .read::<serde_json::Value>(ObjectKind::Endpoint, name)
            .await?
        else {
            return Ok(false);
        };
        let owner = current
            .object
            .get("node")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        crate::authz::check_own(owner, || {
            format!("delete endpoint {name:?} of node {owner}")
        })?;
        let txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), current.mod_revision))
            .delete(&key);
        self.commit_once(txn, ObjectKind::Endpoint, name).await?;
        Ok(true)
    }

    /// A store watch on every object, from `from_revision` (0: only future changes).
    pub async fn watch(&self, from_revision: u64) -> Result<seam_store::Watch> {
        self.store()
            .watch(ROOT, from_revision)
            .await
            .map_err(|source| match source {
                seam_store::Error::Compacted { .. } => Error::Compacted {
                    revision: from_revision,
                    source,
                },
                source => Error::Store {
                    op: "watch",
                    key: ROOT.to_string(),
                    source,
                },
            })
    }

    /// The segment a namespace maps to, if it really serves that namespace.
    fn serving(&self, segment: Segment, namespace: &str) -> Result<Segment> {
        let ok = match self.config().segment_mode {
            SegmentMode::PerNamespace => segment.namespace.as_deref() == Some(namespace),
            SegmentMode::Flat => true,
        };
        if ok {
            Ok(segment)
        } else {
            Err(Error::NamespaceMismatch {
                segment: segment.name,
                namespace: namespace.to_string(),
            })
        }
    }

    /// Builds the segment `name` for `namespace` from the pool, avoiding `existing` and the
    /// nodes' `underlay` addresses (a node whose address lies in the pool, recorded before the
    /// pool check existed, must not end up inside a segment).
    fn new_segment<'a>(
        &self,
        name: &str,
        namespace: &str,
        existing: impl Iterator<Item = &'a Segment> + Clone,
        underlay: &[Ipv4Addr],
    ) -> Result<Segment> {
        let config = self.config();
        let subnets: Vec<Ipv4Net> = existing
            .clone()
            .map(|s| s.subnet)
            .chain(underlay.iter().map(|ip| Ipv4Net::from(*ip)))
            .collect();
        let used: BTreeSet<u32> = existing.clone().map(|s| s.vni).collect();
        let vni = lowest_free_vni(config.vni_base, MAX_VNI, &used).ok_or(Error::VniExhausted {
            base: config.vni_base,
        })?;
        let (subnet, tenant, ns) = match config.segment_mode {
            SegmentMode::PerNamespace => {
                let subnet = lowest_free_subnet(config.pool, config.segment_prefix, &subnets)
                    .ok_or(Error::PoolExhausted {
                        pool: config.pool,
                        prefix: config.segment_prefix,
                    })?;
                (subnet, namespace.to_string(), Some(namespace.to_string()))
            }
            SegmentMode::Flat => (config.pool, FLAT_SEGMENT.to_string(), None),
        };
        let segment = Segment {
            name: name.to_string(),
            tenant,
            subnet,
            gateway: first_host(subnet),
            vni,
            block_prefix: config.block_prefix,
            namespace: ns,
            snat: false,
            forwarding: Default::default(),
        };
        // Flat mode takes the whole pool, which an explicit segment may already overlap.
        check_segment_fits(&segment, existing)?;
        segment.validate()?;
        Ok(segment)
    }

    /// Refuses while blocks or endpoints use the segment, naming every one of them (up to
    /// [`crate::error::MAX_LISTED_USERS`]), so the operator sees all that must go first.
    async fn check_segment_unused(&self, name: &str) -> Result<()> {
        let blocks = self
            .list_prefix::<Block>(&segment_blocks_prefix(name))
            .await?;
        let endpoints = self.read_all::<Endpoint>(ObjectKind::Endpoint).await?;
        let users: Vec<(ObjectKind, String)> = blocks
            .iter()
            .map(|b| (ObjectKind::Block, b.object.key()))
            .chain(
                endpoints
                    .iter()
                    .filter(|e| e.object.segment == name)
                    .map(|e| (ObjectKind::Endpoint, e.object.name.clone())),
            )
            .collect();
        if users.is_empty() {
            return Ok(());
        }
        let total = users.len();
        Err(Error::InUseBy {
            kind: ObjectKind::Segment,
            name: name.to_string(),
            users: users
                .into_iter()
                .take(crate::error::MAX_LISTED_USERS)
                .collect(),
            total,
        })
    }

    pub(crate) async fn read<T: DeserializeOwned>(
        &self,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Option<Stored<T>>> {
        let key = object_key(kind, name);
        let kv = self.get_kv(&key).await?;
        kv.map(|kv| {
            Ok(Stored {
                object: decode(&kv.key, &kv.value)?,
                mod_revision: kv.mod_revision,
            })
        })
        .transpose()
    }

    pub(crate) async fn read_all<T: DeserializeOwned>(
        &self,
        kind: ObjectKind,
    ) -> Result<Vec<Stored<T>>> {
        self.list_prefix(&kind_prefix(kind)).await
    }

    pub(crate) async fn list_prefix<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<Stored<T>>> {
        let (_, kvs) = timed(self, StoreOp::list, self.store().list(prefix))
            .await
            .map_err(|source| Error::Store {
                op: "list",
                key: prefix.to_string(),
                source,
            })?;
        kvs.into_iter()
            .map(|kv| {
                Ok(Stored {
                    object: decode(&kv.key, &kv.value)?,
                    mod_revision: kv.mod_revision,
                })
            })
            .collect()
    }

    /// Runs `txn`; `Ok(false)` when a compare failed. A replica commits only as the leader,
    /// fenced on the leader key, and fails with [`Error::NotLeader`] once it lost the key.
    /// A txn that changes objects also writes their audit record ([`crate::audit`]).
    pub(crate) async fn commit(&self, txn: Txn, key: &str) -> Result<bool> {
        Ok(self.commit_at(txn, key).await?.is_some())
    }

    /// [`Controller::commit`], with the store revision of the committed transaction (`None`
    /// when a compare failed): the new `mod_revision` of every key it wrote.
    pub(crate) async fn commit_at(&self, txn: Txn, key: &str) -> Result<Option<u64>> {
        let (txn, audited) = self.inner.audit.record(txn)?;
        let fence = match self.role() {
            Role::Single => None,
            Role::Leader { fence } => Some(fence),
            Role::Standby { leader } => return Err(Error::NotLeader { leader }),
        };
        let txn = match fence {
            Some(fence) => txn.when(Compare::ModRevision(LEADER_KEY.to_string(), fence)),
            None => txn,
        };
        match timed(self, StoreOp::txn, self.store().txn(txn)).await {
            Ok(TxnOutcome::Committed { revision }) => {
                self.metrics().saw_revision(revision);
                if audited {
                    self.audited();
                }
                Ok(Some(revision))
            }
            Ok(TxnOutcome::CompareFailed) => {
                if let Some(fence) = fence {
                    self.check_fence(fence).await?;
                }
                Ok(None)
            }
            Err(source) => Err(Error::Store {
                op: "txn",
                key: key.to_string(),
                source,
            }),
        }
    }

    /// One key from the store, with the error naming the key.
    pub(crate) async fn get_kv(&self, key: &str) -> Result<Option<seam_store::KeyValue>> {
        timed(self, StoreOp::get, self.store().get(key))
            .await
            .map_err(|source| Error::Store {
                op: "get",
                key: key.to_string(),
                source,
            })
    }

    /// After a failed compare: was it the fence? Then this replica no longer leads.
    async fn check_fence(&self, fence: u64) -> Result<()> {
        let current = self.get_kv(LEADER_KEY).await?;
        if current.as_ref().map(|kv| kv.mod_revision) == Some(fence) {
            return Ok(());
        }
        tracing::warn!(fence, "lost the leader key; refusing writes");
        let leader = current
            .and_then(|kv| serde_json::from_slice::<crate::election::LeaderRecord>(&kv.value).ok())
            .map(|r| r.address);
        self.set_role(Role::Standby {
            leader: leader.clone(),
        });
        Err(Error::NotLeader { leader })
    }

    /// Runs `txn` under the write lock: a failed compare means another process wrote. When the
    /// request being served is conditional on this object's revision ([`crate::precondition`]),
    /// that compare joins the same transaction.
    pub(crate) async fn commit_once(&self, txn: Txn, kind: ObjectKind, name: &str) -> Result<()> {
        let key = object_key(kind, name);
        let precondition = crate::precondition::current_for(&key);
        let txn = match &precondition {
            Some(p) => txn.when(Compare::ModRevision(key.clone(), p.revision)),
            None => txn,
        };
        if self.commit(txn, &key).await? {
            return Ok(());
        }
        if let Some(p) = precondition {
            let current = self.get_kv(&key).await?.map(|kv| kv.mod_revision);
            if current != Some(p.revision) {
                return Err(Error::RevisionConflict {
                    kind,
                    name: name.to_string(),
                    expected: p.revision,
                    current,
                });
            }
        }
        Err(Error::Contended {
            kind,
            name: name.to_string(),
            attempts: 1,
        })
    }
}

/// `Absent` when the key was not there, else `ModRevision` of what was read.
pub(crate) fn same_as_read(key: &str, mod_revision: Option<u64>) -> Compare {
    match mod_revision {
        Some(rev) => Compare::ModRevision(key.to_string(), rev),
        None => Compare::Absent(key.to_string()),
    }
}

/// Checks a segment's subnet and VNI against every other segment.
fn check_segment_fits<'a>(
    segment: &Segment,
    existing: impl Iterator<Item = &'a Segment>,
) -> Result<()> {
    for other in existing.filter(|o| o.name != segment.name) {
        if other.subnet.contains(&segment.subnet.network())
            || segment.subnet.contains(&other.subnet.network())
        {
            return Err(Error::SubnetOverlap {
                segment: segment.name.clone(),
                subnet: segment.subnet,
                other: other.name.clone(),
                other_subnet: other.subnet,
            });
        }
        if other.vni == segment.vni {
            return Err(Error::VniTaken {
                segment: segment.name.clone(),
                vni: segment.vni,
                other: other.name.clone(),
            });
        }
    }
    Ok(())
}

fn check_endpoint_address(endpoint: &Endpoint, segment: &Segment) -> Result<()> {
    let ip = endpoint.ip;
    let subnet = segment.subnet;
    let problem = if !subnet.contains(&ip) {
        Some(format!(
            "{ip} is outside segment {:?} subnet {subnet}",
            segment.name
        ))
    } else if ip == segment.gateway {
        Some(format!("{ip} is the gateway of segment {:?}", segment.name))
    } else if ip == subnet.network() || ip == subnet.broadcast() {
        Some(format!("{ip} is not a host address of {subnet}"))
    } else {
        None
    };
    invalid_if_any(
        "Endpoint",
        &endpoint.name,
        problem.map(|m| field_error("ip", m)).into_iter().collect(),
    )
}

/// Refuses a record of kind `vm` written through `PUT /v1/endpoints`: a VM's address is the
/// controller's lease, and its endpoint is written with it by [`Controller::attach_vm`]; an
/// endpoint claiming to be a VM would otherwise take any address of the segment.
fn refuse_vm_record(endpoint: &Endpoint) -> Result<()> {
    if endpoint.kind != EndpointKind::Vm {
        return Ok(());
    }
    invalid_if_any(
        "Endpoint",
        &endpoint.name,
        vec![field_error(
            "kind",
            "VM endpoints are written by the controller with the address it leased: POST /v1/vms/<name>/attach (`seam vm attach`)".to_string(),
        )],
    )
}

fn first_host(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
}

pub(crate) fn field_error(path: &str, message: String) -> FieldError {
    FieldError {
        path: path.to_string(),
        message,
    }
}

pub(crate) fn invalid_if_any(
    kind: &'static str,
    name: &str,
    errors: Vec<FieldError>,
) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(ValidationError {
            kind,
            name: name.to_string(),
            errors,
        }))
    }
}

pub(crate) fn not_found(kind: ObjectKind, name: &str) -> Error {
    Error::NotFound {
        kind,
        name: name.to_string(),
    }
}

pub(crate) fn in_use(kind: ObjectKind, name: &str, user_kind: ObjectKind, user: String) -> Error {
    Error::InUse {
        kind,
        name: name.to_string(),
        user_kind,
        user,
    }
}

/// Decodes a stored object, tolerating fields this version does not know (a newer replica may
/// have written them during a rolling upgrade; see [`seam_model::tolerant`]): they are dropped,
/// and said once per kind and field in the log.
pub(crate) fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T> {
    let decoded =
        seam_model::tolerant::from_slice::<T>(value).map_err(|source| Error::Corrupt {
            key: key.to_string(),
            source,
        })?;
    if !decoded.unknown.is_empty() {
        let kind = parse_key(key).map_or("object", |(kind, _)| kind.plural());
        for field in decoded.first_sightings(kind) {
            tracing::warn!(%key, kind, field, "ignoring a field of a stored object this version does not know (written by a newer Seam?)");
        }
    }
    Ok(decoded.value)
}

pub(crate) fn encode<T: Serialize>(kind: ObjectKind, name: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| Error::Encode {
        kind,
        name: name.to_string(),
        source,
    })
}
