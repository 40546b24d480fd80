//! `seam node token create` and `seam node revoke`: node identities.

use std::time::Duration;

use anyhow::Context;

use crate::cli::{NodeCmd, NodeTokenCmd};
use crate::controller::{block_on, client};

pub(crate) fn run(command: NodeCmd) -> anyhow::Result<()> {
    match command {
        NodeCmd::Token {
            command:
                NodeTokenCmd::Create {
                    ttl_secs,
                    node,
                    target,
                },
        } => {
            let client = client(&target)?;
            let token = block_on(async {
                client
                    .create_join_token(Duration::from_secs(ttl_secs), node.as_deref())
                    .await
                    .context("create a join token")
            })?;
            // The token alone on stdout, so scripts can capture it; the rest on stderr.
            println!("{}", token.token);
            match node {
                Some(node) => eprintln!(
                    "join token for node {node}, valid until {}",
                    token.expires_at
                ),
                None => eprintln!("join token valid until {}", token.expires_at),
            }
        }
        NodeCmd::Revoke { name, target } => {
            let client = client(&target)?;
            let identity = block_on(async {
                client
                    .revoke(&name)
                    .await
                    .with_context(|| format!("revoke node {name}"))
            })?;
            println!(
                "node {} revoked (identity epoch {}): its certificates are refused until it joins again with a new token",
                identity.node, identity.epoch
            );
        }
    }
    Ok(())
}
