//! `seam apply -f FILE`.

use std::time::Duration;

use anyhow::Context;
use seam_firewall::explain;
use seam_model::manifest;

use crate::cli::Target;
use crate::commands::{read_input, realization};
use crate::controller::{block_on, client};

/// `seam apply -f FILE`: validate every document, then write them all in one transaction on the
/// controller (all applied or none). With `wait` (`--wait --timeout`), return once every node
/// enforces what was applied, or fail after the timeout naming the nodes behind.
pub(crate) fn run(file: &str, wait: Option<Duration>, target: &Target) -> anyhow::Result<()> {
    let text = read_input(file)?;
    let objects =
        manifest::parse_manifests(&text).with_context(|| format!("{file}: nothing applied"))?;
    let request =
        manifest::apply_request(&objects).with_context(|| format!("{file}: nothing applied"))?;
    let client = client(target)?;
    block_on(async {
        let applied = client.apply(&request.objects).await.map_err(|e| {
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
        let Some(timeout) = wait else {
            return Ok(());
        };
        let enforced = realization::enforced_objects(&applied.objects);
        if enforced.is_empty() {
            return Ok(());
        }
        let revision = applied.revision.context(
            "the controller's answer has no revision (it predates realization status): cannot --wait",
        )?;
        realization::wait(&client, &enforced, revision, timeout).await?;
        println!(
            "realized on every node: {}",
            enforced
                .iter()
                .map(|(what, _)| what.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(())
    })
}
