//! The HTTP API: routes, body decoding and the mapping of [`Error`] to status + [`ApiError`].
//!
//! API boundary: the routes and JSON bodies here are Seam's versioned controller API (`/v1`),
//! spoken by `seam-client`.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use seam_model::bounds::MAX_BODY_BYTES;
use seam_model::{
    ApiError, ClaimBlock, Endpoint, EnsureSegment, FieldError, JoinTenant, Namespace, Node,
    ObjectKind, Segment, Tenant, TenantOperation, ValidationError, WatchEvent,
};
use serde::de::DeserializeOwned;

use crate::controller::{Controller, Role};
use crate::error::{reason, Error};
use crate::keys::parse_key;
use crate::precondition::{etag, if_match, with_if_match};

/// How often an idle watch stream sends an empty line, so clients can tell a quiet stream
/// from a dead connection.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// The controller's HTTP API on `controller`. Serve it with [`crate::serve`] or call it
/// in-process (tests).
pub fn router(controller: Controller) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(crate::metrics::readyz))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/v1/leader", get(leader))
        .route("/v1/snapshot", get(snapshot))
        .route("/v1/watch", get(watch))
        .route("/v1/ensure-segment", post(ensure_segment))
        .route("/v1/claim-block", post(claim_block))
        .route("/v1/nodes", get(list_nodes))
        .route(
            "/v1/nodes/{*name}",
            put(put_node).get(get_node).delete(delete_node),
        )
        .route("/v1/segments", get(list_segments))
        .route(
            "/v1/segments/{*name}",
            put(put_segment).get(get_segment).delete(delete_segment),
        )
        .route("/v1/blocks", get(list_blocks))
        .route("/v1/blocks/{*key}", get(get_block).delete(delete_block))
        .route("/v1/namespaces", get(list_namespaces))
        .route(
            "/v1/namespaces/{*name}",
            put(put_namespace)
                .get(get_namespace)
                .delete(delete_namespace),
        )
        .route("/v1/tenants", get(list_tenants))
        .route("/v1/tenants/join", post(join_tenant))
        .route("/v1/tenants/isolate", post(isolate_namespace))
        .route("/v1/tenants/make-global", post(make_namespace_global))
        .route(
            "/v1/tenants/{name}",
            put(put_tenant).get(get_tenant).delete(delete_tenant),
        )
        .route("/v1/policies", get(list_policies))
        .route(
            "/v1/policies/{kind}/{*name}",
            put(put_policy).get(get_policy).delete(delete_policy),
        )
        .route("/v1/externals", post(put_external))
        .route(
            "/v1/externals/{namespace}/{name}",
            axum::routing::delete(delete_external),
        )
        .route("/v1/endpoints", get(list_endpoints))
        .route(
            "/v1/endpoints/{*name}",
            put(put_endpoint).get(get_endpoint).delete(delete_endpoint),
        )
        .route("/v1/apply", post(apply))
        .route("/v1/audit", get(audit))
        .merge(crate::vms::routes())
        .merge(crate::services::routes())
        .merge(crate::identities::routes())
        .merge(crate::ui::routes())
        .merge(crate::flows::routes())
        .merge(crate::realization::routes())
        .fallback(no_route)
        .layer(axum::middleware::from_fn(
            crate::precondition::refuse_unhonoured_if_match,
        ))
        .layer(axum::middleware::map_response(json_too_large))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Outermost: nothing runs for a caller that may not ask.
        .layer(axum::middleware::from_fn_with_state(
            controller.clone(),
            crate::authz::enforce,
        ))
        // Counts every answer, refusals included, by route template.
        .layer(axum::middleware::from_fn_with_state(
            controller.clone(),
            crate::metrics::track,
        ))
        .with_state(controller)
}

/// Axum answers a body over [`DefaultBodyLimit`] with 413 and plain text; clients of this API
/// read an [`ApiError`] from every error.
async fn json_too_large(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return Error::TooLarge {
            limit: MAX_BODY_BYTES,
        }
        .into_response();
    }
    response
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = self.message();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), %message, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), %message, "request refused");
        }
        let retry_after = match &self {
            Error::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        };
        let body = ApiError {
            reason: self.reason().to_string(),
            message,
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

type ApiResult<T> = Result<T, Error>;

async fn no_route() -> Response {
    let body = ApiError {
        reason: reason::NOT_FOUND.to_string(),
        message: "no such route".to_string(),
    };
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// Decodes a JSON body, rejecting unknown fields (the model types deny them) and naming the
/// field where decoding stopped.
pub(crate) fn decode_body<T: DeserializeOwned>(kind: &'static str, body: &[u8]) -> ApiResult<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        Error::InvalidBody {
            kind,
            path,
            source: e.into_inner(),
        }
    })?;
    de.end().map_err(|source| Error::InvalidBody {
        kind,
        path: ".".to_string(),
        source,
    })?;
    Ok(value)
}

/// The name in the path must be the name in the body.
pub(crate) fn check_name(kind: &'static str, path_name: &str, body_name: &str) -> ApiResult<()> {
    if path_name == body_name {
        return Ok(());
    }
    Err(Error::Invalid(ValidationError {
        kind,
        name: body_name.to_string(),
        errors: vec![FieldError {
            path: "name".to_string(),
            message: format!("{body_name:?} does not match the name in the path {path_name:?}"),
        }],
    }))
}

/// `GET /v1/leader`: this replica's role and the leader's address, as far as it knows
/// (`{"role": "leader"|"standby"|"single", "id": …, "leader": …}`).
async fn leader(State(c): State<Controller>) -> Response {
    let id = c.replica().map(|r| r.id.clone());
    let (role, leader) = match c.role() {
        Role::Leader { .. } => ("leader", c.replica().map(|r| r.advertise.clone())),
        Role::Standby { leader } => ("standby", leader),
        _ => ("single", None),
    };
    Json(serde_json::json!({ "role": role, "id": id, "leader": leader })).into_response()
}

async fn snapshot(State(c): State<Controller>) -> ApiResult<Response> {
    Ok(Json(c.snapshot().await?).into_response())
}

pub(crate) async fn list(c: &Controller, kind: ObjectKind) -> ApiResult<Response> {
    Ok(Json(c.list_json(kind).await?).into_response())
}

/// The object, with its store revision as `ETag` (send it back as `If-Match` to write only if
/// nobody changed the object in between).
pub(crate) async fn get_one(c: &Controller, kind: ObjectKind, name: &str) -> ApiResult<Response> {
    let (object, revision) = c.get_json_versioned(kind, name).await?;
    Ok(([(header::ETAG, etag(revision))], Json(object)).into_response())
}

async fn list_nodes(State(c): State<Controller>) -> ApiResult<Response> {
    list(&c, ObjectKind::Node).await
}

async fn get_node(State(c): State<Controller>, Path(name): Path<String>) -> ApiResult<Response> {
    get_one(&c, ObjectKind::Node, &name).await
}

async fn put_node(
    State(c): State<Controller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let revision = if_match(&headers)?;
    let node: Node = decode_body("Node", &body)?;
    check_name("Node", &name, &node.name)?;
    let stored = with_if_match(ObjectKind::Node, &name, revision, c.put_node(node)).await?;
    Ok(Json(stored).into_response())
}

async fn delete_node(
    State(c): State<Controller>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let revision = if_match(&headers)?;
    with_if_match(ObjectKind::Node, &name, revision, c.delete_node(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_segments(State(c): State<Controller>) -> ApiResult<Response> {
    list(&c, ObjectKind::Segment).await
}

async fn get_segment(State(c): State<Controller>, Path(name): Path<String>) -> ApiResult<Response> {
    get_one(&c, ObjectKind::Segment, &name).await
}

async fn put_segment(
    State(c): State<Controller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let revision = if_match(&headers)?;
    let segment: Segment = decode_body("Segment", &body)?;
    check_name("Segment", &name, &segment.name)?;
    let stored =
        with_if_match(ObjectKind::Segment, &name, revision, c.put_segment(segment)).await?;
    Ok(Json(stored).into_response())
}

async fn delete_segment(
    State(c): State<Controller>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let revision = if_match(&headers)?;
    with_if_match(
        ObjectKind::Segment,
        &name,
        revision,
        c.delete_segment(&name),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn ensure_segment(State(c): State<Controller>, body: Bytes) -> ApiResult<Response> {
    let req: EnsureSegment = decode_body("EnsureSegment", &body)?;
    Ok(Json(c.ensure_segment(&req.namespace).await?).into_response())
}

async fn claim_block(State(c): State<Controller>, body: Bytes) -> ApiResult<Response> {
    let req: ClaimBlock = decode_body("ClaimBlock", &body)?;
    crate::authz::check_own(&req.node, || format!("claim a block for node {}", req.node))?;
    let block = c.claim_block(&req.segment, &req.node).await?;
    Ok((StatusCode::CREATED, Json(block)).into_response())
}

async fn list_blocks(State(c): State<Controller>) -> ApiResult<Response> {
    list(&c, ObjectKind::Block).await
}

async fn get_block(State(c): State<Controller>, Path(key): Path<String>) -> ApiResult<Response> {
    get_one(&c, ObjectKind::Block, &key).await
}

/// `DELETE /v1/blocks/{key}?node=NAME`: the holder gives a block back. Whoever asks (an
/// administrator too) names the holder, and the release is refused unless that node holds the
/// block and while endpoints use it: a release acting on an old view never takes a block from
/// the node that holds it now.
async fn delete_block(
    State(c): State<Controller>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<StatusCode> {
    let asked = release_node(query.as_deref())?;
    // A node releases only blocks it holds, as itself (with or without `?node=`).
    let node = match crate::authz::calling_node() {
        Some(me) => {
            if let Some(other) = asked.as_ref().filter(|n| **n != me) {
                crate::authz::check_own(other, || format!("release blocks of node {other}"))?;
            }
            Some(me)
        }
        None => asked,
    };
    let Some(node) = node else {
        return Err(Error::Invalid(ValidationError {
            kind: "ReleaseBlockQuery",
            name: key,
            errors: vec![FieldError {
                path: "node".to_string(),
                message: "a block is released only by its holder: name the node that holds it with ?node=NAME".to_string(),
            }],
        }));
    };
    c.release_block_held_by(&key, &node)
        .await
        .map_err(|e| match e {
            Error::BlockNotHeld { block, holder, .. } => {
                crate::authz::check_own(&holder, || {
                    format!("release block {block:?} held by node {holder}")
                })
                .err()
                // Not a node caller: the administrator's `?node=` did not match.
                .unwrap_or(Error::BlockNotHeld {
                    block,
                    holder,
                    node,
                })
            }
            e => e,
        })?;
    Ok(StatusCode::NO_CONTENT)
}

/// Parses the block release query: `node=NAME` (optional).
fn release_node(query: Option<&str>) -> ApiResult<Option<String>> {
    let mut node = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let problem = match key {
            "node" if seam_model::is_valid_name(value) => {
                node = Some(value.to_string());
                None
            }
            "node" => Some(("node", format!("{value:?} is not a valid node name"))),
            other => Some(("query", format!("unknown parameter {other:?}"))),
        };
        if let Some((path, message)) = problem {
            return Err(Error::Invalid(ValidationError {
                kind: "ReleaseBlockQuery",
                name: String::new(),
                errors: vec![FieldError {
                    path: path.to_string(),
                    message,
                }],
            }));
        }
    }
    Ok(node)
}

async fn list_endpoints(State(c): State<Controller>) -> ApiResult<Response> {
    list(&c, ObjectKind::Endpoint).await
}

async fn get_endpoint(
    State(c): State<Controller>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    get_one(&c, ObjectKind::Endpoint, &name).await
}

async fn put_endpoint(
    State(c): State<Controller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let revision = if_match(&headers)?;
    let endpoint: Endpoint = decode_body("Endpoint", &body)?;
    check_name("Endpoint", &name, &endpoint.name)?;
    let stored = with_if_match(
        ObjectKind::Endpoint,
        &name,
        revision,
        c.put_endpoint(endpoint),
    )
    .await?;
    Ok(Json(stored).into_response())
}

/// `POST /v1/externals`: registers an external endpoint; answers its endpoint records.
async fn put_external(State(c): State<Controller>, body: Bytes) -> ApiResult<Response> {
    let external: seam_model::External = decode_body("External", &body)?;
    Ok(Json(c.put_external(external).await?).into_response())
}

/// `DELETE /v1/externals/<namespace>/<name>`: removes every record of an external endpoint.
async fn delete_external(
    State(c): State<Controller>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    c.delete_external(&namespace, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_endpoint(
    State(c): State<Controller>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let revision = if_match(&headers)?;
    with_if_match(
        ObjectKind::Endpoint,
        &name,
        revision,
        c.delete_endpoint(&name),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_namespaces(State(c): State<Controller>) -> ApiResult<Response> {
    list(&c, ObjectKind::Namespace).await
}

async fn get_namespace(
    State(c): State<Controller>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    get_one(&c, ObjectKind::Namespace, &name).await
}

async fn put_namespace(
    State(c): State<Controller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let revision = if_match(&headers)?;
    let namespace: Namespace = decode_body("Namespace", &body)?;
    check_name("Namespace", &name, &namespace.name)?;
    let stored = with_if_match(
        ObjectKind::Namespace,
        &name,
        revision,
        c.put_namespace(namespace),
    )
    .await?;
    Ok(Json(stored).into_response())
}

async fn delete_namespace(
    State(c): State<Controller>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let revision = if_match(&headers)?;
    with_if_match(
        ObjectKind::Namespace,
        &name,
        revision,
        c.delete_namespace(&name),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_tenants(State(c): State<Controller>) -> ApiResult<Response> {
    list(&c, ObjectKind::Tenant).await
}

async fn get_tenant(State(c): State<Controller>, Path(name): Path<String>) -> ApiResult<Response> {
    get_one(&c, ObjectKind::Tenant, &name).await
}

async fn put_tenant(
    State(c): State<Controller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let revision = if_match(&headers)?;
    let tenant: Tenant = decode_body("Tenant", &body)?;
    check_name("Tenant", &name, &tenant.name)?;
    let stored = with_if_match(ObjectKind::Tenant, &name, revision, c.put_tenant(tenant)).await?;
    Ok(Json(stored).into_response())
}

async fn delete_tenant(
    State(c): State<Controller>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let revision = if_match(&headers)?;
    with_if_match(ObjectKind::Tenant, &name, revision, c.delete_tenant(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn join_tenant(State(c): State<Controller>, body: Bytes) -> ApiResult<Response> {
    let req: JoinTenant = decode_body("JoinTenant", &body)?;
    Ok(Json(c.join_tenant(&req.namespace, &req.into).await?).into_response())
}

async fn isolate_namespace(State(c): State<Controller>, body: Bytes) -> ApiResult<Response> {
    let req: TenantOperation = decode_body("TenantOperation", &body)?;
    Ok(Json(c.isolate_namespace(&req.namespace).await?).into_response())
}

async fn make_namespace_global(State(c): State<Controller>, body: Bytes) -> ApiResult<Response> {
    let req: TenantOperation = decode_body("TenantOperation", &body)?;
    Ok(Json(c.make_namespace_global(&req.namespace).await?).into_response())
}

async fn list_policies(State(c): State<Controller>) -> ApiResult<Response> {
    list(&c, ObjectKind::Policy).await
}

async fn get_policy(
    State(c): State<Controller>,
    Path((kind, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let store_name = policy_store_name_of(&kind, &name)?;
    let (object, revision) = c
        .get_json_versioned(ObjectKind::Policy, &store_name)
        .await?;
    Ok(([(header::ETAG, etag(revision))], Json(object)).into_response())
}

/// The store name of the policy a request path names.
fn policy_store_name_of(kind: &str, name: &str) -> ApiResult<String> {
    match crate::policy_kind_from_path(kind) {
        Some(kind) => Ok(crate::policy_store_name(kind, name)),
        None => Err(crate::policies::unknown_kind(kind)),
    }
}

/// The body is decoded as plain JSON here; seam-policy decodes and validates the object itself
/// (unknown fields and unsupported kinds are rejected there, with the field path).
async fn put_policy(
    State(c): State<Controller>,
    Path((kind, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let revision = if_match(&headers)?;
    let value: serde_json::Value = decode_body("policy object", &body)?;
    let write = c.put_policy(&kind, &name, value);
    let stored = match revision {
        None => write.await?,
        Some(_) => {
            let store_name = policy_store_name_of(&kind, &name)?;
            with_if_match(ObjectKind::Policy, &store_name, revision, write).await?
        }
    };
    Ok(Json(stored).into_response())
}

/// `POST /v1/apply`: every object of the body written, or none ([`Controller::apply`]).
async fn apply(State(c): State<Controller>, body: Bytes) -> ApiResult<Response> {
    let request: seam_model::Apply = decode_body("Apply", &body)?;
    Ok(Json(c.apply(request.objects).await?).into_response())
}

/// `GET /v1/audit?limit=N`: the newest N audit records (default 100, at most 10000), oldest
/// first.
async fn audit(State(c): State<Controller>, RawQuery(query): RawQuery) -> ApiResult<Response> {
    let limit = audit_limit(query.as_deref())?;
    Ok(Json(c.audit(limit).await?).into_response())
}

/// Parses the audit query: `limit=N` (optional).
fn audit_limit(query: Option<&str>) -> ApiResult<usize> {
    use crate::audit::{DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT};
    let mut limit = DEFAULT_AUDIT_LIMIT;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let problem = match key {
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_AUDIT_LIMIT).contains(&n) => {
                    limit = n;
                    None
                }
                _ => Some((
                    "limit",
                    format!("{value:?} is not a number of records from 1 to {MAX_AUDIT_LIMIT}"),
                )),
            },
            other => Some(("query", format!("unknown parameter {other:?}"))),
        };
        if let Some((path, message)) = problem {
            return Err(Error::Invalid(ValidationError {
                kind: "AuditQuery",
                name: String::new(),
                errors: vec![FieldError {
                    path: path.to_string(),
                    message,
                }],
            }));
        }
    }
    Ok(limit)
}

async fn delete_policy(
    State(c): State<Controller>,
    Path((kind, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let revision = if_match(&headers)?;
    let write = c.delete_policy(&kind, &name);
    match revision {
        None => write.await?,
        Some(_) => {
            let store_name = policy_store_name_of(&kind, &name)?;
            with_if_match(ObjectKind::Policy, &store_name, revision, write).await?
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Parses the watch query: `revision=N` (optional, default 0 = only future changes).
fn watch_revision(query: Option<&str>) -> ApiResult<u64> {
    let mut revision = 0;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let problem = match key {
            "revision" => match value.parse() {
                Ok(n) => {
                    revision = n;
                    None
                }
                Err(_) => Some(("revision", format!("{value:?} is not a revision number"))),
            },
            other => Some(("query", format!("unknown parameter {other:?}"))),
        };
        if let Some((path, message)) = problem {
            return Err(Error::Invalid(ValidationError {
                kind: "WatchQuery",
                name: String::new(),
                errors: vec![FieldError {
                    path: path.to_string(),
                    message,
                }],
            }));
        }
    }
    Ok(revision)
}

/// `GET /v1/watch?revision=N`: newline-delimited [`WatchEvent`]s, an empty line as heartbeat.
/// A node's stream ends as soon as its identity stops passing (revoked, joined again).
async fn watch(
    State(c): State<Controller>,
    caller: Option<axum::Extension<crate::Caller>>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let revision = watch_revision(query.as_deref())?;
    let serving_caller = crate::caller::serving().map_or(crate::Caller::Anonymous, |s| s.caller);
    let slot = c.limits().watch_slot(&serving_caller)?;
    let guard = match caller {
        Some(axum::Extension(crate::Caller::Known(identity)))
            if identity.role == seam_model::CallerRole::Node =>
        {
            Some(c.identity_guard(identity).await?)
        }
        _ => None,
    };
    let store_watch = c.watch(revision).await?;
    let stream = WatchBody {
        _slot: slot,
        _counted: c.metrics().watch_opened(),
        metrics: c.metrics().clone(),
        watch: store_watch,
        guard,
        stop: c.stopped(),
        heartbeat: tokio::time::interval_at(
            tokio::time::Instant::now() + HEARTBEAT_INTERVAL,
            HEARTBEAT_INTERVAL,
        ),
    }
    .into_stream();
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

struct WatchBody {
    /// Counts the stream against its client's watch cap until the stream is dropped.
    _slot: crate::limits::WatchSlot,
    /// Counts the stream as open until it is dropped.
    _counted: crate::metrics::WatchStream,
    metrics: crate::metrics::ControllerMetrics,
    watch: seam_store::Watch,
    /// For a node: resolves when its identity stops passing.
    guard: Option<crate::identities::IdentityGuard>,
    stop: tokio::sync::watch::Receiver<bool>,
    heartbeat: tokio::time::Interval,
}

impl WatchBody {
    fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
        futures::stream::unfold(self, |mut st| async move {
            let line = st.next_line().await?;
            Some((Ok(line), st))
        })
    }

    /// The next line to send; `None` ends the stream (store closed, watcher lagged, shutdown).
    async fn next_line(&mut self) -> Option<Bytes> {
        loop {
            // `Watch::next` and `Interval::tick` are cancel-safe, so losing a race loses nothing.
            let event = tokio::select! {
                event = self.watch.next() => event,
                _ = self.heartbeat.tick() => return Some(Bytes::from_static(b"\n")),
                _ = self.stop.wait_for(|stopped| *stopped) => return None,
                refused = refused(&mut self.guard) => {
                    tracing::warn!(error = %refused, "ending the watch of a node whose identity no longer passes");
                    return None;
                }
            };
            let event = match event? {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(error = %e, "watch stream ended by the store");
                    return None;
                }
            };
            let Some((kind, name)) = parse_key(&event.key) else {
                continue;
            };
            let object = match event.value.as_deref().map(serde_json::from_slice) {
                None => None,
                Some(Ok(value)) => Some(value),
                Some(Err(e)) => {
                    tracing::error!(key = %event.key, error = %e, "skipping corrupt stored object in watch");
                    continue;
                }
            };
            self.metrics.watch_sent(event.revision);
            let out = WatchEvent {
                revision: event.revision,
                kind,
                name: name.to_string(),
                object,
            };
            match serde_json::to_vec(&out) {
                Ok(mut line) => {
                    line.push(b'\n');
                    return Some(Bytes::from(line));
                }
                Err(e) => {
                    tracing::error!(key = %event.key, error = %e, "cannot encode watch event");
                    return None;
                }
            }
        }
    }
}

/// Resolves when a guarded stream's identity stops passing; never for an unguarded one.
async fn refused(
    guard: &mut Option<crate::identities::IdentityGuard>,
) -> crate::identities::IdentityError {
    match guard {
        Some(guard) => guard.refused().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_query_parses() {
        assert_eq!(audit_limit(None).unwrap(), 100);
        assert_eq!(audit_limit(Some("limit=5")).unwrap(), 5);
        assert_eq!(audit_limit(Some("limit=10000")).unwrap(), 10_000);
        for bad in ["limit=0", "limit=10001", "limit=x", "n=3"] {
            assert_eq!(audit_limit(Some(bad)).unwrap_err().status(), 400, "{bad}");
        }
    }

    #[test]
    fn watch_query_parses() {
        assert_eq!(watch_revision(None).unwrap(), 0);
        assert_eq!(watch_revision(Some("revision=42")).unwrap(), 42);
        assert!(watch_revision(Some("revision=x")).is_err());
        assert!(watch_revision(Some("rev=1")).is_err());
    }

    #[test]
    fn body_errors_name_the_field() {
        let err = decode_body::<Node>("Node", br#"{"name":"n","underlayIp":7}"#).unwrap_err();
        assert!(err.message().contains("underlayIp"), "{}", err.message());
        let err = decode_body::<Node>("Node", br#"{"name":"n","underlayIp":"1.2.3.4","x":1}"#)
            .unwrap_err();
        assert!(
            err.message().contains("unknown field `x`"),
            "{}",
            err.message()
        );
        let err =
            decode_body::<Node>("Node", br#"{"name":"n","underlayIp":"1.2.3.4"} x"#).unwrap_err();
        assert_eq!(err.status(), 400);
    }
}
