//! Policy objects and namespaces: validated with [`seam_policy`] before anything is written.
//!
//! Store layout: `/seam/v1/policies/<Kind>/<namespace or _>/<name>` holds the object's canonical
//! wire form ([`PolicyObject::to_value`]: `apiVersion`, `kind`, `metadata`, `spec`), and
//! `/seam/v1/namespaces/<name>` a [`Namespace`].

use seam_model::{
    policy_name, Endpoint, Namespace, ObjectKind, CLUSTER_SCOPE, MANAGED_BY_ANNOTATION,
};
use seam_policy::{PolicyKind, PolicyObject};
use seam_store::Txn;

use crate::controller::{
    encode, field_error, in_use, invalid_if_any, not_found, same_as_read, Controller,
};
use crate::error::{Error, Result};
use crate::keys::object_key;

/// The lower-case plural resource name of a policy kind (`networkpolicies`, `contracts`, …).
pub fn policy_plural(kind: PolicyKind) -> &'static str {
    kind.plural()
}

/// The policy kind a request path names: the kind (`NetworkPolicy`, any case) or its plural
/// (`networkpolicies`).
pub fn policy_kind_from_path(s: &str) -> Option<PolicyKind> {
    PolicyKind::ALL
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(s) || policy_plural(*k) == s)
}

/// The store name (see [`seam_model::policy_name`]) of the object a request path names:
/// `{*name}` is `<namespace>/<name>` for namespaced kinds, `<name>` (or `_/<name>`) for
/// cluster-scoped ones.
pub fn policy_store_name(kind: PolicyKind, path_name: &str) -> String {
    let (namespace, name) = split_path_name(path_name);
    policy_name(kind.as_str(), namespace, name)
}

fn split_path_name(path_name: &str) -> (Option<&str>, &str) {
    match path_name.split_once('/') {
        Some((ns, name)) if ns == CLUSTER_SCOPE => (None, name),
        Some((ns, name)) => (Some(ns), name),
        None => (None, path_name),
    }
}

pub(crate) fn unknown_kind(kind: &str) -> Error {
    let supported: Vec<String> = PolicyKind::ALL
        .iter()
        .map(|k| format!("{} ({})", k.as_str(), policy_plural(*k)))
        .collect();
    Error::Invalid(seam_model::ValidationError {
        kind: "PolicyPath",
        name: kind.to_string(),
        errors: vec![field_error(
            "kind",
            format!(
                "unsupported policy kind {kind:?} (supported: {})",
                supported.join(", ")
            ),
        )],
    })
}

/// Decodes and validates a policy object and checks its admission bounds (seam-policy's
/// [`seam_policy::admit`]); `name` names it in the error.
pub(crate) fn admit_policy(value: serde_json::Value, name: &str) -> Result<PolicyObject> {
    seam_policy::admit(value).map_err(|source| Error::InvalidPolicy {
        name: name.to_string(),
        source,
    })
}

/// The manager a stored policy object names in its [`MANAGED_BY_ANNOTATION`].
fn manager(object: &serde_json::Value) -> Option<&str> {
    object
        .pointer("/metadata/annotations")?
        .get(MANAGED_BY_ANNOTATION)?
        .as_str()
}

/// A policy object a manager marked is replaced only by an object with the same mark: another
/// writer's version would be undone by the manager, or undo it, without a word.
pub(crate) fn check_manager(
    store_name: &str,
    current: Option<&serde_json::Value>,
    new: &serde_json::Value,
) -> Result<()> {
    match current.and_then(manager) {
        Some(owner) if manager(new) != Some(owner) => Err(Error::ManagedElsewhere {
            name: store_name.to_string(),
            manager: owner.to_string(),
        }),
        _ => Ok(()),
    }
}

/// A namespace as it is stored: its name label set, validated.
pub(crate) fn admit_namespace(mut namespace: Namespace) -> Result<Namespace> {
    namespace.set_name_label();
    namespace.validate()?;
    Ok(namespace)
}

impl Controller {
    /// Creates or replaces a policy object. `kind` and `path_name` come from the request path;
    /// `value` is the object (with `apiVersion` and `kind`). Nothing is written unless the
    /// object decodes, validates, and its kind, namespace and name are the path's.
    pub async fn put_policy(
        &self,
        kind: &str,
        path_name: &str,
        value: serde_json::Value,
    ) -> Result<serde_json::Value> {
        let path_kind = policy_kind_from_path(kind).ok_or_else(|| unknown_kind(kind))?;
        let store_name = policy_store_name(path_kind, path_name);
        let object = admit_policy(value, &store_name)?;
        let key = object.key();
        let (path_ns, path_leaf) = split_path_name(path_name);
        let mut problems = Vec::new();
        if key.kind != path_kind {
            problems.push(field_error(
                "kind",
                format!(
                    "{} does not match the kind in the path ({})",
                    key.kind,
                    path_kind.as_str()
                ),
            ));
        }
        if key.namespace.as_deref() != path_ns {
            problems.push(field_error(
                "metadata.namespace",
                format!(
                    "{:?} does not match the namespace in the path {:?}",
                    key.namespace.as_deref().unwrap_or(""),
                    path_ns.unwrap_or("")
                ),
            ));
        }
        if key.name != path_leaf {
            problems.push(field_error(
                "metadata.name",
                format!(
                    "{:?} does not match the name in the path {path_leaf:?}",
                    key.name
                ),
            ));
        }
        invalid_if_any(key.kind.as_str(), &store_name, problems)?;

        let stored = object.to_value();
        let _guard = self.write_lock().await?;
        let current = self
            .read::<serde_json::Value>(ObjectKind::Policy, &store_name)
            .await?;
        check_manager(&store_name, current.as_ref().map(|c| &c.object), &stored)?;
        let store_key = object_key(ObjectKind::Policy, &store_name);
        let txn = Txn::new()
            .when(same_as_read(&store_key, current.map(|c| c.mod_revision)))
            .put(
                &store_key,
                encode(ObjectKind::Policy, &store_name, &stored)?,
            );
        self.commit_once(txn, ObjectKind::Policy, &store_name)
            .await?;
        tracing::info!(policy = %store_name, "stored policy object");
        Ok(stored)
    }

    /// One policy object, by the kind and name of a request path.
    pub async fn get_policy(&self, kind: &str, path_name: &str) -> Result<serde_json::Value> {
        let kind = policy_kind_from_path(kind).ok_or_else(|| unknown_kind(kind))?;
        self.get_json(ObjectKind::Policy, &policy_store_name(kind, path_name))
            .await
    }

    /// Deletes a policy object; 404 when it does not exist.
    pub async fn delete_policy(&self, kind: &str, path_name: &str) -> Result<()> {
        let kind = policy_kind_from_path(kind).ok_or_else(|| unknown_kind(kind))?;
        let store_name = policy_store_name(kind, path_name);
        let _guard = self.write_lock().await?;
        let current = self
            .read::<serde_json::Value>(ObjectKind::Policy, &store_name)
            .await?
            .ok_or_else(|| not_found(ObjectKind::Policy, &store_name))?;
        let store_key = object_key(ObjectKind::Policy, &store_name);
        let txn = Txn::new()
            .when(same_as_read(&store_key, Some(current.mod_revision)))
            .delete(&store_key);
        self.commit_once(txn, ObjectKind::Policy, &store_name).await
    }

    /// Creates or replaces a namespace. Its name label is always set to its name.
    pub async fn put_namespace(&self, namespace: Namespace) -> Result<Namespace> {
        let namespace = admit_namespace(namespace)?;
        let _guard = self.write_lock().await?;
        let current = self
            .read::<serde_json::Value>(ObjectKind::Namespace, &namespace.name)
            .await?;
        let key = object_key(ObjectKind::Namespace, &namespace.name);
        let txn = Txn::new()
            .when(same_as_read(&key, current.map(|c| c.mod_revision)))
            .put(
                &key,
                encode(ObjectKind::Namespace, &namespace.name, &namespace)?,
            );
        self.commit_once(txn, ObjectKind::Namespace, &namespace.name)
            .await?;
        Ok(namespace)
    }

    /// Deletes a namespace; refused while endpoints are in it, 404 when it does not exist.
    pub async fn delete_namespace(&self, name: &str) -> Result<()> {
        let _guard = self.write_lock().await?;
        let current = self
            .read::<serde_json::Value>(ObjectKind::Namespace, name)
            .await?
            .ok_or_else(|| not_found(ObjectKind::Namespace, name))?;
        let endpoints = self.read_all::<Endpoint>(ObjectKind::Endpoint).await?;
        if let Some(e) = endpoints.iter().find(|e| e.object.namespace == name) {
            return Err(in_use(
                ObjectKind::Namespace,
                name,
                ObjectKind::Endpoint,
                e.object.name.clone(),
            ));
        }
        let key = object_key(ObjectKind::Namespace, name);
        let txn = Txn::new()
            .when(same_as_read(&key, Some(current.mod_revision)))
            .delete(&key);
        self.commit_once(txn, ObjectKind::Namespace, name).await
    }

    /// Creates the namespace `name` (only its name label, default tenant) unless it exists. Takes
    /// no write lock: the create requires the key to be absent, so it never overwrites.
    pub(crate) async fn ensure_namespace(&self, name: &str) -> Result<()> {
        if self
            .read::<serde_json::Value>(ObjectKind::Namespace, name)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let namespace = Namespace::named(name);
        namespace.validate()?;
        let key = object_key(ObjectKind::Namespace, name);
        let txn = Txn::new()
            .when(same_as_read(&key, None))
            .put(&key, encode(ObjectKind::Namespace, name, &namespace)?);
        // A failed compare means another request created it first: just as good.
        if self.commit(txn, &key).await? {
            tracing::info!(namespace = name, "created namespace");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_kinds_and_names() {
        assert_eq!(
            policy_kind_from_path("networkpolicies"),
            Some(PolicyKind::NetworkPolicy)
        );
        assert_eq!(
            policy_kind_from_path("Contract"),
            Some(PolicyKind::Contract)
        );
        assert_eq!(
            policy_kind_from_path("endpointgroup"),
            Some(PolicyKind::EndpointGroup)
        );
        assert_eq!(policy_kind_from_path("pods"), None);
        assert_eq!(
            policy_store_name(PolicyKind::NetworkPolicy, "x/deny"),
            "NetworkPolicy/x/deny"
        );
        assert_eq!(
            policy_store_name(PolicyKind::Contract, "web"),
            "Contract/_/web"
        );
        assert_eq!(
            policy_store_name(PolicyKind::Contract, "_/web"),
            "Contract/_/web"
        );
    }
}
