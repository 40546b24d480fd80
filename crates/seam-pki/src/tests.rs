#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::ca::client_params;
use crate::certificate::{first_cert_der, to_offset};
use crate::tls::{provider, roots};
use rcgen::KeyPair;
use rustls::CertificateError;
use rustls::{ClientConnection, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{ServerName, UnixTime};
use seam_model::identity::Role;
use seam_model::Identity;
use std::fs;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use x509_parser::prelude::{FromDer, X509Certificate};

const DAY: Duration = Duration::from_secs(86_400);

fn ca() -> Ca {
    Ca::generate("seam test CA", DAY).unwrap()
}

/// Writes an issued pair into `dir` and loads it as a [`ReloadingCert`].
fn reloading(dir: &Path, name: &str, issued: &Issued) -> Arc<ReloadingCert> {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    issued.save(&cert, &key).unwrap();
    ReloadingCert::from_files(&cert, &key).unwrap()
}

fn server_cert(ca: &Ca, dir: &Path) -> Arc<ReloadingCert> {
    let issued = ca
        .issue_server(
            "controller-0",
            &["controller.example".to_string()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            DAY,
        )
        .unwrap();
    reloading(dir, "server", &issued)
}

/// Runs a handshake between the two configurations in memory; the server connection on
/// success, the first error either side reports otherwise.
fn handshake(
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
    name: &str,
) -> std::result::Result<ServerConnection, rustls::Error> {
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut c = ClientConnection::new(client, name)?;
    let mut s = ServerConnection::new(server)?;
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            let mut slice = buf.as_slice();
            while !slice.is_empty() {
                s.read_tls(&mut slice).unwrap();
            }
            s.process_new_packets()?;
        }
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            let mut slice = buf.as_slice();
            while !slice.is_empty() {
                c.read_tls(&mut slice).unwrap();
            }
            c.process_new_packets()?;
        }
        if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() {
            return Ok(s);
        }
    }
    panic!("the handshake did not finish");
}

fn peer_identity(s: &ServerConnection) -> Option<Identity> {
    let certs = s.peer_certificates()?;
    Some(identity_of(certs.first()?.as_ref()).unwrap())
}

#[test]
fn a_node_certificate_names_the_node_and_its_epoch() {
    let ca = ca();
    let issued = ca.issue_client(&Identity::node("n1", 3), DAY).unwrap();
    let der = first_cert_der(&issued.cert_pem, "test").unwrap();
    assert_eq!(identity_of(der.as_ref()).unwrap(), Identity::node("n1", 3));
    let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
    let sans = cert.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        sans.value.general_names,
        vec![x509_parser::extensions::GeneralName::DNSName("n1")]
    );
    // A node's certificate also serves (the agent's API); a person's only authenticates.
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && eku.server_auth, "{eku:?}");

    let admin = ca
        .issue_client(&Identity::of(Role::Admin, "alice"), DAY)
        .unwrap();
    let der = first_cert_der(&admin.cert_pem, "test").unwrap();
    assert_eq!(
        identity_of(der.as_ref()).unwrap(),
        Identity::of(Role::Admin, "alice")
    );
    let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth, "{eku:?}");

    let (from, until) = validity_of(&issued.cert_pem).unwrap();
    let now = SystemTime::now();
    assert!(from <= now && now < until);
    let left = until.duration_since(now).unwrap();
    assert!(
        left > DAY - Duration::from_secs(60) && left <= DAY,
        "{left:?}"
    );
}

#[test]
fn a_serving_certificate_is_no_client_identity() {
    let ca = ca();
    let issued = ca.issue_server("c0", &[], &[], DAY).unwrap();
    let der = first_cert_der(&issued.cert_pem, "test").unwrap();
    assert!(matches!(
        identity_of(der.as_ref()),
        Err(PkiError::NoIdentity(_))
    ));
}

#[test]
fn signing_a_csr_ignores_its_subject() {
    let ca = ca();
    // The CSR asks to be an admin; the CA decides it is node n1 in epoch 2.
    let (csr, key) = new_csr(&Identity::of(Role::Admin, "mallory")).unwrap();
    let cert = ca.sign_csr(&csr, &Identity::node("n1", 2), DAY).unwrap();
    let der = first_cert_der(&cert, "test").unwrap();
    assert_eq!(identity_of(der.as_ref()).unwrap(), Identity::node("n1", 2));
    // The certificate is for the CSR's key: the pair loads (rustls checks they match).
    let dir = tempfile::tempdir().unwrap();
    let issued = Issued {
        cert_pem: cert,
        key_pem: key,
    };
    reloading(dir.path(), "node", &issued);
}

#[test]
fn a_csr_with_a_broken_signature_is_refused() {
    let ca = ca();
    let (csr, _key) = new_csr(&Identity::node("n1", 0)).unwrap();
    let der =
        rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes()).unwrap();
    let mut bytes = der.as_ref().to_vec();
    // The signature is the last field; flipping its last byte keeps the DER well-formed.
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let pem = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64(&bytes)
    );
    assert!(matches!(
        ca.sign_csr(&pem, &Identity::node("n1", 0), DAY),
        Err(PkiError::BadCsrSignature)
    ));
    assert!(ca
        .sign_csr("garbage", &Identity::node("n1", 0), DAY)
        .is_err());
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn mutual_tls_1_3_hands_the_server_the_client_identity() {
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let server = server_config(ca.cert_pem(), server_cert(&ca, dir.path())).unwrap();
    let node = ca.issue_client(&Identity::node("n7", 1), DAY).unwrap();
    let client = client_config(ca.cert_pem(), Some(reloading(dir.path(), "n7", &node))).unwrap();
    let s = handshake(client, server.clone(), "127.0.0.1").unwrap();
    assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(peer_identity(&s), Some(Identity::node("n7", 1)));

    // DNS names work too; a client without a certificate is let in anonymously.
    let anonymous = client_config(ca.cert_pem(), None).unwrap();
    let s = handshake(anonymous.clone(), server.clone(), "controller.example").unwrap();
    assert_eq!(peer_identity(&s), None);
    // A name the serving certificate does not carry is refused by the client.
    assert!(handshake(anonymous, server, "other.example").is_err());
}

#[test]
fn a_client_certificate_of_another_ca_is_refused() {
    let ca = ca();
    let other = Ca::generate("someone else's CA", DAY).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = server_config(ca.cert_pem(), server_cert(&ca, dir.path())).unwrap();
    let stranger = other
        .issue_client(&Identity::of(Role::Admin, "eve"), DAY)
        .unwrap();
    let client =
        client_config(ca.cert_pem(), Some(reloading(dir.path(), "eve", &stranger))).unwrap();
    let err = handshake(client, server, "127.0.0.1").unwrap_err();
    assert!(
        explain_certificate_error(&err).contains("not issued by the trusted CA"),
        "{err}"
    );
}

#[test]
fn a_tls_1_2_client_is_refused() {
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let server = server_config(ca.cert_pem(), server_cert(&ca, dir.path())).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots(ca.cert_pem()).unwrap())
        .with_no_client_auth();
    let err = handshake(Arc::new(client), server, "127.0.0.1").unwrap_err();
    assert!(matches!(err, rustls::Error::PeerIncompatible(_)), "{err:?}");
}

#[test]
fn an_expired_client_certificate_is_refused_naming_the_clock() {
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let server = server_config(ca.cert_pem(), server_cert(&ca, dir.path())).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = client_params(&Identity::node("n1", 0), DAY).unwrap();
    let now = SystemTime::now();
    params.not_before = to_offset(now - 2 * DAY);
    params.not_after = to_offset(now - DAY);
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let expired = Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    let client =
        client_config(ca.cert_pem(), Some(reloading(dir.path(), "old", &expired))).unwrap();
    let err = handshake(client, server, "127.0.0.1").unwrap_err();
    let text = explain_certificate_error(&err);
    assert!(text.contains("certificate expired at"), "{text}");
    assert!(text.contains("clock"), "{text}");
}

#[test]
fn a_certificate_not_valid_yet_asks_about_the_clock() {
    let err = rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext {
        time: UnixTime::since_unix_epoch(Duration::from_secs(1_000_000_000)),
        not_before: UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000)),
    });
    assert_eq!(
        explain_certificate_error(&err),
        "certificate not valid until 2027-01-15T08:00:00Z (unix time 1800000000), and it is \
         2001-09-09T01:46:40Z (unix time 1000000000) here: is this machine's clock right?"
    );
}

#[test]
fn reloading_picks_up_a_rotated_certificate() {
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.issue_client(&Identity::node("n1", 1), DAY).unwrap();
    let cert = reloading(dir.path(), "node", &first);
    assert!(!cert.reload().unwrap(), "unchanged files are no change");

    let second = ca.issue_client(&Identity::node("n1", 2), DAY).unwrap();
    second
        .save(&dir.path().join("node.crt"), &dir.path().join("node.key"))
        .unwrap();
    assert!(cert.reload().unwrap());
    assert_eq!(cert.cert_pem(), second.cert_pem);

    // A certificate with the wrong key is refused and the previous pair stays.
    fs::write(dir.path().join("node.crt"), &first.cert_pem).unwrap();
    assert!(cert.reload().is_err());
    assert_eq!(cert.cert_pem(), second.cert_pem);

    // The server presents the rotated certificate on the next handshake.
    let server = server_config(ca.cert_pem(), server_cert(&ca, dir.path())).unwrap();
    let client = client_config(ca.cert_pem(), Some(cert)).unwrap();
    let s = handshake(client, server, "127.0.0.1").unwrap();
    assert_eq!(peer_identity(&s), Some(Identity::node("n1", 2)));
}

#[test]
fn a_saved_ca_loads_back_and_keeps_its_key_private() {
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
    ca.save(&crt, &key).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let loaded = Ca::load(&crt, &key).unwrap();
    assert_eq!(loaded.cert_pem(), ca.cert_pem());
    // Certificates the loaded CA issues verify against the original CA certificate.
    let server = server_config(ca.cert_pem(), server_cert(&loaded, dir.path())).unwrap();
    let admin = loaded
        .issue_client(&Identity::of(Role::Admin, "a"), DAY)
        .unwrap();
    let client = client_config(ca.cert_pem(), Some(reloading(dir.path(), "a", &admin))).unwrap();
    handshake(client, server, "127.0.0.1").unwrap();

    // Another CA's key does not go with this certificate.
    let other = Ca::generate("other", DAY).unwrap();
    let other_key = dir.path().join("other.key");
    other
        .save(&dir.path().join("other.crt"), &other_key)
        .unwrap();
    assert!(Ca::load(&crt, &other_key).is_err());
}
