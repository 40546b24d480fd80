//! `seam apply -f FILE`.

use anyhow::Context;
use seam_firewall::explain;
use seam_model::manifest;

use crate::cli::Target;
use crate::commands::read_input;
use crate::controller::{block_on, client};

/// `seam apply -f FILE`: validate every document, then write them all in one transaction on the
/// controller (all applied or none).
pub(crate) fn run(file: &str, target: &Target) -> anyhow::Result<()> {
    let text = read_input(file)?;
    let objects =
        manifest::parse_manifests(&text).with_context(|| format!("{file}: nothing applied"))?;
    let request =
        manifest::apply_request(&objects).with_context(|| format!("{file}: nothing applied"))?;
    let client = client(target)?;
    block_on(async {
        client.apply(&request.objects).await.map_err(|e| {
            // A controller older than the route answers every unknown path with this.
            let hint = if e.is_not_found() && e.to_string().ends_with("no such route") {
                " (the controller predates POST /v1/apply: upgrade it)"
            } else {
                ""
            };
            anyhow::Error::new(e).context(format!("apply {file}: nothing applied{hint}"))
        })?;
        for object in &objects {
            println!("{} applied", object.describe());
        }
        // Warn about what the whole set says (groups no EndpointGroup defines).
        let snapshot = client.snapshot().await?;
        for w in explain::policy_set(&snapshot).1 {
            eprintln!("warning: {w}");
        }
        Ok(())
    })
}
