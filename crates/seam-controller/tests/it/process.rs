//! Listener set-up and the binary's exit codes.

use std::process::Command;

use seam_controller::{
    Controller, ControllerConfig, Listener, ServeError, ServeOptions, TcpSecurity,
};
use seam_store::AnyStore;

#[tokio::test]
async fn stale_socket_is_replaced_live_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sock");
    // A socket file left by a dead process.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let first = tokio::spawn(seam_controller::serve(
        ControllerConfig::default(),
        AnyStore::memory(),
        vec![Listener::Unix(path.clone())],
        async {
            let _ = stopped.await;
        },
    ));
    let client = seam_client::ControllerClient::new(&format!("unix:{}", path.display())).unwrap();
    let mut up = false;
    for _ in 0..200 {
        if client.healthz().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(up, "controller did not come up on a stale socket path");

    // A second controller on the same, live path is refused and leaves it alone.
    let err = seam_controller::serve(
        ControllerConfig::default(),
        AnyStore::memory(),
        vec![Listener::Unix(path.clone())],
        std::future::ready(()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ServeError::SocketInUse { .. }), "{err}");
    client.healthz().await.unwrap();

    // A regular file is never removed.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    let err = seam_controller::serve(
        ControllerConfig::default(),
        AnyStore::memory(),
        vec![Listener::Unix(file.clone())],
        std::future::ready(()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ServeError::NotASocket { .. }), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    stop.send(()).unwrap();
    first.await.unwrap().unwrap();
    assert!(!path.exists(), "socket file not removed on shutdown");
}

#[tokio::test]
async fn tcp_listener_serves_too() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    // Plain TCP only when asked for by name (the lab's loopback, the benchmark).
    let refused = seam_controller::serve(
        ControllerConfig::default(),
        AnyStore::memory(),
        vec![Listener::Tcp(addr)],
        async {},
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("needs TLS"), "{refused}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = Controller::new(ControllerConfig::default(), AnyStore::memory()).unwrap();
    let task = tokio::spawn(seam_controller::serve_controller_with(
        controller,
        vec![Listener::Tcp(addr)],
        ServeOptions {
            tcp: TcpSecurity::InsecurePlain,
            ..ServeOptions::default()
        },
        async {
            let _ = stopped.await;
        },
    ));
    let client = seam_client::ControllerClient::new(&format!("http://{addr}")).unwrap();
    let mut ok = false;
    for _ in 0..200 {
        if client.healthz().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(ok);
    assert_eq!(client.ensure_segment("a").await.unwrap().name, "ns-a");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[test]
fn binary_exits_64_on_bad_config() {
    let bin = env!("CARGO_BIN_EXE_seam-controller");
    for args in [
        &["--pool", "10.0.0.1/8", "--store", "memory"][..],
        &["--segment-mode", "nsx"],
        &["--listen", "tcp:nope"],
        &["--store", "etcd:x"],
        &["--block-prefix", "31", "--store", "memory"],
        &["--log-format", "xml"],
        // A tcp listener needs TLS (or the explicitly insecure mode).
        &["--listen", "tcp:127.0.0.1:0", "--store", "memory"],
        &["--tls-cert", "/x.crt", "--store", "memory"],
        &["--ca-key", "/x.key", "--store", "memory"],
    ] {
        let out = Command::new(bin).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("invalid"), "{args:?}: {stderr}");
    }
}
