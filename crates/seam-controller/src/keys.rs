//! The store key layout: `/seam/v1/<plural>/<name>`, values are the objects' JSON. Policy
//! objects are `/seam/v1/policies/<Kind>/<namespace or _>/<name>`
//! ([`seam_model::policy_name`]); namespaces `/seam/v1/namespaces/<name>`. Services'
//! allocations are index keys whose value is the Service's `namespace/name`:
//! `/seam/v1/allocations/clusterips/<ip>`, `/seam/v1/allocations/nodeports/<PROTO>/<port>`,
//! `/seam/v1/allocations/lbaddresses/<ip>` (not an [`ObjectKind`]: snapshots and watches leave
//! them out). Node leases `/seam/v1/nodeleases/<node>` are bound to a store lease. Each node's
//! realization report (`seam_model::NodeRealization`) is `/seam/v1/realization/<node>` (not an
//! [`ObjectKind`] either: agents do not follow it), deleted with its node.
//!
//! API boundary: other tools (backups, an etcd operator) may read these keys; change them only
//! with a migration.

use seam_model::ObjectKind;

/// Prefix of every key the controller writes.
pub const ROOT: &str = "/seam/v1/";

/// The prefix of every object of `kind` (ends with `/`).
pub fn kind_prefix(kind: ObjectKind) -> String {
    format!("{ROOT}{}/", kind.plural())
}

/// The key of the object `name` of `kind`. Names may contain `/` (endpoints, blocks).
pub fn object_key(kind: ObjectKind, name: &str) -> String {
    format!("{ROOT}{}/{name}", kind.plural())
}

/// The prefix of every block of `segment` (segment names never contain `/`).
pub fn segment_blocks_prefix(segment: &str) -> String {
    format!("{ROOT}blocks/{segment}/")
}

/// The prefix of every node's realization report.
pub const REALIZATION_PREFIX: &str = "/seam/v1/realization/";

/// The key of `node`'s realization report.
pub fn realization_key(node: &str) -> String {
    format!("{REALIZATION_PREFIX}{node}")
}

/// Splits a key into kind and name; `None` for keys outside the layout.
pub fn parse_key(key: &str) -> Option<(ObjectKind, &str)> {
    let rest = key.strip_prefix(ROOT)?;
    let (plural, name) = rest.split_once('/')?;
    let kind = ObjectKind::from_plural(plural)?;
    (!name.is_empty()).then_some((kind, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for kind in ObjectKind::ALL {
            for name in ["a", "default/web-0", "seg/10.0.0.0-26"] {
                let key = object_key(kind, name);
                assert!(key.starts_with(&kind_prefix(kind)));
                assert_eq!(parse_key(&key), Some((kind, name)));
            }
        }
        assert_eq!(parse_key("/seam/v1/things/x"), None);
        assert_eq!(parse_key("/seam/v1/nodes/"), None);
        assert_eq!(parse_key("/other/v1/nodes/x"), None);
        assert_eq!(parse_key(&realization_key("n1")), None);
        assert!(
            object_key(ObjectKind::Block, "s/10.0.0.0-26").starts_with(&segment_blocks_prefix("s"))
        );
    }
}
