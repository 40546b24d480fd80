//! Durable leases: the IPAM state machine plus the local store it is persisted in.
//!
//! Store layout (local to the node, one redb file by default):
//! `/leases/<network>/<container id>/<ifname>` lease JSON, `/quarantine/<segment>/<ip>` release
//! time, `/blocks/<block key>` the node's blocks, `/segments/<name>` cached segments,
//! `/endpoints/<network>/<container id>/<ifname>` the endpoint published for a lease.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use seam_dataplane::{host_ifname, NodeKernel};
use seam_ipam::{Change, Ipam, Lease, LeaseKey, LeaseState, Reuse};
use seam_model::{Block, Endpoint, Segment};
use seam_store::{AnyStore, Datastore, Txn};
use serde::de::DeserializeOwned;

use crate::error::{AgentError, Result};
use crate::now_ms;

const LEASES: &str = "/leases/";
const QUARANTINE: &str = "/quarantine/";
const BLOCKS: &str = "/blocks/";
const SEGMENTS: &str = "/segments/";
const ENDPOINTS: &str = "/endpoints/";

fn lease_path(key: &LeaseKey) -> String {
    format!("{}/{}/{}", key.network, key.container_id, key.ifname)
}

/// The IPAM state machine with its durable copy.
pub struct LeaseBook {
    store: AnyStore,
    ipam: Ipam,
    endpoints: BTreeMap<LeaseKey, Endpoint>,
    segments: BTreeMap<String, Segment>,
}

async fn load<T: DeserializeOwned>(store: &AnyStore, prefix: &str) -> Result<Vec<(String, T)>> {
    let (_, kvs) = store
        .list(prefix)
        .await
        .map_err(|source| AgentError::Store {
            step: "load",
            source,
        })?;
    // Tolerant: after a downgrade, the records a newer agent wrote may carry fields this one
    // does not know; refusing them would keep the agent from starting at all.
    kvs.into_iter()
        .map(|kv| match seam_model::tolerant::from_slice::<T>(&kv.value) {
            Ok(v) => {
                for field in v.first_sightings(prefix) {
                    tracing::warn!(key = %kv.key, field, "ignoring a field of a local record this agent does not know (written by a newer Seam?)");
                }
                Ok((kv.key, v.value))
            }
            Err(source) => Err(AgentError::Corrupt {
                key: kv.key,
                source,
            }),
        })
        .collect()
}

impl LeaseBook {
    /// Loads every lease, quarantine entry, block and cached segment from `store`.
    pub async fn open(store: AnyStore, quarantine_ms: u64) -> Result<Self> {
        let mut ipam = Ipam::new(quarantine_ms);
        let segments: Vec<(String, Segment)> = load(&store, SEGMENTS).await?;
        for (_, s) in &segments {
            ipam.add_segment(&s.name, s.subnet, s.gateway)?;
        }
        let blocks: Vec<(String, Block)> = load(&store, BLOCKS).await?;
        // The idle clock of a block restarts with the agent: how long it sat unused before is
        // not recorded, and waiting once more only delays a release.
        let now = now_ms();
        for (_, b) in &blocks {
            ipam.add_block_at(&b.segment, b.cidr, now)?;
        }
        let leases: Vec<(String, Lease)> = load(&store, LEASES).await?;
        let quarantine: Vec<(String, u64)> = load(&store, QUARANTINE).await?;
        let quarantine = quarantine
            .into_iter()
            .filter_map(|(key, at)| {
                let rest = key.strip_prefix(QUARANTINE)?;
                let (segment, ip) = rest.rsplit_once('/')?;
                Some((segment.to_string(), ip.parse::<Ipv4Addr>().ok()?, at))
            })
            .collect();
        let repairs = ipam.restore(leases.into_iter().map(|(_, l)| l).collect(), quarantine)?;
        let endpoints: Vec<(String, Endpoint)> = load(&store, ENDPOINTS).await?;
        let endpoints = endpoints
            .into_iter()
            .filter_map(|(key, ep)| {
                let rest = key.strip_prefix(ENDPOINTS)?;
                let mut parts = rest.splitn(3, '/');
                Some((
                    LeaseKey::new(parts.next()?, parts.next()?, parts.next()?),
                    ep,
                ))
            })
            .collect();
        let mut book = Self {
            store,
            ipam,
            endpoints,
            segments: segments
                .into_iter()
                .map(|(_, s)| (s.name.clone(), s))
                .collect(),
        };
        book.persist(&repairs, Vec::new()).await?;
        Ok(book)
    }

    /// Writes IPAM changes (and extra puts/deletes) in one durable transaction.
    async fn persist(
        &mut self,
        changes: &[Change],
        extra: Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<()> {
        if changes.is_empty() && extra.is_empty() {
            return Ok(());
        }
        let mut txn = Txn::new();
        for change in changes {
            txn = match change {
                Change::PutLease(lease) => {
                    let value =
                        serde_json::to_vec(lease).map_err(|source| AgentError::Corrupt {
                            key: lease_path(&lease.key),
                            source,
                        })?;
                    txn.put(format!("{LEASES}{}", lease_path(&lease.key)), value)
                }
                Change::DeleteLease(key) => txn.delete(format!("{LEASES}{}", lease_path(key))),
                Change::PutQuarantine {
                    segment,
                    ip,
                    released_ms,
                } => txn.put(
                    format!("{QUARANTINE}{segment}/{ip}"),
                    released_ms.to_string(),
                ),
                Change::DeleteQuarantine { segment, ip } => {
                    txn.delete(format!("{QUARANTINE}{segment}/{ip}"))
                }
            };
        }
        for (key, value) in extra {
            txn = match value {
                Some(v) => txn.put(key, v),
                None => txn.delete(key),
            };
        }
        self.store
            .txn(txn)
            .await
            .map_err(|source| AgentError::Store {
                step: "commit",
                source,
            })?;
        Ok(())
    }

    /// Segments cached from the controller.
    pub async fn cached_segments(&self) -> Result<Vec<Segment>> {
        Ok(self.segments.values().cloned().collect())
    }

    /// The segment `name` as last cached from the controller.
    pub fn cached_segment(&self, name: &str) -> Option<&Segment> {
        self.segments.get(name)
    }

    /// Remembers a segment (so ADD works while the controller is away) and tells IPAM about it.
    pub async fn learn_segment(&mut self, segment: &Segment) -> Result<()> {
        if self.segments.get(&segment.name) == Some(segment) {
            return Ok(());
        }
        self.ipam
            .add_segment(&segment.name, segment.subnet, segment.gateway)?;
        let value = serde_json::to_vec(segment).map_err(|source| AgentError::Corrupt {
            key: segment.name.clone(),
            source,
        })?;
        self.persist(
            &[],
            vec![(format!("{SEGMENTS}{}", segment.name), Some(value))],
        )
        .await?;
        self.segments.insert(segment.name.clone(), segment.clone());
        Ok(())
    }

    /// Adds a block the controller gave this node.
    pub async fn add_block(&mut self, block: &Block) -> Result<()> {
        self.ipam
            .add_block_at(&block.segment, block.cidr, now_ms())?;
        let value = serde_json::to_vec(block).map_err(|source| AgentError::Corrupt {
            key: block.key(),
            source,
        })?;
        self.persist(&[], vec![(format!("{BLOCKS}{}", block.key()), Some(value))])
            .await
    }

    /// Whether this node's book holds `block`: only then may a lease land in it.
    pub fn holds_block(&self, block: &Block) -> bool {
        self.ipam.holds_block(&block.segment, block.cidr)
    }

    /// Retires every block with no lease and no quarantined address whose last use ended
    /// `idle_ms` or more ago, and that `may_go` accepts: each is gone from the book, durably,
    /// before this returns, so no lease lands in it again and a restart does not bring it
    /// back. Giving it back to the controller is the caller's next step. Returns the blocks
    /// retired.
    pub async fn retire_idle_blocks(
        &mut self,
        node: &str,
        idle_ms: u64,
        may_go: impl Fn(&Block) -> bool,
    ) -> Result<Vec<Block>> {
        let now = now_ms();
        let mut retired = Vec::new();
        for (segment, cidr) in self.ipam.idle_blocks(now, idle_ms) {
            let block = Block {
                segment,
                node: node.to_string(),
                cidr,
            };
            if !may_go(&block) {
                continue;
            }
            let changes = self.ipam.retire_block(&block.segment, cidr, now)?;
            let gone = vec![(format!("{BLOCKS}{}", block.key()), None)];
            if let Err(e) = self.persist(&changes, gone).await {
                // Still on disk, so still ours: keep using it rather than let the controller
                // take back a block a restart would bring back. Its expired quarantine entries
                // are lost from memory only, and an expired entry changes nothing.
                self.ipam.add_block_at(&block.segment, cidr, now)?;
                return Err(e);
            }
            retired.push(block);
        }
        Ok(retired)
    }

    /// Reserves (or finds) the lease of `key`, durably, before anything is configured.
    pub async fn reserve(&mut self, key: LeaseKey, segment: &str, netns: &str) -> Result<Lease> {
        let (lease, changes) = self.ipam.reserve(key, segment, netns, now_ms())?;
        self.persist(&changes, Vec::new()).await?;
        Ok(lease)
    }

    /// Reserves (or finds) the lease of `key` like [`LeaseBook::reserve`], taking a quarantined
    /// address before its quarantine ends when no other is free: for when the controller grants
    /// no further block (this node's blocks of the segment are mostly unused by its view).
    pub async fn reserve_reusing_early(
        &mut self,
        key: LeaseKey,
        segment: &str,
        netns: &str,
    ) -> Result<Lease> {
        let (lease, changes) =
            self.ipam
                .reserve_with(key, segment, netns, now_ms(), Reuse::AllowEarly)?;
        self.persist(&changes, Vec::new()).await?;
        Ok(lease)
    }

    /// Marks a lease bound and records the endpoint published for it, durably.
    pub async fn bind(&mut self, key: &LeaseKey, endpoint: Endpoint) -> Result<Lease> {
        let (lease, changes) = self.ipam.bind(key)?;
        let value = serde_json::to_vec(&endpoint).map_err(|source| AgentError::Corrupt {
            key: endpoint.name.clone(),
            source,
        })?;
        self.persist(
            &changes,
            vec![(format!("{ENDPOINTS}{}", lease_path(key)), Some(value))],
        )
        .await?;
        self.endpoints.insert(key.clone(), endpoint);
        Ok(lease)
    }

    /// Releases a lease (its address goes to quarantine); returns it and its endpoint.
    pub async fn release(&mut self, key: &LeaseKey) -> Result<Option<(Lease, Option<Endpoint>)>> {
        let Some((lease, changes)) = self.ipam.release(key, now_ms()) else {
            return Ok(None);
        };
        self.persist(
            &changes,
            vec![(format!("{ENDPOINTS}{}", lease_path(key)), None)],
        )
        .await?;
        Ok(Some((lease, self.endpoints.remove(key))))
    }

    /// The lease of `key`, if any.
    pub fn lease(&self, key: &LeaseKey) -> Option<&Lease> {
        self.ipam.lease(key)
    }

    /// Every lease.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.ipam.leases()
    }

    /// The endpoint of the bound lease `key`, if any.
    pub fn endpoint(&self, key: &LeaseKey) -> Option<&Endpoint> {
        self.endpoints.get(key)
    }

    /// Every published endpoint of a bound lease.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values()
    }

    /// Leases of `network` that are not in `valid` (for CNI GC).
    pub fn not_in(
        &self,
        network: &str,
        valid: &std::collections::BTreeSet<(String, String)>,
    ) -> Vec<LeaseKey> {
        self.ipam
            .leases()
            .filter(|l| {
                l.key.network == network
                    && !valid.contains(&(l.key.container_id.clone(), l.key.ifname.clone()))
            })
            .map(|l| l.key.clone())
            .collect()
    }

    /// Leases, free addresses and blocks over every segment of this node's book (the agent's
    /// metrics).
    pub fn address_totals(&self) -> crate::metrics::AddressTotals {
        let mut totals = crate::metrics::AddressTotals {
            leases: self.ipam.leases().count(),
            ..Default::default()
        };
        for segment in self.segments.keys() {
            totals.free += self.ipam.free_count(segment);
            totals.blocks += self.ipam.blocks(segment).len();
        }
        totals
    }

    /// Free addresses of `segment` in this node's blocks.
    pub fn free_count(&self, segment: &str) -> usize {
        self.ipam.free_count(segment)
    }

    /// Rolls back every lease still `Pending`: its ADD never completed (the agent died in the
    /// middle), so the runtime saw a failure and the half-made veth must go.
    pub async fn roll_back_pending<K: NodeKernel>(&mut self, kernel: &K) -> Result<usize> {
        let pending: Vec<LeaseKey> = self
            .ipam
            .leases()
            .filter(|l| l.state == LeaseState::Pending)
            .map(|l| l.key.clone())
            .collect();
        for key in &pending {
            kernel
                .detach(&host_ifname(&key.network, &key.container_id, &key.ifname))
                .await?;
            self.release(key).await?;
        }
        Ok(pending.len())
    }
}
