//! Why the harness could not run. A failing case is not an error: it is a line of the report.

/// The cases or the model do not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConformanceError {
    /// The cases or model file does not have the expected shape.
    #[error("{file}: {path}: {message}")]
    Malformed {
        /// `cases` or `model`.
        file: &'static str,
        /// JSON path of the offending value.
        path: String,
        /// What was expected.
        message: String,
    },
    /// The cases or model file is not JSON.
    #[error("{file}: not JSON: {message}")]
    NotJson {
        /// `cases` or `model`.
        file: &'static str,
        /// The parser's message (with line and column).
        message: String,
    },
}
