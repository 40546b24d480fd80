//! Errors of the compiler and of `explain`.

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

/// Why a flow could not be explained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExplainError {
    /// `PORT/PROTO` is malformed.
    #[error("invalid port/protocol {0:?}: expected PORT/PROTO (80/tcp, 53/udp, 8/icmp), PORT (TCP) or icmp")]
    PortProtocol(String),
    /// A flow end is neither `namespace/name` nor an IPv4 address.
    #[error("invalid flow end {0:?}: expected namespace/name of an endpoint or an IPv4 address")]
    End(String),
    /// The engine could not evaluate the flow.
    #[error("cannot evaluate the flow")]
    Eval(#[source] seam_policy::EvalError),
}
