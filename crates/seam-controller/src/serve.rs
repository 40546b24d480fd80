//! Binding the listeners and serving the API until shutdown.
//!
//! Every connection is served by hyper (HTTP/1, header read timeout) with a [`Caller`] in each
//! request's extensions: the local administrator on the Unix socket, the identity of a verified
//! client certificate (or anonymous without one) on a TLS listener, an administrator on a TCP
//! listener served plain by explicit choice. TCP connections also carry their peer address
//! (`axum::extract::ConnectInfo<SocketAddr>`). TCP connections are capped; TLS handshakes and
//! request headers have deadlines, so slow clients cannot hold sockets for long.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use seam_model::{CallerRole as Role, Identity};
use seam_pki::ReloadingCert;
use seam_store::AnyStore;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::caller::Caller;
use crate::config::{ConnectionLimits, ControllerConfig, Listener, ServeOptions, TcpSecurity};
use crate::controller::Controller;
use crate::error::ServeError;
use crate::http::router;

/// How often the serving certificate and key are re-read (rotation without restart).
const CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// File descriptors kept free below the open-files limit for the store, logs and the process.
const FD_RESERVE: u64 = 128;

/// The name a plain-TCP caller gets (`--insecure-plain-tcp`).
pub const INSECURE_PLAIN_TCP_NAME: &str = "insecure-plain-tcp";

/// A bound listener, ready to serve.
enum Bound {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

/// Raises the soft open-files limit (RLIMIT_NOFILE) to the hard one and returns the new soft
/// limit, so the connection cap, not `Too many open files`, is what turns clients away.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
    }
    Ok(hard.max(soft))
}

/// `wanted`, lowered to stay below the open-files limit.
fn connection_cap(wanted: usize) -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return wanted;
    };
    let room = usize::try_from(soft.saturating_sub(FD_RESERVE).max(1)).unwrap_or(usize::MAX);
    if wanted > room {
        tracing::warn!(
            wanted,
            cap = room,
            open_files_limit = soft,
            "connection cap lowered below the open-files limit"
        );
    }
    wanted.min(room).max(1)
}

/// Serves the controller API on every listener until `shutdown` resolves, then stops watch
/// streams, lets in-flight requests finish and returns. Every listener is bound before any is
/// served, so a bad one fails start-up as a whole. Unix sockets are created with mode 0600 and
/// removed on return. TCP listeners are refused ([`ServeOptions`] default): use
/// [`serve_controller_with`] to serve them with TLS.
pub async fn serve(
    config: ControllerConfig,
    store: AnyStore,
    listeners: Vec<Listener>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let controller = Controller::new(config, store)?;
    serve_controller(controller, listeners, shutdown).await
}

/// Like [`serve`], for a controller built by the caller (e.g. one that shares a process with
/// an agent).
pub async fn serve_controller(
    controller: Controller,
    listeners: Vec<Listener>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_controller_with(controller, listeners, ServeOptions::default(), shutdown).await
}

/// How the connections of a TCP listener are authenticated.
#[derive(Clone)]
enum Transport {
    /// Plain TCP by explicit choice: every caller is an administrator.
    PlainTcp,
    /// Mutual TLS 1.3.
    Tls(tokio_rustls::TlsAcceptor),
}

/// Like [`serve_controller`], with TLS (or explicitly plain) TCP listeners and limits.
pub async fn serve_controller_with(
    controller: Controller,
    listeners: Vec<Listener>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let app = router(controller.clone());
    serve_router(app, controller, listeners, options, shutdown).await
}

/// Serves `app` (the controller's router, or a test's) for `controller`.
async fn serve_router(
    app: axum::Router,
    controller: Controller,
    listeners: Vec<Listener>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    if listeners.is_empty() {
        return Err(ServeError::NoListener);
    }
    // TLS settings are checked before anything is bound.
    let first_tcp = listeners.iter().find(|l| matches!(l, Listener::Tcp(_)));
    let mut serving_cert = None;
    let tcp_transport = match (&options.tcp, first_tcp) {
        (_, None) => None,
        (TcpSecurity::Refuse, Some(listener)) => {
            return Err(ServeError::TcpWithoutTls {
                listener: listener.to_string(),
            })
        }
        (TcpSecurity::InsecurePlain, Some(_)) => Some(Transport::PlainTcp),
        (TcpSecurity::Tls(files), Some(_)) => {
            let ca = std::fs::read_to_string(&files.ca).map_err(|source| {
                ServeError::Tls(seam_pki::PkiError::Io {
                    path: files.ca.clone(),
                    source,
                })
            })?;
            let cert =
                ReloadingCert::from_files(&files.cert, &files.key).map_err(ServeError::Tls)?;
            let config = seam_pki::server_config(&ca, cert.clone()).map_err(ServeError::Tls)?;
            serving_cert = Some(cert);
            Some(Transport::Tls(tokio_rustls::TlsAcceptor::from(config)))
        }
    };
    let mut bound = Vec::with_capacity(listeners.len());
    for listener in &listeners {
        match bind(listener).await {
            Ok(b) => bound.push(b),
            Err(e) => {
                remove_sockets(&bound);
                return Err(e);
            }
        }
    }
    let limits = ConnectionLimits {
        max_connections: connection_cap(options.limits.max_connections),
        ..options.limits
    };
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Every connection task holds a clone of `open_tx`; `open_rx` sees the channel close when
    // the last one has ended.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut socket_paths = Vec::new();
    for (listener, b) in listeners.iter().zip(bound) {
        // For `tcp:ADDR:0` the name shows the port the OS picked.
        let name = match &b {
            Bound::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| listener.to_string(), |a| format!("tcp:{a}")),
            Bound::Unix(..) => listener.to_string(),
        };
        let server = Server {
            app: app.clone(),
            limits: limits.clone(),
            permits: permits.clone(),
            stop: stop_rx.clone(),
            open: open_tx.clone(),
        };
        match b {
            Bound::Unix(l, path) => {
                tracing::info!(listener = %name, "serving controller API (local administrator)");
                socket_paths.push(path);
                let accept = server.accept_unix(l, name.clone());
                tasks.spawn(accept);
            }
            Bound::Tcp(l) => {
                let transport = tcp_transport.clone().unwrap_or(Transport::PlainTcp);
                match transport {
                    Transport::Tls(_) => {
                        tracing::info!(listener = %name, "serving controller API over mutual TLS 1.3")
                    }
                    _ => tracing::warn!(
                        listener = %name,
                        "serving controller API over PLAIN TCP (--insecure-plain-tcp): every caller is an administrator; for a loopback lab only"
                    ),
                }
                let accept = server.accept_tcp(l, name.clone(), transport);
                tasks.spawn(accept);
            }
        }
    }
    if let Some(cert) = serving_cert {
        tasks.spawn(reload_serving_cert(cert, stop_rx.clone()));
    }
    // A replica campaigns while it serves; `stop_watches` below also ends the election, which
    // then hands the lead over at once.
    let election = tokio::spawn({
        let controller = controller.clone();
        async move { controller.run_election().await }
    });
    shutdown.await;
    tracing::info!("shutting down controller API");
    controller.stop_watches();
    if tokio::time::timeout(Duration::from_secs(5), election)
        .await
        .is_err()
    {
        tracing::warn!("leader election did not stop within 5 s");
    }
    stop_tx.send_replace(true);
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((listener, Err(source))) => {
                tracing::error!(%listener, error = %source, "serving failed");
                first_error.get_or_insert(ServeError::Serve { listener, source });
            }
            Err(e) => tracing::error!(error = %e, "server task failed"),
        }
    }
    // In-flight requests finish; idle keep-alive connections close.
    drop(open_tx);
    let _ = open_rx.recv().await;
    for path in &socket_paths {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove socket file");
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Re-reads the serving certificate every [`CERT_RELOAD_INTERVAL`] until `stop`.
async fn reload_serving_cert(
    cert: Arc<ReloadingCert>,
    mut stop: watch::Receiver<bool>,
) -> (String, std::io::Result<()>) {
    let mut tick = tokio::time::interval(CERT_RELOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let cert = cert.clone();
        // File reads off the runtime's workers.
        match tokio::task::spawn_blocking(move || cert.reload()).await {
            Ok(Ok(true)) => tracing::info!("serving certificate reloaded"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "serving certificate not reloaded; keeping the previous one")
            }
            Err(e) => tracing::warn!(error = %e, "serving certificate reload task failed"),
        }
    }
    ("serving certificate reload".to_string(), Ok(()))
}

/// What every accept loop shares.
struct Server {
    app: axum::Router,
    limits: ConnectionLimits,
    permits: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    /// Held by every connection task (see `serve_controller_with`).
    open: mpsc::Sender<()>,
}

/// Serves `conn` until it ends, or until `stop`, then shuts it down gracefully: the request in
/// flight is answered, then the connection closes.
async fn until_stopped<C: GracefulConnection<Error = hyper::Error>>(
    conn: C,
    mut stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error> {
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => return result,
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}

/// Refused connections are logged at most this often (a flood would otherwise flood the log).
const REFUSAL_LOG_EVERY_SECS: u64 = 10;

fn log_refusal(last: &AtomicU64, what: &str, listener: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let before = last.load(Ordering::Relaxed);
    if now >= before + REFUSAL_LOG_EVERY_SECS
        && last
            .compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(%listener, "{what}");
    }
}

impl Server {
    async fn accept_unix(
        mut self,
        listener: UnixListener,
        name: String,
    ) -> (String, std::io::Result<()>) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = self.stop.wait_for(|s| *s) => break,
            };
            match accepted {
                Ok((stream, _)) => {
                    let caller = Caller::Known(Identity::local_admin());
                    let conn = serve_connection(stream, caller, None, &self.app, &self.limits);
                    let watched = until_stopped(conn, self.stop.clone());
                    let open = self.open.clone();
                    tokio::spawn(async move {
                        let _open = open;
                        if let Err(e) = watched.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => accept_error(&name, e).await,
            }
        }
        (name, Ok(()))
    }

    async fn accept_tcp(
        mut self,
        listener: TcpListener,
        name: String,
        transport: Transport,
    ) -> (String, std::io::Result<()>) {
        let refused_log = Arc::new(AtomicU64::new(0));
        let handshake_failed_log = Arc::new(AtomicU64::new(0));
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = self.stop.wait_for(|s| *s) => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(&name, e).await;
                    continue;
                }
            };
            // Over the cap: closed at once, so the descriptor is free again.
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                log_refusal(
                    &refused_log,
                    "connection cap reached: closing new connections",
                    &name,
                );
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let app = self.app.clone();
            let limits = self.limits.clone();
            let transport = transport.clone();
            // Taken now: a shutdown that starts during the handshake still waits for it.
            let open = self.open.clone();
            let stop = self.stop.clone();
            let refused_log = refused_log.clone();
            let handshake_log = handshake_failed_log.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _open = open;
                let result = match transport {
                    Transport::Tls(acceptor) => {
                        let handshake =
                            tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream))
                                .await;
                        let tls = match handshake {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                // One line per refused client (another CA, expired, garbled,
                                // TLS 1.2, plain HTTP), at most one per 10 s per listener.
                                let why = e
                                    .get_ref()
                                    .and_then(|inner| {
                                        inner.downcast_ref::<tokio_rustls::rustls::Error>()
                                    })
                                    .map_or_else(
                                        || e.to_string(),
                                        seam_pki::explain_certificate_error,
                                    );
                                log_refusal(
                                    &handshake_log,
                                    &format!("TLS handshake with {peer} failed: {why}"),
                                    &name,
                                );
                                return;
                            }
                            Err(_) => {
                                log_refusal(
                                    &refused_log,
                                    "TLS handshake timed out: closing",
                                    &name,
                                );
                                return;
                            }
                        };
                        let caller = caller_of_tls(tls.get_ref().1, peer);
                        let conn = serve_connection(tls, caller, Some(peer), &app, &limits);
                        until_stopped(conn, stop).await
                    }
                    Transport::PlainTcp => {
                        let caller =
                            Caller::Known(Identity::of(Role::Admin, INSECURE_PLAIN_TCP_NAME));
                        let conn = serve_connection(stream, caller, Some(peer), &app, &limits);
                        until_stopped(conn, stop).await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        (name, Ok(()))
    }
}

/// The caller a verified TLS connection authenticates: the identity its client certificate
/// names, anonymous without one (or with one that names no Seam identity).
fn caller_of_tls(conn: &tokio_rustls::rustls::ServerConnection, peer: SocketAddr) -> Caller {
    let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) else {
        return Caller::Anonymous;
    };
    match seam_pki::identity_of(cert.as_ref()) {
        Ok(identity) => Caller::Known(identity),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "client certificate names no Seam identity: treated as anonymous");
            Caller::Anonymous
        }
    }
}

/// Accept errors (e.g. out of file descriptors) are logged and retried after a pause, so the
/// loop does not spin while they last.
async fn accept_error(listener: &str, e: std::io::Error) {
    tracing::warn!(%listener, error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// One HTTP/1 connection: every request gets `caller` (and the peer address) in its extensions.
fn serve_connection<S>(
    stream: S,
    caller: Caller,
    peer: Option<SocketAddr>,
    app: &axum::Router,
    limits: &ConnectionLimits,
) -> impl GracefulConnection<Error = hyper::Error> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = app.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(caller.clone());
        if let Some(peer) = peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        let mut app = app.clone();
        // The router is always ready (axum's contract), so `call` needs no `poll_ready`.
        async move { tower::Service::call(&mut app, request).await }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
}

async fn bind(listener: &Listener) -> Result<Bound, ServeError> {
    let bind_error = |source| ServeError::Bind {
        listener: listener.to_string(),
        source,
    };
    match listener {
        Listener::Tcp(addr) => Ok(Bound::Tcp(
            TcpListener::bind(addr).await.map_err(bind_error)?,
        )),
        Listener::Unix(path) => {
            prepare_socket_path(path).await.map_err(|e| match e {
                Prepare::Io(source) => bind_error(source),
                Prepare::Refuse(e) => e,
            })?;
            let l = UnixListener::bind(path).map_err(bind_error)?;
            // Only root (or the owner) may talk to the controller over the socket.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(bind_error)?;
            Ok(Bound::Unix(l, path.clone()))
        }
    }
}

enum Prepare {
    Io(std::io::Error),
    Refuse(ServeError),
}

/// Creates the socket's directory and removes a stale socket left by a previous run, but
/// never a live one or a file that is not a socket.
async fn prepare_socket_path(path: &Path) -> Result<(), Prepare> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Prepare::Io)?;
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Prepare::Io(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(Prepare::Refuse(ServeError::NotASocket {
            path: path.to_path_buf(),
        }));
    }
    if tokio::net::UnixStream::connect(path).await.is_ok() {
        return Err(Prepare::Refuse(ServeError::SocketInUse {
            path: path.to_path_buf(),
        }));
    }
    tracing::info!(path = %path.display(), "removing stale socket");
    std::fs::remove_file(path).map_err(Prepare::Io)
}

fn remove_sockets(bound: &[Bound]) {
    for b in bound {
        if let Bound::Unix(_, path) = b {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests;
