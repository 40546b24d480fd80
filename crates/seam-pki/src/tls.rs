//! TLS settings: the rustls server and client configurations (TLS 1.3 only, mutual TLS), the
//! verifiers that explain refused certificates in the log, and the crypto provider.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName as TlsName, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::certificate::to_offset;
use crate::{parse_err, PkiError, ReloadingCert, Result};

/// The one crypto provider: ring, TLS 1.3 suites.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>> {
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
