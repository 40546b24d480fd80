//! Why a Kubernetes object could not be mapped into Seam's model.

use crate::resource::WatchedKind;

/// Why one Kubernetes object could not be translated. The adapter logs it with the object's key
/// and skips the object; it never stops the adapter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranslateError {
    /// The object has no `metadata.name` (or no `metadata.namespace` for a namespaced kind).
    #[error("{kind} {key}: metadata.{field} is missing")]
    MissingMeta {
        /// The kind watched.
        kind: WatchedKind,
        /// The object's key as far as it could be read.
        key: String,
        /// `name` or `namespace`.
        field: &'static str,
    },
    /// The object does not decode as its kind.
    #[error("{kind} {key}: cannot decode")]
    Decode {
        /// The kind watched.
        kind: WatchedKind,
        /// `namespace/name` or `name`.
        key: String,
        /// The JSON cause, with the field it stopped at.
        #[source]
        source: serde_json::Error,
    },
    /// The object decodes but is not valid in Seam's model (e.g. a tenant name that is not a
    /// DNS label).
    #[error("{kind} {key}: not valid in seam")]
    Invalid {
        /// The kind watched.
        kind: WatchedKind,
        /// `namespace/name` or `name`.
        key: String,
        /// Every problem, with field paths.
        #[source]
        source: seam_model::ValidationError,
    },
    /// Seam's manifest decoder (the one `seam apply` uses) refuses the object: a field Seam
    /// does not support or an invalid value, each with its path.
    #[error("{kind} {key}: not accepted by seam")]
    Manifest {
        /// The kind watched.
        kind: WatchedKind,
        /// `namespace/name`.
        key: String,
        /// Every problem, with field paths.
        #[source]
        source: seam_model::manifest::ManifestError,
    },
}

/// Result alias of this crate.
pub type Result<T, E = TranslateError> = std::result::Result<T, E>;
