//! Tenants (`/seam/v1/tenants/<name>`) and the tenant operations of OpenShift SDN's
//! `oc adm pod-network` (join / isolate / make-global), each one store txn.
//!
//! The operations choose names and modes exactly as the engine's
//! [`seam_policy::Inventory::join`], [`isolate`](seam_policy::Inventory::isolate) and
//! [`make_global`](seam_policy::Inventory::make_global) do (seam-policy SEMANTICS §9): the
//! controller builds the inventory's tenant view from the store and calls them.

use seam_model::{
    is_valid_name, IsolationMode, Namespace, ObjectKind, Tenant, TenantChange, DEFAULT_TENANT,
};
use seam_store::{Compare, Txn};

use crate::controller::{
    encode, field_error, in_use, invalid_if_any, not_found, same_as_read, Controller, Stored,
};
use crate::error::Result;
use crate::keys::object_key;

/// The engine's isolation mode for a model one.
pub(crate) fn to_engine(mode: IsolationMode) -> seam_policy::IsolationMode {
    match mode {
        IsolationMode::Flat => seam_policy::IsolationMode::Flat,
        IsolationMode::Multitenant => seam_policy::IsolationMode::Multitenant,
        IsolationMode::Policy => seam_policy::IsolationMode::Policy,
    }
}

fn from_engine(mode: seam_policy::IsolationMode) -> IsolationMode {
    match mode {
        seam_policy::IsolationMode::Flat => IsolationMode::Flat,
        seam_policy::IsolationMode::Multitenant => IsolationMode::Multitenant,
        seam_policy::IsolationMode::Policy => IsolationMode::Policy,
    }
}

fn check_namespace_name(op: &'static str, field: &str, name: &str) -> Result<()> {
    let problems = if is_valid_name(name) {
        Vec::new()
    } else {
        vec![field_error(
            field,
            format!("{name:?} is not a valid namespace name"),
        )]
    };
    invalid_if_any(op, name, problems)
}

impl Controller {
    /// Creates or replaces a tenant.
    pub async fn put_tenant(&self, tenant: Tenant) -> Result<Tenant> {
        tenant.validate()?;
        let _guard = self.write_lock().await?;
        let current = self
            .read::<serde_json::Value>(ObjectKind::Tenant, &tenant.name)
            .await?;
        let key = object_key(ObjectKind::Tenant, &tenant.name);
        let txn = Txn::new()
            .when(same_as_read(&key, current.map(|c| c.mod_revision)))
            .put(&key, encode(ObjectKind::Tenant, &tenant.name, &tenant)?);
        self.commit_once(txn, ObjectKind::Tenant, &tenant.name)
            .await?;
        tracing::info!(tenant = %tenant.name, isolation = tenant.isolation.as_str(), global = tenant.global, "stored tenant");
        Ok(tenant)
    }

    /// Deletes a tenant; refused while a namespace names it, 404 when it does not exist.
    pub async fn delete_tenant(&self, name: &str) -> Result<()> {
        let _guard = self.write_lock().await?;
        let current = self
            .read::<serde_json::Value>(ObjectKind::Tenant, name)
            .await?
            .ok_or_else(|| not_found(ObjectKind::Tenant, name))?;
        let namespaces = self.read_all::<Namespace>(ObjectKind::Namespace).await?;
        if let Some(ns) = namespaces
            .iter()
            .find(|n| n.object.tenant.as_deref() == Some(name))
        {
            return Err(in_use(
                ObjectKind::Tenant,
                name,
                ObjectKind::Namespace,
                ns.object.name.clone(),
            ));
        }
        let key = object_key(ObjectKind::Tenant, name);
        let txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), current.mod_revision))
            .delete(&key);
        self.commit_once(txn, ObjectKind::Tenant, name).await
    }

    /// `namespace` joins the tenant of `into` (OpenShift `join-projects --to=into namespace`);
    /// `into` is unchanged. One txn, guarded by both namespaces' revisions.
    pub async fn join_tenant(&self, namespace: &str, into: &str) -> Result<TenantChange> {
        check_namespace_name("JoinTenant", "namespace", namespace)?;
        check_namespace_name("JoinTenant", "into", into)?;
        let _guard = self.write_lock().await?;
        let moving = self
            .read::<Namespace>(ObjectKind::Namespace, namespace)
            .await?
            .ok_or_else(|| not_found(ObjectKind::Namespace, namespace))?;
        let target = self
            .read::<Namespace>(ObjectKind::Namespace, into)
            .await?
            .ok_or_else(|| not_found(ObjectKind::Namespace, into))?;
        let mut moved = moving.object.clone();
        moved.tenant = target.object.tenant.clone();
        let (tenant, tenant_rev) = self.effective_tenant(moved.tenant.as_deref()).await?;
        let key = object_key(ObjectKind::Namespace, namespace);
        let txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), moving.mod_revision))
            .when(Compare::ModRevision(
                object_key(ObjectKind::Namespace, into),
                target.mod_revision,
            ))
            .when(same_as_read(
                &object_key(ObjectKind::Tenant, &tenant.name),
                tenant_rev,
            ))
            .put(&key, encode(ObjectKind::Namespace, namespace, &moved)?);
        self.commit_once(txn, ObjectKind::Namespace, namespace)
            .await?;
        tracing::info!(namespace, into, tenant = %tenant.name, "namespace joined tenant");
        Ok(TenantChange {
            namespace: moved,
            tenant,
        })
    }

    /// `namespace` moves to a tenant of its own, not global, with the mode of the tenant it
    /// leaves (OpenShift `isolate-projects`).
    pub async fn isolate_namespace(&self, namespace: &str) -> Result<TenantChange> {
        self.own_tenant("IsolateNamespace", namespace, false).await
    }

    /// `namespace` moves to a global tenant of its own, with the mode of the tenant it leaves
    /// (OpenShift `make-projects-global`).
    pub async fn make_namespace_global(&self, namespace: &str) -> Result<TenantChange> {
        self.own_tenant("MakeNamespaceGlobal", namespace, true)
            .await
    }

    async fn own_tenant(
        &self,
        op: &'static str,
        namespace: &str,
        global: bool,
    ) -> Result<TenantChange> {
        check_namespace_name(op, "namespace", namespace)?;
        let _guard = self.write_lock().await?;
        let namespaces = self.read_all::<Namespace>(ObjectKind::Namespace).await?;
        let current = namespaces
            .iter()
            .find(|n| n.object.name == namespace)
            .ok_or_else(|| not_found(ObjectKind::Namespace, namespace))?;
        let tenants = self.read_all::<Tenant>(ObjectKind::Tenant).await?;
        let mut inv = seam_policy::Inventory::default();
        for n in &namespaces {
            inv.namespaces.insert(
                n.object.name.clone(),
                seam_policy::Namespace {
                    labels: Default::default(),
                    tenant: n.object.tenant.clone(),
                },
            );
        }
        for t in &tenants {
            inv.tenants.insert(
                t.object.name.clone(),
                seam_policy::Tenant {
                    isolation: to_engine(t.object.isolation),
                    global: t.object.global,
                },
            );
        }
        let old_name = inv.tenant_name(namespace).to_string();
        let chosen = if global {
            inv.make_global(namespace)
        } else {
            inv.isolate(namespace)
        }
        .map_err(|_| not_found(ObjectKind::Namespace, namespace))?;
        let engine = inv.tenant(&chosen);
        let tenant = Tenant {
            name: chosen,
            isolation: from_engine(engine.isolation),
            global: engine.global,
        };
        tenant.validate()?;
        let mut moved = current.object.clone();
        moved.tenant = Some(tenant.name.clone());
        moved.validate()?;

        let rev_of = |name: &str| {
            tenants
                .iter()
                .find(|t| t.object.name == name)
                .map(|t| t.mod_revision)
        };
        let ns_key = object_key(ObjectKind::Namespace, namespace);
        let tenant_key = object_key(ObjectKind::Tenant, &tenant.name);
        let mut txn = Txn::new()
            .when(Compare::ModRevision(ns_key.clone(), current.mod_revision))
            .when(same_as_read(&tenant_key, rev_of(&tenant.name)));
        if old_name != tenant.name {
            // The mode comes from the tenant being left: it must not change meanwhile.
            txn = txn.when(same_as_read(
                &object_key(ObjectKind::Tenant, &old_name),
                rev_of(&old_name),
            ));
        }
        let txn = txn
            .put(
                &tenant_key,
                encode(ObjectKind::Tenant, &tenant.name, &tenant)?,
            )
            .put(&ns_key, encode(ObjectKind::Namespace, namespace, &moved)?);
        self.commit_once(txn, ObjectKind::Namespace, namespace)
            .await?;
        tracing::info!(namespace, from = %old_name, tenant = %tenant.name, global, "namespace moved to a tenant of its own");
        Ok(TenantChange {
            namespace: moved,
            tenant,
        })
    }

    /// The tenant called `name` (absent: [`DEFAULT_TENANT`]) as its object says, or the default
    /// mode when there is none; with the object's revision.
    async fn effective_tenant(&self, name: Option<&str>) -> Result<(Tenant, Option<u64>)> {
        let name = name.unwrap_or(DEFAULT_TENANT);
        Ok(match self.read::<Tenant>(ObjectKind::Tenant, name).await? {
            Some(Stored {
                object,
                mod_revision,
            }) => (object, Some(mod_revision)),
            None => (Tenant::named(name), None),
        })
    }
}
