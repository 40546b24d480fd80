//! The one way a command reaches the controller: which endpoint (`--controller`, else the
//! lab's), who the command is to it (`--ca`, `--cert`, `--key` for an https:// endpoint; the
//! lab's admin certificate by default), the seam-client built for it, and the small runtime its
//! calls run on. A client error reaches the user as its own message (`seam: GET /v1/nodes on
//! https://…: …`), with the command's context added where the command has some to add.

use std::future::Future;
use std::path::Path;

use anyhow::Context;
use seam_client::{ClientTls, ControllerClient};
use seam_lab::{Lab, LabUser};

use crate::cli::Target;

/// The client for `target`: its `--controller`, else the API of lab `--lab` over TLS on the
/// lab's underlay (the CLI moves into the lab's underlay namespace for that, as a machine on the
/// underlay would be), else (one-process mode, or a lab made by an older seam) the lab's Unix
/// socket.
pub(crate) fn client(target: &Target) -> anyhow::Result<ControllerClient> {
    let cert = target.cert.as_deref().zip(target.key.as_deref());
    let Some(endpoint) = &target.controller else {
        return lab_client(target, cert);
    };
    let client = ControllerClient::new(endpoint)?;
    if !endpoint
        .split(',')
        .any(|e| e.trim().starts_with("https://"))
    {
        return Ok(client);
    }
    let ca = target.ca.as_deref().context(
        "an https:// controller needs --ca (or SEAM_CA): the CA that signed its certificate",
    )?;
    Ok(client.with_tls(ClientTls::from_files(ca, cert)?))
}

fn lab_client(target: &Target, cert: Option<(&Path, &Path)>) -> anyhow::Result<ControllerClient> {
    let lab = Lab::load(&target.lab).with_context(|| {
        format!(
            "find the controller of lab {:?} (or pass --controller)",
            target.lab
        )
    })?;
    let Some(pki) = lab.pki.as_ref().filter(|_| !lab.api.is_empty()) else {
        return Ok(ControllerClient::new(&lab.controller)?);
    };
    // The API is on the lab's underlay. The CLI is one short process that has started no
    // threads yet: the runtime and its connections start inside the namespace.
    lab.enter_underlay()
        .with_context(|| format!("enter lab {}'s underlay namespace", lab.name))?;
    let (admin_cert, admin_key) = pki.user(LabUser::Admin);
    let ca = target.ca.as_deref().unwrap_or(&pki.ca_cert);
    let cert = cert.unwrap_or((&admin_cert, &admin_key));
    Ok(ControllerClient::new(&lab.api)?.with_tls(ClientTls::from_files(ca, Some(cert))?))
}

/// Runs a command's exchange with the controller to completion. The CLI is synchronous; one
/// current-thread runtime per exchange is all a one-shot command needs.
pub(crate) fn block_on<T>(fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?
        .block_on(fut)
}
