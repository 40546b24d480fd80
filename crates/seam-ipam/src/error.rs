//! The one error type of the IPAM state machine.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::LeaseKey;

/// Result with [`IpamError`].
pub type Result<T, E = IpamError> = std::result::Result<T, E>;

/// Everything the IPAM state machine can refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpamError {
    /// The segment was never added with [`crate::Ipam::add_segment`].
    #[error("unknown segment {segment:?}")]
    UnknownSegment {
        /// The segment asked for.
        segment: String,
    },
    /// A segment was added again with a different subnet or gateway.
    #[error("segment {segment:?} already has subnet {subnet} and gateway {gateway}")]
    SegmentConflict {
        /// The segment.
        segment: String,
        /// Its existing subnet.
        subnet: Ipv4Net,
        /// Its existing gateway.
        gateway: Ipv4Addr,
    },
    /// A segment's gateway is not inside its subnet.
    #[error("gateway {gateway} of segment {segment:?} is outside its subnet {subnet}")]
    GatewayOutsideSubnet {
        /// The segment.
        segment: String,
        /// The subnet given.
        subnet: Ipv4Net,
        /// The gateway given.
        gateway: Ipv4Addr,
    },
    /// A block does not lie inside its segment's subnet.
    #[error("block {block} is outside subnet {subnet} of segment {segment:?}")]
    BlockOutsideSubnet {
        /// The segment.
        segment: String,
        /// The block given.
        block: Ipv4Net,
        /// The segment's subnet.
        subnet: Ipv4Net,
    },
    /// A block overlaps a block this node already owns.
    #[error(
        "block {block} for segment {segment:?} overlaps block {other} of segment {other_segment:?}"
    )]
    BlockOverlap {
        /// The segment the new block was for.
        segment: String,
        /// The block given.
        block: Ipv4Net,
        /// The block it overlaps.
        other: Ipv4Net,
        /// The segment that owns `other`.
        other_segment: String,
    },
    /// No address can be handed out from the node's blocks of the segment: the caller should
    /// claim another block and retry (or allow early reuse of quarantined addresses).
    #[error("segment {segment:?} has no free address in this node's blocks ({quarantined} in quarantine)")]
    Exhausted {
        /// The segment.
        segment: String,
        /// How many addresses sit in quarantine and could be reused early.
        quarantined: usize,
    },
    /// An operation named a lease that does not exist.
    #[error("no lease for {key}")]
    NoLease {
        /// The lease key.
        key: LeaseKey,
    },
    /// A reserve named a key that already holds a lease in another segment.
    #[error("{key} already holds a lease in segment {existing:?}, not {requested:?}")]
    LeaseInOtherSegment {
        /// The lease key.
        key: LeaseKey,
        /// The segment of the existing lease.
        existing: String,
        /// The segment asked for.
        requested: String,
    },
    /// Two persisted leases hold the same address.
    #[error("address {ip} in segment {segment:?} is leased to both {first} and {second}")]
    DuplicateAddress {
        /// The segment.
        segment: String,
        /// The address.
        ip: Ipv4Addr,
        /// One lease holding it (boxed to keep the error small).
        first: Box<LeaseKey>,
        /// The other lease holding it.
        second: Box<LeaseKey>,
    },
    /// The same lease key appears twice in persisted state.
    #[error("lease {key} is persisted twice")]
    DuplicateLease {
        /// The lease key.
        key: LeaseKey,
    },
    /// A persisted lease's address is not in any of the node's blocks of its segment.
    #[error("lease {key} holds {ip}, which is not in this node's blocks of segment {segment:?}")]
    OutsideBlocks {
        /// The lease key.
        key: LeaseKey,
        /// The segment.
        segment: String,
        /// The address.
        ip: Ipv4Addr,
    },
    /// A block was named that the node does not hold in that segment.
    #[error("this node holds no block {block} in segment {segment:?}")]
    UnknownBlock {
        /// The segment.
        segment: String,
        /// The block.
        block: Ipv4Net,
    },
    /// A block cannot be given back: an address of it is leased.
    #[error("block {block} of segment {segment:?} is in use: {ip} is leased to {key}")]
    BlockLeased {
        /// The segment.
        segment: String,
        /// The block.
        block: Ipv4Net,
        /// A leased address in it.
        ip: Ipv4Addr,
        /// Who holds that address (boxed to keep the error small).
        key: Box<LeaseKey>,
    },
    /// A block cannot be given back yet: an address of it is still in quarantine.
    #[error(
        "block {block} of segment {segment:?} is in use: {ip} is in quarantine until {until_ms} ms"
    )]
    BlockQuarantined {
        /// The segment.
        segment: String,
        /// The block.
        block: Ipv4Net,
        /// A quarantined address in it.
        ip: Ipv4Addr,
        /// When that address's quarantine ends.
        until_ms: u64,
    },
}
