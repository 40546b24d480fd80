//! A certificate and key served from files and re-read on demand ([`ReloadingCert`]), so a
//! rotated certificate is used without a restart.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::files::read;
use crate::tls::provider;
#[cfg(doc)]
use crate::validity_of;
use crate::{parse_err, Result};

/// The file contents a [`ReloadingCert`] last loaded and what rustls made of them.
struct Loaded {
    cert_file: Vec<u8>,
    key_file: Vec<u8>,
    key: Arc<CertifiedKey>,
}

/// A certificate + key read from two files, re-read by `reload()` (rotation without restart).
/// Implements rustls `ResolvesServerCert` and `ResolvesClientCert`.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Loaded>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

fn load_pair(cert_path: &Path, key_path: &Path) -> Result<Loaded> {
    let cert_file = read(cert_path)?;
    let key_file = read(key_path)?;
    let key = certified_key(&cert_file, &key_file, cert_path, key_path)?;
    Ok(Loaded {
        cert_file,
        key_file,
        key,
    })
}

fn certified_key(
    cert_file: &[u8],
    key_file: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_slice_iter(cert_file)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| parse_err(cert_path.display().to_string(), e))?;
    if chain.is_empty() {
        return Err(parse_err(
            cert_path.display().to_string(),
            "no certificate in the file",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_file)
        .map_err(|e| parse_err(key_path.display().to_string(), e))?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        parse_err(
            format!("{} with {}", cert_path.display(), key_path.display()),
            e,
        )
    })?;
    Ok(Arc::new(certified))
}

impl ReloadingCert {
    /// Reads the certificate (chain, PEM) and its key (PEM).
    pub fn from_files(cert: &Path, key: &Path) -> Result<Arc<ReloadingCert>> {
        let loaded = load_pair(cert, key)?;
        Ok(Arc::new(ReloadingCert {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            current: RwLock::new(loaded),
        }))
    }

    /// Re-reads both files; `true` when they changed and the new pair is now served. A pair
    /// that does not load (a half-written rotation, a key of another certificate) is an error
    /// and the previous pair stays in use.
    pub fn reload(&self) -> Result<bool> {
        let cert_file = read(&self.cert_path)?;
        let key_file = read(&self.key_path)?;
        {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            if current.cert_file == cert_file && current.key_file == key_file {
                return Ok(false);
            }
        }
        let key = certified_key(&cert_file, &key_file, &self.cert_path, &self.key_path)?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = Loaded {
            cert_file,
            key_file,
            key,
        };
        Ok(true)
    }

    /// The certificate in use (PEM), e.g. for [`validity_of`].
    pub fn cert_pem(&self) -> String {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&current.cert_file).into_owned()
    }

    fn key(&self) -> Arc<CertifiedKey> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }
}

impl ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
