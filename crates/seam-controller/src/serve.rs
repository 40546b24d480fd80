//! Binding the listeners and serving the API until shutdown.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use seam_store::AnyStore;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;

use seam_model::Identity;

use crate::caller::Caller;
use crate::config::{ControllerConfig, Listener};
use crate::controller::Controller;
use crate::error::ServeError;
use crate::http::router;

/// A bound listener, ready to serve.
enum Bound {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

/// Serves the controller API on every listener until `shutdown` resolves, then stops watch
/// streams, lets in-flight requests finish and returns. Every listener is bound before any is
/// served, so a bad one fails start-up as a whole. Unix sockets are created with mode 0600 and
/// removed on return.
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
    if listeners.is_empty() {
        return Err(ServeError::NoListener);
    }
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
    let app = router(controller.clone());
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
        let app = app.clone();
        let mut stop = stop_rx.clone();
        let graceful = async move {
            // An error means the sender is gone, which also means stop.
            let _ = stop.wait_for(|s| *s).await;
        };
        tracing::info!(listener = %name, "serving controller API");
        match b {
            Bound::Unix(l, path) => {
                socket_paths.push(path);
                // The socket is mode 0600: whoever reaches it is root on this machine.
                let app = app.layer(axum::Extension(Caller::Known(Identity::local_admin())));
                tasks.spawn(async move {
                    let result = axum::serve(l, app).with_graceful_shutdown(graceful).await;
                    (name, result)
                });
            }
            Bound::Tcp(l) => {
                // Plain TCP until the TLS listeners land (helper "transport" replaces this).
                let app = app.layer(axum::Extension(Caller::Known(Identity::of(
                    seam_model::CallerRole::Admin,
                    "insecure-plain-tcp",
                ))));
                tasks.spawn(async move {
                    let result = axum::serve(l, app).with_graceful_shutdown(graceful).await;
                    (name, result)
                });
            }
        }
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
    if tokio::time::timeout(std::time::Duration::from_secs(5), election)
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
    for path in &socket_paths {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove socket file");
        }
    }
    first_error.map_or(Ok(()), Err)
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
