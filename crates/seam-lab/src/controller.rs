//! The lab's calls to its controller, through seam-client: the local admin's client of a lab
//! ([`Lab::client`], the Unix socket), the clients over TLS on the underlay with the lab's
//! users' certificates ([`Lab::tls_client`], [`Lab::admin_client`]), and which replica leads. The lab is synchronous (tests and the
//! CLI call it from plain threads), so each call runs to completion on a small current-thread
//! runtime of its own.

use std::future::Future;
use std::time::Duration;

use seam_client::{ClientTls, ControllerClient};

use crate::error::{LabError, Result};
use crate::pki::LabUser;
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
    /// A client for the lab's controller (every replica, as `seamd --controller` is given them)
    /// through its Unix socket: the local admin (root on this machine), as the lab itself and the
    /// tests use it. Reachable from any namespace of this machine.
    pub fn client(&self) -> Result<ControllerClient> {
        Ok(ControllerClient::new(&self.controller)?)
    }

    /// A client for the lab's API over TLS on the underlay ([`Lab::api`]) presenting `user`'s
    /// certificate from the lab's directory. The API is on the lab's underlay: connect from one
    /// of the lab's namespaces ([`Lab::in_underlay`], [`Lab::tls_call`], [`Lab::enter_underlay`]).
    pub fn tls_client(&self, user: LabUser) -> Result<ControllerClient> {
        let pki = match &self.pki {
            Some(pki) if !self.api.is_empty() => pki,
            _ => {
                return Err(LabError::Invalid(format!(
                    "lab {} has no API over TLS (one-process mode, or made by an older seam): \
                     use its Unix socket {}",
                    self.name, self.controller
                )))
            }
        };
        let (cert, key) = pki.user(user);
        let tls = ClientTls::from_files(&pki.ca_cert, Some((&cert, &key)))?;
        Ok(ControllerClient::new(&self.api)?.with_tls(tls))
    }

    /// [`Lab::tls_client`] as the lab's admin (`lab-admin`, `seam:admins`): what the CLI uses.
    pub fn admin_client(&self) -> Result<ControllerClient> {
        self.tls_client(LabUser::Admin)
    }

    /// Runs `f` on a thread of its own inside the lab's underlay namespace, where the API over
    /// TLS is reachable (the calling thread stays where it is).
    pub fn in_underlay<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = seam_linux::netns::path_of(&self.underlay_netns);
        Ok(seam_linux::netns::run_in(&path, f)?)
    }

    /// Moves the calling thread into the lab's underlay namespace, for good: for a one-shot
    /// process such as the CLI, before it starts other threads (they inherit it).
    pub fn enter_underlay(&self) -> Result<()> {
        Ok(seam_linux::netns::enter(&seam_linux::netns::path_of(
            &self.underlay_netns,
        ))?)
    }

    /// One exchange with the API over TLS as `user`, from the lab's underlay namespace.
    pub fn tls_call<T, F, Fut>(&self, user: LabUser, call: F) -> Result<T>
    where
        T: Send,
        F: FnOnce(ControllerClient) -> Fut + Send,
        Fut: Future<Output = std::result::Result<T, seam_client::ClientError>>,
    {
        self.in_underlay(|| block_on(call(self.tls_client(user)?)))?
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
