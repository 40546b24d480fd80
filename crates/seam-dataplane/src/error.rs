/// What went wrong while observing or changing a node's dataplane.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A netlink request failed; `errno` is the kernel's error number when it gave one.
    #[error("{operation} on {object} failed (errno {errno:?}): {message}")]
    Kernel {
        /// What Seam was doing, e.g. `create vxlan`.
        operation: &'static str,
        /// The link, address or entry involved.
        object: String,
        /// The kernel's errno, positive.
        errno: Option<i32>,
        /// The kernel's or library's message.
        message: String,
    },
    /// A network namespace could not be opened or entered.
    #[error("network namespace {path}: {source}")]
    Netns {
        /// Its path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An attachment is not what was recorded (CHECK).
    #[error("attachment {what} is not as recorded: {detail}")]
    Drift {
        /// The interface or route concerned.
        what: String,
        /// What differs.
        detail: String,
    },
    /// The kernel lacks something Seam needs.
    #[error("kernel feature missing: {0}")]
    Unsupported(String),
}

impl Error {
    /// True when the error is the kernel saying the object already exists.
    pub fn is_exists(&self) -> bool {
        matches!(
            self,
            Error::Kernel {
                errno: Some(17),
                ..
            }
        )
    }

    /// True when the error is the kernel saying the object does not exist (ENOENT, ENODEV, and
    /// ESRCH: a route delete that matches no route).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Kernel {
                errno: Some(2 | 3 | 19),
                ..
            }
        )
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
