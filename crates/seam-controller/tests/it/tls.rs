//! The API over mutual TLS with `seam-client`: a watch outlives the header timeout and a
//! rotation of the controller's serving certificate, and misses no event.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use seam_client::{ClientTls, ControllerClient};
use seam_controller::{
    ConnectionLimits, Controller, ControllerConfig, Listener, ServeOptions, TcpSecurity, TlsFiles,
};
use seam_model::{CallerRole as Role, Identity, ObjectKind};
use seam_pki::Ca;
use seam_store::AnyStore;

use crate::server::node;

const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test]
async fn a_watch_over_tls_survives_a_serving_certificate_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let ca = Ca::generate("test CA", DAY).unwrap();
    std::fs::write(p("ca.crt"), ca.cert_pem()).unwrap();
    let issue_server = || {
        ca.issue_server("controller-0", &[], &[IpAddr::V4(Ipv4Addr::LOCALHOST)], DAY)
            .unwrap()
            .save(&p("tls.crt"), &p("tls.key"))
            .unwrap();
    };
    issue_server();
    ca.issue_client(&Identity::of(Role::Admin, "alice"), DAY)
        .unwrap()
        .save(&p("admin.crt"), &p("admin.key"))
        .unwrap();

    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = Controller::new(ControllerConfig::default(), AnyStore::memory()).unwrap();
    let options = ServeOptions {
        tcp: TcpSecurity::Tls(TlsFiles {
            cert: p("tls.crt"),
            key: p("tls.key"),
            ca: p("ca.crt"),
        }),
        limits: ConnectionLimits {
            // Far shorter than the watch stays open: the timeout is for headers only.
            header_read_timeout: Duration::from_millis(300),
            ..ConnectionLimits::default()
        },
    };
    let task = tokio::spawn(seam_controller::serve_controller_with(
        controller,
        vec![Listener::Tcp(addr)],
        options,
        async {
            let _ = stopped.await;
        },
    ));
    let tls =
        ClientTls::from_files(&p("ca.crt"), Some((&p("admin.crt"), &p("admin.key")))).unwrap();
    let client = ControllerClient::new(&format!("https://{addr}"))
        .unwrap()
        .with_tls(tls);
    let mut up = false;
    for _ in 0..200 {
        if client.healthz().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(up, "the TLS listener did not answer");

    let start = client.snapshot().await.unwrap().revision;
    let mut watch = client.watch(start + 1).await.unwrap();
    issue_server();
    // Past the reload interval (5 s) and many header timeouts.
    tokio::time::sleep(Duration::from_secs(6)).await;
    client.put_node(&node("n1", 1)).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("no watch event within 5 s")
        .expect("watch ended")
        .expect("watch failed");
    assert_eq!((event.kind, event.name.as_str()), (ObjectKind::Node, "n1"));

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
