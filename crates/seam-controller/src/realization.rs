//! Policy realization: each node's report of the generation of every policy object and tenant
//! it enforces (`PUT /v1/realization/<node>`, node role, own node only), kept in the store at
//! `/seam/v1/realization/<node>` so that every replica answers, and the count per object
//! (`GET /v1/realization`, [`seam_model::realization_status`]). A report is written only when it
//! differs from the stored one, and goes with its node ([`Controller::delete_node`]).
//!
//! Which nodes must enforce a change, and what a generation is: see
//! [`seam_model::realization`].

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use seam_model::{
    realization_status, tenant_realization_name, FieldError, Node, NodeRealization, ObjectKind,
    RealizationStatus, ValidationError,
};
use seam_store::{Datastore, Txn};

use crate::authz::check_own;
use crate::controller::{encode, not_found, same_as_read, Controller};
use crate::error::{Error, Result};
use crate::keys::{kind_prefix, parse_key, realization_key, REALIZATION_PREFIX};

/// `GET /v1/realization` (readers, the adapter) and `PUT /v1/realization/<node>` (the node).
pub(crate) fn routes() -> Router<Controller> {
    Router::new()
        .route("/v1/realization", get(get_status))
        .route("/v1/realization/{node}", axum::routing::put(put_report))
}

async fn get_status(State(c): State<Controller>) -> Result<Response> {
    Ok(Json(c.realization().await?).into_response())
}

async fn put_report(
    State(c): State<Controller>,
    Path(node): Path<String>,
    body: Bytes,
) -> Result<StatusCode> {
    let report: NodeRealization = crate::http::decode_body("NodeRealization", &body)?;
    c.put_realization(&node, report).await?;
    Ok(StatusCode::NO_CONTENT)
}

impl Controller {
    /// Stores `report` as what `node` enforces, unless the stored report is the same. The node
    /// must exist (a report of a deleted node would count for nobody), and `report.node` must
    /// be the path's `node`.
    pub async fn put_realization(&self, node: &str, report: NodeRealization) -> Result<()> {
        check_own(node, || format!("report the realization of node {node}"))?;
        if report.node != node {
            return Err(Error::Invalid(ValidationError {
                kind: "NodeRealization",
                name: report.node.clone(),
                errors: vec![FieldError {
                    path: "node".to_string(),
                    message: format!("does not match the node in the path ({node})"),
                }],
            }));
        }
        report.validate()?;
        let _guard = self.write_lock().await?;
        if self.read::<Node>(ObjectKind::Node, node).await?.is_none() {
            return Err(not_found(ObjectKind::Node, node));
        }
        let key = realization_key(node);
        let current = self.get_kv(&key).await?;
        let stored = current
            .as_ref()
            .and_then(|kv| serde_json::from_slice::<NodeRealization>(&kv.value).ok());
        if stored.as_ref() == Some(&report) {
            return Ok(());
        }
        let txn = Txn::new()
            .when(same_as_read(&key, current.map(|kv| kv.mod_revision)))
            .put(&key, encode(ObjectKind::Node, node, &report)?);
        if !self.commit(txn, &key).await? {
            return Err(Error::Contended {
                kind: ObjectKind::Node,
                name: node.to_string(),
                attempts: 1,
            });
        }
        tracing::debug!(
            node,
            objects = report.objects.len(),
            "stored realization report"
        );
        Ok(())
    }

    /// How far every policy object and tenant is realized: every node with a node record must
    /// enforce each one's current generation.
    pub async fn realization(&self) -> Result<RealizationStatus> {
        let mut generations = BTreeMap::new();
        for kind in [ObjectKind::Policy, ObjectKind::Tenant] {
            for kv in self.list_kvs(&kind_prefix(kind)).await? {
                let Some((_, name)) = parse_key(&kv.key) else {
                    continue;
                };
                let name = match kind {
                    ObjectKind::Tenant => tenant_realization_name(name),
                    _ => name.to_string(),
                };
                generations.insert(name, kv.mod_revision);
            }
        }
        let nodes: Vec<String> = self
            .list_kvs(&kind_prefix(ObjectKind::Node))
            .await?
            .iter()
            .filter_map(|kv| parse_key(&kv.key).map(|(_, name)| name.to_string()))
            .collect();
        let mut reports = BTreeMap::new();
        for kv in self.list_kvs(REALIZATION_PREFIX).await? {
            // Read leniently: a report some other version wrote still counts for what it says.
            match seam_model::tolerant::from_slice::<NodeRealization>(&kv.value) {
                Ok(report) => {
                    reports.insert(report.value.node.clone(), report.value);
                }
                Err(e) => {
                    tracing::warn!(key = %kv.key, error = %e, "skipping an unreadable realization report")
                }
            }
        }
        Ok(realization_status(&generations, &nodes, &reports))
    }

    /// Every key-value under `prefix`.
    async fn list_kvs(&self, prefix: &str) -> Result<Vec<seam_store::KeyValue>> {
        let (_, kvs) = self
            .store()
            .list(prefix)
            .await
            .map_err(|source| Error::Store {
                op: "list",
                key: prefix.to_string(),
                source,
            })?;
        Ok(kvs)
    }
}
