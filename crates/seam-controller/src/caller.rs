//! Who is calling: the identity a listener attaches to every request it serves.
//!
//! The serving side ([`crate::serve`]) puts a [`Caller`] into each request's extensions: the
//! identity of a verified client certificate, [`Identity::local_admin`] on the mode-0600 Unix
//! socket, or [`Caller::Anonymous`] for a TLS client without a certificate (it may only join).
//! Authorization ([`crate::authz`]) reads it; a request without one is treated as anonymous, so
//! a listener that forgets to attach an identity grants nothing.

use std::future::Future;

use seam_model::Identity;

use crate::controller::Controller;

tokio::task_local! {
    static CURRENT: Serving;
}

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

/// The request being served, as the authorization middleware saw it: kept as a task-local value
/// (like [`crate::precondition`]'s `If-Match`) so the checks that need the object being written
/// and the audit record in [`Controller`]'s `commit` know who asks without a parameter on every
/// write operation.
#[derive(Debug, Clone)]
pub(crate) struct Serving {
    /// Who asks.
    pub(crate) caller: Caller,
    /// The request's method.
    pub(crate) method: String,
    /// The request's path.
    pub(crate) path: String,
}

/// Runs `serve` (the rest of a request) with `serving` as the current request.
pub(crate) async fn scope<F: Future>(serving: Serving, serve: F) -> F::Output {
    CURRENT.scope(serving, serve).await
}

/// The request being served, `None` outside one (the controller's own writes, library callers
/// and tests that call [`Controller`] directly, which are trusted like the local socket).
pub(crate) fn serving() -> Option<Serving> {
    CURRENT.try_with(Serving::clone).ok()
}

/// The API of `controller`, answering every request as `caller`: for in-process use and tests
/// that call the router without a listener (which would attach the caller), e.g.
/// `router_as(c, Caller::Known(Identity::local_admin()))`.
pub fn router_as(controller: Controller, caller: Caller) -> axum::Router {
    crate::http::router(controller).layer(axum::Extension(caller))
}
