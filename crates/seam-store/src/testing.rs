//! Test support (feature `testing`): real `etcd` processes on 127.0.0.1 with free ports and
//! temporary data directories, killed on drop (also when a test panics).
//!
//! The `etcd` binary comes from Debian's `etcd-server` package (`scripts/setup.sh` installs
//! it); `SEAM_ETCD_BIN` names another one. When it is missing, starting fails with
//! [`EtcdTestError::NotInstalled`], so tests that need etcd fail loudly instead of passing.
//!
//! [`EtcdCluster::start_tls`] runs the members with TLS for clients and peers and
//! `--client-cert-auth`, from certificates the test brings ([`TestTls`]).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Datastore, EtcdClientCert, EtcdConfig, EtcdStore, EtcdTls};

/// Why a test etcd could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdTestError {
    /// No etcd binary.
    #[error("etcd binary {bin:?} not found: install Debian package etcd-server (scripts/setup.sh does) or set SEAM_ETCD_BIN")]
    NotInstalled {
        /// The binary that was looked for.
        bin: String,
    },
    /// Creating the data directory, picking ports or spawning failed.
    #[error("cannot start etcd member {member}")]
    Io {
        /// The member's name.
        member: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The cluster did not answer in time.
    #[error("etcd cluster did not become healthy within {secs} s; last member log lines:\n{log}")]
    Unhealthy {
        /// How long was waited.
        secs: u64,
        /// The tail of the first member's log.
        log: String,
    },
}

/// Certificates for a TLS test cluster, all PEM.
#[derive(Debug, Clone)]
pub struct TestTls {
    /// The CA that signed every certificate below; members trust only it, for clients and peers.
    pub ca_pem: String,
    /// The members' certificate: serves clients and peers and is presented to peers, so it
    /// must name IP 127.0.0.1 and allow client use too.
    pub member_cert_pem: String,
    /// The members' key.
    pub member_key_pem: String,
    /// The client certificate [`EtcdCluster::config`] presents.
    pub client: EtcdClientCert,
}

/// The certificate files of a TLS test cluster (in its temporary directory).
#[derive(Debug)]
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    tls: TestTls,
}

struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A local etcd cluster of one or more members. Dropping it kills every member and removes
/// the data directories.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    tls: Option<TlsFiles>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCluster")
            .field("endpoints", &self.endpoints())
            .finish()
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn etcd_bin() -> String {
    std::env::var("SEAM_ETCD_BIN").unwrap_or_else(|_| "etcd".to_string())
}

impl EtcdCluster {
    /// Starts one member and waits until it serves.
    pub async fn start() -> Result<Self, EtcdTestError> {
        Self::start_members(1).await
    }

    /// Starts `count` members as one cluster and waits until it serves.
    pub async fn start_members(count: usize) -> Result<Self, EtcdTestError> {
        Self::start_inner(count, None).await
    }

    /// Starts `count` members that speak only TLS, to clients and to each other, and require
    /// client certificates signed by `tls.ca_pem` from both (`--client-cert-auth`,
    /// `--peer-client-cert-auth`). [`EtcdCluster::config`] then carries `tls.client`.
    pub async fn start_tls(count: usize, tls: TestTls) -> Result<Self, EtcdTestError> {
        Self::start_inner(count, Some(tls)).await
    }

    async fn start_inner(count: usize, tls: Option<TestTls>) -> Result<Self, EtcdTestError> {
        let io = |member: &str| {
            let member = member.to_string();
            move |source| EtcdTestError::Io { member, source }
        };
        let dir = tempfile::tempdir().map_err(io("-"))?;
        let tls = match tls {
            Some(tls) => {
                let files = TlsFiles {
                    ca: dir.path().join("ca.crt"),
                    cert: dir.path().join("member.crt"),
                    key: dir.path().join("member.key"),
                    tls,
                };
                std::fs::write(&files.ca, &files.tls.ca_pem).map_err(io("-"))?;
                std::fs::write(&files.cert, &files.tls.member_cert_pem).map_err(io("-"))?;
                std::fs::write(&files.key, &files.tls.member_key_pem).map_err(io("-"))?;
                Some(files)
            }
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut members = Vec::new();
        for i in 0..count {
            let name = format!("m{i}");
            members.push(Member {
                client_url: format!("{scheme}://127.0.0.1:{}", free_port().map_err(io(&name))?),
                peer_url: format!("{scheme}://127.0.0.1:{}", free_port().map_err(io(&name))?),
                data_dir: dir.path().join(&name),
                log: dir.path().join(format!("{name}.log")),
                name,
                child: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            tls,
            _dir: dir,
        };
        for i in 0..count {
            cluster.spawn(i)?;
        }
        cluster.wait_healthy(Duration::from_secs(20)).await?;
        Ok(cluster)
    }

    fn spawn(&mut self, index: usize) -> Result<(), EtcdTestError> {
        let initial_cluster = self.initial_cluster.clone();
        let Some(m) = self.members.get_mut(index) else {
            return Ok(());
        };
        let io = |source| EtcdTestError::Io {
            member: m.name.clone(),
            source,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .map_err(io)?;
        let bin = etcd_bin();
        let mut command = Command::new(&bin);
        if let Some(tls) = &self.tls {
            command
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--peer-client-cert-auth")
                .arg("--peer-trusted-ca-file")
                .arg(&tls.ca)
                .arg("--peer-cert-file")
                .arg(&tls.cert)
                .arg("--peer-key-file")
                .arg(&tls.key);
        }
        let child = command
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.data_dir)
            .args([
                "--listen-client-urls",
                &m.client_url,
                "--advertise-client-urls",
                &m.client_url,
                "--listen-peer-urls",
                &m.peer_url,
                "--initial-advertise-peer-urls",
                &m.peer_url,
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "seam-test",
                // Short elections, so a killed member's leadership moves within a second.
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::NotFound {
                    EtcdTestError::NotInstalled { bin: bin.clone() }
                } else {
                    io(source)
                }
            })?;
        m.child = Some(child);
        Ok(())
    }

    /// Every member's client URL (killed ones included).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// A connection config for the whole cluster with `namespace`.
    /// With TLS, it trusts the test CA and presents the test client certificate.
    pub fn config(&self, namespace: &str) -> EtcdConfig {
        let config = EtcdConfig::new(self.endpoints(), namespace);
        match &self.tls {
            Some(files) => config.with_tls(EtcdTls {
                ca_pem: files.tls.ca_pem.clone(),
                client: Some(files.tls.client.clone()),
            }),
            None => config,
        }
    }

    /// Kills member `index` (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members.get_mut(index).and_then(|m| m.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts a killed member on its old ports and data, and waits until the cluster serves.
    pub async fn restart(&mut self, index: usize) -> Result<(), EtcdTestError> {
        self.spawn(index)?;
        self.wait_healthy(Duration::from_secs(20)).await
    }

    /// Waits until a linearizable read through every live member succeeds.
    async fn wait_healthy(&self, within: Duration) -> Result<(), EtcdTestError> {
        let start = Instant::now();
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            loop {
                let mut config = self.config("");
                config.endpoints = vec![m.client_url.clone()];
                let ok = match EtcdStore::connect(config).await {
                    Ok(store) => store.revision().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    break;
                }
                if start.elapsed() > within {
                    let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    return Err(EtcdTestError::Unhealthy {
                        secs: within.as_secs(),
                        log: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
