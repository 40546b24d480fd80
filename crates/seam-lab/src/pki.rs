//! The lab's PKI, its single home: one CA per lab in `<lab dir>/pki/` (`ca.crt`, `ca.key`),
//! created by the first [`LabPki::open`] and loaded by every later one (a restarted process, a
//! test reading the lab back), and the certificates it issues, each as `<name>.crt` and
//! `<name>.key` (mode 0600) next to it.
//!
//! Issued: `etcd-<member>` (each etcd member's serving and peer certificate, for its underlay
//! IP) and [`ETCD_CLIENT`] (what the controller replicas present to etcd); `controller` (the
//! controller's serving certificate: every replica's underlay address, 127.0.0.1 and
//! `localhost`; the controller also gets the CA key, to sign the nodes' certificates when they
//! join); and the client certificates of the lab's users ([`LabUser`]: `admin` for the CLI,
//! `reader`, `adapter`). Nodes get theirs by joining with a one-time token, as on a real
//! cluster; the lab only hands them the token ([`write_secret`]). Where all of it is, is kept in
//! `lab.json` ([`PkiPaths`]).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use seam_model::identity::{Identity, Role};
use seam_pki::Ca;

use crate::error::Result;
use crate::state::io_err;

/// How long the lab CA and its certificates are valid: far longer than a lab lives.
const VALIDITY: Duration = Duration::from_secs(365 * 86_400);

/// The name of the client certificate the controller replicas present to etcd. It is issued
/// as a `seam:controllers` certificate (like a serving one), which names no API role: the same
/// CA may verify the controller's API clients, and this certificate must not pass for one.
pub const ETCD_CLIENT: &str = "etcd-client";

/// The controller replicas' API port on the underlay.
pub const API_PORT: u16 = 7440;

/// A user of the lab with a client certificate of its own in `<lab dir>/pki/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabUser {
    /// `lab-admin` in `seam:admins`: what the CLI uses.
    Admin,
    /// `lab-reader` in `seam:readers`: may read and explain, nothing else.
    Reader,
    /// `lab-adapter` in `seam:adapter`: what the Kubernetes adapter would use.
    Adapter,
}

impl LabUser {
    /// Every user the lab issues a certificate for.
    pub const ALL: [LabUser; 3] = [LabUser::Admin, LabUser::Reader, LabUser::Adapter];

    /// The file stem of its certificate and key (`admin.crt`, `admin.key`).
    pub fn stem(self) -> &'static str {
        match self {
            LabUser::Admin => "admin",
            LabUser::Reader => "reader",
            LabUser::Adapter => "adapter",
        }
    }

    /// The identity its certificate carries.
    pub fn identity(self) -> Identity {
        match self {
            LabUser::Admin => Identity::of(Role::Admin, "lab-admin"),
            LabUser::Reader => Identity::of(Role::Reader, "lab-reader"),
            LabUser::Adapter => Identity::of(Role::Adapter, "lab-adapter"),
        }
    }
}

/// Where a lab's PKI files are (kept in `lab.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PkiPaths {
    /// `<lab dir>/pki`.
    pub dir: PathBuf,
    /// The lab's CA certificate (what every client and the controller verify against).
    pub ca_cert: PathBuf,
    /// The lab's CA key (given to the controller: it signs nodes' certificates at join).
    pub ca_key: PathBuf,
    /// The controller's serving certificate.
    pub controller_cert: PathBuf,
    /// Its key.
    pub controller_key: PathBuf,
}

impl PkiPaths {
    /// The paths under `dir` (nothing is read or written).
    pub fn at(dir: &Path) -> PkiPaths {
        PkiPaths {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            controller_cert: dir.join("controller.crt"),
            controller_key: dir.join("controller.key"),
        }
    }

    /// `user`'s certificate and key.
    pub fn user(&self, user: LabUser) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{}.crt", user.stem())),
            self.dir.join(format!("{}.key", user.stem())),
        )
    }
}

/// A certificate and its key, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub key: PathBuf,
}

/// The lab CA, with the directory its files live in.
#[derive(Debug)]
pub struct LabPki {
    dir: PathBuf,
    ca: Ca,
}

/// The lab's PKI directory (`<lab dir>/pki`).
pub fn pki_dir(lab_dir: &Path) -> PathBuf {
    lab_dir.join("pki")
}

/// Where certificate `name` of the lab in `lab_dir` is (issued or not).
pub fn cert_files(lab_dir: &Path, name: &str) -> CertFiles {
    files_in(&pki_dir(lab_dir), name)
}

fn files_in(dir: &Path, name: &str) -> CertFiles {
    CertFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    }
}

/// The lab CA's certificate, what every party of the lab trusts.
pub fn ca_cert(lab_dir: &Path) -> PathBuf {
    pki_dir(lab_dir).join("ca.crt")
}

impl LabPki {
    /// The CA of the lab in `lab_dir`: created (with `<lab dir>/pki/`) when there is none yet,
    /// loaded from `ca.crt` and `ca.key` otherwise.
    pub fn open(lab_dir: &Path) -> Result<LabPki> {
        let dir = pki_dir(lab_dir);
        let ca = files_in(&dir, "ca");
        let ca = if ca.cert.exists() && ca.key.exists() {
            Ca::load(&ca.cert, &ca.key)?
        } else {
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            let name = lab_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let new = Ca::generate(&format!("seam lab {name} CA"), VALIDITY)?;
            new.save(&ca.cert, &ca.key)?;
            new
        };
        Ok(LabPki { dir, ca })
    }

    /// The CA certificate's file.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The CA key's file (for a controller that signs nodes' certificates).
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// Issues (again, replacing the files) serving certificate `name` for these DNS names and
    /// IPs; it is usable as a client certificate too (etcd peers present theirs to each other).
    pub fn issue_server(&self, name: &str, dns: &[String], ips: &[IpAddr]) -> Result<CertFiles> {
        let files = files_in(&self.dir, name);
        self.ca
            .issue_server(name, dns, ips, VALIDITY)?
            .save(&files.cert, &files.key)?;
        Ok(files)
    }

    /// Issues (again, replacing the files) client certificate `name` for `identity`.
    pub fn issue_client(&self, name: &str, identity: &Identity) -> Result<CertFiles> {
        let files = files_in(&self.dir, name);
        self.ca
            .issue_client(identity, VALIDITY)?
            .save(&files.cert, &files.key)?;
        Ok(files)
    }
}

/// Issues the certificates of the lab's API (again, replacing the files): the controller's
/// serving certificate for `controller_ips`, 127.0.0.1 and `localhost` (a running controller
/// picks up new files within seconds), and the users' client certificates.
pub(crate) fn issue_api(pki: &LabPki, controller_ips: &[Ipv4Addr]) -> Result<PkiPaths> {
    let mut ips: Vec<IpAddr> = controller_ips.iter().copied().map(IpAddr::V4).collect();
    ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    pki.issue_server("controller", &["localhost".to_string()], &ips)?;
    for user in LabUser::ALL {
        pki.issue_client(user.stem(), &user.identity())?;
    }
    Ok(PkiPaths::at(&pki.dir))
}

/// Writes `token` to `path` with mode 0600 (a join token is a secret until it is spent).
pub(crate) fn write_secret(path: &Path, token: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(token.as_bytes()).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    use super::*;

    fn der(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(path).unwrap()
    }

    /// A TLS 1.3 handshake in memory: a client that trusts the lab's CA and dials `server_name`
    /// against a server with the controller's certificate.
    fn handshake(
        pki: &PkiPaths,
        server_name: ServerName<'static>,
    ) -> std::result::Result<(), String> {
        let ca = std::fs::read_to_string(&pki.ca_cert).unwrap();
        let cert =
            seam_pki::ReloadingCert::from_files(&pki.controller_cert, &pki.controller_key).unwrap();
        let server = seam_pki::server_config(&ca, cert).unwrap();
        let client = seam_pki::client_config(&ca, None).unwrap();
        let mut c = rustls::ClientConnection::new(client, server_name).unwrap();
        let mut s = rustls::ServerConnection::new(server).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).map_err(|e| e.to_string())?;
            s.read_tls(&mut &buf[..]).map_err(|e| e.to_string())?;
            s.process_new_packets().map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            s.write_tls(&mut buf).map_err(|e| e.to_string())?;
            c.read_tls(&mut &buf[..]).map_err(|e| e.to_string())?;
            c.process_new_packets().map_err(|e| e.to_string())?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        Err("handshake did not finish".into())
    }

    #[test]
    fn up_makes_the_ca_the_controllers_and_the_users_certificates_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let replicas = [Ipv4Addr::new(198, 18, 0, 5), Ipv4Addr::new(198, 18, 0, 6)];
        let pki = issue_api(&LabPki::open(dir.path()).unwrap(), &replicas).unwrap();
        assert_eq!(pki.dir, dir.path().join("pki"));
        for user in LabUser::ALL {
            let (cert, key) = pki.user(user);
            assert_eq!(seam_pki::identity_of(&der(&cert)).unwrap(), user.identity());
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", key.display());
        }
        for key in [&pki.ca_key, &pki.controller_key] {
            let mode = std::fs::metadata(key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", key.display());
        }
        // The controller's certificate serves every replica's address and the loopback, and
        // nothing else.
        for ip in ["198.18.0.5", "198.18.0.6", "127.0.0.1"] {
            let name = ServerName::try_from(ip.to_string()).unwrap();
            handshake(&pki, name).unwrap_or_else(|e| panic!("{ip}: {e}"));
        }
        handshake(&pki, ServerName::try_from("localhost").unwrap()).unwrap();
        let other = ServerName::try_from("198.18.0.7".to_string()).unwrap();
        assert!(handshake(&pki, other).is_err());
    }

    #[test]
    fn a_second_opening_keeps_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let api = [Ipv4Addr::new(198, 18, 0, 1)];
        let first = issue_api(&LabPki::open(dir.path()).unwrap(), &api).unwrap();
        let ca = std::fs::read(&first.ca_cert).unwrap();
        let second = issue_api(&LabPki::open(dir.path()).unwrap(), &api).unwrap();
        assert_eq!(std::fs::read(&second.ca_cert).unwrap(), ca);
    }

    #[test]
    fn a_token_file_is_private_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("join-token");
        write_secret(&path, "abcdef.0123456789abcdef").unwrap();
        write_secret(&path, "ghijkl.0123456789abcdef").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "ghijkl.0123456789abcdef"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
