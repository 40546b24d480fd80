//! The agent's HTTPS API with real TLS clients (seam-client's rustls client, as the CLI uses it):
//! the node's certificate names the node, readers and admins read metrics and counters, a node
//! certificate is refused (403), no certificate is refused (401) except on the health routes.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use seam_client::{ClientTls, ControllerClient};
use seam_model::counters::NodeCounters;
use seam_model::{CallerRole, Identity};
use seam_nft::listing::RuleCounter;
use seam_pki::{Ca, ReloadingCert};

use crate::harness::{add, pod, Cluster};

const DAY: Duration = Duration::from_secs(86_400);

/// The node's certificate as the controller signs it at join, a reader's, an admin's and
/// another node's, as files in `dir`.
struct Certs {
    ca: Ca,
}

impl Certs {
    fn new(dir: &Path) -> Certs {
        let ca = Ca::generate("test CA", DAY).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.cert_pem()).unwrap();
        Certs { ca }
    }

    /// Issues a certificate for `identity`; its (cert, key) paths.
    fn issue(&self, dir: &Path, identity: &Identity) -> (std::path::PathBuf, std::path::PathBuf) {
        let name = format!("{}-{}", identity.role, identity.name);
        let (crt, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        // The node's own goes through a CSR, as joining does.
        let issued = if identity.role == CallerRole::Node {
            let (csr, key_pem) = seam_pki::new_csr(identity).unwrap();
            seam_pki::Issued {
                cert_pem: self.ca.sign_csr(&csr, identity, DAY).unwrap(),
                key_pem,
            }
        } else {
            self.ca.issue_client(identity, DAY).unwrap()
        };
        issued.save(&crt, &key).unwrap();
        (crt, key)
    }
}

/// Starts the API of the cluster's agent `n1` on loopback with n1's node certificate.
async fn start_api(c: &Cluster, certs: &Certs) -> SocketAddr {
    let dir = c.dir.path();
    let (crt, key) = certs.issue(dir, &Identity::of(CallerRole::Node, "n1"));
    let cert = ReloadingCert::from_files(&crt, &key).unwrap();
    let tls = seam_agent::api::tls_config(certs.ca.cert_pem(), cert.clone()).unwrap();
    let registry = seam_agent::metrics::registry(&c.n1.agent.metrics);
    let app = seam_agent::api::router(c.n1.agent.clone(), registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(seam_agent::api::serve(listener, tls, Some(cert), app));
    addr
}

/// A client of the API at `addr` checking that the server is node `server_name`, presenting
/// a certificate of `identity` (none for `None`).
fn client(
    c: &Cluster,
    certs: &Certs,
    addr: SocketAddr,
    server_name: &str,
    identity: Option<&Identity>,
) -> ControllerClient {
    let dir = c.dir.path();
    let files = identity.map(|id| certs.issue(dir, id));
    let tls = ClientTls::from_files(
        &dir.join("ca.crt"),
        files.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
    )
    .unwrap()
    .with_server_name(server_name)
    .unwrap();
    ControllerClient::new(&format!("https://{addr}"))
        .unwrap()
        .with_tls(tls)
        .with_timeout(Duration::from_secs(5))
}

async fn get(client: &ControllerClient, path: &str) -> (u16, String) {
    let r = client.request_raw("GET", path, Vec::new()).await.unwrap();
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

#[tokio::test]
async fn readers_and_admins_read_metrics_and_counters_others_are_refused() {
    let c = Cluster::start().await;
    let certs = Certs::new(c.dir.path());
    let addr = start_api(&c, &certs).await;
    let reader = client(
        &c,
        &certs,
        addr,
        "n1",
        Some(&Identity::of(CallerRole::Reader, "grafana")),
    );
    let admin = client(
        &c,
        &certs,
        addr,
        "n1",
        Some(&Identity::of(CallerRole::Admin, "alice")),
    );
    let node = client(
        &c,
        &certs,
        addr,
        "n1",
        Some(&Identity::of(CallerRole::Node, "n2")),
    );
    let adapter = client(
        &c,
        &certs,
        addr,
        "n1",
        Some(&Identity::of(CallerRole::Adapter, "seam-k8s")),
    );
    let anonymous = client(&c, &certs, addr, "n1", None);

    // A pod's ADD moves the CNI histogram the scrape shows.
    add(&c.sock, &pod("web", "a")).await;
    crate::harness::eventually("the agent says it is ready", || async {
        get(&anonymous, "/readyz").await.0 == 200
    })
    .await;

    let (status, body) = get(&reader, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#"seam_agent_cni_request_duration_seconds_count{verb="ADD",result="ok"} 1"#),
        "{body}"
    );
    assert!(body.contains("seam_agent_ready 1"), "{body}");
    assert!(body.contains("seam_agent_leases 1"), "{body}");
    assert_eq!(get(&admin, "/metrics").await.0, 200);

    assert_eq!(get(&node, "/metrics").await.0, 403);
    assert_eq!(get(&node, "/v1/counters").await.0, 403);
    assert_eq!(get(&adapter, "/metrics").await.0, 403);
    assert_eq!(get(&anonymous, "/metrics").await.0, 401);
    assert_eq!(get(&anonymous, "/v1/counters").await.0, 401);
    assert_eq!(get(&anonymous, "/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(get(&node, "/healthz").await.0, 200);

    // Counters: what the kernel counted, by rule comment.
    c.kernel().with_state(|s| {
        s.counters.insert(
            "default/ingress".into(),
            RuleCounter {
                packets: 4,
                bytes: 240,
            },
        );
    });
    let (status, body) = get(&reader, "/v1/counters").await;
    assert_eq!(status, 200, "{body}");
    let counters: NodeCounters = serde_json::from_str(&body).unwrap();
    assert_eq!(counters.node, "n1");
    assert_eq!(counters.rules["default/ingress"].packets, 4);
    assert_eq!(counters.rules["default/ingress"].bytes, 240);
}

#[tokio::test]
async fn clients_check_that_the_certificate_names_the_node() {
    let c = Cluster::start().await;
    let certs = Certs::new(c.dir.path());
    let addr = start_api(&c, &certs).await;
    let reader = Identity::of(CallerRole::Reader, "r");
    let right = client(&c, &certs, addr, "n1", Some(&reader));
    assert_eq!(get(&right, "/healthz").await.0, 200);
    // Another node's name, or the address, which the node's certificate does not name.
    for name in ["n2", "127.0.0.1"] {
        let wrong = client(&c, &certs, addr, name, Some(&reader));
        let err = wrong
            .request_raw("GET", "/healthz", Vec::new())
            .await
            .expect_err("a server certificate for another name is refused");
        let mut chain = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            chain.push_str(&format!(": {s}"));
            source = s.source();
        }
        assert!(
            chain.contains("not valid for name") || chain.contains("NotValidForName"),
            "{name}: {chain}"
        );
    }
    // A certificate of another CA is not trusted by the node.
    let other = Ca::generate("other CA", DAY).unwrap();
    let dir = c.dir.path();
    other
        .issue_client(&reader, DAY)
        .unwrap()
        .save(&dir.join("other.crt"), &dir.join("other.key"))
        .unwrap();
    let tls = ClientTls::from_files(
        &dir.join("ca.crt"),
        Some((&dir.join("other.crt"), &dir.join("other.key"))),
    )
    .unwrap()
    .with_server_name("n1")
    .unwrap();
    let foreign = ControllerClient::new(&format!("https://{addr}"))
        .unwrap()
        .with_tls(tls)
        .with_timeout(Duration::from_secs(5));
    assert!(foreign
        .request_raw("GET", "/metrics", Vec::new())
        .await
        .is_err());
}
