//! The node certificate's lifecycle against a real controller over mutual TLS on loopback:
//! join with a token, reuse at the next start, renewal picked up without a restart, a refused
//! token, a controller certificate from another CA, a rejoin after revocation.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use seam_agent::identity::{NodePki, Obtained};
use seam_agent::NodeCertError;
use seam_client::{ClientTls, ControllerClient};
use seam_controller::{
    Controller, ControllerConfig, Listener, ServeOptions, Signing, TcpSecurity, TlsFiles,
};
use seam_model::{CallerRole, Identity};
use seam_pki::Ca;
use seam_store::AnyStore;

const DAY: Duration = Duration::from_secs(86_400);

struct Cluster {
    dir: tempfile::TempDir,
    endpoint: String,
    admin: ControllerClient,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("test CA", DAY).unwrap();
    let (ca_crt, ca_key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
    ca.save(&ca_crt, &ca_key).unwrap();
    ca.issue_server("c0", &[], &[IpAddr::V4(Ipv4Addr::LOCALHOST)], DAY)
        .unwrap()
        .save(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))
        .unwrap();
    let (admin_crt, admin_key) = (dir.path().join("admin.crt"), dir.path().join("admin.key"));
    ca.issue_client(&Identity::of(CallerRole::Admin, "alice"), DAY)
        .unwrap()
        .save(&admin_crt, &admin_key)
        .unwrap();
    let controller = Controller::new(ControllerConfig::default(), AnyStore::memory())
        .unwrap()
        .with_signing(Signing {
            ca: Arc::new(ca),
            node_cert_validity: Duration::from_secs(3600),
        });
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let options = ServeOptions {
        tcp: TcpSecurity::Tls(TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            ca: ca_crt.clone(),
        }),
        ..ServeOptions::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(seam_controller::serve_controller_with(
        controller,
        vec![Listener::Tcp(addr)],
        options,
        async {
            let _ = stopped.await;
        },
    ));
    let endpoint = format!("https://{addr}");
    let admin = ControllerClient::new(&endpoint)
        .unwrap()
        .with_tls(ClientTls::from_files(&ca_crt, Some((&admin_crt, &admin_key))).unwrap());
    for _ in 0..200 {
        if admin.healthz().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Cluster {
        dir,
        endpoint,
        admin,
        _stop: stop,
    }
}

impl Cluster {
    fn pki(&self, node: &str) -> NodePki {
        NodePki {
            node: node.to_string(),
            ca: self.dir.path().join("ca.crt"),
            dir: self.dir.path().join(format!("{node}-pki")),
        }
    }

    async fn token(&self, node: Option<&str>) -> String {
        self.admin
            .create_join_token(Duration::from_secs(600), node)
            .await
            .unwrap()
            .token
    }
}

#[tokio::test]
async fn an_agent_joins_reuses_its_certificate_and_renews_it_without_a_restart() {
    let cluster = cluster().await;
    let pki = cluster.pki("n1");
    let token = cluster.token(None).await;
    let now = SystemTime::now();
    let obtained = pki
        .ensure(&cluster.endpoint, Some(&token), now)
        .await
        .unwrap();
    assert_eq!(obtained, Obtained::Joined { epoch: 1 });
    for file in [pki.cert_path(), pki.key_path()] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&file).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    // The next start finds it (the token is spent, and not needed).
    let again = pki.ensure(&cluster.endpoint, None, now).await.unwrap();
    assert_eq!(again, Obtained::Existing);

    let client = ControllerClient::new(&cluster.endpoint)
        .unwrap()
        .with_tls(pki.client_tls().unwrap());
    client.list_nodes().await.unwrap();
    let before = std::fs::read_to_string(pki.cert_path()).unwrap();
    pki.renew_once(&client).await.unwrap();
    let after = std::fs::read_to_string(pki.cert_path()).unwrap();
    assert_ne!(before, after);
    // The same client presents the renewed certificate once it re-read the files.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client.list_nodes().await.unwrap();
    pki.renew_once(&client).await.unwrap();
}

#[tokio::test]
async fn a_refused_token_and_a_controller_from_another_ca_are_said_plainly() {
    let cluster = cluster().await;
    let pki = cluster.pki("n1");
    let err = pki
        .ensure(
            &cluster.endpoint,
            Some("abcdef.0123456789abcdef"),
            SystemTime::now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, NodeCertError::TokenRejected { .. }), "{err}");
    assert!(err.to_string().contains("refused the join token"), "{err}");
    assert!(!pki.cert_path().exists());

    let err = pki
        .ensure(&cluster.endpoint, None, SystemTime::now())
        .await
        .unwrap_err();
    assert!(matches!(err, NodeCertError::NoToken { .. }), "{err}");

    // A CA that did not sign the controller's certificate.
    let other = Ca::generate("other CA", DAY).unwrap();
    let other_ca = cluster.dir.path().join("other-ca.crt");
    std::fs::write(&other_ca, other.cert_pem()).unwrap();
    let wrong = NodePki {
        ca: other_ca,
        ..pki.clone()
    };
    let token = cluster.token(None).await;
    let err = wrong
        .ensure(&cluster.endpoint, Some(&token), SystemTime::now())
        .await
        .unwrap_err();
    let text = format!("{:#}", anyhow_chain(&err));
    assert!(matches!(err, NodeCertError::Join { .. }), "{text}");
    assert!(text.contains("TLS handshake failed"), "{text}");
    // The token was not spent by the failed attempt.
    assert_eq!(
        pki.ensure(&cluster.endpoint, Some(&token), SystemTime::now())
            .await
            .unwrap(),
        Obtained::Joined { epoch: 1 }
    );
}

#[tokio::test]
async fn a_revoked_agent_joins_again_at_its_next_start_when_given_a_new_token() {
    let cluster = cluster().await;
    let pki = cluster.pki("n1");
    let token = cluster.token(Some("n1")).await;
    pki.ensure(&cluster.endpoint, Some(&token), SystemTime::now())
        .await
        .unwrap();
    cluster.admin.revoke("n1").await.unwrap();
    // Without a token the certificate looks fine locally; with one, the refusal is noticed.
    let token = cluster.token(Some("n1")).await;
    let obtained = pki
        .ensure(&cluster.endpoint, Some(&token), SystemTime::now())
        .await
        .unwrap();
    assert_eq!(obtained, Obtained::Joined { epoch: 2 });
    let client = ControllerClient::new(&cluster.endpoint)
        .unwrap()
        .with_tls(pki.client_tls().unwrap());
    client.list_nodes().await.unwrap();
}

/// The error and its causes, joined as the binary prints them.
fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
