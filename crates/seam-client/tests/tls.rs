//! `https://` endpoints against a small TLS 1.3 server built with `seam_pki::server_config`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use seam_client::{ClientError, ClientTls, ControllerClient};
use seam_model::Identity;
use seam_pki::{Ca, ReloadingCert};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const DAY: Duration = Duration::from_secs(86_400);

/// A server that answers every request 200 and reports the identity of each client's certificate
/// (`None` for a client without one); `Err` with the handshake error text when it fails.
async fn serve(
    ca: &Ca,
    dir: &Path,
) -> (
    String,
    mpsc::UnboundedReceiver<Result<Option<Identity>, String>>,
) {
    let issued = ca
        .issue_server(
            "controller-0",
            &["localhost".to_string()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            DAY,
        )
        .unwrap();
    let (crt, key) = (dir.join("server.crt"), dir.join("server.key"));
    issued.save(&crt, &key).unwrap();
    let config = seam_pki::server_config(
        ca.cert_pem(),
        ReloadingCert::from_files(&crt, &key).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let identity = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| seam_pki::identity_of(c.as_ref()).unwrap());
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(Ok(identity));
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("{port}"), rx)
}

fn write_ca(ca: &Ca, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("ca.crt");
    std::fs::write(&path, ca.cert_pem()).unwrap();
    path
}

#[tokio::test]
async fn https_presents_the_client_certificate_and_picks_up_a_renewed_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("test CA", DAY).unwrap();
    let (port, mut seen) = serve(&ca, dir.path()).await;
    let ca_file = write_ca(&ca, dir.path());
    let (crt, key) = (dir.path().join("node.crt"), dir.path().join("node.key"));
    ca.issue_client(&Identity::node("n1", 1), DAY)
        .unwrap()
        .save(&crt, &key)
        .unwrap();

    let tls = ClientTls::from_files(&ca_file, Some((&crt, &key))).unwrap();
    // By IP address and by DNS name: both are in the serving certificate.
    for endpoint in [
        format!("https://127.0.0.1:{port}"),
        format!("https://localhost:{port}/"),
    ] {
        let client = ControllerClient::new(&endpoint)
            .unwrap()
            .with_tls(tls.clone());
        client.healthz().await.unwrap();
        assert_eq!(
            seen.recv().await.unwrap(),
            Ok(Some(Identity::node("n1", 1)))
        );
    }

    // A renewed certificate is presented on a later connection, without a new client.
    let client = ControllerClient::new(&format!("https://127.0.0.1:{port}"))
        .unwrap()
        .with_tls(tls);
    ca.issue_client(&Identity::node("n1", 2), DAY)
        .unwrap()
        .save(&crt, &key)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client.healthz().await.unwrap();
    assert_eq!(
        seen.recv().await.unwrap(),
        Ok(Some(Identity::node("n1", 2)))
    );

    // Without a client certificate the connection is anonymous.
    let anonymous = ClientTls::from_files(&ca_file, None).unwrap();
    let client = ControllerClient::new(&format!("https://127.0.0.1:{port}"))
        .unwrap()
        .with_tls(anonymous);
    client.healthz().await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), Ok(None));
}

#[tokio::test]
async fn https_without_tls_settings_is_a_clear_error() {
    let client = ControllerClient::new("https://127.0.0.1:1").unwrap();
    let err = client.healthz().await.unwrap_err();
    assert!(matches!(err, ClientError::NoTls { .. }), "{err:?}");
    assert!(err.to_string().contains("no TLS settings"), "{err}");
}

#[tokio::test]
async fn a_controller_of_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("test CA", DAY).unwrap();
    let (port, mut seen) = serve(&ca, dir.path()).await;
    let other = Ca::generate("someone else's CA", DAY).unwrap();
    let other_file = dir.path().join("other.crt");
    std::fs::write(&other_file, other.cert_pem()).unwrap();
    let client = ControllerClient::new(&format!("https://127.0.0.1:{port}"))
        .unwrap()
        .with_tls(ClientTls::from_files(&other_file, None).unwrap());
    let err = client.healthz().await.unwrap_err();
    let chain = {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        text
    };
    assert!(
        chain.contains("certificate not issued by the trusted CA"),
        "{chain}"
    );
    assert!(seen.recv().await.unwrap().is_err());

    // A CA file that is not one is an error at set-up, not at the first request.
    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, "not a certificate").unwrap();
    assert!(matches!(
        ClientTls::from_files(&garbage, None),
        Err(ClientError::TlsSettings { .. })
    ));
}

/// A keep-alive server: answers every request on a connection 200 until the client closes it,
/// or closes it itself after `close_after` requests; counts the connections it accepted.
async fn serve_keep_alive(
    ca: &Ca,
    dir: &Path,
    close_after: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let issued = ca
        .issue_server("controller-0", &[], &[IpAddr::V4(Ipv4Addr::LOCALHOST)], DAY)
        .unwrap();
    let (crt, key) = (dir.join("server.crt"), dir.join("server.key"));
    issued.save(&crt, &key).unwrap();
    let config = seam_pki::server_config(
        ca.cert_pem(),
        ReloadingCert::from_files(&crt, &key).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut pending = Vec::new();
                let mut buf = [0u8; 1024];
                for served in 1..=close_after {
                    while !pending.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    }
                    let end = pending.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    pending.drain(..end);
                    let last = served == close_after;
                    let answer: &[u8] = if last {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                    };
                    if tls.write_all(answer).await.is_err() {
                        return;
                    }
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("{port}"), accepted)
}

/// Each new connection is a full TLS handshake: requests in a row share one, and a connection
/// the server closed is replaced without the caller noticing.
#[tokio::test]
async fn requests_in_a_row_share_one_tls_connection() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("test CA", DAY).unwrap();
    let ca_file = write_ca(&ca, dir.path());
    let tls = ClientTls::from_files(&ca_file, None).unwrap();

    let (port, accepted) = serve_keep_alive(&ca, dir.path(), usize::MAX).await;
    let client = ControllerClient::new(&format!("https://127.0.0.1:{port}"))
        .unwrap()
        .with_tls(tls.clone());
    for _ in 0..10 {
        client.healthz().await.unwrap();
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one handshake for 10 requests"
    );

    let (port, accepted) = serve_keep_alive(&ca, dir.path(), 3).await;
    let client = ControllerClient::new(&format!("https://127.0.0.1:{port}"))
        .unwrap()
        .with_tls(tls);
    for _ in 0..9 {
        client.healthz().await.unwrap();
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "a closed connection is replaced"
    );
}
