//! The audit log: every write of an object under [`crate::keys::ROOT`] is recorded — who, what
//! verb, which key, the object's revision before — in the same store transaction as the write
//! itself ([`Controller`]'s `commit`), so there is no write without its record and no record
//! of a write that did not happen. The record's own `mod_revision` is the revision after.
//!
//! Records live under [`AUDIT_PREFIX`] (`/seam/security/audit/<unix-nanos, 20 digits>-<8 hex>`),
//! outside `/seam/v1/`, so snapshots and watches never carry them. One transaction writes one
//! record, whatever it changes (an apply of 100 objects included): etcd bounds a transaction to
//! 128 operations, and doubling an apply's would cross it. The first changed key is the record's
//! own; the others follow in `more`. `GET /v1/audit` serves one [`AuditRecord`] per key.
//!
//! Growth is bounded: every [`CHECK_EVERY`] audited writes the controller counts the records
//! and deletes the oldest beyond [`MAX_AUDIT_RECORDS`], [`PRUNE_BATCH`] per transaction.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use seam_model::AuditRecord;
use seam_store::{Compare, Datastore, Op, Txn};
use serde::{Deserialize, Serialize};

use crate::controller::Controller;
use crate::error::{Error, Result};
use crate::keys::ROOT;

/// Where the audit records are stored.
pub const AUDIT_PREFIX: &str = "/seam/security/audit/";
/// How many records are kept: the oldest beyond this are deleted.
pub const MAX_AUDIT_RECORDS: usize = 100_000;
/// The default number of records `GET /v1/audit` serves.
pub const DEFAULT_AUDIT_LIMIT: usize = 100;
/// The most records one `GET /v1/audit` serves.
pub const MAX_AUDIT_LIMIT: usize = 10_000;
/// How many audited writes pass between two counts of the records.
const CHECK_EVERY: u64 = 1000;
/// Records deleted per pruning transaction (etcd's bound is 128 operations).
const PRUNE_BATCH: usize = 100;
/// Who a write outside any request is recorded as (the controller's own, or a library
/// caller's).
const INTERNAL: &str = "internal";

/// One stored record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredRecord {
    who: String,
    verb: String,
    key: String,
    before: Option<u64>,
    at: String,
    /// The other keys of the same transaction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    more: Vec<Change>,
}

/// One more key of a transaction that changed several.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Change {
    verb: String,
    key: String,
    before: Option<u64>,
}

/// The audit log's bookkeeping in one controller.
#[derive(Debug)]
pub(crate) struct AuditLog {
    /// The 8 hex digits after the time: random at start, then counting, so two records of one
    /// nanosecond (or of two replicas) do not collide.
    next: AtomicU32,
    since_check: AtomicU64,
    pruning: AtomicBool,
    max_records: AtomicUsize,
}

impl Default for AuditLog {
    fn default() -> Self {
        AuditLog {
            // A fresh `RandomState` is seeded randomly: a random start without a dependency.
            next: AtomicU32::new(RandomState::new().hash_one(std::process::id()) as u32),
            since_check: AtomicU64::new(0),
            pruning: AtomicBool::new(false),
            max_records: AtomicUsize::new(MAX_AUDIT_RECORDS),
        }
    }
}

impl AuditLog {
    /// `txn` with the record of what it changes added, or unchanged when it changes no object.
    pub(crate) fn record(&self, txn: Txn) -> Result<(Txn, bool)> {
        let mut changes = txn
            .success
            .iter()
            .filter(|op| op.key().starts_with(ROOT))
            .map(|op| Change {
                verb: match op {
                    Op::Put { .. } => "PUT",
                    Op::Delete { .. } => "DELETE",
                }
                .to_string(),
                key: op.key().to_string(),
                before: before_of(&txn.compares, op.key()),
            });
        let Some(first) = changes.next() else {
            return Ok((txn, false));
        };
        let who =
            crate::caller::serving().map_or_else(|| INTERNAL.to_string(), |s| s.caller.to_string());
        let now = SystemTime::now();
        let record = StoredRecord {
            who,
            verb: first.verb,
            key: first.key,
            before: first.before,
            at: rfc3339(now),
            more: changes.collect(),
        };
        let nanos = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let suffix = self.next.fetch_add(1, Ordering::Relaxed);
        let key = format!("{AUDIT_PREFIX}{nanos:020}-{suffix:08x}");
        let value = serde_json::to_vec(&record).map_err(|source| Error::Corrupt {
            key: key.clone(),
            source,
        })?;
        Ok((txn.put(key, value), true))
    }

    /// Counts one audited write; true when it is time to count the records.
    fn due(&self) -> bool {
        let n = self.since_check.fetch_add(1, Ordering::Relaxed) + 1;
        n.is_multiple_of(CHECK_EVERY)
    }

    #[cfg(test)]
    pub(crate) fn set_max_records(&self, max: usize) {
        self.max_records.store(max, Ordering::Relaxed);
    }
}

/// The revision a write read its key at, from its compares (`None`: absent, or not compared).
fn before_of(compares: &[Compare], key: &str) -> Option<u64> {
    compares.iter().find_map(|c| match c {
        Compare::ModRevision(k, revision) if k == key && *revision > 0 => Some(*revision),
        _ => None,
    })
}

impl Controller {
    /// After an audited write: every [`CHECK_EVERY`] of them, prune in the background.
    pub(crate) fn audited(&self) {
        let log = &self.inner.audit;
        if !log.due() || log.pruning.swap(true, Ordering::AcqRel) {
            return;
        }
        let controller = self.clone();
        tokio::spawn(async move {
            if let Err(e) = controller.prune_audit().await {
                tracing::warn!(error = %e, "cannot prune the audit log");
            }
            controller
                .inner
                .audit
                .pruning
                .store(false, Ordering::Release);
        });
    }

    /// Deletes the oldest records beyond the bound; returns how many.
    pub(crate) async fn prune_audit(&self) -> Result<usize> {
        let max = self.inner.audit.max_records.load(Ordering::Relaxed);
        let (_, kvs) = self
            .store()
            .list(AUDIT_PREFIX)
            .await
            .map_err(|source| Error::Store {
                op: "list",
                key: AUDIT_PREFIX.to_string(),
                source,
            })?;
        let excess = kvs.len().saturating_sub(max);
        for batch in kvs[..excess].chunks(PRUNE_BATCH) {
            let txn = batch
                .iter()
                .fold(Txn::new(), |txn, kv| txn.delete(kv.key.as_str()));
            // Fenced like every write: only the leader prunes. A compare cannot fail otherwise.
            self.commit(txn, AUDIT_PREFIX).await?;
        }
        if excess > 0 {
            tracing::info!(deleted = excess, kept = max, "pruned the audit log");
        }
        Ok(excess)
    }

    /// The newest `limit` audit records, one per changed key, oldest first.
    pub async fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        let (_, kvs) = self
            .store()
            .list(AUDIT_PREFIX)
            .await
            .map_err(|source| Error::Store {
                op: "list",
                key: AUDIT_PREFIX.to_string(),
                source,
            })?;
        let mut out = Vec::new();
        // Newest first, so only what is served is decoded; reversed at the end.
        for kv in kvs.iter().rev() {
            if out.len() >= limit {
                break;
            }
            let record: StoredRecord = match serde_json::from_slice(&kv.value) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(key = %kv.key, error = %e, "skipping corrupt audit record");
                    continue;
                }
            };
            let first = Change {
                verb: record.verb,
                key: record.key,
                before: record.before,
            };
            for change in std::iter::once(first).chain(record.more).rev() {
                if out.len() >= limit {
                    break;
                }
                out.push(AuditRecord {
                    revision: kv.mod_revision,
                    who: record.who.clone(),
                    verb: change.verb,
                    key: change.key,
                    before: change.before,
                    at: record.at.clone(),
                });
            }
        }
        out.reverse();
        Ok(out)
    }
}

/// `t` as RFC 3339 in UTC, to the second (`2026-12-07T12:25:04Z`).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    let (year, month, day) = civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01. Counts in 400-year eras (146097 days,
/// the calendar's period) from 0000-03-01, so the leap day ends a year and needs no special case.
fn civil_date(days: u64) -> (u64, u64, u64) {
    // 1970-01-01 is day 719468 after 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    // Years of 365 days, with the era's leap days (every 4th year but the 100th, save the
    // 400th) taken out.
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March, of 153 days per 5 months (31, 30, 31, 30, 31).
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> String {
        rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(951_868_799), "2000-02-29T23:59:59Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(1_709_251_200), "2024-03-01T00:00:00Z");
        assert_eq!(at(1_735_689_599), "2024-12-31T23:59:59Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[tokio::test]
    async fn the_oldest_records_beyond_the_bound_are_deleted() {
        let c = Controller::new(
            crate::ControllerConfig::default(),
            seam_store::AnyStore::memory(),
        )
        .unwrap();
        c.inner.audit.set_max_records(3);
        for i in 1..=5 {
            let node =
                serde_json::json!({"name": format!("n{i}"), "underlayIp": format!("10.0.0.{i}")});
            c.put_node(serde_json::from_value(node).unwrap())
                .await
                .unwrap();
        }
        assert_eq!(c.audit(100).await.unwrap().len(), 5);
        assert_eq!(c.prune_audit().await.unwrap(), 2);
        let keys: Vec<String> = c
            .audit(100)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(
            keys,
            [
                "/seam/v1/nodes/n3",
                "/seam/v1/nodes/n4",
                "/seam/v1/nodes/n5"
            ]
        );
        assert_eq!(c.prune_audit().await.unwrap(), 0);
        // Limits count records from the newest.
        let newest: Vec<String> = c
            .audit(2)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(newest, ["/seam/v1/nodes/n4", "/seam/v1/nodes/n5"]);
    }

    #[test]
    fn a_record_covers_every_object_key_of_its_transaction() {
        let log = AuditLog::default();
        let txn = Txn::new()
            .when(Compare::ModRevision("/seam/v1/nodes/n1".to_string(), 7))
            .when(Compare::Absent("/seam/v1/tenants/t1".to_string()))
            .when(Compare::ModRevision("/seam/leader".to_string(), 3))
            .put("/seam/v1/nodes/n1", "{}")
            .delete("/seam/v1/tenants/t1")
            .put("/seam/leader", "x");
        let (txn, recorded) = log.record(txn).unwrap();
        assert!(recorded);
        let Some(Op::Put { key, value, .. }) = txn.success.last() else {
            panic!("no record put: {txn:?}");
        };
        assert!(key.starts_with(AUDIT_PREFIX), "{key}");
        let suffix = &key[AUDIT_PREFIX.len()..];
        assert_eq!(suffix.len(), 20 + 1 + 8, "{suffix}");
        let record: StoredRecord = serde_json::from_slice(value).unwrap();
        assert_eq!(record.who, "internal");
        assert_eq!(
            (record.verb.as_str(), record.key.as_str(), record.before),
            ("PUT", "/seam/v1/nodes/n1", Some(7))
        );
        assert_eq!(record.more.len(), 1);
        assert_eq!(
            (
                record.more[0].verb.as_str(),
                record.more[0].key.as_str(),
                record.more[0].before
            ),
            ("DELETE", "/seam/v1/tenants/t1", None)
        );
        // A transaction that changes no object (the election's, pruning's) gets none.
        let (txn, recorded) = log.record(Txn::new().delete("/seam/leader")).unwrap();
        assert!(!recorded);
        assert_eq!(txn.success.len(), 1);
    }
}
