use std::fmt;

/// One problem found in an object, with the path of the field that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted field path, e.g. `spec.subnet`.
    pub path: String,
    /// What is wrong, lower-case, no final period.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one object, reported at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {name:?}: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ValidationError {
    /// Object kind, e.g. `Segment`.
    pub kind: &'static str,
    /// Object name as given (may be empty when the name itself is the problem).
    pub name: String,
    /// The problems, in field order.
    pub errors: Vec<FieldError>,
}

/// Collects field errors for one object.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<FieldError>);

impl Problems {
    pub(crate) fn add(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.to_string(),
            message: message.into(),
        });
    }

    pub(crate) fn finish(self, kind: &'static str, name: &str) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                kind,
                name: name.to_string(),
                errors: self.0,
            })
        }
    }
}
