//! Leases, their keys and the changes the caller persists.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The identity of one CNI attachment: network name, container id and interface name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseKey {
    /// CNI network name.
    pub network: String,
    /// CNI container id.
    pub container_id: String,
    /// Interface name inside the container.
    pub ifname: String,
}

impl LeaseKey {
    /// A key from its three parts.
    pub fn new(
        network: impl Into<String>,
        container_id: impl Into<String>,
        ifname: impl Into<String>,
    ) -> Self {
        Self {
            network: network.into(),
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }
}

impl fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attachment {}/{}/{}",
            self.network, self.container_id, self.ifname
        )
    }
}

/// Where a lease is in the CNI ADD sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LeaseState {
    /// Persisted, interface not configured yet (ADD in progress or interrupted).
    Pending,
    /// ADD completed.
    Bound,
}

/// An address held by one attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lease {
    /// Who holds it.
    pub key: LeaseKey,
    /// The segment the address belongs to.
    pub segment: String,
    /// The address.
    pub ip: Ipv4Addr,
    /// Pending or bound.
    pub state: LeaseState,
    /// The network namespace path given at ADD.
    pub netns: String,
    /// When the lease was reserved (caller's clock, milliseconds).
    pub created_ms: u64,
}

/// One write the caller must persist, in order, for the state to survive a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "op")]
pub enum Change {
    /// Create or overwrite a lease.
    PutLease(Lease),
    /// Delete a lease.
    DeleteLease(LeaseKey),
    /// Record that an address was released at `released_ms`.
    #[serde(rename_all = "camelCase")]
    PutQuarantine {
        /// The segment.
        segment: String,
        /// The address.
        ip: Ipv4Addr,
        /// When it was released.
        released_ms: u64,
    },
    /// Forget a quarantine entry (the address is leased again or no longer ours).
    DeleteQuarantine {
        /// The segment.
        segment: String,
        /// The address.
        ip: Ipv4Addr,
    },
}

/// Whether a reserve may hand out an address still in quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reuse {
    /// Only never-used addresses or ones whose quarantine has expired.
    #[default]
    AfterQuarantine,
    /// Also quarantined addresses whose quarantine has not expired (oldest release first),
    /// after every other choice is used up.
    AllowEarly,
}
