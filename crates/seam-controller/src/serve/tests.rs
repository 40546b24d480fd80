//! The serving side over loopback: TLS 1.3 with client certificates, the caller each handler
//! sees, timeouts and the connection cap (no root needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use axum::routing::get;
use seam_pki::Ca;
use seam_store::AnyStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::ServerName;

use super::*;
use crate::config::TlsFiles;

const DAY: Duration = Duration::from_secs(86_400);

/// A CA, the controller's serving certificate and client certificates, as files.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("test CA", DAY).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        ca.issue_server("controller-0", &[], &[IpAddr::V4(Ipv4Addr::LOCALHOST)], DAY)
            .unwrap()
            .save(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))
            .unwrap();
        Pki { dir, ca }
    }

    fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.path().join("tls.crt"),
            key: self.dir.path().join("tls.key"),
            ca: self.dir.path().join("ca.crt"),
        }
    }

    /// A client configuration presenting a certificate for `identity` (none for `None`).
    fn client(&self, identity: Option<&Identity>) -> Arc<tokio_rustls::rustls::ClientConfig> {
        let cert = identity.map(|id| {
            let name = id.to_string().replace('/', "-");
            let (crt, key) = (
                self.dir.path().join(format!("{name}.crt")),
                self.dir.path().join(format!("{name}.key")),
            );
            self.ca
                .issue_client(id, DAY)
                .unwrap()
                .save(&crt, &key)
                .unwrap();
            ReloadingCert::from_files(&crt, &key).unwrap()
        });
        seam_pki::client_config(self.ca.cert_pem(), cert).unwrap()
    }
}

/// Answers with the caller the serving side attached.
fn whoami_router() -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/whoami",
            get(|request: axum::extract::Request| async move {
                let peer = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.ip().to_string())
                    .unwrap_or_default();
                format!("{} {peer}", Caller::of(&request))
            }),
        )
}

fn free_port() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

async fn start(listeners: Vec<Listener>, options: ServeOptions) -> Running {
    let controller = Controller::new(ControllerConfig::default(), AnyStore::memory()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let waits_for: Vec<Listener> = listeners.clone();
    let task = tokio::spawn(serve_router(
        whoami_router(),
        controller,
        listeners,
        options,
        async {
            let _ = stopped.await;
        },
    ));
    // Up when every TCP listener accepts.
    for listener in waits_for {
        if let Listener::Tcp(addr) = listener {
            for _ in 0..200 {
                if TcpStream::connect(addr).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    Running {
        stop: Some(stop),
        task,
    }
}

fn tls_options(pki: &Pki) -> ServeOptions {
    ServeOptions {
        tcp: TcpSecurity::Tls(pki.files()),
        ..ServeOptions::default()
    }
}

/// One `GET path` over TLS; the whole response as text.
async fn get_tls(
    addr: SocketAddr,
    config: Arc<tokio_rustls::rustls::ClientConfig>,
    path: &str,
) -> std::io::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = connector.connect(name, tcp).await?;
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(tokio_rustls::rustls::ProtocolVersion::TLSv1_3)
    );
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: c\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn body(response: &str) -> &str {
    response.split("\r\n\r\n").nth(1).unwrap_or_default()
}

#[tokio::test]
async fn a_tls_listener_hands_each_request_the_caller_its_certificate_names() {
    let pki = Pki::new();
    let addr = free_port();
    let sock = pki.dir.path().join("c.sock");
    let server = start(
        vec![Listener::Tcp(addr), Listener::Unix(sock.clone())],
        tls_options(&pki),
    )
    .await;

    let node = pki.client(Some(&Identity::node("n1", 4)));
    let response = get_tls(addr, node.clone(), "/healthz").await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let response = get_tls(addr, node, "/whoami").await.unwrap();
    assert_eq!(body(&response), "node/n1 127.0.0.1");

    let admin = pki.client(Some(&Identity::of(Role::Admin, "alice")));
    let response = get_tls(addr, admin, "/whoami").await.unwrap();
    assert_eq!(body(&response), "admin/alice 127.0.0.1");

    let anonymous = pki.client(None);
    let response = get_tls(addr, anonymous, "/whoami").await.unwrap();
    assert_eq!(body(&response), "anonymous 127.0.0.1");

    // The Unix socket is root on this machine.
    let mut unix = tokio::net::UnixStream::connect(&sock).await.unwrap();
    unix.write_all(b"GET /whoami HTTP/1.1\r\nhost: c\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    unix.read_to_string(&mut out).await.unwrap();
    assert_eq!(body(&out), "admin/local-root ");

    server.stop().await;
}

#[tokio::test]
async fn plain_tcp_is_served_only_when_asked_for_by_name() {
    let addr = free_port();
    let refused = serve_router(
        whoami_router(),
        Controller::new(ControllerConfig::default(), AnyStore::memory()).unwrap(),
        vec![Listener::Tcp(addr)],
        ServeOptions::default(),
        async {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(refused, ServeError::TcpWithoutTls { .. }),
        "{refused:?}"
    );

    let server = start(
        vec![Listener::Tcp(addr)],
        ServeOptions {
            tcp: TcpSecurity::InsecurePlain,
            ..ServeOptions::default()
        },
    )
    .await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /whoami HTTP/1.1\r\nhost: c\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert_eq!(body(&out), "admin/insecure-plain-tcp 127.0.0.1");
    server.stop().await;
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_answer() {
    let pki = Pki::new();
    let addr = free_port();
    let server = start(vec![Listener::Tcp(addr)], tls_options(&pki)).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: c\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    // The server closes (or resets) the connection after at most an alert.
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out))
        .await
        .unwrap();
    assert!(
        !out.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_slow_header_or_handshake_is_cut_after_its_timeout() {
    let pki = Pki::new();
    let addr = free_port();
    let options = ServeOptions {
        tcp: TcpSecurity::Tls(pki.files()),
        limits: ConnectionLimits {
            header_read_timeout: Duration::from_millis(300),
            handshake_timeout: Duration::from_millis(300),
            ..ConnectionLimits::default()
        },
    };
    let server = start(vec![Listener::Tcp(addr)], options).await;

    // Slowloris: half a header, then nothing.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(pki.client(None));
    let mut tls = connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: c\r\nx-slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out))
        .await
        .expect("the slow client was not cut");
    // hyper may answer 408 before closing; it never serves the request.
    assert!(
        read.is_err() || !String::from_utf8_lossy(&out).contains("200 OK"),
        "{out:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // A client that connects and never starts its handshake.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("the silent client was not cut");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");

    // Others are still served.
    let response = get_tls(addr, pki.client(None), "/healthz").await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    server.stop().await;
}

/// True when the server closed `tcp` (EOF or reset) within a second.
async fn closed(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_and_others_still_answered() {
    let pki = Pki::new();
    let addr = free_port();
    let options = ServeOptions {
        tcp: TcpSecurity::Tls(pki.files()),
        limits: ConnectionLimits {
            max_connections: 3,
            ..ConnectionLimits::default()
        },
    };
    let server = start(vec![Listener::Tcp(addr)], options).await;
    let admin = pki.client(Some(&Identity::of(Role::Admin, "a")));

    // Two silent connections hold two of the three slots.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let response = get_tls(addr, admin.clone(), "/healthz").await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // The third fills the cap; the fourth is closed at once.
    silent.push(TcpStream::connect(addr).await.unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed(&mut over).await,
        "a connection over the cap stayed open"
    );
    for tcp in &mut silent[..1] {
        assert!(!closed(tcp).await, "a connection under the cap was closed");
    }

    // Slots come back when connections go.
    silent.clear();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let response = get_tls(addr, admin, "/healthz").await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    server.stop().await;
}

#[tokio::test]
async fn a_rotated_serving_certificate_is_used_without_a_restart() {
    let pki = Pki::new();
    let addr = free_port();
    let server = start(vec![Listener::Tcp(addr)], tls_options(&pki)).await;
    let serial = |config| async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    };
    let client = pki.client(None);
    let before = serial(client.clone()).await;
    pki.ca
        .issue_server("controller-0", &[], &[IpAddr::V4(Ipv4Addr::LOCALHOST)], DAY)
        .unwrap()
        .save(&pki.files().cert, &pki.files().key)
        .unwrap();
    tokio::time::sleep(CERT_RELOAD_INTERVAL + Duration::from_secs(1)).await;
    let after = serial(client).await;
    assert_ne!(before, after, "the old certificate is still served");
    server.stop().await;
}

#[tokio::test]
async fn missing_tls_files_fail_start_up() {
    let pki = Pki::new();
    let mut files = pki.files();
    files.key = pki.dir.path().join("missing.key");
    let err = serve_router(
        whoami_router(),
        Controller::new(ControllerConfig::default(), AnyStore::memory()).unwrap(),
        vec![Listener::Tcp(free_port())],
        ServeOptions {
            tcp: TcpSecurity::Tls(files),
            ..ServeOptions::default()
        },
        async {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ServeError::Tls(_)), "{err:?}");
}
