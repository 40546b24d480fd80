//! Errors of the compiler.

/// Why a node's ruleset could not be compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    /// A node endpoint is not in the inventory.
    #[error("node endpoint {name} is not in the inventory")]
    UnknownEndpoint {
        /// The `namespace/name` asked for.
        name: String,
    },
}

/// Result with [`CompileError`].
pub type Result<T, E = CompileError> = std::result::Result<T, E>;
