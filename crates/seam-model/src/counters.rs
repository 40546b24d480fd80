//! The agent API's rule counters (`GET /v1/counters` on a node's agent): the packets and bytes
//! each rule of the node's `inet seam` table has counted, keyed by the rule's comment (its rule
//! id, as `seam_nft::names::nft_comment` writes it). Read leniently: a newer agent may add
//! fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What one rule has counted since the kernel's table last got it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One node's rule counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCounters {
    /// The node that counted.
    pub node: String,
    /// By rule comment.
    pub rules: BTreeMap<String, Counted>,
}

/// The agent API's default TCP port (`seamd --api-listen`).
pub const AGENT_API_PORT: u16 = 9473;
