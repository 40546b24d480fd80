//! Leases of the local backends (memory and embedded): which keys each lease holds and when
//! it expires. etcd keeps its own; this table gives the local stores the same behaviour within
//! one process.
//!
//! Local leases live in memory only. That is enough: a local store belongs to one process,
//! and when that process is gone so is every holder of its leases (the embedded store deletes
//! keys bound to a previous run's leases when it is opened).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::types::{LeaseId, Op, Txn};

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

/// Live leases and the keys bound to them. Always used under the store's commit lock.
#[derive(Default)]
pub(crate) struct LeaseTable {
    next: i64,
    leases: BTreeMap<i64, Lease>,
    bound: HashMap<String, i64>,
}

impl LeaseTable {
    /// Grants a lease expiring `ttl` from now.
    pub(crate) fn grant(&mut self, ttl: Duration) -> (LeaseId, Instant) {
        self.next += 1;
        let deadline = Instant::now() + ttl;
        self.leases.insert(
            self.next,
            Lease {
                ttl,
                deadline,
                keys: BTreeSet::new(),
            },
        );
        (LeaseId(self.next), deadline)
    }

    /// Pushes a live lease's deadline `ttl` into the future.
    pub(crate) fn keep_alive(&mut self, lease: LeaseId) -> Result<()> {
        let now = Instant::now();
        match self.leases.get_mut(&lease.0) {
            Some(l) if l.deadline > now => {
                l.deadline = now + l.ttl;
                Ok(())
            }
            _ => Err(Error::LeaseNotFound { lease }),
        }
    }

    /// The deadline of `lease`, `None` when it is gone.
    pub(crate) fn deadline(&self, lease: LeaseId) -> Option<Instant> {
        self.leases.get(&lease.0).map(|l| l.deadline)
    }

    /// Fails when a put of `txn` names a lease that does not exist.
    pub(crate) fn check(&self, txn: &Txn) -> Result<()> {
        for op in &txn.success {
            if let Op::Put {
                lease: Some(lease), ..
            } = op
            {
                if !self.leases.contains_key(&lease.0) {
                    return Err(Error::LeaseNotFound { lease: *lease });
                }
            }
        }
        Ok(())
    }

    /// Records the bindings a committed `op` makes or removes.
    pub(crate) fn apply(&mut self, op: &Op) {
        let key = op.key();
        if let Some(old) = self.bound.remove(key) {
            if let Some(l) = self.leases.get_mut(&old) {
                l.keys.remove(key);
            }
        }
        if let Op::Put {
            lease: Some(lease), ..
        } = op
        {
            if let Some(l) = self.leases.get_mut(&lease.0) {
                l.keys.insert(key.to_string());
                self.bound.insert(key.to_string(), lease.0);
            }
        }
    }

    /// Removes `lease` and returns the txn that deletes its keys (`None` when it is gone).
    pub(crate) fn remove(&mut self, lease: LeaseId) -> Option<Txn> {
        let l = self.leases.remove(&lease.0)?;
        for key in &l.keys {
            self.bound.remove(key);
        }
        Some(l.keys.into_iter().fold(Txn::new(), Txn::delete))
    }

    /// Removes `lease` if its deadline has passed; see [`LeaseTable::remove`].
    pub(crate) fn remove_if_expired(&mut self, lease: LeaseId) -> Option<Txn> {
        let expired = self
            .leases
            .get(&lease.0)
            .is_some_and(|l| l.deadline <= Instant::now());
        if expired {
            self.remove(lease)
        } else {
            None
        }
    }
}

/// Runs `step` at `deadline` and again at every deadline it returns, until it returns `None`
/// (the lease expired and its keys were deleted, or it was revoked). Holds no store: `step`
/// upgrades a weak reference, so a dropped store ends the task at its next deadline.
pub(crate) fn spawn_expiry<F, Fut>(mut deadline: Instant, mut step: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<Instant>> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::time::sleep_until(deadline).await;
            match step().await {
                Some(next) => deadline = next,
                None => return,
            }
        }
    });
}
