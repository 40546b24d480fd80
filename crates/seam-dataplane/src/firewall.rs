//! In-place changes to Seam's nftables table, as values.
//!
//! `nft` (1.0.6 here) reads every element of every set of the table before it applies even one
//! `add element` (about a second at 10,000 endpoints), so changes that only move endpoints in and
//! out of groups go to the kernel as nf_tables netlink messages instead; only new rule chains (a
//! policy added or edited) still go through `nft -f`. The renderer (`seam_firewall::render::table`)
//! builds a [`FirewallDelta`]; `seam-linux` executes it.

use std::net::Ipv4Addr;

/// One nf_tables change of `table inet seam`, executed inside a netlink batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableOp {
    /// Adds inclusive address ranges to an interval set.
    AddRanges {
        /// The set's nftables name.
        set: String,
        /// Inclusive ranges, sorted, disjoint and not adjacent.
        ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    },
    /// Removes ranges that are elements of an interval set, exactly as they were added.
    DeleteRanges {
        /// The set's nftables name.
        set: String,
        /// Inclusive ranges.
        ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    },
    /// Adds `address : goto chain` entries to a verdict map.
    AddGotos {
        /// The map's name.
        map: String,
        /// Key and target chain.
        entries: Vec<(Ipv4Addr, String)>,
    },
    /// Removes entries of a verdict map by key.
    DeleteKeys {
        /// The map's name.
        map: String,
        /// Keys.
        keys: Vec<Ipv4Addr>,
    },
    /// Creates an empty regular chain.
    AddChain {
        /// Its name.
        name: String,
    },
    /// Appends `jump target` (or `goto target`) to a chain.
    AddJump {
        /// The chain appended to.
        chain: String,
        /// The chain jumped to.
        target: String,
        /// `goto` instead of `jump`.
        goto: bool,
    },
    /// Deletes a chain nothing references any more (with its rules).
    DeleteChain {
        /// Its name.
        name: String,
    },
    /// Deletes a set nothing references any more.
    DeleteSet {
        /// Its name.
        name: String,
    },
}

/// An in-place change of the table, applied in three steps so that traffic sees the old policy
/// until one atomic batch switches to the new one:
/// 1. `prepare`: `nft -f` text that adds the new sets (empty) and the new rule chains. Nothing
///    refers to them yet, so traffic is unaffected.
/// 2. `switch`: one netlink batch (atomic) with the set element changes, the new dispatch chains
///    and the dispatch map changes.
/// 3. `cleanup`: one netlink batch deleting chains and sets nothing refers to any more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallDelta {
    /// New sets and rule chains, as `nft -f` text; `None` when there are none.
    pub prepare: Option<String>,
    /// The switch, one batch.
    pub switch: Vec<TableOp>,
    /// What is left unreferenced, one batch.
    pub cleanup: Vec<TableOp>,
}

impl FirewallDelta {
    /// Whether applying it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.prepare.is_none() && self.switch.is_empty() && self.cleanup.is_empty()
    }
}
