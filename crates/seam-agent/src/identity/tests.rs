//! Unit tests of the node certificate's lifecycle that need no controller.

use super::*;

#[test]
fn renewal_is_due_after_two_thirds_of_the_lifetime() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let end = start + Duration::from_secs(3 * 3600);
    assert_eq!(
        renewal_time(start, end),
        start + Duration::from_secs(2 * 3600)
    );
    // A certificate that ends before it starts is renewed at once.
    assert_eq!(renewal_time(end, start), end);
}

#[test]
fn a_certificate_is_judged_by_this_machines_clock() {
    let dir = tempfile::tempdir().unwrap();
    let ca = seam_pki::Ca::generate("test CA", Duration::from_secs(86_400)).unwrap();
    let pki = NodePki {
        node: "n1".to_string(),
        ca: dir.path().join("ca.crt"),
        dir: dir.path().join("pki"),
    };
    assert!(matches!(
        pki.check_existing(SystemTime::now()),
        Err(NodeCertError::Missing { .. })
    ));
    let issued = ca
        .issue_client(&Identity::node("n1", 1), Duration::from_secs(3600))
        .unwrap();
    pki.save(&issued.key_pem, &issued.cert_pem).unwrap();
    for file in [pki.cert_path(), pki.key_path()] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&file).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    let now = SystemTime::now();
    pki.check_existing(now).unwrap();
    let early = pki
        .check_existing(now - Duration::from_secs(86_400))
        .unwrap_err();
    assert!(
        early.to_string().contains("check this machine's clock"),
        "{early}"
    );
    let late = pki
        .check_existing(now + Duration::from_secs(7200))
        .unwrap_err();
    assert!(matches!(late, NodeCertError::Expired { .. }), "{late}");
    assert!(late.to_string().contains("join again"), "{late}");

    let other = NodePki {
        node: "n2".to_string(),
        ..pki.clone()
    };
    assert!(matches!(
        other.check_existing(now),
        Err(NodeCertError::OtherIdentity { .. })
    ));
}
