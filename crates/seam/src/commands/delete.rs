//! `seam delete KIND NAME [-n NS]`.

use anyhow::Context;
use seam_model::manifest;

use crate::cli::Target;
use crate::controller::{block_on, client};

/// `seam delete KIND NAME [-n NS]`.
pub(crate) fn run(
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    target: &Target,
) -> anyhow::Result<()> {
    if crate::commands::services::delete(kind, name, namespace, target)? {
        return Ok(());
    }
    let client = client(target)?;
    if matches!(kind, "namespace" | "namespaces" | "ns") {
        anyhow::ensure!(namespace.is_none(), "a namespace is not in a namespace");
        block_on(async { Ok(client.delete_namespace(name).await?) })?;
        println!("Namespace {name} deleted");
        return Ok(());
    }
    if matches!(kind, "tenant" | "tenants") {
        anyhow::ensure!(namespace.is_none(), "a tenant is not in a namespace");
        block_on(async { Ok(client.delete_tenant(name).await?) })?;
        println!("Tenant {name} deleted");
        return Ok(());
    }
    let k = manifest::policy_kind_by_name(kind).with_context(|| {
        format!("unknown kind {kind:?}: use a policy kind (networkpolicy, adminnetworkpolicy, baselineadminnetworkpolicy, endpointgroup, contract), namespace, tenant, service, endpointslice or addresspool")
    })?;
    match (manifest::is_namespaced(k), namespace) {
        (true, None) => anyhow::bail!("{k} is namespaced: give its namespace with -n"),
        (false, Some(_)) => anyhow::bail!("{k} is cluster-scoped: drop -n"),
        _ => {}
    }
    block_on(async { Ok(client.delete_policy(k.as_str(), namespace, name).await?) })?;
    match namespace {
        Some(ns) => println!("{k} {ns}/{name} deleted"),
        None => println!("{k} {name} deleted"),
    }
    Ok(())
}
