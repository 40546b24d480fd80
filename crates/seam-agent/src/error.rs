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

/// Result with [`AgentError`].
pub type Result<T, E = AgentError> = std::result::Result<T, E>;
