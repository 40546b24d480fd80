//! The audit log as `GET /v1/audit` serves it: one record per object a write changed.

use serde::{Deserialize, Serialize};

/// One change of one stored object: who made it, how, and the object's revisions before and
/// after. Records are served oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// The store revision of the write (the object's `mod_revision` after it, or the revision
    /// its deletion happened at).
    pub revision: u64,
    /// The caller, as `role/name` (`node/n1`, `admin/local-root`); `internal` for the
    /// controller's own writes.
    pub who: String,
    /// `PUT` (created or replaced) or `DELETE`.
    pub verb: String,
    /// The store key of the object (`/seam/v1/nodes/n1`).
    pub key: String,
    /// The object's `mod_revision` before the write; `None` when it did not exist.
    pub before: Option<u64>,
    /// When the write was made, RFC 3339 in UTC.
    pub at: String,
}
