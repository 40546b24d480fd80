//! `seam proxy`: the controller's page and read API on a loopback address, for a browser.
//!
//! A browser holds no Seam certificate; the proxy presents the user's (as `kubectl proxy`
//! presents the user's credentials). It forwards reads only (GET and HEAD), so a page
//! elsewhere that makes the browser send requests here can change nothing; it listens on a
//! loopback address only and answers only requests whose `Host` names that address, so another
//! site cannot reach it through DNS rebinding.

use std::net::{SocketAddr, TcpListener};

use anyhow::{bail, Context};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use seam_client::ControllerClient;

use crate::cli::Target;
use crate::controller::client;

struct Proxy {
    client: ControllerClient,
    /// The `Host` values the browser sends for the listening address.
    hosts: Vec<String>,
}

/// `seam proxy --listen ADDR`.
pub(crate) fn run(listen: SocketAddr, target: &Target) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() {
        bail!("--listen {listen}: the proxy serves with your certificate, so it listens on a loopback address only (127.0.0.1:PORT)");
    }
    // Bound before `client` may move the process into a lab's underlay namespace: the browser
    // is on this machine's loopback.
    let listener = TcpListener::bind(listen).with_context(|| format!("listen on {listen}"))?;
    let local = listener.local_addr().context("the listening address")?;
    listener
        .set_nonblocking(true)
        .context("make the listener non-blocking")?;
    let client = client(target)?;
    let port = local.port();
    let proxy = std::sync::Arc::new(Proxy {
        client,
        hosts: vec![
            local.to_string(),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
        ],
    });
    // The address goes to standard output first, alone on its line, for scripts and tests
    // that asked for port 0.
    println!("http://{local}/ui/");
    tracing::info!(%local, controller = proxy.client.endpoint(), "serving the controller's page and read API");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?
        .block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let app = axum::Router::new().fallback(forward).with_state(proxy);
            axum::serve(listener, app).await
        })
        .context("serve")
}

async fn forward(State(proxy): State<std::sync::Arc<Proxy>>, request: Request) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !proxy.hosts.iter().any(|h| h == host) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            format!("this proxy answers only requests for {}", proxy.hosts[0]),
        )
            .into_response();
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "seam proxy forwards reads only; use the seam command to change things",
        )
            .into_response();
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let path = if path == "/" {
        "/ui/".to_string()
    } else {
        path
    };
    match proxy.client.request_raw("GET", &path, Vec::new()).await {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = Response::new(Body::from(answer.body));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&path)),
            );
            response
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// What the controller's answer to `path` is (its own header does not come through
/// seam-client's raw call); browsers insist on it for scripts and style sheets.
fn content_type(path: &str) -> &'static str {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    if path == "/ui/" || path.ends_with(".html") {
        "text/html; charset=utf-8"
    } else if path.ends_with(".js") {
        "text/javascript; charset=utf-8"
    } else if path.ends_with(".css") {
        "text/css; charset=utf-8"
    } else if path == "/v1/flows" {
        "application/x-ndjson"
    } else if path == "/v1/explain" && query.split('&').any(|p| p == "output=text") {
        "text/plain; charset=utf-8"
    } else {
        "application/json"
    }
}

#[cfg(test)]
mod tests {
    use super::content_type;

    #[test]
    fn the_page_and_the_api_keep_their_types() {
        assert!(content_type("/ui/").starts_with("text/html"));
        assert!(content_type("/ui/app.js").starts_with("text/javascript"));
        assert!(content_type("/ui/app.css").starts_with("text/css"));
        assert_eq!(content_type("/v1/flows?since=5m"), "application/x-ndjson");
        assert!(content_type("/v1/explain?src=a&output=text").starts_with("text/plain"));
        assert_eq!(content_type("/v1/explain?src=a"), "application/json");
        assert_eq!(content_type("/v1/nodes"), "application/json");
    }
}
