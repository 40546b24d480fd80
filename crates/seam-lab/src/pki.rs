//! The lab's PKI, all of it under `<lab dir>/pki/`: the lab's CA (made by `up`, its key kept
//! for the controller, which signs the nodes' certificates when they join), the controller's
//! serving certificate (every replica's underlay address, 127.0.0.1 and `localhost`), and the
//! client certificates of the lab's users: an admin (the CLI), a reader and the adapter. Nodes
//! get theirs by joining with a one-time token, as on a real cluster; the lab only hands them the
//! token. Keys are written with mode 0600 (seam-pki does that).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use seam_model::identity::{Identity, Role};

use crate::error::Result;
use crate::state::io_err;

/// The CA outlives any lab (a lab lives minutes to days).
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The controller's and the users' certificates: a year, longer than any lab lives.
const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

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
pub struct LabPki {
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

impl LabPki {
    /// The paths under `dir` (nothing is read or written).
    pub fn at(dir: &Path) -> LabPki {
        LabPki {
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

/// The lab's CA, generated once per lab.
pub(crate) fn load_ca(pki: &LabPki) -> Result<seam_pki::Ca> {
    Ok(seam_pki::Ca::load(&pki.ca_cert, &pki.ca_key)?)
}

/// Creates the lab's CA under `lab_dir/pki` (once; an existing CA is kept) and issues the
/// controller's serving certificate for `controller_ips` (plus 127.0.0.1 and `localhost`) and
/// the users' certificates.
pub(crate) fn create(
    lab_dir: &Path,
    lab_name: &str,
    controller_ips: &[Ipv4Addr],
) -> Result<LabPki> {
    let pki = LabPki::at(&lab_dir.join("pki"));
    std::fs::create_dir_all(&pki.dir).map_err(io_err(&pki.dir))?;
    let ca = if pki.ca_cert.exists() && pki.ca_key.exists() {
        load_ca(&pki)?
    } else {
        let ca = seam_pki::Ca::generate(&format!("seam lab {lab_name} CA"), CA_VALIDITY)?;
        ca.save(&pki.ca_cert, &pki.ca_key)?;
        ca
    };
    issue_controller(&ca, &pki, controller_ips)?;
    for user in LabUser::ALL {
        let (cert, key) = pki.user(user);
        ca.issue_client(&user.identity(), CERT_VALIDITY)?
            .save(&cert, &key)?;
    }
    Ok(pki)
}

/// (Re)issues the controller's serving certificate for `controller_ips`, 127.0.0.1 and
/// `localhost`: a running controller picks up the new files within seconds (it re-reads them).
pub(crate) fn issue_controller(
    ca: &seam_pki::Ca,
    pki: &LabPki,
    controller_ips: &[Ipv4Addr],
) -> Result<()> {
    let mut ips: Vec<IpAddr> = controller_ips.iter().copied().map(IpAddr::V4).collect();
    ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let dns = vec!["localhost".to_string()];
    ca.issue_server("seam-controller", &dns, &ips, CERT_VALIDITY)?
        .save(&pki.controller_cert, &pki.controller_key)?;
    Ok(())
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
        pki: &LabPki,
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
        let pki = create(dir.path(), "t", &replicas).unwrap();
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
    fn a_second_create_keeps_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = create(dir.path(), "t", &[Ipv4Addr::new(198, 18, 0, 1)]).unwrap();
        let ca = std::fs::read(&first.ca_cert).unwrap();
        let second = create(dir.path(), "t", &[Ipv4Addr::new(198, 18, 0, 1)]).unwrap();
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
