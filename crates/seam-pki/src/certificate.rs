//! Reading certificates: the identity a certificate names, its validity period, the first
//! certificate of a PEM text, and the time conversion certificates need.

use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use seam_model::identity::{parse_epoch_unit, Role, EPOCH_PREFIX};
use seam_model::Identity;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{parse_err, PkiError, Result};

pub(crate) fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

pub(crate) fn first_cert_der(pem: &str, what: &str) -> Result<CertificateDer<'static>> {
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
