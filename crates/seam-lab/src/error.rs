use std::path::PathBuf;

/// What went wrong while building, using or removing a lab.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// A command the lab runs failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The command, e.g. `ip -n lab-ul link add`.
        what: String,
        /// Exit status and stderr.
        detail: String,
    },
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A namespace operation failed.
    #[error(transparent)]
    Netns(#[from] seam_linux::Error),
    /// Reading a node's nftables failed.
    #[error(transparent)]
    Nft(#[from] seam_linux::NftError),
    /// The lab's CA or a certificate could not be made, read or written.
    #[error(transparent)]
    Pki(#[from] seam_pki::PkiError),
    /// The controller refused a call or could not be reached.
    #[error(transparent)]
    Controller(#[from] seam_client::ClientError),
    /// The runtime for calls to the controller could not start.
    #[error("start the runtime for controller calls")]
    Runtime(#[source] std::io::Error),
    /// The lab's state file is not valid.
    #[error("lab state {path}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A lab with this name is not running.
    #[error("no lab named {0:?} is up (see `seam lab status`)")]
    NotUp(String),
    /// A lab with this name already exists.
    #[error("a lab named {0:?} is already up; run `seam lab down --name {0}` first")]
    AlreadyUp(String),
    /// Something the lab waited for did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The CNI plug-in returned an error.
    #[error("seam-cni {command} failed (exit {status}): {stdout}")]
    Cni {
        /// ADD, DEL, …
        command: String,
        /// Exit status.
        status: i32,
        /// The CNI error object.
        stdout: String,
    },
    /// Bad arguments.
    #[error("{0}")]
    Invalid(String),
}

/// Result with [`LabError`].
pub type Result<T, E = LabError> = std::result::Result<T, E>;

/// Why `seam lab demo` stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// Building or using the lab failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// The controller refused or could not be reached.
    #[error(transparent)]
    Controller(#[from] seam_client::ClientError),
    /// The runtime for the controller calls could not start.
    #[error(transparent)]
    Runtime(#[from] std::io::Error),
    /// The demo's policy manifests could not be read.
    #[error(transparent)]
    Manifest(#[from] seam_model::manifest::ManifestError),
    /// A verdict could not be explained.
    #[error(transparent)]
    Explain(#[from] seam_firewall::ExplainError),
    /// The network did not do what the demo shows it doing.
    #[error("{0}")]
    Check(String),
}
