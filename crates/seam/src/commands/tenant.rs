//! `seam tenant join|isolate|make-global`: prints where the namespace is now.

use crate::cli::TenantCmd;
use crate::controller::{block_on, client};

pub(crate) fn run(command: TenantCmd) -> anyhow::Result<()> {
    let target = match &command {
        TenantCmd::Join { target, .. }
        | TenantCmd::Isolate { target, .. }
        | TenantCmd::MakeGlobal { target, .. } => target,
    };
    let client = client(target)?;
    let change = block_on(async {
        Ok(match &command {
            TenantCmd::Join {
                namespace, into, ..
            } => client.join_tenant(namespace, into).await?,
            TenantCmd::Isolate { namespace, .. } => client.isolate_namespace(namespace).await?,
            TenantCmd::MakeGlobal { namespace, .. } => {
                client.make_namespace_global(namespace).await?
            }
        })
    })?;
    let t = &change.tenant;
    println!(
        "Namespace {} is in tenant {} (isolation {}{})",
        change.namespace.name,
        t.name,
        t.isolation.as_str(),
        if t.global { ", global" } else { "" }
    );
    Ok(())
}
