//! The one way a command reaches the controller: which endpoint (`--controller`, else the
//! lab's), the seam-client built for it, and the small runtime its calls run on. A client error
//! reaches the user as its own message (`seam: GET /v1/nodes on unix:…: …`), with the command's
//! context added where the command has some to add.

use std::future::Future;

use anyhow::Context;
use seam_client::ControllerClient;
use seam_lab::Lab;

use crate::cli::Target;

/// The client for `target`: its `--controller`, else the controller of lab `--lab`.
pub(crate) fn client(target: &Target) -> anyhow::Result<ControllerClient> {
    let endpoint = match &target.controller {
        Some(c) => c.clone(),
        None => {
            Lab::load(&target.lab)
                .with_context(|| {
                    format!(
                        "find the controller of lab {:?} (or pass --controller)",
                        target.lab
                    )
                })?
                .controller
        }
    };
    Ok(ControllerClient::new(&endpoint)?)
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
