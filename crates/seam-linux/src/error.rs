/// What failed outside the dataplane trait (namespaces, sysctls, connections).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A network namespace operation failed.
    #[error("{operation} network namespace {name}: {source}")]
    Netns {
        /// e.g. `create`, `delete`, `enter`.
        operation: &'static str,
        /// Namespace name or path.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A sysctl could not be written.
    #[error("write sysctl {key}: {source}")]
    Sysctl {
        /// The key, e.g. `net/ipv4/ip_forward`.
        key: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A netlink connection could not be opened.
    #[error("open netlink connection: {0}")]
    Connection(#[source] std::io::Error),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
