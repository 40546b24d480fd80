//! Seam's IPAM as a pure state machine.
//!
//! Holds [`Ipam`]: the address *blocks* a node owns per *segment*, the *leases* of CNI
//! attachments ([`LeaseKey`]) and the *quarantine* of freed addresses. Every mutating call
//! returns the [`Change`]s the caller must persist (durably, before it configures an interface);
//! after a restart the caller rebuilds the state with [`Ipam::restore`] from what it persisted
//! ([`PersistedState`] applies changes the same way a store would).
//!
//! Allocation order, per segment: first a never-used address (next-fit from a cursor, so
//! addresses are spread), then the quarantined address released longest ago whose quarantine
//! has expired, then — only when the caller passes [`Reuse::AllowEarly`] — the quarantined
//! address released longest ago. The segment's network, broadcast and gateway addresses are
//! never handed out.
//!
//! Architecture invariant: this crate is pure. It does no I/O, reads no clock (time comes in as
//! `now_ms`), depends on no other Seam crate and never on tokio.
//!
//! Start reading at [`Ipam`].

#![warn(missing_docs)]

mod error;
mod persisted;
mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub use error::{IpamError, Result};
pub use persisted::PersistedState;
pub use types::{Change, Lease, LeaseKey, LeaseState, Reuse};

/// One segment as this node sees it.
#[derive(Debug, Clone)]
struct Segment {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    blocks: Vec<Ipv4Net>,
    /// When the node got each block: a block no lease ever used counts as idle from then.
    held_since: BTreeMap<Ipv4Net, u64>,
    /// Usable addresses never handed out (not leased, not quarantined).
    fresh: BTreeSet<Ipv4Addr>,
    /// Released addresses and when they were released.
    quarantine: BTreeMap<Ipv4Addr, u64>,
    /// Addresses currently leased, and to whom.
    leased: BTreeMap<Ipv4Addr, LeaseKey>,
    /// The last fresh address handed out (next-fit).
    cursor: Option<Ipv4Addr>,
}

impl Segment {
    /// Whether `ip` may ever be handed out in this segment (ignoring blocks).
    fn usable(&self, ip: Ipv4Addr) -> bool {
        if ip == self.gateway || !self.subnet.contains(&ip) {
            return false;
        }
        if self.subnet.prefix_len() < 31
            && (ip == self.subnet.network() || ip == self.subnet.broadcast())
        {
            return false;
        }
        true
    }

    /// Whether an address of `block` is leased (the first one found), or still in quarantine at
    /// `now_ms` (with the time its quarantine ends).
    fn block_busy(&self, block: Ipv4Net, now_ms: u64, quarantine_ms: u64) -> Option<Busy> {
        let range = block.network()..=block.broadcast();
        if let Some((ip, key)) = self.leased.range(range.clone()).next() {
            return Some(Busy::Leased(*ip, key.clone()));
        }
        self.quarantine
            .range(range)
            .map(|(ip, released)| (*ip, released.saturating_add(quarantine_ms)))
            .find(|(_, until)| *until > now_ms)
            .map(|(ip, until)| Busy::Quarantined(ip, until))
    }

    /// When the last use of `block` ended: its latest release, else when the node got it.
    fn block_last_used(&self, block: Ipv4Net) -> u64 {
        let since = self.held_since.get(&block).copied().unwrap_or(0);
        self.quarantine
            .range(block.network()..=block.broadcast())
            .map(|(_, released)| *released)
            .fold(since, u64::max)
    }

    fn in_blocks(&self, ip: Ipv4Addr) -> bool {
        self.blocks.iter().any(|b| b.contains(&ip))
    }

    /// The usable addresses of one block.
    fn usable_in(&self, block: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let (lo, hi) = (u32::from(block.network()), u32::from(block.broadcast()));
        (lo..=hi)
            .map(Ipv4Addr::from)
            .filter(move |ip| self.usable(*ip))
    }

    /// The quarantined address released longest ago, if `pred` accepts its release time.
    fn oldest_quarantined(&self, pred: impl Fn(u64) -> bool) -> Option<Ipv4Addr> {
        self.quarantine
            .iter()
            .filter(|(_, released)| pred(**released))
            .min_by_key(|(ip, released)| (**released, **ip))
            .map(|(ip, _)| *ip)
    }
}

/// Why a block cannot be given back yet.
enum Busy {
    Leased(Ipv4Addr, LeaseKey),
    Quarantined(Ipv4Addr, u64),
}

/// The IPAM state of one node: segments, their blocks, leases and quarantine.
#[derive(Debug, Clone)]
pub struct Ipam {
    quarantine_ms: u64,
    segments: BTreeMap<String, Segment>,
    leases: BTreeMap<LeaseKey, Lease>,
}

impl Ipam {
    /// An empty IPAM where a released address stays in quarantine for `quarantine_ms`.
    pub fn new(quarantine_ms: u64) -> Self {
        Self {
            quarantine_ms,
            segments: BTreeMap::new(),
            leases: BTreeMap::new(),
        }
    }

    /// Declares a segment. Adding it again with the same subnet and gateway is a no-op.
    pub fn add_segment(&mut self, segment: &str, subnet: Ipv4Net, gateway: Ipv4Addr) -> Result<()> {
        let subnet = subnet.trunc();
        if let Some(existing) = self.segments.get(segment) {
            if existing.subnet == subnet && existing.gateway == gateway {
                return Ok(());
            }
            return Err(IpamError::SegmentConflict {
                segment: segment.to_string(),
                subnet: existing.subnet,
                gateway: existing.gateway,
            });
        }
        if !subnet.contains(&gateway) {
            return Err(IpamError::GatewayOutsideSubnet {
                segment: segment.to_string(),
                subnet,
                gateway,
            });
        }
        self.segments.insert(
            segment.to_string(),
            Segment {
                subnet,
                gateway,
                blocks: Vec::new(),
                held_since: BTreeMap::new(),
                fresh: BTreeSet::new(),
                quarantine: BTreeMap::new(),
                leased: BTreeMap::new(),
                cursor: None,
            },
        );
        Ok(())
    }

    /// Gives the node an address block of a segment, held since time 0; see
    /// [`Ipam::add_block_at`].
    pub fn add_block(&mut self, segment: &str, block: Ipv4Net) -> Result<()> {
        self.add_block_at(segment, block, 0)
    }

    /// Gives the node an address block of a segment at `now_ms` (a block no lease uses counts
    /// as idle from then, see [`Ipam::idle_blocks`]). The block must lie inside the segment's
    /// subnet and must not overlap any block already held; adding the same block to the same
    /// segment again is a no-op.
    pub fn add_block_at(&mut self, segment: &str, block: Ipv4Net, now_ms: u64) -> Result<()> {
        let block = block.trunc();
        for (name, seg) in &self.segments {
            for other in &seg.blocks {
                if name == segment && *other == block {
                    return Ok(());
                }
                if other.contains(&block.network()) || block.contains(&other.network()) {
                    return Err(IpamError::BlockOverlap {
                        segment: segment.to_string(),
                        block,
                        other: *other,
                        other_segment: name.clone(),
                    });
                }
            }
        }
        let seg = self.segment_mut(segment)?;
        if !seg.subnet.contains(&block) {
            return Err(IpamError::BlockOutsideSubnet {
                segment: segment.to_string(),
                block,
                subnet: seg.subnet,
            });
        }
        let fresh: Vec<_> = seg
            .usable_in(block)
            .filter(|ip| !seg.leased.contains_key(ip) && !seg.quarantine.contains_key(ip))
            .collect();
        seg.fresh.extend(fresh);
        seg.blocks.push(block);
        seg.blocks.sort();
        seg.held_since.insert(block, now_ms);
        Ok(())
    }

    /// The blocks the node can give back at `now_ms`, in segment then address order: no address
    /// of the block is leased, none is still in quarantine, and its last use ended at least
    /// `idle_ms` ago (its latest release of an address, or when the node got it if none was
    /// ever released there).
    pub fn idle_blocks(&self, now_ms: u64, idle_ms: u64) -> Vec<(String, Ipv4Net)> {
        let mut idle = Vec::new();
        for (name, seg) in &self.segments {
            for block in &seg.blocks {
                if seg.block_busy(*block, now_ms, self.quarantine_ms).is_none()
                    && seg.block_last_used(*block).saturating_add(idle_ms) <= now_ms
                {
                    idle.push((name.clone(), *block));
                }
            }
        }
        idle
    }

    /// Takes `block` away from the node so that no lease lands in it again: its free addresses
    /// and its quarantine entries (all expired) go, and the returned changes delete those
    /// entries. Refused while an address of the block is leased or still in quarantine at
    /// `now_ms`; changes nothing then.
    pub fn retire_block(
        &mut self,
        segment: &str,
        block: Ipv4Net,
        now_ms: u64,
    ) -> Result<Vec<Change>> {
        let quarantine_ms = self.quarantine_ms;
        let block = block.trunc();
        let seg = self.segment_mut(segment)?;
        let Some(index) = seg.blocks.iter().position(|b| *b == block) else {
            return Err(IpamError::UnknownBlock {
                segment: segment.to_string(),
                block,
            });
        };
        match seg.block_busy(block, now_ms, quarantine_ms) {
            Some(Busy::Leased(ip, key)) => {
                return Err(IpamError::BlockLeased {
                    segment: segment.to_string(),
                    block,
                    ip,
                    key: Box::new(key),
                })
            }
            Some(Busy::Quarantined(ip, until_ms)) => {
                return Err(IpamError::BlockQuarantined {
                    segment: segment.to_string(),
                    block,
                    ip,
                    until_ms,
                })
            }
            None => {}
        }
        seg.blocks.remove(index);
        seg.held_since.remove(&block);
        let range = block.network()..=block.broadcast();
        let fresh: Vec<Ipv4Addr> = seg.fresh.range(range.clone()).copied().collect();
        for ip in fresh {
            seg.fresh.remove(&ip);
        }
        let quarantined: Vec<Ipv4Addr> = seg.quarantine.range(range).map(|(ip, _)| *ip).collect();
        let mut changes = Vec::new();
        for ip in quarantined {
            seg.quarantine.remove(&ip);
            changes.push(Change::DeleteQuarantine {
                segment: segment.to_string(),
                ip,
            });
        }
        Ok(changes)
    }

    /// Rebuilds leases and quarantine from persisted state, after segments and blocks were
    /// added. Checks everything before changing anything. Returns changes that clean up
    /// persisted quarantine entries that no longer matter (the address is leased, outside the
    /// node's blocks, or of an unknown segment).
    pub fn restore(
        &mut self,
        leases: Vec<Lease>,
        quarantine: Vec<(String, Ipv4Addr, u64)>,
    ) -> Result<Vec<Change>> {
        let mut by_ip: BTreeMap<(&str, Ipv4Addr), &LeaseKey> = BTreeMap::new();
        for lease in self.leases.values() {
            by_ip.insert((&lease.segment, lease.ip), &lease.key);
        }
        let mut keys = BTreeSet::new();
        for lease in &leases {
            if self.leases.contains_key(&lease.key) || !keys.insert(&lease.key) {
                return Err(IpamError::DuplicateLease {
                    key: lease.key.clone(),
                });
            }
            let seg = self.segment(&lease.segment)?;
            if !seg.usable(lease.ip) || !seg.in_blocks(lease.ip) {
                return Err(IpamError::OutsideBlocks {
                    key: lease.key.clone(),
                    segment: lease.segment.clone(),
                    ip: lease.ip,
                });
            }
            if let Some(first) = by_ip.insert((&lease.segment, lease.ip), &lease.key) {
                return Err(IpamError::DuplicateAddress {
                    segment: lease.segment.clone(),
                    ip: lease.ip,
                    first: Box::new(first.clone()),
                    second: Box::new(lease.key.clone()),
                });
            }
        }
        let mut cleanup = Vec::new();
        let mut keep = Vec::new();
        for (segment, ip, released_ms) in quarantine {
            let wanted = self.segments.get(&segment).is_some_and(|seg| {
                seg.usable(ip) && seg.in_blocks(ip) && !seg.leased.contains_key(&ip)
            }) && !by_ip.contains_key(&(segment.as_str(), ip));
            if wanted {
                keep.push((segment, ip, released_ms));
            } else {
                cleanup.push(Change::DeleteQuarantine { segment, ip });
            }
        }
        for lease in leases {
            if let Some(seg) = self.segments.get_mut(&lease.segment) {
                seg.fresh.remove(&lease.ip);
                seg.quarantine.remove(&lease.ip);
                seg.leased.insert(lease.ip, lease.key.clone());
                seg.cursor = seg.cursor.max(Some(lease.ip));
            }
            self.leases.insert(lease.key.clone(), lease);
        }
        for (segment, ip, released_ms) in keep {
            if let Some(seg) = self.segments.get_mut(&segment) {
                seg.fresh.remove(&ip);
                let entry = seg.quarantine.entry(ip).or_insert(released_ms);
                *entry = (*entry).max(released_ms);
            }
        }
        Ok(cleanup)
    }

    /// Reserves an address for `key` in `segment` without early reuse of quarantined
    /// addresses; see [`Ipam::reserve_with`].
    pub fn reserve(
        &mut self,
        key: LeaseKey,
        segment: &str,
        netns: &str,
        now_ms: u64,
    ) -> Result<(Lease, Vec<Change>)> {
        self.reserve_with(key, segment, netns, now_ms, Reuse::AfterQuarantine)
    }

    /// Reserves an address for `key` in `segment`, creating a [`LeaseState::Pending`] lease.
    ///
    /// Idempotent: when `key` already has a lease in `segment`, returns it and no changes.
    /// Fails with [`IpamError::Exhausted`] when the node's blocks of the segment have no
    /// address to give under `reuse`; the caller then claims another block and retries.
    pub fn reserve_with(
        &mut self,
        key: LeaseKey,
        segment: &str,
        netns: &str,
        now_ms: u64,
        reuse: Reuse,
    ) -> Result<(Lease, Vec<Change>)> {
        if let Some(existing) = self.leases.get(&key) {
            if existing.segment == segment {
                return Ok((existing.clone(), Vec::new()));
            }
            return Err(IpamError::LeaseInOtherSegment {
                key,
                existing: existing.segment.clone(),
                requested: segment.to_string(),
            });
        }
        let quarantine_ms = self.quarantine_ms;
        let seg = self.segment_mut(segment)?;
        let after_cursor = seg
            .cursor
            .and_then(|c| {
                seg.fresh
                    .range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                    .next()
            })
            .copied();
        let mut changes = Vec::new();
        let ip = if let Some(ip) = after_cursor.or_else(|| seg.fresh.first().copied()) {
            seg.fresh.remove(&ip);
            seg.cursor = Some(ip);
            ip
        } else {
            let expired = |released: u64| released.saturating_add(quarantine_ms) <= now_ms;
            let pick = seg.oldest_quarantined(expired).or_else(|| match reuse {
                Reuse::AllowEarly => seg.oldest_quarantined(|_| true),
                Reuse::AfterQuarantine => None,
            });
            let Some(ip) = pick else {
                return Err(IpamError::Exhausted {
                    segment: segment.to_string(),
                    quarantined: seg.quarantine.len(),
                });
            };
            seg.quarantine.remove(&ip);
            changes.push(Change::DeleteQuarantine {
                segment: segment.to_string(),
                ip,
            });
            ip
        };
        seg.leased.insert(ip, key.clone());
        let lease = Lease {
            key: key.clone(),
            segment: segment.to_string(),
            ip,
            state: LeaseState::Pending,
            netns: netns.to_string(),
            created_ms: now_ms,
        };
        self.leases.insert(key, lease.clone());
        changes.push(Change::PutLease(lease.clone()));
        Ok((lease, changes))
    }

    /// Marks a lease [`LeaseState::Bound`] once its interface is configured. Binding a bound
    /// lease returns no changes.
    pub fn bind(&mut self, key: &LeaseKey) -> Result<(Lease, Vec<Change>)> {
        let lease = self
            .leases
            .get_mut(key)
            .ok_or_else(|| IpamError::NoLease { key: key.clone() })?;
        if lease.state == LeaseState::Bound {
            return Ok((lease.clone(), Vec::new()));
        }
        lease.state = LeaseState::Bound;
        Ok((lease.clone(), vec![Change::PutLease(lease.clone())]))
    }

    /// Releases a lease; its address goes into quarantine. `None` when there is no such lease
    /// (CNI DEL is idempotent).
    pub fn release(&mut self, key: &LeaseKey, now_ms: u64) -> Option<(Lease, Vec<Change>)> {
        let lease = self.leases.remove(key)?;
        let mut changes = vec![Change::DeleteLease(key.clone())];
        if let Some(seg) = self.segments.get_mut(&lease.segment) {
            seg.leased.remove(&lease.ip);
            if seg.in_blocks(lease.ip) {
                seg.quarantine.insert(lease.ip, now_ms);
                changes.push(Change::PutQuarantine {
                    segment: lease.segment.clone(),
                    ip: lease.ip,
                    released_ms: now_ms,
                });
            }
        }
        Some((lease, changes))
    }

    /// The lease of `key`, if any.
    pub fn lease(&self, key: &LeaseKey) -> Option<&Lease> {
        self.leases.get(key)
    }

    /// Every lease, in key order.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    /// Releases every lease of `network` whose `(container_id, ifname)` is not in `valid`
    /// (CNI GC), returning each released lease with its changes.
    pub fn gc(
        &mut self,
        network: &str,
        valid: &BTreeSet<(String, String)>,
        now_ms: u64,
    ) -> Vec<(Lease, Vec<Change>)> {
        let stale: Vec<LeaseKey> = self
            .leases
            .keys()
            .filter(|k| {
                k.network == network && !valid.contains(&(k.container_id.clone(), k.ifname.clone()))
            })
            .cloned()
            .collect();
        stale
            .iter()
            .filter_map(|key| self.release(key, now_ms))
            .collect()
    }

    /// Addresses of the segment's blocks that are neither leased nor quarantined (0 for an
    /// unknown segment).
    pub fn free_count(&self, segment: &str) -> usize {
        self.segments.get(segment).map_or(0, |s| s.fresh.len())
    }

    /// Addresses of the segment in quarantine (0 for an unknown segment).
    pub fn quarantined_count(&self, segment: &str) -> usize {
        self.segments.get(segment).map_or(0, |s| s.quarantine.len())
    }

    /// The segment's quarantined addresses with their release times, in address order.
    pub fn quarantined(&self, segment: &str) -> Vec<(Ipv4Addr, u64)> {
        self.segments
            .get(segment)
            .map(|s| s.quarantine.iter().map(|(ip, t)| (*ip, *t)).collect())
            .unwrap_or_default()
    }

    /// The blocks the node holds for the segment, in address order.
    pub fn blocks(&self, segment: &str) -> Vec<Ipv4Net> {
        self.segments
            .get(segment)
            .map(|s| s.blocks.clone())
            .unwrap_or_default()
    }

    /// Whether the node holds `block` in `segment`.
    pub fn holds_block(&self, segment: &str, block: Ipv4Net) -> bool {
        self.segments
            .get(segment)
            .is_some_and(|s| s.blocks.contains(&block.trunc()))
    }

    fn segment(&self, segment: &str) -> Result<&Segment> {
        self.segments
            .get(segment)
            .ok_or_else(|| IpamError::UnknownSegment {
                segment: segment.to_string(),
            })
    }

    fn segment_mut(&mut self, segment: &str) -> Result<&mut Segment> {
        self.segments
            .get_mut(segment)
            .ok_or_else(|| IpamError::UnknownSegment {
                segment: segment.to_string(),
            })
    }
}

#[cfg(test)]
mod tests;
