//! The HTTP routes of node identities and their handlers.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use seam_model::{CreateJoinToken, JoinRequest, RenewRequest, Revocation};

use crate::caller::Caller;
use crate::controller::Controller;
use crate::error::Result;
use crate::http::decode_body;

/// The routes of node identities.
pub(crate) fn routes() -> Router<Controller> {
    Router::new()
        .route("/v1/join-tokens", post(create_join_token))
        .route("/v1/join", post(join))
        .route("/v1/renew", post(renew))
        .route("/v1/revocations", post(revoke))
}

async fn create_join_token(State(c): State<Controller>, body: Bytes) -> Result<Response> {
    let request: CreateJoinToken = decode_body("CreateJoinToken", &body)?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(c.create_join_token(&request).await?),
    )
        .into_response())
}

async fn join(State(c): State<Controller>, body: Bytes) -> Result<Response> {
    let request: JoinRequest = decode_body("JoinRequest", &body)?;
    match c.join(&request).await {
        Ok(answer) => Ok(Json(answer).into_response()),
        Err(e) => {
            // A refused join is worth a line: someone holds a bad token or tries names.
            if e.status() < 500 {
                tracing::warn!(node = %request.node, error = %e.message(), "join refused");
            }
            Err(e)
        }
    }
}

async fn renew(
    State(c): State<Controller>,
    caller: Option<Extension<Caller>>,
    body: Bytes,
) -> Result<Response> {
    let caller = caller.map_or(Caller::Anonymous, |Extension(c)| c);
    let request: RenewRequest = decode_body("RenewRequest", &body)?;
    Ok(Json(c.renew(&caller, &request).await?).into_response())
}

async fn revoke(State(c): State<Controller>, body: Bytes) -> Result<Response> {
    let request: Revocation = decode_body("Revocation", &body)?;
    Ok(Json(c.revoke(&request).await?).into_response())
}
