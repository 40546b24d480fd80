//! Node leases (`PUT /v1/nodeleases/{node}`): a node's liveness record, alive while the node
//! renews it. The key is bound to a store lease of [`NODE_LEASE_TTL_SECONDS`]; a renewal keeps
//! that lease alive, so the key (and its watch event) only changes when a node starts holding
//! one or stops: then the store deletes the key and every watcher sees the delete.
//!
//! The controller keeps one store lease per node in memory and grants a new one when the store
//! says the old one is gone (expired, or granted by another replica that led before). Only the
//! leader renews: a standby answers 503 `NotLeader` like every write.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use seam_model::{is_valid_name, NodeLease, ObjectKind, NODE_LEASE_TTL_SECONDS};
use seam_store::{Datastore, LeaseId, Txn};

use crate::controller::{encode, field_error, invalid_if_any, not_found, Controller};
use crate::error::{Error, Result};
use crate::keys::object_key;

/// The store lease of each node that renewed, in this replica.
#[derive(Debug, Default)]
pub(crate) struct NodeLeases {
    leases: Mutex<HashMap<String, LeaseId>>,
}

impl NodeLeases {
    fn get(&self, node: &str) -> Option<LeaseId> {
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(node)
            .copied()
    }

    fn set(&self, node: &str, lease: Option<LeaseId>) {
        let mut leases = self
            .leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match lease {
            Some(lease) => leases.insert(node.to_string(), lease),
            None => leases.remove(node),
        };
    }
}

impl Controller {
    /// Renews the lease of `node` (which must exist): keeps its store lease alive, or grants a
    /// new one and writes the key with it when there was none or it is gone.
    pub async fn renew_node_lease(&self, node: &str) -> Result<NodeLease> {
        if !is_valid_name(node) {
            invalid_if_any(
                "NodeLease",
                node,
                vec![field_error(
                    "node",
                    format!("{node:?} is not a valid node name"),
                )],
            )?;
        }
        crate::authz::check_own(node, || format!("renew the lease of node {node}"))?;
        let _guard = self.write_lock().await?;
        if self
            .get_kv(&object_key(ObjectKind::Node, node))
            .await?
            .is_none()
        {
            return Err(not_found(ObjectKind::Node, node));
        }
        let record = NodeLease {
            node: node.to_string(),
        };
        let key = object_key(ObjectKind::NodeLease, node);
        let leases = &self.inner.node_leases;
        let store_error = |op: &'static str| {
            let key = key.clone();
            move |source| Error::Store { op, key, source }
        };
        let mut lease = leases.get(node);
        if let Some(held) = lease {
            match self.store().keep_alive(held).await {
                Ok(()) => {
                    // Still bound unless someone deleted the key: then it is written again.
                    if self.get_kv(&key).await?.is_some() {
                        return Ok(record);
                    }
                }
                Err(seam_store::Error::LeaseNotFound { .. }) => lease = None,
                Err(source) => return Err(store_error("keep-alive")(source)),
            }
        }
        let lease = match lease {
            Some(lease) => lease,
            None => self
                .store()
                .grant_lease(Duration::from_secs(NODE_LEASE_TTL_SECONDS))
                .await
                .map_err(store_error("grant-lease"))?,
        };
        let txn =
            Txn::new().put_with_lease(&key, encode(ObjectKind::NodeLease, node, &record)?, lease);
        match self.commit(txn, &key).await {
            Ok(true) => {
                leases.set(node, Some(lease));
                tracing::info!(node, %lease, "node lease granted");
                Ok(record)
            }
            Ok(false) => Err(Error::Contended {
                kind: ObjectKind::NodeLease,
                name: node.to_string(),
                attempts: 1,
            }),
            Err(e) => {
                // A lease that expired in between: the next renewal grants a fresh one.
                leases.set(node, None);
                Err(e)
            }
        }
    }
}
