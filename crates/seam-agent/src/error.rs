use std::path::PathBuf;

/// What went wrong in the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The local lease store failed.
    #[error("lease store: {step}")]
    Store {
        /// What the agent was doing.
        step: &'static str,
        /// Why.
        #[source]
        source: seam_store::Error,
    },
    /// A stored record could not be decoded.
    #[error("corrupt record {key} in the lease store")]
    Corrupt {
        /// Its key.
        key: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// IPAM refused.
    #[error(transparent)]
    Ipam(#[from] seam_ipam::IpamError),
    /// The controller could not be reached or refused.
    #[error("controller: {step}")]
    Controller {
        /// What the agent asked for.
        step: &'static str,
        /// Why.
        #[source]
        source: seam_client::ClientError,
    },
    /// The kernel refused.
    #[error(transparent)]
    Kernel(#[from] seam_dataplane::Error),
    /// The CNI socket could not be set up.
    #[error("cni socket {path}")]
    Socket {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why the node could not get, keep or renew its certificate ([`crate::identity`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeCertError {
    /// No certificate and key in the directory.
    #[error("no node certificate in {}", dir.display())]
    Missing {
        /// The certificate directory.
        dir: PathBuf,
    },
    /// No usable certificate and no join token to get one.
    #[error("no valid node certificate in {} and no join token: create one with `seam node token create` and give it with --join-token-file or SEAM_JOIN_TOKEN", dir.display())]
    NoToken {
        /// The certificate directory.
        dir: PathBuf,
    },
    /// The certificate in the directory names someone else.
    #[error("certificate {} is for {identity}, not for node {node}", path.display())]
    OtherIdentity {
        /// The certificate file.
        path: PathBuf,
        /// Whom it names.
        identity: String,
        /// This node.
        node: String,
    },
    /// The certificate is not valid yet by this machine's clock.
    #[error("certificate {} is not valid until {not_before}, and this machine's clock says {now}: check this machine's clock", path.display())]
    NotYetValid {
        /// The certificate file.
        path: PathBuf,
        /// When it becomes valid.
        not_before: String,
        /// This machine's time.
        now: String,
    },
    /// The certificate expired.
    #[error("certificate {} expired at {not_after} (this machine's clock says {now}): join again with a new token (--join-token-file or SEAM_JOIN_TOKEN), or check this machine's clock", path.display())]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// When it expired.
        not_after: String,
        /// This machine's time.
        now: String,
    },
    /// The controller refused the join token.
    #[error(
        "the controller refused the join token (create a new one with `seam node token create`)"
    )]
    TokenRejected {
        /// The controller's answer.
        #[source]
        source: seam_client::ClientError,
    },
    /// Joining failed otherwise (controller unreachable, its certificate not verifiable with
    /// --ca, the node name refused).
    #[error("cannot join the cluster")]
    Join {
        /// Why.
        #[source]
        source: seam_client::ClientError,
    },
    /// The controller refuses the node's certificate (revoked, or the node is unknown).
    #[error("the controller refuses this node's certificate")]
    Refused {
        /// The controller's answer.
        #[source]
        source: seam_client::ClientError,
    },
    /// Renewal failed.
    #[error("cannot renew the node certificate")]
    Renew {
        /// Why.
        #[source]
        source: seam_client::ClientError,
    },
    /// The TLS settings could not be built from the CA and certificate files.
    #[error("cannot load the TLS settings (--ca, --cert-dir)")]
    Tls {
        /// Why.
        #[source]
        source: seam_client::ClientError,
    },
    /// A certificate, key or CSR could not be made or read.
    #[error("{}", path.display())]
    Pki {
        /// The file concerned.
        path: PathBuf,
        /// Why.
        #[source]
        source: seam_pki::PkiError,
    },
    /// A file could not be read or written.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Result with [`AgentError`].
pub type Result<T, E = AgentError> = std::result::Result<T, E>;
