//! Node identities over real mutual TLS on loopback: a node joins with a one-time token
//! (anonymous TLS), uses its certificate, is revoked (its requests and open watch end at once),
//! joins again in a new epoch, and renews.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
    ca: Ca,
    endpoint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("test CA", DAY).unwrap();
        let (ca_crt, ca_key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        ca.save(&ca_crt, &ca_key).unwrap();
        ca.issue_server("controller-0", &[], &[IpAddr::V4(Ipv4Addr::LOCALHOST)], DAY)
            .unwrap()
            .save(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))
            .unwrap();
        let signing = Signing {
            ca: Arc::new(Ca::load(&ca_crt, &ca_key).unwrap()),
            node_cert_validity: Duration::from_secs(3600),
        };
        let controller = Controller::new(ControllerConfig::default(), AnyStore::memory())
            .unwrap()
            .with_signing(signing);
        let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let options = ServeOptions {
            tcp: TcpSecurity::Tls(TlsFiles {
                cert: dir.path().join("tls.crt"),
                key: dir.path().join("tls.key"),
                ca: ca_crt,
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
        let cluster = Cluster {
            dir,
            ca,
            endpoint: format!("https://{addr}"),
            stop: Some(stop),
        };
        let anonymous = cluster.client(None);
        for _ in 0..200 {
            if anonymous.healthz().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anonymous.healthz().await.unwrap();
        cluster
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A client presenting the certificate in `files` (cert, key), or none.
    fn client(&self, files: Option<(&Path, &Path)>) -> ControllerClient {
        let tls = ClientTls::from_files(&self.path("ca.crt"), files).unwrap();
        ControllerClient::new(&self.endpoint)
            .unwrap()
            .with_tls(tls)
            .with_timeout(Duration::from_secs(5))
    }

    /// A client with a certificate issued offline for `identity` (admins, readers).
    fn offline(&self, identity: &Identity) -> ControllerClient {
        let name = identity.to_string().replace('/', "-");
        let (crt, key) = (
            self.path(&format!("{name}.crt")),
            self.path(&format!("{name}.key")),
        );
        self.ca
            .issue_client(identity, DAY)
            .unwrap()
            .save(&crt, &key)
            .unwrap();
        self.client(Some((&crt, &key)))
    }

    /// Joins `node` with `token` and writes its key and certificate under `name`; the
    /// identity its certificate names.
    async fn join(
        &self,
        token: &str,
        node: &str,
        name: &str,
    ) -> Result<(Identity, ControllerClient), seam_client::ClientError> {
        let (csr, key) = seam_pki::new_csr(&Identity::node(node, 0)).unwrap();
        let answer = self.client(None).join(token, node, &csr).await?;
        let (crt_path, key_path) = (
            self.path(&format!("{name}.crt")),
            self.path(&format!("{name}.key")),
        );
        std::fs::write(&crt_path, &answer.certificate).unwrap();
        std::fs::write(&key_path, key).unwrap();
        assert_eq!(answer.ca, self.ca.cert_pem());
        Ok((
            identity_in(&answer.certificate),
            self.client(Some((&crt_path, &key_path))),
        ))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn identity_in(pem: &str) -> Identity {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    seam_pki::identity_of(der.as_ref()).unwrap()
}

#[tokio::test]
async fn a_node_joins_once_with_its_token_is_revoked_at_once_and_joins_again_in_a_new_epoch() {
    let cluster = Cluster::start().await;
    let admin = cluster.offline(&Identity::of(CallerRole::Admin, "alice"));
    let token = admin
        .create_join_token(Duration::from_secs(600), None)
        .await
        .unwrap();

    let (id, node) = cluster.join(&token.token, "n1", "n1-epoch1").await.unwrap();
    assert_eq!(id, Identity::node("n1", 1));
    node.list_nodes().await.unwrap();

    // The same token again: refused, nothing changed.
    let again = cluster
        .join(&token.token, "n1", "n1-again")
        .await
        .unwrap_err();
    assert_eq!(again.status(), Some(401), "{again}");
    assert!(again.is_invalid_token(), "{again}");
    node.list_nodes().await.unwrap();

    // An open watch of the node, then a revocation: the watch ends, every request is refused.
    let mut watch = node.watch(0).await.unwrap();
    let revoked = admin.revoke("n1").await.unwrap();
    assert_eq!((revoked.epoch, revoked.revoked), (2, true));
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match watch.next().await {
                Some(Ok(_)) => continue,
                other => break other,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the revoked node's watch stayed open");
    let refused = node.list_nodes().await.unwrap_err();
    assert_eq!(refused.status(), Some(401), "{refused}");
    assert!(refused.is_revoked(), "{refused}");
    let refused = node.watch(0).await.unwrap_err();
    assert_eq!(refused.status(), Some(401), "{refused}");

    // Joining again with a new token: epoch 2 works, epoch 1 stays refused.
    let token = admin
        .create_join_token(Duration::from_secs(600), Some("n1"))
        .await
        .unwrap();
    let (id, node2) = cluster.join(&token.token, "n1", "n1-epoch2").await.unwrap();
    assert_eq!(id, Identity::node("n1", 2));
    node2.list_nodes().await.unwrap();
    assert_eq!(node.list_nodes().await.unwrap_err().status(), Some(401));

    // Renewal: a new certificate of the same name and epoch.
    let (csr, _) = seam_pki::new_csr(&id).unwrap();
    let renewed = node2.renew(&csr).await.unwrap();
    assert_eq!(identity_in(&renewed.certificate), Identity::node("n1", 2));
}

#[tokio::test]
async fn bad_join_attempts_over_tls_are_refused_and_change_nothing() {
    let cluster = Cluster::start().await;
    let admin = cluster.offline(&Identity::of(CallerRole::Admin, "alice"));

    let expiring = admin
        .create_join_token(Duration::from_secs(1), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = cluster.join(&expiring.token, "n1", "n1").await.unwrap_err();
    assert_eq!(expired.status(), Some(401), "{expired}");
    assert!(expired.to_string().contains("expired"), "{expired}");

    let bound = admin
        .create_join_token(Duration::from_secs(600), Some("n2"))
        .await
        .unwrap();
    let other = cluster.join(&bound.token, "n1", "n1").await.unwrap_err();
    assert_eq!(other.status(), Some(403), "{other}");
    let invalid = cluster.join(&bound.token, "N_1", "n1").await.unwrap_err();
    assert_eq!(invalid.status(), Some(400), "{invalid}");
    let unknown = cluster
        .join("abcdef.0123456789abcdef", "n1", "n1")
        .await
        .unwrap_err();
    assert_eq!(unknown.status(), Some(401), "{unknown}");

    // A certificate for a node that never joined (issued offline, epoch 1) is refused.
    let ghost = cluster.offline(&Identity::node("ghost", 1));
    let refused = ghost.list_nodes().await.unwrap_err();
    assert_eq!(refused.status(), Some(401), "{refused}");

    // None of that left a node identity behind: n2's bound token still joins n2 at epoch 1.
    let (id, _) = cluster.join(&bound.token, "n2", "n2").await.unwrap();
    assert_eq!(id, Identity::node("n2", 1));
}
