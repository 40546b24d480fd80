//! What a caller persists, modelled as plain maps.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::{Change, Lease, LeaseKey};

/// The durable IPAM state as the caller's store holds it: the result of applying every
/// persisted [`Change`] in order. Useful as the caller's in-memory mirror and in tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistedState {
    /// Leases by key.
    pub leases: BTreeMap<LeaseKey, Lease>,
    /// Quarantine entries: (segment, address) -> release time.
    pub quarantine: BTreeMap<(String, Ipv4Addr), u64>,
}

impl PersistedState {
    /// Applies one change.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::PutLease(lease) => {
                self.leases.insert(lease.key.clone(), lease.clone());
            }
            Change::DeleteLease(key) => {
                self.leases.remove(key);
            }
            Change::PutQuarantine {
                segment,
                ip,
                released_ms,
            } => {
                self.quarantine.insert((segment.clone(), *ip), *released_ms);
            }
            Change::DeleteQuarantine { segment, ip } => {
                self.quarantine.remove(&(segment.clone(), *ip));
            }
        }
    }

    /// Applies changes in order.
    pub fn apply_all<'a>(&mut self, changes: impl IntoIterator<Item = &'a Change>) {
        for change in changes {
            self.apply(change);
        }
    }

    /// The arguments of [`crate::Ipam::restore`].
    pub fn restore_parts(&self) -> (Vec<Lease>, Vec<(String, Ipv4Addr, u64)>) {
        let leases = self.leases.values().cloned().collect();
        let quarantine = self
            .quarantine
            .iter()
            .map(|((segment, ip), released)| (segment.clone(), *ip, *released))
            .collect();
        (leases, quarantine)
    }
}
