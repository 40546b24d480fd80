//! Seam's certificates and mutual TLS.
//!
//! A small certificate authority ([`Ca`]) issues the controller's serving certificates and the
//! client certificates of nodes, the Kubernetes adapter and people, and signs the CSRs nodes send
//! when they join or renew. [`identity_of`] reads the [`Identity`] a verified client certificate
//! names (subject conventions in [`seam_model::identity`]). [`ReloadingCert`] holds a certificate
//! and key read from files and re-reads them on [`ReloadingCert::reload`], so a rotated
//! certificate is used for the next handshake without a restart. [`server_config`] and
//! [`client_config`] build rustls configurations that speak TLS 1.3 only.
//!
//! Keys are ECDSA P-256 (small, fast to generate, supported by every TLS 1.3 stack).

#![warn(missing_docs)]

mod ca;
mod certificate;
mod files;
mod reload;
mod tls;

pub use ca::{new_csr, Ca, Issued};
pub use certificate::{identity_of, validity_of};
pub use reload::ReloadingCert;
pub use tls::{client_config, explain_certificate_error, server_config};

#[cfg(doc)]
use seam_model::Identity;
use std::fmt;
use std::path::PathBuf;

/// What can go wrong with certificates, keys and TLS settings.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate, key or CSR could not be read.
    #[error("{what}: {reason}")]
    Parse {
        /// What was being read ("CA certificate", "CSR", a path).
        what: String,
        /// Why it could not be.
        reason: String,
    },
    /// A CSR whose self-signature does not verify: whoever sent it does not hold its key.
    #[error("the CSR's signature does not verify")]
    BadCsrSignature,
    /// A certificate whose subject names no Seam identity.
    #[error("certificate names no Seam identity: {0}")]
    NoIdentity(String),
    /// Issuing a certificate failed.
    #[error("could not issue a certificate: {0}")]
    Issue(String),
    /// The TLS settings could not be built.
    #[error("TLS settings: {0}")]
    Tls(String),
}

/// The result of this crate's operations.
pub type Result<T> = std::result::Result<T, PkiError>;

/// A [`PkiError::Parse`] for `what`.
pub(crate) fn parse_err(what: impl Into<String>, reason: impl fmt::Display) -> PkiError {
    PkiError::Parse {
        what: what.into(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests;
