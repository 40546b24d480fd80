//! Seam's certificates and mutual TLS.
//!
//! A small certificate authority ([`Ca`]) issues the controller's serving certificates and the
//! client certificates of nodes, the Kubernetes adapter and people, and signs the CSRs nodes send
//! when they join or renew. [`identity_of`] reads the [`Identity`] a verified client certificate
//! names (subject conventions in [`seam_model::identity`]). [`ReloadingCert`] holds a certificate
//! and key read from files and re-reads them on [`ReloadingCert::reload`], so a rotated
//! certificate is used for the next handshake without a restart. [`server_config`] and
//! [`client_config`] build rustls configurations that speak TLS 1.3 only.
//!
//! Keys are ECDSA P-256 (small, fast to generate, supported by every TLS 1.3 stack).

#![warn(missing_docs)]

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName as TlsName, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use seam_model::identity::Role;
use seam_model::identity::{parse_epoch_unit, CONTROLLERS_GROUP, EPOCH_PREFIX};
use seam_model::Identity;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What can go wrong with certificates, keys and TLS settings.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate, key or CSR could not be read.
    #[error("{what}: {reason}")]
    Parse {
        /// What was being read ("CA certificate", "CSR", a path).
        what: String,
        /// Why it could not be.
        reason: String,
    },
    /// A CSR whose self-signature does not verify: whoever sent it does not hold its key.
    #[error("the CSR's signature does not verify")]
    BadCsrSignature,
    /// A certificate whose subject names no Seam identity.
    #[error("certificate names no Seam identity: {0}")]
    NoIdentity(String),
    /// Issuing a certificate failed.
    #[error("could not issue a certificate: {0}")]
    Issue(String),
    /// The TLS settings could not be built.
    #[error("TLS settings: {0}")]
    Tls(String),
}

/// The result of this crate's operations.
pub type Result<T> = std::result::Result<T, PkiError>;

/// Certificates are valid from a little before they are issued, so a peer whose clock is a few
/// minutes behind the CA's accepts a certificate issued just now.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

fn parse_err(what: impl Into<String>, reason: impl fmt::Display) -> PkiError {
    PkiError::Parse {
        what: what.into(),
        reason: reason.to_string(),
    }
}

fn issue_err(e: rcgen::Error) -> PkiError {
    PkiError::Issue(e.to_string())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `data` to `path` through a temporary file in the same directory and a rename, so a
/// reader (another process's [`ReloadingCert`]) never sees half a file; `private` files are
/// created mode 0600.
fn write_atomic(path: &Path, data: &[u8], private: bool) -> Result<()> {
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let file_name = path
        .file_name()
        .ok_or_else(|| io(std::io::Error::other("not a file path")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = match dir {
        Some(d) => d.join(&tmp_name),
        None => PathBuf::from(&tmp_name),
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let result = (|| {
        let mut f = options.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Best effort: a leftover temporary file is harmless but untidy.
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io)
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

/// Random 16-byte serial number (positive: top bit clear), from the TLS provider's generator.
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|e| PkiError::Issue(format!("no randomness for a serial number: {e:?}")))?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The parameters every leaf certificate shares: validity from now (backdated a little) for
/// `validity`, a random serial, not a CA, signature key usage.
fn leaf_params(validity: Duration) -> Result<CertificateParams> {
    let now = SystemTime::now();
    let mut params = CertificateParams::default();
    params.not_before = to_offset(now.checked_sub(BACKDATE).unwrap_or(now));
    params.not_after = to_offset(now + validity);
    params.serial_number = Some(random_serial()?);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.distinguished_name = DistinguishedName::new();
    Ok(params)
}

/// Client-certificate parameters naming `identity` (the subject conventions of
/// [`seam_model::identity`]).
fn client_params(identity: &Identity, validity: Duration) -> Result<CertificateParams> {
    let mut params = leaf_params(validity)?;
    params
        .distinguished_name
        .push(DnType::OrganizationName, identity.role.group());
    if identity.role == Role::Node {
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, identity.epoch_unit());
        let dns = identity
            .name
            .clone()
            .try_into()
            .map_err(|e: rcgen::Error| PkiError::Issue(format!("node name as DNS SAN: {e}")))?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    params
        .distinguished_name
        .push(DnType::CommonName, identity.name.as_str());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

/// A certificate authority: its certificate and signing key.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    // Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed CA named `common_name`, valid for `validity`.
    pub fn generate(common_name: &str, validity: Duration) -> Result<Ca> {
        let key = KeyPair::generate().map_err(issue_err)?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.not_before = to_offset(now.checked_sub(BACKDATE).unwrap_or(now));
        params.not_after = to_offset(now + validity);
        params.serial_number = Some(random_serial()?);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.self_signed(&key).map_err(issue_err)?;
        let key_pem = key.serialize_pem();
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA whose certificate and key are in these PEM files.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Ca> {
        let cert_pem = String::from_utf8(read(cert_path)?)
            .map_err(|e| parse_err(cert_path.display().to_string(), e))?;
        let key_pem = String::from_utf8(read(key_path)?)
            .map_err(|e| parse_err(key_path.display().to_string(), e))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| parse_err(key_path.display().to_string(), e))?;
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| parse_err(cert_path.display().to_string(), e))?;
        // A key that does not belong to the certificate would sign certificates nobody accepts.
        let der = first_cert_der(&cert_pem, &cert_path.display().to_string())?;
        let (_, cert) = X509Certificate::from_der(der.as_ref())
            .map_err(|e| parse_err(cert_path.display().to_string(), e))?;
        if cert.public_key().raw != spki.as_slice() {
            return Err(parse_err(
                key_path.display().to_string(),
                format!("not the key of {}", cert_path.display()),
            ));
        }
        Ok(Ca {
            cert_pem,
            key_pem,
            issuer,
        })
    }

    /// Writes the certificate and the key (mode 0600).
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<()> {
        write_atomic(key_path, self.key_pem.as_bytes(), true)?;
        write_atomic(cert_path, self.cert_pem.as_bytes(), false)
    }

    /// The CA certificate (PEM), what peers trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Client cert + fresh key for an identity (node: CN+DNS SAN=name, OU epoch; others CN=name),
    /// O = role group.
    pub fn issue_client(&self, identity: &Identity, validity: Duration) -> Result<Issued> {
        let key = KeyPair::generate().map_err(issue_err)?;
        let cert = client_params(identity, validity)?
            .signed_by(&key, &self.issuer)
            .map_err(issue_err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Serving cert (also usable as a client cert, for etcd peers) for DNS names and IPs;
    /// O = seam:controllers.
    pub fn issue_server(
        &self,
        common_name: &str,
        dns: &[String],
        ips: &[IpAddr],
        validity: Duration,
    ) -> Result<Issued> {
        let key = KeyPair::generate().map_err(issue_err)?;
        let mut params = leaf_params(validity)?;
        params
            .distinguished_name
            .push(DnType::OrganizationName, CONTROLLERS_GROUP);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for name in dns {
            let dns = name
                .clone()
                .try_into()
                .map_err(|e: rcgen::Error| PkiError::Issue(format!("DNS name {name}: {e}")))?;
            params.subject_alt_names.push(SanType::DnsName(dns));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).map_err(issue_err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs the public key of a PEM CSR for `identity`; the CSR's own subject/SANs are ignored
    /// (the caller decides). Refuses a CSR whose self-signature does not verify.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &Identity,
        validity: Duration,
    ) -> Result<String> {
        use rustls_pki_types::CertificateSigningRequestDer;
        use x509_parser::certification_request::X509CertificationRequest;

        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| parse_err("CSR", e))?;
        let (_, csr) =
            X509CertificationRequest::from_der(der.as_ref()).map_err(|e| parse_err("CSR", e))?;
        csr.verify_signature()
            .map_err(|_| PkiError::BadCsrSignature)?;
        let spki =
            rcgen::SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
                .map_err(|e| parse_err("CSR public key", e))?;
        let cert = client_params(identity, validity)?
            .signed_by(&spki, &self.issuer)
            .map_err(issue_err)?;
        Ok(cert.pem())
    }
}

/// A certificate and its fresh key, as issued.
#[derive(Clone)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PKCS#8 PEM).
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    // Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// Writes the certificate and the key (mode 0600). The key is written first, so a
    /// [`ReloadingCert`] watching both never pairs a new certificate with the old key for long.
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<()> {
        write_atomic(key_path, self.key_pem.as_bytes(), true)?;
        write_atomic(cert_path, self.cert_pem.as_bytes(), false)
    }
}

/// A fresh key and a CSR for it (PEM CSR, PEM key). The CSR's subject names `identity`, for
/// people reading it; the CA decides what the certificate says.
pub fn new_csr(identity: &Identity) -> Result<(String, String)> {
    let key = KeyPair::generate().map_err(issue_err)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, identity.role.group());
    params
        .distinguished_name
        .push(DnType::CommonName, identity.name.as_str());
    let csr = params.serialize_request(&key).map_err(issue_err)?;
    let pem = csr.pem().map_err(issue_err)?;
    Ok((pem, key.serialize_pem()))
}

fn first_cert_der(pem: &str, what: &str) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| parse_err(what, e))
}

/// The identity a certificate (DER) names: O -> role, CN -> name, OU `epoch:N` -> epoch (nodes).
/// Does not verify the certificate: call it on one the TLS handshake verified.
pub fn identity_of(cert_der: &[u8]) -> Result<Identity> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| parse_err("certificate", e))?;
    let subject = cert.subject();
    let text = |attr: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        attr.as_str().map(str::to_string).ok()
    };
    let orgs: Vec<String> = subject.iter_organization().filter_map(text).collect();
    let role = match orgs.as_slice() {
        [one] => Role::from_group(one)
            .ok_or_else(|| PkiError::NoIdentity(format!("organization {one:?} is no Seam role")))?,
        [] => return Err(PkiError::NoIdentity("no organization (O)".into())),
        _ => {
            // Two groups would make the role depend on which one is read first.
            return Err(PkiError::NoIdentity(format!(
                "more than one organization: {orgs:?}"
            )));
        }
    };
    let name = subject
        .iter_common_name()
        .find_map(text)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| PkiError::NoIdentity("no common name (CN)".into()))?;
    let epoch = if role == Role::Node {
        subject
            .iter_organizational_unit()
            .filter_map(text)
            .find_map(|ou| parse_epoch_unit(&ou))
            .ok_or_else(|| {
                PkiError::NoIdentity(format!(
                    "node certificate without an {EPOCH_PREFIX}N organizational unit"
                ))
            })?
    } else {
        0
    };
    Ok(Identity { role, name, epoch })
}

/// When the (first) certificate of a PEM text becomes valid and when it expires.
pub fn validity_of(cert_pem: &str) -> Result<(SystemTime, SystemTime)> {
    let der = first_cert_der(cert_pem, "certificate")?;
    let (_, cert) =
        X509Certificate::from_der(der.as_ref()).map_err(|e| parse_err("certificate", e))?;
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        }
    };
    let validity = cert.validity();
    Ok((at(validity.not_before), at(validity.not_after)))
}

/// The one crypto provider: ring, TLS 1.3 suites.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

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

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| parse_err("CA certificate", e))?;
        roots
            .add(cert)
            .map_err(|e| parse_err("CA certificate", e))?;
        count += 1;
    }
    if count == 0 {
        return Err(parse_err(
            "CA certificate",
            "no certificate in the PEM text",
        ));
    }
    Ok(Arc::new(roots))
}

/// A plain sentence for a certificate error, naming the clock when the certificate's validity
/// is the problem (a machine with a wrong clock refuses every certificate).
pub fn explain_certificate_error(err: &rustls::Error) -> String {
    let when = |t: &UnixTime| {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_secs());
        format!("{} (unix time {})", humanize(at), t.as_secs())
    };
    match err {
        rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext {
            time,
            not_before,
        }) => format!(
            "certificate not valid until {}, and it is {} here: is this machine's clock right?",
            when(not_before),
            when(time)
        ),
        rustls::Error::InvalidCertificate(CertificateError::NotValidYet) => {
            "certificate not valid yet: is this machine's clock right?".to_string()
        }
        rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { time, not_after }) => {
            format!(
                "certificate expired at {}, and it is {} here (renew it; or is this machine's clock right?)",
                when(not_after),
                when(time)
            )
        }
        rustls::Error::InvalidCertificate(CertificateError::Expired) => {
            "certificate expired (renew it; or is this machine's clock right?)".to_string()
        }
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "certificate not issued by the trusted CA".to_string()
        }
        other => other.to_string(),
    }
}

/// RFC 3339-like UTC text for a time, without a date library.
fn humanize(t: SystemTime) -> String {
    let odt = to_offset(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        odt.year(),
        u8::from(odt.month()),
        odt.day(),
        odt.hour(),
        odt.minute(),
        odt.second()
    )
}

/// True for certificate errors about the validity period (where a wrong clock is a likely cause).
fn is_time_error(err: &rustls::Error) -> bool {
    matches!(
        err,
        rustls::Error::InvalidCertificate(
            CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. }
        )
    )
}

/// Logs a refused peer certificate in plain words and passes the error on unchanged (rustls
/// sends the matching alert, e.g. `certificate_expired`, to the peer).
fn logged(err: rustls::Error, peer: &str) -> rustls::Error {
    if is_time_error(&err) {
        tracing::warn!("TLS: {peer} {}", explain_certificate_error(&err));
    } else {
        tracing::debug!("TLS: {peer} refused: {}", explain_certificate_error(&err));
    }
    err
}

/// The webpki client verifier, with refusals explained in the log.
#[derive(Debug)]
struct ExplainingClientVerifier(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for ExplainingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[TlsName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.0
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| logged(e, "client"))
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The webpki server verifier, with refusals explained in the log.
#[derive(Debug)]
struct ExplainingServerVerifier(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for ExplainingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| logged(e, "server"))
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
    fn root_hint_subjects(&self) -> Option<&[TlsName]> {
        self.0.root_hint_subjects()
    }
}

/// TLS 1.3 only; client certificates optional but, when presented, verified against
/// `client_ca_pem` (expired, other CA, garbled -> handshake fails).
pub fn server_config(
    client_ca_pem: &str,
    cert: Arc<ReloadingCert>,
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(client_ca_pem)?, provider.clone())
            // Anonymous clients may connect (to join); authorization refuses them everything else.
            .allow_unauthenticated()
            .build()
            .map_err(|e| PkiError::Tls(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_client_cert_verifier(Arc::new(ExplainingClientVerifier(verifier)))
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No session resumption: a resumed session carries the identity of the certificate it was
    // first made with, so a renewed (new epoch) or revoked certificate would go unnoticed.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// TLS 1.3 only; verifies the server against `ca_pem`; presents `cert` when given.
pub fn client_config(
    ca_pem: &str,
    cert: Option<Arc<ReloadingCert>>,
) -> Result<Arc<rustls::ClientConfig>> {
    let provider = provider();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots(ca_pem)?,
        provider.clone(),
    )
    .build()
    .map_err(|e| PkiError::Tls(e.to_string()))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ExplainingServerVerifier(verifier)));
    let mut config = match cert {
        Some(cert) => builder.with_client_cert_resolver(cert),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every connection presents the current certificate (see `server_config`).
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
