//! The certificate authority: generating or loading a CA, issuing serving and client
//! certificates, signing CSRs, and making a key and CSR for a node.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use seam_model::identity::{Role, CONTROLLERS_GROUP};
use seam_model::Identity;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::certificate::{first_cert_der, to_offset};
use crate::files::{read, write_atomic};
use crate::tls::provider;
#[cfg(doc)]
use crate::ReloadingCert;
use crate::{parse_err, PkiError, Result};

/// Certificates are valid from a little before they are issued, so a peer whose clock is a few
/// minutes behind the CA's accepts a certificate issued just now.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

fn issue_err(e: rcgen::Error) -> PkiError {
    PkiError::Issue(e.to_string())
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
pub(crate) fn client_params(identity: &Identity, validity: Duration) -> Result<CertificateParams> {
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
    if identity.role == Role::Node {
        // The node also serves: the agent's API (`seam_agent::api`) presents this certificate,
        // and its clients check that it names the node (the DNS SAN above).
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    Ok(params)
}

/// A certificate authority: its certificate and signing key.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    /// Crate-visible so tests can sign certificates no `issue_*` method makes (expired ones).
    pub(crate) issuer: Issuer<'static, KeyPair>,
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
