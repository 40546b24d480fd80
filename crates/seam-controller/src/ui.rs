//! The topology and flows page (`/ui/`) and the explain route it asks (`GET /v1/explain`).
//!
//! The page is three static files compiled into the binary; it reads everything it shows from
//! the `/v1` API with the caller's own credentials, so it sees what the caller may read and no
//! more. A browser reaches it with a reader's certificate, or through `seam proxy` (a local
//! forwarder that presents the user's certificate, as `kubectl proxy` does).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use seam_model::{FieldError, ValidationError};
use seam_policy::Flow;
use serde::Deserialize;

use crate::controller::Controller;
use crate::error::Error;

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");

/// The page's routes and `GET /v1/explain`.
pub(crate) fn routes() -> Router<Controller> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/v1/explain", get(explain))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The page is small and changes with the binary: never serve a stale copy.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /v1/explain?src=&dst=&port=[&output=text|json]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainQuery {
    /// `namespace/name` of an endpoint or an IPv4 address.
    src: String,
    /// The same, or a Service address.
    dst: String,
    /// `PORT/PROTO` as `seam explain` takes it (`80/tcp`, `53/udp`, `icmp`).
    port: String,
    /// `json` (default) or `text` (what `seam explain` prints).
    #[serde(default)]
    output: Option<String>,
}

/// The engine's verdict for a new connection, computed from the controller's current state as
/// `seam explain` computes it (without the nodes' rule counters: those are the agents').
async fn explain(
    State(c): State<Controller>,
    query: Result<Query<ExplainQuery>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(q) = query.map_err(|e| invalid("query", e.body_text()))?;
    let text = match q.output.as_deref() {
        None | Some("json") => false,
        Some("text") => true,
        Some(other) => {
            return Err(invalid(
                "output",
                format!("{other:?} is not an output: json or text"),
            ))
        }
    };
    fn field(path: &'static str) -> impl Fn(seam_firewall::ExplainError) -> Error {
        move |e| invalid(path, e.to_string())
    }
    let (port, protocol) =
        seam_firewall::explain::parse_port_protocol(&q.port).map_err(field("port"))?;
    let flow = Flow {
        src: seam_firewall::explain::parse_end(&q.src).map_err(field("src"))?,
        dst: seam_firewall::explain::parse_end(&q.dst).map_err(field("dst"))?,
        protocol,
        port,
    };
    // The snapshot as every agent and the CLI read it (the same JSON, decoded the same way).
    let stored = c.snapshot().await?;
    let snapshot = serde_json::to_value(&stored)
        .and_then(seam_model::tolerant::from_value::<seam_model::Snapshot>)
        .map_err(|source| Error::Corrupt {
            key: "snapshot".to_string(),
            source,
        })?
        .value;
    // The engine's one failure is an endpoint name the inventory does not hold.
    let x = seam_firewall::explain::explain(&snapshot, flow, None).map_err(|e| {
        let detail = match &e {
            seam_firewall::ExplainError::Eval(inner) => inner.to_string(),
            other => other.to_string(),
        };
        invalid("flow", detail)
    })?;
    Ok(if text {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            seam_firewall::explain::render_text(&x),
        )
            .into_response()
    } else {
        Json(seam_firewall::explain::render_json(&x)).into_response()
    })
}

fn invalid(path: &str, message: impl Into<String>) -> Error {
    Error::Invalid(ValidationError {
        kind: "ExplainQuery",
        name: String::new(),
        errors: vec![FieldError {
            path: path.to_string(),
            message: message.into(),
        }],
    })
}
