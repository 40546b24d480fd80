//! Leader election between controller replicas that share one store (etcd).
//!
//! The leader holds [`LEADER_KEY`], written with `Absent` compare and bound to a store lease it
//! keeps alive every third of the TTL; when it dies the lease expires, the key is deleted and a
//! standby that watches the key takes it. Every write of the leader carries a compare on the
//! key's `mod_revision` (its *fence*, see [`crate::Controller`]): a replica that lost the key —
//! paused, cut off from etcd, or replaced after its lease expired — can no longer commit
//! anything, so no allocation is ever made by two leaders. Standbys serve reads and watches and
//! answer writes with 503 `NotLeader`; clients move on to the next endpoint.

use std::time::Duration;

use seam_store::{Compare, Datastore, LeaseId, Txn, TxnOutcome};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::controller::{Controller, Role};

/// The store key of the leader record. Outside `/seam/v1/`, so snapshots and watches of the
/// objects never see it.
pub const LEADER_KEY: &str = "/seam/leader";

/// Default lease TTL: a dead leader is replaced within about this long (plus etcd's expiry
/// check, every 500 ms).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(2);

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Who this replica is, for the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// Unique per replica; a restarted replica with the same id takes its old record back at
    /// once instead of waiting for the lease to expire.
    pub id: String,
    /// Where clients reach this replica (`http://host:port`), published while it leads.
    pub advertise: String,
    /// The lease TTL.
    pub lease_ttl: Duration,
}

/// The value of [`LEADER_KEY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// The leader's [`ReplicaConfig::id`].
    pub id: String,
    /// The leader's [`ReplicaConfig::advertise`].
    pub address: String,
}

/// Why one round of the election failed (the loop retries with backoff).
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("store operation failed")]
    Store(#[from] seam_store::Error),
    #[error("cannot encode the leader record")]
    Encode(#[from] serde_json::Error),
}

/// Campaigns, leads and stands by until `stop` turns true; then gives up the lead (revoking the
/// lease, so a standby takes over at once). Store failures are retried with backoff.
pub(crate) async fn run(
    controller: Controller,
    replica: ReplicaConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = MIN_BACKOFF;
    while !*stop.borrow() {
        match round(&controller, &replica, &mut stop).await {
            Ok(()) => backoff = MIN_BACKOFF,
            Err(e) => {
                controller.set_role(Role::Standby { leader: None });
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e), retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "leader election interrupted");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One round: stand by while someone else leads, or take the key and lead until the lease is
/// lost or `stop`.
async fn round(
    controller: &Controller,
    replica: &ReplicaConfig,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), RoundError> {
    let store = controller.store();
    if let Some(kv) = store.get(LEADER_KEY).await? {
        let record: Option<LeaderRecord> = serde_json::from_slice(&kv.value).ok();
        if record.as_ref().is_some_and(|r| r.id == replica.id) {
            // Our own record from before a restart (or a lost lease): nobody else can hold it.
            tracing::info!("removing this replica's stale leader record");
            let txn = Txn::new()
                .when(Compare::ModRevision(
                    LEADER_KEY.to_string(),
                    kv.mod_revision,
                ))
                .delete(LEADER_KEY);
            store.txn(txn).await?;
            return Ok(());
        }
        controller.set_role(Role::Standby {
            leader: record.map(|r| r.address),
        });
        wait_for_change(controller, kv.mod_revision, replica.lease_ttl, stop).await;
        return Ok(());
    }
    let lease = store.grant_lease(replica.lease_ttl).await?;
    let record = serde_json::to_vec(&LeaderRecord {
        id: replica.id.clone(),
        address: replica.advertise.clone(),
    })?;
    let txn = Txn::new()
        .when(Compare::Absent(LEADER_KEY.to_string()))
        .put_with_lease(LEADER_KEY, record, lease);
    let fence = match store.txn(txn).await {
        Ok(TxnOutcome::Committed { revision }) => revision,
        Ok(TxnOutcome::CompareFailed) => {
            // Someone else was faster; the next round reads who.
            let _ = store.revoke_lease(lease).await;
            return Ok(());
        }
        Err(e) => {
            let _ = store.revoke_lease(lease).await;
            return Err(e.into());
        }
    };
    tracing::info!(id = %replica.id, fence, "leading");
    controller.set_role(Role::Leader { fence });
    // The previous leader may have died between freeing an address and retrying the Services
    // waiting for one; beside the lease, so renewal never waits for it.
    tokio::spawn({
        let controller = controller.clone();
        async move { controller.retry_pending_logged().await }
    });
    let held = hold(controller, lease, replica.lease_ttl, stop).await;
    controller.set_role(Role::Standby { leader: None });
    if *stop.borrow() {
        // Hand over at once instead of after the TTL.
        if let Err(e) = store.revoke_lease(lease).await {
            tracing::warn!(error = %e, "cannot revoke the leader lease on shutdown");
        }
        tracing::info!("stopped leading (shutdown)");
    }
    held
}

/// Keeps the lease alive until it is lost, keep-alives fail for a whole TTL, or `stop`.
async fn hold(
    controller: &Controller,
    lease: LeaseId,
    ttl: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), RoundError> {
    let store = controller.store();
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(ttl / 3) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        match store.keep_alive(lease).await {
            Ok(()) => last_ok = Instant::now(),
            Err(seam_store::Error::LeaseNotFound { .. }) => {
                tracing::warn!("leader lease expired; standing by");
                return Ok(());
            }
            // By now the lease may have expired in etcd and another replica may lead; the
            // fence already keeps this one from writing, and stepping down says so.
            Err(e) if last_ok.elapsed() >= ttl => {
                tracing::warn!("leader lease could not be renewed for a whole TTL; standing by");
                return Err(e.into());
            }
            Err(e) => tracing::warn!(error = %e, "leader lease keep-alive failed"),
        }
    }
}

/// Waits until the leader record changes (deleted or replaced), a TTL passes (so a missed
/// event costs at most that), or `stop`.
async fn wait_for_change(
    controller: &Controller,
    seen: u64,
    ttl: Duration,
    stop: &mut watch::Receiver<bool>,
) {
    let store = controller.store();
    let wait = async {
        if let Ok(mut watch) = store.watch(LEADER_KEY, seen + 1).await {
            while let Some(Ok(event)) = watch.next().await {
                if event.key == LEADER_KEY {
                    return;
                }
            }
        }
        // A failed watch leaves the wait to the TTL timer rather than spinning.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = wait => {}
        () = tokio::time::sleep(ttl) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}
