//! The controller's errors: [`Error`] for API operations (each maps to one HTTP status and
//! [`seam_model::ApiError`] reason), [`ConfigError`] for start-up settings and [`ServeError`]
//! for binding and serving.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use seam_model::{MacAddr, ObjectKind, ValidationError};

/// Result with the controller's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an API operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request body is not JSON of the expected shape (syntax, type, unknown field).
    #[error("invalid {kind} body at {path}")]
    InvalidBody {
        /// The type the body should have been, e.g. `Node`.
        kind: &'static str,
        /// Field path where decoding failed (`.` for the top level).
        path: String,
        /// What serde reported.
        #[source]
        source: serde_json::Error,
    },
    /// The request decoded but its fields are invalid; every problem is listed with its path.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A policy object is not one the engine supports (unknown kind, unknown field, bad value);
    /// the cause names the field path of every problem.
    #[error("invalid policy object {name:?}")]
    InvalidPolicy {
        /// The object as named in the request path (`<kind>/<namespace>/<name>`).
        name: String,
        /// What seam-policy reported.
        #[source]
        source: seam_policy::ParseError,
    },
    /// The named object does not exist.
    #[error("{} {name:?} not found", kind_name(*kind))]
    NotFound {
        /// Its kind.
        kind: ObjectKind,
        /// Its name.
        name: String,
    },
    /// A segment's subnet overlaps another segment's.
    #[error("segment {segment:?} subnet {subnet} overlaps segment {other:?} ({other_subnet})")]
    SubnetOverlap {
        /// The segment being written.
        segment: String,
        /// Its subnet.
        subnet: Ipv4Net,
        /// The segment it overlaps.
        other: String,
        /// That segment's subnet.
        other_subnet: Ipv4Net,
    },
    /// A segment's VNI is already used by another segment.
    #[error("segment {segment:?} vni {vni} is already used by segment {other:?}")]
    VniTaken {
        /// The segment being written.
        segment: String,
        /// The VNI.
        vni: u32,
        /// The segment holding it.
        other: String,
    },
    /// A conditional write (`If-Match`) found the object at another revision than the one the
    /// request read: someone else changed (or deleted) it in between.
    #[error("{} {name:?} {}; the request expected revision {expected} (read it again and retry)", kind_name(*kind), now_at(*current))]
    RevisionConflict {
        /// Kind of the object.
        kind: ObjectKind,
        /// Its name.
        name: String,
        /// The revision the request named.
        expected: u64,
        /// The revision it is at now (`None`: it no longer exists).
        current: Option<u64>,
    },
    /// Refused because other objects still use this one; names every user (up to a bound).
    #[error("{} {name:?} is still in use by {}", kind_name(*kind), list_users(users, *total))]
    InUseBy {
        /// Kind of the object.
        kind: ObjectKind,
        /// Its name.
        name: String,
        /// Users (kind, name), at most [`MAX_LISTED_USERS`].
        users: Vec<(ObjectKind, String)>,
        /// How many users there are in all.
        total: usize,
    },
    /// An object cannot be deleted or changed while another one refers to it.
    #[error("{} {name:?} is in use by {} {user:?}", kind_name(*kind), kind_name(*user_kind))]
    InUse {
        /// The kind of the object being deleted or changed.
        kind: ObjectKind,
        /// Its name.
        name: String,
        /// The kind of the object that uses it.
        user_kind: ObjectKind,
        /// The name of the object that uses it.
        user: String,
    },
    /// Another endpoint of the segment already holds the address.
    #[error("endpoint {endpoint:?} ip {ip} is already held by endpoint {other:?} in segment {segment:?}")]
    AddressTaken {
        /// The endpoint being written.
        endpoint: String,
        /// The address.
        ip: Ipv4Addr,
        /// The segment.
        segment: String,
        /// The endpoint holding the address.
        other: String,
    },
    /// Another endpoint of the segment already holds the MAC.
    #[error("endpoint {endpoint:?} mac {mac} is already held by endpoint {other:?} in segment {segment:?}")]
    MacTaken {
        /// The endpoint being written.
        endpoint: String,
        /// The MAC.
        mac: MacAddr,
        /// The segment.
        segment: String,
        /// The endpoint holding the MAC.
        other: String,
    },
    /// Another node already uses the underlay address.
    #[error("node {node:?} underlayIp {ip} is already used by node {other:?}")]
    UnderlayIpTaken {
        /// The node being written.
        node: String,
        /// The address.
        ip: Ipv4Addr,
        /// The node using it.
        other: String,
    },
    /// The segment a namespace maps to exists but serves something else.
    #[error("segment {segment:?} exists but does not serve namespace {namespace:?}")]
    NamespaceMismatch {
        /// The segment name.
        segment: String,
        /// The namespace asked for.
        namespace: String,
    },
    /// The object kept changing under concurrent writers; the request may be retried.
    #[error("{} {name:?} kept changing concurrently, gave up after {attempts} attempts", kind_name(*kind))]
    Contended {
        /// Its kind.
        kind: ObjectKind,
        /// Its name.
        name: String,
        /// How many times the write was tried.
        attempts: u32,
    },
    /// The segment has no free address block left.
    #[error("segment {segment:?} ({subnet}) has no free /{block_prefix} block left")]
    BlocksExhausted {
        /// The segment.
        segment: String,
        /// Its subnet.
        subnet: Ipv4Net,
        /// The block size asked for.
        block_prefix: u8,
    },
    /// A node asked to release a block another node holds.
    #[error("block {block:?} is held by node {holder:?}, not by node {node:?}")]
    BlockNotHeld {
        /// The block's key.
        block: String,
        /// The node holding it.
        holder: String,
        /// The node that asked.
        node: String,
    },
    /// A pod endpoint's address is not in a block its node holds: only the holder of a block
    /// hands out its addresses.
    #[error("address {ip} of endpoint {endpoint:?} is not in a block held by node {node:?}")]
    AddressNotInNodeBlock {
        /// The endpoint being written.
        endpoint: String,
        /// Its address.
        ip: Ipv4Addr,
        /// Its node.
        node: String,
    },
    /// A segment's subnet holds a node's underlay address: the overlay's routes to the segment
    /// would capture that node's tunnel traffic.
    #[error("segment {segment:?} subnet {subnet} holds the underlay address {ip} of node {node:?}; a segment may not overlap the nodes' underlay")]
    SegmentHoldsUnderlay {
        /// The segment being written.
        segment: String,
        /// Its subnet.
        subnet: Ipv4Net,
        /// The node whose address it holds.
        node: String,
        /// That node's underlay address.
        ip: Ipv4Addr,
    },
    /// A node's underlay address lies in a pod range (a segment's subnet or the pool).
    #[error("node {node:?} underlayIp {ip} lies in {owner} ({range}); a node's underlay address may not fall in a pod or service range")]
    UnderlayInPodRange {
        /// The node being written.
        node: String,
        /// Its underlay address.
        ip: Ipv4Addr,
        /// The range it lies in.
        range: Ipv4Net,
        /// What the range is, e.g. `segment "ns-web"`.
        owner: String,
    },
    /// A node asked for another block of a segment while the blocks it holds there are mostly
    /// unused (see [`crate::ownership::SPARE_BLOCKS`]).
    #[error("node {node:?} holds {held} block(s) of segment {segment:?} with {free} addresses no endpoint uses; a node gets another block of a segment only while its blocks there have fewer than {limit} unused addresses (two blocks' worth)")]
    BlockQuota {
        /// The segment.
        segment: String,
        /// The node that asked.
        node: String,
        /// How many blocks of the segment it holds.
        held: usize,
        /// How many of their addresses no endpoint uses.
        free: u64,
        /// The bound `free` must stay under.
        limit: u64,
    },
    /// An endpoint names another namespace than the one its segment serves.
    #[error("endpoint {endpoint:?} is in namespace {namespace:?} but segment {segment:?} serves namespace {segment_namespace:?}; an endpoint's namespace must match its segment's")]
    EndpointNamespaceMismatch {
        /// The endpoint being written.
        endpoint: String,
        /// Its namespace.
        namespace: String,
        /// Its segment.
        segment: String,
        /// The namespace the segment serves.
        segment_namespace: String,
    },
    /// The pool has no free segment subnet left.
    #[error("pool {pool} has no free /{prefix} left for a new segment")]
    PoolExhausted {
        /// The pool.
        pool: Ipv4Net,
        /// The segment size.
        prefix: u8,
    },
    /// No VNI is free at or above the configured base.
    #[error("no free vni at or above {base}")]
    VniExhausted {
        /// The configured lowest VNI.
        base: u32,
    },
    /// This replica is a standby (or just lost its leadership): writes go to the leader.
    #[error("this controller replica is not the leader; {}", leader_hint(leader.as_deref()))]
    NotLeader {
        /// The leader's advertised address, when one is known.
        leader: Option<String>,
    },
    /// A watch asked for a revision the store no longer holds.
    #[error("watch from revision {revision} is compacted; re-list with /v1/snapshot")]
    Compacted {
        /// The revision asked for.
        revision: u64,
        /// The store's error, with the oldest revision still held.
        #[source]
        source: seam_store::Error,
    },
    /// The store failed.
    #[error("store {op} of {key:?} failed")]
    Store {
        /// The operation: `get`, `list`, `txn`, `watch`.
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// The store's error.
        #[source]
        source: seam_store::Error,
    },
    /// A stored value does not decode as the object its key says it is.
    #[error("stored object {key:?} is corrupt")]
    Corrupt {
        /// The store key.
        key: String,
        /// What serde reported.
        #[source]
        source: serde_json::Error,
    },
    /// The request body is larger than the API reads.
    #[error("the request body is over the bound of {limit} bytes (MAX_BODY_BYTES); split it or make the objects smaller")]
    TooLarge {
        /// The bound, in bytes.
        limit: usize,
    },
    /// A policy object another manager owns (its `seam.dev/managed-by` annotation) would be
    /// replaced by one that does not carry that manager's mark.
    #[error("policy {name:?} is managed by {manager:?} (annotation {}); change it where {manager:?} takes it from, or delete it first", seam_model::MANAGED_BY_ANNOTATION)]
    ManagedElsewhere {
        /// The policy's store name.
        name: String,
        /// The value of its `seam.dev/managed-by` annotation.
        manager: String,
    },
    /// Objects of an apply were refused; nothing was written. Every problem names the object's
    /// 1-based document number.
    #[error("{} of {count} object(s) refused, nothing applied: {}", problems.len(), problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    ApplyRefused {
        /// How many objects the apply held.
        count: usize,
        /// The problems, in document order.
        problems: Vec<ApplyProblem>,
    },
    /// An apply's transaction found an object changed since it was read (another writer got
    /// there first); nothing was written and the apply may be retried.
    #[error("the {count} object(s) changed concurrently while they were applied; nothing applied, retry")]
    ApplyContended {
        /// How many objects the apply held.
        count: usize,
    },
    /// A Service asked for a ClusterIP, node port or LoadBalancer address another Service holds.
    #[error("service {service:?}: {what} is already held by service {owner:?}")]
    ServiceAllocationTaken {
        /// The Service being written (`namespace/name`).
        service: String,
        /// What it asked for (`ClusterIP 10.96.0.10`, `nodePort 30080/TCP`).
        what: String,
        /// The Service holding it.
        owner: String,
    },
    /// No ClusterIP or node port of the configured range is free.
    #[error("service {service:?}: no {what} of {range} is free")]
    ServiceRangeExhausted {
        /// The Service being written.
        service: String,
        /// `ClusterIP` or `node port`.
        what: &'static str,
        /// The range (`--service-cidr`, `--node-port-range`).
        range: String,
    },
    /// No VM by that name.
    #[error("vm {name:?} not found")]
    VmNotFound {
        /// The VM asked for.
        name: String,
    },
    /// Every address of the segment outside the nodes' pod blocks is taken.
    #[error("segment {segment:?} has no free address left for a VM outside the nodes' pod blocks")]
    VmAddressesExhausted {
        /// The segment.
        segment: String,
    },
    /// The request carries no identity (a TLS client without a certificate) and asks for more
    /// than joining or health.
    #[error("{method} {path} needs a client certificate; anonymous callers may only join (POST /v1/join) and ask /healthz")]
    Unauthenticated {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },
    /// The caller's role does not allow the request, or the object it writes is not its own;
    /// `rule` names what was refused (`node n2 may not write node n1`).
    #[error("forbidden: {rule}")]
    Forbidden {
        /// The rule, in words.
        rule: String,
    },
    /// The caller sent more requests than its rate allows ([`crate::Limits::rate_limit`]).
    #[error("{who} is over its rate limit of {rate} requests/s; retry in {retry_after_secs} s")]
    RateLimited {
        /// The caller (`node/n1`, or `anonymous 10.0.0.7`).
        who: String,
        /// Requests per second allowed.
        rate: u32,
        /// Seconds until a request is let through again (the `Retry-After` header).
        retry_after_secs: u64,
    },
    /// The caller already holds as many watch streams as it may
    /// ([`crate::Limits::max_watches_per_client`]).
    #[error("{who} already has {limit} watch streams open, the most one client may hold; close one first")]
    TooManyWatches {
        /// The caller.
        who: String,
        /// The bound.
        limit: u32,
    },
    /// A flow filter names a policy no stored policy object is.
    #[error("no stored policy or contract is {policy:?}; name one as flow records do ([KIND] [NAMESPACE/]NAME, e.g. \"NetworkPolicy prod/allow-web\", \"Contract web\", \"allow-web\")")]
    UnknownPolicy {
        /// The policy as the filter named it.
        policy: String,
    },
    /// A node identity operation was refused or failed (join tokens, join, renewal,
    /// revocation, a node certificate's identity check).
    #[error(transparent)]
    Identity(#[from] crate::identities::IdentityError),
    /// An object could not be encoded for the store.
    #[error("cannot encode {} {name:?}", kind_name(*kind))]
    Encode {
        /// Its kind.
        kind: ObjectKind,
        /// Its name.
        name: String,
        /// What serde reported.
        #[source]
        source: serde_json::Error,
    },
}

/// One refused object of an apply.
#[derive(Debug)]
pub struct ApplyProblem {
    /// 1-based position of the object in the apply (the manifest's document number).
    pub document: usize,
    /// `Kind namespace/name`.
    pub object: String,
    /// Why it was refused.
    pub error: Box<Error>,
}

impl std::fmt::Display for ApplyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "document {} ({}): {}",
            self.document,
            self.object,
            self.error.problem_text()
        )
    }
}

/// The reason strings of [`seam_model::ApiError`], one per status class.
pub mod reason {
    /// 400: the request is malformed or invalid.
    pub const INVALID: &str = "Invalid";
    /// 413: the request body is over the bound the API reads.
    pub const TOO_LARGE: &str = "TooLarge";
    /// 404: the object does not exist.
    pub const NOT_FOUND: &str = "NotFound";
    /// 409: existing state forbids the change.
    pub const CONFLICT: &str = "Conflict";
    /// 409: a conditional write (`If-Match`) found the object at another revision.
    pub const REVISION_CONFLICT: &str = "RevisionConflict";
    /// 409: no subnet, block or VNI left.
    pub const EXHAUSTED: &str = "Exhausted";
    /// 409: a node asked for another block of a segment while its blocks there are mostly
    /// unused; it should use those (its quarantined addresses included) first.
    pub const BLOCK_QUOTA: &str = "BlockQuota";
    /// 410: the watch revision was compacted.
    pub const GONE: &str = "Gone";
    /// 500: the controller or its store failed.
    pub const INTERNAL: &str = "Internal";
    /// 503: this replica does not lead; send writes to another endpoint.
    pub const NOT_LEADER: &str = "NotLeader";
    /// 503: the store cannot be reached for now; retry.
    pub const UNAVAILABLE: &str = "Unavailable";
    /// 401: the request carries no identity.
    pub const UNAUTHENTICATED: &str = "Unauthenticated";
    /// 403: the caller may not do this.
    pub const FORBIDDEN: &str = "Forbidden";
    /// 429: the caller sends requests faster than its rate limit.
    pub const RATE_LIMITED: &str = "RateLimited";
    /// 429: the caller holds as many watch streams as it may.
    pub const TOO_MANY_WATCHES: &str = "TooManyWatches";
}

impl Error {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Error::InvalidBody { .. } | Error::Invalid(_) | Error::InvalidPolicy { .. } => 400,
            Error::TooLarge { .. } => 413,
            Error::Unauthenticated { .. } => 401,
            Error::Forbidden { .. } => 403,
            Error::RateLimited { .. } | Error::TooManyWatches { .. } => 429,
            // Validation problems are found before state problems, so the first says which.
            Error::ApplyRefused { problems, .. } => {
                problems.first().map_or(400, |p| p.error.status())
            }
            Error::ManagedElsewhere { .. } | Error::ApplyContended { .. } => 409,
            Error::NotFound { .. } | Error::VmNotFound { .. } | Error::UnknownPolicy { .. } => 404,
            Error::VmAddressesExhausted { .. } => 409,
            Error::SubnetOverlap { .. }
            | Error::VniTaken { .. }
            | Error::InUse { .. }
            | Error::InUseBy { .. }
            | Error::RevisionConflict { .. }
            | Error::AddressTaken { .. }
            | Error::MacTaken { .. }
            | Error::UnderlayIpTaken { .. }
            | Error::NamespaceMismatch { .. }
            | Error::Contended { .. }
            | Error::BlocksExhausted { .. }
            | Error::BlockNotHeld { .. }
            | Error::AddressNotInNodeBlock { .. }
            | Error::SegmentHoldsUnderlay { .. }
            | Error::UnderlayInPodRange { .. }
            | Error::BlockQuota { .. }
            | Error::EndpointNamespaceMismatch { .. }
            | Error::PoolExhausted { .. }
            | Error::ServiceAllocationTaken { .. }
            | Error::ServiceRangeExhausted { .. }
            | Error::VniExhausted { .. } => 409,
            Error::Compacted { .. } => 410,
            Error::Identity(e) => e.status(),
            Error::NotLeader { .. }
            | Error::Store {
                source: seam_store::Error::Etcd { .. },
                ..
            } => 503,
            Error::Store { .. } | Error::Corrupt { .. } | Error::Encode { .. } => 500,
        }
    }

    /// The machine-readable reason of the [`seam_model::ApiError`] body.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::BlocksExhausted { .. }
            | Error::VmAddressesExhausted { .. }
            | Error::PoolExhausted { .. }
            | Error::ServiceRangeExhausted { .. }
            | Error::VniExhausted { .. } => reason::EXHAUSTED,
            Error::NotLeader { .. } => reason::NOT_LEADER,
            Error::BlockQuota { .. } => reason::BLOCK_QUOTA,
            Error::RevisionConflict { .. } => reason::REVISION_CONFLICT,
            Error::Unauthenticated { .. } => reason::UNAUTHENTICATED,
            Error::Forbidden { .. } => reason::FORBIDDEN,
            Error::RateLimited { .. } => reason::RATE_LIMITED,
            Error::TooManyWatches { .. } => reason::TOO_MANY_WATCHES,
            Error::Identity(e) => e.reason(),
            _ => match self.status() {
                400 => reason::INVALID,
                404 => reason::NOT_FOUND,
                413 => reason::TOO_LARGE,
                409 => reason::CONFLICT,
                410 => reason::GONE,
                503 => reason::UNAVAILABLE,
                _ => reason::INTERNAL,
            },
        }
    }

    /// What is wrong, once: [`Error::message`] without the layers a policy's parse error adds
    /// (the document number of a one-document parse, the same problems twice).
    fn problem_text(&self) -> String {
        match self {
            Error::InvalidPolicy { source, .. } => match source {
                seam_policy::ParseError::Invalid { source, .. } => source.to_string(),
                seam_policy::ParseError::Decode {
                    kind,
                    path,
                    message,
                    ..
                } => format!("{kind}: {path}: {message}"),
                seam_policy::ParseError::Header { path, message, .. } => {
                    format!("{path}: {message}")
                }
                other => other.to_string(),
            },
            other => other.message(),
        }
    }

    /// The message of the [`seam_model::ApiError`] body: this error and its causes, joined
    /// with `: ` (so a body error names the field serde stopped at, and why).
    pub fn message(&self) -> String {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        message
    }
}

/// How many users an [`Error::InUseBy`] names.
pub const MAX_LISTED_USERS: usize = 20;

fn now_at(current: Option<u64>) -> String {
    match current {
        Some(revision) => format!("is at revision {revision}"),
        None => "no longer exists".to_string(),
    }
}

fn list_users(users: &[(ObjectKind, String)], total: usize) -> String {
    let mut out = users
        .iter()
        .map(|(kind, name)| format!("{} {name:?}", kind_name(*kind)))
        .collect::<Vec<_>>()
        .join(", ");
    if total > users.len() {
        out.push_str(&format!(" and {} more", total - users.len()));
    }
    out
}

fn leader_hint(leader: Option<&str>) -> String {
    match leader {
        Some(address) => format!("the leader is at {address}"),
        None => "no leader is elected right now".to_string(),
    }
}

fn kind_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Node => "node",
        ObjectKind::Segment => "segment",
        ObjectKind::Block => "block",
        ObjectKind::Endpoint => "endpoint",
        ObjectKind::Namespace => "namespace",
        ObjectKind::Tenant => "tenant",
        ObjectKind::Policy => "policy",
        ObjectKind::AddressPool => "address pool",
        ObjectKind::Service => "service",
        ObjectKind::EndpointSlice => "endpoint slice",
        ObjectKind::NodeLease => "node lease",
    }
}

/// A start-up setting is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The setting `field` has a value it cannot have.
    #[error("invalid {field} {value:?}: expected {expected}")]
    Invalid {
        /// The setting, named as its command-line flag (without `--`).
        field: &'static str,
        /// The value given.
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
}

/// Why [`crate::serve`] could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No listener was given.
    #[error("no listener given")]
    NoListener,
    /// A listener could not be bound.
    #[error("cannot listen on {listener}")]
    Bind {
        /// The listener, e.g. `unix:/run/seam/controller.sock`.
        listener: String,
        /// The I/O cause.
        #[source]
        source: std::io::Error,
    },
    /// The socket path is held by a running server (it accepted a connection).
    #[error("socket {path} is in use by a running server")]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket path exists and is not a socket, so it is not removed.
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A TCP listener without TLS settings (and without the explicit insecure mode).
    #[error("{listener} needs TLS: give --tls-cert, --tls-key and --ca (or --insecure-plain-tcp, for a loopback lab only)")]
    TcpWithoutTls {
        /// The listener.
        listener: String,
    },
    /// The TLS certificate, key or CA could not be loaded.
    #[error("TLS settings")]
    Tls(#[source] seam_pki::PkiError),
    /// Serving on a listener failed.
    #[error("serving on {listener} failed")]
    Serve {
        /// The listener.
        listener: String,
        /// The I/O cause.
        #[source]
        source: std::io::Error,
    },
}
