//! Who is calling: the identity a listener attaches to every request it serves.
//!
//! The serving side ([`crate::serve`]) puts a [`Caller`] into each request's extensions: the
//! identity of a verified client certificate, [`Identity::local_admin`] on the mode-0600 Unix
//! socket, or [`Caller::Anonymous`] for a TLS client without a certificate (it may only join).
//! Authorization ([`crate::authz`]) reads it; a request without one is treated as anonymous, so
//! a listener that forgets to attach an identity grants nothing.

use seam_model::Identity;

/// The caller of one request, as its connection authenticated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A TLS client that presented no certificate.
    Anonymous,
    /// An authenticated identity.
    Known(Identity),
}

impl Caller {
    /// The caller attached to `request`, anonymous when none was.
    pub fn of<B>(request: &axum::http::Request<B>) -> Caller {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Anonymous)
    }

    /// The identity, when known.
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Caller::Anonymous => None,
            Caller::Known(id) => Some(id),
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Anonymous => f.write_str("anonymous"),
            Caller::Known(id) => id.fmt(f),
        }
    }
}
