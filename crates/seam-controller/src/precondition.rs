//! Conditional writes: a request that names the revision it read (`If-Match`, the `ETag` of a
//! GET) writes only while the object is still at that revision, so a read-modify-write never
//! loses a concurrent change (Kubernetes' `resourceVersion`).
//!
//! Every write of one object ends in [`crate::Controller`]'s `commit_once`, which adds the
//! precondition to the same store transaction as the write's own compares. The precondition
//! travels as a task-local value of the request instead of a parameter of each of the dozen
//! write operations: those operations, and their callers inside the controller, stay as they
//! are, and a write path added later is covered without being told.

use std::future::Future;

use axum::http::{header, HeaderMap, HeaderValue, Method};
use seam_model::{FieldError, ObjectKind, ValidationError};

use crate::error::{Error, Result};
use crate::keys::object_key;

tokio::task_local! {
    static IF_MATCH: Precondition;
}

/// The revision a request expects the object it writes to be at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Precondition {
    /// Store key of the object.
    pub(crate) key: String,
    /// Its expected `mod_revision`.
    pub(crate) revision: u64,
}

/// Runs `write` (one controller operation on `kind`/`name`) under the request's precondition,
/// if it has one.
pub(crate) async fn with_if_match<F: Future>(
    kind: ObjectKind,
    name: &str,
    revision: Option<u64>,
    write: F,
) -> F::Output {
    match revision {
        None => write.await,
        Some(revision) => {
            let precondition = Precondition {
                key: object_key(kind, name),
                revision,
            };
            IF_MATCH.scope(precondition, write).await
        }
    }
}

/// The precondition of the request being served, if it is about `key`.
pub(crate) fn current_for(key: &str) -> Option<Precondition> {
    IF_MATCH
        .try_with(|p| p.clone())
        .ok()
        .filter(|p| p.key == key)
}

/// The `If-Match` header as a revision: `"42"` (the `ETag` form), `W/"42"` or `42`. Absent
/// means an unconditional write; anything else is refused, since guessing would turn a
/// conditional write into an unconditional one.
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<u64>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    let bare = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    bare.parse().map(Some).map_err(|_| {
        Error::Invalid(ValidationError {
            kind: "Precondition",
            name: text.to_string(),
            errors: vec![FieldError {
                path: "If-Match".to_string(),
                message: format!(
                    "{text:?} is not an object revision (send the ETag of a GET, e.g. \"42\")"
                ),
            }],
        })
    })
}

/// Refuses `If-Match` on a write that does not honour it (blocks, VMs, externals, and the POST
/// verbs, which write no single object at a revision the client read): carried out without the
/// precondition, a conditional request would silently become an unconditional write.
pub(crate) async fn refuse_unhonoured_if_match(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;

    let method = request.method();
    let is_write = !matches!(*method, Method::GET | Method::HEAD);
    if is_write
        && request.headers().contains_key(header::IF_MATCH)
        && !honours_if_match(method, request.uri().path())
    {
        return Error::Invalid(ValidationError {
            kind: "Precondition",
            name: format!("{method} {}", request.uri().path()),
            errors: vec![FieldError {
                path: "If-Match".to_string(),
                message: "is not honoured by this request: only PUT and DELETE of nodes, \
                          segments, namespaces, tenants, endpoints, policies, services, endpoint \
                          slices and address pools write at a \
                          revision (send it without If-Match)"
                    .to_string(),
            }],
        })
        .into_response();
    }
    next.run(request).await
}

/// Whether a write to `path` takes `If-Match` ([`with_if_match`] around its operation).
fn honours_if_match(method: &Method, path: &str) -> bool {
    const CONDITIONAL: [&str; 9] = [
        "/v1/nodes/",
        "/v1/segments/",
        "/v1/namespaces/",
        "/v1/tenants/",
        "/v1/endpoints/",
        "/v1/policies/",
        "/v1/services/",
        "/v1/endpointslices/",
        "/v1/addresspools/",
    ];
    matches!(*method, Method::PUT | Method::DELETE)
        && CONDITIONAL.iter().any(|prefix| path.starts_with(prefix))
}

/// The `ETag` header value of an object at `revision`.
pub(crate) fn etag(revision: u64) -> HeaderValue {
    // Digits and quotes are always a valid header value.
    HeaderValue::from_str(&format!("\"{revision}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::IF_MATCH, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn only_single_object_writes_honour_if_match() {
        assert!(honours_if_match(&Method::PUT, "/v1/segments/vms"));
        assert!(honours_if_match(&Method::DELETE, "/v1/endpoints/web/a"));
        assert!(honours_if_match(&Method::PUT, "/v1/tenants/t1"));
        assert!(!honours_if_match(&Method::POST, "/v1/tenants/join"));
        assert!(!honours_if_match(
            &Method::DELETE,
            "/v1/blocks/vms/10.0.0.0-28"
        ));
        assert!(!honours_if_match(&Method::DELETE, "/v1/vms/vm1"));
        assert!(!honours_if_match(&Method::DELETE, "/v1/externals/web/bm1"));
        assert!(!honours_if_match(&Method::POST, "/v1/apply"));
    }

    #[test]
    fn if_match_takes_etags() {
        assert_eq!(if_match(&HeaderMap::new()).unwrap(), None);
        assert_eq!(if_match(&headers("\"42\"")).unwrap(), Some(42));
        assert_eq!(if_match(&headers("W/\"7\"")).unwrap(), Some(7));
        assert_eq!(if_match(&headers("9")).unwrap(), Some(9));
        let e = if_match(&headers("*")).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.message().contains("If-Match"), "{}", e.message());
    }

    #[tokio::test]
    async fn the_precondition_is_seen_only_for_its_object() {
        let seen = with_if_match(ObjectKind::Segment, "a", Some(5), async {
            (
                current_for(&object_key(ObjectKind::Segment, "a")),
                current_for(&object_key(ObjectKind::Segment, "b")),
            )
        })
        .await;
        assert_eq!(seen.0.map(|p| p.revision), Some(5));
        assert_eq!(seen.1, None);
        assert_eq!(current_for(&object_key(ObjectKind::Segment, "a")), None);
    }
}
