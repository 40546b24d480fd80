//! The node's certificate: joining with a bootstrap token, and renewal before it expires.
//!
//! The node's key and certificate live in the certificate directory (`seamd --cert-dir`) as
//! `node.key` and `node.crt`, both mode 0600 and replaced atomically (a temporary file and a
//! rename, key first). At start ([`NodePki::ensure`]) a valid certificate there is used;
//! otherwise the agent joins with its token (`POST /v1/join`, without a client certificate) and
//! writes the files. [`NodePki::run_renewal`] asks for a new certificate for a new key when 2/3
//! of the current one's lifetime has passed (`POST /v1/renew`, with the current certificate);
//! the agent's client reads the new files for its next connection, so nothing restarts.
//!
//! Time is passed in where a decision depends on it ([`renewal_time`], [`NodePki::ensure`]), so
//! a skewed clock is told apart from an expired certificate.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use seam_client::{ClientTls, ControllerClient};
use seam_model::{CallerRole, Identity};

use crate::error::NodeCertError;

/// The node certificate's file name in the certificate directory.
pub const CERT_FILE: &str = "node.crt";
/// The node key's file name in the certificate directory.
pub const KEY_FILE: &str = "node.key";

/// The longest the renewal task sleeps before it looks at the certificate file again (another
/// process, or a join after a revocation, may have replaced it).
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// First pause after a failed renewal; doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(10);
/// Longest pause between failed renewals.
const MAX_RETRY: Duration = Duration::from_secs(300);

/// When a certificate valid from `not_before` to `not_after` is renewed: once 2/3 of its
/// lifetime has passed, leaving a third for retries while the controller is away.
pub fn renewal_time(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    not_before + lifetime * 2 / 3
}

/// How the agent got its certificate at start.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Obtained {
    /// A valid certificate was already in the directory.
    Existing,
    /// The node joined with its token and got a certificate of this epoch.
    Joined {
        /// The identity epoch of the new certificate.
        epoch: u64,
    },
}

/// Where the node's certificate lives and who it is for.
#[derive(Debug, Clone)]
pub struct NodePki {
    /// The node's name.
    pub node: String,
    /// The CA certificate (PEM) that verifies the controller.
    pub ca: PathBuf,
    /// The certificate directory.
    pub dir: PathBuf,
}

impl NodePki {
    /// The certificate file.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CERT_FILE)
    }

    /// The key file.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    /// TLS settings that verify the controller with the CA and present the node's certificate
    /// (re-read when renewed).
    pub fn client_tls(&self) -> Result<ClientTls, NodeCertError> {
        let (cert, key) = (self.cert_path(), self.key_path());
        ClientTls::from_files(&self.ca, Some((&cert, &key)))
            .map_err(|source| NodeCertError::Tls { source })
    }

    /// Makes sure the directory holds a valid certificate of this node: keeps one that is
    /// valid at `now`, else joins `endpoint` with `token`. A certificate that is not valid yet
    /// is a wrong clock (here or on the CA's side), reported as such rather than joined over.
    pub async fn ensure(
        &self,
        endpoint: &str,
        token: Option<&str>,
        now: SystemTime,
    ) -> Result<Obtained, NodeCertError> {
        let problem = match self.check_existing(now) {
            Ok(()) => match token {
                // With a token at hand, a certificate the controller no longer accepts (the
                // node was revoked) is replaced at once rather than failing every request.
                Some(_) => match self.refused_by(endpoint).await {
                    Some(refusal) => refusal,
                    None => return Ok(Obtained::Existing),
                },
                None => return Ok(Obtained::Existing),
            },
            Err(e @ NodeCertError::NotYetValid { .. }) => return Err(e),
            Err(e) => e,
        };
        let Some(token) = token else {
            return Err(match problem {
                NodeCertError::Missing { dir } => NodeCertError::NoToken { dir },
                other => other,
            });
        };
        tracing::info!(reason = %problem, "joining the cluster with the join token");
        self.join(endpoint, token, now).await
    }

    /// The controller's refusal of the certificate in the directory (revoked, unknown node),
    /// asked with a request every node may make; `None` when it is accepted or the controller
    /// cannot be asked now (the agent retries on its own).
    async fn refused_by(&self, endpoint: &str) -> Option<NodeCertError> {
        let client = ControllerClient::new(endpoint)
            .ok()?
            .with_tls(self.client_tls().ok()?);
        match client.leader().await {
            Err(source) if source.status() == Some(401) => Some(NodeCertError::Refused { source }),
            _ => None,
        }
    }

    /// Why the certificate in the directory cannot be used at `now` (missing, for another
    /// identity, not valid yet, expired), or `Ok`.
    pub fn check_existing(&self, now: SystemTime) -> Result<(), NodeCertError> {
        let cert_path = self.cert_path();
        if !cert_path.exists() || !self.key_path().exists() {
            return Err(NodeCertError::Missing {
                dir: self.dir.clone(),
            });
        }
        let pem = read_text(&cert_path)?;
        let pki = |source| NodeCertError::Pki {
            path: cert_path.clone(),
            source,
        };
        let identity = identity_in(&pem).map_err(pki)?;
        if identity.role != CallerRole::Node || identity.name != self.node {
            return Err(NodeCertError::OtherIdentity {
                path: cert_path,
                identity: identity.to_string(),
                node: self.node.clone(),
            });
        }
        let (not_before, not_after) = seam_pki::validity_of(&pem).map_err(pki)?;
        if now < not_before {
            return Err(NodeCertError::NotYetValid {
                path: cert_path,
                not_before: readable(not_before),
                now: readable(now),
            });
        }
        if now >= not_after {
            return Err(NodeCertError::Expired {
                path: cert_path,
                not_after: readable(not_after),
                now: readable(now),
            });
        }
        Ok(())
    }

    /// Joins with `token` (no client certificate: the token authenticates) and writes the new
    /// key and certificate.
    async fn join(
        &self,
        endpoint: &str,
        token: &str,
        now: SystemTime,
    ) -> Result<Obtained, NodeCertError> {
        let anonymous = ClientTls::from_files(&self.ca, None)
            .map_err(|source| NodeCertError::Tls { source })?;
        let client = ControllerClient::new(endpoint)
            .map_err(|source| NodeCertError::Join { source })?
            .with_tls(anonymous);
        let (csr, key) =
            seam_pki::new_csr(&Identity::node(self.node.clone(), 0)).map_err(|source| {
                NodeCertError::Pki {
                    path: self.key_path(),
                    source,
                }
            })?;
        let answer = client
            .join(token, &self.node, &csr)
            .await
            .map_err(|source| match source.is_invalid_token() {
                true => NodeCertError::TokenRejected { source },
                false => NodeCertError::Join { source },
            })?;
        let identity = identity_in(&answer.certificate).map_err(|source| NodeCertError::Pki {
            path: self.cert_path(),
            source,
        })?;
        self.save(&key, &answer.certificate)?;
        // The controller's clock decided the validity; ours should agree with it.
        if let Ok((not_before, _)) = seam_pki::validity_of(&answer.certificate) {
            if now < not_before {
                return Err(NodeCertError::NotYetValid {
                    path: self.cert_path(),
                    not_before: readable(not_before),
                    now: readable(now),
                });
            }
        }
        tracing::info!(node = %self.node, epoch = identity.epoch, dir = %self.dir.display(), "joined the cluster");
        Ok(Obtained::Joined {
            epoch: identity.epoch,
        })
    }

    /// Asks for a certificate for a new key with `client` (which presents the current one) and
    /// replaces the files.
    pub async fn renew_once(&self, client: &ControllerClient) -> Result<(), NodeCertError> {
        let (csr, key) =
            seam_pki::new_csr(&Identity::node(self.node.clone(), 0)).map_err(|source| {
                NodeCertError::Pki {
                    path: self.key_path(),
                    source,
                }
            })?;
        let answer = client
            .renew(&csr)
            .await
            .map_err(|source| NodeCertError::Renew { source })?;
        let identity = identity_in(&answer.certificate).map_err(|source| NodeCertError::Pki {
            path: self.cert_path(),
            source,
        })?;
        if identity.name != self.node {
            return Err(NodeCertError::OtherIdentity {
                path: self.cert_path(),
                identity: identity.to_string(),
                node: self.node.clone(),
            });
        }
        self.save(&key, &answer.certificate)?;
        tracing::info!(node = %self.node, epoch = identity.epoch, "node certificate renewed");
        Ok(())
    }

    /// Renews the certificate whenever 2/3 of its lifetime has passed, forever; failures are
    /// logged and retried with a growing pause (the certificate still has a third of its life).
    pub async fn run_renewal(self, client: ControllerClient) {
        let mut retry = FIRST_RETRY;
        loop {
            let due = read_text(&self.cert_path()).and_then(|pem| {
                seam_pki::validity_of(&pem).map_err(|source| NodeCertError::Pki {
                    path: self.cert_path(),
                    source,
                })
            });
            let (not_before, not_after) = match due {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the node certificate; looking again later");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(MAX_RETRY);
                    continue;
                }
            };
            let at = renewal_time(not_before, not_after);
            let now = SystemTime::now();
            if let Ok(wait) = at.duration_since(now) {
                if !wait.is_zero() {
                    tokio::time::sleep(wait.min(MAX_SLEEP)).await;
                    continue;
                }
            }
            match self.renew_once(&client).await {
                Ok(()) => retry = FIRST_RETRY,
                Err(e) => {
                    let expired = SystemTime::now() >= not_after;
                    if let NodeCertError::Renew { source } = &e {
                        if source.is_revoked() || expired {
                            tracing::error!(error = %e, "the node certificate cannot be renewed: this node must join again with a new token (seamd --join-token-file)");
                        }
                    }
                    tracing::warn!(error = %e, expired, retry_in = ?retry, "node certificate renewal failed");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
    }

    /// Writes the key, then the certificate, each atomically and mode 0600.
    fn save(&self, key_pem: &str, cert_pem: &str) -> Result<(), NodeCertError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| NodeCertError::Io {
            path: self.dir.clone(),
            source,
        })?;
        write_private(&self.key_path(), key_pem.as_bytes())?;
        write_private(&self.cert_path(), cert_pem.as_bytes())
    }
}

fn read_text(path: &Path) -> Result<String, NodeCertError> {
    std::fs::read_to_string(path).map_err(|source| NodeCertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The identity of the first certificate of a PEM text.
fn identity_in(pem: &str) -> Result<Identity, seam_pki::PkiError> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
        seam_pki::PkiError::Parse {
            what: "certificate".to_string(),
            reason: e.to_string(),
        }
    })?;
    seam_pki::identity_of(der.as_ref())
}

/// A time as people read it in an error (RFC 3339, UTC, whole seconds).
fn readable(t: SystemTime) -> String {
    match jiff::Timestamp::try_from(t) {
        Ok(ts) => ts
            .round(jiff::Unit::Second)
            .map_or_else(|_| ts.to_string(), |r| r.to_string()),
        Err(_) => format!("{t:?}"),
    }
}

/// Writes `data` through a temporary file (mode 0600) in the same directory and a rename, so
/// the client re-reading the files never sees half of one.
fn write_private(path: &Path, data: &[u8]) -> Result<(), NodeCertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| NodeCertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    // A stale temporary file would keep its old mode: start from none.
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io)
}

#[cfg(test)]
mod tests;
