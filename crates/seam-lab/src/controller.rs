//! The lab's calls to its controller, through seam-client: the one client of a lab
//! ([`Lab::client`]) and which replica leads. The lab is synchronous (tests and the
//! CLI call it from plain threads), so each call runs to completion on a small current-thread
//! runtime of its own.

use std::future::Future;
use std::time::Duration;

use seam_client::ControllerClient;

use crate::error::{LabError, Result};
use crate::process::wait_for;
use crate::state::Lab;

/// Runs one exchange with a controller to completion.
pub(crate) fn block_on<T>(
    fut: impl Future<Output = std::result::Result<T, seam_client::ClientError>>,
) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LabError::Runtime)?;
    Ok(rt.block_on(fut)?)
}

impl Lab {
    /// A client for the lab's controller (every replica, as `seamd --controller` is given them).
    pub fn client(&self) -> Result<ControllerClient> {
        Ok(ControllerClient::new(&self.controller)?)
    }

    /// What replica `index` says it is (`leader`, `standby`, `single`), or `None` when it does
    /// not answer `GET /v1/leader` with success within 2 s.
    pub fn replica_role(&self, index: usize) -> Option<String> {
        let replica = self.replicas.get(index)?;
        // Only this replica: a client given one endpoint never moves on to another.
        let client = ControllerClient::new(&replica.endpoint)
            .ok()?
            .with_timeout(Duration::from_secs(2));
        block_on(client.leader()).ok().map(|info| info.role)
    }

    /// The index of the replica that leads now, if exactly one says so.
    pub fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..self.replicas.len())
            .filter(|&i| {
                self.replicas[i].pid != 0
                    && matches!(self.replica_role(i).as_deref(), Some("leader" | "single"))
            })
            .collect();
        match leaders[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    /// Waits until exactly one replica leads and returns its index.
    pub fn wait_for_leader(&self, timeout: Duration) -> Result<usize> {
        let mut found = None;
        wait_for(
            &format!(
                "a controller leader (logs: {})",
                self.replicas
                    .iter()
                    .map(|r| r.log.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            timeout,
            || {
                found = self.leader();
                found.is_some()
            },
        )?;
        found.ok_or_else(|| LabError::Timeout("a controller leader".into()))
    }
}
