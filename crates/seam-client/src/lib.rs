//! Typed HTTP client for the `seam-controller` API.
//!
//! [`ControllerClient`] speaks HTTP/1 over a Unix socket (`unix:/run/seam/controller.sock`),
//! TCP (`http://127.0.0.1:7070`) or mutual TLS 1.3 (`https://10.0.0.1:7443`, with
//! [`ClientTls`]: the CA and the client certificate, re-read when renewed), to one controller or to a comma-separated list of replicas
//! (moving on to the next one while a replica is unreachable or answers 503), one connection
//! per request, with a timeout on every request
//! except the watch stream ([`WatchStream`], which instead fails when not even a heartbeat
//! arrives for a while). Errors keep the controller's status, reason and message
//! ([`ClientError::Api`]); a compacted watch revision is its own variant ([`ClientError::Gone`]).
//! Flow records are posted by agents and read as a stream ([`FlowStream`]).
//!
//! Architecture invariant: depends only on `seam-model`, `seam-pki` and the hyper and rustls
//! stacks, never on the
//! controller or the store, so the node agent and the CLI can link it cheaply.
//! Start reading at [`ControllerClient`].

#![warn(missing_docs)]

mod client;
mod error;
mod flows;
mod leases;
mod ndjson;
mod realization;
mod services;
mod transport;
mod watch;

pub use client::{
    ControllerClient, LeaderInfo, RawResponse, Versioned, DEFAULT_TIMEOUT,
    DEFAULT_WATCH_IDLE_TIMEOUT,
};
pub use error::{BoxError, ClientError, Result};
pub use flows::{FlowEvent, FlowStream};
pub use transport::ClientTls;
pub use watch::WatchStream;
