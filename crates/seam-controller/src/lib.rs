//! Seam's control plane.
//!
//! Holds the desired state (nodes, segments, per-node address blocks, endpoints, namespaces,
//! tenants (with the join / isolate / make-global operations),
//! policy objects validated by [`seam_policy`]) in a
//! [`seam_store`] datastore under `/seam/v1/<plural>/<name>` (see [`keys`]), and serves it as a
//! versioned HTTP API with a watch stream ([`router`], [`serve`]). Segments are created on
//! demand per namespace or as one flat cluster segment ([`ControllerConfig`]); address blocks are
//! handed to nodes so each node allocates addresses on its own.
//!
//! Architecture invariants: no global state (several controllers may share a process); every
//! write is validated before it touches the store and is one store txn guarded by compares on
//! what it read; allocation is pure ([`allocate`]). The `seam-controller` binary is a thin
//! wrapper around [`serve`].
//!
//! Flow records posted by agents (`POST /v1/flows`) are held in memory only, bounded per node
//! and in all ([`FlowLimits`]), and served filtered and followed (`GET /v1/flows`, NDJSON).
//!
//! Replicas: several controllers may share one etcd; they elect a leader ([`election`]), only
//! the leader writes (fenced on the leader key), standbys serve reads and answer writes with
//! 503 `NotLeader`.
//!
//! Start reading at [`Controller`], then [`router`].

#![warn(missing_docs)]

pub mod allocate;
mod apply;
mod audit;
mod authz;
mod caller;
mod config;
mod controller;
pub mod election;
mod error;
mod externals;
mod flows;
mod http;
pub mod identities;
pub mod keys;
mod limits;
pub mod metrics;
mod node_leases;
pub mod ownership;
mod policies;
mod precondition;
mod realization;
mod serve;
mod services;
mod tenants;
mod ui;
mod vms;

pub use audit::{AUDIT_PREFIX, DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT, MAX_AUDIT_RECORDS};
pub use caller::{router_as, Caller};
pub use config::{
    ConnectionLimits, ControllerConfig, Listener, PortRange, SegmentMode, ServeOptions, Signing,
    TcpSecurity, TlsFiles, DEFAULT_MAX_CONNECTIONS, DEFAULT_NODE_CERT_VALIDITY,
    DEFAULT_SERVICE_CIDR, FLAT_SEGMENT, NAMESPACE_SEGMENT_PREFIX,
};
pub use controller::{Controller, Role, StoredSnapshot};
pub use election::{ReplicaConfig, DEFAULT_LEASE_TTL, LEADER_KEY};
pub use error::{reason, ApplyProblem, ConfigError, Error, Result, ServeError, MAX_LISTED_USERS};
pub use flows::{
    FlowLimits, FlowMetrics, DEFAULT_FLOWS_PER_NODE, DEFAULT_FLOWS_TOTAL, DEFAULT_FOLLOW_BUFFER,
};
pub use http::{router, HEARTBEAT_INTERVAL};
pub use limits::{
    Limits, DEFAULT_MAX_WATCHES_PER_CLIENT, DEFAULT_RATE_LIMIT, FLOW_POSTS_PER_SECOND,
};
pub use policies::{policy_kind_from_path, policy_store_name};
pub use serve::{raise_open_files_limit, serve, serve_controller, serve_controller_with};
pub use services::allocate::{
    ADDRESS_ALLOCATED, ADDRESS_NOT_IN_POOL, POOL_EXHAUSTED, POOL_NOT_FOUND,
};
