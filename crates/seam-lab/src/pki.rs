//! The lab's PKI, its single home: one CA per lab in `<lab dir>/pki/` (`ca.crt`, `ca.key`),
//! created by the first [`LabPki::open`] and loaded by every later one (a restarted process, a
//! test reading the lab back), and the certificates it issues, each as `<name>.crt` and
//! `<name>.key` (mode 0600) next to it.
//!
//! Issued so far: `etcd-<member>` (each etcd member's serving and peer certificate, for its
//! underlay IP) and [`ETCD_CLIENT`] (what the controller replicas present to etcd).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use seam_model::identity::Identity;
use seam_pki::Ca;

use crate::error::Result;
use crate::state::io_err;

/// How long the lab CA and its certificates are valid: far longer than a lab lives.
const VALIDITY: Duration = Duration::from_secs(365 * 86_400);

/// The name of the client certificate the controller replicas present to etcd. It is issued
/// as a `seam:controllers` certificate (like a serving one), which names no API role: the same
/// CA may verify the controller's API clients, and this certificate must not pass for one.
pub const ETCD_CLIENT: &str = "etcd-client";

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
